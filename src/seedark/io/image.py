"""Writing the final sRGB image: the format rules, the TIFF and JPEG encoders, publishing.

Every file is written atomically (seedark._files): it is encoded into a hidden
temporary file in the destination folder and only published (hard-linked or renamed
onto the final name) once complete and fsync'ed, so an interrupted run never leaves a
truncated image behind and never replaces an existing file unless asked to.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms

from seedark._files import ExistsError, atomic_output
from seedark.errors import OutputError, UsageError
from seedark.imaging import samples
from seedark.io.exif import CameraMetadata, add_camera_tags, build_exif
from seedark.io.png import encode_png
from seedark.io.tiff import MAX_TIFF_SIZE, Chunk, Ifd, LazyChunk, layout_tiff

FORMATS = ("png", "tiff", "jpeg")
#: What ``seedark enhance`` and ``batch`` write without ``--format`` or a file name saying otherwise.
DEFAULT_FORMAT = "png"

_EXTENSIONS: dict[str, str] = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
_FORMAT_ALIASES: dict[str, str] = {"png": "png", "tiff": "tiff", "tif": "tiff", "jpeg": "jpeg", "jpg": "jpeg"}
_DEFAULT_EXTENSIONS: dict[str, str] = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}

# JPEG's frame header stores sizes as 16 bits and libjpeg refuses more than this.
_JPEG_MAX_SIDE = 65500
# PNG IHDR sizes are 31-bit.
_PNG_MAX_SIDE = 2**31 - 1


# --------------------------------------------------------------------------- formats


def _canonical(fmt: str) -> str:
    """'png', 'tiff' or 'jpeg' for a format name or alias (``tif``, ``jpg``, any case)."""
    wanted = _FORMAT_ALIASES.get(fmt.lower())
    if wanted is None:
        raise UsageError(f"unknown output format {fmt!r}; use png, tiff or jpeg")
    return wanted


def format_from_path(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The output format ('png', 'tiff' or 'jpeg') for ``path`` and an optional ``fmt``.

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
        raise UsageError(
            f"cannot tell the output format from {shown}; use .png, .tif/.tiff or .jpg/.jpeg (or --format)",
            path,
        )
    return from_ext


def default_extension(fmt: str) -> str:
    """The file extension seedark gives new files of format ``fmt`` ('.png', '.tif', '.jpg')."""
    return _DEFAULT_EXTENSIONS[_canonical(fmt)]


@dataclass(frozen=True)
class OutputSettings:
    """A format and a sample depth that go together, as :func:`check_output_settings` returns them."""

    fmt: str
    bits: int
    jpeg_quality: int = 95


def check_output_settings(fmt: str, bits: int | None = None, quality: int = 95) -> OutputSettings:
    """The one copy of the rules on formats and depths: ``fmt`` is png, tiff or jpeg (or an
    alias), ``bits`` 8 or 16 (None: 16 for TIFF, else 8), JPEG holds 8 bits only, and its
    ``quality`` is in 1..100."""
    fmt = _canonical(fmt)
    if bits is None:
        bits = 16 if fmt == "tiff" else 8
    if bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {bits}")
    if fmt == "jpeg" and bits != 8:
        raise UsageError("JPEG holds 8 bits per sample; use --bits 8, or PNG/TIFF for 16 bits")
    if fmt == "jpeg" and not 1 <= quality <= 100:
        raise UsageError(f"JPEG quality must be in 1..100, not {quality}")
    return OutputSettings(fmt, bits, quality)


@functools.cache
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile (Pillow/LittleCMS's built-in one), to tag every output with."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return bytes(profile.tobytes())


# --------------------------------------------------------------------------- TIFF

_TIFF_STRIP_BYTES = 256 << 10


def _tiff_size_estimate(h: int, w: int, bits: int) -> int:
    # Pixels plus generous room for the IFDs, ICC profile and strip tables.
    return h * w * 3 * (bits // 8) + (1 << 20)


def _encode_tiff(
    fh: BinaryIO,
    q: np.ndarray,
    icc: bytes,
    metadata: CameraMetadata | None,
    software: str,
) -> None:
    h, w, _ = q.shape
    bits = 8 if q.dtype == np.uint8 else 16
    sample = np.dtype("<u2" if bits == 16 else np.uint8)
    row_bytes = w * 3 * (bits // 8)
    rows_per_strip = max(1, min(h, _TIFF_STRIP_BYTES // row_bytes))
    chunks: list[Chunk]
    if q.flags.c_contiguous and q.dtype == sample:
        flat = q.reshape(-1).view(np.uint8).data
        strip = rows_per_strip * row_bytes
        chunks = [flat[i : i + strip] for i in range(0, len(flat), strip)]
    else:
        # A rotated or big-endian image: copy strip by strip, never the whole image at once.
        def make(a: int) -> Callable[[], memoryview]:
            return lambda: np.ascontiguousarray(q[a : a + rows_per_strip], dtype=sample).reshape(-1).view(np.uint8).data

        chunks = [LazyChunk(min(rows_per_strip, h - a) * row_bytes, make(a)) for a in range(0, h, rows_per_strip)]

    ifd = Ifd()
    ifd.long(256, w)  # ImageWidth
    ifd.long(257, h)  # ImageLength
    ifd.short(258, [bits] * 3)  # BitsPerSample
    ifd.short(259, 1)  # Compression: none
    ifd.short(262, 2)  # PhotometricInterpretation: RGB
    ifd.strips(273, 279, chunks)  # StripOffsets / StripByteCounts
    ifd.short(277, 3)  # SamplesPerPixel
    ifd.long(278, rows_per_strip)
    ifd.rational(282, [(72, 1)])  # XResolution
    ifd.rational(283, [(72, 1)])  # YResolution
    ifd.short(284, 1)  # PlanarConfiguration: chunky
    ifd.short(296, 2)  # ResolutionUnit: inch
    ifd.undefined(34675, icc)  # InterColorProfile
    add_camera_tags(ifd, metadata, software)
    try:
        layout = layout_tiff(ifd)
    except ValueError as err:
        raise OutputError(str(err)) from err
    layout.write_to(fh)


# --------------------------------------------------------------------------- JPEG


def _encode_jpeg(fh: BinaryIO, q: np.ndarray, icc: bytes, exif: bytes, quality: int) -> None:
    img = Image.fromarray(np.ascontiguousarray(q))
    img.save(
        fh,
        format="JPEG",
        quality=quality,
        subsampling=0,  # 4:4:4: chroma detail matters after heavy denoising
        icc_profile=icc,
        exif=b"Exif\x00\x00" + exif,
    )


# --------------------------------------------------------------------------- publishing


def _reason(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "cannot write: folder is not writable"
    if err.errno == errno.ENOENT:
        return "cannot write: folder does not exist"
    if err.errno == errno.EROFS:
        return "cannot write: read-only file system"
    return f"cannot write: {err.strerror or err}"


def check_destination(final: Path, *, overwrite: bool, create_folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot or must not be written.

    ``create_folder``: a missing folder is fine (the caller creates it).
    """
    folder = final.parent
    if create_folder and not folder.exists():
        return
    if not folder.exists():
        raise OutputError(f"output folder does not exist: {folder}", final)
    if not folder.is_dir():
        raise OutputError(f"output folder is not a folder: {folder}", final)
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write: folder is not writable: {folder}", final)
    if final.is_dir():
        raise OutputError("is a folder; give a file name or a folder to write into", final)
    if not overwrite and (final.exists() or final.is_symlink()):
        raise OutputError("already exists (use --overwrite to replace it)", final)


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    fmt: str,
    bits: int,
    metadata: CameraMetadata | None,
    software: str,
    overwrite: bool = False,
    jpeg_quality: int = 95,
) -> Path:
    """Write an HxWx3 image as a PNG, TIFF or JPEG file, atomically.

    A float image in [0, 1] is clipped and quantised to ``bits`` (8 or 16; JPEG only
    8) with round-half-up (:func:`quantise`); a uint8/uint16 image of ``bits`` bits
    (quantised earlier, e.g. tile by tile by ``Engine.run``) is written as is. The file
    is tagged with an sRGB ICC profile and EXIF built from ``metadata``. It appears
    under its final name only once fully written; on any failure (or
    KeyboardInterrupt) nothing is left behind. Returns the path.

    Raises UsageError for impossible option combinations and OutputError when the
    file cannot be written (folder missing or read-only, file exists, disk full...).
    """
    settings = check_output_settings(fmt, bits, jpeg_quality)
    return save_image(path, rgb, settings, metadata=metadata, software=software, overwrite=overwrite)


def _check_size(final: Path, rgb: np.ndarray, settings: OutputSettings) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 image, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    if settings.fmt == "jpeg" and max(h, w) > _JPEG_MAX_SIDE:
        raise OutputError(f"JPEG cannot hold images over {_JPEG_MAX_SIDE} pixels a side", final)
    if settings.fmt == "png" and max(h, w) > _PNG_MAX_SIDE:
        raise OutputError("image too large for PNG", final)
    if settings.fmt == "tiff" and _tiff_size_estimate(h, w, settings.bits) > MAX_TIFF_SIZE:
        raise OutputError("image too large for TIFF (over 4 GB); use PNG", final)


def save_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    settings: OutputSettings,
    *,
    metadata: CameraMetadata | None,
    software: str,
    overwrite: bool = False,
    destination_checked: bool = False,
) -> Path:
    """:func:`write_image` with the settings checked already (:func:`check_output_settings`).

    ``destination_checked``: the caller ran :func:`check_destination` before its work
    began (publishing still never replaces a file that appeared since, unless ``overwrite``).
    """
    final = Path(path)
    _check_size(final, rgb, settings)
    if not destination_checked:
        # Fail before the expensive work when the result could not be published anyway.
        check_destination(final, overwrite=overwrite)
    icc = srgb_icc_profile()
    q = samples(rgb, settings.bits)
    try:
        with atomic_output(final, overwrite=overwrite) as fh:
            if settings.fmt == "png":
                encode_png(fh, q, icc, build_exif(metadata, software))
            elif settings.fmt == "tiff":
                _encode_tiff(fh, q, icc, metadata, software)
            else:
                _encode_jpeg(fh, q, icc, build_exif(metadata, software), settings.jpeg_quality)
    except ExistsError:
        raise OutputError("already exists (use --overwrite to replace it)", final) from None
    except OSError as exc:
        raise OutputError(_reason(exc), final) from exc
    except OutputError as exc:
        if exc.path is None:
            raise OutputError(exc.reason, final) from exc
        raise
    return final
