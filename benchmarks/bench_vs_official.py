#!/usr/bin/env python
"""seedark against the official TensorFlow code, end to end, in one run on one machine.

    python benchmarks/bench_vs_official.py --tf-python /tmp/tfvenv/bin/python \\
        [--weights trained.safetensors] [--rounds 3] [--json out.json]

``--tf-python`` is a Python with TensorFlow, rawpy and tifffile
(``python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu rawpy tifffile``).

On one 12 MP a7S II-sized dark frame (a DNG written by tests/helpers/rawgen.py) and
one checkpoint (``--weights``, else random width-32 weights, written in the official
TF layout so that both sides load the same file), it alternates, ``--rounds`` times:

* the official path (``official_e2e.py``): process start → 16-bit TIFF;
* ``seedark enhance`` at default settings, with ``--precision fp32``, and with each
  other precision this CPU runs (``bf16`` where it is native, ``int8``): process start →
  16-bit TIFF, the engine cache warm (a first, untimed run fills it).

It prints, per mode, the median wall time, its ratio to the official path's median,
the peak RSS of the process, the PSNR of its output against seedark's fp32 output
(and fp32 against the official output), the CPU's flags, the whole-process overhead
of the default mode (wall minus in-process inference time) and a 10-frame batch
against 10 × the single-frame inference time. It ends with met / NOT met per target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
GB = 1e9
RATIO = 100.0
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _bench_inference() -> Any:
    import bench_inference  # the script's own folder is on sys.path

    return bench_inference


def cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu family", "model") and key not in info:
            info[key] = value.strip()
        if key == "flags" and "flags" not in info:
            present = set(value.split())
            info["flags"] = [f for f in FLAGS if f in present]
    from seedark.runtime.devices import cpu_has_native_bf16

    info["native_bf16"] = cpu_has_native_bf16()
    return info


def make_inputs(work: Path, weights_path: Path | None, frame: tuple[int, int]) -> tuple[Path, Path]:
    """The frame (DNG) and the checkpoint folder in the official layout (``model.ckpt.*``)."""
    from helpers import rawgen
    from helpers.tfwriter import sid_tf_tensors, write_checkpoint
    from seedark.models.network import NetworkSpec
    from seedark.models.weights import load_weights, random_weights

    dng = work / "frame.dng"
    rawgen.write_dng(dng, _bench_inference().dark_scene(*frame, ratio=RATIO))
    weights = load_weights(weights_path) if weights_path else random_weights(NetworkSpec(), seed=1)
    ckpt = work / "checkpoint"
    ckpt.mkdir()
    write_checkpoint(ckpt / "model.ckpt", sid_tf_tensors(weights, adam=False))
    return dng, ckpt


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds and stdout of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, proc.stdout


WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(p.stderr); sys.stdout.write(p.stdout)\n"
    "print('\\nPEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    "sys.exit(p.returncode)\n"
)


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """``cmd`` as the only child of a small wrapper, so its peak RSS is its own; wall includes its start."""
    wall, out = measured([sys.executable, "-c", WRAPPER, *cmd], env)
    lines = out.rstrip().splitlines()
    return wall, int(lines[-1].split()[1]), "\n".join(lines[:-1])


def seedark_cmd(dng: Path, ckpt: Path, out: Path, precision: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "seedark", "enhance", str(dng), "--ratio", str(RATIO), "--weights", str(ckpt)]
    cmd += ["-o", str(out), "--bits", "16", "--overwrite"]
    return cmd + (["--precision", precision] if precision else [])


def read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path).astype(np.float64) / 65535.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def available_modes(dng: Path, ckpt: Path, work: Path, env: dict[str, str]) -> dict[str, str | None]:
    """The seedark modes this machine runs; each one's first (cache-filling, untimed) run happens here."""
    modes: dict[str, str | None] = {"default": None, "fp32": "fp32"}
    for extra in ("bf16", "int8"):
        modes[extra] = extra
    usable: dict[str, str | None] = {}
    for name, precision in modes.items():
        proc = subprocess.run(
            seedark_cmd(dng, ckpt, work / f"{name}.tif", precision), env=env, capture_output=True, text=True
        )
        if proc.returncode == 0:
            usable[name] = precision
        else:
            print(f"  {name}: not run here: {proc.stderr.strip().splitlines()[-1]}")
    return usable


def infer_seconds(dng: Path, ckpt: Path) -> float:
    """The default engine's inference on the frame, in process, warm (best of 2)."""
    from seedark.frames.prepare import prepare
    from seedark.io.raw import read_raw
    from seedark.runtime.engine import infer, load_engine

    engine = load_engine(ckpt)
    prepared = prepare(read_raw(dng), RATIO)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        infer(prepared, engine, tile=None, bits=16)
        best = min(best, time.perf_counter() - start)
    return best


def batch_seconds(dng: Path, ckpt: Path, work: Path, env: dict[str, str], frames: int = 10) -> float:
    folder = work / "batch_in"
    folder.mkdir()
    for i in range(frames):
        os.link(dng, folder / f"frame{i:02d}.dng")
    out = work / "batch_out"
    cmd = [sys.executable, "-m", "seedark", "batch", str(folder), "-o", str(out), "--ratio", str(RATIO)]
    cmd += ["--weights", str(ckpt), "--bits", "16", "--format", "tiff", "-q"]
    wall, _peak, _out = run(cmd, env)
    assert len(list(out.glob("*.tif*"))) == frames, "batch did not write every frame"
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", type=Path, required=True, help="a Python with tensorflow, rawpy, tifffile")
    parser.add_argument("--weights", type=Path, help="weights to load on both sides (default: random, seed 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frame", default="2848x4256", help="raw HxW (default: a7S II, 12 MP)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seedark-vs-official-"))
    try:
        results = bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    machine = cpu()
    print(
        f"CPU: {machine.get('model name')} (family {machine.get('cpu family')} model {machine.get('model')}), "
        f"{machine['logical_cpus']} logical CPUs; flags: {' '.join(machine.get('flags', []))}; "
        f"native bf16: {'yes' if machine['native_bf16'] else 'no'}"
    )
    env = dict(os.environ, SEEDARK_HOME=str(work / "home"), PYTHONPATH=str(ROOT / "src"))
    frame = tuple(int(v) for v in args.frame.lower().split("x"))
    dng, ckpt = make_inputs(work, args.weights, (frame[0], frame[1]))
    official = [str(args.tf_python), str(ROOT / "benchmarks" / "official_e2e.py"), str(ckpt), str(dng), str(RATIO)]
    modes = available_modes(dng, ckpt, work, env)
    walls: dict[str, list[float]] = {name: [] for name in ["official", *modes]}
    peaks: dict[str, int] = {}
    stages: list[dict[str, float]] = []
    for r in range(args.rounds):
        wall, peak, out = run([*official, str(work / "official.tif")], env)
        walls["official"].append(wall)
        peaks["official"] = max(peaks.get("official", 0), peak)
        stages.append(json.loads(out.strip().splitlines()[-1]))
        for name, precision in modes.items():
            wall, peak, _ = run(seedark_cmd(dng, ckpt, work / f"{name}.tif", precision), env)
            walls[name].append(wall)
            peaks[name] = max(peaks.get(name, 0), peak)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()))
    return report(args, work, machine, dng, ckpt, env, walls, peaks, stages)


def report(
    args: argparse.Namespace,
    work: Path,
    machine: dict[str, Any],
    dng: Path,
    ckpt: Path,
    env: dict[str, str],
    walls: dict[str, list[float]],
    peaks: dict[str, int],
    stages: list[dict[str, float]],
) -> dict[str, Any]:
    median = {k: statistics.median(v) for k, v in walls.items()}
    reference = read_tiff(work / "fp32.tif")
    quality = {name: psnr(read_tiff(work / f"{name}.tif"), reference) for name in walls if name != "official"}
    quality["official"] = psnr(read_tiff(work / "official.tif"), reference)
    print("\nmode        median wall   vs official   peak RSS   PSNR vs seedark fp32")
    for name in walls:
        print(
            f"{name:<10} {median[name]:>9.2f} s {median[name] / median['official']:>11.2f}x "
            f"{peaks[name] / GB:>8.2f} GB {quality[name]:>12.1f} dB"
        )
    official_stages = {k: statistics.median(s[k] for s in stages) for k in stages[0] if k != "onednn"}
    print("official stages (median): " + ", ".join(f"{k} {v:.2f} s" for k, v in official_stages.items()))
    print(f"official TF_ENABLE_ONEDNN_OPTS: {stages[0]['onednn']}")
    infer = infer_seconds(dng, ckpt)
    overhead = (median["default"] - infer) / median["default"]
    batch = batch_seconds(dng, ckpt, work, env)
    print(f"default: inference {infer:.2f} s in process; whole-process overhead {overhead:.0%} of the wall time")
    print(f"batch of 10 frames: {batch:.1f} s = {batch / (10 * infer):.2f} x (10 x inference)")
    limit = 0.5 if machine["native_bf16"] else 1.0
    targets = [
        (f"default <= {limit}x official", median["default"] / median["official"] <= limit),
        ("--precision fp32 <= 1.0x official", median["fp32"] / median["official"] <= 1.0),
        ("default vs fp32 >= 45 dB", quality["default"] >= 45),
        ("peak <= 1.5 GB (default)", peaks["default"] <= 1.5 * GB),
        ("whole-process overhead <= 15 %", overhead <= 0.15),
        ("batch of 10 <= 1.1 x 10 x inference", batch <= 1.1 * 10 * infer),
    ]
    for text, ok in targets:
        print(f"{'met    ' if ok else 'NOT met'}  {text}")
    return {
        "cpu": machine,
        "walls": walls,
        "median": median,
        "peaks": peaks,
        "psnr_vs_fp32": quality,
        "official_stages": official_stages,
        "infer_seconds": infer,
        "overhead": overhead,
        "batch10_seconds": batch,
        "targets": dict(targets),
    }


if __name__ == "__main__":
    main()
