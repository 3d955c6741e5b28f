"""Where a result is written and how: the output options, the output plan, publishing.

``seedark enhance`` and ``seedark batch`` share all of it. Their output keywords are
declared once (:class:`OutputKwargs`) and checked once into an :class:`OutputOptions`;
every output is named by one rule (:func:`output_name`); an :class:`OutputPlan` says
where one result goes, checked before any work (:func:`plan_output` for one file,
``seedark.pipeline.planning`` for a batch); :func:`write_result` publishes the image
and its comparison picture, each atomically and never over a file unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

from seedark._version import __version__
from seedark.errors import OutputError, UsageError
from seedark.frames.prepare import Prepared
from seedark.io.formats import (
    DEFAULT_FORMAT,
    OutputSettings,
    check_output_settings,
    default_extension,
    format_from_path,
)
from seedark.io.image import check_destination, check_name, output_exists, save_image
from seedark.io.pixels import FinishedRows, apply_orientation, to_8bit
from seedark.pipeline.compare import DEFAULT_COMPARE_WIDTH, compare_picture, naive_brighten
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, infer

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

#: The side-by-side picture ``--compare`` writes.
COMPARE_SETTINGS = OutputSettings("jpeg", 8)
#: The narrowest ``--compare-width`` that still shows two pictures.
MIN_COMPARE_WIDTH = 100


# --------------------------------------------------------------------------- the options


class OutputKwargs(TypedDict, total=False):
    """How results are written: the keywords of :func:`plan_output`, ``enhance_file`` and
    ``run_batch`` (the command line's output options), declared once; defaults: :class:`OutputOptions`'s."""

    fmt: str | None
    bits: int | None
    quality: int | None
    compression: str | None
    suffix: str
    overwrite: bool
    keep_mtime: bool
    compare: bool
    compare_width: int | None


class ConvertKwargs(OutputKwargs, EngineKwargs, total=False):
    """The keywords of ``enhance_file`` and ``run_batch``: how results are written and how the network runs."""


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


@dataclass(frozen=True)
class OutputOptions:
    """How results are written: one object instead of the same keywords in every signature.

    Build it with :meth:`from_kwargs`, which checks what can be checked without a
    destination (``--suffix``, ``--compare-width``, stored resolved). The format and its
    settings are checked with the destination, whose extension may name the format
    (:meth:`settings`).
    """

    fmt: str | None = None
    bits: int | None = None
    quality: int | None = None
    compression: str | None = None
    suffix: str = ""
    overwrite: bool = False
    keep_mtime: bool = False
    compare: bool = False
    compare_width: int = DEFAULT_COMPARE_WIDTH

    @classmethod
    def from_kwargs(cls, **kwargs: Unpack[OutputKwargs]) -> OutputOptions:
        """The options from the public keywords (an unknown keyword is a TypeError, as in any call)."""
        given = cast("dict[str, Any]", dict(kwargs))
        check_suffix(given.get("suffix", ""))
        given["compare_width"] = check_compare_width(given.get("compare_width"), bool(given.get("compare")))
        return cls(**given)

    def settings(self, dest: Path | None = None) -> OutputSettings:
        """Checked format, bits, JPEG quality and TIFF compression for a destination (whose
        extension may say the format), or without one for ``fmt`` or the default format."""
        fmt = format_from_path(dest, self.fmt) if dest is not None else self.fmt
        return check_output_settings(fmt or DEFAULT_FORMAT, self.bits, self.quality, self.compression)


def conversion_options(kwargs: ConvertKwargs) -> tuple[EngineOptions, OutputOptions]:
    """A call's keywords (``enhance_file``, ``run_batch``) as the two option objects, each checked once."""
    output = {k: v for k, v in kwargs.items() if k in OutputKwargs.__optional_keys__}
    engine = {k: v for k, v in kwargs.items() if k not in output}
    return EngineOptions.from_kwargs(**cast(EngineKwargs, engine)), OutputOptions.from_kwargs(
        **cast(OutputKwargs, output)
    )


# --------------------------------------------------------------------------- names and plans


def output_name(source: Path, fmt: str, suffix: str = "", *, clash: str = "") -> str:
    """The name seedark gives the output of ``source``: ``<stem><clash><suffix>.<ext>``, where
    ``clash`` tells apart the files of a batch that would get the same name (``_arw``, ``_arw_2``)."""
    return f"{source.stem}{clash}{suffix}{default_extension(fmt)}"


def input_tag(source: Path) -> str:
    """What tells an output apart when its plain name is taken (by another file's output, or by the
    input itself: a DNG made from a DNG): the input's extension, ``IMG_1.DNG`` -> ``IMG_1_dng``."""
    return f"_{source.suffix.lstrip('.').lower() or 'raw'}"


def compare_path(output: Path) -> Path:
    """Where the ``--compare`` picture of ``output`` goes: ``<output stem>_compare.jpg`` beside it."""
    return output.with_name(f"{output.stem}_compare.jpg")


@dataclass(frozen=True)
class OutputPlan:
    """Where one result goes and how, checked (:func:`plan_output`, or a batch's plan)."""

    path: Path
    settings: OutputSettings
    options: OutputOptions = OutputOptions()

    @property
    def bits(self) -> int:
        return self.settings.bits

    @property
    def network_bits(self) -> int | None:
        """What ``infer`` quantises the network's output to: None (float) for a DNG."""
        return self.settings.network_bits

    @property
    def compare_path(self) -> Path:
        return compare_path(self.path)

    def taken(self) -> bool:
        """Whether the output is there and to be left alone (no ``overwrite``). A batch asks again
        before each step: another run into the same folder may have published it meanwhile."""
        return not self.options.overwrite and output_exists(self.path)

    def published_meanwhile(self, error: BaseException) -> bool:
        """Whether publishing failed because the output appeared while this file was converted."""
        return isinstance(error, OutputError) and error.path == self.path and self.taken()

    def check_destinations(self, *, create_folder: bool) -> None:
        """Refuse (OutputError), before any work, an output or comparison picture that must not be written."""
        check_destination(self.path, overwrite=self.options.overwrite, create_folder=create_folder)
        if self.options.compare:
            check_destination(self.compare_path, overwrite=self.options.overwrite, create_folder=create_folder)


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


def _check_place(source: Path, dest: Path, settings: OutputSettings, *, into_folder: bool) -> None:
    """``dest``: a name the file system takes, not the input, in a folder that is there or can be made
    (``-o`` with a file name in a folder that is not there: how to have it made)."""
    check_name(dest)
    try:
        if _same_file(dest, source):
            raise OutputError("output would replace the input file; give -o another name", dest)
        if into_folder and not dest.parent.exists():
            _check_creatable(dest.parent, dest)
        if not into_folder and not dest.parent.exists():
            raise OutputError(_missing_folder(dest, settings), dest)
    except OSError as exc:  # a folder on the way that cannot be searched, a path too long
        raise OutputError(f"cannot write: {exc.strerror or exc}", dest) from exc


def check_output_folder(folder: Path) -> None:
    """A folder to write into (``batch -o``, the demo's): one that is there, or that can be made;
    refused before any work otherwise (every file would be decoded and run, then fail)."""
    try:
        if folder.exists():
            if not folder.is_dir():
                raise OutputError("output folder is not a folder", folder)
            return
        _check_creatable(folder, folder)
    except OSError as exc:
        raise OutputError(f"cannot use the output folder: {exc.strerror or exc}", folder) from exc


def plan_file(source: Path, output: str | os.PathLike[str] | None, options: OutputOptions) -> OutputPlan:
    """:func:`plan_output` with the options checked already."""
    into_folder = output is None or names_folder(output)
    if output is not None and not into_folder:
        if options.suffix:
            raise UsageError("--suffix names outputs written into a folder; -o gives a file name", output)
        dest = Path(output)
    else:
        folder = source.parent if output is None else Path(output)
        dest = folder / output_name(source, options.fmt or DEFAULT_FORMAT, options.suffix)
        if _same_file(dest, source):  # the name of the input itself (a DNG from a DNG): named as batch names it
            dest = folder / output_name(source, options.fmt or DEFAULT_FORMAT, options.suffix, clash=input_tag(source))
    try:
        settings = options.settings(dest)
    except UsageError as exc:
        if into_folder or options.fmt is not None or dest.suffix:
            raise
        # "-o newdir": most likely a folder that does not exist yet
        raise UsageError(f"{exc.reason}, or end it with / for a folder to create", exc.path) from None
    _check_place(source, dest, settings, into_folder=into_folder)
    plan = OutputPlan(dest, settings, options)
    plan.check_destinations(create_folder=into_folder)
    return plan


def _same_file(a: Path, b: Path) -> bool:
    try:
        return output_exists(a) and output_exists(b) and a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a link loop: not a file to be replaced; writing says why it fails
        return False


def _missing_folder(dest: Path, settings: OutputSettings) -> str:
    """``-o missing/out.jpg``: the folder is not there; ``-o missing/`` would make it."""
    fmt = "" if settings.fmt == DEFAULT_FORMAT else f" --format {settings.fmt}"
    folder = shlex.quote(f"{dest.parent}{os.sep}")
    return (
        f"output folder does not exist: {dest.parent}; to have it made, give the folder with a trailing "
        f"slash: -o {folder}{fmt} (the image is then named after the RAW file)"
    )


def plan_output(
    source: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, **options: Unpack[OutputKwargs]
) -> OutputPlan:
    """Where and how the result will be written; refuses before any work is done.

    ``output``: a file, or a folder to write ``<stem><suffix>.<ext>`` into (None: the
    input's folder); a folder that does not exist yet is created by ``enhance_file``.
    ``compare``: the comparison picture is part of the output, under the same rule:
    an existing one is replaced only with ``overwrite``; ``compare_width`` is its
    largest width (default 2400, 0: full size). ``quality``: JPEG only, 1..100
    (default 95); ``compression``: TIFF only, deflate (default) or none.
    """
    return plan_file(Path(source), output, OutputOptions.from_kwargs(**options))


# --------------------------------------------------------------------------- publishing


@contextlib.contextmanager
def folder_for(path: Path) -> Iterator[None]:
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


def comparison(prepared: Prepared, enhanced: np.ndarray, block: int, width: int = DEFAULT_COMPARE_WIDTH) -> np.ndarray:
    """``naively brightened input | enhanced`` for a person to look at, as 8-bit samples,
    labelled and scaled to at most ``width`` columns (0: full size)."""
    before = naive_brighten(np.asarray(prepared.packed), prepared.sensor, prepared.camera_wb, block)
    before = apply_orientation(before[: prepared.height, : prepared.width], prepared.flip)
    return compare_picture(before, to_8bit(enhanced), width)


def write_result(
    plan: OutputPlan,
    image: np.ndarray,
    prepared: Prepared,
    *,
    block: int = 2,
    ready: Callable[[int], None] | None = None,
) -> Path:
    """Publish the image, then (with ``compare``) the comparison picture, atomically.

    The destinations were checked when the plan was made (:func:`plan_output`, or the
    batch before decoding); publishing still never replaces a file unless ``overwrite``.
    The image comes first, so a failure (a full disk) leaves no comparison picture of
    an image that is not there; if only the comparison picture fails, the error says
    that the image was written. ``keep_mtime``: the image gets the RAW file's access
    and modification times (the comparison picture keeps its own). ``ready(n)``: returns
    once rows ``[0, n)`` of ``image``, still being computed, are final (:func:`infer_and_write`).
    """
    options = plan.options
    software = f"seedark {__version__}"
    written = save_image(
        plan.path,
        image,
        plan.settings,
        metadata=prepared.camera,
        software=software,
        overwrite=options.overwrite,
        destination_checked=True,
        times_ns=source_times(prepared.path) if options.keep_mtime else None,
        ready=ready,
    )
    if options.compare:
        picture = comparison(prepared, image, block, options.compare_width)
        try:
            save_image(
                plan.compare_path,
                picture,
                COMPARE_SETTINGS,
                metadata=prepared.camera,
                software=software,
                overwrite=options.overwrite,
                destination_checked=True,
            )
        except OutputError as exc:
            reason = f"{exc.reason} (the enhanced image was written to {written}; only the comparison is missing)"
            raise OutputError(reason, plan.compare_path) from exc
    return written


def infer_and_write(plan: OutputPlan, prepared: Prepared, engine: Engine, settings: EngineOptions) -> Path:
    """Run the network on ``prepared`` and publish the result as :func:`write_result` does.

    On the CPU the image is written while it is computed: a writer thread encodes each
    PNG or TIFF piece as soon as the tiles have finished its rows (``FinishedRows``), in
    order, so the file is the same, byte for byte. If the network fails, or the run is
    interrupted before the file is complete, the writer is told, and nothing is published.
    """
    run = partial(
        infer,
        prepared,
        engine,
        tile=settings.tile,
        progress=settings.progress,
        bits=plan.network_bits,
        match_sensor=settings.match_sensor,
    )
    # --keep-mtime reads the RAW file's times just before the image is written (source_times),
    # which a writer started with the network would do before the tiles run.
    if engine.device.type != "cpu" or plan.settings.fmt not in ("png", "tiff") or plan.options.keep_mtime:
        return write_result(plan, run(), prepared, block=engine.spec.block)
    rows = FinishedRows(prepared.height, prepared.width, prepared.flip)
    with ThreadPoolExecutor(1, thread_name_prefix="seedark-writer") as pool:
        written = pool.submit(
            lambda: write_result(plan, rows.image(), prepared, block=engine.spec.block, ready=rows.wait)
        )
        try:
            run(rows=rows)
            return written.result()
        except BaseException as exc:  # the network failed, or Ctrl-C: the writer stops and publishes nothing
            rows.abandon(exc)
            raise


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


__all__ = [
    "COMPARE_SETTINGS",
    "ConvertKwargs",
    "OutputKwargs",
    "OutputOptions",
    "OutputPlan",
    "check_compare_width",
    "check_output_folder",
    "check_suffix",
    "compare_path",
    "comparison",
    "conversion_options",
    "folder_for",
    "infer_and_write",
    "input_tag",
    "names_folder",
    "output_name",
    "plan_file",
    "plan_output",
    "source_times",
    "write_result",
]
