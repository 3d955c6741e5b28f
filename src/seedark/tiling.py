"""Overlapping tiles that stitch to exactly the whole-frame result.

A full a7S II frame needs several GB of activations at full width; tiles bound
that. Two facts make tiling exact rather than approximate:

* every tile starts at a multiple of 16 packed pixels (the network pools 4
  times), so its pooling windows are the whole frame's windows;
* every tile reaches ``margin >= receptive_radius()`` (107) pixels beyond the
  core it contributes, so no output pixel of the core can see the tile's edge.

Stitched output then equals whole-frame output up to float summation order
(measured ≤ 1e-5 max abs at fp32; see docs/tiling.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .network import receptive_radius

#: Packed-pixel overlap kept around each tile's core: receptive radius rounded up to 16.
MARGIN = math.ceil(receptive_radius() / 16) * 16
#: Smallest core we accept for ``--tile N`` (smaller tiles are mostly margin).
MIN_TILE = 64

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Tile:
    """Input window [y0:y1, x0:x1] and the core [cy0:cy1, cx0:cx1] it contributes (packed px)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def _splits(length: int, core: int, multiple: int) -> list[tuple[int, int]]:
    """Cut [0, length) into near-equal cores whose starts are multiples of ``multiple``."""
    n = max(1, math.ceil(length / core))
    step = math.ceil(length / n / multiple) * multiple
    return list(itertools.pairwise([*range(0, length, step), length]))


def plan_tiles(height: int, width: int, tile: int, *, margin: int = MARGIN, multiple: int = 16) -> list[Tile]:
    """Tiles covering a packed ``height x width`` input; ``tile <= 0`` means one tile."""
    if tile <= 0 or (height <= tile and width <= tile):
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    core = max(MIN_TILE, math.ceil(tile / multiple) * multiple)
    if margin % multiple:
        raise ValueError("margin must be a multiple of the pooling grid")
    tiles = []
    for cy0, cy1 in _splits(height, core, multiple):
        for cx0, cx1 in _splits(width, core, multiple):
            tiles.append(
                Tile(
                    max(0, cy0 - margin),
                    min(height, cy1 + margin),
                    max(0, cx0 - margin),
                    min(width, cx1 + margin),
                    cy0,
                    cy1,
                    cx0,
                    cx1,
                )
            )
    return tiles


def tile_extent(tile: int, *, margin: int = MARGIN) -> int:
    """Largest side, in packed pixels, a tile of core ``tile`` feeds the network."""
    return tile + 2 * margin


def auto_tile(height: int, width: int, budget_bytes: int, bytes_per_pixel: float, *, margin: int = MARGIN) -> int:
    """Largest core (multiple of 16) whose tile fits ``budget_bytes``; 0 if the frame fits whole."""
    if height * width * bytes_per_pixel <= budget_bytes:
        return 0
    side = math.sqrt(budget_bytes / bytes_per_pixel)
    core = int((side - 2 * margin) // 16 * 16)
    return max(MIN_TILE, core)


def iter_tiles(tiles: list[Tile], progress: ProgressFn | None = None) -> Iterator[Tile]:
    total = len(tiles)
    for done, t in enumerate(tiles):
        yield t
        if progress is not None:
            progress(done + 1, total)
