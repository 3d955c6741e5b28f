"""The whole job: RAW file in, enhanced sRGB image out.

Three stages, so a batch can overlap them (seedark.pipeline.batch):

1. ``prepare_file`` (seedark.prepare): decode and choose the ratio (CPU, no
   torch; runs in a decoder process during batches);
2. ``infer``: the network, tiled, on the engine's device; each tile's input is
   packed and amplified from the mosaic when the tile runs (``PackedFrame``);
3. ``write_image``: orientation already applied, encode and publish atomically.

``enhance()`` returns the image as an array; ``enhance_file()`` also writes it.
Both are what the CLI calls, so anything the command line can do, Python can.

Every option is checked once, before the work it guards: the ratio by
``parse_ratio``, the engine's options into an :class:`EngineOptions`, the output
into an :class:`OutputPlan`; the later stages take those as they are.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seedark._version import __version__
from seedark.errors import OutputError
from seedark.exposure import parse_ratio
from seedark.imaging import apply_orientation, naive_brighten, side_by_side, to_8bit
from seedark.io.image import (
    DEFAULT_FORMAT,
    OutputSettings,
    check_destination,
    check_output_settings,
    default_extension,
    format_from_path,
    save_image,
)
from seedark.io.raw import RawFrame, check_input, decode_raw, read_raw
from seedark.prepare import Prepared, prepare, prepare_parsed
from seedark.progress import ProgressFn
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, engine_for, infer, parse_tile

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

log = logging.getLogger("seedark")

#: The side-by-side picture ``--compare`` writes.
COMPARE_SETTINGS = OutputSettings("jpeg", 8)


# --------------------------------------------------------------------------- stage 2


def comparison(prepared: Prepared, enhanced: np.ndarray, block: int) -> np.ndarray:
    """``naively brightened input | enhanced`` for a person to look at, as 8-bit samples."""
    before = naive_brighten(np.asarray(prepared.packed), prepared.sensor, prepared.camera_wb, block)
    before = apply_orientation(before[: prepared.height, : prepared.width], prepared.flip)
    return side_by_side(before, to_8bit(enhanced))


def enhance_frame(
    frame: RawFrame,
    engine: Engine,
    *,
    ratio: float | str | None = "auto",
    tile: str | int | None = "auto",
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Enhanced, oriented image of a decoded frame: H x W x 3 float32 in [0, 1]."""
    return infer(prepare(frame, ratio), engine, tile=parse_tile(tile), progress=progress)


def enhance(
    source: str | os.PathLike[str] | RawFrame,
    *,
    ratio: float | str | None = "auto",
    engine: Engine | None = None,
    **options: Unpack[EngineKwargs],
) -> np.ndarray:
    """Enhance one RAW file: H x W x 3 float32 sRGB in [0, 1], oriented like ``rawpy.postprocess()``.

    ``ratio``: amplification (reference exposure / this exposure), or ``"auto"``
    to estimate it from the frame (seedark.exposure). Without ``weights``,
    ``model`` or ``engine``, the model matching the sensor is used (sony / fuji).
    """
    given = parse_ratio(ratio)
    settings = EngineOptions.from_kwargs(**options)
    frame = source if isinstance(source, RawFrame) else read_raw(source)
    if engine is None:
        engine = engine_for(frame.sensor, settings)
    return infer(prepare_parsed(frame, given), engine, tile=settings.tile, progress=settings.progress)


# --------------------------------------------------------------------------- stage 3


@dataclass(frozen=True)
class OutputPlan:
    """Where the result goes and how, checked (:func:`plan_output`)."""

    path: Path
    fmt: str
    bits: int

    @property
    def settings(self) -> OutputSettings:
        return OutputSettings(self.fmt, self.bits)

    @property
    def compare_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}_compare.jpg")


def output_settings(fmt: str | None, bits: int | None, dest: Path | None = None) -> OutputSettings:
    """Checked format and bits for a destination (or, without one, for ``fmt`` or the default format)."""
    if dest is not None:
        fmt = format_from_path(dest, fmt)
    return check_output_settings(fmt or DEFAULT_FORMAT, bits)


def plan_output(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
    compare: bool = False,
) -> OutputPlan:
    """Where and how the result will be written; refuses before any work is done.

    ``compare``: the comparison picture is part of the output, under the same rule:
    an existing one is replaced only with ``overwrite``.
    """
    src = Path(source)
    if output is None or Path(output).is_dir() or str(output).endswith((os.sep, "/")):
        folder = src.parent if output is None else Path(output)
        dest = folder / (src.stem + default_extension(fmt or DEFAULT_FORMAT))
    else:
        dest = Path(output)
    settings = output_settings(fmt, bits, dest)
    if src.exists() and dest.exists() and dest.resolve() == src.resolve():
        raise OutputError("output would replace the input file", dest)
    plan = OutputPlan(dest, settings.fmt, settings.bits)
    check_destination(dest, overwrite=overwrite)
    if compare:
        check_destination(plan.compare_path, overwrite=overwrite)
    return plan


def write_result(
    plan: OutputPlan,
    image: np.ndarray,
    prepared: Prepared,
    *,
    overwrite: bool,
    compare: bool = False,
    block: int = 2,
) -> Path:
    """Publish the image, then the comparison picture, atomically.

    The destinations were checked when the plan was made (:func:`plan_output`, or the
    batch before decoding); publishing still never replaces a file unless ``overwrite``.
    The image comes first, so a failure (a full disk) leaves no comparison picture of
    an image that is not there; if only the comparison picture fails, the error says
    that the image was written.
    """
    software = f"seedark {__version__}"
    written = save_image(
        plan.path,
        image,
        plan.settings,
        metadata=prepared.camera,
        software=software,
        overwrite=overwrite,
        destination_checked=True,
    )
    if compare:
        picture = comparison(prepared, image, block)
        try:
            save_image(
                plan.compare_path,
                picture,
                COMPARE_SETTINGS,
                metadata=prepared.camera,
                software=software,
                overwrite=overwrite,
                destination_checked=True,
            )
        except OutputError as exc:
            reason = f"{exc.reason} (the enhanced image was written to {written}; only the comparison is missing)"
            raise OutputError(reason, plan.compare_path) from exc
    return written


def enhance_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    ratio: float | str | None = "auto",
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
    compare: bool = False,
    engine: Engine | None = None,
    **options: Unpack[EngineKwargs],
) -> Path:
    """Enhance ``source`` and write it; returns the written path.

    Every check that can fail cheaply (ratio, options, output folder, existing
    file) runs before the RAW file is decoded or the model loaded.
    """
    given = parse_ratio(ratio)
    settings = EngineOptions.from_kwargs(**options)
    check_input(Path(source))  # a missing input is the first thing to report
    plan = plan_output(source, output, fmt=fmt, bits=bits, overwrite=overwrite, compare=compare)
    frame = decode_raw(Path(source))
    if engine is None:
        engine = engine_for(frame.sensor, settings)
    prepared = prepare_parsed(frame, given)
    del frame
    image = infer(prepared, engine, tile=settings.tile, progress=settings.progress, bits=plan.bits)
    return write_result(plan, image, prepared, overwrite=overwrite, compare=compare, block=engine.spec.block)


__all__ = [
    "OutputPlan",
    "enhance",
    "enhance_file",
    "enhance_frame",
    "output_settings",
    "plan_output",
    "write_result",
]
