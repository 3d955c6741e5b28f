"""seedark batch: folders, failures, collisions, resume, crash isolation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seedark.batch as batch_module
from batchhelpers import crashing_decoder, exiting_decoder
from rawgen import write_dng
from seedark.batch import BatchEvent, plan_jobs, run_batch
from seedark.cli import main
from seedark.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"


def shot(path: Path, rng: np.random.Generator, size: tuple[int, int] = (40, 56), **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dng(path, rng.integers(520, 700, size=size, dtype=np.uint16), **kw)  # type: ignore[arg-type]


@pytest.fixture
def night(tmp_path: Path, rng: np.random.Generator) -> Path:
    """5 good files (mixed-case extensions), a corrupt one, a text file named like a RAW, and a sidecar."""
    folder = tmp_path / "night_shots"
    for i, name in enumerate(["DSC0001.ARW", "DSC0002.arw", "DSC0003.dng", "DSC0004.DNG", "DSC0005.ARW"]):
        shot(folder / name, rng, orientation=6 if i == 2 else 1)
    bad = shot(folder / "DSC0006.ARW", rng)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    (folder / "DSC0007.ARW").write_text("this is not a photo\n" * 30)
    (folder / "notes.txt").write_text("shot list\n")
    return folder


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_done_when_five_good_two_bad_then_resume(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", night, "-o", out, "--weights", WEIGHTS)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [f"DSC000{i}.png" for i in range(1, 6)]
    assert "converted 5, skipped 0, failed 2" in err
    assert f"failed: {night / 'DSC0006.ARW'}: truncated or corrupt" in err
    assert f"failed: {night / 'DSC0007.ARW'}: not a RAW file" in err
    assert "notes.txt" not in err.replace("ignored", "")
    with Image.open(out / "DSC0003.png") as im:
        assert im.size == (40, 56)  # rotated like the camera said
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = run_cli(capsys, "batch", night, "-o", out, "--weights", WEIGHTS)
    assert code == 1
    assert "converted 0, skipped 5, failed 2" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    code, _, err = run_cli(capsys, "batch", night, "-o", out, "--weights", WEIGHTS, "--overwrite", "--ratio", "20")
    assert "converted 5, skipped 0, failed 2" in err and "ratio x20.0" in err


def test_exit_zero_when_nothing_fails(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        shot(tmp_path / "in" / f"a{i}.dng", rng)
    code, _, err = run_cli(capsys, "batch", tmp_path / "in", "--weights", WEIGHTS, "--format", "tiff")
    assert code == 0, err
    assert (tmp_path / "in" / "a0.tif").exists() and (tmp_path / "in" / "a1.tif").exists()
    assert "[1/2] converted a0.dng" in err and "[2/2] converted a1.dng" in err


def test_recursive_mirrors_the_tree(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "walk"
    shot(src / "top.dng", rng)
    shot(src / "park" / "bench.dng", rng)
    shot(src / "park" / "pond" / "duck.DNG", rng)
    code, _, err = run_cli(capsys, "batch", src, "-r", "-o", tmp_path / "out", "--weights", WEIGHTS, "--quiet")
    assert code == 0, err
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert got == ["park/bench.png", "park/pond/duck.png", "top.png"]
    # without -r only the top level is taken
    code, _, err = run_cli(capsys, "batch", src, "-o", tmp_path / "flat", "--weights", WEIGHTS)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["top.png"]


def test_colliding_names_never_overwrite_each_other(tmp_path: Path, rng: np.random.Generator) -> None:
    a = shot(tmp_path / "one" / "IMG_1.ARW", rng)
    b = shot(tmp_path / "one" / "IMG_1.DNG", rng)
    c = shot(tmp_path / "two" / "IMG_1.ARW", rng)
    out = tmp_path / "out"
    report = run_batch([tmp_path / "one", tmp_path / "two"], out, weights=WEIGHTS, isolate=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["IMG_1_arw.png", "IMG_1_arw_2.png", "IMG_1_dng.png"]
    assert {s for s, _, _ in report.converted} == {a, b, c}
    # the mapping is stable, so a second run skips all three
    again = run_batch([tmp_path / "one", tmp_path / "two"], out, weights=WEIGHTS, isolate=False)
    assert len(again.skipped) == 3 and not again.converted


def test_plan_is_deterministic(tmp_path: Path) -> None:
    files = [(tmp_path / "x" / "a.ARW", tmp_path / "x"), (tmp_path / "x" / "a.NEF", tmp_path / "x")]
    first = plan_jobs(files, None, recursive=False, fmt="png")
    assert first == plan_jobs(files, None, recursive=False, fmt="png")
    assert len({dest for _, dest in first}) == 2


def test_interrupted_run_leaves_no_partial_files_and_resumes(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "in"
    for i in range(6):
        shot(src / f"s{i}.dng", rng)
    out = tmp_path / "out"

    def interrupt_after_two(event: BatchEvent) -> None:
        if event.kind == "converted" and event.done == 2:
            raise KeyboardInterrupt

    report = run_batch([src], out, weights=WEIGHTS, on_event=interrupt_after_two)
    assert report.interrupted and not report.ok
    written = sorted(p.name for p in out.iterdir())
    assert 2 <= len(written) < 6
    assert all(n.endswith(".png") and not n.startswith(".") for n in written), written
    for name in written:
        with Image.open(out / name) as im:
            im.load()  # complete, decodable files only
    resumed = run_batch([src], out, weights=WEIGHTS)
    assert len(resumed.skipped) == len(written)
    assert len(resumed.converted) == 6 - len(written)
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}.png" for i in range(6)]


@pytest.mark.parametrize("decoder", [crashing_decoder, exiting_decoder])
def test_decoder_crash_fails_only_that_file(tmp_path: Path, rng: np.random.Generator, decoder: object) -> None:
    src = tmp_path / "in"
    for name in ["a.dng", "b_hostile.dng", "c.dng", "d.dng"]:
        shot(src / name, rng)
    report = run_batch([src], tmp_path / "out", weights=WEIGHTS, decoder=decoder)  # type: ignore[arg-type]
    assert sorted(s.name for s, _, _ in report.converted) == ["a.dng", "c.dng", "d.dng"]
    assert len(report.failed) == 1
    source, reason = report.failed[0]
    assert source.name == "b_hostile.dng" and "decoder crashed" in reason


def test_model_is_loaded_once(tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        shot(tmp_path / "in" / f"m{i}.dng", rng)
    calls = []
    real = batch_module._engine_for

    def counting(*args: object, **kw: object) -> object:
        calls.append(args[0])
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_module, "_engine_for", counting)
    report = run_batch([tmp_path / "in"], weights=WEIGHTS, isolate=False)
    assert len(report.converted) == 4 and calls == ["bayer"]


def test_compare_picture(tmp_path: Path, rng: np.random.Generator) -> None:
    shot(tmp_path / "in" / "c.dng", rng, size=(40, 56))
    report = run_batch([tmp_path / "in"], weights=WEIGHTS, compare=True, isolate=False)
    assert report.ok
    with Image.open(tmp_path / "in" / "c_compare.jpg") as im:
        assert im.size == (56 * 2 + 8, 40)


def test_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(UsageError, match="no RAW files found"):
        run_batch([tmp_path], weights=WEIGHTS)


def test_ctrl_c_on_the_real_command(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "in"
    for i in range(40):
        shot(src / f"n{i:02d}.dng", rng, size=(200, 300))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "seedark", "batch", str(src), "-o", str(out), "--weights", str(WEIGHTS)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.png"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err, err
    done = sorted(out.iterdir())
    assert 0 < len(done) < 40, (done, err)
    assert all(p.suffix == ".png" and not p.name.startswith(".") for p in done), (done, err)
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(done)}" in rerun.stderr, (done, err, rerun.stderr)
    assert len(list(out.glob("*.png"))) == 40


def test_output_folder_that_is_a_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    shot(tmp_path / "in" / "a.dng", rng)
    (tmp_path / "taken").write_text("x")
    code, _, err = run_cli(capsys, "batch", tmp_path / "in", "-o", tmp_path / "taken", "--weights", WEIGHTS)
    assert code == 1 and err.strip() == f"seedark: error: {tmp_path / 'taken'}: output folder is not a folder"
    assert (tmp_path / "taken").read_text() == "x"


@pytest.mark.parametrize("big", [False, True])
def test_auto_tiles_leave_room_for_what_the_batch_holds(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, big: bool
) -> None:
    """Frames decoded ahead and the image being written are memory too; big frames run one stage at a time."""
    for i in range(3):
        shot(tmp_path / "in" / f"r{i}.dng", rng, size=(40, 56))
    if big:
        monkeypatch.setattr(batch_module, "BIG_MOSAIC_BYTES", 0)
    seen: list[int] = []
    real_infer = batch_module.infer

    def spy(prepared: object, engine: object, **kw: object) -> object:
        seen.append(kw["reserve"])  # type: ignore[arg-type]
        return real_infer(prepared, engine, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_module, "infer", spy)
    report = run_batch([tmp_path / "in"], tmp_path / "out", weights=WEIGHTS, bits=16, fmt="tiff")
    assert len(report.converted) == 3
    mosaic, image = 40 * 56 * 2, 40 * 56 * 3 * 2
    if big:
        assert seen == [0, 0, 0]  # nothing decoded ahead, no image being written meanwhile
    else:
        assert seen == [mosaic + image, mosaic + image, image]


def test_heap_is_trimmed_only_after_large_images(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(2):
        shot(tmp_path / "in" / f"t{i}.dng", rng)
    calls: list[int] = []
    monkeypatch.setattr(batch_module, "release_heap", lambda: calls.append(1))
    run_batch([tmp_path / "in"], tmp_path / "small", weights=WEIGHTS)
    assert calls == []  # a full collection costs ~0.1 s: not worth it after small images
    monkeypatch.setattr(batch_module, "TRIM_AFTER_BYTES", 0)
    report = run_batch([tmp_path / "in"], tmp_path / "large", weights=WEIGHTS)
    assert len(report.converted) == 2 and calls == [1, 1]
