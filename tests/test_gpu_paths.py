"""The GPU paths, run here on the CPU: exact fp32, autotuning scoped to inference, out-of-memory
that recovers, the GPU chosen and its budget, MPS, the Ray placement, the output quantised on the
device and the pipelined tiles. What needs a GPU's driver is simulated with monkeypatch; the code
under test is the real one (the tile pipeline, the quantisation and the replanning run for real)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch

import seedark
import seedark.runtime.engine as engine_module
from helpers.rawgen import write_dng
from seedark.cli import main
from seedark.errors import DeviceError, DeviceMemoryError, UsageError
from seedark.io.pixels import quantise
from seedark.models.network import NetworkSpec
from seedark.models.weights import LoadedWeights, random_weights
from seedark.pipeline.batch import PREFETCH, PREFETCH_GPU, prefetch_depth, run_batch
from seedark.runtime import devices, gpu
from seedark.runtime.backends import TorchBackend
from seedark.runtime.cluster import MAX_WORKERS_PER_GPU, ClusterPool, Placement, place_workers
from seedark.runtime.engine import Engine, EngineOptions

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "tf_sony_w4"
CPU = torch.device("cpu")
GiB = 1 << 30
STITCH_TOLERANCE = 1e-5  # tiles vs whole frame: float summation order only (tests/test_engines.py)
#: The largest tile (packed pixels) the simulated GPU can run: a 320 x 352 frame needs tiles.
LIMIT = 260 * 260


@pytest.fixture(scope="module")
def bayer() -> LoadedWeights:
    return random_weights(NetworkSpec(width=4), seed=1)


def torch_engine(weights: LoadedWeights) -> Engine:
    return Engine(weights, device="cpu", precision="fp32", backend="pytorch")


def numerics() -> tuple[str, str, bool]:
    """What decides how a GPU convolves fp32: TF32 or IEEE for convolutions and matmuls, and autotuning."""
    return (
        torch.backends.cudnn.conv.fp32_precision,
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.benchmark,
    )


def seen_while_running(engine: Engine) -> list[tuple[str, str, bool]]:
    """The settings each forward pass of ``engine`` runs under (recorded by a hook on its first conv)."""
    seen: list[tuple[str, str, bool]] = []
    net = cast(TorchBackend, engine.backend).net
    net.g_conv1_1.register_forward_pre_hook(lambda *_: seen.append(numerics()))
    return seen


# --------------------------------------------------------------------------- 1, 2: numerics and autotuning


def test_fp32_runs_without_tf32_with_autotuning_and_both_are_restored(
    bayer: LoadedWeights, rng: np.random.Generator
) -> None:
    before = numerics()
    # torch's own default: cuDNN may convolve fp32 in TF32 (10-bit mantissa) on Ampere and later
    assert before == ("tf32", "none", False)
    engine = torch_engine(bayer)
    assert numerics() == before  # building an engine changes nothing
    seen = seen_while_running(engine)
    engine.run(rng.random((40, 48, 4), dtype=np.float32), tile=0)
    assert seen == [("ieee", "ieee", True)]
    assert numerics() == before


def test_reduced_precision_leaves_the_fp32_settings_alone() -> None:
    before = numerics()
    with gpu.inference_scope(torch.bfloat16):
        assert numerics() == (before[0], before[1], True)
    assert numerics() == before


def test_a_deterministic_run_keeps_autotuning_off_through_inference(
    bayer: LoadedWeights, rng: np.random.Generator
) -> None:
    # what `seedark train --deterministic` sets before its first validation
    torch.use_deterministic_algorithms(True)
    try:
        engine = torch_engine(bayer)
        seen = seen_while_running(engine)
        engine.run(rng.random((40, 48, 4), dtype=np.float32), tile=0)
        assert seen == [("ieee", "ieee", False)]
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(False)


def test_the_scope_restores_the_settings_when_inference_fails() -> None:
    before = numerics()
    with pytest.raises(RuntimeError, match="failed"), gpu.inference_scope(torch.float32):
        raise RuntimeError("failed")
    assert numerics() == before


# --------------------------------------------------------------------------- 3: out of memory


def out_of_memory_above(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[tuple[int, int]]:
    """Make the back end's forward pass run out of memory on tiles over ``limit`` packed pixels,
    as a GPU would; returns the tile shapes tried, in order."""
    tried: list[tuple[int, int]] = []
    forward = TorchBackend._forward

    def limited(self: TorchBackend, x: torch.Tensor) -> torch.Tensor:
        tried.append((x.shape[-2], x.shape[-1]))
        if x.shape[-2] * x.shape[-1] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(TorchBackend, "_forward", limited)
    return tried


@pytest.mark.slow
def test_out_of_memory_plans_smaller_tiles_and_later_frames_keep_to_them(
    bayer: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine_module, "available_memory", lambda _device: 1e12)  # auto: the whole frame
    released: list[devices.Device] = []
    monkeypatch.setattr(engine_module, "release_after_oom", released.append)
    packed = rng.random((320, 352, 4), dtype=np.float32)
    whole = torch_engine(bayer).run(packed)
    engine = torch_engine(bayer)
    limit = LIMIT
    tried = out_of_memory_above(monkeypatch, limit)
    with caplog.at_level(logging.WARNING, logger="seedark"):
        out = engine.run(packed)
    failed = [s for s in tried if s[0] * s[1] > limit]
    assert tried[0] == (320, 352) and failed  # the whole frame first, as planned
    assert released == [devices.CPU] * len(failed)  # memory freed after each failure
    assert "out of memory on cpu with tiles of 320x352 packed px: trying again with" in caplog.text
    assert engine.memory_cap is not None and engine.memory_cap <= 320 * 352 * engine.bytes_per_pixel / 2
    np.testing.assert_allclose(out, whole, rtol=0, atol=STITCH_TOLERANCE)  # tiled = whole frame
    tried.clear()
    again = engine.run(packed)  # a later frame (in a batch: the next file) plans within the limit at once
    assert tried and all(h * w <= limit for h, w in tried)
    assert np.array_equal(again, out)


def test_out_of_memory_with_the_smallest_tiles_is_a_device_error_naming_the_file(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shot = write_dng(tmp_path / "night.dng", rng.integers(500, 800, size=(480, 560), dtype=np.uint16))
    out_of_memory_above(monkeypatch, 1000)  # less than any tile
    with pytest.raises(SystemExit) as info:
        main(["enhance", str(shot), "--ratio", "5", "--weights", str(FIXTURE), "--engine", "pytorch"])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.splitlines()[-1].startswith(f"seedark: error: {shot}: out of memory on cpu even with the smallest tiles")
    assert "internal error" not in err
    assert not (tmp_path / "night.png").exists()
    with pytest.raises(DeviceMemoryError) as info:  # the library's error: a DeviceError, with the file
        seedark.enhance(shot, ratio=5, weights=FIXTURE, backend="pytorch")
    assert isinstance(info.value, DeviceError) and info.value.path == shot and info.value.exit_code == 1


def two_shots(folder: Path, rng: np.random.Generator) -> list[Path]:
    folder.mkdir()
    return [
        write_dng(folder / f"{name}.dng", rng.integers(500, 800, size=(640, 704), dtype=np.uint16))
        for name in ("a", "b")
    ]


def test_out_of_memory_loading_the_model_fails_that_file_not_the_batch(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _second = two_shots(tmp_path / "in", rng)
    select = engine_module.select_backend
    calls: list[str] = []

    def select_once_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls.append("select")
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 MiB")
        return select(*args, **kwargs)

    monkeypatch.setattr(engine_module, "select_backend", select_once_out_of_memory)
    report = run_batch([tmp_path / "in"], tmp_path / "out", weights=FIXTURE, isolate=False, ratio=5)
    reason = "out of memory on cpu loading the model: free memory on the device, or use --device cpu"
    assert report.failed == [(first, reason)]
    assert [(src.name, out.name) for src, out, _ in report.converted] == [("b.dng", "b.png")]


@pytest.mark.slow
def test_a_batch_replans_once_and_its_later_files_keep_the_smaller_tiles(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    shots = two_shots(tmp_path / "in", rng)
    tried = out_of_memory_above(monkeypatch, LIMIT)
    alone = run_batch([shots[0]], tmp_path / "alone", weights=FIXTURE, isolate=False, ratio=5, backend="pytorch")
    failures_for_one = sum(h * w > LIMIT for h, w in tried)
    tried.clear()
    report = run_batch([tmp_path / "in"], tmp_path / "out", weights=FIXTURE, isolate=False, ratio=5, backend="pytorch")
    assert alone.ok and report.ok and len(report.converted) == 2
    assert failures_for_one >= 1
    assert sum(h * w > LIMIT for h, w in tried) == failures_for_one  # none for the second file
    assert (tmp_path / "alone" / "a.png").read_bytes() == (tmp_path / "out" / "a.png").read_bytes()


# --------------------------------------------------------------------------- 4: which GPU, what budget


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Three simulated GPUs of 80 GiB; the test sets their free memory."""
    free = {0: 2 * GiB, 1: 30 * GiB, 2: 30 * GiB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (free[index], 80 * GiB))
    return free


def test_auto_picks_the_gpu_with_the_most_free_memory(gpus: dict[int, int]) -> None:
    assert devices.resolve_device("auto") == torch.device("cuda", 1)  # a tie goes to the lower index
    gpus[2] = 40 * GiB
    assert devices.resolve_device("auto") == torch.device("cuda", 2)
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)  # named: that one


def test_nearly_full_gpus_mean_the_cpu_for_auto_and_an_error_by_name(
    gpus: dict[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    gpus.update({0: 100 << 20, 1: 300 << 20, 2: 20 << 20})
    with caplog.at_level(logging.WARNING, logger="seedark"):
        assert devices.resolve_device("auto") == CPU
    assert caplog.messages == [
        "every CUDA device is nearly full (300 MB free at most, 512 MB needed): running on the CPU"
    ]
    with pytest.raises(DeviceError) as info:
        devices.resolve_device("cuda:1")
    assert info.value.reason == (
        "device 'cuda:1' has only 300 MB free (seedark needs 512 MB): free memory on it, or use another device"
    )
    assert info.value.exit_code == 1


def simulate_allocator(monkeypatch: pytest.MonkeyPatch, *, fraction: float) -> None:
    """A GPU of 80 GiB with 30 GiB free; this process holds 3 GiB (1 GiB in tensors, 2 GiB cached)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _index=None: (30 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda _index=None: 1 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda _index=None: 3 * GiB)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda _index=None: fraction)


def test_the_budget_keeps_to_the_memory_fraction_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda", 0)
    simulate_allocator(monkeypatch, fraction=1.0)
    assert devices.available_memory(cuda) == 32 * GiB  # free memory and the process's own cache
    simulate_allocator(monkeypatch, fraction=0.1)  # set_per_process_memory_fraction(0.1): 8 GiB for this process
    assert devices.available_memory(cuda) == int(0.1 * 80 * GiB) - 1 * GiB


def test_the_smallest_tiles_are_a_warning_with_their_cost(
    bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = torch_engine(bayer)
    monkeypatch.setattr(engine_module, "available_memory", lambda _device: 2.0)
    with caplog.at_level(logging.WARNING, logger="seedark"):
        plan = engine.plan(1424, 2128)
    work = plan.pixels / (1424 * 2128)
    assert work > 3  # mostly overlap
    assert caplog.messages == [
        f"no tiles fit the 0 MB free on cpu: the smallest ({plan.extent[0]}x{plan.extent[1]} packed px) "
        f"do {work:.1f}x the frame's work"
    ]


# --------------------------------------------------------------------------- 7: MPS


def test_mps_release_empties_its_cache(bayer: LoadedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[str] = []
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append("mps"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append("cuda"))
    backend = TorchBackend(bayer, CPU, torch.float32)
    backend.release()
    assert emptied == []
    backend.device = torch.device("mps")  # what release() looks at
    backend.release()
    assert emptied == ["mps"]


def test_the_mps_budget_is_metals_working_set_within_free_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    ram = {"available": 20 * GiB}
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GiB)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 4 * GiB)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(**ram))
    mps = torch.device("mps")
    assert devices.available_memory(mps) == 12 * GiB
    ram["available"] = 6 * GiB  # unified memory: what the host has left bounds it too
    assert devices.available_memory(mps) == 6 * GiB


def test_the_bf16_probe_convolves(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.bf16_convolves(CPU)

    def refuse(*_args: object, **_kwargs: object) -> torch.Tensor:
        raise RuntimeError("\"conv2d\" not implemented for 'BFloat16'")

    monkeypatch.setattr(torch.nn.functional, "conv2d", refuse)
    assert not devices.bf16_convolves(CPU)
    probed: list[torch.device] = []
    monkeypatch.setattr(devices, "bf16_convolves", lambda device: probed.append(device) or False)
    with pytest.raises(DeviceError, match="bf16 is not supported by this MPS device"):
        devices.resolve_precision("bf16", torch.device("mps"))
    assert probed == [torch.device("mps")]


# --------------------------------------------------------------------------- 5: the Ray cluster


@pytest.mark.parametrize(
    ("device", "workers", "total", "free", "expected"),
    [
        # auto resolved on the driver: GPUs when the cluster has them, each worker's own GPU is cuda:0
        ("auto", None, {"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2}, Placement(2, 1, 1.0, "cuda:0", "fp32")),
        ("cuda:1", None, {"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2}, Placement(2, 1, 1.0, "cuda:0", "fp32")),
        # more workers than GPUs: they share them
        ("cuda", 6, {"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2}, Placement(6, 1, 1 / 3, "cuda:0", "fp32")),
        ("cuda", 20, {"CPU": 64, "GPU": 2}, {"CPU": 64, "GPU": 2}, Placement(2 * 4, 1, 1 / 4, "cuda:0", "fp32")),
        ("auto", None, {"CPU": 8}, {"CPU": 8}, Placement(8, 1, 0, "cpu", "fp32")),
        # only what can be placed now: an actor that cannot be placed never starts
        ("cpu", 16, {"CPU": 8, "GPU": 2}, {"CPU": 4, "GPU": 2}, Placement(4, 1, 0, "cpu", "fp32")),
        ("cuda", 4, {"CPU": 3, "GPU": 4}, {"CPU": 3, "GPU": 4}, Placement(3, 1, 1.0, "cuda:0", "fp32")),
        ("auto", 3, {"CPU": 16, "GPU": 1}, {"CPU": 16, "GPU": 0}, Placement(1, 1, 1 / 3, "cuda:0", "fp32")),
    ],
)
def test_workers_are_placed_on_the_driver(
    device: str, workers: int | None, total: dict[str, float], free: dict[str, float], expected: Placement
) -> None:
    assert MAX_WORKERS_PER_GPU == 4
    assert place_workers(device, "auto", workers, total, free) == expected


def test_the_cap_is_said(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seedark"):
        place_workers("cpu", "auto", 16, {"CPU": 8}, {"CPU": 4})
    assert caplog.messages == [
        "16 worker(s) asked for, but the cluster can place 4 now (4 CPUs, 0 GPUs free): running 4"
    ]


def test_cluster_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_cluster = {"CPU": 4, "GPU": 1}
    monkeypatch.delenv("SEEDARK_PRECISION")
    assert place_workers("cpu", "auto", 1, gpu_cluster, gpu_cluster).precision == "auto"  # each node's own CPU
    assert place_workers("cuda", "auto", 1, gpu_cluster, gpu_cluster).precision == "fp32"
    assert place_workers("cuda", "fp16", 1, gpu_cluster, gpu_cluster).precision == "fp16"
    with pytest.raises(DeviceError, match="int8 runs on the CPU"):
        place_workers("auto", "int8", 1, gpu_cluster, gpu_cluster)
    with pytest.raises(DeviceError, match="the Ray cluster has no GPU"):
        place_workers("cuda", "auto", 1, {"CPU": 4}, {"CPU": 4})
    with pytest.raises(UsageError, match="mps does not work with --cluster"):
        place_workers("mps", "auto", 1, gpu_cluster, gpu_cluster)


class FakeRay:
    """What ClusterPool asks of Ray when it starts its actors, recorded."""

    def __init__(self, resources: dict[str, float]) -> None:
        self.resources = resources
        self.actor_options: dict[str, Any] = {}
        self.shipped: EngineOptions | None = None
        self.started = 0

    def cluster_resources(self) -> dict[str, float]:
        return self.resources

    def available_resources(self) -> dict[str, float]:
        return self.resources

    def put(self, value: EngineOptions) -> EngineOptions:
        self.shipped = value
        return value

    def remote(self, **options: Any) -> Any:
        self.actor_options = options

        def start(*_args: object) -> object:
            self.started += 1
            return object()

        return lambda _cls: SimpleNamespace(remote=start)


def test_the_pool_asks_ray_for_gpus_and_ships_the_resolved_device() -> None:
    ray = FakeRay({"CPU": 16, "GPU": 2})
    pool: ClusterPool[Any, Any] = ClusterPool(
        cast(Any, ray), EngineOptions(device="cuda:1"), job=lambda _c, item: item, workers=3
    )
    assert ray.actor_options == {"num_cpus": 1, "num_gpus": 0.5, "max_concurrency": 2}
    assert ray.started == len(pool.actors) == 3
    assert ray.shipped is not None and (ray.shipped.device, ray.shipped.precision) == ("cuda:0", "fp32")


# --------------------------------------------------------------------------- 6: output on the device, the pipeline


def edge_values(bits: int, rng: np.random.Generator) -> np.ndarray:
    """Values where rounding can go either way: every sample's midpoint and its neighbours,
    the samples themselves, out of range, NaN and infinities, and random ones."""
    maxval = np.float32((1 << bits) - 1)
    k = np.arange((1 << bits), dtype=np.float32)
    mid = (k + np.float32(0.5)) / maxval
    special = np.array([np.nan, np.inf, -np.inf, -0.0, -1e-30, 1e-45, 1.0, 1.0000001, 2.0, -3.0], dtype=np.float32)
    values = [mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(2)), k / maxval, special]
    values.append(rng.random(30000, dtype=np.float32) * np.float32(1.2) - np.float32(0.1))
    flat = np.concatenate(values)
    return flat[: len(flat) // 3 * 3].reshape(-1, 1, 3)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantising_on_the_device_gives_the_hosts_samples(
    bits: int, dtype: torch.dtype, rng: np.random.Generator
) -> None:
    out = torch.from_numpy(edge_values(bits, rng)).to(dtype)  # the network's output in that precision
    host = out.to(torch.float32).numpy()
    want = quantise(host, bits)
    got = gpu.quantise_on_device(out, bits).numpy()
    assert got.dtype == want.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert np.array_equal(got, want)
    # and the documented rule, written out here, where the value is a number
    maxval = np.float32((1 << bits) - 1)
    finite = np.isfinite(host)
    rule = np.floor(np.clip(host, 0, 1) * maxval + np.float32(0.5))
    assert np.array_equal(got[finite], rule[finite].astype(got.dtype))


@pytest.mark.parametrize("bits", [None, 8, 16])
def test_the_pipelined_tiles_give_the_one_at_a_time_output(
    bits: int | None, bayer: LoadedWeights, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = torch_engine(bayer)
    packed = rng.random((256, 300, 4), dtype=np.float32) * np.float32(1.5)  # some outputs clip
    plan = engine.plan(256, 300, tile=64)
    assert len(plan.tiles) >= 4
    one_at_a_time = engine.run(packed, tile=64, bits=bits)
    launched: list[tuple[int, ...]] = []
    launch = gpu.TilePipeline.launch
    monkeypatch.setattr(gpu.TilePipeline, "launch", lambda self, x, w: launched.append(x.shape) or launch(self, x, w))
    cast(TorchBackend, engine.backend).pipelined = True  # as on CUDA, with synchronous copies
    pipelined = engine.run(packed, tile=64, bits=bits)
    assert len(launched) == len(plan.tiles)
    assert pipelined.dtype == one_at_a_time.dtype and np.array_equal(pipelined, one_at_a_time)


def test_more_files_are_decoded_ahead_on_a_gpu(bayer: LoadedWeights) -> None:
    engine = torch_engine(bayer)
    assert prefetch_depth(engine) == PREFETCH == 1
    engine.device = torch.device("cuda", 0)
    assert prefetch_depth(engine) == PREFETCH_GPU > 1


# --------------------------------------------------------------------------- 8: the smoke test, without a GPU


def test_the_gpu_smoke_test_says_there_is_no_gpu_and_exits_77() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 77, done.stderr
    assert done.stdout.splitlines() == ["gpu_smoke: no CUDA GPU here, nothing checked (exit 77: skipped)"]
