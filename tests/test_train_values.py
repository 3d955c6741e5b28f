"""``seedark train`` computes the right numbers: checked against independent sources.

* the logged loss is the L1 distance of that step's patch, recomputed here with NumPy;
* the initial weights have the statistics of the official TensorFlow initialisers,
  hand-computed here from their formulas;
* ``model-best.safetensors`` holds the weights of the epoch with the best logged PSNR;
* ``keep`` / ``keep_every`` leave exactly the hand-computed checkpoints;
* a 2-process DDP step uses the mean of the two processes' gradients, recomputed here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from helpers.cli import child_env
from helpers.sid_layout import SidLayout, make_sid_dataset
from seedark.models.network import NetworkSpec, SIDUNet
from seedark.models.weights import load_weights, random_weights, save_safetensors
from seedark.training.checkpoint import load_checkpoint
from seedark.training.config import TrainConfig
from seedark.training.dataset import read_list
from seedark.training.initial import init_official
from seedark.training.loop import TrainStatus, train
from seedark.training.samples import TrainingSet

# TF's tf.train.AdamOptimizer defaults, which the official train_Sony.py uses (and torch's Adam shares).
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(out: Path, train_list: Path, **changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "out": out,
        "train_list": train_list,
        "epochs": 3,
        "width": 4,
        "patch": 16,
        "workers": 0,
        "save_every": 1,
        "keep": 0,
        "lr": 1e-3,
        "val_every": 0,
        "log_every": 1,
        "device": "cpu",
    }
    settings.update(changes)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def net_from(path: Path) -> SIDUNet:
    weights = load_weights(path)
    net = SIDUNet(weights.spec)
    net.load_state_dict(weights.state)
    return net


def l1(net: SIDUNet, inp: np.ndarray, gt: np.ndarray) -> float:
    """mean |net(x) - y| over the patch, accumulated in float64 by NumPy."""
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(inp))[None])[0].numpy()
    assert out.shape == gt.shape
    return float(np.mean(np.abs(out.astype(np.float64) - gt.astype(np.float64))))


def read_jsonl(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- 1. the loss is L1


def test_logged_loss_is_the_l1_of_the_steps_patch(tmp_path: Path) -> None:
    # one reference with two dark inputs: one step per epoch, so every step starts from a saved state
    data = make_sid_dataset(tmp_path / "data", train={1: (10.0, (0.1, 0.04))}, test={}, val={})
    start = save_safetensors(random_weights(NetworkSpec(width=4), seed=5), tmp_path / "start.safetensors")
    config = tiny(tmp_path / "run", data.train_list, width=None, init_weights=start, epochs=3)
    steps: list[TrainStatus] = []
    train(config, progress=steps.append)
    assert [s.step for s in steps] == [1, 2, 3]

    dataset = TrainingSet(config, read_list(data.train_list), None)
    expected = []
    for epoch in range(3):
        # the weights epoch `epoch` (0-based) started from: the starting file, then each epoch's checkpoint
        before = start if epoch == 0 else config.out / "checkpoints" / f"epoch-{epoch:06d}" / "model.safetensors"
        inp, gt = dataset.sample(epoch, 0)  # rank 0 takes position 0 of every epoch
        assert inp.shape == (4, 16, 16) and gt.shape == (3, 32, 32)
        expected.append(l1(net_from(before), inp, gt))
    assert len(set(expected)) == 3  # the weights did move: three different numbers
    np.testing.assert_allclose([s.loss for s in steps], expected, rtol=1e-5)
    np.testing.assert_allclose([s.epoch_loss for s in steps], expected, rtol=1e-5)
    logged = read_jsonl(config.out / "train_log.jsonl")
    assert [r["epoch"] for r in logged] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in logged], expected, rtol=1e-5)


# --------------------------------------------------------------------------- 2. official initialisation


def glorot_bound(shape: tuple[int, ...]) -> float:
    """slim.conv2d's default weights_initializer is xavier_initializer(uniform=True) = variance_scaling
    (factor 1, FAN_AVG, uniform): U(-b, b) with b = sqrt(6 / (fan_in + fan_out)),
    fan_in = kh*kw*in, fan_out = kh*kw*out (biases: zeros_initializer)."""
    out_ch, in_ch, kh, kw = shape
    return math.sqrt(6.0 / (kh * kw * in_ch + kh * kw * out_ch))


def expected_glorot(width: int) -> dict[str, float]:
    """Hand-written layer list of the official graph (train_Sony.py network()), with each bound."""
    w = [width * 2**k for k in range(5)]
    shapes: dict[str, tuple[int, int, int, int]] = {}
    c_in = 4
    for level in range(5):
        shapes[f"g_conv{level + 1}_1"] = (w[level], c_in, 3, 3)
        shapes[f"g_conv{level + 1}_2"] = (w[level], w[level], 3, 3)
        c_in = w[level]
    for idx, level in zip(range(6, 10), range(3, -1, -1), strict=True):
        shapes[f"g_conv{idx}_1"] = (w[level], 2 * w[level], 3, 3)
        shapes[f"g_conv{idx}_2"] = (w[level], w[level], 3, 3)
    shapes["g_conv10"] = (12, w[0], 1, 1)
    return {name: glorot_bound(shape) for name, shape in shapes.items()}


def test_hand_computed_glorot_bounds() -> None:
    bounds = expected_glorot(32)
    # sqrt(6 / (9*4 + 9*32)) and sqrt(6 / (1*32 + 1*12)), by hand
    assert bounds["g_conv1_1"] == pytest.approx(0.136083, abs=1e-6)
    assert bounds["g_conv10"] == pytest.approx(0.369274, abs=1e-6)
    # truncated normal cut at 2 std: std factor sqrt(1 - 2*2*phi(2)/(2*Phi(2) - 1)) = 0.87962
    assert stats.truncnorm(-2, 2).std() == pytest.approx(0.87962, abs=1e-5)


def _check_official_statistics(state: dict[str, torch.Tensor], width: int, slack: float = 0.0) -> None:
    """Every tensor of a width-``width`` net against the official initialisers.

    ``slack``: how far each value may have moved since initialisation. The tolerances
    are 6 standard errors (sample std of n iid draws: relative error sqrt((kurtosis - 1) / 4n)).
    """
    bounds = expected_glorot(width)
    assert {k for k in state if k.endswith(".weight") and not k.startswith("up")} == {f"{n}.weight" for n in bounds}
    for name, bound in bounds.items():
        w = state[f"{name}.weight"].double().flatten()
        n = w.numel()
        top = float(w.abs().max())
        # U(-b, b): never beyond b; P(all n draws inside (1 - q) b) = (1 - q)^n <= 1e-9
        assert top <= bound * (1 + 1e-6) + slack, (name, top, bound)
        assert top >= bound * math.exp(math.log(1e-9) / n) - slack, (name, top, bound)
        std = bound / math.sqrt(3.0)  # uniform: kurtosis 9/5
        assert float(w.std()) == pytest.approx(std, rel=6 * math.sqrt((1.8 - 1) / (4 * n))), name
        assert abs(float(w.mean())) <= 6 * std / math.sqrt(n) + slack, name
        bias = state[f"{name}.bias"]
        assert float(bias.abs().max()) <= slack, name  # zeros_initializer
    # tf.Variable(tf.truncated_normal([2, 2, out, in], stddev=0.02)): no bias, |w| <= 2 std
    truncated = stats.truncnorm(-2, 2, scale=0.02)
    kurtosis = float(truncated.stats(moments="k")) + 3.0
    ups = {k: v for k, v in state.items() if k.startswith("up")}
    assert sorted(ups) == ["up6.weight", "up7.weight", "up8.weight", "up9.weight"]
    for name, value in ups.items():
        w = value.double().flatten()
        n = w.numel()
        assert tuple(value.shape[2:]) == (2, 2)
        top = float(w.abs().max())
        assert top <= 0.04 * (1 + 1e-6) + slack, (name, top)
        # P(|w| > 1.95 std) = 0.6 % for this distribution: with n >= 8192 draws some lie there
        assert top >= 0.039 - slack, (name, top)
        assert float(w.std()) == pytest.approx(0.02 * 0.87962, rel=6 * math.sqrt((kurtosis - 1) / (4 * n))), name
        assert abs(float(w.mean())) <= 6 * 0.02 / math.sqrt(n) + slack, name


def test_official_initialisation_statistics() -> None:
    net = SIDUNet(NetworkSpec(width=32))  # the paper's width: 8192 to 2.4 M draws per layer
    init_official(net, seed=11)
    for module in (net.up6, net.up7, net.up8, net.up9):
        assert module.bias is None
    _check_official_statistics(net.state_dict(), 32)
    # and the draws are uniform / truncated normal in shape, not only in spread (fixed seed: deterministic)
    conv = net.g_conv4_2.weight.detach().double().flatten()[:200_000] / expected_glorot(32)["g_conv4_2"]
    assert stats.kstest(conv.numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-6
    up = net.up6.weight.detach().double().flatten()[:200_000].numpy()
    assert stats.kstest(up, stats.truncnorm(-2, 2, scale=0.02).cdf).pvalue > 1e-6


def test_a_run_starts_from_the_official_initialisation(layout: SidLayout, tmp_path: Path) -> None:
    # one Adam step moves each weight by at most ~lr: the run's weights still show their initial statistics
    lr = 1e-9
    result = train(tiny(tmp_path / "run", layout.train_list, width=32, epochs=1, lr=lr, seed=2))
    assert result.steps == 3
    _check_official_statistics(load_weights(result.model).state, 32, slack=3 * lr * 1.01)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 3. model-best


def test_model_best_holds_the_best_validation_epoch(layout: SidLayout, tmp_path: Path) -> None:
    # the PSNR climbs for 3 epochs at lr 1e-2, then an absurd lr (0.3 after epoch 3) wrecks the
    # network: the best epoch is neither the first nor the last (about 10 dB, then 4-7 dB, for any seed)
    config = tiny(
        tmp_path / "run",
        layout.train_list,
        epochs=5,
        lr=1e-2,
        lr_drop_epoch=3,
        lr_after_drop=0.3,
        val_list=layout.val_list,
        val_every=1,
    )
    train(config)
    records = read_jsonl(config.out / "validation.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    psnr = {int(r["epoch"]): float(r["psnr"]) for r in records}
    best_epoch = max(psnr, key=lambda e: (psnr[e], -e))  # the first epoch reaching the maximum
    # the test needs a run where the best is not simply the newest (nor the first)
    assert best_epoch not in (1, 5) and psnr[5] < psnr[best_epoch], psnr

    best = load_weights(config.out / "model-best.safetensors")
    assert best.metadata.get("epoch") == str(best_epoch)
    for epoch in psnr:
        saved = load_weights(config.out / "checkpoints" / f"epoch-{epoch:06d}" / "model.safetensors").state
        same = all(torch.equal(best.state[k], saved[k]) for k in saved)
        if epoch == best_epoch:
            assert same, f"model-best differs from epoch {epoch}'s checkpoint"
        elif psnr[epoch] != psnr[best_epoch]:
            assert not same, f"model-best holds epoch {epoch} (PSNR {psnr[epoch]}), not {best_epoch}"


# --------------------------------------------------------------------------- 4. keep / keep-every


@pytest.mark.parametrize(
    ("epochs", "save_every", "keep", "keep_every", "remaining"),
    [
        # saved 1..8; the newest (8) and the multiples of 3 (3, 6) stay
        (8, 1, 1, 3, [3, 6, 8]),
        # saved 2, 4, 6, 8, 9 (the last epoch is always saved); the newest two (8, 9) and multiples of 4 (4, 8)
        (9, 2, 2, 4, [4, 8, 9]),
    ],
)
def test_keep_every_keeps_multiples_and_the_newest(
    layout: SidLayout, tmp_path: Path, epochs: int, save_every: int, keep: int, keep_every: int, remaining: list[int]
) -> None:
    config = tiny(
        tmp_path / "run", layout.train_list, epochs=epochs, save_every=save_every, keep=keep, keep_every=keep_every
    )
    train(config)
    checkpoints = config.out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"epoch-{e:06d}" for e in remaining] + ["latest.json"]
    for epoch in remaining:  # complete, loadable checkpoints of the right epochs
        assert load_checkpoint(checkpoints / f"epoch-{epoch:06d}").epoch == epoch


# --------------------------------------------------------------------------- 5. DDP averages gradients


def _ddp_env() -> dict[str, str]:
    return child_env(drop=("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"), OMP_NUM_THREADS="1")


@pytest.mark.slow  # two fresh Python processes importing torch under torchrun: ~10 s on 2 cores
def test_ddp_step_uses_the_mean_of_the_two_gradients(layout: SidLayout, tmp_path: Path) -> None:
    # two references over two processes: one step each, on positions 0 and 1 of epoch 0
    lines = [x for x in layout.train_list.read_text().splitlines() if x.strip() and "/00001_" not in x]
    assert len(lines) == 2
    two = layout.root / "two_refs.txt"
    two.write_text("\n".join(lines) + "\n")
    start = save_safetensors(random_weights(NetworkSpec(width=4), seed=9), tmp_path / "start.safetensors")
    out = tmp_path / "ddp"
    lr, seed = 1e-3, 4
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "seedark", "train", "--data", str(layout.root), "--list", str(two), "--out", str(out)]
    command += ["--weights", str(start), "--patch", "16", "--epochs", "1", "--lr", str(lr), "--seed", str(seed)]
    command += ["--workers", "0", "--device", "cpu", "--save-every", "1", "--val-every", "0", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, env=_ddp_env(), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    # the same two patches, each through a single-process forward/backward from the same start
    config = tiny(out, two, width=None, init_weights=start, seed=seed, data_root=layout.root)
    dataset = TrainingSet(config, read_list(two, layout.root), None)
    names = [name for name, _ in SIDUNet(NetworkSpec(width=4)).named_parameters()]
    grads, losses = [], []
    for position in (0, 1):
        net = net_from(start)
        inp, gt = (torch.from_numpy(np.ascontiguousarray(a))[None] for a in dataset.sample(0, position))
        loss = (net(inp) - gt).abs().mean()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append({name: p.grad.detach().double() for name, p in net.named_parameters()})  # type: ignore[union-attr]
    mean_grad = {k: (grads[0][k] + grads[1][k]) / 2 for k in names}

    ckpt = load_checkpoint(out / "checkpoints" / "epoch-000001")
    assert ckpt.step == 1 and ckpt.state["world_size"] == 2
    group = ckpt.optimizer["param_groups"][0]
    assert group["betas"] == [ADAM_BETA1, ADAM_BETA2] and group["eps"] == ADAM_EPS
    # the epoch's loss is the mean of the two processes' losses
    logged = read_jsonl(out / "train_log.jsonl")
    assert len(logged) == 1
    assert logged[0]["loss"] == pytest.approx(sum(losses) / 2, rel=1e-5)

    start_state = load_weights(start).state
    for pid, name in enumerate(names):
        slots = ckpt.optimizer["state"][pid]
        g = mean_grad[name]
        scale = float(g.abs().max())
        assert scale > 0, name
        # after Adam's first step: m = (1 - beta1) g, v = (1 - beta2) g^2, so m / (1 - beta1) is the gradient used
        used = slots["exp_avg"].double() / (1 - ADAM_BETA1)
        torch.testing.assert_close(used, g, rtol=1e-5, atol=1e-6 * scale, msg=f"{name}: not the mean gradient")
        torch.testing.assert_close(
            slots["exp_avg_sq"].double() / (1 - ADAM_BETA2), g * g, rtol=1e-4, atol=1e-6 * scale * scale
        )
        # and the weights moved by lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps) from the start
        moved = start_state[name].double() - ckpt.weights.state[name].double()
        step = lr * g / (g.abs() + ADAM_EPS)
        clear = g.abs() > 1e-3 * scale  # where float noise cannot flip the sign of g
        torch.testing.assert_close(moved[clear], step[clear], rtol=0, atol=lr * 1e-3, msg=name)
        assert float(moved.abs().max()) <= lr * 1.001, name
