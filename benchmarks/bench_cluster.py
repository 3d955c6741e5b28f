"""Throughput of ``seedark batch`` here and on a Ray instance with 1 and 2 workers (docs/cluster.md).

Run from the repository root (not part of the tests; needs ``pip install 'seedark[ray]'``)::

    python benchmarks/bench_cluster.py [--frames 8] [--size 1024x1536] [--folder /tmp/bench_cluster]

Starts one local Ray instance with 2 CPUs (its start time is printed apart), then converts
the same folder of synthetic frames (tests/helpers/rawgen.py) with the full-width network
and He-initialised random weights: on 1 worker, on 2 workers, then with the local batch,
and checks that the outputs are the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", default="1024x1536", help="sensor height x width")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_cluster"))
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    import ray

    from helpers.rawgen import write_dng
    from seedark.models.network import NetworkSpec
    from seedark.models.weights import random_weights, save_safetensors
    from seedark.pipeline.batch import run_batch

    height, width = (int(v) for v in args.size.lower().split("x"))
    inputs = args.folder / "in"
    inputs.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors(random_weights(NetworkSpec()), args.folder / "full.safetensors")
    rng = np.random.default_rng(0)
    for i in range(args.frames):
        write_dng(inputs / f"f{i:03d}.dng", rng.integers(520, 900, size=(height, width), dtype=np.uint16))
    engine = {"weights": weights, "device": "cpu", "precision": "fp32", "ratio": 100}
    started = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"starting a local Ray (2 CPUs): {time.monotonic() - started:.1f} s")
    runs = {"ray_1_worker": {"cluster": "ray", "workers": 1}, "ray_2_workers": {"cluster": "ray", "workers": 2}}
    runs["local"] = {}
    for label, cluster in runs.items():
        started = time.monotonic()
        report = run_batch([inputs], args.folder / label, overwrite=True, **cluster, **engine)  # type: ignore[arg-type]
        seconds = time.monotonic() - started
        count = len(report.converted)
        print(f"{label}: {count} frames in {seconds:.1f} s = {count / seconds * 60:.1f} frames/min")
    ray.shutdown()
    local = sorted((args.folder / "local").iterdir())
    same = all((args.folder / label / p.name).read_bytes() == p.read_bytes() for p in local for label in runs)
    print("outputs identical to the local batch's:", same)


if __name__ == "__main__":
    main()
