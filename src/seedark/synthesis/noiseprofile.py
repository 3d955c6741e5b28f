"""A camera's noise calibration (:class:`NoiseProfile`), and reading and writing it as JSON.

A profile holds ELD's log-linear fits over the system gain K (what ``seedark train
--synthetic`` draws from) and, for a camera calibrated by ``seedark calibrate``, the
camera (``make``, ``model``) and what was measured at each ISO (:class:`IsoNoise`, the
JSON's ``per_iso`` list; what ``seedark finetune`` draws from). Kept apart from the
noise model (seedark.synthesis.noise) and free of NumPy, so the command line can build
``seedark train`` from :class:`seedark.training.config.TrainConfig` without importing it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from seedark._files import write_json
from seedark.errors import UsageError


def _number(data: Mapping[str, Any], key: str, source: Path | None, where: str = "noise profile field") -> float:
    value = data[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UsageError(f"{where} {key} must be a number, got {value!r}", source)
    return float(value)


@dataclass(frozen=True)
class IsoNoise:
    """What ``seedark calibrate`` measured at one ISO, in the camera's DN."""

    iso: int
    k: float  # system gain K, DN per electron
    read_scale: float  # Tukey-lambda scale of the read noise
    row_scale: float  # standard deviation of the row offsets
    black_level: float
    read_lambda: float  # Tukey-lambda shape of the read noise

    def __post_init__(self) -> None:
        if self.iso <= 0 or self.k <= 0 or self.read_scale <= 0 or self.row_scale < 0:
            raise UsageError(f"noise profile ISO {self.iso}: need iso, k and read_scale > 0 and row_scale >= 0")
        if not -0.5 < self.read_lambda < 1.0 or self.read_lambda == 0:
            raise UsageError(f"noise profile ISO {self.iso}: read_lambda must be in (-0.5, 1) and not 0")

    @classmethod
    def from_dict(cls, data: Any, read_lambda: float, source: Path | None = None) -> IsoNoise:
        """An entry of ``per_iso``; one without ``read_lambda`` takes the profile's (``read_lambda``)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or not set(names[:-1]) <= set(data) <= set(names):
            raise UsageError(f"each per_iso entry is an object of {', '.join(names)} (read_lambda optional)", source)
        iso = data["iso"]
        if not isinstance(iso, int) or isinstance(iso, bool):
            raise UsageError(f"per_iso iso must be an integer, got {iso!r}", source)
        values = {name: _number(data, name, source, "per_iso field") for name in names[1:] if name in data}
        values.setdefault("read_lambda", read_lambda)
        try:
            return cls(iso, **values)
        except UsageError as exc:
            raise UsageError(exc.reason, source) from None


@dataclass(frozen=True)
class NoiseProfile:
    """One camera's noise calibration, in 14-bit DN for the a7S II (the camera's own raw units)."""

    name: str = "SonyA7S2"
    #: Range of the system gain K (DN per electron); K is drawn log-uniformly from it.
    k_min: float = 0.0939
    k_max: float = 6.0106
    #: Tukey-lambda shape of the read noise. ELD fits lambda per ISO; -0.26 is its a7S II value.
    read_lambda: float = -0.26
    #: log(sigma_TL) = read_slope * log(K) + read_intercept + N(0, read_sigma)
    read_slope: float = 0.4621
    read_intercept: float = 0.5657
    read_sigma: float = 0.2634
    #: log(sigma_r) = row_slope * log(K) + row_intercept + N(0, row_sigma)
    row_slope: float = 0.5275
    row_intercept: float = -0.5917
    row_sigma: float = 0.2943
    #: Raw levels of synthetic frames made from sRGB images (raw sources keep their own).
    black_level: int = 512
    white_level: int = 16383
    #: The camera a calibration was measured on, as its files name it (empty: not said).
    make: str = ""
    model: str = ""
    #: What was measured at each ISO (``seedark calibrate``), lowest ISO first; empty for a
    #: profile of fits alone, such as the published a7S II one.
    per_iso: tuple[IsoNoise, ...] = ()

    def __post_init__(self) -> None:
        if not (0 < self.k_min <= self.k_max and math.isfinite(self.k_max)):
            raise UsageError(f"noise profile {self.name!r}: need 0 < k_min <= k_max, got {self.k_min}, {self.k_max}")
        if not -0.5 < self.read_lambda < 1.0 or self.read_lambda == 0:
            # lambda <= -1/2 has infinite variance; 0 (the logistic limit) needs another formula
            raise UsageError(f"noise profile {self.name!r}: read_lambda must be in (-0.5, 1) and not 0")
        for name in ("read_sigma", "row_sigma"):
            if getattr(self, name) < 0:
                raise UsageError(f"noise profile {self.name!r}: {name} must be >= 0")
        if not 0 <= self.black_level < self.white_level:
            raise UsageError(f"noise profile {self.name!r}: need 0 <= black_level < white_level")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; the camera and ``per_iso`` only where a calibration gives them, so a
        profile of fits alone reads and writes as it always has."""
        data = asdict(self)
        data["per_iso"] = [asdict(entry) for entry in self.per_iso]
        for key in ("make", "model", "per_iso"):
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | None = None) -> NoiseProfile:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UsageError(f"unknown noise profile field(s): {', '.join(unknown)}", source)
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("name", "make", "model"):
                values[key] = str(value)
            elif key == "per_iso":
                if not isinstance(value, list):
                    raise UsageError("noise profile field per_iso must be a list of objects", source)
            elif key in ("black_level", "white_level"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise UsageError(f"noise profile field {key} must be an integer, got {value!r}", source)
                values[key] = value
            else:
                values[key] = _number(data, key, source)
        if "per_iso" in data:
            shape = values.get("read_lambda", cls.read_lambda)
            entries = (IsoNoise.from_dict(v, shape, source) for v in data["per_iso"])
            values["per_iso"] = tuple(sorted(entries, key=lambda e: e.iso))
        try:
            return cls(**values)
        except UsageError as exc:
            raise UsageError(exc.reason, source) from None


#: The published Sony a7S II calibration (ELD, CVPR 2020).
SONY_A7S2 = NoiseProfile()


def load_profile(path: str | os.PathLike[str]) -> NoiseProfile:
    """A profile from a JSON object with :class:`NoiseProfile`'s fields; missing ones keep the a7S II values."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError("noise profile not found", p) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"not a readable JSON noise profile ({exc})", p) from exc
    if not isinstance(data, dict):
        raise UsageError("a noise profile is a JSON object of field: value", p)
    return NoiseProfile.from_dict(data, p)


def save_profile(profile: NoiseProfile, path: str | os.PathLike[str]) -> Path:
    """Write ``profile`` as JSON, atomically (:func:`load_profile` reads it back)."""
    return write_json(path, profile.to_dict())


__all__ = ["SONY_A7S2", "IsoNoise", "NoiseProfile", "load_profile", "save_profile"]
