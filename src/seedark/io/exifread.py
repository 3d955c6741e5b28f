"""Reading camera metadata from RAW files, every byte treated as hostile.

The reader parses the TIFF structure that nearly every RAW format is built on (ARW,
DNG, NEF, CR2, PEF, ORF, RW2, plain TIFF) and the EXIF block inside the embedded JPEG
of Fuji RAF files, into a :class:`~seedark.io.metadata.CameraMetadata`: the named
fields, every tag of :data:`~seedark.io.metadata.CARRIED` found with its own type and
count, and the XMP packet (embedded, or a sidecar file, :mod:`seedark.io.xmp`).
seedark does this itself rather than through exiv2 (pyexiv2), which is GPL-licensed
and not thread-safe (docs/usage.md, Metadata).

RAW files come from anywhere: every offset is bounds-checked, entry counts and the
number of IFDs followed are capped, and any failure just leaves fields as None.
Metadata is a nicety; it must never be the reason a conversion fails. The field types'
sizes and struct codes are :mod:`seedark.io.tiff`'s, the writer's own table.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import struct
from dataclasses import dataclass
from typing import BinaryIO

from seedark._files import open_regular
from seedark.io.metadata import (
    CARRIED,
    CHARSET_ASCII,
    CHARSET_UNICODE,
    EXIF,
    GPS,
    IFD0,
    KIND_ASCII,
    KIND_BYTES,
    KIND_INT,
    KIND_TEXT,
    KIND_TYPES,
    MAX_CARRIED_TEXT,
    TAG_BODY_SERIAL,
    TAG_DATETIME,
    TAG_DATETIME_ORIGINAL,
    TAG_DNG_CAMERA_SERIAL,
    TAG_EXIF_IFD,
    TAG_EXPOSURE_TIME,
    TAG_F_NUMBER,
    TAG_FOCAL_LENGTH,
    TAG_GPS_IFD,
    TAG_ISO,
    TAG_ISO_SPEED,
    TAG_LENS_MODEL,
    TAG_MAKE,
    TAG_MODEL,
    TAG_RECOMMENDED_EXPOSURE_INDEX,
    TAG_RW2_ISO,
    TAG_XMP,
    CameraMetadata,
    ExifTag,
    TagValue,
)
from seedark.io.text import clean_text
from seedark.io.tiff import STRUCT_CODES, TYPE_SIZES, TiffType
from seedark.io.xmp import MAX_XMP, clean_xmp, read_sidecar

_MAX_IFD_ENTRIES = 1024  # real IFDs hold a few hundred at most
_MAX_CHAIN_IFDS = 8  # IFD0 plus a few chained ones is where Make/Model live
_MAX_STRING = 1024
_MAX_JPEG_SEGMENTS = 64


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
        size = TYPE_SIZES.get(entry.type)
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
        data = self.value_bytes(entry, MAX_CARRIED_TEXT + 8)
        if data is None or len(data) < 8:
            return None
        code, body = data[:8], data[8:]
        if code == CHARSET_UNICODE:
            # UCS-2 in the file's byte order, unless a byte-order mark says otherwise.
            order = "utf-16-le" if self.bo == "<" else "utf-16-be"
            if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
                order, body = ("utf-16-le" if body[:2] == b"\xff\xfe" else "utf-16-be"), body[2:]
            text = body[: len(body) & ~1].decode(order, errors="replace")
            return clean_text(text.split("\0", 1)[0]) or None
        if code not in (CHARSET_ASCII, b"\0" * 8):
            return None  # JIS, or not a character-set code at all
        return _decode_text(body.split(b"\0", 1)[0])

    def carried(self, entry: _Entry, kind: str, most: int) -> TagValue | None:
        """The value of a :data:`~seedark.io.metadata.CARRIED` tag, or None when its type or size is not the tag's."""
        if entry.type not in KIND_TYPES[kind]:
            return None
        if kind == KIND_ASCII:
            return self.string(entry, MAX_CARRIED_TEXT)
        if kind == KIND_TEXT:
            return self.comment(entry)
        if entry.count > most:
            return None
        data = self.value_bytes(entry, most)
        if data is None:
            return None
        if kind == KIND_BYTES:
            return data
        code = STRUCT_CODES[entry.type]  # KIND_TYPES allows only numeric types here
        if kind == KIND_INT:
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
            code = STRUCT_CODES.get(t)
            if code is None:
                return None
            value = float(struct.unpack(self.bo + code, data)[0])
        return value if math.isfinite(value) else None

    def pointer(self, entry: _Entry | None) -> int | None:
        if entry is None or entry.type not in (TiffType.LONG, TiffType.IFD) or entry.count < 1:
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


def _embedded_xmp(tiff: _Tiff, ifd0: dict[int, _Entry], origin: object) -> bytes | None:
    entry = ifd0.get(TAG_XMP)
    if entry is None or entry.type not in (TiffType.BYTE, TiffType.UNDEFINED, TiffType.ASCII):
        return None
    if entry.count > MAX_XMP:
        return None
    data = tiff.value_bytes(entry, entry.count)
    return clean_xmp(data, origin) if data is not None else None


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


def _parse_tiff(tiff: _Tiff, origin: object = None) -> CameraMetadata:
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
        xmp=_embedded_xmp(tiff, ifd0, origin),
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


def _read_metadata(fh: BinaryIO, size: int, origin: object = None) -> CameraMetadata:
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
    return _parse_tiff(tiff, origin)


def read_camera_metadata(path: str | os.PathLike[str]) -> CameraMetadata:
    """Camera make/model, exposure, lens and capture time from a RAW (or TIFF/JPEG) file,
    with the tags carried to outputs and the XMP packet (a sidecar's, else the embedded one).

    Never raises: an unreadable, unknown or corrupt file gives whatever fields could be
    read, all None at worst. (The RAW decoder reports real read errors.)
    """
    try:
        with open_regular(path) as fh:  # never a FIFO, which would block
            return read_open_metadata(fh, path)
    except OSError:
        return CameraMetadata()


def read_open_metadata(fh: BinaryIO, path: str | os.PathLike[str]) -> CameraMetadata:
    """:func:`read_camera_metadata` from a file already open (the RAW decoder's own handle,
    so a file is opened once); ``path`` names it, for its XMP sidecar."""
    try:
        fh.seek(0)
        meta = _read_metadata(fh, os.fstat(fh.fileno()).st_size, path)
        # A sidecar wins over the embedded packet (see seedark.io.xmp).
        sidecar = read_sidecar(path)
        return meta if sidecar is None else dataclasses.replace(meta, xmp=sidecar)
    except Exception:
        # A safety net only (the parser bounds-checks everything): metadata is optional,
        # and a parser bug must not abort a conversion.
        return CameraMetadata()


def read_ifd0_text(path: str | os.PathLike[str], tag: int) -> str | None:
    """The text of one ASCII tag of a TIFF-based file's first IFD (a DNG's UniqueCameraModel),
    None when the file has none or cannot be read. Reads the header and that IFD only."""
    try:
        # not blocking on a FIFO named like a RAW file, and reading nothing but a regular file
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as fh:
            st = os.fstat(fd)
            tiff = _open_tiff(_Reader(fh, 0, st.st_size)) if stat.S_ISREG(st.st_mode) else None
            if tiff is None:
                return None
            first = tiff.r.read(4, 4)
            entries, _ = tiff.read_ifd(tiff.u32(first)) if first is not None else ({}, 0)
            return tiff.string(entries.get(tag))
    except (OSError, struct.error):
        return None
