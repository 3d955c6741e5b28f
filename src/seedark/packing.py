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

import numpy as np

from .errors import UnsupportedSensorError, UsageError
from .raw import RawFrame

#: Channel names of the Bayer packing, in order.
BAYER_CHANNELS = ("R", "G (R row)", "B", "G (B row)")


def bayer_offsets(pattern: np.ndarray) -> list[tuple[int, int]]:
    """(row, col) inside the 2x2 block of R, G on R's row, B, G on B's row."""
    pos = {str(pattern[r, c]): (r, c) for r in range(2) for c in range(2) if pattern[r, c] != "G"}
    if set(pos) != {"R", "B"}:
        raise UnsupportedSensorError(f"not a Bayer RGGB-family pattern: {''.join(pattern.ravel())}")
    (rr, rc), (br, bc) = pos["R"], pos["B"]
    if rr == br or rc == bc:
        raise UnsupportedSensorError(f"R and B are not diagonal in CFA {''.join(pattern.ravel())}")
    return [(rr, rc), (rr, 1 - rc), (br, bc), (br, 1 - bc)]


def _even(mosaic: np.ndarray) -> np.ndarray:
    """Extend an odd-sized mosaic by one row/column repeating the CFA phase.

    The official code needs even sizes; repeating the same-colour row two back
    keeps every channel plane complete, and the extra output row is cropped.
    """
    h, w = mosaic.shape
    if h % 2:
        mosaic = np.concatenate([mosaic, mosaic[h - 2 : h - 1]], axis=0)
    if w % 2:
        mosaic = np.concatenate([mosaic, mosaic[:, w - 2 : w - 1]], axis=1)
    return mosaic


def pack_bayer(frame: RawFrame) -> np.ndarray:
    """Black-subtracted, normalised 4-channel packing: float32 ceil(H/2) x ceil(W/2) x 4."""
    mosaic = _even(frame.mosaic)
    h2, w2 = mosaic.shape[0] // 2, mosaic.shape[1] // 2
    out = np.empty((h2, w2, 4), dtype=np.float32)
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
    y0, x0, h, w = xtrans_crop(frame)
    im = frame.mosaic[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    black = np.tile(np.roll(frame.black_levels, (-y0, -x0), axis=(0, 1)), (h // 6, w // 6))
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


def amplify(packed: np.ndarray, ratio: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """``min(packed * ratio, 1)`` in float32, as the official test script."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"ratio must be a finite number > 0, got {ratio!r}")
    scale = np.float32(ratio)
    result = np.multiply(packed, scale, out=out)
    return np.minimum(result, np.float32(1.0), out=result)
