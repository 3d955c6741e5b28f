"""Camera metadata: read it from RAW files, write it back as an EXIF block (and XMP).

The reader parses the TIFF structure that nearly every RAW format is built on (ARW,
DNG, NEF, CR2, PEF, ORF, RW2, plain TIFF) and the EXIF block inside the embedded JPEG
of Fuji RAF files. Besides the named fields seedark itself uses, it keeps every tag
of a fixed list (:data:`CARRIED`: the shooting data, GPS, copyright, artist, lens,
time zone, serial numbers...) to copy into outputs, and the XMP packet (embedded, or
a sidecar file, :mod:`seedark.io.xmp`). seedark does this itself rather than through
exiv2 (pyexiv2), which is GPL-licensed and not thread-safe (docs/usage.md, Metadata).
RAW files come from anywhere, so the reader treats every byte as hostile: every
offset is bounds-checked, entry counts and the number of IFDs followed are capped,
every carried tag must have its own type and count, and any failure just leaves
fields as None. Metadata is a nicety; it must
never be the reason a conversion fails. What is read is then made safe once, in
:class:`CameraMetadata`: strings without escape sequences or control characters
(:mod:`seedark.io.text`), numbers within what a camera can record.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

from seedark.io.text import clean_text
from seedark.io.tiff import Ifd, TiffType, layout_tiff
from seedark.io.xmp import MAX_XMP, clean_xmp, read_sidecar

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
TAG_FLASHPIX_VERSION = 40960
TAG_COMPONENTS = 37121
TAG_COLOR_SPACE = 40961
TAG_PIXEL_X = 40962
TAG_PIXEL_Y = 40963
TAG_LENS_MODEL = 42036
TAG_BODY_SERIAL = 42033
TAG_GPS_IFD = 34853
TAG_XMP = 700
TAG_DNG_CAMERA_SERIAL = 50735
# Panasonic RW2 keeps the ISO in its own IFD0 tag.
TAG_RW2_ISO = 23

_MAX_IFD_ENTRIES = 1024  # real IFDs hold a few hundred at most
_MAX_CHAIN_IFDS = 8  # IFD0 plus a few chained ones is where Make/Model live
_MAX_STRING = 1024
_MAX_JPEG_SEGMENTS = 64

_DATETIME_RE = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")


# --------------------------------------------------------------------------- carried tags

#: The IFDs a carried tag can live in.
IFD0, EXIF, GPS = "ifd0", "exif", "gps"

#: How a carried tag's value is read and written: ASCII text; opaque UNDEFINED bytes
#: (version numbers, codes); UNDEFINED text behind an 8-byte character-set code
#: (UserComment); integers of any integer type (kept); unsigned or signed fractions.
_ASCII, _BYTES, _TEXT, _INT, _RAT, _SRAT = "ascii", "bytes", "text", "int", "rat", "srat"

_INT_TYPES = frozenset({1, 3, 4, 6, 8, 9})
_KIND_TYPES = {_ASCII: {2}, _BYTES: {7}, _TEXT: {7}, _INT: _INT_TYPES, _RAT: {5}, _SRAT: {10}}


def _table(kind: str, count: int, *tags: int) -> dict[int, tuple[str, int]]:
    return {tag: (kind, count) for tag in tags}


#: Tags copied from the RAW into outputs: (IFD, tag) -> (kind, most values). Left out on
#: purpose: the image structure, maker notes, thumbnails and previews (their pointers
#: would dangle), the Interoperability IFD, pixel coordinates of the RAW (SubjectArea,
#: SubjectLocation), the CFA pattern, Gamma, compression data, and byte-order-dependent
#: structures (OECF, SpatialFrequencyResponse, DeviceSettingDescription). Make, Model,
#: LensModel, ExposureTime, FNumber, ISO, FocalLength and DateTimeOriginal are the
#: named fields of :class:`CameraMetadata`, written from there.
CARRIED: dict[tuple[str, int], tuple[str, int]] = {
    **{(IFD0, t): v for t, v in _table(_ASCII, 1, 270, 315, 33432).items()},  # description, artist, copyright
    **{(IFD0, t): v for t, v in _table(_INT, 1, 18246, 18249).items()},  # Rating, RatingPercent
    **{
        (EXIF, t): v
        for t, v in {
            **_table(_INT, 1, 34850, 34864, 34865, 34866, 34867, 34868, 34869, 37383, 37384, 37385),
            **_table(_INT, 1, 41488, 41495, 41985, 41986, 41987, 41989, 41990, 41991, 41992, 41993),
            **_table(_INT, 1, 41994, 41996, 42080),
            **_table(_ASCII, 1, 34852, 36868, 36880, 36881, 36882, 37520, 37521, 37522),
            **_table(_ASCII, 1, 42016, 42032, 42033, 42035, 42037),
            **_table(_BYTES, 4, 36864, 40960),  # ExifVersion, FlashpixVersion
            **_table(_BYTES, 1, 41728, 41729),  # FileSource, SceneType
            **_table(_TEXT, 1, 37510),  # UserComment
            **_table(_RAT, 1, 37378, 37381, 37382, 37889, 37890, 41483, 41486, 41487, 41493, 41988),
            **_table(_RAT, 3, 37892),  # Acceleration
            **_table(_RAT, 4, 42034),  # LensSpecification
            **_table(_SRAT, 1, 37377, 37379, 37380, 37888, 37891, 37893),
        }.items()
    },
    **{
        (GPS, t): v
        for t, v in {
            **_table(_INT, 4, 0),  # GPSVersionID
            **_table(_INT, 1, 5, 30),  # AltitudeRef, Differential
            **_table(_ASCII, 1, 1, 3, 8, 9, 10, 12, 14, 16, 18, 19, 21, 23, 25, 29),
            **_table(_RAT, 3, 2, 4, 7, 20, 22),  # latitudes, longitudes, time stamp
            **_table(_RAT, 1, 6, 11, 13, 15, 17, 24, 26, 31),
            **_table(_TEXT, 1, 27, 28),  # ProcessingMethod, AreaInformation
        }.items()
    },
}

#: Largest carried text; a few KiB is far more than any catalogue writes.
_MAX_CARRIED_TEXT = 4096
#: The 8-byte character-set codes of UserComment-like tags.
_CHARSET_ASCII = b"ASCII\0\0\0"
_CHARSET_UNICODE = b"UNICODE\0"

#: A carried tag's value: text, opaque bytes, integers, or (numerator, denominator) pairs.
TagValue = str | bytes | tuple[int, ...] | tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ExifTag:
    """One tag copied from the RAW into outputs (see :data:`CARRIED`).

    Text is clean (:func:`seedark.io.text.clean_text`) but may hold any Unicode: the
    writer makes ASCII tags 7-bit and writes UserComment as UCS-2 when it needs to.
    """

    ifd: str
    tag: int
    type: int
    value: TagValue


@dataclass(frozen=True)
class CameraMetadata:
    """What the camera recorded about a shot; None wherever it is unknown.

    ``tags`` and ``xmp`` are carried to outputs as they are; two records of one shot
    compare equal by the named fields alone.
    """

    make: str | None = None
    model: str | None = None
    lens_model: str | None = None
    exposure_time: float | None = None  # seconds
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None  # millimetres
    datetime_original: str | None = None  # "YYYY:MM:DD HH:MM:SS"
    tags: tuple[ExifTag, ...] = field(default=(), compare=False, repr=False)
    #: A cleaned XMP packet (:func:`seedark.io.xmp.clean_xmp`), UTF-8.
    xmp: bytes | None = field(default=None, compare=False, repr=False)

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

    def string(self, entry: _Entry | None, limit: int = _MAX_STRING) -> str | None:
        if entry is None or entry.type not in (TiffType.ASCII, TiffType.BYTE, TiffType.UNDEFINED):
            return None
        data = self.value_bytes(entry, limit)
        if data is None:
            return None
        # TIFF strings end at the first NUL; some writers pad with NULs or spaces.
        return _decode_text(data.split(b"\0", 1)[0])

    def comment(self, entry: _Entry) -> str | None:
        """UserComment-like UNDEFINED text: an 8-byte character-set code, then the text."""
        data = self.value_bytes(entry, _MAX_CARRIED_TEXT + 8)
        if data is None or len(data) < 8:
            return None
        code, body = data[:8], data[8:]
        if code == _CHARSET_UNICODE:
            # UCS-2 in the file's byte order, unless a byte-order mark says otherwise.
            order = "utf-16-le" if self.bo == "<" else "utf-16-be"
            if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
                order, body = ("utf-16-le" if body[:2] == b"\xff\xfe" else "utf-16-be"), body[2:]
            text = body[: len(body) & ~1].decode(order, errors="replace")
            return clean_text(text.split("\0", 1)[0]) or None
        if code not in (_CHARSET_ASCII, b"\0" * 8):
            return None  # JIS, or not a character-set code at all
        return _decode_text(body.split(b"\0", 1)[0])

    def carried(self, entry: _Entry, kind: str, most: int) -> TagValue | None:
        """The value of a :data:`CARRIED` tag, or None when its type or size is not the tag's."""
        if entry.type not in _KIND_TYPES[kind]:
            return None
        if kind == _ASCII:
            return self.string(entry, _MAX_CARRIED_TEXT)
        if kind == _TEXT:
            return self.comment(entry)
        if entry.count > most:
            return None
        data = self.value_bytes(entry, most)
        if data is None:
            return None
        if kind == _BYTES:
            return data
        code = _NUMBER_CODES.get(entry.type, "I" if kind == _RAT else "i")
        if kind == _INT:
            return tuple(int(v) for v in struct.unpack(f"{self.bo}{entry.count}{code}", data))
        flat = struct.unpack(f"{self.bo}{2 * entry.count}{code}", data)
        return tuple((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))

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


def _decode_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # EXIF says ASCII; older writers used Latin-1, which decodes any byte.
        text = raw.decode("latin-1")
    return clean_text(text) or None


def _carried(
    tiff: _Tiff, ifd0: dict[int, _Entry], exif: dict[int, _Entry], gps: dict[int, _Entry]
) -> tuple[ExifTag, ...]:
    # Exif tags normally live in the Exif IFD; some DNG writers put them in IFD0.
    sources = {IFD0: (ifd0,), EXIF: (exif, ifd0), GPS: (gps,)}
    found: list[ExifTag] = []
    for (where, tag), (kind, most) in CARRIED.items():
        for src in sources[where]:
            entry = src.get(tag)
            value = None if entry is None else tiff.carried(entry, kind, most)
            if entry is not None and value is not None:
                found.append(ExifTag(where, tag, entry.type, value))
                break
    # DNG's CameraSerialNumber is Exif's BodySerialNumber, which every output can hold.
    if not any(t.ifd == EXIF and t.tag == TAG_BODY_SERIAL for t in found):
        serial = tiff.string(ifd0.get(TAG_DNG_CAMERA_SERIAL))
        if serial is not None:
            found.append(ExifTag(EXIF, TAG_BODY_SERIAL, TiffType.ASCII, serial))
    return tuple(found)


def _embedded_xmp(tiff: _Tiff, ifd0: dict[int, _Entry]) -> bytes | None:
    entry = ifd0.get(TAG_XMP)
    if entry is None or entry.type not in (TiffType.BYTE, TiffType.UNDEFINED, TiffType.ASCII):
        return None
    if entry.count > MAX_XMP:
        return None
    data = tiff.value_bytes(entry, entry.count)
    return clean_xmp(data) if data is not None else None


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

    exif = _sub_ifd(tiff, chain, TAG_EXIF_IFD, visited)
    gps = _sub_ifd(tiff, chain, TAG_GPS_IFD, visited)

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
        tags=_carried(tiff, ifd0, exif, gps),
        xmp=_embedded_xmp(tiff, ifd0),
    )


def _sub_ifd(tiff: _Tiff, chain: list[dict[int, _Entry]], tag: int, visited: set[int]) -> dict[int, _Entry]:
    """The entries of the first sub-IFD ``tag`` of the chain points at (empty if none)."""
    for ifd in chain:
        ptr = tiff.pointer(ifd.get(tag))
        if ptr and ptr not in visited:
            visited.add(ptr)
            return tiff.read_ifd(ptr)[0]
    return {}


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
    """Camera make/model, exposure, lens and capture time from a RAW (or TIFF/JPEG) file,
    with the tags carried to outputs and the XMP packet (a sidecar's, else the embedded one).

    Never raises: an unreadable, unknown or corrupt file gives whatever fields could be
    read, all None at worst. (The RAW decoder reports real read errors.)
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            meta = _read_metadata(fh, size)
        # A sidecar wins over the embedded packet (see seedark.io.xmp).
        sidecar = read_sidecar(path)
        return meta if sidecar is None else dataclasses.replace(meta, xmp=sidecar)
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
        elif tag.type in _INT_TYPES:
            ifd.numbers(tag.tag, tag.type, [int(v) for v in value])  # type: ignore[arg-type]
    except (ValueError, TypeError, struct.error):
        pass  # a value built by hand that its type cannot hold: metadata never fails a write


def _comment_bytes(text: str, byteorder: str) -> bytes:
    """UserComment-like text: ASCII when it is, else UCS-2 in the EXIF block's byte order."""
    text = clean_text(text)
    if text.isascii():
        return _CHARSET_ASCII + text.encode("ascii")
    return _CHARSET_UNICODE + text.encode("utf-16-le" if byteorder == "<" else "utf-16-be", errors="replace")


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
    back by :func:`read_camera_metadata`. ``size``: the image's (width, height). ``jpeg``:
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
