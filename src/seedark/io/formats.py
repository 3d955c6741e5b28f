"""The output formats as data, and the one copy of the rules on formats, depths and settings.

:data:`FORMAT_TABLE` says, for each format seedark writes, its file extensions (the
first is what new files get; each, without its dot, is also a name for the format)
and the sample depths it holds (the first is the default). Everything else reads it:
:func:`format_from_path`, :func:`default_extension`, :func:`check_output_settings`,
the CLI's ``--format`` choices. Nothing here imports numpy or Pillow, so the CLI can
build its options from it and ``seedark --help`` stays fast; the encoders are in
:mod:`seedark.io.image`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seedark.errors import UsageError


@dataclass(frozen=True)
class OutputFormat:
    """One output format: its file extensions (the first for new files) and sample depths (the first by default)."""

    extensions: tuple[str, ...]
    bits: tuple[int, ...]


FORMAT_TABLE: dict[str, OutputFormat] = {
    "png": OutputFormat((".png",), (8, 16)),
    "tiff": OutputFormat((".tif", ".tiff"), (16, 8)),
    "jpeg": OutputFormat((".jpg", ".jpeg"), (8,)),
    # linear light for raw editors (seedark.io.linear_dng, docs/dng.md)
    "dng": OutputFormat((".dng",), (16,)),
}
FORMATS = tuple(FORMAT_TABLE)
#: What ``seedark enhance`` and ``batch`` write without ``--format`` or a file name saying otherwise.
DEFAULT_FORMAT = "png"
#: TIFF compressions: deflate (Adobe deflate with the horizontal predictor) or none.
TIFF_COMPRESSIONS = ("deflate", "none")
DEFAULT_COMPRESSION = "deflate"
DEFAULT_JPEG_QUALITY = 95

_EXTENSIONS = {ext: fmt for fmt, spec in FORMAT_TABLE.items() for ext in spec.extensions}
_ALIASES = {fmt: fmt for fmt in FORMAT_TABLE} | {ext[1:]: fmt for ext, fmt in _EXTENSIONS.items()}


def _listing(items: list[str]) -> str:
    """``a, b or c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _canonical(fmt: str) -> str:
    """'png', 'tiff', 'jpeg' or 'dng' for a format name or alias (``tif``, ``jpg``, any case)."""
    wanted = _ALIASES.get(fmt.lower())
    if wanted is None:
        raise UsageError(f"unknown output format {fmt!r}; use {_listing(list(FORMATS))}")
    return wanted


def format_from_path(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The output format ('png', 'tiff', 'jpeg' or 'dng') for ``path`` and an optional ``fmt``.

    An explicit ``fmt`` wins for paths without a known image extension; when both are
    given and disagree (``out.png`` with ``--format jpeg``) that is a UsageError.
    """
    suffix = Path(path).suffix.lower()
    from_ext = _EXTENSIONS.get(suffix)
    if fmt is not None:
        wanted = _canonical(fmt)
        if from_ext is not None and from_ext != wanted:
            raise UsageError(
                f"the extension {suffix!r} does not match --format {fmt}; "
                f"use a {default_extension(wanted)} file name or drop --format",
                path,
            )
        return wanted
    if from_ext is None:
        shown = f"extension {suffix!r}" if suffix else "no extension"
        known = _listing(["/".join(spec.extensions) for spec in FORMAT_TABLE.values()])
        raise UsageError(f"cannot tell the output format from {shown}; use {known} (or --format)", path)
    return from_ext


def default_extension(fmt: str) -> str:
    """The file extension seedark gives new files of format ``fmt`` ('.png', '.tif', '.jpg', '.dng')."""
    return FORMAT_TABLE[_canonical(fmt)].extensions[0]


@dataclass(frozen=True)
class OutputSettings:
    """A format, a sample depth and the format's own settings that go together, as
    :func:`check_output_settings` returns them."""

    fmt: str
    bits: int
    quality: int = DEFAULT_JPEG_QUALITY  # JPEG only
    compression: str = DEFAULT_COMPRESSION  # TIFF only

    @property
    def network_bits(self) -> int | None:
        """The depth the network's output is quantised to as it is made: None (float) for a DNG,
        whose linear samples are computed from the float output, not from gamma-encoded samples."""
        return None if self.fmt == "dng" else self.bits


#: Why --compression is not for a format (the PNG reason is also what JPEG has always been told).
_NO_COMPRESSION_CHOICE = {
    "png": "PNG is always compressed",
    "dng": "a DNG is written uncompressed: LibRaw reads compressed ones only when they hold floats",
}


def _check_bits(fmt: str, bits: int) -> None:
    depths = sorted({b for spec in FORMAT_TABLE.values() for b in spec.bits})
    if bits not in depths:
        raise UsageError(f"bits must be {_listing([str(b) for b in depths])}, got {bits}")
    held = FORMAT_TABLE[fmt].bits
    if bits not in held:
        others = "/".join(f.upper() for f, spec in FORMAT_TABLE.items() if bits in spec.bits)
        raise UsageError(
            f"{fmt.upper()} holds {_listing([str(b) for b in held])} bits per sample; "
            f"use --bits {held[0]}, or {others} for {bits} bits"
        )


def check_output_settings(
    fmt: str, bits: int | None = None, quality: int | None = None, compression: str | None = None
) -> OutputSettings:
    """The one copy of the rules on formats and depths: ``fmt`` is png, tiff, jpeg or dng (or
    an alias), ``bits`` 8 or 16 (None: 16 for TIFF and DNG, else 8), JPEG holds 8 bits only,
    a DNG 16 only, JPEG's ``quality`` is in 1..100 (None: 95) and given for JPEG only,
    ``compression`` (deflate or none; None: deflate) for TIFF only."""
    fmt = _canonical(fmt)
    if bits is None:
        bits = FORMAT_TABLE[fmt].bits[0]
    _check_bits(fmt, bits)
    if quality is not None and fmt != "jpeg":
        raise UsageError(f"--quality is for JPEG only, not {fmt.upper()}; use --format jpeg or a .jpg name")
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"JPEG quality must be in 1..100, not {quality}")
    if compression is not None and fmt != "tiff":
        why = _NO_COMPRESSION_CHOICE.get(fmt, _NO_COMPRESSION_CHOICE["png"])
        raise UsageError(f"--compression is for TIFF only, not {fmt.upper()} ({why})")
    if compression is not None and compression not in TIFF_COMPRESSIONS:
        raise UsageError(f"unknown TIFF compression {compression!r}; use {_listing(list(TIFF_COMPRESSIONS))}")
    return OutputSettings(
        fmt, bits, DEFAULT_JPEG_QUALITY if quality is None else quality, compression or DEFAULT_COMPRESSION
    )
