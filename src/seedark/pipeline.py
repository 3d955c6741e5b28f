"""The whole job: RAW file in, enhanced sRGB image out.

Three stages, so a batch can overlap them (seedark.batch):

1. ``prepare_file`` (seedark.prepare): decode and choose the ratio (CPU, no
   torch; runs in a decoder process during batches);
2. ``infer``: the network, tiled, on the engine's device; each tile's input is
   packed and amplified from the mosaic when the tile runs (``PackedFrame``);
3. ``write_image``: orientation already applied, encode and publish atomically.

``enhance()`` returns the image as an array; ``enhance_file()`` also writes it.
Both are what the CLI calls, so anything the command line can do, Python can.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .devices import resolve_device, resolve_precision
from .errors import OutputError, UnsupportedSensorError, UsageError
from .exposure import parse_ratio
from .inference import Engine, parse_tile
from .output import apply_orientation, check_destination, default_extension, format_from_path, to_8bit, write_image
from .prepare import Prepared, default_model_for, pack, prepare, prepare_file, sensor_area
from .preview import naive_brighten, side_by_side
from .raw import RawFrame, check_input, read_raw
from .tiling import ProgressFn
from .weights import LoadedWeights, load_weights

log = logging.getLogger("seedark")

DEFAULT_FORMAT = "png"
#: Download progress: (bytes done, bytes expected or None).
ByteProgress = Callable[[int, int | None], None]
SENSOR_NAMES = {"bayer": "a Bayer", "xtrans": "an X-Trans"}


# --------------------------------------------------------------------------- model


def load_engine(
    weights: str | os.PathLike[str] | LoadedWeights | None = None,
    *,
    model: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    download_progress: ByteProgress | None = None,
) -> Engine:
    """Prepare the network once: from ``weights`` (a path or loaded weights) or a cached ``model``.

    The device and precision are checked first, so a missing GPU is reported
    before anything is downloaded.
    """
    if weights is not None and model is not None:
        raise UsageError("give either --weights or --model, not both")
    resolve_precision(precision, resolve_device(device))
    if isinstance(weights, LoadedWeights):
        loaded = weights
    elif weights is not None:
        loaded = load_weights(weights)
    else:
        from .store import load_model

        loaded = load_model(model, progress=download_progress)
    engine = Engine(loaded, device=device, precision=precision, backend=backend)
    log.info("running on %s (%s, %s)", engine.info.device, engine.info.precision, engine.info.backend)
    return engine


# --------------------------------------------------------------------------- stage 2


def _check_fit(engine: Engine, sensor: str, path: Path) -> None:
    if engine.spec.packing != sensor:
        want = SENSOR_NAMES.get(engine.spec.packing, "another")
        hint = f" (use --model {default_model_for(sensor)})"
        raise UnsupportedSensorError(
            f"{SENSOR_NAMES[sensor]} sensor, but the model takes {want} sensor's input{hint}", path
        )


def infer(
    prepared: Prepared,
    engine: Engine,
    *,
    tile: str | int | None = "auto",
    progress: ProgressFn | None = None,
    bits: int | None = None,
    reserve: int = 0,
) -> np.ndarray:
    """Network output for a prepared frame, cropped and oriented: H x W x 3 in [0, 1].

    float32 by default; with ``bits`` (8 or 16), the samples a file of that depth
    holds, quantised tile by tile, so the float image never exists in full. The
    result is a view (orientation is applied by strides, not copied). ``reserve``:
    bytes the caller holds elsewhere, which ``--tile auto`` leaves free.
    """
    _check_fit(engine, prepared.sensor, prepared.path)
    if prepared.auto_ratio:
        log.info("%s: auto ratio x%.1f", prepared.path.name, prepared.ratio)
    image = engine.run(prepared.packed, tile=parse_tile(tile), progress=progress, bits=bits, reserve=reserve)
    image = image[: prepared.height, : prepared.width]  # odd Bayer sizes were extended by one row/column
    return apply_orientation(image, prepared.flip)


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
    _check_fit(engine, frame.sensor, frame.path)
    return infer(prepare(frame, ratio), engine, tile=tile, progress=progress)


def _engine_for(
    sensor: str,
    weights: str | os.PathLike[str] | LoadedWeights | None,
    model: str | None,
    device: str,
    precision: str,
    backend: str = "auto",
    download_progress: ByteProgress | None = None,
) -> Engine:
    if weights is None and model is None:
        model = default_model_for(sensor)
    return load_engine(
        weights, model=model, device=device, precision=precision, backend=backend, download_progress=download_progress
    )


def enhance(
    source: str | os.PathLike[str] | RawFrame,
    *,
    ratio: float | str | None = "auto",
    weights: str | os.PathLike[str] | LoadedWeights | None = None,
    model: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    tile: str | int | None = "auto",
    engine: Engine | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Enhance one RAW file: H x W x 3 float32 sRGB in [0, 1], oriented like ``rawpy.postprocess()``.

    ``ratio``: amplification (reference exposure / this exposure), or ``"auto"``
    to estimate it from the frame (seedark.exposure). Without ``weights``,
    ``model`` or ``engine``, the model matching the sensor is used (sony / fuji).
    """
    parse_ratio(ratio)
    tile = parse_tile(tile)
    frame = source if isinstance(source, RawFrame) else read_raw(source)
    if engine is None:
        engine = _engine_for(frame.sensor, weights, model, device, precision, backend)
    return enhance_frame(frame, engine, ratio=ratio, tile=tile, progress=progress)


# --------------------------------------------------------------------------- stage 3


@dataclass(frozen=True)
class OutputPlan:
    path: Path
    fmt: str
    bits: int

    @property
    def compare_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}_compare.jpg")


def output_settings(fmt: str | None, bits: int | None, dest: Path | None = None) -> tuple[str, int]:
    """Validated (format, bits) for a destination (or for the default format)."""
    fmt = (
        format_from_path(dest, fmt)
        if dest is not None
        else format_from_path(Path("x" + default_extension(fmt or DEFAULT_FORMAT)), fmt)
    )
    if bits is None:
        bits = 16 if fmt == "tiff" else 8
    if bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {bits}")
    if fmt == "jpeg" and bits != 8:
        raise UsageError("JPEG holds 8 bits per sample; use --bits 8, or PNG/TIFF for 16 bits")
    return fmt, bits


def plan_output(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
) -> OutputPlan:
    """Where and how the result will be written; refuses before any work is done."""
    src = Path(source)
    if output is None or Path(output).is_dir() or str(output).endswith((os.sep, "/")):
        folder = src.parent if output is None else Path(output)
        dest = folder / (src.stem + default_extension(fmt or DEFAULT_FORMAT))
    else:
        dest = Path(output)
    fmt, bits = output_settings(fmt, bits, dest)
    if src.exists() and dest.exists() and dest.resolve() == src.resolve():
        raise OutputError("output would replace the input file", dest)
    check_destination(dest, overwrite=overwrite)
    return OutputPlan(dest, fmt, bits)


def write_result(
    plan: OutputPlan,
    image: np.ndarray,
    prepared: Prepared,
    *,
    overwrite: bool,
    compare: bool = False,
    block: int = 2,
) -> Path:
    """Publish the image (and the comparison picture) atomically."""
    software = f"seedark {__version__}"
    if compare:
        write_image(
            plan.compare_path,
            comparison(prepared, image, block),
            fmt="jpeg",
            bits=8,
            metadata=prepared.camera,
            software=software,
            overwrite=True,
        )
    return write_image(
        plan.path, image, fmt=plan.fmt, bits=plan.bits, metadata=prepared.camera, software=software, overwrite=overwrite
    )


def enhance_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    ratio: float | str | None = "auto",
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
    compare: bool = False,
    weights: str | os.PathLike[str] | LoadedWeights | None = None,
    model: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    tile: str | int | None = "auto",
    engine: Engine | None = None,
    progress: ProgressFn | None = None,
    download_progress: ByteProgress | None = None,
) -> Path:
    """Enhance ``source`` and write it; returns the written path.

    Every check that can fail cheaply (ratio, options, output folder, existing
    file) runs before the RAW file is decoded or the model loaded.
    """
    parse_ratio(ratio)
    tile = parse_tile(tile)
    check_input(Path(source))
    plan = plan_output(source, output, fmt=fmt, bits=bits, overwrite=overwrite)
    frame = read_raw(source)
    if engine is None:
        engine = _engine_for(frame.sensor, weights, model, device, precision, backend, download_progress)
    _check_fit(engine, frame.sensor, frame.path)
    prepared = prepare(frame, ratio)
    del frame
    image = infer(prepared, engine, tile=tile, progress=progress, bits=plan.bits)
    return write_result(plan, image, prepared, overwrite=overwrite, compare=compare, block=engine.spec.block)


__all__ = [
    "OutputPlan",
    "Prepared",
    "default_model_for",
    "enhance",
    "enhance_file",
    "enhance_frame",
    "infer",
    "load_engine",
    "pack",
    "plan_output",
    "prepare",
    "prepare_file",
    "sensor_area",
]
