"""A fast PNG encoder: Up filter, deflate (:mod:`seedark.io.deflate`) in independent pieces on several threads.

Pillow's PNG writer is single-threaded and slow on 16-bit images; this one writes the
same standard PNG (iCCP and eXIf chunks included) several times faster.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from seedark._parallel import ordered_parallel
from seedark.io.deflate import FINISH, SYNC_FLUSH, compressor
from seedark.io.xmp import png_chunk_data

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Rows are filtered and compressed in independent pieces of about this many bytes so
# several threads can deflate at once.
_PNG_PIECE_BYTES = 2 << 20


def _write_png_chunk(fh: BinaryIO, kind: bytes, data: bytes, crc: int | None = None) -> None:
    if crc is None:
        crc = zlib.crc32(data, zlib.crc32(kind))
    fh.write(struct.pack(">I", len(data)) + kind)
    fh.write(data)
    fh.write(struct.pack(">I", crc & 0xFFFFFFFF))


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A+B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    base = 65521
    rem = len2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 += (adler2 & 0xFFFF) + base - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + base - rem
    sum1 %= base
    sum2 %= base
    return sum1 | (sum2 << 16)


def _png_bytes(q: np.ndarray) -> np.ndarray:
    """Rows of ``q`` as PNG sample bytes (16-bit samples are big-endian)."""
    if q.dtype == np.uint8:
        return q.reshape(q.shape[0], -1)
    return q.astype(">u2").view(np.uint8).reshape(q.shape[0], -1)


def _filter_up(rows: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """PNG scanlines with filter type 2 ('Up') for a block of byte rows.

    'Up' is one vectorised subtraction and on photographs compresses about as well as
    'Sub' (20-65% smaller than 'None'), while vectorised 'Average'/'Paeth' cost 40-100x
    more time for at most ~1%. ``prev`` is the row above the block (None at the top of the image, where
    the PNG spec predicts from zeros).
    """
    h, w = rows.shape
    out = np.empty((h, w + 1), dtype=np.uint8)
    out[:, 0] = 2
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    if prev is None:
        out[0, 1:] = rows[0]
    else:
        np.subtract(rows[0], prev, out=out[0, 1:])
    return out


def encode_png(
    fh: BinaryIO,
    q: np.ndarray,
    icc: bytes,
    exif: bytes,
    xmp: bytes | None = None,
    ready: Callable[[int], None] | None = None,
) -> None:
    """A PNG of ``q`` (uint8 or uint16 samples). ``ready(n)``, when given, returns once rows
    ``[0, n)`` of ``q`` are final: pieces are then encoded as their rows are computed, and
    the file is the same, byte for byte."""
    h, w, _ = q.shape
    bit_depth = 8 if q.dtype == np.uint8 else 16
    row_bytes = w * 3 * (bit_depth // 8)
    rows_per_piece = max(1, _PNG_PIECE_BYTES // row_bytes)
    starts = range(0, h, rows_per_piece)
    last = len(starts) - 1

    def job(i: int) -> tuple[bytes, int, int, int]:
        a = starts[i]
        if ready is not None:
            ready(min(h, a + rows_per_piece))
        rows = _png_bytes(q[a : a + rows_per_piece])
        prev = _png_bytes(q[a - 1 : a])[0] if a > 0 else None
        filtered = _filter_up(rows, prev)
        comp = compressor(bit_depth, raw=True)
        body = comp.compress(filtered.data)
        # A sync flush ends the piece byte-aligned without the final-block bit, so the
        # independently compressed pieces concatenate into one valid deflate stream.
        body += comp.flush(FINISH if i == last else SYNC_FLUSH)
        crc = zlib.crc32(body, zlib.crc32(b"IDAT"))
        return body, crc, zlib.adler32(filtered.data), filtered.nbytes

    fh.write(_PNG_SIGNATURE)
    _write_png_chunk(fh, b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, 2, 0, 0, 0))
    _write_png_chunk(fh, b"iCCP", b"sRGB\0\0" + zlib.compress(icc, 9))
    _write_png_chunk(fh, b"eXIf", exif)
    if xmp:
        # iTXt "XML:com.adobe.xmp", before the image data as the XMP spec asks.
        _write_png_chunk(fh, b"iTXt", png_chunk_data(xmp))
    # The zlib stream is split over IDAT chunks: a 2-byte header, one chunk per piece
    # and the Adler-32 of all the filtered data (IDAT boundaries carry no meaning).
    # CMF/FLG: deflate, 32 KiB window, "fastest" level hint.
    _write_png_chunk(fh, b"IDAT", b"\x78\x01")
    adler = 1
    for body, crc, piece_adler, length in ordered_parallel(job, len(starts)):
        _write_png_chunk(fh, b"IDAT", body, crc)
        adler = adler32_combine(adler, piece_adler, length)
    _write_png_chunk(fh, b"IDAT", struct.pack(">I", adler))
    _write_png_chunk(fh, b"IEND", b"")
