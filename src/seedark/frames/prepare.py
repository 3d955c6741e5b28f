"""Stage 1 of the pipeline: decode a RAW file and make the network's input (lazily).

Nothing here imports torch, so the batch's decoder process
(seedark.pipeline.decoder), which runs :func:`prepare_file`, starts quickly and
stays small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from seedark.frames.exposure import auto_ratio, parse_ratio
from seedark.frames.packing import PackedFrame, sensor_area
from seedark.io.colormatrix import ColorMatrix
from seedark.io.metadata import CameraMetadata
from seedark.io.raw import RawFrame, read_raw


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
    #: The file's colour matrix (seedark.io.colormatrix), for matching it to the model's camera.
    color_matrix: ColorMatrix | None = None


def prepare(frame: RawFrame, ratio: float | str | None = "auto") -> Prepared:
    """Choose the ratio; the input is packed and amplified lazily, tile by tile (``PackedFrame``)."""
    return prepare_parsed(frame, parse_ratio(ratio))


def prepare_parsed(frame: RawFrame, given: float | None) -> Prepared:
    """:func:`prepare` with the ratio parsed already (``parse_ratio``): a number > 0, or None for auto."""
    value = auto_ratio(frame) if given is None else given
    packed = PackedFrame(frame, value)
    _, _, h, w = sensor_area(frame)
    return Prepared(
        frame.path,
        frame.sensor,
        packed,
        value,
        given is None,
        h,
        w,
        frame.flip,
        frame.camera,
        frame.camera_wb,
        frame.color_matrix,
    )


def prepare_file(path: str | os.PathLike[str], given: float | None = None) -> Prepared:
    """Decode and prepare one file, the ratio parsed already (``parse_ratio``: None for auto).

    A top-level function, so a decoder process can run it.
    """
    return prepare_parsed(read_raw(path), given)
