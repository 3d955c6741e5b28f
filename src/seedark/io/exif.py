"""Camera metadata: read it from RAW files, write it back as an EXIF block.

The reader parses the TIFF structure that nearly every RAW format is built on (ARW,
DNG, NEF, CR2, PEF, ORF, RW2, plain TIFF) and the EXIF block inside the embedded JPEG
of Fuji RAF files. RAW files come from anywhere, so the reader treats every byte as
hostile: every offset is bounds-checked, entry counts and the number of IFDs followed
are capped, and any failure just leaves fields as None. Metadata is a nicety; it must
never be the reason a conversion fails. What is read is then made safe once, in
:class:`CameraMetadata`: strings without escape sequences or control characters
(:mod:`seedark.io.text`), numbers within what a camera can record.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

from seedark.io.text import clean_text
from seedark.io.tiff import Ifd, TiffType, layout_tiff

# TIFF / EXIF tags used here.
TAG_MAKE = 271
TAG_MODEL = 272
TAG_ORIENTATION = 274
TAG_SOFTWARE = 305
TAG_DATETIME = 306
TAG_EXIF_IFD = 34665
TAG_EXPOSURE_TIME = 33434
TAG_F_NUMBER = 33437
TAG_ISO = 34855
TAG_ISO_SPEED = 34867
TAG_RECOMMENDED_EXPOSURE_INDEX = 34866
TAG_EXIF_VERSION = 36864
TAG_DATETIME_ORIGINAL = 36867
TAG_FOCAL_LENGTH = 37386
TAG_COLOR_SPACE = 40961
TAG_LENS_MODEL = 42036
# Panasonic RW2 keeps the ISO in its own IFD0 tag.
TAG_RW2_ISO = 23

_MAX_IFD_ENTRIES = 1024  # real IFDs hold a few hundred at most
_MAX_CHAIN_IFDS = 8  # IFD0 plus a few chained ones is where Make/Model live
_MAX_STRING = 1024
_MAX_JPEG_SEGMENTS = 64

_DATETIME_RE = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")


@dataclass(frozen=True)
class CameraMetadata:
    """What the camera recorded about a shot; None wherever it is unknown."""

    make: str | None = None
    model: str | None = None
    lens_model: str | None = None
    exposure_time: float | None = None  # seconds
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None  # millimetres
    datetime_original: str | None = None  # "YYYY:MM:DD HH:MM:SS"

    def __post_init__(self) -> None:
        # The values come from files anyone can write, through our reader or LibRaw.
        # Checked once here, every consumer (the terminal through `info`, the EXIF of
        # outputs) gets text without escape sequences or control characters...
        for name in ("make", "model", "lens_model", "datetime_original"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, clean_text(value) or None)
        # ...and numbers a camera could record: a crafted 1e-313 s exposure makes 1/x
        # overflow when it is printed or written back as a rational.
        for name in ("exposure_time", "f_number", "focal_length", "iso"):
            object.__setattr__(self, name, _plausible(getattr(self, name)))
        if self.iso is not None:
            object.__setattr__(self, "iso", round(self.iso))


#: Far beyond what any camera records (exposures of nanoseconds or decades, ISO 10^9).
_PLAUSIBLE = (1e-9, 1e9)


def _plausible(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or not _PLAUSIBLE[0] <= value <= _PLAUSIBLE[1]:
        return None
    return value


# --------------------------------------------------------------------------- reading


class _Reader:
    """Bounds-checked random access to a TIFF structure inside a file.

    Offsets are relative to the TIFF header (``base`` in the file), as TIFF offsets are;
    nothing outside ``[base, base + limit)`` is ever returned.
    """

    def __init__(self, fh: BinaryIO, base: int, limit: int) -> None:
        self.fh = fh
        self.base = base
        self.limit = max(0, limit)

    def read(self, offset: int, size: int) -> bytes | None:
        if offset < 0 or size < 0 or offset + size > self.limit:
            return None
        self.fh.seek(self.base + offset)
        data = self.fh.read(size)
        return data if len(data) == size else None


@dataclass(frozen=True)
class _Entry:
    type: int
    count: int
    field: bytes  # the 4-byte value/offset field, undecoded


# struct codes of the non-rational numeric types (UNDEFINED read as bytes).
_NUMBER_CODES = {1: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f", 12: "d"}

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


class _Tiff:
    """A TIFF structure being parsed: its byte order, magic and IFD reader."""

    def __init__(self, reader: _Reader, bo: str, magic: int) -> None:
        self.r = reader
        self.bo = bo
        self.magic = magic

    def u16(self, data: bytes) -> int:
        return int(struct.unpack(self.bo + "H", data[:2])[0])

    def u32(self, data: bytes) -> int:
        return int(struct.unpack(self.bo + "I", data[:4])[0])

    def read_ifd(self, offset: int) -> tuple[dict[int, _Entry], int]:
        """Entries of the IFD at ``offset`` and the next IFD's offset (0 if none/bad)."""
        head = self.r.read(offset, 2)
        if head is None:
            return {}, 0
        count = min(self.u16(head), _MAX_IFD_ENTRIES)
        # A truncated IFD still yields the entries that are there.
        available = (self.r.limit - offset - 2) // 12
        count = max(0, min(count, available))
        raw = self.r.read(offset + 2, 12 * count) or b""
        entries: dict[int, _Entry] = {}
        for i in range(count):
            e = raw[12 * i : 12 * i + 12]
            tag, type_, n = struct.unpack(self.bo + "HHI", e[:8])
            entries.setdefault(tag, _Entry(type_, n, e[8:12]))
        nxt = self.r.read(offset + 2 + 12 * count, 4)
        return entries, (self.u32(nxt) if nxt is not None else 0)

    def value_bytes(self, entry: _Entry, max_count: int) -> bytes | None:
        """The first ``max_count`` values' bytes of an entry, or None if out of bounds."""
        size = _TYPE_SIZES.get(entry.type)
        if size is None or entry.count == 0:
            return None
        count = min(entry.count, max_count)
        if size * entry.count <= 4:
            return entry.field[: size * count]
        return self.r.read(self.u32(entry.field), size * count)

    def string(self, entry: _Entry | None) -> str | None:
        if entry is None or entry.type not in (TiffType.ASCII, TiffType.BYTE, TiffType.UNDEFINED):
            return None
        data = self.value_bytes(entry, _MAX_STRING)
        if data is None:
            return None
        # TIFF strings end at the first NUL; some writers pad with NULs or spaces.
        raw = data.split(b"\0", 1)[0]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # EXIF says ASCII; older writers used Latin-1, which decodes any byte.
            text = raw.decode("latin-1")
        return clean_text(text) or None

    def number(self, entry: _Entry | None) -> float | None:
        """The first value of a numeric entry; None for non-finite or 0/0 values."""
        if entry is None:
            return None
        data = self.value_bytes(entry, 1)
        if data is None:
            return None
        t = entry.type
        if t in (TiffType.RATIONAL, TiffType.SRATIONAL):
            pair = "II" if t == TiffType.RATIONAL else "ii"
            num, den = struct.unpack(self.bo + pair, data)
            if den == 0:
                return None
            value = num / den
        else:
            code = _NUMBER_CODES.get(t)
            if code is None:
                return None
            value = float(struct.unpack(self.bo + code, data)[0])
        return value if math.isfinite(value) else None

    def pointer(self, entry: _Entry | None) -> int | None:
        if entry is None or entry.type not in (TiffType.LONG, 13) or entry.count < 1:
            return None
        return self.u32(entry.field)


def _open_tiff(reader: _Reader) -> _Tiff | None:
    head = reader.read(0, 8)
    if head is None:
        return None
    if head[:2] == b"II":
        bo = "<"
    elif head[:2] == b"MM":
        bo = ">"
    else:
        return None
    magic = int(struct.unpack(bo + "H", head[2:4])[0])
    # 42 = TIFF, 0x55 = Panasonic RW2, 0x4F52/0x5352 = Olympus ORF ("RO"/"RS" bytes).
    if magic not in (42, 0x55, 0x4F52, 0x5352):
        return None
    return _Tiff(reader, bo, magic)


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _parse_tiff(tiff: _Tiff) -> CameraMetadata:
    head = tiff.r.read(4, 4)
    if head is None:
        return CameraMetadata()
    visited: set[int] = set()
    chain: list[dict[int, _Entry]] = []
    offset = tiff.u32(head)
    while offset and offset not in visited and len(chain) < _MAX_CHAIN_IFDS:
        visited.add(offset)
        entries, offset = tiff.read_ifd(offset)
        chain.append(entries)
    if not chain:
        return CameraMetadata()

    exif: dict[int, _Entry] = {}
    for ifd in chain:
        ptr = tiff.pointer(ifd.get(TAG_EXIF_IFD))
        if ptr and ptr not in visited:
            visited.add(ptr)
            exif, _ = tiff.read_ifd(ptr)
            break

    ifd0 = chain[0]

    def first_string(tag: int, *sources: dict[int, _Entry]) -> str | None:
        for src in sources:
            value = tiff.string(src.get(tag))
            if value is not None:
                return value
        return None

    def first_number(tag: int, *sources: dict[int, _Entry]) -> float | None:
        for src in sources:
            value = _positive(tiff.number(src.get(tag)))
            if value is not None:
                return value
        return None

    # Make/Model belong in IFD0, but a few formats put a thumbnail IFD first.
    make = first_string(TAG_MAKE, *chain)
    model = first_string(TAG_MODEL, *chain)
    # Exif tags normally live in the Exif IFD; some DNG writers put them in IFD0.
    lens = first_string(TAG_LENS_MODEL, exif, ifd0)
    exposure = first_number(TAG_EXPOSURE_TIME, exif, ifd0)
    f_number = first_number(TAG_F_NUMBER, exif, ifd0)
    focal = first_number(TAG_FOCAL_LENGTH, exif, ifd0)

    iso_value = first_number(TAG_ISO, exif, ifd0)
    # ISOSpeedRatings is a SHORT that saturates at 65535; the EXIF 2.3 tags do not.
    if iso_value is None or iso_value >= 65535:
        alt = first_number(TAG_ISO_SPEED, exif, ifd0) or first_number(TAG_RECOMMENDED_EXPOSURE_INDEX, exif, ifd0)
        if alt is not None and alt > (iso_value or 0):
            iso_value = alt
    if iso_value is None and tiff.magic == 0x55:
        iso_value = first_number(TAG_RW2_ISO, ifd0)
    iso = round(iso_value) if iso_value is not None else None

    # For RAW files IFD0's DateTime is the capture time, so it stands in when the
    # Exif IFD lacks DateTimeOriginal.
    when = first_string(TAG_DATETIME_ORIGINAL, exif, ifd0) or first_string(TAG_DATETIME, ifd0)

    return CameraMetadata(
        make=make,
        model=model,
        lens_model=lens,
        exposure_time=exposure,
        f_number=f_number,
        iso=iso,
        focal_length=focal,
        datetime_original=when,
    )


def _jpeg_exif(fh: BinaryIO, start: int, limit: int) -> _Reader | None:
    """The TIFF structure of the APP1 'Exif' segment of a JPEG at ``start``."""
    fh.seek(start)
    if fh.read(2) != b"\xff\xd8":
        return None
    pos = start + 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        if pos + 4 > limit:
            return None
        fh.seek(pos)
        head = fh.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # image data or end: no EXIF before it
            return None
        length = struct.unpack(">H", head[2:4])[0]
        if length < 2:
            return None
        if marker == 0xE1 and length >= 8 and fh.read(6) == b"Exif\0\0":
            seg_end = min(pos + 2 + length, limit)
            base = pos + 10
            return _Reader(fh, base, seg_end - base)
        pos += 2 + length
    return None


def _read_metadata(fh: BinaryIO, size: int) -> CameraMetadata:
    fh.seek(0)
    head = fh.read(92)
    reader: _Reader | None
    if head.startswith(b"FUJIFILMCCD-RAW"):
        if len(head) < 92:
            return CameraMetadata()
        jpeg_offset, jpeg_length = struct.unpack(">II", head[84:92])
        end = min(size, jpeg_offset + jpeg_length) if jpeg_length else size
        reader = _jpeg_exif(fh, jpeg_offset, end) if jpeg_offset < size else None
    elif head.startswith(b"\xff\xd8"):
        reader = _jpeg_exif(fh, 0, size)
    else:
        reader = _Reader(fh, 0, size)
    if reader is None:
        return CameraMetadata()
    tiff = _open_tiff(reader)
    if tiff is None:
        return CameraMetadata()
    return _parse_tiff(tiff)


def read_camera_metadata(path: str | os.PathLike[str]) -> CameraMetadata:
    """Camera make/model, exposure, lens and capture time from a RAW (or TIFF/JPEG) file.

    Never raises: an unreadable, unknown or corrupt file gives whatever fields could be
    read, all None at worst. (The RAW decoder reports real read errors.)
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return _read_metadata(fh, size)
    except Exception:
        # A safety net only (the parser bounds-checks everything): metadata is optional,
        # and a parser bug must not abort a conversion.
        return CameraMetadata()


# --------------------------------------------------------------------------- writing

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


def exif_ifd(meta: CameraMetadata, *, color_space: int | None = 1) -> Ifd:
    """The Exif sub-IFD for ``meta``; ColorSpace 1 (sRGB) unless ``color_space`` is None."""
    ifd = Ifd()
    ifd.undefined(TAG_EXIF_VERSION, b"0232")
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
    return ifd


def _valid_datetime(value: str | None) -> str | None:
    # EXIF fixes the format (20 bytes with the NUL); readers choke on anything else.
    if value is not None and _DATETIME_RE.fullmatch(value.strip()):
        return value.strip()
    return None


def add_camera_tags(ifd0: Ifd, meta: CameraMetadata | None, software: str, *, orientation: int = 1) -> None:
    """Add Make, Model, Orientation, Software, DateTime and the Exif sub-IFD to ``ifd0``.

    Orientation defaults to 1 because seedark writes pixels already rotated upright.
    """
    meta = meta or CameraMetadata()
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
    ifd0.sub_ifd(TAG_EXIF_IFD, exif_ifd(meta))


def build_exif(meta: CameraMetadata | None, software: str) -> bytes:
    """A little-endian TIFF structure ("II*\\0", IFD0 + Exif IFD) describing the shot.

    Usable as a PNG eXIf chunk, as a JPEG APP1 payload after b"Exif\\0\\0", and parsed
    back by :func:`read_camera_metadata`.
    """
    ifd0 = Ifd()
    add_camera_tags(ifd0, meta, software)
    return layout_tiff(ifd0).to_bytes()
