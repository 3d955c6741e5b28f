"""The U-Net's shape as numbers, without torch: its depth, its spec and how far an input can reach.

Kept apart from :mod:`seedark.models.network` so that planning tiles, checking
``--tile`` and running a cached OpenVINO model need no torch (``seedark`` answers
usage errors before loading it, and the OpenVINO path never loads it).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Resolution levels of the U-Net (four 2x2 poolings between them).
LEVELS = 5


@dataclass(frozen=True)
class NetworkSpec:
    """Shape of one SID network; everything else is fixed by the paper."""

    in_channels: int = 4
    width: int = 32
    block: int = 2  # depth-to-space factor: 2 for Bayer, 3 for X-Trans

    @property
    def out_channels(self) -> int:
        return 3 * self.block * self.block

    @property
    def packing(self) -> str:
        return {4: "bayer", 9: "xtrans"}.get(self.in_channels, "unknown")

    def widths(self) -> list[int]:
        return [self.width * 2**k for k in range(LEVELS)]

    @property
    def pool_multiple(self) -> int:
        """Tiles starting at multiples of this share the whole frame's pooling grid."""
        return 2 ** (LEVELS - 1)

    def parameter_count(self) -> int:
        """Numbers in the network's weights: two 3x3 convolutions (with biases) per level on the way
        down and per level on the way up, a 2x2 transposed convolution (no bias) before each level
        up, and the 1x1 output convolution."""
        w = self.widths()
        count, c_in = 0, self.in_channels
        for level in range(LEVELS):
            count += (c_in * 9 + 1) * w[level] + (w[level] * 9 + 1) * w[level]
            c_in = w[level]
        for level in range(LEVELS - 2, -1, -1):
            count += w[level + 1] * w[level] * 4
            count += (2 * w[level] * 9 + 1) * w[level] + (w[level] * 9 + 1) * w[level]
        return count + (w[0] + 1) * self.out_channels


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
