"""Overlapping tiles that stitch to exactly the whole-frame result.

A full a7S II frame needs several GB of activations at full width; tiles bound
that. Two facts make tiling exact rather than approximate:

* every tile starts at a multiple of 16 packed pixels (the network pools 4
  times), so its pooling windows are the whole frame's windows;
* every tile reaches ``margin >= receptive_radius()`` (107) pixels beyond the
  core it contributes, so no output pixel of the core can see the tile's edge;
* every tile lies inside the frame (nothing is padded): the last one ends
  exactly at the frame's edge, so the frame border is where it always was.

All tiles of a frame have one shape, so a compiled engine compiles once.

Stitched output then equals whole-frame output up to float summation order
(measured ≤ 1e-5 max abs at fp32; see docs/tiling.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from seedark.errors import UsageError
from seedark.models.architecture import receptive_radius
from seedark.progress import ProgressFn

#: Packed-pixel overlap kept around each tile's core: receptive radius rounded up to 16.
MARGIN = math.ceil(receptive_radius() / 16) * 16
#: Smallest core we accept for ``--tile N`` (smaller tiles are mostly margin).
MIN_TILE = 64

#: Tie-break between plans: a tile costs about as much fixed work as this many pixels.
TILE_COST_PIXELS = 16_384


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


def axis_windows(length: int, count: int, *, margin: int = MARGIN, multiple: int = 16) -> tuple[int, list[Tile]]:
    """``count`` windows of one extent covering ``[0, length)``: ``(extent, windows)``.

    Every window starts at a multiple of ``multiple`` and lies inside the frame,
    so the last one ends exactly at the frame's end (its extent is congruent to
    ``length`` modulo ``multiple``). Each window's core stays ``margin`` away from
    any edge of the window that is not the frame's edge. Only the ``y`` fields of
    the returned tiles are meaningful. Falls back to one window when ``count``
    windows cannot satisfy all that.
    """
    whole = (length, [Tile(0, length, 0, 0, 0, length, 0, 0)])
    if count <= 1 or length <= 2 * margin + multiple:
        return whole
    extent = math.ceil((length + 2 * margin * (count - 1)) / count)
    extent += (length - extent) % multiple
    while extent < length:
        last = length - extent
        starts = [i * last // (count - 1) // multiple * multiple for i in range(count)]
        cuts = [0]
        for prev, start in itertools.pairwise(starts):
            lo, hi = start + margin, prev + extent - margin  # where a core boundary may fall
            cuts.append(lo + (hi - lo) // 2 // multiple * multiple)
        cuts.append(length)
        ok = all(b - a <= extent - 2 * margin for a, b in itertools.pairwise(starts))
        ok = ok and all(a < b for a, b in itertools.pairwise(cuts))
        if ok:
            return extent, [
                Tile(s, s + extent, 0, 0, c0, c1, 0, 0) for s, c0, c1 in zip(starts, cuts, cuts[1:], strict=False)
            ]
        extent += multiple
    return whole


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one shape ``extent`` (packed rows, columns) covering a frame."""

    tiles: list[Tile]
    extent: tuple[int, int]

    @property
    def pixels(self) -> int:
        """Packed pixels the network processes (overlaps counted each time)."""
        return len(self.tiles) * self.extent[0] * self.extent[1]


def _combine(rows: tuple[int, list[Tile]], cols: tuple[int, list[Tile]]) -> TilePlan:
    tiles = [Tile(r.y0, r.y1, c.y0, c.y1, r.cy0, r.cy1, c.cy0, c.cy1) for r in rows[1] for c in cols[1]]
    return TilePlan(tiles, (rows[0], cols[0]))


def parse_tile(value: str | int | None) -> int | None:
    """``auto`` -> None, ``0`` -> whole frame, ``N`` -> core size in packed pixels."""
    if value is None:
        return None
    if isinstance(value, int):
        tile = value
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return None
        try:
            tile = int(text)
        except ValueError as exc:
            raise UsageError(f"tile must be auto, 0 or a positive size in packed pixels, got {value!r}") from exc
    if tile < 0:
        raise UsageError(f"tile must be auto, 0 or a positive size, got {tile}")
    return tile


def plan_tiles_fixed(height: int, width: int, tile: int, *, margin: int = MARGIN) -> TilePlan:
    """Tiles of one shape whose cores are at most ``tile`` packed pixels; ``tile <= 0``: one tile."""
    if tile <= 0:
        return _combine(axis_windows(height, 1), axis_windows(width, 1))
    core = max(MIN_TILE, math.ceil(tile / 16) * 16)
    return _combine(
        axis_windows(height, math.ceil(height / core), margin=margin),
        axis_windows(width, math.ceil(width / core), margin=margin),
    )


def _axis_options(length: int, margin: int) -> list[tuple[int, list[Tile]]]:
    """Distinct window layouts for 1, 2, ... windows, fewest first (extents shrink as count grows)."""
    options: list[tuple[int, list[Tile]]] = []
    for count in range(1, max(1, math.ceil(length / MIN_TILE)) + 1):
        option = axis_windows(length, count, margin=margin)
        if options and (option[0] >= options[-1][0] or len(option[1]) != count):
            continue
        options.append(option)
    return options


def plan_for_budget(
    height: int, width: int, budget_bytes: float, bytes_per_pixel: float, *, margin: int = MARGIN
) -> TilePlan:
    """The plan with the least work whose tile fits ``budget_bytes``; the smallest tiles if none does."""
    rows_options = _axis_options(height, margin)
    cols_options = _axis_options(width, margin)
    best: TilePlan | None = None
    best_cost = math.inf
    for rows in rows_options:
        for cols in cols_options:  # fewest columns first: the first that fits is this row count's best
            if rows[0] * cols[0] * bytes_per_pixel > budget_bytes:
                continue
            plan = _combine(rows, cols)
            cost = plan.pixels + len(plan.tiles) * TILE_COST_PIXELS
            if cost < best_cost:
                best, best_cost = plan, cost
            break
    if best is None:
        return _combine(rows_options[-1], cols_options[-1])
    return best


class TileWork(NamedTuple):
    """One tile to run: its input window (``h x w x C`` float32, any strides), where its
    core goes (``dh x dw x 3``: float32, uint8 or uint16, a view into the output), where
    that core starts in the network's output for the window, and what to call once the
    core is in ``dest`` (the back end calls it)."""

    tile: np.ndarray
    dest: np.ndarray
    oy: int
    ox: int
    finished: Callable[[], None] | None = None

    def done(self) -> None:
        if self.finished is not None:
            self.finished()


def in_row_order(tiles: list[Tile], by_columns: bool, reverse: bool) -> list[Tile]:
    """``tiles`` in the order that completes lines of the frame first: rows from the top (or the
    bottom, ``reverse``) or, ``by_columns``, columns from the left (or the right). Any order
    stitches to the same frame; this one lets rows be written while later tiles run."""

    def key(t: Tile) -> tuple[int, int]:
        first, second = (t.cx0, t.cy0) if by_columns else (t.cy0, t.cx0)
        return (-first if reverse else first, second)

    return sorted(tiles, key=key)


def iter_tiles(tiles: list[Tile], progress: ProgressFn | None = None) -> Iterator[Tile]:
    total = len(tiles)
    for done, t in enumerate(tiles):
        yield t
        if progress is not None:
            progress(done + 1, total)
