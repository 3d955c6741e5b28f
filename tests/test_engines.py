"""Engines: fixed-shape tiles, the lean PyTorch forward, OpenVINO, selection and caching."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import seedark.runtime.engine as inference
from seedark import config
from seedark.errors import DeviceError, UsageError
from seedark.frames.packing import PackedFrame
from seedark.io.pixels import quantise
from seedark.io.raw import RawFrame
from seedark.models.network import NetworkSpec
from seedark.models.weights import LoadedWeights, random_weights
from seedark.runtime import backends as engines
from seedark.runtime import ircache
from seedark.runtime.engine import Engine
from seedark.runtime.tiling import MARGIN, axis_windows, plan_for_budget, plan_tiles_fixed

STITCH_TOLERANCE = 1e-5  # same engine, tiles vs whole frame: float summation order only
ENGINE_TOLERANCE = 5e-5  # OpenVINO vs PyTorch: different kernels, same fp32 arithmetic

BAYER = NetworkSpec(width=4)
XTRANS = NetworkSpec(in_channels=9, width=4, block=3)


@pytest.fixture(scope="module")
def bayer() -> LoadedWeights:
    # seed 1 keeps the unclipped outputs small enough that fp32 rounding stays under 1e-5
    return random_weights(BAYER, seed=1)


def reference(weights: LoadedWeights, packed: np.ndarray) -> np.ndarray:
    """The module as written, eager NCHW fp32, whole frame, clipped."""
    with torch.no_grad():
        y = weights.build()(torch.from_numpy(packed).permute(2, 0, 1).unsqueeze(0))
    return y[0].clamp(0, 1).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- fixed-shape planning


@pytest.mark.parametrize("length", [241, 300, 301, 517, 1000, 1424, 2128, 4752])
@pytest.mark.parametrize("core", [64, 100, 256, 512])
def test_axis_windows_have_one_extent_lie_inside_and_keep_the_margin(length: int, core: int) -> None:
    extent, windows = axis_windows(length, math.ceil(length / core))
    assert windows[0].y0 == 0 and windows[-1].y1 == length
    assert windows[0].cy0 == 0 and windows[-1].cy1 == length
    for w in windows:
        assert w.y1 - w.y0 == extent and w.y0 >= 0 and w.y1 <= length
        assert w.y0 % 16 == 0, "tiles must start on the whole frame's pooling grid"
        assert w.cy0 == 0 or w.cy0 - w.y0 >= MARGIN
        assert w.cy1 == length or w.y1 - w.cy1 >= MARGIN
        assert w.cy0 < w.cy1
    assert [w.cy0 for w in windows[1:]] == [w.cy1 for w in windows[:-1]], "cores tile the axis exactly"
    if len(windows) > 1:
        assert extent % 16 == length % 16
        assert extent <= core + 2 * MARGIN + 16, "memory stays bounded by the requested core"


def test_one_window_when_the_axis_is_short() -> None:
    assert axis_windows(200, 3) == (200, axis_windows(200, 1)[1])
    assert len(plan_tiles_fixed(1000, 1000, 0).tiles) == 1


def test_every_tile_of_a_plan_has_the_same_shape() -> None:
    plan = plan_tiles_fixed(1424, 2128, 512)
    shapes = {(t.y1 - t.y0, t.x1 - t.x0) for t in plan.tiles}
    assert shapes == {plan.extent}
    assert len(plan.tiles) == 3 * 5
    cover = np.zeros((1424, 2128), dtype=np.int8)
    for t in plan.tiles:
        cover[t.cy0 : t.cy1, t.cx0 : t.cx1] += 1
    assert (cover == 1).all()


def test_budget_plan_fits_and_does_the_least_work() -> None:
    bpp = 600.0
    plan = plan_for_budget(1424, 2128, 700e6, bpp)
    assert plan.extent[0] * plan.extent[1] * bpp <= 700e6
    # no plan of the same family that fits does less work
    for rows in range(1, 8):
        for cols in range(1, 8):
            eh, ys = axis_windows(1424, rows)
            ew, xs = axis_windows(2128, cols)
            if eh * ew * bpp <= 700e6:
                assert len(ys) * eh * len(xs) * ew >= plan.pixels
    assert len(plan_for_budget(300, 400, 1e12, bpp).tiles) == 1
    smallest = plan_for_budget(1424, 2128, 1.0, bpp)  # nothing fits: the smallest tiles
    assert smallest.extent[0] <= 64 + 2 * MARGIN + 16


# --------------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("spec", [BAYER, XTRANS], ids=["bayer", "xtrans"])
@pytest.mark.parametrize(("h", "w"), [(37, 53), (1, 1), (17, 2), (64, 91)])
def test_lean_forward_is_the_module_forward(spec: NetworkSpec, h: int, w: int, rng: np.random.Generator) -> None:
    net = random_weights(spec, seed=5).build()
    x = torch.from_numpy(rng.random((1, spec.in_channels, h, w), dtype=np.float32))
    with torch.no_grad():
        want = net(x)
        got = net.lean_forward(x.clone())
    assert got.shape == want.shape == (1, 3, h * spec.block, w * spec.block)
    assert torch.equal(got, want)


@pytest.mark.parametrize(("h", "w", "tile"), [(301, 283, 64), (257, 410, 100), (150, 530, 80), (333, 347, 130)])
def test_pytorch_tiles_stitch_to_the_whole_frame(
    bayer: LoadedWeights, h: int, w: int, tile: int, rng: np.random.Generator
) -> None:
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    assert engine.info.backend == "pytorch"
    packed = rng.random((h, w, 4), dtype=np.float32)
    whole = engine.run(packed, tile=0)
    calls: list[tuple[int, int]] = []
    tiled = engine.run(packed, tile=tile, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] > 1
    assert 0 < whole.mean() < 1
    assert float(np.abs(whole - tiled).max()) <= STITCH_TOLERANCE
    assert float(np.abs(whole - reference(bayer, packed)).max()) <= ENGINE_TOLERANCE


@pytest.mark.parametrize(("h", "w", "tile"), [(301, 283, 64), (257, 410, 100), (333, 347, 130), (400, 99, 64)])
def test_tiles_are_exact_not_just_close(h: int, w: int, tile: int, rng: np.random.Generator) -> None:
    """In float64 the stitched frame equals the whole frame to rounding: no seam, no edge effect."""
    weights = random_weights(BAYER, seed=3)
    engine = Engine(weights, device="cpu", precision="fp32", backend="pytorch")
    engine.backend = engines.TorchBackend(weights, torch.device("cpu"), torch.float64)
    packed = rng.random((h, w, 4), dtype=np.float32)
    whole = engine.run(packed, tile=0)
    assert 0.05 < whole.mean() < 0.95
    assert float(np.abs(whole - engine.run(packed, tile=tile)).max()) <= 1e-6


def test_xtrans_tiles_stitch(rng: np.random.Generator) -> None:
    weights = random_weights(XTRANS, seed=2)
    engine = Engine(weights, device="cpu", precision="fp32", backend="pytorch")
    packed = rng.random((250, 301, 9), dtype=np.float32)
    whole = engine.run(packed, tile=0)
    assert whole.shape == (750, 903, 3)
    assert float(np.abs(whole - engine.run(packed, tile=64)).max()) <= STITCH_TOLERANCE


def test_auto_tiles_follow_the_memory_budget(
    bayer: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    packed = rng.random((400, 380, 4), dtype=np.float32)
    assert len(engine.plan(400, 380).tiles) == 1  # a small frame fits whole
    held = inference.PROCESS_BYTES + engine.backend.model_bytes + 400 * 380 * engine.frame_bytes_per_pixel()
    monkeypatch.setattr(inference, "AUTO_PEAK_TARGET", held + 300 * 300 * engine.bytes_per_pixel)
    monkeypatch.setattr(inference, "AUTO_MIN_BUDGET", 0)
    plan = engine.plan(400, 380)
    assert len(plan.tiles) > 1
    assert plan.extent[0] * plan.extent[1] <= 300 * 300
    assert float(np.abs(engine.run(packed) - engine.run(packed, tile=0)).max()) <= STITCH_TOLERANCE
    # A frame whose own arrays leave nothing for tiles still gets the floor, not 64-pixel cores.
    monkeypatch.setattr(inference, "AUTO_PEAK_TARGET", 0)
    monkeypatch.setattr(inference, "AUTO_MIN_BUDGET", 400 * 400 * engine.bytes_per_pixel)
    floor = engine.plan(1000, 1000)
    assert 300 * 300 < floor.extent[0] * floor.extent[1] <= 400 * 400


def test_free_memory_limits_auto_tiles(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    monkeypatch.setattr(inference, "available_memory", lambda _device: 2 * 400 * 400 * engine.bytes_per_pixel)
    plan = engine.plan(1000, 1000)
    assert len(plan.tiles) > 1
    assert plan.extent[0] * plan.extent[1] <= 400 * 400


def test_bytes_per_pixel_scales_with_width_and_precision(bayer: LoadedWeights) -> None:
    narrow = engines.TorchBackend(bayer, torch.device("cpu"), torch.float32).bytes_per_pixel()
    full = engines.TorchBackend(random_weights(NetworkSpec(), seed=0), torch.device("cpu"), torch.float32)
    assert 500 <= full.bytes_per_pixel() <= 800  # measured 518-645 B/px at width 32 (docs/performance.md)
    assert narrow < full.bytes_per_pixel() / 4


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("tile", [0, 64])
def test_quantised_output_is_the_quantised_float_output(
    bayer: LoadedWeights, rng: np.random.Generator, bits: int, tile: int
) -> None:
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    packed = rng.random((201, 230, 4), dtype=np.float32)
    got = engine.run(packed, tile=tile, bits=bits)
    assert got.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert len(np.unique(got)) > 50, "a real image, not a constant"
    np.testing.assert_array_equal(got, quantise(engine.run(packed, tile=tile), bits))


def test_quantised_output_leaves_more_memory_for_tiles(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    # A 60 MP frame (packed 3168 x 4752): its float32 output alone is 723 MB.
    h, w = 3168, 4752
    assert engine.frame_bytes_per_pixel() - engine.frame_bytes_per_pixel(8) == 4 * 3 * 4 - 3 * 4
    assert engine.frame_bytes_per_pixel(16) - engine.frame_bytes_per_pixel(8) == 3 * 4
    monkeypatch.setattr(inference, "AUTO_MIN_BUDGET", 0)
    monkeypatch.setattr(inference, "available_memory", lambda _device: 1e12)
    held8 = inference.PROCESS_BYTES + engine.backend.model_bytes + h * w * engine.frame_bytes_per_pixel(8)
    monkeypatch.setattr(inference, "AUTO_PEAK_TARGET", held8 + 500e6)
    assert engine.tile_budget(h, w, 8) == pytest.approx(500e6)
    assert engine.tile_budget(h, w, 16) == pytest.approx(500e6 - h * w * 12)
    assert engine.plan(h, w, bits=8).pixels < engine.plan(h, w).pixels, "bigger tiles, less overlap"
    # A PackedFrame input packs per tile: the frame does not hold its float32 packing (16 B/px).
    lazy = engine.tile_budget(h, w, 8, held_input=False)
    assert lazy == pytest.approx(500e6 + h * w * 16)
    assert engine.plan(h, w, bits=8, held_input=False).pixels < engine.plan(h, w, bits=8).pixels


def test_a_packed_frame_runs_like_its_array(
    bayer: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = RawFrame(
        Path("x.dng"),
        rng.integers(400, 3000, size=(839, 1001), dtype=np.uint16),
        np.array(list("GRBG")).reshape(2, 2),
        "bayer",
        np.full((2, 2), 512, np.float32),
        16383,
        0,
    )
    lazy = PackedFrame(frame, 20.0)
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    whole = engine.run(np.asarray(lazy), tile=64)
    np.testing.assert_array_equal(engine.run(lazy, tile=64), whole)
    # auto plans with the memory a PackedFrame leaves free
    held = inference.PROCESS_BYTES + engine.backend.model_bytes + 420 * 501 * engine.frame_bytes_per_pixel(16, False)
    monkeypatch.setattr(inference, "AUTO_PEAK_TARGET", held + 300 * 300 * engine.bytes_per_pixel)
    monkeypatch.setattr(inference, "AUTO_MIN_BUDGET", 0)
    calls: list[int] = []
    got = engine.run(lazy, bits=16, progress=lambda d, t: calls.append(t))
    assert lazy.shape == (420, 501, 4)
    assert calls[-1] == len(engine.plan(420, 501, bits=16, held_input=False).tiles) > 1
    assert calls[-1] < len(engine.plan(420, 501, bits=16).tiles)
    # Other tiles than ``whole``'s: float summation order may move a sample across a rounding boundary.
    assert int(np.abs(got.astype(np.int32) - quantise(whole, 16)).max()) <= 1


def test_run_rejects_the_wrong_channel_count(bayer: LoadedWeights) -> None:
    engine = Engine(bayer, device="cpu", precision="fp32", backend="pytorch")
    with pytest.raises(ValueError, match="x 4 input"):
        engine.run(np.zeros((10, 10, 9), dtype=np.float32))


# --------------------------------------------------------------------------- choosing


def test_backend_names_and_environment(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="unknown engine"):
        Engine(bayer, device="cpu", precision="fp32", backend="tensorrt")
    monkeypatch.setenv(config.ENGINE, "pytorch")
    assert Engine(bayer, device="cpu", precision="fp32").info.backend == "pytorch"
    monkeypatch.setenv(config.ENGINE, "nonsense")
    with pytest.raises(UsageError, match="nonsense"):
        Engine(bayer, device="cpu", precision="fp32")


def test_without_openvino_auto_is_pytorch(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENGINE, raising=False)
    monkeypatch.setattr(engines, "openvino_installed", lambda: False)
    engine = Engine(bayer, device="cpu", precision="auto")
    assert engine.info == inference.EngineInfo("cpu", "fp32", "pytorch")
    with pytest.raises(DeviceError, match=r"seedark\[openvino\]"):
        Engine(bayer, device="cpu", precision="fp32", backend="openvino")


def test_a_broken_openvino_falls_back_to_pytorch(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("libopenvino.so: cannot open shared object file")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    seen: list[str] = []
    monkeypatch.delenv(config.ENGINE, raising=False)
    monkeypatch.setattr(engines, "openvino_installed", lambda: True)
    monkeypatch.setattr(engines, "_openvino", broken)
    handler = Collect(logging.WARNING)
    logging.getLogger("seedark").addHandler(handler)
    try:
        assert Engine(bayer, device="cpu", precision="fp32").info.backend == "pytorch"
    finally:
        logging.getLogger("seedark").removeHandler(handler)
    assert any("unusable" in m for m in seen)


def test_openvino_only_on_the_cpu(bayer: LoadedWeights) -> None:
    with pytest.raises(DeviceError, match="CPU"):
        engines.select_backend(bayer, torch.device("cuda"), torch.float16, "openvino")


# --------------------------------------------------------------------------- OpenVINO


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seedark cache for the module, so most tests load a converted model instead of converting."""
    pytest.importorskip("openvino")
    return tmp_path_factory.mktemp("ov") / "home"


@pytest.fixture
def ov_home(ov_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEEDARK_HOME", str(ov_cache))
    monkeypatch.delenv(config.ENGINE, raising=False)
    monkeypatch.setattr(inference, "OV_MIN_PIXELS", 0)  # let the small test frames reach OpenVINO
    return ov_cache


def _from_file(weights: LoadedWeights) -> LoadedWeights:
    """The same weights as if loaded from a file, so the converted model is cached."""
    return LoadedWeights(weights.spec, weights.state, Path("w.safetensors"), "safetensors", {})


@pytest.fixture(scope="module")
def bayer_file(bayer: LoadedWeights) -> LoadedWeights:
    return _from_file(bayer)


def test_openvino_is_the_cpu_default_and_matches_pytorch(
    ov_home: Path, bayer_file: LoadedWeights, rng: np.random.Generator
) -> None:
    engine = Engine(bayer_file, device="cpu", precision="auto")
    assert engine.info == inference.EngineInfo("cpu", "fp32", "openvino")
    for h, w in [(37, 53), (61, 61), (100, 77), (16, 300)]:  # odd sizes: ceil pooling, cropped upsampling
        packed = rng.random((h, w, 4), dtype=np.float32)
        got = engine.run(packed, tile=0)
        assert got.shape == (2 * h, 2 * w, 3)
        assert float(np.abs(got - reference(bayer_file, packed)).max()) <= ENGINE_TOLERANCE, (h, w)


def test_openvino_tiles_stitch_with_one_compiled_shape(
    ov_home: Path, bayer_file: LoadedWeights, rng: np.random.Generator
) -> None:
    engine = Engine(bayer_file, device="cpu", precision="fp32", backend="openvino")
    backend = engine.backend
    assert isinstance(backend, engines.OpenVINOBackend)
    packed = rng.random((333, 410, 4), dtype=np.float32)
    whole = engine.run(packed, tile=0)
    tiled = engine.run(packed, tile=100)
    assert float(np.abs(whole - tiled).max()) <= STITCH_TOLERANCE
    assert float(np.abs(whole - reference(bayer_file, packed)).max()) <= ENGINE_TOLERANCE
    assert set(backend._compiled) == {(333, 410), engine.plan(333, 410, 100).extent}
    assert "convert" not in backend.timings, "the module's first test converted and cached this model"


@pytest.mark.parametrize("bits", [8, 16])
def test_openvino_quantised_output(
    ov_home: Path, bayer_file: LoadedWeights, rng: np.random.Generator, bits: int
) -> None:
    engine = Engine(bayer_file, device="cpu", precision="fp32", backend="openvino")
    packed = rng.random((333, 410, 4), dtype=np.float32)
    got = engine.run(packed, tile=100, bits=bits)
    assert got.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(got, quantise(engine.run(packed, tile=100), bits))


def test_openvino_xtrans(ov_home: Path, rng: np.random.Generator) -> None:
    weights = random_weights(XTRANS, seed=4)
    engine = Engine(weights, device="cpu", precision="fp32", backend="openvino")
    packed = rng.random((70, 95, 9), dtype=np.float32)
    got = engine.run(packed, tile=0)
    assert got.shape == (210, 285, 3)
    assert float(np.abs(got - reference(weights, packed)).max()) <= ENGINE_TOLERANCE


def test_openvino_small_tiles_and_frames_run_on_pytorch(
    bayer: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    monkeypatch.delenv(config.ENGINE, raising=False)
    engine = Engine(bayer, device="cpu", precision="fp32", backend="openvino")
    backend = engine.backend
    assert isinstance(backend, engines.OpenVINOBackend)
    packed = rng.random((9, 40, 4), dtype=np.float32)  # OpenVINO cannot pool a 1-pixel map
    assert float(np.abs(engine.run(packed) - reference(bayer, packed)).max()) <= ENGINE_TOLERANCE
    out = np.empty((20, 600, 3), dtype=np.float32)
    backend.run_tile(rng.random((10, 300, 4), dtype=np.float32), out, 0, 0)  # a tile side under 16
    assert backend._model is None, "small frames and tiles must not pay for a conversion"


def test_openvino_model_is_cached_and_reused(
    tmp_path: Path, bayer: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    home = tmp_path / "home"
    monkeypatch.setenv("SEEDARK_HOME", str(home))
    packed = rng.random((64, 80, 4), dtype=np.float32)
    first = engines.OpenVINOBackend(_from_file(bayer))
    out1 = np.empty((128, 160, 3), dtype=np.float32)
    first.run_tile(packed, out1, 0, 0)
    assert "convert" in first.timings
    assert len(list((home / "engines").glob("openvino-*/[0-9a-f]*/model.xml"))) == 1
    assert list((home / "engines").glob("openvino-*/compiled/*")), "compiled blobs are cached too"

    second = engines.OpenVINOBackend(_from_file(bayer))
    out2 = np.empty_like(out1)
    second.run_tile(packed, out2, 0, 0)
    assert "convert" not in second.timings and "load_ir" in second.timings
    np.testing.assert_array_equal(out1, out2)

    other = random_weights(BAYER, seed=99)
    assert ircache.weights_digest(_from_file(other)) != ircache.weights_digest(_from_file(bayer))


def test_only_weights_from_files_are_cached(bayer: LoadedWeights) -> None:
    pytest.importorskip("openvino")
    # Training snapshots and random weights change every time: converting them to disk would fill the cache.
    assert not engines.OpenVINOBackend(bayer).persist
    assert not engines.OpenVINOBackend(LoadedWeights(bayer.spec, bayer.state, Path("<t>"), "training")).persist
    assert engines.OpenVINOBackend(_from_file(bayer)).persist


def test_release_keeps_the_engine_usable(ov_home: Path, bayer_file: LoadedWeights, rng: np.random.Generator) -> None:
    engine = Engine(bayer_file, device="cpu", precision="fp32", backend="openvino")
    packed = rng.random((48, 48, 4), dtype=np.float32)
    first = engine.run(packed)
    engine.backend.release()
    np.testing.assert_array_equal(first, engine.run(packed))


def test_unwritable_cache_still_works(
    ov_home: Path, tmp_path: Path, bayer_file: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted = engines.OpenVINOBackend(bayer_file).model()  # from the module's cache
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SEEDARK_HOME", str(blocker / "home"))
    backend = engines.OpenVINOBackend(bayer_file)
    monkeypatch.setattr(backend, "_convert", lambda: converted.clone())
    packed = rng.random((32, 32, 4), dtype=np.float32)
    out = np.empty((64, 64, 3), dtype=np.float32)
    backend.run_tile(packed, out, 0, 0)
    assert "convert" in backend.timings
    assert float(np.abs(out - reference(bayer_file, packed)).max()) <= ENGINE_TOLERANCE


def test_openvino_bf16_needs_native_support(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setattr(engines, "openvino_has_native_bf16", lambda: False)
    with pytest.raises(DeviceError, match="native bf16"):
        engines.OpenVINOBackend(bayer, "bf16")
    with pytest.raises(DeviceError, match="fp16"):
        engines.OpenVINOBackend(bayer, "fp16")


def test_cache_pruning_keeps_the_newest_and_the_blob_folder(tmp_path: Path) -> None:
    folder = tmp_path / "openvino-x"
    (folder / "compiled").mkdir(parents=True)
    now = time.time()
    for i in range(ircache.KEEP_CONVERTED + 3):
        entry = folder / f"{i:024x}"
        entry.mkdir()
        os.utime(entry, (now - 100 + i, now - 100 + i))
    stale = folder / ".tmp-dead"
    stale.mkdir()
    os.utime(stale, (now - 7200, now - 7200))
    fresh = folder / ".tmp-busy"
    fresh.mkdir()
    os.utime(folder / "compiled", (now - 10_000, now - 10_000))
    ircache.prune(folder, ircache.KEEP_CONVERTED, ircache._is_digest)
    left = sorted(p.name for p in folder.iterdir())
    assert "compiled" in left and ".tmp-busy" in left and ".tmp-dead" not in left
    digests = [n for n in left if ircache._is_digest(folder / n)]
    assert digests == [f"{i:024x}" for i in range(3, ircache.KEEP_CONVERTED + 3)]
