"""Read TensorFlow (v2 "tensor bundle") checkpoints without TensorFlow.

A checkpoint ``model.ckpt`` is two files:

* ``model.ckpt.index``: a LevelDB-style sorted string table (SSTable). Key ``""``
  holds a ``BundleHeaderProto``; every other key is a tensor name whose value is
  a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C).
* ``model.ckpt.data-00000-of-00001``: the tensors' raw little-endian bytes.

Every table block and every tensor we read is checked against its recorded
CRC32C, so a truncated, corrupt or mismatched data file is refused rather than
silently producing a wrong network.

The index is checked before any data is read: every entry's dtype, rank and
shape must account for exactly the bytes it records, and must lie inside its
data file. A crafted index (a shape whose product overflows, a size of 2**62,
an offset of 2**63, a rank of 100000) is refused with a WeightsError, never by
allocating, seeking or reshaping first. Tensors are read and checked in pieces,
so one that is only verified (an optimizer slot) is never in memory whole.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path, PurePosixPath

import numpy as np

from seedark.errors import WeightsError

log = logging.getLogger("seedark")


@functools.cache
def _crc32c_fast() -> Callable[..., int] | None:
    """The C extension, ~1000x faster than the pure-Python table below; imported when first
    needed (it takes a tenth of a second, and a cached OpenVINO model reads no checkpoint)."""
    try:
        from crc32c import crc32c as fast
    except ImportError:  # pragma: no cover - a platform without a wheel: slow but correct
        return None
    return fast  # type: ignore[no-any-return]


_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes masked CRC32C
#: The SID index is 4 KB (one entry per variable); a file this large is not a checkpoint index,
#: and it is read whole.
MAX_INDEX_BYTES = 64 << 20
#: No checkpoint tensor has more dimensions (numpy itself stops at 32 on 1.x, 64 on 2.x).
MAX_RANK = 32
#: Tensors are read and CRC-checked in pieces of this size.
_PIECE = 1 << 20

# tensorflow/core/framework/types.proto DataType -> numpy (little endian)
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE: list[int] | None = None


def crc32c_pure(data: bytes | memoryview, value: int = 0) -> int:
    """CRC32C (Castagnoli) in pure Python; used only when the C extension is missing."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _crc32c_table()
    table = _TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes | memoryview, value: int = 0) -> int:
    """CRC32C of ``data`` (the checksum LevelDB and TensorFlow record), continuing from ``value``,
    the CRC32C of the bytes before it."""
    fast = _crc32c_fast()
    if fast is not None:
        return int(fast(data, value))
    return crc32c_pure(data, value)


def mask_crc(crc: int) -> int:
    """TensorFlow/LevelDB store CRCs "masked" so a CRC of CRCs is not degenerate."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """The masked CRC32C of ``data``, as the index records it."""
    return mask_crc(crc32c(data))


# --------------------------------------------------------------------------- protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as recorded in the index."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool = False


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool


def _parse_shape(name: str, buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for field, _, value in _fields(buf):
        if field == 2 and isinstance(value, bytes):
            if len(dims) == MAX_RANK:
                raise ValueError(f"tensor {name!r} has more than {MAX_RANK} dimensions")
            size = 0
            for f2, _, v2 in _fields(value):
                if f2 == 1 and isinstance(v2, int):
                    size = v2 if v2 < 1 << 63 else v2 - (1 << 64)
            dims.append(size)
        elif field == 3 and value:
            raise ValueError("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    dtype_code, shard, offset, size, sliced = 0, 0, 0, 0, False
    shape: tuple[int, ...] = ()
    crc: int | None = None
    for field, _, value in _fields(buf):
        if field == 1 and isinstance(value, int):
            dtype_code = value
        elif field == 2 and isinstance(value, bytes):
            shape = _parse_shape(name, value)
        elif field == 3 and isinstance(value, int):
            shard = value
        elif field == 4 and isinstance(value, int):
            offset = value
        elif field == 5 and isinstance(value, int):
            size = value
        elif field == 6 and isinstance(value, int):
            crc = value
        elif field == 7:
            sliced = True
    if dtype_code not in _DTYPES:
        raise ValueError(f"tensor {name!r} has unsupported dtype code {dtype_code}")
    if crc is None:
        raise ValueError(f"tensor {name!r} has no recorded CRC32C")
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor {name!r} has a negative dimension")
    dtype = _DTYPES[dtype_code]
    # Python integers: a product that would wrap in int64 (and so match a small size) cannot.
    # A sliced tensor's own entry holds no bytes; its slices are separate entries.
    needed = math.prod(shape) * dtype.itemsize
    if not sliced and needed != size:
        raise ValueError(
            f"tensor {name!r} records {size:,} bytes, but its shape {list(shape)} of {dtype.name} needs {needed:,}"
        )
    return TensorEntry(name, dtype, shape, shard, offset, size, crc, sliced)


def _parse_header(buf: bytes) -> BundleHeader:
    num_shards, endianness = 1, 0
    for field, _, value in _fields(buf):
        if field == 1 and isinstance(value, int):
            num_shards = value
        elif field == 2 and isinstance(value, int):
            endianness = value
    if num_shards < 1:
        raise ValueError("the bundle header records no data files")
    return BundleHeader(num_shards=num_shards, big_endian=endianness == 1)


# --------------------------------------------------------------------------- SSTable


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if offset < 0 or end + _BLOCK_TRAILER > len(data):
        raise ValueError("block handle points outside the file")
    block = data[offset:end]
    ctype = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset : end + 1]) != stored:
        raise ValueError("index block fails its CRC32C check (file corrupt)")
    if ctype != 0:
        raise ValueError("compressed index blocks are not supported (written by a non-TF tool?)")
    return block


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("index block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise ValueError("index block has a bad restart array")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise ValueError("index block entry out of bounds")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + vlen]
        pos += vlen


def _table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_SIZE:
        raise ValueError("file too short to be a checkpoint index")
    footer = data[-_FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_SIZE - 8)
    if magic != _TABLE_MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic)")
    pos = 0
    _meta_off, pos = _varint(footer, pos)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    index_block = _read_block(data, index_off, index_size)
    for _, handle in _block_entries(index_block):
        block_off, hpos = _varint(handle, 0)
        block_size, _ = _varint(handle, hpos)
        yield from _block_entries(_read_block(data, block_off, block_size))


# --------------------------------------------------------------------------- public API


def is_optimizer_slot(name: str) -> bool:
    """True for Adam moments and the beta powers: training state, not the network."""
    last = name.rsplit("/", 1)[-1]
    return last.startswith("Adam") or name.startswith(("beta1_power", "beta2_power"))


def read_index(index_path: str | os.PathLike[str]) -> tuple[BundleHeader, dict[str, TensorEntry]]:
    """Parse a ``.index`` file; raise WeightsError naming the file if it is not one."""
    path = Path(index_path)
    try:
        with open(path, "rb") as f:
            length = os.fstat(f.fileno()).st_size
            # bounded even where the size says nothing (a device, a file still growing)
            data = f.read(MAX_INDEX_BYTES + 1) if length <= MAX_INDEX_BYTES else b""
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint index: {exc.strerror or exc}", path) from exc
    if max(length, len(data)) > MAX_INDEX_BYTES:
        raise WeightsError(f"not a checkpoint index: over {MAX_INDEX_BYTES:,} bytes (indexes are a few KB)", path)
    header: BundleHeader | None = None
    entries: dict[str, TensorEntry] = {}
    try:
        for key, value in _table_items(data):
            if key == b"":
                header = _parse_header(value)
                continue
            name = key.decode("utf-8")
            entries[name] = _parse_entry(name, value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"invalid checkpoint index: {exc}", path) from exc
    if header is None:
        raise WeightsError("invalid checkpoint index: no bundle header", path)
    if header.big_endian:
        raise WeightsError("big-endian checkpoints are not supported", path)
    for entry in entries.values():
        if entry.shard_id >= header.num_shards:
            raise WeightsError(
                f"invalid checkpoint index: tensor {entry.name!r} is in data file {entry.shard_id} "
                f"of {header.num_shards}",
                path,
            )
    return header, entries


def check_weights_path(path: Path) -> None:
    """What a path's name alone shows about ``--weights``: that it exists (as a file, a folder or a
    checkpoint prefix), and is not a checkpoint's ``.meta`` file, which is the graph, not the weights."""
    if path.name.endswith(".meta"):
        index = path.name[: -len(".meta")] + ".index"
        raise WeightsError(
            f"a .meta file holds the TensorFlow graph, not the weights; give the checkpoint's folder "
            f"({path.parent}) or its .index file ({index}) instead",
            path,
        )
    if not (path.exists() or path.with_name(path.name + ".index").exists()):
        # neither a file nor a prefix: name what the user gave, not the ".index" looked for
        raise WeightsError("no such file or folder", path)


def resolve_prefix(path: str | os.PathLike[str]) -> Path:
    """Turn a checkpoint directory, prefix, ``.index`` or ``.data-*`` path into the prefix.

    A directory is searched for exactly one ``*.index`` (the TF ``checkpoint``
    state file, when present, decides between several). Only files inside the
    directory are ever taken: the state file of a copied folder still names the
    original's absolute path, which would silently load the original's weights.
    """
    p = Path(path)
    check_weights_path(p)
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            for line in state.read_text(errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    candidate = p / PurePosixPath(name.replace("\\", "/")).name
                    if candidate.with_name(candidate.name + ".index").is_file():
                        return candidate
        indexes = sorted(p.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise WeightsError("no TensorFlow checkpoint (*.index) in this folder", p)
        names = ", ".join(i.name for i in indexes)
        raise WeightsError(f"several checkpoints here ({names}); give the prefix", p)
    name = p.name
    if name.endswith(".index"):
        return p.with_name(name[: -len(".index")])
    if ".data-" in name:
        return p.with_name(name.split(".data-", 1)[0])
    return p


def data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def is_tf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Cheap test used to route ``--weights`` to the right loader."""
    p = Path(path)
    if p.is_dir():
        return any(p.glob("*.index"))
    try:
        prefix = resolve_prefix(p)
    except WeightsError:
        return False
    return prefix.with_name(prefix.name + ".index").is_file()


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    include: Callable[[str], bool] = lambda name: not is_optimizer_slot(name),
    check: Callable[[dict[str, TensorEntry]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Load the tensors of a TF checkpoint; every tensor in the file is verified.

    ``include`` chooses which tensors are returned; by default optimizer slots
    are left out (2/3 of the official file, never needed for inference), but
    they are still checked, so any corruption of the data file is refused.
    ``check`` sees the parsed index before a byte of data is read (e.g. to refuse
    tensors a network has no use for) and raises WeightsError to refuse it.
    """
    prefix = resolve_prefix(path)
    index_path = prefix.with_name(prefix.name + ".index")
    if not index_path.is_file():
        raise WeightsError("checkpoint index not found", index_path)
    header, entries = read_index(index_path)
    log.debug("weights: reading %s", index_path)
    for entry in entries.values():
        if entry.sliced and include(entry.name):
            raise WeightsError(
                f"tensor {entry.name!r} is stored in slices (partitioned variable); not supported", index_path
            )
    if check is not None:
        check(entries)
    out: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        shards = _open_shards(prefix, header, entries, stack)
        for entry in sorted(entries.values(), key=lambda e: (e.shard_id, e.offset)):
            f, dpath = shards[entry.shard_id]
            raw = _checked_bytes(f, entry, keep=include(entry.name))
            if raw is None:
                raise WeightsError(
                    f"tensor {entry.name!r} fails its CRC32C check: the data file does not match "
                    f"{index_path.name} (corrupt, truncated or from another checkpoint)",
                    dpath,
                )
            if include(entry.name):
                out[entry.name] = np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape)
    return out


def _open_shards(
    prefix: Path, header: BundleHeader, entries: dict[str, TensorEntry], stack: contextlib.ExitStack
) -> dict[int, tuple[BufferedReader, Path]]:
    """Open every data file the entries use, each entry checked against its file's length first."""
    shards: dict[int, tuple[BufferedReader, Path, int]] = {}
    for entry in entries.values():
        if entry.shard_id not in shards:
            dpath = data_path(prefix, entry.shard_id, header.num_shards)
            try:
                f = stack.enter_context(open(dpath, "rb"))  # noqa: SIM115 - closed by the stack
                shards[entry.shard_id] = (f, dpath, os.fstat(f.fileno()).st_size)
            except OSError as exc:
                raise WeightsError(f"checkpoint data file missing or unreadable ({exc.strerror})", dpath) from exc
            log.debug("weights: reading %s", dpath)
        _f, dpath, length = shards[entry.shard_id]
        _check_extent(entry, length, dpath)
    return {shard: (f, dpath) for shard, (f, dpath, _length) in shards.items()}


def _check_extent(entry: TensorEntry, length: int, dpath: Path) -> None:
    """Refuse a tensor that does not lie inside its data file before reading it, since a crafted
    size or offset would otherwise be allocated or seeked to first."""
    end = entry.offset + entry.size
    if end > length:
        raise WeightsError(
            f"data file is truncated: tensor {entry.name!r} ends at byte {end:,}, "
            f"past the end of the file ({length:,} bytes)",
            dpath,
        )


def _checked_bytes(f: BufferedReader, entry: TensorEntry, *, keep: bool) -> bytearray | None:
    """The tensor's bytes (empty unless ``keep``) once they match the recorded CRC32C, else None.

    Read in pieces, so a tensor that is only checked never sits in memory whole,
    and a kept one only once (no copy of a copy). Call after :func:`_check_extent`.
    """
    buf = bytearray(entry.size if keep else min(entry.size, _PIECE))
    view = memoryview(buf)
    f.seek(entry.offset)
    crc, done = 0, 0
    while done < entry.size:
        count = min(_PIECE, entry.size - done)
        piece = view[done : done + count] if keep else view[:count]
        got = f.readinto(piece)
        if not got:
            return None  # shorter than it was a moment ago
        crc = crc32c(piece[:got], crc)
        done += got
    if mask_crc(crc) != entry.crc32c:
        return None
    return buf if keep else bytearray()


def expected_data_size(entries: dict[str, TensorEntry], shard: int = 0) -> int:
    """Length the data file must have: the end of its last tensor."""
    ends = [e.offset + e.size for e in entries.values() if e.shard_id == shard]
    return max(ends, default=0)


def verify_data_file(index_path: str | os.PathLike[str], data_file: str | os.PathLike[str]) -> None:
    """Check every tensor (optimizer slots included) of a single-shard data file.

    Used before caching a downloaded or imported file, so nothing unverified is kept.
    """
    header, entries = read_index(index_path)
    dpath = Path(data_file)
    if header.num_shards != 1:
        raise WeightsError("multi-shard checkpoints are not supported", index_path)
    try:
        size = dpath.stat().st_size
    except OSError as exc:
        raise WeightsError(f"cannot read data file ({exc.strerror})", dpath) from exc
    expected = expected_data_size(entries)
    if size != expected:
        raise WeightsError(f"data file has {size:,} bytes, the index expects {expected:,}", dpath)
    with open(dpath, "rb") as f:
        # every tensor ends within ``size`` (the end of the last one is ``size``): safe to read
        for entry in sorted(entries.values(), key=lambda e: e.offset):
            if _checked_bytes(f, entry, keep=False) is None:
                raise WeightsError(
                    f"tensor {entry.name!r} fails its CRC32C check: the data file does not match the index",
                    dpath,
                )
