"""Writing camera metadata into outputs: the EXIF block (PNG, JPEG) and the tags of a TIFF or DNG.

What :class:`~seedark.io.metadata.CameraMetadata` holds goes back out: its carried
tags, then the named fields, as IFD0, the Exif sub-IFD and the GPS sub-IFD built with
:mod:`seedark.io.tiff`. ASCII tags are written 7-bit, as TIFF requires; UserComment-like
text as UCS-2 when it is not ASCII. A value that its type cannot hold is skipped:
metadata never fails a write.
"""

from __future__ import annotations

import math
import re
import struct
from fractions import Fraction

from seedark.io.metadata import (
    CHARSET_ASCII,
    CHARSET_UNICODE,
    EXIF,
    GPS,
    IFD0,
    INT_TYPES,
    TAG_COLOR_SPACE,
    TAG_COMPONENTS,
    TAG_DATETIME,
    TAG_DATETIME_ORIGINAL,
    TAG_EXIF_IFD,
    TAG_EXIF_VERSION,
    TAG_EXPOSURE_TIME,
    TAG_F_NUMBER,
    TAG_FLASHPIX_VERSION,
    TAG_FOCAL_LENGTH,
    TAG_GPS_IFD,
    TAG_ISO,
    TAG_LENS_MODEL,
    TAG_MAKE,
    TAG_MODEL,
    TAG_ORIENTATION,
    TAG_PIXEL_X,
    TAG_PIXEL_Y,
    TAG_SOFTWARE,
    TAG_XMP,
    CameraMetadata,
    ExifTag,
)
from seedark.io.text import clean_text
from seedark.io.tiff import Ifd, TiffType, layout_tiff

_DATETIME_RE = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")

_U32_MAX = 0xFFFFFFFF


def _rational(value: float | None, max_denominator: int = 1000) -> tuple[int, int] | None:
    """A positive float as an unsigned TIFF RATIONAL, or None if it can't be one."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    if value < 1:
        # Shutter speeds are 1/N: keep them exactly that way (1/30, not 33/1000).
        den = round(1 / value)
        if 0 < den <= _U32_MAX and math.isclose(1 / den, value, rel_tol=1e-6):
            return 1, den
    frac = Fraction(value).limit_denominator(max_denominator)
    if frac.numerator <= 0 or frac.numerator > _U32_MAX:
        return None
    return frac.numerator, frac.denominator


def _put(ifd: Ifd, tag: ExifTag) -> None:
    """Write a carried tag into ``ifd``; a value that does not fit its type is skipped."""
    value = tag.value
    try:
        if isinstance(value, str) and tag.type == TiffType.ASCII:
            ifd.ascii(tag.tag, value)
        elif isinstance(value, str):
            ifd.undefined(tag.tag, _comment_bytes(value, ifd.byteorder))
        elif isinstance(value, bytes):
            ifd.undefined(tag.tag, value)
        elif value and all(isinstance(v, tuple) for v in value):
            pairs = [(int(a), int(b)) for a, b in value]  # type: ignore[misc]
            (ifd.rational if tag.type == TiffType.RATIONAL else ifd.srational)(tag.tag, pairs)
        elif tag.type in INT_TYPES:
            ifd.numbers(tag.tag, tag.type, [int(v) for v in value])  # type: ignore[arg-type]
    except (ValueError, TypeError, struct.error):
        pass  # a value built by hand that its type cannot hold: metadata never fails a write


def _comment_bytes(text: str, byteorder: str) -> bytes:
    """UserComment-like text: ASCII when it is, else UCS-2 in the EXIF block's byte order."""
    text = clean_text(text)
    if text.isascii():
        return CHARSET_ASCII + text.encode("ascii")
    return CHARSET_UNICODE + text.encode("utf-16-le" if byteorder == "<" else "utf-16-be", errors="replace")


def exif_ifd(
    meta: CameraMetadata,
    *,
    color_space: int | None = 1,
    size: tuple[int, int] | None = None,
    carry: bool = True,
    jpeg: bool = False,
) -> Ifd:
    """The Exif sub-IFD for ``meta``: its carried Exif tags (``carry``), then the named
    fields; ColorSpace 1 (sRGB) unless ``color_space`` is None; PixelXDimension and
    PixelYDimension from ``size`` (width, height) when given; ComponentsConfiguration
    (Y, Cb, Cr) for a ``jpeg``."""
    ifd = Ifd()
    for tag in meta.tags if carry else ():
        if tag.ifd == EXIF:
            _put(ifd, tag)
    ifd.undefined(TAG_EXIF_VERSION, b"0232")
    ifd.undefined(TAG_FLASHPIX_VERSION, b"0100")  # required by EXIF; 1.0 = sRGB-based
    if jpeg:
        ifd.undefined(TAG_COMPONENTS, b"\x01\x02\x03\x00")
    exposure = _rational(meta.exposure_time, 1000)
    if exposure is not None:
        ifd.rational(TAG_EXPOSURE_TIME, [exposure])
    f_number = _rational(meta.f_number, 1000)
    if f_number is not None:
        ifd.rational(TAG_F_NUMBER, [f_number])
    if meta.iso is not None and meta.iso > 0:
        ifd.short(TAG_ISO, min(int(meta.iso), 0xFFFF))
    when = _valid_datetime(meta.datetime_original)
    if when is not None:
        ifd.ascii(TAG_DATETIME_ORIGINAL, when)
    focal = _rational(meta.focal_length, 1000)
    if focal is not None:
        ifd.rational(TAG_FOCAL_LENGTH, [focal])
    if meta.lens_model:
        ifd.ascii(TAG_LENS_MODEL, meta.lens_model)
    if color_space is not None:
        ifd.short(TAG_COLOR_SPACE, color_space)
    if size is not None:
        ifd.long(TAG_PIXEL_X, size[0])
        ifd.long(TAG_PIXEL_Y, size[1])
    return ifd


def _valid_datetime(value: str | None) -> str | None:
    # EXIF fixes the format (20 bytes with the NUL); readers choke on anything else.
    if value is not None and _DATETIME_RE.fullmatch(value.strip()):
        return value.strip()
    return None


def add_camera_tags(
    ifd0: Ifd,
    meta: CameraMetadata | None,
    software: str,
    *,
    orientation: int = 1,
    size: tuple[int, int] | None = None,
    carry: bool = True,
    jpeg: bool = False,
) -> None:
    """Add the shot's tags to ``ifd0``: the carried IFD0 tags (``carry``), Make, Model,
    Orientation, Software, DateTime, the Exif sub-IFD (:func:`exif_ifd`, ``size`` =
    (width, height) of the image) and the GPS sub-IFD when there is GPS data.

    Orientation defaults to 1 because seedark writes pixels already rotated upright.
    XMP is not added here: each format has its own place for it (TIFF: :func:`add_carried_tags`).
    """
    meta = meta or CameraMetadata()
    if carry:
        add_carried_tags(ifd0, meta, xmp=False)
    if meta.make:
        ifd0.ascii(TAG_MAKE, meta.make)
    if meta.model:
        ifd0.ascii(TAG_MODEL, meta.model)
    ifd0.short(TAG_ORIENTATION, orientation)
    if software:
        ifd0.ascii(TAG_SOFTWARE, software)
    when = _valid_datetime(meta.datetime_original)
    if when is not None:
        ifd0.ascii(TAG_DATETIME, when)
    ifd0.sub_ifd(TAG_EXIF_IFD, exif_ifd(meta, size=size, carry=carry, jpeg=jpeg))


def add_carried_tags(ifd0: Ifd, meta: CameraMetadata, *, xmp: bool = True) -> None:
    """Add what ``meta`` carries outside the Exif IFD to ``ifd0``: its IFD0 tags, the GPS
    sub-IFD when there is GPS data, and (``xmp``) the XMP packet as tag 700 (TIFF, DNG)."""
    gps = Ifd(ifd0.byteorder)
    for tag in meta.tags:
        if tag.ifd == IFD0:
            _put(ifd0, tag)
        elif tag.ifd == GPS:
            _put(gps, tag)
    if len(gps):
        ifd0.sub_ifd(TAG_GPS_IFD, gps)
    if xmp and meta.xmp:
        ifd0.byte(TAG_XMP, meta.xmp)  # type BYTE, as the XMP specification says


#: The most EXIF a JPEG's APP1 segment holds (64 KiB less its header and "Exif\0\0").
MAX_EXIF_BLOCK = 0xFFFF - 2 - 6


def build_exif(
    meta: CameraMetadata | None, software: str, *, size: tuple[int, int] | None = None, jpeg: bool = False
) -> bytes:
    """A little-endian TIFF structure ("II*\\0", IFD0 + Exif IFD + GPS IFD) describing the shot.

    Usable as a PNG eXIf chunk, as a JPEG APP1 payload after b"Exif\\0\\0", and parsed
    back by :func:`seedark.io.exifread.read_camera_metadata`. ``size``: the image's (width, height). ``jpeg``:
    also the tags EXIF requires of a JPEG's block (resolution, YCbCr positioning,
    components). Should the carried tags not fit one JPEG segment, only the named fields
    are written.
    """
    blob = _exif_block(meta, software, size, jpeg, carry=True)
    if len(blob) <= MAX_EXIF_BLOCK:
        return blob
    return _exif_block(meta, software, size, jpeg, carry=False)


def _exif_block(
    meta: CameraMetadata | None, software: str, size: tuple[int, int] | None, jpeg: bool, *, carry: bool
) -> bytes:
    ifd0 = Ifd()
    add_camera_tags(ifd0, meta, software, size=size, carry=carry, jpeg=jpeg)
    if jpeg:
        ifd0.rational(282, [(72, 1)])  # XResolution
        ifd0.rational(283, [(72, 1)])  # YResolution
        ifd0.short(296, 2)  # ResolutionUnit: inch
        ifd0.short(531, 1)  # YCbCrPositioning: centred
    return layout_tiff(ifd0).to_bytes()
