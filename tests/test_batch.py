"""seedark batch: folders, failures, collisions, resume, crash isolation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seedark.pipeline.batch as batch_module
import seedark.runtime.engine as engine_module
from helpers.batchhelpers import crashing_decoder, exiting_decoder, interrupted_part_way, nearly_full_pipe
from helpers.cli import child_env, run_cli
from helpers.pngread import decode_png
from helpers.rawgen import dark_dng
from seedark.errors import UsageError
from seedark.pipeline.batch import run_batch
from seedark.pipeline.enhance import enhance_file
from seedark.pipeline.planning import plan_jobs
from seedark.pipeline.report import BatchEvent
from seedark.runtime.engine import load_engine

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Converted engines go to a cache of this module's own (the commands run inherit it), not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEDARK_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture
def night(tmp_path: Path, rng: np.random.Generator) -> Path:
    """5 good files (mixed-case extensions), a corrupt one, a text file named like a RAW, and a sidecar."""
    folder = tmp_path / "night_shots"
    for i, name in enumerate(["DSC0001.ARW", "DSC0002.arw", "DSC0003.dng", "DSC0004.DNG", "DSC0005.ARW"]):
        dark_dng(folder / name, rng, orientation=6 if i == 2 else 1)
    bad = dark_dng(folder / "DSC0006.ARW", rng)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    (folder / "DSC0007.ARW").write_text("this is not a photo\n" * 30)
    (folder / "notes.txt").write_text("shot list\n")
    return folder


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
    assert_same_as_single_files(night, out, tmp_path / "single", ratio="auto")
    code, _, err = run_cli(capsys, "batch", night, "-o", out, "--weights", WEIGHTS, "--overwrite", "--ratio", "20")
    assert_same_as_single_files(night, out, tmp_path / "single20", ratio=20)
    assert "converted 5, skipped 0, failed 2" in err and "ratio x20.0" in err


def assert_same_as_single_files(folder: Path, out: Path, single: Path, ratio: float | str) -> None:
    """Every batch output holds exactly what ``enhance_file`` writes for the same input.

    Same engine, precision and ratio: the decoder process, the writer thread and the
    batch's tile budget must not change a single bit of the result.
    """
    engine = load_engine(WEIGHTS)  # the command's defaults: same device, precision and backend
    single.mkdir()
    for i in range(1, 6):
        source = next(folder.glob(f"DSC000{i}.*"))
        expected = enhance_file(source, single / f"DSC000{i}.png", ratio=ratio, engine=engine)
        got = out / f"DSC000{i}.png"
        chunks, pixels = decode_png(got)  # complete and valid, every CRC checked
        want_chunks, want_pixels = decode_png(expected)
        assert chunks[b"IHDR"] == want_chunks[b"IHDR"] and chunks[b"eXIf"] == want_chunks[b"eXIf"], source
        assert pixels.shape == ((56, 40, 3) if i == 3 else (40, 56, 3))  # DSC0003 is turned upright
        assert len(np.unique(pixels)) > 20, "a real image, not a constant"
        np.testing.assert_array_equal(pixels, want_pixels, err_msg=str(source))
        assert got.read_bytes() == expected.read_bytes(), source


def test_exit_zero_when_nothing_fails(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        dark_dng(tmp_path / "in" / f"a{i}.dng", rng)
    code, _, err = run_cli(capsys, "batch", tmp_path / "in", "--weights", WEIGHTS, "--format", "tiff")
    assert code == 0, err
    assert (tmp_path / "in" / "a0.tif").exists() and (tmp_path / "in" / "a1.tif").exists()
    assert "[1/2] converted a0.dng" in err and "[2/2] converted a1.dng" in err


def test_recursive_mirrors_the_tree(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "walk"
    dark_dng(src / "top.dng", rng)
    dark_dng(src / "park" / "bench.dng", rng)
    dark_dng(src / "park" / "pond" / "duck.DNG", rng)
    code, _, err = run_cli(capsys, "batch", src, "-r", "-o", tmp_path / "out", "--weights", WEIGHTS, "--quiet")
    assert code == 0, err
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert got == ["park/bench.png", "park/pond/duck.png", "top.png"]
    # without -r only the top level is taken
    code, _, err = run_cli(capsys, "batch", src, "-o", tmp_path / "flat", "--weights", WEIGHTS)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["top.png"]


def test_colliding_names_never_overwrite_each_other(tmp_path: Path, rng: np.random.Generator) -> None:
    a = dark_dng(tmp_path / "one" / "IMG_1.ARW", rng)
    b = dark_dng(tmp_path / "one" / "IMG_1.DNG", rng)
    c = dark_dng(tmp_path / "two" / "IMG_1.ARW", rng)
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
        dark_dng(src / f"s{i}.dng", rng)
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
        dark_dng(src / name, rng)
    report = run_batch([src], tmp_path / "out", weights=WEIGHTS, decoder=decoder)  # type: ignore[arg-type]
    assert sorted(s.name for s, _, _ in report.converted) == ["a.dng", "c.dng", "d.dng"]
    assert len(report.failed) == 1
    source, reason = report.failed[0]
    assert source.name == "b_hostile.dng" and "decoder crashed" in reason


def test_model_is_loaded_once(tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        dark_dng(tmp_path / "in" / f"m{i}.dng", rng)
    calls = []
    real = engine_module.engine_for

    def counting(*args: object, **kw: object) -> object:
        calls.append(args[0])
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "engine_for", counting)
    report = run_batch([tmp_path / "in"], weights=WEIGHTS, isolate=False)
    assert len(report.converted) == 4 and calls == ["bayer"]


def test_compare_picture(tmp_path: Path, rng: np.random.Generator) -> None:
    dark_dng(tmp_path / "in" / "c.dng", rng, size=(40, 56))
    report = run_batch([tmp_path / "in"], weights=WEIGHTS, compare=True, isolate=False)
    assert report.ok
    with Image.open(tmp_path / "in" / "c_compare.jpg") as im:
        assert im.size == (56 * 2 + 8, 40)


def test_fifos_and_broken_links_with_raw_names_count_as_failures(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "in"
    src.mkdir()
    dark_dng(src / "good.dng", rng)
    os.mkfifo(src / "pipe.dng")  # opening it would block for ever: it must be refused from its type
    (src / "gone.dng").symlink_to(src / "nowhere.dng")
    report = run_batch([src], tmp_path / "out", weights=WEIGHTS, isolate=False)
    assert [source.name for source, _, _ in report.converted] == ["good.dng"]
    reasons = {Path(source).name: reason for source, reason in report.failed}
    assert set(reasons) == {"pipe.dng", "gone.dng"}
    assert "not a regular file" in reasons["pipe.dng"]
    assert "broken symbolic link" in reasons["gone.dng"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(UsageError, match="no RAW files found"):
        run_batch([tmp_path], weights=WEIGHTS)


def test_ctrl_c_on_the_real_command(tmp_path: Path, rng: np.random.Generator) -> None:
    """Ctrl-C at a point set by the test, not by the clock.

    The command's stderr is a pipe with 4 KiB of room, and the output folder's name is so
    long that two progress lines ("[1/6] converted n0.dng -> <folder>/n0.png ...") do not
    fit in it. So the batch stops at its second progress line at the latest: with at most
    four files published (two more were on their way), it cannot finish the six. Once an
    output exists, the test sends SIGINT, and only then reads stderr.
    """
    src = tmp_path / "in"
    for i in range(6):
        dark_dng(src / f"n{i}.dng", rng)
    out = tmp_path.joinpath(*["o" * 250] * 9)
    assert 2100 < len(str(out)) < 3500  # one progress line: over half of 4 KiB, and written whole
    env = child_env()
    cmd = [sys.executable, "-m", "seedark", "batch", str(src), "-o", str(out), "--weights", str(WEIGHTS)]
    read_end, write_end = nearly_full_pipe()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=write_end, env=env, start_new_session=True)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as stderr:
        try:
            deadline = time.monotonic() + 300  # only a guard against hanging: the wait is for a file
            while not (out.is_dir() and any(out.glob("*.png"))):
                assert proc.poll() is None, "the batch ended before it could be interrupted"
                assert time.monotonic() < deadline, "no output appeared (4 KiB written to stderr before it?)"
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        err = stderr.read().lstrip(b"\0").decode()
    assert proc.wait(timeout=120) == 130, err
    names = interrupted_part_way(out, err, (40, 56))
    done = len(names)
    stamps = {name: (out / name).stat().st_mtime_ns for name in names}
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"seedark: converted {6 - done}, skipped {done}, failed 0" in rerun.stderr, (names, err, rerun.stderr)
    assert sorted(p.name for p in out.iterdir()) == [f"n{i}.png" for i in range(6)]
    assert {name: (out / name).stat().st_mtime_ns for name in names} == stamps  # the done ones were left alone
    for i in range(done, 6):
        assert decode_png(out / f"n{i}.png")[1].shape == (40, 56, 3)


def test_output_folder_that_is_a_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    dark_dng(tmp_path / "in" / "a.dng", rng)
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
        dark_dng(tmp_path / "in" / f"r{i}.dng", rng, size=(40, 56))
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
        dark_dng(tmp_path / "in" / f"t{i}.dng", rng)
    calls: list[int] = []
    monkeypatch.setattr(batch_module, "release_heap", lambda: calls.append(1))
    run_batch([tmp_path / "in"], tmp_path / "small", weights=WEIGHTS)
    assert calls == []  # a full collection costs ~0.1 s: not worth it after small images
    monkeypatch.setattr(batch_module, "TRIM_AFTER_BYTES", 0)
    report = run_batch([tmp_path / "in"], tmp_path / "large", weights=WEIGHTS)
    assert len(report.converted) == 2 and calls == [1, 1]
