#!/usr/bin/env python
"""The official TensorFlow graph on one full-resolution frame: time and peak memory.

Dev only, not part of the tests: it needs TensorFlow, which seedark never
imports. Run it in its own environment, on the machine where
``bench_inference.py`` ran, so the two can be compared:

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python benchmarks/bench_official_tf.py [--checkpoint checkpoint/Sony]

The graph is the official one (cchen156/Learning-to-See-in-the-Dark, test_Sony.py),
rebuilt by ``tools/make_tf_fixture.py`` under the official variable names, at
width 32, run in a TF1 session like the official test script, with TensorFlow's
default CPU kernels (TF turns oneDNN on for CPUs with AVX512_VNNI, AVX512_BF16 or AMX and
uses Eigen elsewhere; TF_ENABLE_ONEDNN_OPTS=0/1 forces one). Without
``--checkpoint`` the weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A speed comparison wants TF's own choice of kernels for this CPU (forcing oneDNN on an AVX2
# CPU made the 12 MP forward pass 50x slower); TF_ENABLE_ONEDNN_OPTS=0/1 still forces one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import make_tf_fixture as fx
import numpy as np

tf = fx.tf
tf1 = fx.tf1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="folder holding the official model.ckpt.* (Sony)")
    parser.add_argument("--size", default="1424x2128", help="packed HxW (a7S II full frame: 1424x2128)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after the first (best one counts)")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))

    graph = tf1.Graph()
    with graph.as_default():
        inp = tf1.placeholder(tf.float32, [None, None, None, 4])
        out = tf.minimum(tf.maximum(fx.network(inp, 32, 12, 2), 0.0), 1.0)
        sess = tf1.Session(graph=graph)
        if args.checkpoint is not None:
            names = [v for v in tf1.global_variables() if v.op.name.startswith(("g_", "Variable"))]
            tf1.train.Saver(names).restore(sess, str(args.checkpoint / "model.ckpt"))
        else:
            sess.run(tf1.global_variables_initializer())
    x = np.random.default_rng(0).random((1, h, w, 4), dtype=np.float32)
    times = []
    for _ in range(args.repeat + 1):
        start = time.perf_counter()
        y = sess.run(out, {inp: x})
        times.append(time.perf_counter() - start)
    assert y.shape == (1, 2 * h, 2 * w, 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    onednn = {"0": "Eigen", "1": "oneDNN"}.get(os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""), "TF's default")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}")
    print(f"official TF graph, packed {h}x{w}, fp32, {onednn} kernels:")
    print(f"  first run {times[0]:.2f} s; best of the next {args.repeat}: {min(times[1:]):.2f} s")
    print(f"  peak RSS {peak / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
