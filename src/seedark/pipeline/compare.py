"""The ``--compare`` picture: the input naively brightened ("before") beside the network's output.

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

from seedark.io.pixels import quantise

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
