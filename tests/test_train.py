"""``seedark train``: the loss goes down, resumes are exact, DDP runs, exports import and enhance."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seedark
from helpers.cli import child_env, run_cli
from helpers.sid_layout import SidLayout, make_sid_dataset
from seedark.errors import SeedarkError, TrainingError, UsageError
from seedark.models.network import NetworkSpec
from seedark.models.weights import load_weights, random_weights, save_safetensors
from seedark.synthesis.noiseprofile import NoiseProfile, save_profile
from seedark.training.checkpoint import export_model, latest_checkpoint, load_checkpoint
from seedark.training.config import TrainConfig
from seedark.training.distributed import EpochSampler
from seedark.training.loop import TrainStatus, train

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(layout: SidLayout, out: Path, **changes: object) -> TrainConfig:
    config = TrainConfig(
        out=out,
        train_list=layout.train_list,
        epochs=4,
        width=4,
        patch=16,
        workers=0,
        save_every=1,
        lr=1e-3,
        val_every=0,
        log_every=1,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_steps_lower_the_loss(tmp_path: Path) -> None:
    layout = make_sid_dataset(tmp_path / "data", train={1: (10.0, (0.1,))}, test={}, val={})
    losses: list[float] = []

    def record(status: TrainStatus) -> None:
        losses.append(status.loss)

    result = train(tiny(layout, tmp_path / "run", epochs=40, save_every=40), progress=record)
    assert len(losses) == 40 == result.steps
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)
    assert [h["epoch"] for h in result.history] == list(range(1, 41))


def test_resume_continues_exactly(layout: SidLayout, tmp_path: Path) -> None:
    straight = train(tiny(layout, tmp_path / "straight"))
    train(tiny(layout, tmp_path / "halves", epochs=2))
    # the second half runs with a data-loader worker: samples do not depend on where they are made
    resumed = train(tiny(layout, tmp_path / "halves", resume=True, workers=1))
    assert resumed.steps == straight.steps == 12
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)  # type: ignore[arg-type]
    assert a.epoch == b.epoch == 4 and a.step == b.step == 12
    assert states_equal(a.weights.state, b.weights.state)
    for pid, slots in a.optimizer["state"].items():
        assert states_equal(slots, b.optimizer["state"][pid])
    assert states_equal(load_weights(straight.model).state, load_weights(resumed.model).state)  # type: ignore[arg-type]
    log_a = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "halves" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in log_a] == [json.loads(x)["loss"] for x in log_b]


def test_checkpoint_format_is_safetensors_and_json(layout: SidLayout, tmp_path: Path) -> None:
    result = train(tiny(layout, tmp_path / "run", epochs=3, keep=2, keep_every=0))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-000002", "epoch-000003", "latest.json"]
    assert latest_checkpoint(checkpoints) == checkpoints / "epoch-000003" == result.checkpoint
    files = sorted(p.name for p in (checkpoints / "epoch-000003").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    state = json.loads((checkpoints / "epoch-000003" / "state.json").read_text())
    assert state["epoch"] == 3 and state["step"] == 9 and state["world_size"] == 1
    assert state["spec"] == {"in_channels": 4, "width": 4, "block": 2}
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["config"]["patch"] == 16 and state["optimizer"]["param_groups"][0]["lr"] == 1e-3
    # the model file is plain seedark weights
    assert load_weights(checkpoints / "epoch-000003" / "model.safetensors").spec == NetworkSpec(4, 4, 2)
    (checkpoints / "epoch-000003" / "state.json").write_text("{}")
    with pytest.raises(TrainingError, match="not a checkpoint"):
        load_checkpoint(checkpoints / "epoch-000003")
    with pytest.raises(TrainingError, match=r"state\.json is missing"):
        load_checkpoint(tmp_path)


def test_refuses_to_overwrite_a_run(layout: SidLayout, tmp_path: Path) -> None:
    train(tiny(layout, tmp_path / "run", epochs=1))
    with pytest.raises(UsageError, match="already holds checkpoints; add --resume"):
        train(tiny(layout, tmp_path / "run", epochs=1))
    with pytest.raises(UsageError, match="nothing to resume"):
        train(tiny(layout, tmp_path / "other", resume=True))
    with pytest.raises(TrainingError, match="width 4, not --width 8"):
        train(tiny(layout, tmp_path / "run", epochs=2, resume=True, width=8))
    finished = train(tiny(layout, tmp_path / "run", epochs=1, resume=True))
    assert finished.steps == 3 and finished.model is not None  # nothing left to do; exported again


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_list": None}, "either a training list"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": -1.0}, "lr must be a number > 0"),
        ({"ratio_min": 400.0}, "ratio-min <= ratio-max"),
        ({"init_model": "sony", "init_weights": Path("x")}, "not both"),
    ],
)
def test_bad_settings(layout: SidLayout, tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        train(tiny(layout, tmp_path / "run", **changes))
    assert not (tmp_path / "run").exists()


def test_learning_rate_schedule(tmp_path: Path) -> None:
    config = TrainConfig(out=tmp_path)
    assert [config.lr_at(e) for e in (1, 2000, 2001, 4000)] == [1e-4, 1e-4, 1e-5, 1e-5]
    assert replace(config, lr_drop_epoch=0).lr_at(3000) == 1e-4


def test_sampler_shards_are_disjoint_and_equal() -> None:
    ranks = [list(EpochSampler(5, 1, 3, rank, 2)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    for epoch in (1, 2):
        positions = sorted(p for r in ranks for e, p in r if e == epoch)
        assert positions == [0, 1, 2, 3, 4, 5]  # position 5 wraps around to the first item


def test_fine_tune_from_weights(layout: SidLayout, tmp_path: Path) -> None:
    start = save_safetensors(random_weights(NetworkSpec(width=4), seed=3), tmp_path / "start.safetensors")
    result = train(tiny(layout, tmp_path / "run", epochs=1, width=None, init_weights=start))
    tuned = load_weights(result.model)  # type: ignore[arg-type]
    assert tuned.spec.width == 4
    assert not states_equal(tuned.state, load_weights(start).state)
    with pytest.raises(UsageError, match="differs from the starting weights"):
        train(tiny(layout, tmp_path / "run2", epochs=1, width=8, init_weights=start))


def test_validation_runs_and_keeps_the_best(layout: SidLayout, tmp_path: Path) -> None:
    result = train(tiny(layout, tmp_path / "run", epochs=2, val_list=layout.val_list, val_every=1))
    assert [v["epoch"] for v in result.validation] == [1, 2]
    assert all(np.isfinite(v["psnr"]) and v["count"] == 1 for v in result.validation)
    lines = (tmp_path / "run" / "validation.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert load_weights(tmp_path / "run" / "model-best.safetensors").spec.width == 4


def test_synthetic_mode(tmp_path: Path, layout: SidLayout, rng: np.random.Generator) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(clean / f"img{k}.png")
    (clean / "raw.ARW").write_bytes((layout.root / "Sony/long/00001_00_10s.ARW").read_bytes())
    profile = save_profile(NoiseProfile(name="Other", k_min=0.5, k_max=2.0), tmp_path / "profile.json")
    losses: list[float] = []
    config = TrainConfig(
        out=tmp_path / "run",
        synthetic=clean,
        epochs=2,
        width=4,
        patch=8,
        workers=0,
        val_every=0,
        ratio_min=50,
        ratio_max=60,
    )
    from seedark.synthesis.noiseprofile import load_profile

    result = train(replace(config, noise_profile=load_profile(profile)), progress=lambda s: losses.append(s.loss))
    assert result.steps == 6 and all(np.isfinite(losses))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["noise_profile"]["name"] == "Other" and saved["synthetic"] == str(clean)


def test_export_imports_and_enhances(layout: SidLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seedark.models import cache as store

    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    result = train(tiny(layout, tmp_path / "run", epochs=1))
    assert result.model == tmp_path / "run" / "model.safetensors"
    exported = export_model(result.checkpoint, tmp_path / "epoch1.safetensors")  # type: ignore[arg-type]
    assert states_equal(load_weights(exported).state, load_weights(result.model).state)
    cached = store.import_model("mine", result.model, unverified=True)
    assert cached.is_file()
    short = layout.root / "Sony/short/10003_00_0.1s.ARW"
    by_name = seedark.enhance(short, ratio=100, model="mine", device="cpu", tile=0)
    by_path = seedark.enhance(short, ratio=100, weights=result.model, device="cpu", tile=0)
    assert by_name.shape == (64, 96, 3)
    np.testing.assert_array_equal(by_name, by_path)


def test_cli_train_resume_import_eval(
    layout: SidLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    common: list[object] = ["--data", layout.root, "--list", "Sony_train_list.txt", "--val-list", "Sony_val_list.txt"]
    common += ["--out", tmp_path / "run", "--width", "4", "--patch", "16", "--workers", "0", "--device", "cpu"]
    common += ["--save-every", "1", "--val-every", "2", "--log-every", "1", "--seed", "7"]
    code, out, err = run_cli(capsys, "train", *common, "--epochs", "1")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "run" / "model.safetensors")
    assert "epoch 1/1: loss" in err
    code, _, err = run_cli(capsys, "train", *common, "--epochs", "2")
    assert code == 2 and "add --resume" in err
    code, out, err = run_cli(capsys, "train", *common, "--epochs", "2", "--resume")
    assert code == 0, err
    assert "resuming" in err and "epoch 2/2: loss" in err and "validation PSNR" in err
    assert load_checkpoint(tmp_path / "run" / "checkpoints").epoch == 2

    code, out, err = run_cli(capsys, "models", "import", "mine", tmp_path / "run" / "model.safetensors", "--unverified")
    assert code == 0, err
    evaluated = ["--list", "Sony_test_list.txt", "--model", "mine", "--device", "cpu", "--out", tmp_path / "eval"]
    code, out, err = run_cli(capsys, "eval", "--data", layout.root, *evaluated)
    assert code == 0, err
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert data["model"] == "mine" and data["count"] == 3

    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "x", "--epochs", "1")
    assert code == 2 and "either a training list" in err


def _ddp_env() -> dict[str, str]:
    return child_env(drop=("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"), OMP_NUM_THREADS="1")


@pytest.mark.slow  # two fresh Python processes importing torch: 8-13 s on 2 cores
def test_torchrun_two_cpu_processes(layout: SidLayout, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "seedark"]
    command += ["train", "--data", str(layout.root), "--list", "Sony_train_list.txt", "--out", str(out), "--width", "4"]
    command += ["--patch", "16", "--epochs", "2", "--workers", "0", "--device", "cpu", "--save-every", "1"]
    command += ["--log-every", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=_ddp_env(), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # 3 references over 2 processes: 2 steps per epoch each, one log line per epoch (rank 0 only)
    assert done.stderr.count("epoch 1/2: loss") == 1
    assert "2 step(s) per epoch on 2 process(es)" in done.stderr
    state = json.loads((out / "checkpoints" / "epoch-000002" / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 4
    trained = load_weights(out / "model.safetensors")
    assert trained.spec.width == 4
    assert done.stdout.strip() == str(out / "model.safetensors")


def test_errors_are_seedark_errors(tmp_path: Path) -> None:
    bad = tmp_path / "list.txt"
    bad.write_text("nonsense\n")
    with pytest.raises(SeedarkError, match="line 1"):
        train(TrainConfig(out=tmp_path / "run", train_list=bad, workers=0))
