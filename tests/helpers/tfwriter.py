"""Write TensorFlow "tensor bundle" checkpoints without TensorFlow (test fixtures only).

The format, as TensorFlow's ``Saver`` writes it for a single shard:

* ``<prefix>.data-00000-of-00001``: the tensors' little-endian bytes, back to back
  in key order.
* ``<prefix>.index``: a LevelDB table. One data block holding, in sorted key order,
  ``""`` -> BundleHeaderProto and ``<tensor name>`` -> BundleEntryProto (keys
  prefix-compressed, a restart point every 16 entries), then an empty metaindex
  block, an index block with one handle per data block, each block followed by a
  1-byte compression type (0) and the masked CRC32C of block + type, and a 48-byte
  footer (two block handles, padding, magic 0xdb4775248b80fb57).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seedark.models.network import NetworkSpec
from seedark.models.tfcheckpoint import masked_crc32c
from seedark.models.weights import LoadedWeights, random_weights

_MAGIC = 0xDB4775248B80FB57
_RESTART_INTERVAL = 16
_DTYPES = {np.dtype("<f4"): 1, np.dtype("<f8"): 2, np.dtype("<i4"): 3, np.dtype("<i8"): 9}
_TF_UP_NAMES = {"up6": "Variable", "up7": "Variable_1", "up8": "Variable_2", "up9": "Variable_3"}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _field_fixed32(field: int, value: int) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<I", value)


def _header_proto() -> bytes:
    # num_shards=1, endianness LITTLE (0, the proto3 default, so omitted), version {producer: 1}
    return _field_varint(1, 1) + _field_bytes(3, _field_varint(1, 1))


def entry_proto(
    *, dtype: int = 1, shape: Sequence[int] = (), shard: int = 0, offset: int = 0, size: int = 0, crc: int = 0
) -> bytes:
    """A BundleEntryProto with any values at all (crafted indexes); ``crc`` is stored as given (masked)."""
    dims = b"".join(_field_bytes(2, _field_varint(1, d)) for d in shape)
    msg = _field_varint(1, dtype) + _field_bytes(2, dims)
    # shard_id 0 is the default and omitted, as TF does; offset 0 likewise
    if shard:
        msg += _field_varint(3, shard)
    if offset:
        msg += _field_varint(4, offset)
    return msg + _field_varint(5, size) + _field_fixed32(6, crc)


def _entry_proto(arr: np.ndarray, offset: int, raw: bytes) -> bytes:
    return entry_proto(dtype=_DTYPES[arr.dtype], shape=arr.shape, offset=offset, size=len(raw), crc=masked_crc32c(raw))


def _block(items: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    restarts: list[int] = []
    prev = b""
    for i, (key, value) in enumerate(items):
        if i % _RESTART_INTERVAL == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    if not restarts:
        restarts.append(0)
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", masked_crc32c(block + b"\x00"))


def _short_successor(key: bytes) -> bytes:
    # LevelDB's FindShortSuccessor: the index key after the last block only has to be >= its last key
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_checkpoint(
    prefix: str | Path, tensors: dict[str, np.ndarray], crafted: dict[str, bytes] | None = None
) -> Path:
    """Write ``tensors`` as ``<prefix>.index`` + ``<prefix>.data-00000-of-00001``; return the prefix.

    ``crafted`` maps names to raw entries (:func:`entry_proto`) that replace or join the
    real ones in the index; the data file holds the real tensors only.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray()
    entries: dict[str, bytes] = {}
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")  # keeps scalars 0-d, unlike ascontiguousarray
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        raw = arr.tobytes()
        entries[name] = _entry_proto(arr, len(data), raw)
        data += raw
    entries.update(crafted or {})
    items = [(b"", _header_proto())] + [(name.encode("utf-8"), entries[name]) for name in sorted(entries)]
    data_block = _block(items)
    meta_block = _block([])
    index = bytearray(_with_trailer(data_block))
    meta_handle = _varint(len(index)) + _varint(len(meta_block))
    index += _with_trailer(meta_block)
    index_block = _block([(_short_successor(items[-1][0]), _varint(0) + _varint(len(data_block)))])
    index_handle = _varint(len(index)) + _varint(len(index_block))
    index += _with_trailer(index_block)
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", _MAGIC)
    index += footer
    prefix.with_name(prefix.name + ".index").write_bytes(bytes(index))
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))
    return prefix


def sid_tf_tensors(weights: LoadedWeights, *, adam: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """seedark state dict -> the official TF variable names and layouts (+ fake Adam state)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, value in weights.state.items():
        arr = value.detach().to(torch.float32).numpy()
        scope, leaf = key.rsplit(".", 1)
        if scope in _TF_UP_NAMES:
            # torch ConvTranspose2d [in, out, kh, kw] -> TF conv2d_transpose filter [kh, kw, out, in]
            out[_TF_UP_NAMES[scope]] = np.ascontiguousarray(arr.transpose(2, 3, 1, 0))
            continue
        if leaf == "weight":
            # torch Conv2d [out, in, kh, kw] -> TF [kh, kw, in, out]
            name, tf_arr = f"{scope}/weights", arr.transpose(2, 3, 1, 0)
        else:
            name, tf_arr = f"{scope}/biases", arr
        out[name] = np.ascontiguousarray(tf_arr, dtype=np.float32)
        if adam:  # as in the official files, only the g_conv variables have Adam slots
            out[f"{name}/Adam"] = rng.normal(0, 1e-3, tf_arr.shape).astype(np.float32)
            out[f"{name}/Adam_1"] = rng.uniform(0, 1e-6, tf_arr.shape).astype(np.float32)
    if adam:
        out["beta1_power"] = np.array(0.81, dtype=np.float32)
        out["beta2_power"] = np.array(0.998001, dtype=np.float32)
    return out


def write_sid_checkpoint(
    prefix: str | Path, spec: NetworkSpec | None = None, *, seed: int = 0, adam: bool = True
) -> LoadedWeights:
    """A small random SID network saved in the official TF layout; returns the weights written."""
    weights = random_weights(spec or NetworkSpec(width=4), seed=seed)
    write_checkpoint(prefix, sid_tf_tensors(weights, adam=adam, seed=seed))
    return weights


def damaged_copy(checkpoint: Path, dest: Path, *, at: float, mask: int) -> Path:
    """A copy of the checkpoint folder ``checkpoint`` at ``dest`` whose data file has the byte at
    fraction ``at`` of its length XORed with ``mask`` (its index, and so its CRCs, unchanged)."""
    shutil.copytree(checkpoint, dest)
    data = dest / "model.ckpt.data-00000-of-00001"
    blob = bytearray(data.read_bytes())
    blob[int(len(blob) * at)] ^= mask
    data.write_bytes(bytes(blob))
    return dest
