"""The "before" picture for ``--compare``: the input naively brightened.

Each packed channel is just scaled by the ratio, white-balanced with the
camera's as-shot multipliers and gamma-encoded, with no denoising and no
demosaicing beyond the packing itself: what a photographer would get by
pushing the exposure slider. Shown beside the network's output it makes the
difference plain.
"""

from __future__ import annotations

import numpy as np

from .output import quantise

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
