"""A small, strict PNG reader for the tests: every CRC, the zlib stream and all five filters."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(path: Path) -> tuple[dict[bytes, list[bytes]], np.ndarray]:
    """A small, strict PNG decoder (RGB, 8/16 bits, no interlace): chunks and pixels.

    Checks the signature, every CRC, that the zlib stream (and its Adler-32) is complete,
    and undoes all five filter types, so it does not just mirror the writer.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, list[bytes]] = {}
    order: list[bytes] = []
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.setdefault(kind, []).append(body)
        order.append(kind)
        pos += 12 + length
    assert pos == len(data)
    assert order[0] == b"IHDR" and order[-1] == b"IEND"
    idats = [i for i, k in enumerate(order) if k == b"IDAT"]
    assert idats == list(range(idats[0], idats[-1] + 1)), "IDAT chunks must be consecutive"
    assert max(order.index(b"iCCP"), order.index(b"eXIf")) < idats[0]

    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert (ctype, comp, filt, interlace) == (2, 0, 0, 0)
    d = zlib.decompressobj()
    raw = d.decompress(b"".join(chunks[b"IDAT"])) + d.flush()
    assert d.eof and not d.unused_data  # the Adler-32 was checked by zlib
    bpp = 3 * depth // 8
    stride = w * bpp
    assert len(raw) == h * (stride + 1)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        cur = np.zeros(stride, dtype=np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) % 256
        else:
            assert ftype in (1, 3, 4)
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                c = prev[x - bpp] if x >= bpp else 0
                b = prev[x]
                pred = a if ftype == 1 else (a + b) // 2 if ftype == 3 else _paeth(a, b, c)
                cur[x] = (line[x] + pred) % 256
        out[y] = cur
        prev = cur
    dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    pixels = out.view(dtype).reshape(h, w, 3).astype(np.uint16 if depth == 16 else np.uint8)
    return chunks, pixels
