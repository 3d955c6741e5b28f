"""Tiled inference stitches to the whole-frame result."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from helpers.peakmem import run_measuring
from seedark.models.network import NetworkSpec
from seedark.models.weights import random_weights
from seedark.runtime.engine import Engine, parse_tile
from seedark.runtime.tiling import MARGIN, plan_tiles_fixed

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


# --------------------------------------------------------------------------- memory, measured

# Runs in a fresh process: a width-4 network over a 1280 x 1280 Bayer frame (640 x 640
# packed) with 8-bit output, as `enhance` runs it (a PackedFrame), while free memory is
# reported as argv[1] bytes. Prints how far the peak RSS rose above the RSS just before
# each run (helpers/peakmem.py): first with --tile auto, then the whole frame at once.
MEASURE = r"""
import json, sys
from pathlib import Path
import numpy as np, torch
import seedark.runtime.engine as inference
from seedark.runtime.engine import Engine
from seedark.models.network import NetworkSpec
from seedark.frames.packing import PackedFrame
from seedark.io.raw import RawFrame
from seedark.models.weights import random_weights
from helpers.peakmem import grown_since, reset_peak

torch.set_num_threads(2)  # per-thread scratch memory must not depend on the machine
engine = Engine(random_weights(NetworkSpec(width=4), seed=1), device="cpu", precision="fp32", backend="pytorch")
inference.available_memory = lambda device: float(sys.argv[1])
mosaic = np.random.default_rng(0).integers(520, 4000, size=(1280, 1280), dtype=np.uint16)
def frame(m):
    return PackedFrame(RawFrame(Path("x.dng"), m, np.array(list("RGGB")).reshape(2, 2), "bayer",
                                np.full((2, 2), 512, np.float32), 16383, 0), 20.0)
engine.run(frame(mosaic[:128, :128].copy()), tile=0, bits=8)  # one-off allocations happen here, not below
result = {}
for name, tile in (("auto", None), ("whole", 0)):  # auto first, should VmHWM not be resettable here
    base = reset_peak()
    out = engine.run(frame(mosaic), tile=tile, bits=8)
    grown = grown_since(base)
    tiles = len(engine.plan(640, 640, tile, bits=8, held_input=False).tiles)
    result[name] = {"grown": grown, "output": out.nbytes, "tiles": tiles}
    del out
print(json.dumps(result))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_auto_tiles_keep_the_measured_peak_within_the_budget() -> None:
    """Measured, not computed from the planner's own bytes-per-pixel constant.

    Free memory is reported as 64 MB; docs/tiling.md: a tile's activations may take half
    of it, 32 MB. The whole frame would need about twice that, so auto must tile. The
    peak RSS growth while the frame runs must stay under the 32 MB, plus the 8-bit
    output array (4.9 MB, allocated during the run), plus an allowance of half the budget
    (16 MB) for what the width-4 estimate leaves out: allocator slack and each tile's own
    input window, float output and quantisation buffers. Measured here (2 threads): 40-46 MB
    in all for auto (4 tiles), 69-82 MB for the whole frame, so the bound (52.9 MB) separates them.
    """
    budget = 32_000_000
    got = run_measuring(MEASURE, str(2 * budget), timeout=300)
    auto, whole = got["auto"], got["whole"]
    assert auto["output"] == whole["output"] == 1280 * 1280 * 3
    bound = budget + budget // 2 + auto["output"]
    assert auto["grown"] <= bound, (auto["grown"] / 1e6, bound / 1e6, got)
    assert whole["tiles"] == 1 and whole["grown"] > bound, got  # the check can tell the two apart
    assert auto["tiles"] > 1, got
