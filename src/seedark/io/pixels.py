"""Output pixels, no files: orientation (LibRaw's ``flip``), quantisation to 8- or 16-bit samples,
and which rows of an output still being computed are final (:class:`FinishedRows`)."""

from __future__ import annotations

import threading

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


class Abandoned(Exception):
    """The output being waited for will never be complete (its computation failed or stopped)."""


class FinishedRows:
    """The rows of an oriented output image that are final while tiles are still filling it.

    The producer (``Engine.run``) hands over the output array, unoriented and uncropped
    (:meth:`begin`), and reports each rectangle it has filled (:meth:`filled`, in the
    unoriented array's pixels); a consumer on another thread (an encoder writing rows in
    order) gets the oriented ``height x width`` image (:meth:`image`) and waits until its
    first rows are final (:meth:`wait`). Oriented row ``r`` is a row of the unoriented image
    (row ``H-1-r`` when ``flip & 2``) or, when ``flip & 4`` swaps the axes, a column
    (``W-1-r`` when ``flip & 1``), final once every pixel of it is filled. A producer that
    fails, or a caller that stops, calls :meth:`abandon`, and a consumer gets :class:`Abandoned`.
    """

    def __init__(self, height: int, width: int, flip: int) -> None:
        self.height, self.width, self.flip = height, width, flip
        swap = bool(flip & 4)
        # per line of the unoriented image that becomes an oriented row: pixels still to fill
        self._missing = np.full(width if swap else height, height if swap else width, dtype=np.int64)
        self._ready = 0
        self._image: np.ndarray | None = None
        self._failed: BaseException | None = None
        self._changed = threading.Condition()

    def _line(self, row: int) -> int:
        """The unoriented line that oriented row ``row`` is."""
        if self.flip & 4:
            return self.width - 1 - row if self.flip & 1 else row
        return self.height - 1 - row if self.flip & 2 else row

    def line_order(self) -> tuple[bool, bool]:
        """(by columns, reversed): the order in which unoriented lines become oriented rows 0, 1, ..."""
        if self.flip & 4:
            return True, bool(self.flip & 1)
        return False, bool(self.flip & 2)

    def begin(self, output: np.ndarray) -> None:
        """The producer's output array (at least ``height x width``), before anything is filled."""
        with self._changed:
            self._image = apply_orientation(output[: self.height, : self.width], self.flip)
            self._changed.notify_all()

    def filled(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Rows ``[y0, y1)`` by columns ``[x0, x1)`` of the unoriented array are final (clipped to the image)."""
        y1, x1 = min(y1, self.height), min(x1, self.width)
        if y0 >= y1 or x0 >= x1:
            return
        with self._changed:
            if self.flip & 4:
                self._missing[x0:x1] -= y1 - y0
            else:
                self._missing[y0:y1] -= x1 - x0
            while self._ready < len(self._missing) and self._missing[self._line(self._ready)] == 0:
                self._ready += 1
            self._changed.notify_all()

    def abandon(self, error: BaseException) -> None:
        """The producer failed or stopped: every wait ends with :class:`Abandoned`."""
        with self._changed:
            self._failed = error
            self._changed.notify_all()

    def image(self) -> np.ndarray:
        """The oriented output image (a view), once the producer has begun."""
        with self._changed:
            self._changed.wait_for(lambda: self._image is not None or self._failed is not None)
            if self._image is None:
                raise Abandoned(f"the output was not computed ({self._failed!r})")
            return self._image

    def wait(self, rows: int) -> None:
        """Block until oriented rows ``[0, rows)`` are final; :class:`Abandoned` once the producer has
        given up, even for rows already final (an interrupted run publishes nothing)."""
        with self._changed:
            self._changed.wait_for(lambda: self._ready >= rows or self._failed is not None)
            if self._failed is not None:
                raise Abandoned(f"the output is not wanted any more ({self._failed!r})")
