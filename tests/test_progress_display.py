"""Progress on stderr the way a terminal shows it: bars (tqdm) with log lines around them, never on them.

The command runs with stderr on a real pseudo-terminal (in raw mode, so the bytes read back are the
bytes written), and what a terminal would show is rebuilt from them: a carriage return goes back to
the line's start, ESC[K clears the rest of the line. A log line printed onto a bar's line would
show up glued to the bar's text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import child_env
from helpers.httpserver import FaultyServer, block_internet, clean_environment, published_model
from helpers.rawgen import dark_dngs
from helpers.terminal import run_on_terminal, screen, terminal
from helpers.tfwriter import write_sid_checkpoint
from seedark.cli.display import Progress, write_line
from seedark.downloads import fetch
from seedark.models.network import NetworkSpec
from seedark.models.registry import DATA_NAME, INDEX_NAME, ModelRecord

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"


def shots(folder: Path, rng: np.random.Generator, count: int) -> Path:
    return dark_dngs(folder, rng, [f"n{i}.dng" for i in range(count)])


def batch_command(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seedark", "batch", str(src), "-o", str(out), "--weights", str(WEIGHTS), *extra]


def command_env(home: Path) -> dict[str, str]:
    return child_env(SEEDARK_HOME=str(home), COLUMNS="150")


def test_log_lines_are_printed_above_the_batch_bar_not_on_it(tmp_path: Path, rng: np.random.Generator) -> None:
    src = shots(tmp_path / "in", rng, 3)
    with terminal() as (slave, got):  # stdout and stderr on the one terminal, as in a shell
        proc = subprocess.run(
            batch_command(src, tmp_path / "out"),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=command_env(tmp_path / "home"),
            timeout=300,
        )
        os.close(slave)
    raw = b"".join(got)
    lines = screen(raw)
    assert proc.returncode == 0, lines
    assert b"\r" in raw  # a bar was drawn and redrawn in place: it is a terminal
    # each file's auto-ratio log line (written while the bar was drawn) and its result line, each alone
    for i in range(3):
        assert sum(bool(re.fullmatch(rf"seedark: n{i}\.dng: auto ratio x[0-9.]+", line)) for line in lines) == 1, lines
        assert sum(line.startswith(f"converted n{i}.dng -> ") for line in lines) == 1, lines
        # the path written is named once: by its result line, not again on stdout (the same terminal)
        assert sum(str(tmp_path / "out" / f"n{i}.png") in line for line in lines) == 1, lines
    bars = [line for line in lines if line.startswith("batch:")]
    assert bars and re.match(r"batch: 100%\|[^|]*\| 3/3 \[", bars[-1]), lines
    assert all("seedark" not in bar for bar in bars), bars
    assert lines[-1] == "seedark: converted 3, skipped 0, failed 0", lines


def test_no_carriage_returns_when_stderr_is_a_pipe(tmp_path: Path, rng: np.random.Generator) -> None:
    src = shots(tmp_path / "in", rng, 2)
    proc = subprocess.run(
        batch_command(src, tmp_path / "out"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=command_env(tmp_path / "home"),
        timeout=300,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "\r" not in err and "\x1b" not in err and "%|" not in err  # no bar, no animation
    lines = err.splitlines()
    assert [line.split(" -> ")[0] for line in lines if line.startswith("[")] == [
        "[1/2] converted n0.dng",
        "[2/2] converted n1.dng",
    ], err
    assert lines[-1] == "seedark: converted 2, skipped 0, failed 0"


# --------------------------------------------------------------------------- a download, in this process


@pytest.fixture
def local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FaultyServer) -> Iterator[ModelRecord]:
    """A registry model served by the local server, 20 ms per 64 KiB piece: a download of some 0.4 s."""
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    monkeypatch.setattr(fetch, "RETRY_BASE_DELAY", 0.001)
    ckpt = tmp_path / "ckpt"
    write_sid_checkpoint(ckpt / "model.ckpt", NetworkSpec(width=4), seed=7)
    index, data = (ckpt / INDEX_NAME).read_bytes(), (ckpt / DATA_NAME).read_bytes()
    yield published_model(monkeypatch, server, "tinytest", index, data, chunk_size=65536, chunk_delay=0.02)


def test_a_download_shows_its_bytes_and_speed_on_a_terminal(local_model: ModelRecord) -> None:
    code, lines = run_on_terminal("models", "download", local_model.name)
    assert code == 0, lines
    bars = [line for line in lines if line.startswith(f"downloading {local_model.name}:")]
    size = local_model.download_size
    assert size is not None and bars, lines
    # the last state: every byte of the two files (3 significant digits, SI prefixes), and a speed
    count = re.escape(f"{size / 1e6:.3g}M")
    assert re.fullmatch(
        rf"downloading tinytest: 100%\|[^|]*\| {count}/{count} \[[0-9:<]+, [0-9.]+[kM]?B/s\]", bars[-1]
    ), bars
    # the log lines around it stay whole
    assert any(line.startswith(f"seedark: fetching {DATA_NAME} for the tinytest model from ") for line in lines), lines
    assert any(line.startswith("seedark: the tinytest model is ready: ") for line in lines), lines


def test_quiet_shows_no_bar_on_a_terminal(local_model: ModelRecord) -> None:
    code, lines = run_on_terminal("-q", "models", "download", local_model.name)
    assert code == 0 and lines == [], lines


# --------------------------------------------------------------------------- the bar itself


def draw_on_terminal(draw: Callable[[], None]) -> list[str]:
    with terminal() as (slave, got), open(slave, "w", encoding="utf-8", closefd=False) as stderr:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "stderr", stderr)
            draw()
        stderr.flush()
    return screen(b"".join(got))


def test_training_shows_the_epoch_and_the_loss() -> None:
    def train() -> None:
        bar = Progress("training", " steps", delay=0)
        for step, loss in enumerate([0.5, 0.25, 0.125, 0.0625], start=1):
            bar.label, bar.postfix = f"epoch {(step + 1) // 2}/2", f"loss {loss:.4f}"
            bar(step, 4)

    lines = draw_on_terminal(train)
    assert re.fullmatch(
        r"epoch 2/2: 100%\|[^|]*\| 4/4 \[[0-9:<]+, (?:[0-9.]+steps/s|[0-9.]+s/steps), loss 0\.0625\]", lines[-1]
    ), lines


def test_a_download_started_again_counts_from_zero_and_log_lines_stay_whole() -> None:
    def fetch() -> None:
        bar = Progress("downloading m", "B", delay=0)
        bar(0, 3_000_000)
        bar(2_000_000, 3_000_000)
        write_line("seedark: the server does not support resuming; downloading again from zero")
        bar(0, 3_000_000)  # the .part was dropped: the bar starts again, not a negative update
        bar(3_000_000, 3_000_000)

    lines = draw_on_terminal(fetch)
    assert "seedark: the server does not support resuming; downloading again from zero" in lines, lines
    assert re.fullmatch(r"downloading m: 100%\|[^|]*\| 3\.00M/3\.00M \[[0-9:<]+, [0-9.]+[kMG]?B/s\]", lines[-1]), lines
    assert all(line.startswith(("seedark: ", "downloading m: ")) for line in lines), lines
