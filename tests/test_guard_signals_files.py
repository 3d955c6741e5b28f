"""Nothing lost, nothing left behind, the right reason given: stale temporaries, ``--compare``
under the overwrite rule, full disks, and paths that cannot be RAW files.

Real, not simulated: a writer killed with SIGKILL in the middle of a write, a tmpfs too small
for the image, a symbolic link loop, a FIFO, a character device.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers.cli import child_env, run_cli
from helpers.httpserver import clean_environment
from helpers.rawgen import dark_dng
from seedark import _files
from seedark.pipeline import enhance as enhance_module

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"
DAY = 24 * 3600


def one_error(err: str) -> str:
    """The one error line (after the -v-less info lines, e.g. the device used)."""
    (line,) = [line for line in err.splitlines() if line.startswith("seedark: error:")]
    assert err.strip().endswith(line)
    return line


def enhance_args(raw: Path, out: Path, *extra: object) -> list[object]:
    return ["enhance", raw, "-o", out, "--ratio", "50", "--weights", WEIGHTS, "--device", "cpu", *extra]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clean_environment(monkeypatch, tmp_path / "home")
    return tmp_path / "home"


@pytest.fixture
def fresh_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run sweeps a folder once; here one test process plays several runs."""
    monkeypatch.setattr(_files, "_SWEPT", set())


def parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".part"))


# --------------------------------------------------------------------------- stale temporaries

# A writer that stops itself once 64 KiB of its file are in the hidden temporary.
WRITER = """
import os, signal, sys
from seedark._files import atomic_output

with atomic_output(sys.argv[1]) as fh:
    fh.write(b"x" * 65536)
    fh.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
    fh.write(b"y")
"""


def stopped_writer(final: Path) -> subprocess.Popen[bytes]:
    """A real process in the middle of writing ``final`` (stopped there: the kernel tells us, no clock)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final)], env=child_env())
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), "the writer ended instead of stopping"
    return proc


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_writer_killed_mid_write_leaves_a_part_that_the_next_run_removes(
    tmp_path: Path, rng: np.random.Generator, home: Path, capsys: pytest.CaptureFixture[str], fresh_sweeps: None
) -> None:
    raw = dark_dng(tmp_path / "night.dng", rng, levels=(500, 800))
    out = tmp_path / "out"
    out.mkdir()
    killed = stopped_writer(out / "a.png")
    alive = stopped_writer(out / "b.png")  # a concurrent writer, still at work
    try:
        killed.send_signal(signal.SIGKILL)  # no handler runs: the temporary stays
        assert killed.wait(timeout=60) == -signal.SIGKILL
        (dead_part,) = (p for p in parts(out) if p.startswith(f".a.png.{killed.pid}-"))
        (live_part,) = (p for p in parts(out) if p.startswith(f".b.png.{alive.pid}-"))
        assert (out / dead_part).stat().st_size == 65536

        code, printed, err = run_cli(capsys, *enhance_args(raw, out / "night.png"))  # the next run into the folder
        assert code == 0, err
        assert printed.strip() == str(out / "night.png")
        assert parts(out) == [live_part]  # the dead writer's temporary is gone, the live one's kept
    finally:
        alive.send_signal(signal.SIGCONT)
        alive.wait(timeout=60)
        killed.kill()
        killed.wait()
    assert alive.returncode == 0
    assert (out / "b.png").read_bytes() == b"x" * 65536 + b"y"  # the live writer finished undisturbed
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "night.png"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def other_machine() -> str:
    return "000000" if _files._machine() != "000000" else "000001"


def make_part(folder: Path, name: str, *, age: float = 0.0, is_dir: bool = False) -> Path:
    path = folder / name
    if is_dir:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x")
    else:
        path.write_bytes(b"x")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="only the age rule there")
def test_sweep_rules(tmp_path: Path) -> None:
    me, gone, far = os.getpid(), dead_pid(), other_machine()
    here = _files._machine()
    removed = {
        make_part(tmp_path, f".a.png.{gone}-{here}.0123abcd.part"),  # its writer is dead
        make_part(tmp_path, f".b.png.{gone}-{far}.0123abcd.part", age=2 * DAY),  # old, from elsewhere
        make_part(tmp_path, f".d.png.{me}-{here}.0123abcd.part", age=2 * DAY),  # a day old: its pid was reused
    }
    kept = {
        make_part(tmp_path, f".d.png.{me}-{here}.4567abcd.part"),  # its writer lives
        make_part(tmp_path, f".e.png.{gone}-{far}.0123abcd.part"),  # another machine's: only age tells
        # folders are never removed, not even a checkpoint folder of a dead writer (only named in a warning)
        make_part(tmp_path, f".epoch-000002.{gone}-{here}.0123abcd.part", is_dir=True),
        # without the writer's fields the name is not surely seedark's (0.1.0 named its temporaries so)
        make_part(tmp_path, ".c.png.0123abcd.part", age=2 * DAY),
        make_part(tmp_path, ".f.png.0123abcd.part"),
        make_part(tmp_path, "model.ckpt.data-00000-of-00001.part"),  # a resumable download
        make_part(tmp_path, ".g.png.part", age=2 * DAY),  # not a name seedark makes
        make_part(tmp_path, "h.png", age=2 * DAY),
    }
    assert set(_files.sweep_stale_parts(tmp_path)) == removed
    assert set(tmp_path.iterdir()) == kept


def test_temporary_names_carry_the_writer(tmp_path: Path) -> None:
    name = _files.temp_name(tmp_path / "x.tiff").name
    assert name.startswith(f".x.tiff.{os.getpid()}-{_files._machine()}.") and name.endswith(".part")
    assert _files._PART_NAME.fullmatch(name)["pid"] == str(os.getpid())  # type: ignore[index]


def test_every_kind_of_write_sweeps_its_folder_once(tmp_path: Path, fresh_sweeps: None) -> None:
    stale = make_part(tmp_path, f".a.png.{dead_pid()}-{_files._machine()}.0123abcd.part")
    with _files.atomic_folder(tmp_path / "ckpt") as tmp:
        (tmp / "x").write_bytes(b"1")
    assert not stale.exists()
    stale = make_part(tmp_path, stale.name)
    _files.write_atomic(tmp_path / "y.json", "{}")
    assert stale.exists()  # this process swept the folder already: its own temporaries are never stale
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale.name, "ckpt", "y.json"]


# --------------------------------------------------------------------------- --compare


@pytest.fixture
def shot(tmp_path: Path, rng: np.random.Generator) -> Path:
    return dark_dng(tmp_path / "in" / "night.dng", rng, (160, 240), (500, 900))


def test_compare_is_refused_before_any_work_without_overwrite(
    shot: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "night_compare.jpg").write_bytes(b"mine")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the output was refused")

    monkeypatch.setattr(enhance_module, "decode_raw", no_work)
    code, printed, err = run_cli(capsys, *enhance_args(shot, out / "night.png", "--compare"))
    assert code == 1 and printed == ""
    assert err.strip() == f"seedark: error: {out / 'night_compare.jpg'}: already exists (use --overwrite to replace it)"
    assert sorted(p.name for p in out.iterdir()) == ["night_compare.jpg"]
    assert (out / "night_compare.jpg").read_bytes() == b"mine"


def test_compare_is_replaced_with_overwrite(
    shot: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "night_compare.jpg").write_bytes(b"mine")
    code, _, err = run_cli(capsys, *enhance_args(shot, out / "night.png", "--compare", "--overwrite"))
    assert code == 0, err
    with Image.open(out / "night_compare.jpg") as im:
        assert im.format == "JPEG" and im.size[0] > 2 * 240 and im.size[1] == 160  # before | after
    assert sorted(p.name for p in out.iterdir()) == ["night.png", "night_compare.jpg"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(size)``: a real, mounted file system of ``size`` bytes (root only)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


PAGE = 4096  # tmpfs counts whole pages
# Uncompressed, so the image is surely larger than its comparison picture.
TIFF16_COMPARE = ("--bits", "16", "--compression", "none", "--compare")


@pytest.fixture
def reference(shot: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The 16-bit TIFF and its comparison picture, written where there is room."""
    out = tmp_path / "reference"
    out.mkdir()
    assert run_cli(capsys, *enhance_args(shot, out / "night.tif", *TIFF16_COMPARE))[0] == 0
    return out


def test_compare_is_written_after_the_image_so_a_full_disk_leaves_neither(
    shot: Path, reference: Path, capsys: pytest.CaptureFixture[str], tmpfs: Callable[[int], Path]
) -> None:
    # room for the comparison JPEG, not for the TIFF: written first, the comparison would stay
    size = ((reference / "night_compare.jpg").stat().st_size // PAGE + 2) * PAGE
    assert size < (reference / "night.tif").stat().st_size
    full = tmpfs(size)
    code, printed, err = run_cli(capsys, *enhance_args(shot, full / "night.tif", *TIFF16_COMPARE))
    assert code == 1 and printed == ""
    assert one_error(err) == f"seedark: error: {full / 'night.tif'}: cannot write: No space left on device"
    assert list(full.iterdir()) == []  # no image, no comparison, no temporary


def test_a_failed_comparison_after_the_image_says_the_image_was_written(
    shot: Path, reference: Path, capsys: pytest.CaptureFixture[str], tmpfs: Callable[[int], Path]
) -> None:
    disk = tmpfs(((reference / "night.tif").stat().st_size // PAGE + 2) * PAGE)  # the image and one spare page
    code, printed, err = run_cli(capsys, *enhance_args(shot, disk / "night.tif", *TIFF16_COMPARE))
    assert code == 1 and printed == ""
    assert one_error(err) == (
        f"seedark: error: {disk / 'night_compare.jpg'}: cannot write: No space left on device "
        f"(the enhanced image was written to {disk / 'night.tif'}; only the comparison is missing)"
    )
    assert sorted(p.name for p in disk.iterdir()) == ["night.tif"]
    np.testing.assert_array_equal(tifffile.imread(disk / "night.tif"), tifffile.imread(reference / "night.tif"))


# --------------------------------------------------------------------------- the right reason


def _symlink_loop(t: Path) -> Path:
    os.symlink(t / "loop-b.dng", t / "loop-a.dng")
    os.symlink(t / "loop-a.dng", t / "loop-b.dng")
    return t / "loop-a.dng"


def _dangling(t: Path) -> Path:
    os.symlink(t / "gone.dng", t / "link.dng")
    return t / "link.dng"


def _fifo(t: Path) -> Path:
    os.mkfifo(t / "pipe.dng")
    return t / "pipe.dng"


def _text(t: Path) -> Path:
    (t / "note.dng").write_bytes(b"hello\n")
    return t / "note.dng"


def _just_too_small(t: Path) -> Path:
    (t / "short.dng").write_bytes(b"II*\0" + b"\0" * 59)  # a TIFF header, 63 bytes in all
    return t / "short.dng"


def _device(t: Path) -> Path:
    os.symlink("/dev/zero", t / "zero.dng")
    return t / "zero.dng"


REASONS = {
    "symlink loop": (_symlink_loop, "symbolic link loop (too many levels of symbolic links)"),
    "dangling symlink": (_dangling, "broken symbolic link (what it points to does not exist)"),
    "fifo": (_fifo, "not a regular file (a named pipe (FIFO)), so not a RAW file"),
    "character device": (_device, "not a regular file (a character device), so not a RAW file"),
    "6-byte text file": (_text, "not a RAW file: 6 bytes is too small to be one"),
    "63 bytes": (_just_too_small, "not a RAW file: 63 bytes is too small to be one"),
}


def run_guarded(capsys: pytest.CaptureFixture[str], unblock: Path, *args: object) -> tuple[int, str, str]:
    """:func:`run` in a thread: a command that opened a FIFO would block; then the test fails, not hangs."""
    result: list[tuple[int, str, str]] = []
    worker = threading.Thread(target=lambda: result.append(run_cli(capsys, *args)))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive() and unblock.exists():
        with open(unblock, "wb"):  # the reader gets end-of-file, and the thread ends
            pass
        worker.join()
        pytest.fail(f"{unblock} was opened and blocked the command")
    return result[0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file kinds")
@pytest.mark.parametrize("case", sorted(REASONS))
@pytest.mark.parametrize("command", ["enhance", "info"])
def test_paths_that_cannot_be_raw_files_say_why(
    case: str, command: str, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, reason = REASONS[case]
    src = tmp_path / "src"
    src.mkdir()
    path = make(src)
    args = enhance_args(path, tmp_path / "out.png") if command == "enhance" else ["info", path]
    code, printed, err = run_guarded(capsys, path, *args)
    assert code == 1 and printed == ""
    assert err.strip() == f"seedark: error: {path}: {reason}"
    assert not (tmp_path / "out.png").exists()


def test_importing_a_path_that_does_not_exist_names_that_path(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    for name, extra in (("sony", []), ("mine", ["--unverified"])):
        code, printed, err = run_cli(capsys, "models", "import", name, missing, *extra)
        assert code == 1 and printed == ""
        assert err.strip() == f"seedark: error: {missing}: no such file or folder"
    models = home / "models"
    assert not models.exists() or all(p.suffix == ".lock" for p in models.iterdir())  # no empty model folder
