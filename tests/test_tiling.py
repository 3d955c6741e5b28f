"""Tiled inference stitches to the whole-frame result."""

from __future__ import annotations

import numpy as np
import pytest

from seedark.inference import Engine, parse_tile
from seedark.network import NetworkSpec
from seedark.tiling import MARGIN, plan_tiles_fixed
from seedark.weights import random_weights

# fp32, reduced width: tiles differ from the whole frame only by float summation order.
STITCH_TOLERANCE = 1e-5


@pytest.mark.parametrize(("h", "w", "tile"), [(300, 410, 64), (257, 129, 100), (99, 500, 80), (1424, 2128, 512)])
def test_tiles_cover_every_pixel_once_with_one_shape_inside_the_frame(h: int, w: int, tile: int) -> None:
    plan = plan_tiles_fixed(h, w, tile)
    cover = np.zeros((h, w), dtype=int)
    for t in plan.tiles:
        cover[t.cy0 : t.cy1, t.cx0 : t.cx1] += 1
        assert (t.y1 - t.y0, t.x1 - t.x0) == plan.extent  # one compiled shape serves every tile
        assert t.y0 >= 0 and t.y1 <= h and t.x0 >= 0 and t.x1 <= w  # nothing padded
        assert t.y0 % 16 == 0 and t.x0 % 16 == 0  # the whole frame's pooling grid
        # a core never comes within MARGIN of an edge that is not the frame's edge
        assert t.y0 == 0 or t.cy0 - t.y0 >= MARGIN
        assert t.y1 == h or t.y1 - t.cy1 >= MARGIN
        assert t.x0 == 0 or t.cx0 - t.x0 >= MARGIN
        assert t.x1 == w or t.x1 - t.cx1 >= MARGIN
    assert (cover == 1).all()


def test_zero_means_whole_frame() -> None:
    assert len(plan_tiles_fixed(1000, 1000, 0).tiles) == 1


@pytest.mark.parametrize(("h", "w"), [(301, 283), (150, 530)])
def test_tiled_equals_whole_frame(h: int, w: int, rng: np.random.Generator) -> None:
    engine = Engine(random_weights(NetworkSpec(width=4), seed=1), device="cpu", precision="fp32")
    packed = rng.random((h, w, 4), dtype=np.float32)
    whole = engine.run(packed, tile=0)
    calls: list[tuple[int, int]] = []
    tiled = engine.run(packed, tile=64, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) > 4 and calls[-1][0] == calls[-1][1]
    assert whole.shape == (2 * h, 2 * w, 3)
    assert 0 < whole.mean() < 1, "random weights must give a non-degenerate image for this test to mean anything"
    err = float(np.abs(whole - tiled).max())
    assert err <= STITCH_TOLERANCE, err


@pytest.mark.parametrize(("value", "want"), [("auto", None), ("0", 0), ("512", 512), (None, None), (256, 256)])
def test_parse_tile(value: object, want: int | None) -> None:
    assert parse_tile(value) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["-1", "big", -5])
def test_parse_tile_rejects(bad: object) -> None:
    from seedark.errors import UsageError

    with pytest.raises(UsageError, match="tile"):
        parse_tile(bad)  # type: ignore[arg-type]
