"""Pixel arithmetic on images, no files: orientation, quantisation and the "before" picture.

The "before" picture for ``--compare`` is the input naively brightened: each packed
channel is just scaled by the ratio, white-balanced with the camera's as-shot
multipliers and gamma-encoded, with no denoising and no demosaicing beyond the
packing itself: what a photographer would get by pushing the exposure slider.
Shown beside the network's output it makes the difference plain. The pair is
scaled to fit :data:`DEFAULT_COMPARE_WIDTH` (a screen, and a small JPEG) and each
half is labelled "before" / "after" on a dark box, in Pillow's built-in font.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


# --------------------------------------------------------------------------- the "before" picture

# Colour of each packed channel, per packing kind (see packing.py).
_CHANNEL_COLOURS = {
    "bayer": (0, 1, 2, 1),
    "xtrans": (0, 1, 2, 0, 2, 1, 1, 1, 1),
}


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 transfer function on values in [0, 1]."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def naive_brighten(amplified: np.ndarray, sensor: str, wb: tuple[float, float, float], block: int) -> np.ndarray:
    """Packed, amplified input -> 8-bit RGB at full resolution (each packed pixel repeated block x block).

    Quantised before it is enlarged: the picture only goes into an 8-bit JPEG, and a
    full-resolution float copy would cost 16 times the memory.
    """
    colours = _CHANNEL_COLOURS[sensor]
    h, w, _ = amplified.shape
    rgb = np.zeros((h, w, 3), dtype=np.float32)
    for c in range(3):
        idx = [i for i, col in enumerate(colours) if col == c]
        rgb[:, :, c] = amplified[:, :, idx].mean(axis=2) * np.float32(wb[c])
    small = quantise(srgb_encode(rgb), 8)
    return np.repeat(np.repeat(small, block, axis=0), block, axis=1)


def side_by_side(before: np.ndarray, after: np.ndarray, gap: int = 8) -> np.ndarray:
    """``before | after`` with a thin dark gap; both H x W x 3 of one dtype (float in [0, 1] or uint8)."""
    if before.dtype != after.dtype:
        raise ValueError(f"both sides need one dtype, got {before.dtype} and {after.dtype}")
    h = max(before.shape[0], after.shape[0])
    dark = 26 if after.dtype == np.uint8 else 0.1  # 26/255 ~ 0.1
    canvas = np.full((h, before.shape[1] + gap + after.shape[1], 3), dark, dtype=after.dtype)
    canvas[: before.shape[0], : before.shape[1]] = before
    canvas[: after.shape[0], before.shape[1] + gap :] = after
    return canvas


#: The widest ``--compare`` picture by default (``compare_width``; 0 keeps full size).
DEFAULT_COMPARE_WIDTH = 2400
#: Dark columns between the two halves.
COMPARE_GAP = 8

Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's own font (Aileron, built in), so nothing is read from or fetched into the system.
    return ImageFont.load_default(size=size)


def _labels(width: int, height: int, gap: int) -> list[tuple[str, Box, tuple[int, int], int]]:
    """(text, box, text origin, font size) of each half's label; none that would not fit its half."""
    size = max(10, min(96, width // 30))  # ~40 px on the default 2400 px picture
    pad = max(2, size // 4)
    out = []
    for text, x in (("before", 0), ("after", width + gap)):
        left, top, right, bottom = _font(size).getbbox(text)
        box = (x + pad, pad, x + 3 * pad + int(right - left), 3 * pad + int(bottom - top))
        if box[2] <= x + width and box[3] <= height:
            out.append((text, box, (box[0] + pad - int(left), box[1] + pad - int(top)), size))
    return out


def label_boxes(width: int, height: int, gap: int = COMPARE_GAP) -> dict[str, Box]:
    """Where :func:`compare_picture` puts the labels on halves of ``width`` x ``height``:
    {"before": box, "after": box}, without a label that would not fit its half."""
    return {text: box for text, box, _, _ in _labels(width, height, gap)}


def fit_width(img: np.ndarray, width: int) -> np.ndarray:
    """An 8-bit image scaled down to ``width`` columns (Lanczos, aspect kept); as is when not wider."""
    h, w, _ = img.shape
    if w <= width:
        return img
    size = (width, max(1, round(h * width / w)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(size, Image.Resampling.LANCZOS))


def compare_picture(
    before: np.ndarray, after: np.ndarray, max_width: int = DEFAULT_COMPARE_WIDTH, gap: int = COMPARE_GAP
) -> np.ndarray:
    """``before | after`` (8-bit, same shape), scaled to at most ``max_width`` columns
    (0: full size) and labelled "before" and "after" (white on black, top left of each half)."""
    if before.shape != after.shape or before.dtype != np.uint8 or after.dtype != np.uint8:
        raise ValueError(f"both halves must be uint8 of one shape, got {before.shape} and {after.shape}")
    if max_width:
        half = max(1, (max_width - gap) // 2)
        before, after = fit_width(before, half), fit_width(after, half)
    h, w, _ = before.shape
    picture = Image.fromarray(side_by_side(before, after, gap))
    draw = ImageDraw.Draw(picture)
    for text, box, origin, size in _labels(w, h, gap):
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(0, 0, 0))
        draw.text(origin, text, fill=(255, 255, 255), font=_font(size))
    return np.asarray(picture)
