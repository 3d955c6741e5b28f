"""seedark batch under signals, concurrent runs and colliding names (issue 15, cases 1, 2, 4, 10, 11).

Real signals to real processes, each sent at a point the test observes (an output file, a
line on stdout, a thread waiting), never after a sleep. Every test also checks that no
process is left behind.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

import seedark.pipeline.batch as batch_module
from helpers.batchhelpers import (
    assert_all_gone,
    checking_decoder,
    idle_decoder,
    interrupted_part_way,
    kind,
    maps_torch,
    nearly_full_pipe,
    wait_for,
)
from helpers.cli import child_env
from helpers.pngread import decode_png
from helpers.rawgen import dark_dngs
from seedark.frames.prepare import Prepared, prepare_file
from seedark.pipeline.batch import run_batch
from seedark.pipeline.planning import find_inputs, plan_jobs

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"
SIZE = (40, 56)


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Converted engines go to a cache of this module's own (the commands run inherit it), not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEDARK_HOME", str(tmp_path_factory.mktemp("home")))
        yield


def batch_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "seedark", "batch", *map(str, args), "--weights", str(WEIGHTS)]


def hidden(folder: Path) -> list[str]:
    """Temporaries and anything else hidden: what an interrupted write could leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- case 1 and 11: the decoder process


def start_blocked_batch(tmp_path: Path, rng: np.random.Generator) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The real command, held mid-batch with its decoder process running.

    Its stderr is a pipe with 4 KiB of room and the output folder's name is so long that
    two progress lines do not fit (as in test_batch.py's Ctrl-C test): the batch waits at
    its second line at the latest, so it cannot finish its six files, and the test acts
    once the first output exists (the decoder process has decoded a file by then).
    """
    src = tmp_path / "in"
    dark_dngs(src, rng, [f"n{i}.dng" for i in range(6)], size=SIZE)
    out = tmp_path.joinpath(*["o" * 250] * 9)
    read_end, write_end = nearly_full_pipe()
    try:
        proc = subprocess.Popen(
            batch_command(src, "-o", out), stdout=subprocess.DEVNULL, stderr=write_end, env=child_env()
        )
    finally:
        os.close(write_end)
    try:
        wait_for(lambda: proc.poll() is not None or (out.is_dir() and any(out.glob("*.png"))), "the first output")
        assert proc.poll() is None, "the batch ended before the test could act"
    except BaseException:
        proc.kill()
        os.close(read_end)
        raise
    return proc, read_end, out


def decoder_and_tracker(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The batch's own child processes. Others come and go: OpenVINO's model conversion forks one
    that sends its telemetry (openvino_telemetry), which is not ours to end."""
    children = psutil.Process(proc.pid).children(recursive=True)
    ours = [p for p in children if kind(p) != "other"]
    assert sorted(kind(p) for p in ours) == ["decoder", "resource_tracker"], [p.cmdline() for p in children]
    return ours


def test_sigkill_of_batch_leaves_no_process(tmp_path: Path, rng: np.random.Generator) -> None:
    """SIGKILL (the OOM killer, ``kill -9``, the end of ``systemctl stop``): no handler runs, yet the
    decoder process and the pool's resource_tracker go with the batch instead of waiting for ever.

    The same run shows that the decoder process never imported torch: its libraries are mapped
    into the batch's own process, and not into the decoder's.
    """
    proc, read_end, _ = start_blocked_batch(tmp_path, rng)
    with os.fdopen(read_end, "rb") as stderr:
        try:
            children = decoder_and_tracker(proc)
            (decoder,) = [p for p in children if kind(p) == "decoder"]
            assert maps_torch(psutil.Process(proc.pid)), "the check cannot see torch"
            assert not maps_torch(decoder), "the decoder process imported torch"
        finally:
            proc.kill()
            proc.wait()
        # The tracker may warn on stderr as it ends: read, so that it is never stuck on the full pipe.
        drain = threading.Thread(target=stderr.read, daemon=True)
        drain.start()
        assert_all_gone(children)
        drain.join(timeout=30)
        assert not drain.is_alive(), "someone still holds the batch's stderr"


def test_sigterm_stops_batch_like_ctrl_c(tmp_path: Path, rng: np.random.Generator) -> None:
    """SIGTERM to the batch alone (``kill``, ``timeout``, ``docker stop``): it finishes the image in
    hand, prints its summary, exits 143 and leaves no process and no partial file.

    Needs the command line's SIGTERM handler (seedark.cli.signals); without it, SIGTERM ends
    the process at once, like SIGKILL above.
    """
    proc, read_end, out = start_blocked_batch(tmp_path, rng)
    with os.fdopen(read_end, "rb") as stderr:
        try:
            children = decoder_and_tracker(proc)
            proc.send_signal(signal.SIGTERM)
        except BaseException:
            proc.kill()
            raise
        err = stderr.read().lstrip(b"\0").decode()
    assert proc.wait(timeout=120) == 143, err
    interrupted_part_way(out, err, SIZE)
    assert_all_gone(children)


def test_decoder_process_imports_no_torch_and_leaves_stopping_to_the_batch(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    dark_dngs(tmp_path / "in", rng, ["a.dng", "b.dng"], size=SIZE)
    report = run_batch([tmp_path / "in"], tmp_path / "out", weights=WEIGHTS, decoder=checking_decoder)
    assert not report.failed, report.failed  # checking_decoder says what was wrong
    assert len(report.converted) == 2


def test_decoder_process_starts_with_stop_signals_blocked() -> None:
    """A Ctrl-C while the decoder process imports would print its traceback: it starts with Ctrl-C
    and SIGTERM blocked (inherited), and unblocks them once it ignores them."""
    run = subprocess.run(
        [sys.executable, "-m", "helpers.batchhelpers", "startup-mask"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    starting, now, ignored = ast.literal_eval(run.stdout.strip())
    stop = {signal.SIGINT, signal.SIGTERM}
    assert stop <= set(starting), starting
    assert not stop & set(now) and set(ignored) == stop


def test_decoder_process_ends_when_its_lifeline_does() -> None:
    """The portable half of dying with the parent (no prctl needed): the process reads end-of-file
    on a pipe only its parent can write to, and exits. Here the parent lives on and closes it."""
    ctx = multiprocessing.get_context("spawn")
    lifeline, cut = ctx.Pipe(duplex=False)
    control, child_end = ctx.Pipe()
    proc = ctx.Process(target=idle_decoder, args=(lifeline, child_end))
    proc.start()
    try:

        def answers() -> bool:
            control.send_bytes(b"ping")
            return control.poll(60) and control.recv_bytes() == b"ping"

        assert answers()  # started: decoder_started has run
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(proc.pid, signum)
        assert answers(), "a stop signal ended the decoder process: only the batch decides"
        cut.close()
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


# --------------------------------------------------------------------------- case 4: Ctrl-C at the very end


def test_ctrl_c_while_the_last_image_is_written(tmp_path: Path, rng: np.random.Generator) -> None:
    """Ctrl-C reaches the batch while its main thread waits for the writer to publish the last
    image (the image is complete, still a hidden temporary). The image is published, the summary
    printed, and no thread is killed mid-file."""
    src, out = tmp_path / "in", tmp_path / "out"
    dark_dngs(src, rng, ["n0.dng", "n1.dng"], size=SIZE)
    cmd = [sys.executable, "-m", "helpers.batchhelpers", "hold-last", "n1.png", *batch_command(src, "-o", out)[3:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    try:
        assert proc.stdout is not None
        # stdout also carries each published path (n0.png may come first); the hook's line says when.
        line = proc.stdout.readline()
        while line.endswith(b".png\n"):
            line = proc.stdout.readline()
        if line != b"holding\n":
            proc.kill()
            pytest.fail(f"expected 'holding', got {line!r}: {proc.communicate(timeout=60)[1].decode()}")
        children = [p for p in psutil.Process(proc.pid).children(recursive=True) if kind(p) != "other"]
        assert len(list(out.glob(".n1.png.*.part"))) == 1  # being written
        proc.send_signal(signal.SIGINT)
        _, err_bytes = proc.communicate(timeout=120)
    except BaseException:
        proc.kill()
        raise
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    assert "seedark: converted 2, skipped 0, failed 0 (interrupted" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["n0.png", "n1.png"]
    for name in ("n0.png", "n1.png"):
        assert decode_png(out / name)[1].shape == (*SIZE, 3)
    assert_all_gone(children)


# --------------------------------------------------------------------------- case 10: two batches, one folder


def test_second_batch_into_the_same_folder_counts_the_others_work_as_done(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While this batch infers its first file, another batch (the real command) converts all three.

    This one then counts each as skipped, not failed, and does no more work: the first file's
    output appeared while it was converted (found when publishing), the second's after it was
    decoded (found before inference), the third's before it was decoded.
    """
    src, out = tmp_path / "in", tmp_path / "out"
    dark_dngs(src, rng, ["a.dng", "b.dng", "c.dng"], size=SIZE)
    decoded: list[str] = []
    inferred: list[str] = []
    other: list[subprocess.CompletedProcess[str]] = []
    stamps: dict[str, tuple[int, bytes]] = {}
    real_infer = batch_module.infer

    def decoder(path: Path, ratio: float | None) -> Prepared:
        decoded.append(Path(path).name)
        return prepare_file(path, ratio)

    def infer(prepared: Prepared, engine: object, **kw: object) -> object:
        inferred.append(prepared.path.name)
        if not other:
            other.append(subprocess.run(batch_command(src, "-o", out), capture_output=True, text=True, env=child_env()))
            stamps.update({p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()})
        return real_infer(prepared, engine, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_module, "infer", infer)
    report = run_batch([src], out, weights=WEIGHTS, decoder=decoder, isolate=False)
    assert other[0].returncode == 0 and "converted 3, skipped 0, failed 0" in other[0].stderr, other[0].stderr
    assert not report.failed and not report.converted, report
    assert sorted(s.name for s, _ in report.skipped) == ["a.dng", "b.dng", "c.dng"]
    assert inferred == ["a.dng"] and decoded == ["a.dng", "b.dng"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]  # nothing hidden left
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == stamps


# --------------------------------------------------------------------------- case 2: --compare names


def test_compare_pictures_and_outputs_never_share_a_name(tmp_path: Path, rng: np.random.Generator) -> None:
    """``x_compare.dng``'s output would be ``x.dng``'s comparison picture (as JPEG): the plan renames it
    like any collision, and a name freed by one rename is never taken by another file."""
    folder = tmp_path / "in"
    dark_dngs(folder, rng, ["IMG.ARW", "IMG.DNG", "IMG_arw.dng", "x.dng", "x_compare.dng"], size=SIZE)
    files, _ = find_inputs([folder], recursive=False)
    plain = {s.name: d.name for s, d in plan_jobs(files, None, recursive=False, fmt="jpeg")}
    assert plain == {
        "IMG.ARW": "IMG_arw_2.jpg",  # IMG_arw.jpg is IMG_arw.dng's
        "IMG.DNG": "IMG_dng.jpg",
        "IMG_arw.dng": "IMG_arw.jpg",
        "x.dng": "x.jpg",
        "x_compare.dng": "x_compare.jpg",  # free: no comparison pictures
    }
    planned = {s.name: d.name for s, d in plan_jobs(files, None, recursive=False, fmt="jpeg", compare=True)}
    assert planned == {**plain, "x_compare.dng": "x_compare_dng.jpg"}
    report = run_batch([folder], fmt="jpeg", compare=True, weights=WEIGHTS, isolate=False)
    assert report.ok and len(report.converted) == 5, report
    for name in planned.values():
        with Image.open(folder / name) as im:
            assert im.size == SIZE[::-1], name  # the image itself
        with Image.open(folder / name.replace(".jpg", "_compare.jpg")) as im:
            assert im.size == (SIZE[1] * 2 + 8, SIZE[0]), name  # its side-by-side picture
    assert hidden(folder) == []
    again = run_batch([folder], fmt="jpeg", compare=True, weights=WEIGHTS, isolate=False)
    assert len(again.skipped) == 5 and not again.converted and not again.failed
