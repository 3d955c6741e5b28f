"""Packing the sensor mosaic into the network's input channels, and amplification.

Bayer: 4 channels at half resolution in the official order **R, G on R's row,
B, G on B's row**. The 2x2 blocks are anchored at the visible image's top-left
pixel, so output pixel (y, x) corresponds to sensor pixel (y, x) whatever the
CFA phase; the positions of each colour inside the block come from the file.

For the Sony a7S II (RGGB, black 512, white 16383) this is bit-identical to the
official ``pack_raw``: ``np.maximum(im - 512, 0) / (16383 - 512)`` in float32.

Arrays are H x W x C (as the official code), which is also PyTorch's
``channels_last`` memory layout, so they go to the network without a copy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from seedark._parallel import ordered_parallel
from seedark.errors import UnsupportedSensorError, UsageError
from seedark.frames.sensormatch import match_colours
from seedark.io.raw import RawFrame


def bayer_offsets(pattern: np.ndarray) -> list[tuple[int, int]]:
    """(row, col) inside the 2x2 block of R, G on R's row, B, G on B's row."""
    pos = {str(pattern[r, c]): (r, c) for r in range(2) for c in range(2) if pattern[r, c] != "G"}
    if set(pos) != {"R", "B"}:
        raise UnsupportedSensorError(f"not a Bayer RGGB-family pattern: {''.join(pattern.ravel())}")
    (rr, rc), (br, bc) = pos["R"], pos["B"]
    if rr == br or rc == bc:
        raise UnsupportedSensorError(f"R and B are not diagonal in CFA {''.join(pattern.ravel())}")
    return [(rr, rc), (rr, 1 - rc), (br, bc), (br, 1 - bc)]


def pack_bayer(frame: RawFrame) -> np.ndarray:
    """Black-subtracted, normalised 4-channel packing: float32 ceil(H/2) x ceil(W/2) x 4."""
    return _pack_bayer_window(frame, 0, (frame.height + 1) // 2, 0, (frame.width + 1) // 2)


def _pack_bayer_window(frame: RawFrame, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Packed rows [y0, y1) and columns [x0, x1) of ``pack_bayer(frame)``, computed from that window alone."""
    h, w = frame.height, frame.width
    r0, r1, c0, c1 = 2 * y0, 2 * y1, 2 * x0, 2 * x1
    if r1 <= h and c1 <= w:
        mosaic = frame.mosaic[r0:r1, c0:c1]
    else:
        # The official code needs even sizes: an odd frame is extended by repeating the row (column)
        # two back, which keeps every channel plane complete; the extra output row is cropped later.
        rows = np.arange(r0, r1)
        cols = np.arange(c0, c1)
        rows[rows >= h] = h - 2
        cols[cols >= w] = w - 2
        mosaic = frame.mosaic[np.ix_(rows, cols)]
    out = np.empty((y1 - y0, x1 - x0, 4), dtype=np.float32)
    white = np.float32(frame.white_level)
    for ch, (r, c) in enumerate(bayer_offsets(frame.pattern)):
        black = np.float32(frame.black_levels[r, c])
        plane = mosaic[r::2, c::2].astype(np.float32)
        np.subtract(plane, black, out=plane)
        np.maximum(plane, np.float32(0), out=plane)
        # a true division, as the official code: multiplying by 1/x rounds differently
        np.divide(plane, white - black, out=out[:, :, ch])
    return out


# X-Trans: the Fuji X-T2's raw_image_visible, the phase the official model was trained on.
XTRANS_REFERENCE = np.array([list(row) for row in ("RBGBRG", "GGRGGB", "GGBGGR", "BRGRBG", "GGBGGR", "GGRGGB")])

# test_Fuji.py's pack_raw, as data: channel -> positions inside the 6x6 tile that fill
# the 2x2 block of packed pixels (a, b) = (0,0), (0,1), (1,0), (1,1).
_XTRANS_BLOCKS = (
    ((0, 0), (0, 4), (3, 1), (3, 3)),  # R
    ((0, 2), (0, 5), (3, 2), (3, 5)),  # G
    ((0, 1), (0, 3), (3, 0), (3, 4)),  # B
    ((1, 2), (2, 5), (5, 2), (4, 5)),  # R
    ((2, 2), (1, 5), (4, 2), (5, 5)),  # B
)
# ...and one pixel per 3x3 tile for the four greens next to each other.
_XTRANS_SINGLES = ((1, 0), (1, 1), (2, 0), (2, 1))


def xtrans_phase(pattern: np.ndarray) -> tuple[int, int]:
    """Offset (dy, dx) where the file's 6x6 CFA lines up with the X-T2 reference.

    Another X-Trans body, or a cropped frame, can start at another phase; packing
    from this offset puts the same kind of sensor site in the same channel.
    """
    for dy in range(6):
        for dx in range(6):
            if (np.roll(pattern, (-dy, -dx), axis=(0, 1)) == XTRANS_REFERENCE).all():
                return dy, dx
    raise UnsupportedSensorError(f"6x6 CFA is not an X-Trans layout: {'/'.join(''.join(r) for r in pattern)}")


def xtrans_crop(frame: RawFrame) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) of the sensor area the Fuji model sees: phase-aligned, multiples of 6."""
    dy, dx = xtrans_phase(frame.pattern)
    h = (frame.height - dy) // 6 * 6
    w = (frame.width - dx) // 6 * 6
    if h < 6 or w < 6:
        raise UnsupportedSensorError(f"image area {frame.height}x{frame.width} is too small for X-Trans packing")
    return dy, dx, h, w


def pack_xtrans(frame: RawFrame) -> np.ndarray:
    """9-channel packing of the official Fuji model: float32 H/3 x W/3 x 9.

    The frame is cropped to the CFA reference phase and to multiples of 6
    (``xtrans_crop``); black and white levels come from the file.
    """
    _, _, h, w = xtrans_crop(frame)
    return _pack_xtrans_window(frame, 0, h // 3, 0, w // 3)


def _pack_xtrans_window(frame: RawFrame, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Packed rows [y0, y1) and columns [x0, x1) of ``pack_xtrans(frame)``; all four even
    (a 2 x 2 block of packed pixels is one 6 x 6 CFA tile)."""
    if (y0 | y1 | x0 | x1) & 1:
        raise ValueError("X-Trans windows start and end on even packed coordinates")
    dy, dx, _, _ = xtrans_crop(frame)
    ry, rx, h, w = dy + 3 * y0, dx + 3 * x0, 3 * (y1 - y0), 3 * (x1 - x0)
    im = frame.mosaic[ry : ry + h, rx : rx + w].astype(np.float32)
    black = np.tile(np.roll(frame.black_levels, (-ry, -rx), axis=(0, 1)), (h // 6, w // 6))
    white = np.float32(frame.white_level)
    if np.all(black == black.flat[0]):  # the usual case: keep the official arithmetic exactly
        b = np.float32(black.flat[0])
        im = np.maximum(im - b, np.float32(0)) / (white - b)
    else:
        im = np.maximum(im - black, np.float32(0)) / (white - black)
    out = np.empty((h // 3, w // 3, 9), dtype=np.float32)
    for ch, cells in enumerate(_XTRANS_BLOCKS):
        for (a, b_), (r, c) in zip(((0, 0), (0, 1), (1, 0), (1, 1)), cells, strict=True):
            out[a::2, b_::2, ch] = im[r::6, c::6]
    for k, (r, c) in enumerate(_XTRANS_SINGLES):
        out[:, :, 5 + k] = im[r::3, c::3]
    return out


#: A window is packed in bands of about this many values (4 MB of float32) on worker threads.
_BAND_VALUES = 1 << 20


def amplify(packed: np.ndarray, ratio: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """``min(packed * ratio, 1)`` in float32, as the official test script."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"ratio must be a finite number > 0, got {ratio!r}")
    scale = np.float32(ratio)
    result = np.multiply(packed, scale, out=out)
    return np.minimum(result, np.float32(1.0), out=result)


class PackedFrame:
    """A frame's network input, packed and amplified window by window when asked for.

    It keeps the uint16 mosaic (2 bytes per sensor pixel) instead of the float32
    packing (4 bytes per sensor pixel): ``Engine.run`` asks for one tile's window
    at a time, and a 60 MP frame holds 120 MB instead of 241 MB while its tiles
    run. A window is computed with the same arithmetic as :func:`pack_bayer` /
    :func:`pack_xtrans` and :func:`amplify`, so its values are bit-identical to
    the same window of the whole packed frame. With ``match`` (a 3 x 3 map, see
    :mod:`seedark.frames.sensormatch`), each window's colours are matched to the model's
    camera between packing and amplification.

    Acts as a read-only ``H x W x C`` float32 array for ``shape``, ``ndim``,
    ``dtype``, ``len``, indexing (``[y0:y1, x0:x1]`` computes only that window)
    and ``np.asarray`` (the whole frame).
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, frame: RawFrame, ratio: float, match: np.ndarray | None = None) -> None:
        amplify(np.zeros(1, dtype=np.float32), ratio)  # the same check of ratio, before any work
        self.frame = frame
        self.ratio = ratio
        self.match = None if match is None else np.array(match, dtype=np.float64).reshape(3, 3)
        if frame.sensor == "bayer":
            bayer_offsets(frame.pattern)  # refuse a non-Bayer 2x2 pattern now, not at the first tile
            self.shape: tuple[int, int, int] = ((frame.height + 1) // 2, (frame.width + 1) // 2, 4)
        elif frame.sensor == "xtrans":
            _, _, h, w = xtrans_crop(frame)
            self.shape = (h // 3, w // 3, 9)
        else:
            raise UnsupportedSensorError(f"{frame.sensor} packing is not available", frame.path)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """What the float32 packing would take (it is never held whole unless asked for)."""
        return self.shape[0] * self.shape[1] * self.shape[2] * 4

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Packed and amplified rows [y0, y1) and columns [x0, x1): a new float32 array.

        A large window is computed in bands of rows on worker threads (every value depends
        on its own pixel alone, so the bands give exactly the window's values)."""
        h, w, c = self.shape
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise IndexError(f"window [{y0}:{y1}, {x0}:{x1}] is outside {h} x {w}")
        band = max(2, _BAND_VALUES // max(1, (x1 - x0) * c) // 2 * 2)  # even: X-Trans bands stay on CFA tiles
        if y1 - y0 <= band:
            return self._window(y0, y1, x0, x1)
        out = np.empty((y1 - y0, x1 - x0, c), dtype=np.float32)
        starts = range(y0, y1, band)

        def job(i: int) -> None:
            a = starts[i]
            b = min(y1, a + band)
            out[a - y0 : b - y0] = self._window(a, b, x0, x1)

        for _ in ordered_parallel(job, len(starts)):
            pass
        return out

    def _window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        h, w, _ = self.shape
        if self.frame.sensor == "bayer":
            packed = _pack_bayer_window(self.frame, y0, y1, x0, x1)
        else:
            # Whole 6 x 6 CFA tiles (even packed coordinates) around the window, then the window.
            ey0, ex0 = y0 & ~1, x0 & ~1
            ey1, ex1 = min(h, y1 + (y1 & 1)), min(w, x1 + (x1 & 1))
            packed = _pack_xtrans_window(self.frame, ey0, ey1, ex0, ex1)
            if (ey0, ey1, ex0, ex1) != (y0, y1, x0, x1):
                packed = np.ascontiguousarray(packed[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0])
        if self.match is not None:
            match_colours(packed, self.match, self.frame.sensor)
        return amplify(packed, self.ratio, out=packed)

    def matched(self, match: np.ndarray) -> PackedFrame:
        """The same frame and ratio, its colours mapped by ``match`` (3 x 3) before amplification."""
        return PackedFrame(self.frame, self.ratio, match)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key):
            ys, xs = key
            assert isinstance(ys, slice) and isinstance(xs, slice)
            if ys.step in (None, 1) and xs.step in (None, 1):
                y0, y1, _ = ys.indices(self.shape[0])
                x0, x1, _ = xs.indices(self.shape[1])
                return self.window(y0, max(y0, y1), x0, max(x0, x1))
        return np.asarray(self)[key]  # anything else: from the whole packed frame

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self.window(0, self.shape[0], 0, self.shape[1])
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        matched = "" if self.match is None else ", colours matched"
        return f"PackedFrame({self.frame.path.name}, {self.frame.sensor}, x{self.ratio:g}{matched}, shape={self.shape})"


def pack(frame: RawFrame) -> np.ndarray:
    """Network input for a frame, before amplification."""
    if frame.sensor == "bayer":
        return pack_bayer(frame)
    if frame.sensor == "xtrans":
        return pack_xtrans(frame)
    raise UnsupportedSensorError(f"{frame.sensor} packing is not available", frame.path)


def sensor_area(frame: RawFrame) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) of the visible mosaic that the output image covers.

    Bayer: the whole visible frame. X-Trans: the official model sees the frame
    from the reference CFA phase, cropped to multiples of 6.
    """
    if frame.sensor == "xtrans":
        return xtrans_crop(frame)
    return 0, 0, frame.height, frame.width
