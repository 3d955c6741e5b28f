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
  other precision this CPU runs (``bf16`` where it is native and not the default already,
  ``int8``): process start → 16-bit TIFF, the engine cache warm (a first, untimed run fills it).

Then, each in a fresh process: **the network's own time**, one whole-frame inference of the
converted model (the cached OpenVINO IR) compiled by OpenVINO directly, in the default
precision, best of three; **the stages** of one ``enhance`` run one after another (import,
decode, model, compile, pack, network and quantisation, write), so that the overhead can be
placed; and a **batch** of 4 frames.

It prints, per mode, the median wall time, its ratio to the official path's median,
the peak RSS of the process, the PSNR of its output against seedark's fp32 output
(and fp32 against the official output), the CPU's flags, the load average before and
after, the overhead of the default mode (its median minus the network's own time), the
stages, the batch's time per frame above the network's, and met / NOT met per target.
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
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def default_precision() -> str:
    """What ``--precision auto`` runs on this CPU (``$SEEDARK_PRECISION`` left out)."""
    from seedark.runtime.devices import CPU, auto_precision_name

    return auto_precision_name(CPU)


def available_modes(dng: Path, ckpt: Path, work: Path, env: dict[str, str]) -> dict[str, str | None]:
    """The seedark modes this machine runs; each one's first (cache-filling, untimed) run happens here."""
    modes: dict[str, str | None] = {"default": None, "fp32": "fp32"}
    for extra in ("bf16", "int8"):
        if extra != default_precision():  # the default mode runs it already
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


NETWORK_SCRIPT = """
import json, sys, time
import numpy as np
import openvino as ov
from seedark.frames.prepare import prepare_file
from seedark.models.weightsfile import locate_weights
from seedark.runtime.backends import openvino_version
from seedark.runtime.ircache import openvino_folder, recall_weights
ckpt, dng, ratio, precision = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
known = recall_weights(openvino_folder(openvino_version()), locate_weights(ckpt))
assert known is not None, "no converted model in the cache: run seedark enhance first"
core = ov.Core()
model = core.read_model(str(openvino_folder(openvino_version()) / known.digest / "model.xml"))
x = np.ascontiguousarray(np.asarray(prepare_file(dng, ratio).packed).transpose(2, 0, 1))[None]
model.reshape(list(x.shape))
hint = {"bf16": "bf16", "fp32": "f32"}[precision]
compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
request = compiled.create_infer_request()
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    request.infer({0: x}, share_inputs=True, share_outputs=True)
    best = min(best, time.perf_counter() - start)
print(json.dumps({"network": best, "torch": "torch" in sys.modules}))
"""


def network_seconds(dng: Path, ckpt: Path, env: dict[str, str]) -> float:
    """The network's own time: the converted model, whole frame, compiled by OpenVINO directly,
    in the default precision; best of three in a fresh process (no torch)."""
    cmd = [sys.executable, "-c", NETWORK_SCRIPT, str(ckpt), str(dng), str(RATIO), default_precision()]
    _wall, out = measured(cmd, env)
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["network"])


def stage_driver(dng: Path, ckpt: Path, out: Path) -> None:
    """``seedark enhance``'s stages one after another, timed (the CLI overlaps some); one JSON line."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    from seedark.frames.prepare import prepare_parsed
    from seedark.io.raw import decode_raw
    from seedark.pipeline.output import plan_output, write_result
    from seedark.runtime.engine import EngineOptions, engine_for, matched_for

    times["import"] = time.perf_counter() - t
    plan = plan_output(dng, out, overwrite=True, bits=16)
    t = time.perf_counter()
    frame = decode_raw(dng)
    times["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    engine = engine_for(frame.sensor, EngineOptions.from_kwargs(weights=ckpt))
    times["model"] = time.perf_counter() - t
    prepared = prepare_parsed(frame, RATIO)
    packed = matched_for(prepared, engine)
    tiles = engine.plan(*packed.shape[:2], None, 16, held_input=False)
    t = time.perf_counter()
    engine.backend.prepare(*tiles.extent)
    times["compile"] = time.perf_counter() - t
    t = time.perf_counter()
    for tile in tiles.tiles:
        packed.window(tile.y0, tile.y1, tile.x0, tile.x1)
    times["pack"] = time.perf_counter() - t
    t = time.perf_counter()
    image = engine.run(packed, tile=None, bits=16)
    times["network and quantise (pack again)"] = time.perf_counter() - t - times["pack"]
    image = image[: prepared.height, : prepared.width]
    t = time.perf_counter()
    write_result(plan, image, prepared, block=engine.spec.block)
    times["write"] = time.perf_counter() - t
    from seedark.io.deflate import compressor_name

    facts = {"tiles": len(tiles.tiles), "extent": tiles.extent, "torch": "torch" in sys.modules}
    facts["deflate"] = compressor_name(16)
    print(json.dumps({"times": times, **facts, "precision": engine.precision, "backend": engine.info.backend}))


def stages(dng: Path, ckpt: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage-driver",
        str(dng),
        str(ckpt),
        str(work / "staged.tif"),
    ]
    _wall, out = measured(cmd, env)
    return dict(json.loads(out.strip().splitlines()[-1]))


def batch_seconds(dng: Path, ckpt: Path, work: Path, env: dict[str, str], frames: int = 4) -> tuple[float, int]:
    """Wall time and peak RSS of ``seedark batch`` over ``frames`` copies of the frame (16-bit TIFF)."""
    folder = work / "batch_in"
    folder.mkdir()
    for i in range(frames):
        os.link(dng, folder / f"frame{i:02d}.dng")
    out = work / "batch_out"
    cmd = [sys.executable, "-m", "seedark", "batch", str(folder), "-o", str(out), "--ratio", str(RATIO)]
    cmd += ["--weights", str(ckpt), "--bits", "16", "--format", "tiff", "-q"]
    wall, peak, _out = run(cmd, env)
    assert len(list(out.glob("*.tif*"))) == frames, "batch did not write every frame"
    return wall, peak


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--stage-driver":
        stage_driver(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
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
    machine["load_before"] = os.getloadavg()
    print(
        f"CPU: {machine.get('model name')} (family {machine.get('cpu family')} model {machine.get('model')}), "
        f"{machine['logical_cpus']} logical CPUs; flags: {' '.join(machine.get('flags', []))}; "
        f"native bf16: {'yes' if machine['native_bf16'] else 'no'}; load average {machine['load_before']}"
    )
    env = dict(os.environ, SEEDARK_HOME=str(work / "home"), PYTHONPATH=str(ROOT / "src"))
    env.pop("SEEDARK_PRECISION", None)  # the defaults, as a user gets them
    frame = tuple(int(v) for v in args.frame.lower().split("x"))
    dng, ckpt = make_inputs(work, args.weights, (frame[0], frame[1]))
    official = [str(args.tf_python), str(ROOT / "benchmarks" / "official_e2e.py"), str(ckpt), str(dng), str(RATIO)]
    modes = available_modes(dng, ckpt, work, env)
    walls: dict[str, list[float]] = {name: [] for name in ["official", *modes]}
    peaks: dict[str, int] = {}
    official_stages: list[dict[str, float]] = []
    for r in range(args.rounds):
        wall, peak, out = run([*official, str(work / "official.tif")], env)
        walls["official"].append(wall)
        peaks["official"] = max(peaks.get("official", 0), peak)
        official_stages.append(json.loads(out.strip().splitlines()[-1]))
        for name, precision in modes.items():
            wall, peak, _ = run(seedark_cmd(dng, ckpt, work / f"{name}.tif", precision), env)
            walls[name].append(wall)
            peaks[name] = max(peaks.get(name, 0), peak)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()))
    measured_after = {
        "network": network_seconds(dng, ckpt, env),
        "stages": stages(dng, ckpt, work, env),
        "batch": batch_seconds(dng, ckpt, work, env),
    }
    machine["load_after"] = os.getloadavg()
    return report(work, machine, walls, peaks, official_stages, measured_after)


def report(
    work: Path,
    machine: dict[str, Any],
    walls: dict[str, list[float]],
    peaks: dict[str, int],
    official_stages: list[dict[str, float]],
    after: dict[str, Any],
) -> dict[str, Any]:
    median = {k: statistics.median(v) for k, v in walls.items()}
    reference = read_tiff(work / "fp32.tif")
    quality = {name: psnr(read_tiff(work / f"{name}.tif"), reference) for name in walls if name != "official"}
    quality["official"] = psnr(read_tiff(work / "official.tif"), reference)
    print(f"\ndefault precision here: {default_precision()}; load average after: {machine['load_after']}")
    print("mode        median wall   vs official   peak RSS   PSNR vs seedark fp32")
    for name in walls:
        print(
            f"{name:<10} {median[name]:>9.2f} s {median[name] / median['official']:>11.2f}x "
            f"{peaks[name] / GB:>8.2f} GB {quality[name]:>12.1f} dB"
        )
    official = {k: statistics.median(s[k] for s in official_stages) for k in official_stages[0] if k != "onednn"}
    print("official stages (median): " + ", ".join(f"{k} {v:.2f} s" for k, v in official.items()))
    print(f"official TF_ENABLE_ONEDNN_OPTS: {official_stages[0]['onednn']}")
    network, staged = after["network"], after["stages"]
    overhead = median["default"] - network
    print(f"network's own time (whole frame, OpenVINO directly, {default_precision()}): {network:.2f} s")
    print(f"default end to end minus the network's own time: {overhead:.2f} s")
    print(
        f"seedark's stages, one after another ({staged['precision']}, {staged['backend']}, {staged['tiles']} tile(s) "
        f"of {staged['extent'][0]}x{staged['extent'][1]}, torch imported: {staged['torch']}, "
        f"16-bit deflate: {staged.get('deflate')}): " + ", ".join(f"{k} {v:.2f} s" for k, v in staged["times"].items())
    )
    batch_wall, batch_peak = after["batch"]
    per_frame = (batch_wall - 4 * network) / 4
    print(
        f"batch of 4: {batch_wall:.1f} s, peak {batch_peak / GB:.2f} GB: {per_frame:.2f} s a frame above the network's"
    )
    targets = check_targets(machine, median, quality, peaks, overhead, per_frame)
    return {
        "cpu": machine,
        "walls": walls,
        "median": median,
        "peaks": peaks,
        "psnr_vs_fp32": quality,
        "official_stages": official,
        "network_seconds": network,
        "overhead_seconds": overhead,
        "stages": staged,
        "batch4": {"seconds": batch_wall, "peak": batch_peak, "per_frame_above_network": per_frame},
        "targets": targets,
    }


def check_targets(
    machine: dict[str, Any],
    median: dict[str, float],
    quality: dict[str, float],
    peaks: dict[str, int],
    overhead: float,
    per_frame: float,
) -> dict[str, bool]:
    limit = 0.35 if machine["native_bf16"] else 0.55
    same = default_precision() == "fp32"
    targets = [
        (f"default <= {limit}x official", median["default"] / median["official"] <= limit),
        ("default end to end - network's own time <= 1.0 s", overhead <= 1.0),
        ("--precision fp32 <= 0.75x official", median["fp32"] / median["official"] <= 0.75),
        ("batch of 4: <= 0.5 s a frame above the network's own time", per_frame <= 0.5),
        ("peak <= 1.5 GB (default)", peaks["default"] <= 1.5 * GB),
        (
            "default bit-identical to fp32" if same else "default vs fp32 >= 45 dB",
            quality["default"] == float("inf") if same else quality["default"] >= 45,
        ),
    ]
    for text, ok in targets:
        print(f"{'met    ' if ok else 'NOT met'}  {text}")
    return {text: bool(ok) for text, ok in targets}


if __name__ == "__main__":
    main()
