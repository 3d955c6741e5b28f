"""Read TensorFlow (v2 "tensor bundle") checkpoints without TensorFlow.

A checkpoint ``model.ckpt`` is two files:

* ``model.ckpt.index``: a LevelDB-style sorted string table (SSTable). Key ``""``
  holds a ``BundleHeaderProto``; every other key is a tensor name whose value is
  a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C).
* ``model.ckpt.data-00000-of-00001``: the tensors' raw little-endian bytes.

Every table block and every tensor we read is checked against its recorded
CRC32C, so a truncated, corrupt or mismatched data file is refused rather than
silently producing a wrong network.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedark.errors import WeightsError

_crc32c_fast: Callable[[bytes | memoryview], int] | None
try:  # the C extension is ~1000x faster than the pure-Python table below
    from crc32c import crc32c as _crc32c_fast
except ImportError:  # pragma: no cover - a platform without a wheel: slow but correct
    _crc32c_fast = None

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes masked CRC32C

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


def crc32c_pure(data: bytes | memoryview) -> int:
    """CRC32C (Castagnoli) in pure Python; used only when the C extension is missing."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _crc32c_table()
    table = _TABLE
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes | memoryview) -> int:
    """CRC32C of ``data`` (the checksum LevelDB and TensorFlow record)."""
    if _crc32c_fast is not None:
        return int(_crc32c_fast(data))
    return crc32c_pure(data)


def masked_crc32c(data: bytes | memoryview) -> int:
    """TensorFlow/LevelDB store CRCs "masked" so a CRC of CRCs is not degenerate."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


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


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for field, _, value in _fields(buf):
        if field == 2 and isinstance(value, bytes):
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
            shape = _parse_shape(value)
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
    return TensorEntry(name, _DTYPES[dtype_code], shape, shard, offset, size, crc, sliced)


def _parse_header(buf: bytes) -> BundleHeader:
    num_shards, endianness = 1, 0
    for field, _, value in _fields(buf):
        if field == 1 and isinstance(value, int):
            num_shards = value
        elif field == 2 and isinstance(value, int):
            endianness = value
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
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint index: {exc.strerror or exc}", path) from exc
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
    return header, entries


def resolve_prefix(path: str | os.PathLike[str]) -> Path:
    """Turn a checkpoint directory, prefix, ``.index`` or ``.data-*`` path into the prefix.

    A directory is searched for exactly one ``*.index`` (the TF ``checkpoint``
    state file, when present, decides between several).
    """
    p = Path(path)
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            for line in state.read_text(errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    candidate = Path(name) if os.path.isabs(name) else p / name
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
) -> dict[str, np.ndarray]:
    """Load the tensors of a TF checkpoint; every tensor in the file is verified.

    ``include`` chooses which tensors are returned; by default optimizer slots
    are left out (2/3 of the official file, never needed for inference), but
    they are still checked, so any corruption of the data file is refused.
    """
    prefix = resolve_prefix(path)
    index_path = prefix.with_name(prefix.name + ".index")
    if not index_path.is_file():
        raise WeightsError("checkpoint index not found", index_path)
    header, entries = read_index(index_path)
    wanted = sorted(entries.values(), key=lambda e: (e.shard_id, e.offset))
    out: dict[str, np.ndarray] = {}
    handles: dict[int, object] = {}
    try:
        for entry in wanted:
            if entry.sliced and include(entry.name):
                raise WeightsError(
                    f"tensor {entry.name!r} is stored in slices (partitioned variable); not supported", index_path
                )
            dpath = data_path(prefix, entry.shard_id, header.num_shards)
            f = handles.get(entry.shard_id)
            if f is None:
                try:
                    f = open(dpath, "rb")  # noqa: SIM115 - closed in finally
                except OSError as exc:
                    raise WeightsError(f"checkpoint data file missing or unreadable ({exc.strerror})", dpath) from exc
                handles[entry.shard_id] = f
            f.seek(entry.offset)  # type: ignore[attr-defined]
            raw = f.read(entry.size)  # type: ignore[attr-defined]
            if len(raw) != entry.size:
                raise WeightsError(
                    f"data file is truncated: tensor {entry.name!r} ends past the end of the file", dpath
                )
            if masked_crc32c(raw) != entry.crc32c:
                raise WeightsError(
                    f"tensor {entry.name!r} fails its CRC32C check: the data file does not match "
                    f"{index_path.name} (corrupt, truncated or from another checkpoint)",
                    dpath,
                )
            if not include(entry.name):
                continue
            count = int(np.prod(entry.shape)) if entry.shape else 1
            if count * entry.dtype.itemsize != entry.size:
                raise WeightsError(f"tensor {entry.name!r}: size does not match its shape", index_path)
            out[entry.name] = np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).copy()
    finally:
        for f in handles.values():
            f.close()  # type: ignore[attr-defined]
    return out


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
        for entry in sorted(entries.values(), key=lambda e: e.offset):
            f.seek(entry.offset)
            raw = f.read(entry.size)
            if len(raw) != entry.size or masked_crc32c(raw) != entry.crc32c:
                raise WeightsError(
                    f"tensor {entry.name!r} fails its CRC32C check: the data file does not match the index",
                    dpath,
                )
