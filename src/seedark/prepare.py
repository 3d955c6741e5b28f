"""Stage 1 of the pipeline: decode a RAW file and make the network's input.

Nothing here imports torch, so the batch decoder process starts quickly and
stays small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UnsupportedSensorError
from .exif import CameraMetadata
from .exposure import parse_ratio, resolve_ratio
from .packing import PackedFrame, pack_bayer, pack_xtrans, xtrans_crop
from .raw import RawFrame, read_raw


def default_model_for(sensor: str) -> str:
    """The registry's model for a sensor kind: sony for Bayer, fuji for X-Trans."""
    from .registry import MODELS

    for record in MODELS.values():
        if record.packing == sensor:
            return record.name
    raise UnsupportedSensorError(f"no model for {sensor} sensors is registered")


@dataclass
class Prepared:
    """A frame ready for the network: everything later stages need (the mosaic, inside ``packed``)."""

    path: Path
    sensor: str
    #: The amplified network input, H x W x C float32, packed window by window as tiles need it
    #: (``np.asarray(packed)`` for the whole array).
    packed: PackedFrame
    ratio: float
    auto_ratio: bool
    height: int  # size of the sensor area the output covers (before orientation)
    width: int
    flip: int
    camera: CameraMetadata = field(default_factory=CameraMetadata)
    camera_wb: tuple[float, float, float] = (1.0, 1.0, 1.0)


def pack(frame: RawFrame) -> np.ndarray:
    """Network input for a frame, before amplification."""
    if frame.sensor == "bayer":
        return pack_bayer(frame)
    if frame.sensor == "xtrans":
        return pack_xtrans(frame)
    raise UnsupportedSensorError(f"{frame.sensor} packing is not available", frame.path)


def sensor_area(frame: RawFrame) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) of the visible mosaic that the output image covers.

    Bayer: the whole visible frame. X-Trans: the official model sees the frame
    from the reference CFA phase, cropped to multiples of 6.
    """
    if frame.sensor == "xtrans":
        return xtrans_crop(frame)
    return 0, 0, frame.height, frame.width


def prepare(frame: RawFrame, ratio: float | str | None = "auto") -> Prepared:
    """Choose the ratio; the input is packed and amplified lazily, tile by tile (``PackedFrame``)."""
    given = parse_ratio(ratio)
    value = resolve_ratio(frame, given)
    packed = PackedFrame(frame, value)
    _, _, h, w = sensor_area(frame)
    return Prepared(
        frame.path, frame.sensor, packed, value, given is None, h, w, frame.flip, frame.camera, frame.camera_wb
    )


def prepare_file(path: str | os.PathLike[str], ratio: float | str | None = "auto") -> Prepared:
    """Decode and prepare one file (a top-level function, so a decoder process can run it)."""
    return prepare(read_raw(path), ratio)
