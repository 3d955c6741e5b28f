"""``seedark info``: what seedark sees in a RAW file, without running the network."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seedark.frames.exposure import RATIO_RANGE, auto_ratio
from seedark.frames.packing import sensor_area
from seedark.frames.sensormatch import format_transform, sensor_transform
from seedark.io.raw import RawFrame, read_raw
from seedark.io.text import printable
from seedark.models import registry
from seedark.models.registry import ModelCamera, default_model_for


def _exposure(seconds: float | None) -> str:
    if not seconds:
        return "unknown"
    if seconds < 1:
        return f"1/{round(1 / seconds)} s"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class RawInfo:
    """What ``seedark info`` reports about a RAW file, as values (``--json`` writes these fields).

    Strings from the file are cleaned when read (seedark.io.metadata); ``file`` is the path as given.
    """

    file: str
    make: str | None
    model: str | None
    lens: str | None
    sensor: str  # "bayer" or "xtrans"
    width: int  # visible sensor pixels
    height: int
    output_width: int  # the enhanced image, oriented
    output_height: int
    cfa: str
    black_levels: list[float]  # the distinct per-position levels, ascending
    white_level: int
    exposure_time: float | None  # seconds
    iso: int | None
    taken: str | None  # "YYYY:MM:DD HH:MM:SS" as the camera wrote it
    auto_ratio: float
    ratio_range: tuple[float, float]
    default_model: str  # the model enhance uses for this sensor without --model/--weights
    #: The file's colour matrix, XYZ (D65) -> camera, 9 values row-major, and where it was found
    #: (docs/cameras.md); None when neither the file nor LibRaw's table has one.
    color_matrix: list[float] | None = None
    color_matrix_source: str | None = None
    #: The camera the default model was trained on, and T, the 3 x 3 map of this file's colours
    #: to that camera's (None: no map, the model's own camera or a matrix unknown).
    model_camera: str | None = None
    sensor_match: list[list[float]] | None = None

    def _colour_map(self) -> str:
        model = f"the {self.default_model} model's camera ({self.model_camera})"
        if self.model_camera is None:
            return f"none: the {self.default_model} model's camera is unknown"
        if self.color_matrix is None:
            return "none: no colour matrix is known for this camera (its values pass unchanged)"
        if self.sensor_match is None:
            return f"none: this is {model}"
        return f"T = {format_transform(self.sensor_match)}, to {model}"

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) rows in display order, every value made printable."""
        suits = self.default_model
        rows = [
            ("file", self.file),
            ("camera", " ".join(x for x in (self.make, self.model) if x) or "unknown"),
            ("lens", self.lens or "unknown"),
            ("sensor", f"{self.sensor} {self.width}x{self.height} (visible)"),
            (
                "output size",
                f"{self.output_width}x{self.output_height}"
                + (" (cropped to the 6x6 pattern)" if self.sensor == "xtrans" else ""),
            ),
            ("CFA layout", self.cfa),
            ("black level", ", ".join(f"{b:g}" for b in self.black_levels)),
            ("white level", str(self.white_level)),
            ("exposure", _exposure(self.exposure_time)),
            ("ISO", str(self.iso) if self.iso else "unknown"),
            ("taken", self.taken or "unknown"),
            ("auto ratio", f"x{self.auto_ratio:.1f} (range {self.ratio_range[0]:g}-{self.ratio_range[1]:g})"),
            (
                "model",
                f"{suits} (the default model, sony, {'suits' if suits == 'sony' else 'does not suit'} this sensor"
                + (")" if suits == "sony" else f"; {suits} is used automatically)"),
            ),
            ("colour data", self.color_matrix_source or "unknown (neither the file nor LibRaw's table has a matrix)"),
            ("colour map", self._colour_map()),
        ]
        return [(label, printable(value)) for label, value in rows]


def raw_info(path: str | os.PathLike[str]) -> RawInfo:
    """Read ``path`` (no network, no model) and describe it."""
    frame = read_raw(path)
    cam = frame.camera
    _, _, h, w = sensor_area(frame)
    camera = registry.MODELS[default_model_for(frame.sensor)].camera
    out_h, out_w = (w, h) if frame.flip & 4 else (h, w)
    return RawInfo(
        file=str(Path(path)),
        make=cam.make,
        model=cam.model,
        lens=cam.lens_model,
        sensor=frame.sensor,
        width=frame.width,
        height=frame.height,
        output_width=out_w,
        output_height=out_h,
        cfa=frame.cfa_string,
        black_levels=sorted({float(b) for b in frame.black_levels.ravel()}),
        white_level=int(frame.white_level),
        exposure_time=cam.exposure_time,
        iso=cam.iso,
        taken=cam.datetime_original,
        auto_ratio=float(auto_ratio(frame)),
        ratio_range=(float(RATIO_RANGE[0]), float(RATIO_RANGE[1])),
        default_model=default_model_for(frame.sensor),
        color_matrix=list(frame.color_matrix.matrix) if frame.color_matrix is not None else None,
        color_matrix_source=frame.color_matrix.source if frame.color_matrix is not None else None,
        model_camera=camera.name if camera is not None else None,
        sensor_match=_sensor_match(frame, camera),
    )


def _sensor_match(frame: RawFrame, camera: ModelCamera | None) -> list[list[float]] | None:
    """T, the map of the file's colours to ``camera``'s; None for no map (its own camera, or a matrix unknown)."""
    if frame.color_matrix is None or camera is None:
        return None
    transform = sensor_transform(frame.color_matrix, camera)
    return transform.tolist() if transform is not None else None


def describe(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(label, value) rows describing a RAW file, in display order.

    The values are ready to print: the file's own strings are cleaned when they are read,
    and each value goes through :func:`~seedark.io.text.printable`, so a file name that is
    not UTF-8 or holds control characters is shown with escapes.
    """
    return raw_info(path).rows()
