"""A camera's noise calibration (:class:`NoiseProfile`), and reading and writing it as JSON.

Kept apart from the noise model (seedark.synthesis.noise) and free of NumPy, so the
command line can build ``seedark train`` from :class:`seedark.training.config.TrainConfig`
without importing it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from seedark._files import write_json
from seedark.errors import UsageError


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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | None = None) -> NoiseProfile:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UsageError(f"unknown noise profile field(s): {', '.join(unknown)}", source)
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "name":
                values[key] = str(value)
            elif key in ("black_level", "white_level"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise UsageError(f"noise profile field {key} must be an integer, got {value!r}", source)
                values[key] = value
            else:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    raise UsageError(f"noise profile field {key} must be a number, got {value!r}", source)
                values[key] = float(value)
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
    return write_json(path, profile.to_dict())


__all__ = ["SONY_A7S2", "NoiseProfile", "load_profile", "save_profile"]
