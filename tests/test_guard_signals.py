"""SIGTERM is Ctrl-C: real signals to real ``python -m seedark`` processes, and what they leave behind.

Every test waits for an event the child makes observable (a log line, a request the
local server holds, the child stopping itself in the middle of a write), never for
the clock, then signals it and checks the exit code, the one-line message, and the
files: nothing partial, no hidden temporary, no empty folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from helpers import cli
from helpers.httpserver import FaultyServer
from helpers.rawgen import dark_dng
from helpers.sid_layout import make_sid_dataset
from seedark.cli import signals
from seedark.models.registry import DATA_NAME, INDEX_NAME
from seedark.training.checkpoint import LATEST, MODEL_NAME, OPTIMIZER_NAME, STATE_NAME, load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"
OFFICIAL_SONY_INDEX = ROOT / "tests" / "data" / "official-sony-model.ckpt.index"
TERMINATED = "seedark: terminated (SIGTERM); no partial output was left behind"


def child_env(home: Path, **extra: str) -> dict[str, str]:
    return cli.child_env(drop=("SEEDARK_",), SEEDARK_HOME=str(home), OMP_NUM_THREADS="1", **extra)


def _default_signals() -> None:
    # A shell without job control starts background jobs with SIGINT ignored (and seedark keeps
    # an ignored signal ignored): give the child the dispositions a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Child:
    """A child process whose stderr is read as it comes; ``wait_for`` blocks until a line holds a text."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_signals
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.ended = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, text: str) -> None:
        with self.changed:
            # the timeout only guards against a hang: the wait is for the line
            self.changed.wait_for(lambda: self.ended or any(text in line for line in self.lines), timeout=180)
            assert any(text in line for line in self.lines), f"never saw {text!r}:\n{self.stderr}"

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def finish(self) -> tuple[int, str, str]:
        """Exit code, stdout, stderr once the child has ended."""
        # stdout is small (a path at most): it fits in the pipe until the child has ended
        self.proc.wait(timeout=180)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.reader.join(timeout=60)
        return self.proc.returncode, out, self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children a test starts; any still running at its end (a failed test) are killed."""
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def spawn(children: list[Child], args: list[object], env: dict[str, str], *, code: str | None = None) -> Child:
    """``python -m seedark <args>``, or ``python -c <code> <args>`` for a child that prepares itself first."""
    head = ["-c", code] if code is not None else ["-m", "seedark"]
    child = Child([sys.executable, *head, *[str(a) for a in args]], env)
    children.append(child)
    return child


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries and empty folders anywhere under ``folder``."""
    found = [p for p in folder.rglob("*") if p.name.endswith(".part") and p.name.startswith(".")]
    found += [p for p in folder.rglob("*") if p.is_dir() and not any(p.iterdir())]
    return sorted(str(p.relative_to(folder)) for p in found)


def assert_stopped_by_sigterm(code: int, out: str, err: str) -> None:
    assert code == 143, err
    assert out == ""
    assert err.strip().splitlines()[-1] == TERMINATED, err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- the mechanism


def test_sigterm_raises_keyboard_interrupt_only_while_a_command_runs() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as info, signals.interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(60)  # interrupted by the handler long before
    assert isinstance(info.value, signals.Terminated)
    assert signals.exit_code() == 143 and signals.message() == TERMINATED
    assert signal.getsignal(signal.SIGTERM) is before  # put back
    with pytest.raises(KeyboardInterrupt), signals.interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(60)
    assert signals.exit_code() == 130
    assert signals.message() == "seedark: interrupted; no partial output was left behind"


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with signals.interrupts():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)  # nothing happens
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- enhance


@pytest.mark.slow  # a real process that imports torch (~3-6 s on 2 cores)
def test_sigterm_during_enhance_exits_143_and_leaves_nothing(
    tmp_path: Path, rng: np.random.Generator, children: list[Child]
) -> None:
    raw = dark_dng(tmp_path / "big.dng", rng, (1000, 1500), (500, 900))
    args: list[object] = ["-v", "enhance", raw, "--ratio", "50", "--weights", WEIGHTS, "--tile", "0"]
    args += ["--engine", "pytorch"]
    child = spawn(children, [*args, "--precision", "fp32"], child_env(tmp_path / "home"))
    child.wait_for("tile(s) of")  # -v logs the tile plan just before the network runs (seconds of work)
    child.proc.send_signal(signal.SIGTERM)
    assert_stopped_by_sigterm(*child.finish())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["big.dng"]  # no .png, no .part


# The real command, with its image encoder stopping the process once the first bytes are
# in the hidden temporary: the test signals it there, in the middle of the write.
STOP_MID_WRITE = """
import os, signal, sys
import seedark.io.image as image
from seedark.cli import main

real_encode = image.encode_png

def encode_png(fh, *args, **kwargs):
    fh.write(b"\\x89PNG\\r\\n\\x1a\\n")
    fh.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
    return real_encode(fh, *args, **kwargs)

image.encode_png = encode_png
main(sys.argv[1:])
"""


def stopped_partway(child: Child) -> None:
    """Wait until the child has stopped itself (the kernel reports it: no clock involved)."""
    _, status = os.waitpid(child.proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the child ended instead of stopping:\n{child.stderr}"


@pytest.mark.slow  # a real process that imports torch
def test_sigterm_in_the_middle_of_a_write_removes_the_temporary(
    tmp_path: Path, rng: np.random.Generator, children: list[Child]
) -> None:
    raw = dark_dng(tmp_path / "in" / "night.dng", rng, levels=(500, 900))
    out = tmp_path / "out"
    out.mkdir()
    args: list[object] = [
        "enhance",
        raw,
        "-o",
        out / "night.png",
        "--ratio",
        "50",
        "--weights",
        WEIGHTS,
        "--engine",
        "pytorch",
    ]
    child = spawn(children, args, child_env(tmp_path / "home"), code=STOP_MID_WRITE)
    stopped_partway(child)
    (part,) = out.iterdir()
    assert part.name.startswith(f".night.png.{child.proc.pid}-") and part.name.endswith(".part")
    assert part.stat().st_size == 8
    child.proc.send_signal(signal.SIGTERM)  # pending while the child is stopped...
    child.proc.send_signal(signal.SIGCONT)  # ...and handled as soon as it runs again
    assert_stopped_by_sigterm(*child.finish())
    assert list(out.iterdir()) == []  # neither the image nor its temporary


# --------------------------------------------------------------------------- train


@pytest.mark.slow  # a real process that imports torch and trains a few steps
def test_sigterm_during_training_keeps_only_complete_checkpoints(tmp_path: Path, children: list[Child]) -> None:
    layout = make_sid_dataset(tmp_path / "data", train={1: (10.0, (0.1,))}, test={}, val={})
    run = tmp_path / "run"
    args: list[object] = [
        "train",
        "--data",
        layout.root,
        "--list",
        layout.train_list.name,
        "--out",
        run,
        "--width",
        "4",
    ]
    args += ["--patch", "16", "--epochs", "1000", "--workers", "0", "--device", "cpu", "--save-every", "1"]
    args += ["--log-every", "1", "--val-every", "0", "--seed", "7"]
    child = spawn(children, args, child_env(tmp_path / "home", SEEDARK_OFFLINE="1"))
    child.wait_for("epoch 2/1000: loss")  # epoch 1's checkpoint is written, epoch 2's is being written
    child.proc.send_signal(signal.SIGTERM)
    assert_stopped_by_sigterm(*child.finish())
    checkpoints = run / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert LATEST in names and not [n for n in names if n.startswith(".")], names
    folders = [checkpoints / n for n in names if n != LATEST]
    assert len(folders) >= 1 and all(p.name.startswith("epoch-") for p in folders), names
    for folder in folders:  # every checkpoint folder that exists is complete
        assert sorted(p.name for p in folder.iterdir()) == sorted([MODEL_NAME, OPTIMIZER_NAME, STATE_NAME])
    assert load_checkpoint(checkpoints).path == folders[-1]  # the newest one is what --resume takes
    assert leftovers(run) == []


# --------------------------------------------------------------------------- models download


@pytest.mark.slow  # a real process that imports the model code
def test_sigterm_during_models_download_leaves_no_model_folder(
    tmp_path: Path, server: FaultyServer, children: list[Child]
) -> None:
    """The data request is held by the server until the test has signalled the child."""
    server.add(f"/mirror/sony/{INDEX_NAME}", OFFICIAL_SONY_INDEX.read_bytes())
    release = threading.Event()
    data = server.add(f"/mirror/sony/{DATA_NAME}", b"\0" * 4096, hold=release, hold_times=1)
    home = tmp_path / "home"
    child = spawn(children, ["models", "download", "sony"], child_env(home, SEEDARK_MIRROR=server.url("/mirror")))
    try:
        assert data.held.wait(180), child.stderr  # the child is waiting for the data file
        child.proc.send_signal(signal.SIGTERM)
        assert_stopped_by_sigterm(*child.finish())
    finally:
        release.set()
    models = home / "models"
    # No model in the cache, nothing partial; the model's lock file stays, released.
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == ["models", "models/sony.lock"]
    lock = FileLock(models / "sony.lock")
    lock.acquire(timeout=0)  # released: the next run is not kept waiting
    lock.release()
