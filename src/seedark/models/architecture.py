"""The U-Net's shape as numbers, without torch: its depth and how far an input can reach.

Kept apart from :mod:`seedark.models.network` so that planning tiles and checking
``--tile`` need no torch (``seedark`` answers usage errors before loading it).
"""

from __future__ import annotations

#: Resolution levels of the U-Net (four 2x2 poolings between them).
LEVELS = 5


def receptive_radius(levels: int = LEVELS) -> int:
    """Packed pixels beyond which an input cannot change an output pixel.

    Each 3x3 conv adds one pixel at its level's scale (two convs per level on the
    way down, two more on the way up except at the bottom); each pooling step can
    shift the window by half its input scale. For the 5-level net this gives 107,
    which a gradient probe of the real network confirms (tests/test_tiling.py).
    Tiles overlapping by at least this much stitch to the whole-frame result.
    """
    radius = 0
    for level in range(levels):
        scale = 2**level
        radius += (2 if level == levels - 1 else 4) * scale
        radius += scale // 2
    return radius
