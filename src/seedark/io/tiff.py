"""A small TIFF structure builder: IFDs, sub-IFDs and strip data laid out in one file.

One place knows the layout rules (sorted tags, word-aligned values, offsets counted
from the TIFF header) so the EXIF blob, the TIFF image writer and the test-suite's DNG
writer cannot disagree about them. The field types' sizes and struct codes are the
one table both this builder and the metadata reader (:mod:`seedark.io.exifread`) use.

The layout is: 8-byte header, IFD0 and its out-of-line values, each sub-IFD (in tag
order, depth first) with its values, then every strip's data in the order the strips
were added. Offsets are 32-bit, so the whole structure must stay below 4 GiB.

A writer whose strip sizes are only known once written (compressed strips) streams
the strips first and puts the directory last, as libtiff does: :func:`tiff_header`,
the data, then :func:`ifd_at` for the directory and the header's offset patched.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO, Literal

from seedark.io.text import clean_text

#: Anything whose bytes can be written as strip data without copying.
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class LazyChunk:
    """Strip data of a known size, made only when it is written.

    For images that are not one contiguous buffer (e.g. rotated views): one strip is
    copied at a time instead of the whole image.
    """

    nbytes: int
    make: Callable[[], Buffer]

    def data(self) -> Buffer:
        got = self.make()
        if memoryview(got).nbytes != self.nbytes:
            raise ValueError(f"a lazy strip made {memoryview(got).nbytes} bytes, not {self.nbytes}")
        return got


#: Strip data: a buffer, or a lazy one.
Chunk = Buffer | LazyChunk


def _nbytes(chunk: Chunk) -> int:
    return chunk.nbytes if isinstance(chunk, LazyChunk) else memoryview(chunk).nbytes


ByteOrder = Literal["<", ">"]

#: The largest offset a classic TIFF can hold.
MAX_TIFF_SIZE = 0xFFFFFFFF


class TiffType(IntEnum):
    """TIFF field types (TIFF 6.0 section 2; IFD from Adobe's TIFF Technical Note 1)."""

    BYTE = 1
    ASCII = 2
    SHORT = 3
    LONG = 4
    RATIONAL = 5
    SBYTE = 6
    UNDEFINED = 7
    SSHORT = 8
    SLONG = 9
    SRATIONAL = 10
    FLOAT = 11
    DOUBLE = 12
    IFD = 13  # a LONG that points at a sub-IFD; some RAW writers use it, seedark reads it


#: Size in bytes of one value of each type (the reader's bounds checks and the writer's layout).
TYPE_SIZES: dict[int, int] = {
    TiffType.BYTE: 1,
    TiffType.ASCII: 1,
    TiffType.SHORT: 2,
    TiffType.LONG: 4,
    TiffType.RATIONAL: 8,
    TiffType.SBYTE: 1,
    TiffType.UNDEFINED: 1,
    TiffType.SSHORT: 2,
    TiffType.SLONG: 4,
    TiffType.SRATIONAL: 8,
    TiffType.FLOAT: 4,
    TiffType.DOUBLE: 8,
    TiffType.IFD: 4,
}

#: struct codes of the numeric types (UNDEFINED as bytes); rationals are two of them per value.
STRUCT_CODES: dict[int, str] = {
    TiffType.BYTE: "B",
    TiffType.SHORT: "H",
    TiffType.LONG: "I",
    TiffType.RATIONAL: "I",
    TiffType.SBYTE: "b",
    TiffType.UNDEFINED: "B",
    TiffType.SSHORT: "h",
    TiffType.SLONG: "i",
    TiffType.SRATIONAL: "i",
    TiffType.FLOAT: "f",
    TiffType.DOUBLE: "d",
}


@dataclass(frozen=True)
class _Values:
    """An entry whose value bytes are known up front."""

    type: int
    count: int
    data: bytes  # already encoded in the IFD's byte order


@dataclass(frozen=True)
class _SubIfd:
    """An entry holding the offset of another IFD (e.g. ExifIFD, 34665)."""

    ifd: Ifd


@dataclass(frozen=True)
class _Strips:
    """The offsets half of an offsets/byte-counts pair; the data goes at the file end."""

    chunks: tuple[Chunk, ...]


_Entry = _Values | _SubIfd | _Strips


class Ifd:
    """One image file directory being built. Adding a tag twice replaces it."""

    def __init__(self, byteorder: ByteOrder = "<") -> None:
        self.byteorder: ByteOrder = byteorder
        self._entries: dict[int, _Entry] = {}

    def __contains__(self, tag: object) -> bool:
        return tag in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tags(self) -> list[int]:
        """The tags set so far, in the (ascending) order they are written."""
        return sorted(self._entries)

    def remove(self, tag: int) -> None:
        """Drop a tag if present."""
        self._entries.pop(tag, None)

    def _set(self, tag: int, entry: _Entry) -> None:
        if not 0 <= tag <= 0xFFFF:
            raise ValueError(f"TIFF tag {tag} is out of range")
        self._entries[tag] = entry

    def numbers(self, tag: int, type_: int, values: Iterable[float]) -> None:
        """Integers or floats of any numeric non-rational type."""
        vals = list(values)
        if not vals:
            raise ValueError(f"tag {tag}: no values")
        code = STRUCT_CODES[type_]
        data = struct.pack(f"{self.byteorder}{len(vals)}{code}", *vals)
        self._set(tag, _Values(type_, len(vals), data))

    def byte(self, tag: int, values: Iterable[int]) -> None:
        self.numbers(tag, TiffType.BYTE, values)

    def short(self, tag: int, values: int | Iterable[int]) -> None:
        self.numbers(tag, TiffType.SHORT, [values] if isinstance(values, int) else values)

    def long(self, tag: int, values: int | Iterable[int]) -> None:
        self.numbers(tag, TiffType.LONG, [values] if isinstance(values, int) else values)

    def rational(self, tag: int, values: Iterable[tuple[int, int]]) -> None:
        """Unsigned fractions, given as (numerator, denominator) pairs."""
        self._fractions(tag, TiffType.RATIONAL, values)

    def srational(self, tag: int, values: Iterable[tuple[int, int]]) -> None:
        """Signed fractions, given as (numerator, denominator) pairs."""
        self._fractions(tag, TiffType.SRATIONAL, values)

    def _fractions(self, tag: int, type_: int, values: Iterable[tuple[int, int]]) -> None:
        flat = [part for pair in values for part in pair]
        if not flat:
            raise ValueError(f"tag {tag}: no values")
        code = STRUCT_CODES[type_]
        data = struct.pack(f"{self.byteorder}{len(flat)}{code}", *flat)
        self._set(tag, _Values(type_, len(flat) // 2, data))

    def ascii(self, tag: int, text: str | bytes) -> None:
        """A NUL-terminated string.

        Text is made 7-bit and one line (:func:`seedark.io.text.clean_text`): TIFF's ASCII
        type allows nothing else, and strings copied from a RAW file may hold anything.
        Bytes are written as given, for files that must say exactly that (tests write
        hostile DNGs this way). Embedded NULs are dropped: readers stop at the first.
        """
        raw = text if isinstance(text, bytes) else clean_text(text, ascii=True).encode("ascii")
        data = raw.replace(b"\0", b"") + b"\0"
        self._set(tag, _Values(TiffType.ASCII, len(data), data))

    def undefined(self, tag: int, data: bytes) -> None:
        """Opaque bytes (e.g. an ICC profile, 34675)."""
        if not data:
            raise ValueError(f"tag {tag}: no data")
        self._set(tag, _Values(TiffType.UNDEFINED, len(data), bytes(data)))

    def sub_ifd(self, tag: int, ifd: Ifd) -> None:
        """A LONG pointing at another IFD, laid out after this one's values."""
        if ifd.byteorder != self.byteorder:
            raise ValueError("a sub-IFD must use its parent's byte order")
        self._set(tag, _SubIfd(ifd))

    def strips(self, offsets_tag: int, counts_tag: int, chunks: Sequence[Chunk]) -> None:
        """Image data chunks (strips or tiles): their offsets and byte counts as LONGs.

        The chunks are written after all IFDs, in order; they are not copied until the
        structure is written, so memoryviews into a large array are fine.
        """
        if not chunks:
            raise ValueError("at least one strip is needed")
        self._set(offsets_tag, _Strips(tuple(chunks)))
        self.long(counts_tag, [_nbytes(c) for c in chunks])


def _pad2(n: int) -> int:
    return n + (n & 1)


def _entry_payload_size(entry: _Entry) -> int:
    """Bytes the entry's value takes outside the IFD (0 when it fits in the entry)."""
    if isinstance(entry, _Values):
        return _pad2(len(entry.data)) if len(entry.data) > 4 else 0
    if isinstance(entry, _Strips):
        n = len(entry.chunks) * 4
        return n if n > 4 else 0
    return 0  # a sub-IFD pointer is one LONG


def _ifd_size(ifd: Ifd) -> int:
    """Bytes of an IFD, its values and (recursively) its sub-IFDs."""
    size = 2 + 12 * len(ifd._entries) + 4
    for entry in ifd._entries.values():
        size += _entry_payload_size(entry)
        if isinstance(entry, _SubIfd):
            size += _ifd_size(entry.ifd)
    return size


def _walk_strips(ifd: Ifd) -> Iterator[_Strips]:
    """Strip entries in the order their data is laid out (same order as _serialize)."""
    subs: list[Ifd] = []
    for tag in ifd.tags:
        entry = ifd._entries[tag]
        if isinstance(entry, _Strips):
            yield entry
        elif isinstance(entry, _SubIfd):
            subs.append(entry.ifd)
    for sub in subs:
        yield from _walk_strips(sub)


@dataclass
class TiffLayout:
    """A laid-out TIFF: ``head`` (header and every IFD) followed by ``data`` chunks."""

    head: bytes
    data: list[Chunk]

    @property
    def size(self) -> int:
        return len(self.head) + sum(_nbytes(c) for c in self.data)

    def to_bytes(self) -> bytes:
        return b"".join([self.head, *(bytes(_materialise(c)) for c in self.data)])

    def write_to(self, fh: BinaryIO) -> None:
        fh.write(self.head)
        for chunk in self.data:
            fh.write(_materialise(chunk))


def _materialise(chunk: Chunk) -> Buffer:
    return chunk.data() if isinstance(chunk, LazyChunk) else chunk


def layout_tiff(ifd0: Ifd) -> TiffLayout:
    """Lay out a classic TIFF whose first IFD is ``ifd0``.

    Raises ValueError when the result would not fit 32-bit offsets.
    """
    bo = ifd0.byteorder
    head_size = 8 + _ifd_size(ifd0)

    # Strip data follows the head; give every chunk its offset before serialising.
    strip_offsets: dict[int, list[int]] = {}
    data: list[Chunk] = []
    pos = head_size
    for strips in _walk_strips(ifd0):
        offsets = []
        for chunk in strips.chunks:
            offsets.append(pos)
            pos += _nbytes(chunk)
            data.append(chunk)
        strip_offsets[id(strips)] = offsets
    # A strip may start at most at MAX_TIFF_SIZE, but data past 4 GiB is unreadable.
    if pos > MAX_TIFF_SIZE:
        raise ValueError(f"TIFF data of {pos} bytes exceeds the 4 GiB limit of classic TIFF")

    out = bytearray(tiff_header(bo, 8))
    _serialize(ifd0, out, strip_offsets)
    if len(out) != head_size:  # a bug here would corrupt every offset
        raise AssertionError(f"TIFF layout size mismatch: {len(out)} != {head_size}")
    return TiffLayout(bytes(out), data)


def tiff_header(byteorder: ByteOrder, ifd0_offset: int) -> bytes:
    """The 8-byte classic TIFF header pointing at IFD0."""
    magic = b"II" if byteorder == "<" else b"MM"
    return magic + struct.pack(f"{byteorder}HI", 42, ifd0_offset)


def ifd_at(ifd0: Ifd, offset: int) -> bytes:
    """``ifd0``, its values and sub-IFDs serialised to sit at ``offset`` in the file.

    For the directory written after the strip data (whose offsets and byte counts the
    caller has already set as plain LONGs). ``offset`` must be even (TIFF word
    alignment). Raises ValueError when the directory would end past 4 GiB.
    """
    if any(True for _ in _walk_strips(ifd0)):
        raise ValueError("a directory written after its data holds offsets, not strips")
    if offset & 1 or offset < 8:
        raise ValueError(f"an IFD must start at an even offset after the header, not {offset}")
    size = _ifd_size(ifd0)
    if offset + size > MAX_TIFF_SIZE:
        raise ValueError(f"TIFF data of {offset + size} bytes exceeds the 4 GiB limit of classic TIFF")
    out = bytearray()
    _serialize(ifd0, out, {}, base=offset)
    if len(out) != size:  # a bug here would corrupt every offset
        raise AssertionError(f"TIFF layout size mismatch: {len(out)} != {size}")
    return bytes(out)


def _serialize(ifd: Ifd, out: bytearray, strip_offsets: dict[int, list[int]], base: int = 0) -> None:
    """Append ``ifd`` at the current end of ``out`` (which starts at file offset ``base``),
    then its values and sub-IFDs."""
    bo = ifd.byteorder
    start = base + len(out)
    tags = ifd.tags
    values_pos = start + 2 + 12 * len(tags) + 4

    # Out-of-line values first, so sub-IFD positions are known when entries are written.
    payloads: list[bytes] = []
    entries: list[bytes] = []
    sub_ifds: list[tuple[int, Ifd]] = []  # (index into entries, ifd)
    for tag in tags:
        entry = ifd._entries[tag]
        if isinstance(entry, _SubIfd):
            entries.append(b"")  # filled once sub-IFD positions are known
            sub_ifds.append((len(entries) - 1, entry.ifd))
            continue
        if isinstance(entry, _Strips):
            offs = strip_offsets[id(entry)]
            type_, count = int(TiffType.LONG), len(offs)
            data = struct.pack(f"{bo}{count}I", *offs)
        else:
            type_, count, data = entry.type, entry.count, entry.data
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack(f"{bo}I", values_pos)
            padded = data + b"\0" * (len(data) & 1)
            payloads.append(padded)
            values_pos += len(padded)
        entries.append(struct.pack(f"{bo}HHI", tag, type_, count) + field)

    sub_pos = values_pos
    for index, sub in sub_ifds:
        tag = tags[index]
        entries[index] = struct.pack(f"{bo}HHII", tag, TiffType.LONG, 1, sub_pos)
        sub_pos += _ifd_size(sub)

    out += struct.pack(f"{bo}H", len(tags))
    for e in entries:
        out += e
    out += struct.pack(f"{bo}I", 0)  # no next IFD
    for p in payloads:
        out += p
    for _, sub in sub_ifds:
        _serialize(sub, out, strip_offsets, base)
