#!/usr/bin/env python
"""The official test path, end to end, on one RAW file: process start to a 16-bit TIFF.

Run by ``bench_vs_official.py`` with a Python that has TensorFlow (seedark never
imports it). It does what cchen156/Learning-to-See-in-the-Dark's ``test_Sony.py``
does for one file, minus the reference renderings that script also makes for its
own comparisons (``raw.postprocess`` of the input and of the long exposure):

* builds the official graph (``tools/make_tf_fixture.network``, the official
  variable names) in a TF1 session and restores the checkpoint with ``Saver``;
* reads the file with rawpy and packs it with the official ``pack_raw`` (black 512,
  white 16383, R G B G from offsets (0,0), (0,1), (1,1), (1,0));
* multiplies by the ratio, clips at 1, runs the graph, clips the output to [0, 1];
* writes a 16-bit TIFF (tifffile, uncompressed; the official script writes an 8-bit
  PNG through ``scipy.misc.toimage``, which modern SciPy no longer has).

Prints one JSON line of stage times; the caller measures the whole process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF_ENABLE_ONEDNN_OPTS is left to TF, which turns oneDNN on only for CPUs with AVX512_VNNI,
# AVX512_BF16 or AMX: forcing it on an AVX2 CPU ran the 12 MP forward pass for over ten
# minutes instead of ~12 s (Eigen).
T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import make_tf_fixture as fx  # noqa: E402  (imports TensorFlow)
import numpy as np  # noqa: E402
import rawpy  # noqa: E402
import tifffile  # noqa: E402

tf, tf1 = fx.tf, fx.tf1


def pack_raw(raw: rawpy.RawPy) -> np.ndarray:
    """test_Sony.py's pack_raw, verbatim in substance."""
    im = raw.raw_image_visible.astype(np.float32)
    im = np.maximum(im - 512, 0) / (16383 - 512)
    im = np.expand_dims(im, axis=2)
    h, w = im.shape[:2]
    return np.concatenate((im[0:h:2, 0:w:2, :], im[0:h:2, 1:w:2, :], im[1:h:2, 1:w:2, :], im[1:h:2, 0:w:2, :]), axis=2)


def main() -> None:
    checkpoint, raw_path, ratio, out = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    times = {"import": time.perf_counter() - T0}
    t = time.perf_counter()
    tf1.disable_eager_execution()
    graph = tf1.Graph()
    with graph.as_default():
        in_image = tf1.placeholder(tf.float32, [None, None, None, 4])
        out_image = fx.network(in_image, 32, 12, 2)
        sess = tf1.Session(graph=graph)
        names = [v for v in tf1.global_variables() if v.op.name.startswith(("g_", "Variable"))]
        tf1.train.Saver(names).restore(sess, str(checkpoint / "model.ckpt"))
    times["graph and restore"] = time.perf_counter() - t
    t = time.perf_counter()
    with rawpy.imread(str(raw_path)) as raw:
        input_full = np.minimum(np.expand_dims(pack_raw(raw), axis=0) * ratio, 1.0)
    times["decode and pack"] = time.perf_counter() - t
    t = time.perf_counter()
    output = sess.run(out_image, feed_dict={in_image: input_full})
    output = np.minimum(np.maximum(output, 0), 1)[0]
    times["forward"] = time.perf_counter() - t
    t = time.perf_counter()
    tifffile.imwrite(out, np.round(output * 65535.0).astype(np.uint16), photometric="rgb")
    times["write"] = time.perf_counter() - t
    times["onednn"] = {"0": "Eigen", "1": "oneDNN"}.get(os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""), "TF's default")
    print(json.dumps(times))


if __name__ == "__main__":
    main()
