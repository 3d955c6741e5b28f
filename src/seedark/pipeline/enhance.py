"""The whole job: RAW file in, enhanced sRGB image out.

Three stages, so a batch can overlap them (seedark.pipeline.batch):

1. ``prepare_file`` (seedark.frames.prepare): decode and choose the ratio (CPU, no
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

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seedark._version import __version__
from seedark.errors import OutputError, UsageError
from seedark.frames.exposure import parse_ratio
from seedark.frames.prepare import Prepared, prepare, prepare_parsed
from seedark.io.formats import (
    DEFAULT_COMPRESSION,
    DEFAULT_FORMAT,
    DEFAULT_JPEG_QUALITY,
    OutputSettings,
    check_output_settings,
    default_extension,
    format_from_path,
)
from seedark.io.image import check_destination, save_image
from seedark.io.pixels import apply_orientation, to_8bit
from seedark.io.raw import RawFrame, check_input, decode_raw, read_raw
from seedark.pipeline.compare import DEFAULT_COMPARE_WIDTH, compare_picture, naive_brighten
from seedark.progress import ProgressFn
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, engine_for, infer, parse_tile

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

log = logging.getLogger("seedark")

#: The side-by-side picture ``--compare`` writes.
COMPARE_SETTINGS = OutputSettings("jpeg", 8)


# --------------------------------------------------------------------------- stage 2


def comparison(prepared: Prepared, enhanced: np.ndarray, block: int, width: int = DEFAULT_COMPARE_WIDTH) -> np.ndarray:
    """``naively brightened input | enhanced`` for a person to look at, as 8-bit samples,
    labelled and scaled to at most ``width`` columns (0: full size)."""
    before = naive_brighten(np.asarray(prepared.packed), prepared.sensor, prepared.camera_wb, block)
    before = apply_orientation(before[: prepared.height, : prepared.width], prepared.flip)
    return compare_picture(before, to_8bit(enhanced), width)


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
    to estimate it from the frame (seedark.frames.exposure). Without ``weights``,
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
    quality: int = DEFAULT_JPEG_QUALITY
    compression: str = DEFAULT_COMPRESSION
    compare_width: int = DEFAULT_COMPARE_WIDTH

    @classmethod
    def of(cls, path: Path, settings: OutputSettings, compare_width: int = DEFAULT_COMPARE_WIDTH) -> OutputPlan:
        return cls(path, settings.fmt, settings.bits, settings.quality, settings.compression, compare_width)

    @property
    def settings(self) -> OutputSettings:
        return OutputSettings(self.fmt, self.bits, self.quality, self.compression)

    @property
    def compare_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}_compare.jpg")


def output_settings(
    fmt: str | None,
    bits: int | None,
    dest: Path | None = None,
    *,
    quality: int | None = None,
    compression: str | None = None,
) -> OutputSettings:
    """Checked format, bits, JPEG quality and TIFF compression for a destination (or,
    without one, for ``fmt`` or the default format)."""
    if dest is not None:
        fmt = format_from_path(dest, fmt)
    return check_output_settings(fmt or DEFAULT_FORMAT, bits, quality, compression)


#: The narrowest ``--compare-width`` that still shows two pictures.
MIN_COMPARE_WIDTH = 100


def check_compare_width(width: int | None, compare: bool) -> int:
    """The comparison picture's largest width: ``width`` (0: full size), None: the default."""
    if width is None:
        return DEFAULT_COMPARE_WIDTH
    if not compare:
        raise UsageError("--compare-width is for the --compare picture; add --compare")
    if width != 0 and width < MIN_COMPARE_WIDTH:
        raise UsageError(f"--compare-width must be 0 (full size) or at least {MIN_COMPARE_WIDTH}, not {width}")
    return width


def check_suffix(suffix: str) -> str:
    """``suffix`` if it can end a file name: it is added to the input's stem, never a path."""
    if any(sep in suffix for sep in ("/", os.sep, os.altsep or "/", "\0")):
        raise UsageError(f"--suffix {suffix!r} must not contain a path separator; it only extends the file name")
    return suffix


def output_name(source: Path, fmt: str, suffix: str = "") -> str:
    """The name seedark gives the output of ``source``: ``<stem><suffix>.<ext>``."""
    return source.stem + suffix + default_extension(fmt)


def names_folder(output: str | os.PathLike[str]) -> bool:
    """Whether ``-o`` names a folder to write into: an existing one, or a path ending in a separator
    (``newdir/``, created when the image is written)."""
    text = os.fspath(output)
    return Path(output).is_dir() or text.endswith(tuple({os.sep, "/", os.altsep or "/"}))


def _check_creatable(folder: Path, dest: Path) -> None:
    """A folder to be created: the nearest one that exists must be a folder that can be written in."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create the output folder: {existing} is not a folder", dest)
    if not os.access(existing, os.W_OK):
        raise OutputError(f"cannot create the output folder: {existing} is not writable", dest)


def plan_output(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
    compare: bool = False,
    suffix: str = "",
    quality: int | None = None,
    compression: str | None = None,
    compare_width: int | None = None,
) -> OutputPlan:
    """Where and how the result will be written; refuses before any work is done.

    ``output``: a file, or a folder to write ``<stem><suffix>.<ext>`` into (None: the
    input's folder); a folder that does not exist yet is created by :func:`enhance_file`.
    ``compare``: the comparison picture is part of the output, under the same rule:
    an existing one is replaced only with ``overwrite``; ``compare_width`` is its
    largest width (default 2400, 0: full size). ``quality``: JPEG only, 1..100
    (default 95); ``compression``: TIFF only, deflate (default) or none.
    """
    src = Path(source)
    check_suffix(suffix)
    into_folder = output is None or names_folder(output)
    if output is not None and not into_folder:
        if suffix:
            raise UsageError("--suffix names outputs written into a folder; -o gives a file name", output)
        dest = Path(output)
    else:
        folder = src.parent if output is None else Path(output)
        dest = folder / output_name(src, fmt or DEFAULT_FORMAT, suffix)
    try:
        settings = output_settings(fmt, bits, dest, quality=quality, compression=compression)
    except UsageError as exc:
        if into_folder or fmt is not None or dest.suffix:
            raise
        # "-o newdir": most likely a folder that does not exist yet
        raise UsageError(f"{exc.reason}, or end it with / for a folder to create", exc.path) from None
    width = check_compare_width(compare_width, compare)
    if src.exists() and dest.exists() and dest.resolve() == src.resolve():
        raise OutputError("output would replace the input file", dest)
    plan = OutputPlan.of(dest, settings, width)
    if into_folder and not dest.parent.exists():
        _check_creatable(dest.parent, dest)
    check_destination(dest, overwrite=overwrite, create_folder=into_folder)
    if compare:
        check_destination(plan.compare_path, overwrite=overwrite, create_folder=into_folder)
    return plan


@contextlib.contextmanager
def _folder_for(path: Path) -> Iterator[None]:
    """Create the folders above ``path`` that are missing (``-o newdir/``), and remove them
    again if the write fails: a failed run leaves no empty folder behind."""
    made = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {exc.strerror or exc}", path) from exc
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first; one that is not empty (another writer's) stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_result(
    plan: OutputPlan,
    image: np.ndarray,
    prepared: Prepared,
    *,
    overwrite: bool,
    compare: bool = False,
    block: int = 2,
    keep_mtime: bool = False,
) -> Path:
    """Publish the image, then the comparison picture, atomically.

    The destinations were checked when the plan was made (:func:`plan_output`, or the
    batch before decoding); publishing still never replaces a file unless ``overwrite``.
    The image comes first, so a failure (a full disk) leaves no comparison picture of
    an image that is not there; if only the comparison picture fails, the error says
    that the image was written. ``keep_mtime``: the image gets the RAW file's access
    and modification times (the comparison picture keeps its own).
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
        times_ns=source_times(prepared.path) if keep_mtime else None,
    )
    if compare:
        picture = comparison(prepared, image, block, plan.compare_width)
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


def source_times(source: Path) -> tuple[int, int]:
    """The RAW file's (access, modification) times in ns, for ``--keep-mtime``.

    Read when the image is about to be written: a RAW that has gone since it was
    decoded is an error before anything is written, not an image with a made-up time.
    """
    try:
        st = os.stat(source)
    except OSError as exc:
        raise OutputError(f"cannot read the RAW file's time for --keep-mtime: {exc.strerror or exc}", source) from exc
    return st.st_atime_ns, st.st_mtime_ns


def enhance_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    ratio: float | str | None = "auto",
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
    compare: bool = False,
    suffix: str = "",
    keep_mtime: bool = False,
    quality: int | None = None,
    compression: str | None = None,
    compare_width: int | None = None,
    engine: Engine | None = None,
    **options: Unpack[EngineKwargs],
) -> Path:
    """Enhance ``source`` and write it; returns the written path.

    ``output``: a file, or a folder (existing, or ending in ``/``: created when the
    image is written, removed again if writing fails) to write ``<stem><suffix>.<ext>``
    into. Every check that can fail cheaply (ratio, options, output folder, existing
    file) runs before the RAW file is decoded or the model loaded. ``keep_mtime``: the
    output gets the RAW file's modification (and access) time. ``quality``,
    ``compression``, ``compare_width``: see :func:`plan_output`.
    """
    given = parse_ratio(ratio)
    settings = EngineOptions.from_kwargs(**options)
    check_input(Path(source))  # a missing input is the first thing to report
    plan = plan_output(
        source,
        output,
        fmt=fmt,
        bits=bits,
        overwrite=overwrite,
        compare=compare,
        suffix=suffix,
        quality=quality,
        compression=compression,
        compare_width=compare_width,
    )
    frame = decode_raw(Path(source))
    if engine is None:
        engine = engine_for(frame.sensor, settings)
    prepared = prepare_parsed(frame, given)
    del frame
    image = infer(prepared, engine, tile=settings.tile, progress=settings.progress, bits=plan.bits)
    with _folder_for(plan.path):
        return write_result(
            plan, image, prepared, overwrite=overwrite, compare=compare, block=engine.spec.block, keep_mtime=keep_mtime
        )


__all__ = [
    "OutputPlan",
    "check_compare_width",
    "check_suffix",
    "enhance",
    "enhance_file",
    "enhance_frame",
    "names_folder",
    "output_name",
    "output_settings",
    "plan_output",
    "write_result",
]
