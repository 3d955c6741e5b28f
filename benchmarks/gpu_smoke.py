"""seedark on a CUDA GPU, checked in one call: ``python benchmarks/gpu_smoke.py [--device cuda:N]``.

Offline and self-contained: random full-width weights, DNGs generated here
(tests/helpers/rawgen.py), the TF parity fixtures of tests/data. About 2-5 minutes
on one GPU. Prints one row per check (what was measured, the limit, ok / FAIL) and
exits 0 only if every check holds, 1 otherwise. Without a CUDA GPU it prints one
line saying so and exits 77 (the test runners' "skipped"). What each check means:
docs/devices.md, "The GPU smoke test".

Checks, in order:

1. device: ``auto`` picks the GPU with the most free memory and says so; a nearly full
   GPU makes ``auto`` warn and use the CPU, and ``cuda:N`` by name a DeviceError.
2. parity: the TF graph's outputs (tests/data/tf_*_w4/parity.npz, odd sizes) at fp32,
   within 1e-4: TF32 is off while seedark infers.
3. whole frame: a 12 MP frame runs as one tile under ``--tile auto``.
4. fp16 / bf16: PSNR against fp32 on the 12 MP frame.
5. 12 MP: time and ``torch.cuda.max_memory_allocated`` on the GPU against the CPU's
   time on the same frame, and their outputs agree.
6. 60 MP under an 8 GB memory-fraction cap: tiles chosen within it, no out-of-memory.
7. out-of-memory: a whole-frame tile under a tiny cap fails, is replanned smaller and
   gives the same image; the next frame plans within the limit at once.
8. batch: 6 files through ``run_batch`` on the GPU; one equals ``enhance``'s output.
9. training: 4 deterministic epochs (validation included) equal 2 + 2 resumed, bit for bit.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

SKIPPED = 77
GB = 1e9
GiB = 1 << 30
FRAME_12MP = (2848, 4256)  # a7S II
FRAME_60MP = (6336, 9504)  # a7R IV
FRAME_BATCH = (1424, 2128)  # 3 MP each
PARITY_TOLERANCE = 1e-4
MIN_REDUCED_PSNR = 30.0  # random weights amplify rounding; a broken kernel gives far less
CPU_AGREEMENT = 1e-3  # GPU fp32 vs CPU fp32 on full-width random weights: summation order only


@dataclass
class Row:
    check: str
    measured: str
    limit: str
    ok: bool


class Messages(logging.Handler):
    """What seedark logs, kept (the smoke test checks the messages users see)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


# --------------------------------------------------------------------------- inputs


def dark_mosaic(height: int, width: int, seed: int) -> np.ndarray:
    """An RGGB mosaic of a textured scene 100x too dark, with shot and read noise (uint16, black 512)."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(0.05, 1.0, size=(height // 64 + 1, width // 64 + 1)).astype(np.float32)
    scene = np.kron(blocks, np.ones((64, 64), dtype=np.float32))[:height, :width]
    scene *= np.linspace(0.4, 1.0, width, dtype=np.float32)[None, :]
    signal = scene * np.float32(15871 / 100)  # a full exposure / ratio 100, in DN above black
    noisy = rng.poisson(signal).astype(np.float32) + rng.normal(0, 3, size=signal.shape).astype(np.float32)
    return np.clip(noisy + 512, 0, 16383).astype(np.uint16)


def write_frames(folder: Path) -> dict[str, Path]:
    from helpers.rawgen import write_dng

    folder.mkdir(parents=True, exist_ok=True)
    frames = {"12mp": write_dng(folder / "frame12.dng", dark_mosaic(*FRAME_12MP, seed=1))}
    frames["60mp"] = write_dng(folder / "frame60.dng", dark_mosaic(*FRAME_60MP, seed=2))
    batch = folder / "batch"
    batch.mkdir()
    for i in range(6):
        write_dng(batch / f"night{i}.dng", dark_mosaic(*FRAME_BATCH, seed=10 + i))
    frames["batch"] = batch
    return frames


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def gpu_seconds(run: Callable[[], Any]) -> tuple[float, Any]:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    result = run()
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


# --------------------------------------------------------------------------- checks


def check_device(ctx: dict[str, Any]) -> list[Row]:
    import torch

    from seedark.errors import DeviceError
    from seedark.runtime import devices
    from seedark.runtime.engine import load_engine

    free = {i: torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())}
    best = max(free, key=lambda i: (free[i], -i))
    ctx["messages"].take()
    engine = load_engine(ctx["weights"], device="auto", precision="auto", backend="auto")
    said = ctx["messages"].take()
    want = f"running on cuda:{best} (fp32, pytorch)"
    rows = [Row("device: auto = most free GPU", f"{engine.info.device}; said {said[-1:]}", want, want in said)]
    floor = devices.GPU_MIN_FREE_BYTES
    devices.GPU_MIN_FREE_BYTES = max(free.values()) + 1  # every GPU "nearly full"
    try:
        auto = devices.resolve_device("auto")
        warned = [m for m in ctx["messages"].take() if "nearly full" in m]
        try:
            devices.resolve_device(f"cuda:{best}")
            refusal = "accepted"
        except DeviceError as exc:
            refusal = exc.reason
    finally:
        devices.GPU_MIN_FREE_BYTES = floor
    ok = auto.type == "cpu" and len(warned) == 1 and "MB free (seedark needs" in refusal
    rows.append(
        Row("device: nearly full GPU", f"auto -> {auto}; cuda:{best} -> {refusal[:60]}", "cpu + warning; refused", ok)
    )
    return rows


def check_parity(ctx: dict[str, Any]) -> list[Row]:
    from seedark.models.weights import load_weights
    from seedark.runtime.engine import Engine

    rows = []
    for name in ("tf_sony_w4", "tf_fuji_w4"):
        folder = ROOT / "tests" / "data" / name
        engine = Engine(load_weights(folder), device=ctx["device"], precision="fp32", backend="pytorch")
        parity = np.load(folder / "parity.npz", allow_pickle=False)
        worst = 0.0
        for i in range(len(parity["sizes"])):
            got = engine.run(parity[f"in_{i}"][0], tile=0)
            worst = max(worst, float(np.abs(got - np.clip(parity[f"out_{i}"][0], 0, 1)).max()))
        rows.append(
            Row(
                f"parity: {name} (fp32, TF32 off)",
                f"max |diff| {worst:.2e}",
                f"<= {PARITY_TOLERANCE:g}",
                worst <= PARITY_TOLERANCE,
            )
        )
    return rows


def check_12mp(ctx: dict[str, Any]) -> list[Row]:
    import torch

    from seedark.frames.prepare import prepare_file
    from seedark.runtime.engine import Engine

    prepared = prepare_file(ctx["frames"]["12mp"], 100)
    ctx["prepared12"] = prepared
    h, w = prepared.packed.shape[:2]
    fp32 = Engine(ctx["weights"], device=ctx["device"], precision="fp32", backend="pytorch")
    plan = fp32.plan(h, w)
    rows = [
        Row(
            "12 MP: tiles under --tile auto",
            f"{len(plan.tiles)} tile(s) of {plan.extent}",
            "1 (whole frame)",
            len(plan.tiles) == 1,
        )
    ]
    fp32.run(prepared.packed)  # cuDNN's autotuning for this shape
    torch.cuda.reset_peak_memory_stats()
    seconds, reference = gpu_seconds(lambda: fp32.run(prepared.packed))
    peak = torch.cuda.max_memory_allocated()
    ctx["reference12"] = reference
    cpu = Engine(ctx["weights"], device="cpu", precision="fp32")
    cpu.run(prepared.packed)  # OpenVINO, where installed, converts and compiles on the first frame
    cpu_seconds, on_cpu = gpu_seconds(lambda: cpu.run(prepared.packed))
    diff = float(np.abs(on_cpu - reference).max())
    measured = f"GPU {seconds:.2f} s, peak {peak / GB:.2f} GB; CPU ({cpu.info.backend}) {cpu_seconds:.1f} s; "
    measured += f"max |diff| {diff:.1e}"
    rows.append(
        Row(
            "12 MP fp32: GPU vs CPU",
            measured,
            f"faster, |diff| <= {CPU_AGREEMENT:g}",
            seconds < cpu_seconds and diff <= CPU_AGREEMENT,
        )
    )
    for precision in ("fp16", "bf16"):
        rows.append(reduced_precision(ctx, precision, prepared, reference))
    return rows


def reduced_precision(ctx: dict[str, Any], precision: str, prepared: Any, reference: np.ndarray) -> Row:
    from seedark.errors import DeviceError
    from seedark.runtime.engine import Engine

    try:
        engine = Engine(ctx["weights"], device=ctx["device"], precision=precision, backend="pytorch")
    except DeviceError as exc:
        return Row(f"12 MP {precision} vs fp32", f"not on this GPU: {exc.reason}", "-", True)
    engine.run(prepared.packed)
    seconds, out = gpu_seconds(lambda: engine.run(prepared.packed))
    db = psnr(reference, out)
    return Row(
        f"12 MP {precision} vs fp32",
        f"{db:.1f} dB, {seconds:.2f} s",
        f">= {MIN_REDUCED_PSNR:g} dB",
        db >= MIN_REDUCED_PSNR,
    )


def capped(fraction_bytes: float, run: Callable[[], Any]) -> Any:
    """``run()`` with the caching allocator capped at ``fraction_bytes`` (``set_per_process_memory_fraction``)."""
    import torch

    torch.cuda.empty_cache()  # blocks cached before the cap would count against it
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, fraction_bytes / total))
    try:
        return run()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def check_60mp(ctx: dict[str, Any]) -> list[Row]:
    import torch

    from seedark.frames.prepare import prepare_file
    from seedark.runtime.engine import Engine

    prepared = prepare_file(ctx["frames"]["60mp"], 100)
    h, w = prepared.packed.shape[:2]
    engine = Engine(ctx["weights"], device=ctx["device"], precision="fp32", backend="pytorch")

    def run() -> tuple[Any, float, list[str]]:
        plan = engine.plan(h, w, bits=16, held_input=False)
        torch.cuda.reset_peak_memory_stats()
        seconds, _ = gpu_seconds(lambda: engine.run(prepared.packed, bits=16))
        return plan, seconds, ctx["messages"].take()

    ctx["messages"].take()
    plan, seconds, said = capped(8 * GiB, run)
    peak = torch.cuda.max_memory_allocated()
    replanned = [m for m in said if "out of memory" in m]
    ok = len(plan.tiles) > 1 and not replanned and peak <= 8 * GiB
    measured = f"{len(plan.tiles)} tiles of {plan.extent}, {seconds:.1f} s, peak {peak / GB:.2f} GB"
    return [Row("60 MP under an 8 GiB cap", measured, "tiles, no OOM, peak <= 8 GiB", ok)]


def check_oom(ctx: dict[str, Any]) -> list[Row]:
    from seedark.runtime.engine import Engine

    prepared = ctx["prepared12"]
    engine = Engine(ctx["weights"], device=ctx["device"], precision="fp32", backend="pytorch")

    def run() -> tuple[np.ndarray, list[str], list[str]]:
        first = engine.run(prepared.packed, tile=0)  # the whole frame asked for: ~2 GB, over the cap
        said = ctx["messages"].take()
        engine.run(prepared.packed, tile=0)
        return first, said, ctx["messages"].take()

    ctx["messages"].take()
    out, said, said_again = capped(1 * GiB, run)
    retried = [m for m in said if "out of memory on" in m and "trying again" in m]
    diff = float(np.abs(out - ctx["reference12"]).max())
    again = [m for m in said_again if "out of memory" in m]
    ok = bool(retried) and diff <= PARITY_TOLERANCE and not again and engine.memory_cap is not None
    measured = f"{len(retried)} replan(s), max |diff| {diff:.1e}, next frame: {len(again)} OOM"
    return [Row("OOM under a 1 GiB cap recovers", measured, "replanned, same image, no 2nd OOM", ok)]


def check_batch(ctx: dict[str, Any]) -> list[Row]:
    import seedark
    from seedark.pipeline.batch import run_batch

    out = ctx["tmp"] / "batch-out"
    seconds, report = gpu_seconds(
        lambda: run_batch(
            [ctx["frames"]["batch"]], out, weights=ctx["weights"], device=ctx["device"], ratio=100, bits=16, fmt="tiff"
        )
    )
    first = ctx["frames"]["batch"] / "night0.dng"
    single = seedark.enhance(first, ratio=100, weights=ctx["weights"], device=ctx["device"], precision="fp32")
    import tifffile

    written = tifffile.imread(out / "night0.tif")
    want = np.floor(np.clip(single, 0, 1) * np.float32(65535) + np.float32(0.5)).astype(np.uint16)
    same = bool(np.array_equal(written, want))
    measured = (
        f"{len(report.converted)} converted, {len(report.failed)} failed, {seconds:.1f} s; night0 = enhance(): {same}"
    )
    return [
        Row(
            "batch of 6 on the GPU",
            measured,
            "6 converted, identical",
            report.ok and len(report.converted) == 6 and same,
        )
    ]


def check_training(ctx: dict[str, Any]) -> list[Row]:
    import torch

    from helpers.sid_layout import make_sid_dataset
    from seedark.training.checkpoint import load_checkpoint
    from seedark.training.config import TrainConfig
    from seedark.training.loop import train

    layout = make_sid_dataset(ctx["tmp"] / "sid", size=(512, 768))
    base = TrainConfig(
        out=ctx["tmp"] / "straight", train_list=layout.train_list, val_list=layout.val_list, epochs=4, width=32,
        patch=128, workers=0, save_every=1, val_every=2, log_every=1, device=ctx["device"], deterministic=True,
    )  # fmt: skip
    start = time.perf_counter()
    straight = train(base)
    train(replace(base, out=ctx["tmp"] / "halves", epochs=2))
    resumed = train(replace(base, out=ctx["tmp"] / "halves", resume=True))
    seconds = time.perf_counter() - start
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    same = a.weights.state.keys() == b.weights.state.keys() and all(
        torch.equal(a.weights.state[k], b.weights.state[k]) for k in a.weights.state
    )
    validated = len(straight.validation) == 2
    ok = same and validated and torch.backends.cudnn.benchmark is False
    measured = f"weights equal: {same}, validations: {len(straight.validation)}, {seconds:.0f} s"
    return [Row("train 4 epochs = 2 + 2 resumed", measured, "bit-identical", ok)]


CHECKS = (check_device, check_parity, check_12mp, check_60mp, check_oom, check_batch, check_training)


# --------------------------------------------------------------------------- running


def run_checks(ctx: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for check in CHECKS:
        started = time.perf_counter()
        try:
            got = check(ctx)
        except Exception as exc:  # a check that crashes is a failed check; the others still run
            got = [Row(check.__name__.removeprefix("check_"), f"{type(exc).__name__}: {str(exc)[:100]}", "-", False)]
        rows += got
        print(f"  {check.__name__}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[Row], header: str) -> None:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("check", "measured", "limit")]
    print(header)
    for r in rows:
        cells = (r.check.ljust(widths[0]), r.measured.ljust(widths[1]), r.limit.ljust(widths[2]))
        print(" | ".join((*cells, "ok" if r.ok else "FAIL")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the GPU the checks run on (default: cuda)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU here, nothing checked (exit 77: skipped)")
        return SKIPPED
    from seedark.models.network import NetworkSpec
    from seedark.models.weights import random_weights

    messages = Messages()
    logger = logging.getLogger("seedark")
    logger.addHandler(messages)
    logger.setLevel(logging.DEBUG)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seedark-gpu-smoke-") as tmp:
        ctx: dict[str, Any] = {"tmp": Path(tmp), "device": args.device, "messages": messages}
        ctx["weights"] = random_weights(NetworkSpec(), seed=0)  # full width (32)
        ctx["frames"] = write_frames(Path(tmp) / "frames")
        rows = run_checks(ctx)
    name = torch.cuda.get_device_name(torch.device(args.device))
    print_table(
        rows, f"seedark GPU smoke test: {name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s"
    )
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
