"""Writing the final sRGB image: the sRGB profile, the TIFF, JPEG and DNG encoders, publishing.

The formats and the rules on them are :mod:`seedark.io.formats`; the PNG encoder is
:mod:`seedark.io.png`.

Every file is written atomically (seedark._files): it is encoded into a hidden
temporary file in the destination folder and only published (hard-linked or renamed
onto the final name) once complete and fsync'ed, so an interrupted run never leaves a
truncated image behind and never replaces an existing file unless asked to.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms

from seedark._files import ExistsError, atomic_output, name_max
from seedark._parallel import ordered_parallel
from seedark.errors import OutputError
from seedark.io.deflate import compressor
from seedark.io.exifwrite import add_camera_tags, build_exif
from seedark.io.formats import DEFAULT_COMPRESSION, OutputSettings, check_output_settings
from seedark.io.linear_dng import linear_dng_ifd, linear_samples
from seedark.io.metadata import TAG_XMP, CameraMetadata
from seedark.io.pixels import samples
from seedark.io.png import encode_png
from seedark.io.tiff import MAX_TIFF_SIZE, Buffer, Ifd, ifd_at, tiff_header
from seedark.io.xmp import jpeg_segment

# JPEG's frame header stores sizes as 16 bits and libjpeg refuses more than this.
_JPEG_MAX_SIDE = 65500
# PNG IHDR sizes are 31-bit.
_PNG_MAX_SIDE = 2**31 - 1


# The ICC header's creation date (bytes 24-35, ICC.1:2022 7.2.1): LittleCMS stamps the
# current time, which would make every output differ from the last; a fixed date makes
# the bytes reproducible. 2026-01-01 00:00:00 UTC, as six big-endian uint16.
_ICC_DATE = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)


@functools.cache
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile (Pillow/LittleCMS's built-in one), to tag every output with.

    The same bytes on every run: a fixed creation date, and the profile ID (bytes
    84-99) set to the MD5 the ICC specification defines (7.2.18: of the whole profile
    with the flags, rendering intent and ID fields zeroed), so tools can check it.
    """
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = _ICC_DATE
    hashed = bytearray(profile)
    hashed[44:48] = bytes(4)  # profile flags
    hashed[64:68] = bytes(4)  # rendering intent
    hashed[84:100] = bytes(16)  # profile ID
    profile[84:100] = hashlib.md5(hashed, usedforsecurity=False).digest()
    return bytes(profile)


# --------------------------------------------------------------------------- TIFF

_TIFF_STRIP_BYTES = 256 << 10


def _tiff_size_estimate(h: int, w: int, bits: int) -> int:
    # Pixels, what deflate may add to incompressible strips (measured on random bytes: zlib's
    # and zlib-ng's Z_RLE 0.12 %, ISA-L 0.02 %), and generous room for the IFDs, ICC profile
    # and strip tables.
    raw = h * w * 3 * (bits // 8)
    return raw + raw // 500 + (1 << 20)


def _tiff_strip(block: np.ndarray, sample: np.dtype, deflate: bool) -> Buffer:
    """One strip's bytes: the rows of ``block`` in ``sample`` byte order, or, with
    ``deflate``, horizontally differenced (TIFF predictor 2: each sample minus the same
    sample of the pixel to its left, modulo 2**bits) and zlib-compressed (Adobe deflate)."""
    if not deflate:
        return np.ascontiguousarray(block, dtype=sample).reshape(-1).view(np.uint8).data
    diff = np.empty(block.shape, dtype=sample)
    diff[:, 0] = block[:, 0]
    np.subtract(block[:, 1:], block[:, :-1], out=diff[:, 1:], dtype=block.dtype, casting="unsafe")
    comp = compressor(8 * sample.itemsize, raw=False)
    return comp.compress(diff.data) + comp.flush()


def _tiff_ifd(q: np.ndarray, rows_per_strip: int, compression: str) -> Ifd:
    """IFD0 of an RGB image, less its strips and camera tags."""
    h, w, _ = q.shape
    bits = 8 if q.dtype == np.uint8 else 16
    ifd = Ifd()
    ifd.long(256, w)  # ImageWidth
    ifd.long(257, h)  # ImageLength
    ifd.short(258, [bits] * 3)  # BitsPerSample
    ifd.short(259, 8 if compression == "deflate" else 1)  # Compression: Adobe deflate, or none
    ifd.short(262, 2)  # PhotometricInterpretation: RGB
    ifd.short(277, 3)  # SamplesPerPixel
    ifd.long(278, rows_per_strip)
    ifd.rational(282, [(72, 1)])  # XResolution
    ifd.rational(283, [(72, 1)])  # YResolution
    ifd.short(284, 1)  # PlanarConfiguration: chunky
    ifd.short(296, 2)  # ResolutionUnit: inch
    if compression == "deflate":
        ifd.short(317, 2)  # Predictor: horizontal differencing
    return ifd


def _encode_tiff(
    fh: BinaryIO,
    q: np.ndarray,
    icc: bytes,
    metadata: CameraMetadata | None,
    software: str,
    compression: str = DEFAULT_COMPRESSION,
    ready: Callable[[int], None] | None = None,
) -> None:
    """A little-endian RGB TIFF: the strips first (compressed on worker threads, written
    in order as they finish), then the directory, whose offset the header gets last;
    memory stays at a few strips whatever the image size. ``ready(n)``, when given,
    returns once rows ``[0, n)`` of ``q`` are final (strips are then encoded as their
    rows are computed; the file is the same, byte for byte)."""
    h, w, _ = q.shape
    sample = np.dtype("<u2" if q.dtype == np.uint16 else np.uint8)
    rows_per_strip = max(1, min(h, _TIFF_STRIP_BYTES // (w * 3 * sample.itemsize)))
    starts = range(0, h, rows_per_strip)
    deflate = compression == "deflate"

    def job(i: int) -> Buffer:
        if ready is not None:
            ready(min(h, starts[i] + rows_per_strip))
        return _tiff_strip(q[starts[i] : starts[i] + rows_per_strip], sample, deflate)

    offsets, counts, pos = _stream_strips(fh, job, len(starts), "image too large for TIFF (over 4 GB); use PNG")
    ifd = _tiff_ifd(q, rows_per_strip, compression)
    ifd.undefined(34675, icc)  # InterColorProfile
    # No PixelX/YDimension: EXIF keeps them for compressed images; a TIFF's size is its ImageWidth/ImageLength.
    add_camera_tags(ifd, metadata, software)
    if metadata is not None and metadata.xmp:
        ifd.byte(TAG_XMP, metadata.xmp)  # type BYTE, as the XMP specification says
    _finish_tiff(fh, ifd, offsets, counts, pos)


def _stream_strips(
    fh: BinaryIO, job: Callable[[int], Buffer], count: int, too_large: str
) -> tuple[list[int], list[int], int]:
    """A TIFF header, then strips ``job(0) .. job(count-1)`` (made on worker threads) as they come:
    their offsets, their byte counts and where the directory goes. OutputError(``too_large``)
    once the data passes 4 GB."""
    fh.write(tiff_header("<", 0))  # IFD0's offset is patched in once the strips are out
    pos = 8
    offsets: list[int] = []
    counts: list[int] = []
    for strip in ordered_parallel(job, count):
        if pos > MAX_TIFF_SIZE:
            raise OutputError(too_large)
        fh.write(strip)
        offsets.append(pos)
        counts.append(memoryview(strip).nbytes)
        pos += counts[-1]
    if pos & 1:  # the directory starts on a word boundary
        fh.write(b"\0")
        pos += 1
    return offsets, counts, pos


def _finish_tiff(fh: BinaryIO, ifd: Ifd, offsets: list[int], counts: list[int], pos: int) -> None:
    """The directory after the strips (:func:`_stream_strips`), and the header pointed at it."""
    ifd.long(273, offsets)  # StripOffsets
    ifd.long(279, counts)  # StripByteCounts
    try:
        fh.write(ifd_at(ifd, pos))
    except ValueError as err:
        raise OutputError(str(err)) from err
    fh.seek(4)
    fh.write(struct.pack("<I", pos))


# --------------------------------------------------------------------------- DNG


def _encode_dng(fh: BinaryIO, rgb: np.ndarray, metadata: CameraMetadata | None, software: str) -> None:
    """A linear DNG (:mod:`seedark.io.linear_dng`) of a float (or 16-bit) image: each strip's
    samples are made linear on a worker thread, as the TIFF's are compressed."""
    h, w, _ = rgb.shape
    rows_per_strip = max(1, min(h, _TIFF_STRIP_BYTES // (w * 6)))
    starts = range(0, h, rows_per_strip)

    def job(i: int) -> Buffer:
        return linear_samples(rgb[starts[i] : starts[i] + rows_per_strip]).reshape(-1).view(np.uint8).data

    offsets, counts, pos = _stream_strips(fh, job, len(starts), "image too large for a DNG (over 4 GB); use PNG")
    _finish_tiff(fh, linear_dng_ifd(w, h, rows_per_strip, metadata, software), offsets, counts, pos)


# --------------------------------------------------------------------------- JPEG


def _encode_jpeg(fh: BinaryIO, q: np.ndarray, icc: bytes, exif: bytes, quality: int, xmp: bytes | None) -> None:
    img = Image.fromarray(np.ascontiguousarray(q))
    # The XMP segment goes in as Pillow's "extra" markers: its own "xmp" option needs Pillow 11.
    segment = jpeg_segment(xmp) if xmp else None
    img.save(
        fh,
        format="JPEG",
        quality=quality,
        subsampling=0,  # 4:4:4: chroma detail matters after heavy denoising
        icc_profile=icc,
        exif=b"Exif\x00\x00" + exif,
        extra=segment or b"",
    )


# --------------------------------------------------------------------------- publishing


def _set_times(fh: BinaryIO, times_ns: tuple[int, int]) -> bool:
    """Give the still unpublished file its times: publishing (a link or rename) keeps them,
    so the file never appears with the wrong time, and a failure leaves nothing behind.
    False where the platform cannot set them through the open file (Windows)."""
    if os.utime not in os.supports_fd:
        return False
    fh.flush()  # a write after this would set the modification time again
    os.utime(fh.fileno(), ns=times_ns)
    return True


def _reason(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "cannot write: folder is not writable"
    if err.errno == errno.ENOENT:
        return "cannot write: folder does not exist"
    if err.errno == errno.EROFS:
        return "cannot write: read-only file system"
    return f"cannot write: {err.strerror or err}"


def output_exists(final: Path) -> bool:
    """Whether ``final`` exists; False when it cannot even be looked at (a name too long, a folder
    that cannot be searched): :func:`check_destination` then says why it cannot be written."""
    try:
        return final.exists()
    except OSError:
        return False


def check_name(final: Path) -> None:
    """Refuse a file name longer than the file system takes (a long ``--suffix``, say), with its length."""
    size, most = len(os.fsencode(final.name)), name_max(final.parent)
    if size > most:
        raise OutputError(f"file name too long: {size} bytes, the file system takes at most {most}", final)


def check_destination(final: Path, *, overwrite: bool, create_folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot or must not be written.

    ``create_folder``: a missing folder is fine (the caller creates it). A path that cannot
    even be looked at (too long, a folder on the way that cannot be searched) is refused too.
    """
    check_name(final)
    try:
        _check_destination(final, overwrite=overwrite, create_folder=create_folder)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", final) from exc


def _check_destination(final: Path, *, overwrite: bool, create_folder: bool) -> None:
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
    quality: int | None = None,
    compression: str | None = None,
) -> Path:
    """Write an HxWx3 image as a PNG, TIFF, JPEG or DNG file, atomically.

    A float image in [0, 1] is clipped and quantised to ``bits`` (8 or 16; JPEG only
    8) with round-half-up (:func:`quantise`); a uint8/uint16 image of ``bits`` bits
    (quantised earlier, e.g. tile by tile by ``Engine.run``) is written as is. A DNG
    (16 bits) holds the image in linear light (:mod:`seedark.io.linear_dng`): give it
    the float image, so that its shadows are not made from 16-bit gamma-encoded samples.
    ``quality``: JPEG only, 1..100 (default 95). ``compression``: TIFF only, "deflate"
    (default: lossless, with the horizontal predictor) or "none". The file is tagged
    with an sRGB ICC profile and EXIF built from ``metadata``. It appears
    under its final name only once fully written; on any failure (or
    KeyboardInterrupt) nothing is left behind. Returns the path.

    Raises UsageError for impossible option combinations and OutputError when the
    file cannot be written (folder missing or read-only, file exists, disk full...).
    """
    settings = check_output_settings(fmt, bits, quality, compression)
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
    if settings.fmt == "dng" and _tiff_size_estimate(h, w, 16) > MAX_TIFF_SIZE:
        raise OutputError("image too large for a DNG (over 4 GB); use PNG", final)


def save_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    settings: OutputSettings,
    *,
    metadata: CameraMetadata | None,
    software: str,
    overwrite: bool = False,
    destination_checked: bool = False,
    times_ns: tuple[int, int] | None = None,
    ready: Callable[[int], None] | None = None,
) -> Path:
    """:func:`write_image` with the settings checked already (:func:`check_output_settings`).

    ``destination_checked``: the caller ran :func:`check_destination` before its work
    began (publishing still never replaces a file that appeared since, unless ``overwrite``).
    ``times_ns``: (access, modification) times in ns the file gets (``--keep-mtime``).
    ``ready(n)``: returns once rows ``[0, n)`` of ``rgb`` (uint8/uint16 samples, still being
    computed) are final, so PNG and TIFF encode rows as they come; the same bytes.
    """
    final = Path(path)
    _check_size(final, rgb, settings)
    if not destination_checked:
        # Fail before the expensive work when the result could not be published anyway.
        check_destination(final, overwrite=overwrite)
    if ready is not None and (settings.fmt in ("jpeg", "dng") or np.issubdtype(rgb.dtype, np.floating)):
        ready(rgb.shape[0])  # encoded in one piece
    try:
        with atomic_output(final, overwrite=overwrite) as fh:
            _encode(fh, rgb, settings, metadata, software, ready)
            late = times_ns is not None and not _set_times(fh, times_ns)
        if late and times_ns is not None:
            os.utime(final, ns=times_ns)
    except ExistsError:
        raise OutputError("already exists (use --overwrite to replace it)", final) from None
    except OSError as exc:
        raise OutputError(_reason(exc), final) from exc
    except OutputError as exc:
        if exc.path is None:
            raise OutputError(exc.reason, final) from exc
        raise
    return final


def _encode(
    fh: BinaryIO,
    rgb: np.ndarray,
    settings: OutputSettings,
    metadata: CameraMetadata | None,
    software: str,
    ready: Callable[[int], None] | None = None,
) -> None:
    """The file's bytes in ``settings.fmt``: a DNG from the image as it is (float, made linear),
    the others from its ``settings.bits``-bit samples (PNG and TIFF rows as ``ready`` says they are final)."""
    if settings.fmt == "dng":
        _encode_dng(fh, rgb, metadata, software)
        return
    icc = srgb_icc_profile()
    q = samples(rgb, settings.bits)
    size = (q.shape[1], q.shape[0])
    xmp = metadata.xmp if metadata is not None else None
    if settings.fmt == "png":
        encode_png(fh, q, icc, build_exif(metadata, software, size=size), xmp, ready)
    elif settings.fmt == "tiff":
        _encode_tiff(fh, q, icc, metadata, software, settings.compression, ready)
    else:
        _encode_jpeg(fh, q, icc, build_exif(metadata, software, size=size, jpeg=True), settings.quality, xmp)
