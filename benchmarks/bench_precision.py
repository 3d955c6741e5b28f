#!/usr/bin/env python
"""PSNR of bf16 and int8 against fp32: random and trained full-width weights, dark frames at ratios 100 and 300.

    python benchmarks/bench_precision.py [--weights trained.safetensors] [--crop 512x768]

The proof behind ``--precision auto`` (bf16 on CPUs with native bf16: >= 45 dB against
fp32) and behind offering int8 (>= 38 dB). For each weights set (He-initialised random
weights, seed 1; and ``--weights``) and each dark frame (the benchmark's lamp-lit room,
and seedark demo's photograph unprocessed to an a7S II mosaic with the ELD noise model),
at ratios 100 and 300, it runs one packed crop in:

* fp32: the PyTorch engine (the exact reference);
* bf16: the PyTorch engine in bf16 (on a CPU without native bf16 this is emulated, slowly,
  but computes the same rounding as native bf16 convolutions up to accumulation order);
* int8: the OpenVINO model quantised by NNCF (``--precision int8``).

Outputs are clipped to [0, 1]; PSNR with peak 1. Prints one table; ``--json`` saves it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def _bench_inference() -> Any:
    import bench_inference  # the script's own folder is on sys.path

    return bench_inference


def frames(ratio: float, crop: tuple[int, int]) -> dict[str, np.ndarray]:
    """Packed, amplified crops (h x w x 4) of each dark scene at ``ratio``."""
    from seedark.pipeline.demo import dark_frame, demo_photo
    from seedark.runtime.quantize import network_input

    h, w = 2 * crop[0], 2 * crop[1]
    room = _bench_inference().dark_scene(h, w, ratio=ratio)
    photo = dark_frame(demo_photo(), ratio, seed=1)
    photo = photo[: min(h, photo.shape[0]) // 2 * 2, : min(w, photo.shape[1]) // 2 * 2]
    return {name: network_input(m, ratio)[0].transpose(1, 2, 0) for name, m in (("room", room), ("photo", photo))}


def run(backend: Any, packed: np.ndarray) -> np.ndarray:
    h, w = packed.shape[:2]
    b = backend.spec.block
    out = np.zeros((h * b, w * b, 3), np.float32)
    backend.run_tile(np.ascontiguousarray(packed), out, 0, 0)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def measure(label: str, weights: Any, crop: tuple[int, int]) -> list[dict[str, Any]]:
    import torch

    from seedark.runtime.backends import OpenVINOBackend, TorchBackend

    engines = {
        "fp32": TorchBackend(weights, torch.device("cpu"), torch.float32),
        "bf16": TorchBackend(weights, torch.device("cpu"), torch.bfloat16),
        "int8": OpenVINOBackend(weights, "int8", persist=False),
    }
    rows = []
    for ratio in (100.0, 300.0):
        for scene, packed in frames(ratio, crop).items():
            start = time.perf_counter()
            ref = run(engines["fp32"], packed)
            row = {"weights": label, "scene": scene, "ratio": ratio, "size": list(packed.shape[:2])}
            for name in ("bf16", "int8"):
                row[name] = psnr(run(engines[name], packed), ref)
            print(
                f"{label:<10} {scene:<6} x{ratio:<5.0f} bf16 {row['bf16']:6.1f} dB   int8 {row['int8']:6.1f} dB"
                f"   ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="trained weights (safetensors or TF checkpoint)")
    parser.add_argument("--crop", default="512x768", help="packed HxW of each crop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    crop = tuple(int(v) for v in args.crop.lower().split("x"))
    with tempfile.TemporaryDirectory() as home:
        import os

        os.environ["SEEDARK_HOME"] = home  # the int8 model of random weights is not worth caching
        from seedark.models.network import NetworkSpec
        from seedark.models.weights import load_weights, random_weights

        sets = [("random", random_weights(NetworkSpec(), seed=1))]
        if args.weights:
            sets.append(("trained", load_weights(args.weights)))
        rows = [row for label, w in sets for row in measure(label, w, (crop[0], crop[1]))]
    for label, _ in sets:
        mine = [r for r in rows if r["weights"] == label]
        worst = {name: min(r[name] for r in mine) for name in ("bf16", "int8")}
        print(f"{label}: worst bf16 {worst['bf16']:.1f} dB, worst int8 {worst['int8']:.1f} dB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
