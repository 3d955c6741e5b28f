#!/usr/bin/env python
"""Generate small TensorFlow parity fixtures for the seedark port (dev-only).

This script is NOT part of the package and is not run by the tests. It needs a
separate environment with TensorFlow (it was run with tensorflow-cpu 2.21):

    /work/tfvenv/bin/python tools/make_tf_fixture.py            # width 4
    /work/tfvenv/bin/python tools/make_tf_fixture.py --width 8 --out-root /tmp/fx

It rebuilds, in TF1 graph mode, the official "Learning to See in the Dark"
network (cchen156/Learning-to-See-in-the-Dark, test_Sony.py / test_Fuji.py)
with the base width 32 replaced by ``--width`` (channel widths w, 2w, 4w, 8w,
16w), under exactly the official variable names. ``tf.contrib.slim`` is
replicated with ``tf.compat.v1.variable_scope`` + ``get_variable``:

* ``slim.conv2d(x, n, [k, k], rate=1, activation_fn=f, scope=s)`` ->
  ``s/weights`` [k, k, in, n] (Glorot/Xavier uniform), ``s/biases`` [n]
  (zeros), conv stride 1 padding 'SAME', + bias, then ``f``;
* ``slim.max_pool2d(x, [2, 2], padding='SAME')`` -> 2x2 max pool, stride 2,
  'SAME';
* the transposed-conv filters are unnamed ``tf.Variable``s, so they are saved
  as ``Variable``, ``Variable_1``, ``Variable_2``, ``Variable_3``.

Because biases start at zero (and the truncated-normal stddev 0.02 deconv
filters would all but kill the signal at a small width), the biases are then
set to N(0, 0.05^2) and the deconv filters to N(0, (1/sqrt(in_channels))^2),
so that every parameter influences the output.

One Adam step (lr 1e-4, L1 loss against a random target) is then run, so the
checkpoint holds Adam slots and ``beta1_power`` / ``beta2_power`` just as the
official release does. As in the official checkpoints, only the ``g_*``
variables get Adam slots (the released index has no ``Variable/Adam``): the
optimiser's ``var_list`` is the ``g_`` variables.

The checkpoint is written with ``tf.compat.v1.train.Saver().save`` (no meta
graph) as ``<dir>/model.ckpt.{index,data-00000-of-00001}``. It is then restored
into a fresh graph and session, and the raw network output (NHWC, before any
clipping) is recorded for random packed inputs (batch 1, uniform in [0, 1]) of
several sizes, in ``<dir>/parity.npz``: ``in_<i>``, ``out_<i>`` (float32, NHWC,
batch dim kept) and ``sizes`` (int64 [n, 2] of packed (H, W)).
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":
    # Plain Eigen CPU kernels: deterministic, and identical across reruns. (The benchmarks import
    # this module for the graph and leave the kernels to TF.)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

VARIANTS = {
    # name: (input channels, conv10 channels, depth_to_space block, sizes)
    "sony": (
        4,
        12,
        2,
        [(16, 16), (17, 23), (31, 9), (5, 3), (1, 1), (40, 34), (33, 65)],
    ),
    "fuji": (9, 27, 3, [(16, 16), (17, 23), (9, 31), (5, 3), (24, 20)]),
}

SEED_OFFSET = {"sony": 0, "fuji": 1}
TRAIN_SIZE = (
    32,
    32,
)  # packed size of the single training step (and weight calibration)
BIAS_STD = 0.05  # biases are re-drawn N(0, BIAS_STD^2) (slim initialises them to 0)
OUT_STD = 0.5  # std of the raw output on the calibration input


def lrelu(x):
    return tf.maximum(x * 0.2, x)


# (variable, tensor whose std the variable controls), in graph order; filled by
# network() and used only to rescale the fixture weights (see rescale_weights).
TAPS = []


def slim_conv2d(x, num_outputs, kernel, activation_fn, scope):
    """tf.contrib.slim.conv2d(x, n, [k, k], rate=1, activation_fn=..., scope=...)."""
    in_ch = x.get_shape().as_list()[-1]
    with tf1.variable_scope(scope):
        weights = tf1.get_variable(
            "weights",
            shape=[kernel, kernel, in_ch, num_outputs],
            dtype=tf.float32,
            initializer=tf1.glorot_uniform_initializer(),
        )
        biases = tf1.get_variable(
            "biases",
            shape=[num_outputs],
            dtype=tf.float32,
            initializer=tf1.zeros_initializer(),
        )
        y = tf.nn.conv2d(x, weights, strides=[1, 1, 1, 1], padding="SAME")
        y = tf.nn.bias_add(y, biases)
        TAPS.append((weights, y))
        if activation_fn is not None:
            y = activation_fn(y)
    return y


def slim_max_pool2d(x):
    """tf.contrib.slim.max_pool2d(x, [2, 2], padding='SAME') (default stride 2)."""
    return tf.nn.max_pool2d(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")


def upsample_and_concat(x1, x2, output_channels, in_channels):
    pool_size = 2
    deconv_filter = tf.Variable(tf1.truncated_normal([pool_size, pool_size, output_channels, in_channels], stddev=0.02))
    deconv = tf.nn.conv2d_transpose(x1, deconv_filter, tf.shape(x2), strides=[1, pool_size, pool_size, 1])
    TAPS.append((deconv_filter, deconv))
    deconv_output = tf.concat([deconv, x2], 3)
    deconv_output.set_shape([None, None, None, output_channels * 2])
    return deconv_output


def network(inp, w, out_channels, block):
    c1, c2, c3, c4, c5 = w, 2 * w, 4 * w, 8 * w, 16 * w
    conv1 = slim_conv2d(inp, c1, 3, lrelu, "g_conv1_1")
    conv1 = slim_conv2d(conv1, c1, 3, lrelu, "g_conv1_2")
    pool1 = slim_max_pool2d(conv1)

    conv2 = slim_conv2d(pool1, c2, 3, lrelu, "g_conv2_1")
    conv2 = slim_conv2d(conv2, c2, 3, lrelu, "g_conv2_2")
    pool2 = slim_max_pool2d(conv2)

    conv3 = slim_conv2d(pool2, c3, 3, lrelu, "g_conv3_1")
    conv3 = slim_conv2d(conv3, c3, 3, lrelu, "g_conv3_2")
    pool3 = slim_max_pool2d(conv3)

    conv4 = slim_conv2d(pool3, c4, 3, lrelu, "g_conv4_1")
    conv4 = slim_conv2d(conv4, c4, 3, lrelu, "g_conv4_2")
    pool4 = slim_max_pool2d(conv4)

    conv5 = slim_conv2d(pool4, c5, 3, lrelu, "g_conv5_1")
    conv5 = slim_conv2d(conv5, c5, 3, lrelu, "g_conv5_2")

    up6 = upsample_and_concat(conv5, conv4, c4, c5)
    conv6 = slim_conv2d(up6, c4, 3, lrelu, "g_conv6_1")
    conv6 = slim_conv2d(conv6, c4, 3, lrelu, "g_conv6_2")

    up7 = upsample_and_concat(conv6, conv3, c3, c4)
    conv7 = slim_conv2d(up7, c3, 3, lrelu, "g_conv7_1")
    conv7 = slim_conv2d(conv7, c3, 3, lrelu, "g_conv7_2")

    up8 = upsample_and_concat(conv7, conv2, c2, c3)
    conv8 = slim_conv2d(up8, c2, 3, lrelu, "g_conv8_1")
    conv8 = slim_conv2d(conv8, c2, 3, lrelu, "g_conv8_2")

    up9 = upsample_and_concat(conv8, conv1, c1, c2)
    conv9 = slim_conv2d(up9, c1, 3, lrelu, "g_conv9_1")
    conv9 = slim_conv2d(conv9, c1, 3, lrelu, "g_conv9_2")

    conv10 = slim_conv2d(conv9, out_channels, 1, None, "g_conv10")
    out = tf1.depth_to_space(conv10, block)
    return out


def rescale_weights(sess, feed, taps):
    """Scale each conv / deconv weight so the tensor it feeds has a set std.

    Layer by layer in graph order (LSUV-like): every pre-activation (conv
    output + bias) and every transposed-conv output gets std 1 on the
    calibration input, the last layer (g_conv10) std OUT_STD. Without this,
    the Glorot init of a width-4 net with lrelu lets the deep levels fade to
    nothing, and the output would hardly depend on the deep weights.
    """
    for k, (var, tensor) in enumerate(taps):
        target = OUT_STD if k == len(taps) - 1 else 1.0
        for _ in range(3):  # the bias makes the std affine in the scale
            std = float(sess.run(tensor, feed).std())
            var.load(sess.run(var) * np.float32(target / std), sess)


def make_fixture(variant, width, outdir, seed):
    in_ch, out_ch, block, sizes = VARIANTS[variant]
    os.makedirs(outdir, exist_ok=True)
    ckpt = os.path.join(outdir, "model.ckpt")
    rng = np.random.RandomState(seed)

    # ---- build, perturb, train one step, save --------------------------------
    graph = tf1.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        in_image = tf1.placeholder(tf.float32, [None, None, None, in_ch])
        gt_image = tf1.placeholder(tf.float32, [None, None, None, 3])
        del TAPS[:]
        out_image = network(in_image, width, out_ch, block)
        taps = list(TAPS)
        loss = tf.reduce_mean(tf.abs(out_image - gt_image))
        g_vars = [v for v in tf1.trainable_variables() if v.name.startswith("g_")]
        deconv_vars = [v for v in tf1.trainable_variables() if not v.name.startswith("g_")]
        train_op = tf1.train.AdamOptimizer(1e-4).minimize(loss, var_list=g_vars)
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            for v in g_vars:
                if v.op.name.endswith("/biases"):
                    shape = v.get_shape().as_list()
                    v.load(rng.normal(0.0, BIAS_STD, size=shape).astype(np.float32), sess)
            for v in deconv_vars:
                shape = v.get_shape().as_list()  # [2, 2, out, in]
                v.load(
                    rng.normal(0.0, 1.0 / np.sqrt(shape[3]), size=shape).astype(np.float32),
                    sess,
                )
            th, tw = TRAIN_SIZE
            x = rng.uniform(0.0, 1.0, size=(1, th, tw, in_ch)).astype(np.float32)
            y = rng.uniform(0.0, 1.0, size=(1, th * block, tw * block, 3)).astype(np.float32)
            rescale_weights(sess, {in_image: x}, taps)
            l0, _ = sess.run([loss, train_op], {in_image: x, gt_image: y})
            l1 = sess.run(loss, {in_image: x, gt_image: y})
            print(f"[{variant}] L1 loss before/after the Adam step: {l0:.6f} / {l1:.6f}")
            saver.save(sess, ckpt, write_meta_graph=False)
    state = os.path.join(outdir, "checkpoint")
    if os.path.exists(state):
        os.remove(state)  # absolute paths inside; not needed to read the checkpoint

    # ---- restore into a fresh graph, record raw outputs ----------------------
    graph = tf1.Graph()
    arrays = {}
    with graph.as_default():
        in_image = tf1.placeholder(tf.float32, [None, None, None, in_ch])
        del TAPS[:]
        out_image = network(in_image, width, out_ch, block)
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as sess:
            saver.restore(sess, ckpt)
            for i, (h, w) in enumerate(sizes):
                x = rng.uniform(0.0, 1.0, size=(1, h, w, in_ch)).astype(np.float32)
                y = sess.run(out_image, {in_image: x})
                assert y.shape == (1, h * block, w * block, 3), y.shape
                assert y.dtype == np.float32
                arrays[f"in_{i}"] = x
                arrays[f"out_{i}"] = y
                print(
                    f"[{variant}] size {h}x{w}: out {y.shape} min {y.min():+.4f} max {y.max():+.4f} "
                    f"mean {y.mean():+.4f} std {y.std():.4f}"
                )
    arrays["sizes"] = np.asarray(sizes, dtype=np.int64)
    np.savez_compressed(os.path.join(outdir, "parity.npz"), **arrays)

    for name, shape in tf.train.list_variables(ckpt):
        print(f"[{variant}]   {name} {shape}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=4, help="base width (official: 32)")
    p.add_argument("--seed", type=int, default=20180618)
    p.add_argument(
        "--out-root",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "data"),
        help="fixtures go to <out-root>/tf_<variant>_w<width>/",
    )
    p.add_argument("--variant", choices=sorted(VARIANTS), action="append", help="default: all")
    args = p.parse_args(argv)
    tf1.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    print(f"TensorFlow {tf.__version__}, numpy {np.__version__}, width {args.width}, seed {args.seed}")
    for variant in args.variant or ["sony", "fuji"]:
        outdir = os.path.normpath(os.path.join(args.out_root, f"tf_{variant}_w{args.width}"))
        make_fixture(variant, args.width, outdir, args.seed + SEED_OFFSET[variant])
        print(f"[{variant}] wrote {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
