"""Output pixels, no files: orientation (LibRaw's ``flip``) and quantisation to 8- or 16-bit samples."""

from __future__ import annotations

import numpy as np

from seedark._parallel import ordered_parallel


def apply_orientation(img: np.ndarray, flip: int) -> np.ndarray:
    """Rotate/mirror an image the way LibRaw/dcraw does for its ``flip`` value.

    Output pixel (row, col) is taken from ``img[r, c]`` where, starting from
    ``(r, c) = (row, col)``: if ``flip & 4`` swap r and c; if ``flip & 2``
    ``r = height-1-r``; if ``flip & 1`` ``c = width-1-c`` (height/width of ``img``,
    the unrotated image). This is dcraw's ``flip_index``. Common values: 0 none,
    3 = 180 degrees, 5 = 90 degrees counter-clockwise, 6 = 90 degrees clockwise.

    Works on HxW and HxWxC arrays. Returns a **view** of ``img`` (negative strides
    and/or swapped axes, no copy); use ``np.ascontiguousarray`` when a contiguous
    array is needed.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    if not 0 <= flip <= 7:
        raise ValueError(f"flip must be in 0..7, got {flip}")
    out = img
    # flip_index maps output -> input as swap, then row flip, then column flip; as
    # operations on the array that composition is applied in reverse order.
    if flip & 1:
        out = out[:, ::-1]
    if flip & 2:
        out = out[::-1, :]
    if flip & 4:
        out = out.swapaxes(0, 1)
    return out


# Rows are quantised in blocks of about this many samples: small enough for the
# float temporaries to stay in cache, large enough to amortise per-call overhead.
_QUANTISE_BLOCK = 1 << 18


def sample_dtype(bits: int) -> type[np.unsignedinteger]:
    """numpy type of an output sample of ``bits`` (8 or 16)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    return np.uint8 if bits == 8 else np.uint16


def quantise(rgb: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """float [0, 1] -> uint8/uint16 with round-half-up: ``floor(x * maxval + 0.5)``.

    Values outside [0, 1] are clipped and NaN becomes 0. The arithmetic is float32.
    ``rgb`` may be any strided view (e.g. from :func:`apply_orientation`); the result is
    a new C-contiguous array, or ``out`` (any view of the right shape and dtype), so
    quantising piece by piece gives exactly the samples quantising the whole would.
    """
    dtype = sample_dtype(bits)
    maxval = np.float32((1 << bits) - 1)
    if out is not None and (out.shape != rgb.shape or out.dtype != dtype):
        raise ValueError(f"out must be {np.dtype(dtype).name} {rgb.shape}, got {out.dtype} {out.shape}")
    target: np.ndarray = np.empty(rgb.shape, dtype=dtype) if out is None else out
    if target.size == 0:
        return target
    row_size = max(1, target[0].size)
    rows = max(1, _QUANTISE_BLOCK // row_size)
    starts = range(0, rgb.shape[0], rows)

    def job(i: int) -> None:
        a = starts[i]
        src = rgb[a : a + rows]
        tmp = np.multiply(src, maxval, dtype=np.float32)
        tmp += np.float32(0.5)
        np.floor(tmp, out=tmp)
        # fmax/fmin (unlike clip) turn NaN into the other operand, so NaN -> 0.
        np.fmax(tmp, np.float32(0), out=tmp)
        np.fmin(tmp, maxval, out=tmp)
        target[a : a + rows] = tmp

    for _ in ordered_parallel(job, len(starts)):
        pass
    return target


def samples(rgb: np.ndarray, bits: int) -> np.ndarray:
    """The ``bits``-bit samples to encode: a float image quantised, or an already quantised one as is.

    An integer image must already have ``bits`` bits per sample (uint8 or uint16);
    it may be any strided view (the encoders copy piece by piece).
    """
    dtype = sample_dtype(bits)
    if np.issubdtype(rgb.dtype, np.floating):
        return quantise(rgb, bits)
    if rgb.dtype != dtype:
        raise ValueError(f"a {bits}-bit file needs a float or {np.dtype(dtype).name} image, got {rgb.dtype}")
    return rgb


def to_8bit(rgb: np.ndarray) -> np.ndarray:
    """An image as 8-bit samples: float quantised; uint16 rounded to the nearest 8-bit level."""
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype == np.uint16:
        # round(x * 255 / 65535) exactly: 65535 = 255 * 257.
        return ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return quantise(rgb, 8)
