"""A first run that never dead-ends: every failure a newcomer meets says what to do next.

Each test runs the command as a user would (``seedark ...`` through the CLI's ``main``, or on a
pseudo-terminal), with no model cached and no internet, and reads the message and the files left.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rawpy

from helpers.cli import child_env, run_cli
from helpers.httpserver import FaultyServer, block_internet, clean_environment, published_model
from helpers.rawgen import dark_dng, dark_dngs
from helpers.terminal import run_on_terminal, screen, terminal
from helpers.tfwriter import write_sid_checkpoint
from seedark.downloads import fetch
from seedark.models import registry
from seedark.models.cache import models_dir
from seedark.models.network import NetworkSpec
from seedark.models.registry import DATA_NAME, INDEX_NAME, ModelRecord
from seedark.models.weights import load_weights, save_safetensors
from seedark.runtime.backends import openvino_installed

FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"
ENGINE = ["--engine", "pytorch", "--device", "cpu"]


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache, no mirror, no internet."""
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    return tmp_path / "home"


@pytest.fixture
def shot(tmp_path: Path, rng: np.random.Generator) -> Path:
    return dark_dng(tmp_path / "night.dng", rng)


# --------------------------------------------------------------------------- the model cannot be had


def test_offline_demo_writes_the_dark_frame_then_fails_with_the_guide(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    out = tmp_path / "demo"
    code, stdout, err = run_cli(capsys, "demo", "-o", out)
    assert code == 1 and stdout == ""
    raw = out / "coffee_dark.dng"
    assert sorted(out.iterdir()) == [raw]  # the sample RAW file, and nothing half made
    with rawpy.imread(str(raw)) as frame:  # a real RAW file to try
        assert frame.raw_image_visible.shape == (400, 600) and frame.raw_pattern is not None
    assert err.startswith("seedark: error: ") and "offline mode (SEEDARK_OFFLINE is set): cannot download" in err
    assert "To install the sony model by hand" in err  # the guide
    assert f"The dark RAW frame is written all the same: {raw}" in err
    assert f"seedark enhance {raw}" in err and f"seedark demo -o {out} --overwrite" in err


def test_a_failed_download_names_every_way_to_get_weights(
    home: Path, server: FaultyServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "RETRY_BASE_DELAY", 0.001)
    monkeypatch.setenv("SEEDARK_MIRROR", server.url("/none"))  # a mirror without the files: 404
    code, _, err = run_cli(capsys, "models", "download", "sony")
    assert code == 1 and "HTTP 404" in err
    guide = err[err.index("To install the sony model by hand") :]
    assert "seedark models import sony <folder>" in guide
    assert "seedark enhance PHOTO --weights PATH" in guide
    assert "seedark models import NAME PATH --unverified" in guide
    assert "SEEDARK_MIRROR=URL, serving URL/sony/<file name>" in guide


def test_a_refused_import_says_what_to_do_next(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    write_sid_checkpoint(mine / "model.ckpt", NetworkSpec(width=4), seed=5)
    digest = hashlib.sha256((mine / INDEX_NAME).read_bytes()).hexdigest()
    code, _, err = run_cli(capsys, "models", "import", "sony", mine)
    assert code == 1 and f"its sha256 is {digest}, expected {registry.MODELS['sony'].files[0].sha256}" in err
    assert f"seedark models import NAME {mine} --unverified" in err  # own weights: a new name
    assert "`seedark models download sony`" in err  # the official ones: where to get them
    # and the step it names works
    code, out, err = run_cli(capsys, "models", "import", "mine", mine, "--unverified")
    assert code == 0 and out.strip() == str(models_dir() / "mine" / "model.safetensors"), err


# --------------------------------------------------------------------------- wrong arguments


def test_enhance_on_a_folder_points_to_batch(tmp_path: Path, shot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "my photos"
    folder.mkdir()
    code, _, err = run_cli(capsys, "enhance", folder, "--weights", FIXTURE)
    assert code == 1
    assert err.strip() == (
        f"seedark: error: {folder}: is a folder, not a RAW file; "
        f"to enhance every RAW file in it, run: seedark batch '{folder}'"
    )


def test_an_output_in_a_missing_folder_suggests_the_folder_form(
    tmp_path: Path, shot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "missing" / "out.jpg"
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE, *ENGINE, "-o", dest)
    assert code == 1 and f"output folder does not exist: {dest.parent}" in err
    hint = f"-o {dest.parent}/ --format jpeg"
    assert hint in err
    # the suggestion works: the folder is made, the picture named after the RAW file
    code, out, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE, *ENGINE, *hint.split())
    assert code == 0, err
    assert out.strip() == str(tmp_path / "missing" / "night.jpg")


def test_usage_errors_come_before_an_existing_output(
    tmp_path: Path, shot: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    shot.with_suffix(".png").write_bytes(b"an earlier result")  # the output exists
    for args, code, words in (
        (["--model", "nope"], 2, "unknown model 'nope'; known models: fuji, sony"),
        (["--weights", tmp_path / "no.ckpt"], 1, "no.ckpt: no such file or folder"),
        (["--weights", FIXTURE / "model.ckpt.meta"], 1, "a .meta file holds the TensorFlow graph"),
        (["--precision", "int8", "--engine", "pytorch"], 1, "int8 runs on the OpenVINO engine"),
        (["--engine", "openvino", "--device", "cuda:1"], 1, "the OpenVINO engine runs on the CPU, not cuda:1"),
        (["--quality", "90"], 2, "--quality is for JPEG only"),
    ):
        got, out, err = run_cli(capsys, "enhance", shot, *args)
        assert (got, out) == (code, ""), err
        assert words in err and "already exists" not in err, err
    # with none of them, the existing output is what is reported
    got, _, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE)
    assert got == 1 and "already exists (use --overwrite" in err
    assert shot.with_suffix(".png").read_bytes() == b"an earlier result"
    # a batch says the same, before it looks at any file
    got, _, err = run_cli(capsys, "batch", shot.parent, "--model", "nope")
    assert got == 2 and "unknown model 'nope'" in err


def test_a_meta_file_as_weights_names_the_folder_and_the_index(
    tmp_path: Path, shot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    (ckpt / "model.ckpt.meta").write_bytes(b"\x0a\x02graph")  # what TF writes beside the weights
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", ckpt / "model.ckpt.meta", *ENGINE, "--ratio", "50")
    assert code == 1
    assert err.strip() == (
        f"seedark: error: {ckpt / 'model.ckpt.meta'}: a .meta file holds the TensorFlow graph, not the weights; "
        f"give the checkpoint's folder ({ckpt}) or its .index file (model.ckpt.index) instead"
    )
    for given in (ckpt, ckpt / "model.ckpt.index"):  # and either works
        code, _, err = run_cli(capsys, "enhance", shot, "--weights", given, *ENGINE, "--ratio", "50", "--overwrite")
        assert code == 0, err


# --------------------------------------------------------------------------- what it says while it runs


def test_a_ratio_outside_the_trained_range_draws_a_warning(
    tmp_path: Path, shot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert registry.MODELS["sony"].ratios == (100.0, 300.0)  # the SID sets: x100, x250, x300
    # the cached sony model's file, as the cache writes it (its name in the metadata)
    sony = save_safetensors(load_weights(FIXTURE), tmp_path / "sony.safetensors", metadata={"seedark_model": "sony"})
    warning = "night.dng: ratio x{:.1f} is outside x100-x300, the range the sony model was trained on"
    for ratio, warned in ((50, True), (100, False), (300, False), (450, True)):
        code, _, err = run_cli(
            capsys, "enhance", shot, "--weights", sony, *ENGINE, "--ratio", ratio, "-q", "--overwrite"
        )
        assert code == 0, err
        assert (warning.format(ratio) in err) is warned, err  # a warning: shown with --quiet too
    # an auto ratio is checked the same way
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", sony, *ENGINE, "--overwrite")
    found = re.search(r"auto ratio x([0-9.]+)", err)
    assert code == 0 and found is not None
    assert (warning.format(float(found.group(1))) in err) is not (100 <= float(found.group(1)) <= 300)
    # weights of unknown origin were trained on who knows what: no warning
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE, *ENGINE, "--ratio", "50", "--overwrite")
    assert code == 0 and "outside" not in err


@pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed")
def test_a_small_frame_on_openvino_says_what_really_ran(
    shot: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="seedark")
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE, "--engine", "openvino", "--ratio", "50")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("seedark: ")]
    fallback = (
        "seedark: a 56x40 frame is too small to be worth compiling for OpenVINO: running on cpu (fp32, pytorch) instead"
    )
    assert lines.index("seedark: running on cpu (fp32, openvino)") < lines.index(fallback), lines


def test_progress_shows_on_a_terminal_that_reports_no_columns(
    tmp_path: Path, rng: np.random.Generator, home: Path
) -> None:
    folder = dark_dngs(tmp_path / "in", rng, ["n0.dng", "n1.dng"])
    args = ("batch", str(folder), "-o", str(tmp_path / "out"), "--weights", str(FIXTURE), "--engine", "pytorch")
    code, lines = run_on_terminal(*args, columns=0, rows=0)
    assert code == 0, lines
    counters = [line for line in lines if line.startswith("batch:")]
    assert counters and re.fullmatch(r"batch: 100% 2/2 \[\S+<\S+, *\S+file/s\]", counters[-1]), lines


def test_a_batch_on_one_terminal_names_each_file_once(tmp_path: Path, rng: np.random.Generator, home: Path) -> None:
    folder = dark_dngs(tmp_path / "in", rng, ["n0.dng", "n1.dng"])
    env = child_env(SEEDARK_HOME=str(home), COLUMNS="150")
    command = [sys.executable, "-m", "seedark", "batch", str(folder), "-o", str(tmp_path / "out")]
    command += ["--weights", str(FIXTURE), "--engine", "pytorch"]
    for quiet in ([], ["-q"]):
        with terminal() as (slave, got):  # stdout and stderr on the one terminal, as in a shell
            proc = subprocess.run(
                [*command, *quiet, "--overwrite"], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
            )
            os.close(slave)
        lines = screen(b"".join(got))
        assert proc.returncode == 0, lines
        for i in range(2):
            written = str(tmp_path / "out" / f"n{i}.png")
            # by its progress line; with --quiet there is none, and stdout names it
            assert sum(written in line for line in lines) == 1, lines
            assert (written in lines) is bool(quiet), lines


# --------------------------------------------------------------------------- cleaning up


def test_models_remove_leaves_no_lock_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "models", "import", "mine", FIXTURE, "--unverified")
    assert code == 0, err
    assert sorted(p.name for p in models_dir().iterdir()) == ["mine", "mine.lock"]  # held while importing
    code, out, err = run_cli(capsys, "models", "remove", "mine")
    assert (code, out) == (0, "removed mine\n"), err
    assert list(models_dir().iterdir()) == []
    # the next writer makes a new lock file and works as before
    code, _, err = run_cli(capsys, "models", "import", "mine", FIXTURE, "--unverified")
    assert code == 0 and (models_dir() / "mine" / "model.safetensors").is_file(), err


@pytest.fixture
def fixture_sony(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FaultyServer) -> ModelRecord:
    """The sony model pinned to a small fixture checkpoint served on 127.0.0.1."""
    ckpt = tmp_path / "official"
    write_sid_checkpoint(ckpt / "model.ckpt", NetworkSpec(width=4), seed=11)
    index, data = (ckpt / INDEX_NAME).read_bytes(), (ckpt / DATA_NAME).read_bytes()
    return published_model(monkeypatch, server, "sony", index, data)


def test_the_cached_model_warns_of_ratios_it_was_not_trained_on(
    home: Path, fixture_sony: ModelRecord, shot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry model as it really reaches the engine: downloaded, converted, cached, loaded."""
    code, _, err = run_cli(capsys, "enhance", shot, *ENGINE, "--ratio", "30")
    assert code == 0, err
    assert "night.dng: ratio x30.0 is outside x100-x300, the range the sony model was trained on" in err
