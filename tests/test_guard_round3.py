"""Nothing lost, round three (issue 25): sidecars, long names, foreign files, caches and clusters.

Every case is made to happen for real: FIFOs made with ``os.mkfifo``, folders that a real
unprivileged process (uid 65534) cannot read, a tree deeper than PATH_MAX, names the
file system refuses, a cached OpenVINO model damaged on disk, a Ray address nothing
listens on, real SIGINT/SIGTERM to a real ``python -m seedark``. Each test checks the
message the user gets and what is (or is not) left behind. docs/guarantees.md lists them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.cli import child_env, run_cli
from helpers.rawgen import dark_dng
from helpers.sid_layout import make_sid_dataset
from helpers.tfwriter import damaged_copy
from helpers.tmpfs import tmpfs
from seedark import _files
from seedark.io.exifread import read_camera_metadata
from seedark.io.xmp import MAX_XMP_DEPTH, clean_xmp, read_sidecar
from seedark.models.weights import load_weights
from seedark.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"
ENGINE = ("--weights", WEIGHTS, "--device", "cpu")
NOBODY = 65534
DAY = 24 * 3600

RDF = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
)
END = "</rdf:Description></rdf:RDF></x:xmpmeta>"


def packet(keyword: str, inside: str = "") -> bytes:
    """An XMP packet with one keyword, and ``inside`` added to its description."""
    body = f"<dc:subject><rdf:Bag><rdf:li>{keyword}</rdf:li></rdf:Bag></dc:subject>{inside}"
    return f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{RDF}{body}{END}\n<?xpacket end="w"?>'.encode()


def deep_packet(levels: int = 900) -> bytes:
    """A 6 KB packet whose elements nest ``levels`` deep (Python's DOM code recursed per level)."""
    return packet("deep", "<a>" * levels + "</a>" * levels)


def shot(path: Path, seed: int = 0, size: tuple[int, int] = (32, 48), **fields: object) -> Path:
    return dark_dng(path, np.random.default_rng(seed), size=size, levels=(500, 900), **fields)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def fresh_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders count as not swept yet in this process (each write sweeps its folder once per process)."""
    monkeypatch.setattr(_files, "_SWEPT", set())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("SEEDARK_HOME", str(folder))
    return folder


# --------------------------------------------------------------------------- 1. FIFO sidecars

THREE_COMMANDS = """
import json, sys
from seedark.cli import main
for args in json.loads(sys.argv[1]):
    try:
        main(args)
    except SystemExit as exc:
        print("exit", exc.code, flush=True)
"""


def test_a_fifo_named_like_a_sidecar_is_passed_over(tmp_path: Path) -> None:
    """``a.dng.xmp`` a FIFO and ``a.xmp`` a link to another: ``info``, ``enhance`` and ``batch`` (its
    decoder process) finish, with the packet embedded in the RAW. Before, each blocked in open() forever."""
    folder = tmp_path / "in"
    folder.mkdir()
    raw = shot(folder / "a.dng", xmp=packet("embedded"))
    os.mkfifo(folder / "a.dng.xmp")
    os.mkfifo(tmp_path / "elsewhere")
    (folder / "a.xmp").symlink_to(tmp_path / "elsewhere")
    commands = [
        ["info", str(raw)],
        ["enhance", str(raw), "-o", str(tmp_path / "one.png"), "--ratio", "4", *map(str, ENGINE)],
        ["batch", str(folder), "-o", str(tmp_path / "many"), "--ratio", "4", *map(str, ENGINE)],
    ]
    done = subprocess.run(
        [sys.executable, "-c", THREE_COMMANDS, json.dumps(commands)],
        env=child_env(SEEDARK_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert [line for line in done.stdout.splitlines() if line.startswith("exit")] == ["exit 0"] * 3, done.stderr
    assert re.search(r"^camera: +Sony ILCE-7SM2$", done.stdout, re.MULTILINE)
    for output in (tmp_path / "one.png", tmp_path / "many" / "a.png"):
        assert output.read_bytes().count(b"<rdf:li>embedded</rdf:li>") == 1
    # a regular sidecar after the FIFO is still found
    (folder / "a.xmp").unlink()
    (folder / "a.xmp").write_bytes(packet("sidecar"))
    assert b"<rdf:li>sidecar</rdf:li>" in (read_sidecar(raw) or b"")


# --------------------------------------------------------------------------- 2. and 14. XMP packets


def test_a_packet_nested_900_deep_is_dropped_alone_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: RecursionError, caught by the metadata reader's safety net, which then dropped
    everything: "camera: unknown", and outputs without Make, Model, Artist, GPS or XMP."""
    assert len(deep_packet()) < 7000
    embedded = shot(tmp_path / "e.dng", xmp=deep_packet())
    meta = read_camera_metadata(embedded)
    assert (meta.make, meta.model, meta.xmp) == ("Sony", "ILCE-7SM2", None)
    capsys.readouterr()

    raw = shot(tmp_path / "s.dng", seed=1, xmp=packet("embedded"))
    (tmp_path / "s.dng.xmp").write_bytes(deep_packet())
    code, out, err = run_cli(capsys, "info", raw)
    assert code == 0 and re.search(r"^camera: +Sony ILCE-7SM2$", out, re.MULTILINE)
    sidecar = tmp_path / "s.dng.xmp"
    assert lines(err) == [f"seedark: {sidecar}: XMP packet left out: elements nested 903 deep (at most 100)"]
    # a real command, its stderr a real fd 2: the warning comes while LibRaw's messages on fd 2 are
    # captured (the metadata is read from the file LibRaw has open), and is held until they are not
    command = [sys.executable, "-m", "seedark", "enhance", str(raw), "-o", str(tmp_path / "s.png"), "--ratio", "4"]
    done = subprocess.run(
        [*command, *map(str, ENGINE), "-q"],
        env=child_env(SEEDARK_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and lines(done.stderr) == lines(err), done.stderr
    with Image.open(tmp_path / "s.png") as im:
        exif = im.getexif()
        assert (exif[271], exif[272]) == ("Sony", "ILCE-7SM2")  # Make, Model
    assert b"<rdf:li>embedded</rdf:li>" in (tmp_path / "s.png").read_bytes()  # the next packet in line


def test_the_depth_limit_keeps_real_packets() -> None:
    assert clean_xmp(packet("ok", "<a>" * (MAX_XMP_DEPTH - 5) + "</a>" * (MAX_XMP_DEPTH - 5)))
    assert clean_xmp(packet("no", "<a>" * MAX_XMP_DEPTH + "</a>" * MAX_XMP_DEPTH)) is None


def test_an_xpacket_trailer_inside_the_content_is_not_copied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the output packet had two ``<?xpacket end?>`` trailers, the first one inside it."""
    hostile = packet("pi", '<?xpacket end="w"?><?other x?>')
    cleaned = clean_xmp(hostile) or b""
    assert cleaned.count(b"<?xpacket end=") == 1 and cleaned.endswith(b'<?xpacket end="w"?>')
    assert b"<?other" not in cleaned and b"<rdf:li>pi</rdf:li>" in cleaned
    raw = shot(tmp_path / "p.dng", xmp=hostile)
    code, _, err = run_cli(capsys, "enhance", raw, "-o", tmp_path / "p.png", "--ratio", "4", *ENGINE)
    assert code == 0, err
    data = (tmp_path / "p.png").read_bytes()
    assert data.count(b"<?xpacket end=") == 1 and data.count(b"<?xpacket begin=") == 1


# --------------------------------------------------------------------------- 3. and 9. long names


def test_an_output_name_too_long_fails_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: ``internal error: OSError [Errno 36]`` while the batch was planned, no summary."""
    folder = tmp_path / "in"
    folder.mkdir()
    long_stem = "L" * 220
    shot(folder / f"{long_stem}.dng")
    shot(folder / "b.dng", seed=1)
    suffix = "_" * 40
    out = tmp_path / "out"
    code, printed, err = run_cli(capsys, "batch", folder, "-o", out, "--suffix", suffix, "--ratio", "4", *ENGINE)
    name = f"{long_stem}{suffix}.png"
    assert code == 1
    assert "seedark: converted 1, skipped 0, failed 1" in err
    assert (
        f"seedark: failed: {folder / f'{long_stem}.dng'}: {out / name}: "
        "file name too long: 264 bytes, the file system takes at most 255"
    ) in err
    assert "internal error" not in err and printed.split() == [str(out / f"b{suffix}.png")]
    assert sorted(p.name for p in out.iterdir()) == [f"b{suffix}.png"] and len(name.encode()) == 264

    source = folder / f"{long_stem}.dng"
    code, printed, err = run_cli(capsys, "enhance", source, "-o", f"{out}/", "--suffix", suffix, *ENGINE)
    assert code == 1 and printed == ""
    assert lines(err) == [
        f"seedark: error: {out / name}: file name too long: 264 bytes, the file system takes at most 255"
    ]


def test_a_name_of_255_bytes_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "File name too long" for names of 224-255 bytes: the temporary added 30 bytes."""
    raw = shot(tmp_path / "a.dng")
    target = tmp_path / ("n" * 251 + ".png")
    code, printed, err = run_cli(capsys, "enhance", raw, "-o", target, "--ratio", "4", *ENGINE)
    assert code == 0, err
    assert printed.strip() == str(target) and len(target.name.encode()) == 255
    with Image.open(target) as im:
        assert im.size == (48, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dng", target.name]  # no temporary left
    # the temporary's name is cut short, never its writer fields (which the sweep reads)
    tmp = _files.temp_name(target)
    assert len(tmp.name.encode()) == 255
    match = _files._PART_NAME.fullmatch(tmp.name)
    assert match is not None and match["pid"] == str(os.getpid()) and match["machine"] == _files._machine()
    multibyte = _files.temp_name(tmp_path / ("é" * 125 + ".png"))  # 254 bytes: cut between characters
    assert len(multibyte.name.encode("utf-8")) <= 255 and _files._PART_NAME.fullmatch(multibyte.name)


# --------------------------------------------------------------------------- 4. and 13. folders that cannot be read


# The interpreter lives under /root, where uid 65534 cannot go: it cannot be started as that user,
# nor can the batch's decoder process, so the command runs in this process (``isolate=False``, the
# decoder in the main process) after a first run as root has imported everything it needs.
AS_NOBODY = """
import contextlib, functools, io, os, sys
import psutil, resource  # noqa: F401 - read lazily, where the first run may not have gone
import seedark.pipeline.batch as batch
from seedark.cli import main
batch.run_batch = functools.partial(batch.run_batch, isolate=False)
warm, weights = sys.argv[1], sys.argv[2]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        # --overwrite: a run after the first still converts its frame, and so imports what that needs
        warm_out = os.path.join(warm, "out")
        main(["batch", warm, "-o", warm_out, "--ratio", "4", "--weights", weights, "--device", "cpu", "--overwrite"])
    except SystemExit:
        pass
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
main(sys.argv[3:])
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder under /tmp that uid 65534 can reach (pytest's tmp_path is private to root)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("running as another user needs root")
    folder = Path(tempfile.mkdtemp(prefix="seedark-round3-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def as_nobody(shared: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``seedark ARGS`` run by uid 65534, which root's private folders keep out."""
    home, warm = shared / "home", shared / "warm"
    if not warm.exists():
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        warm.mkdir()
        shot(warm / "w.dng", seed=9)
    env = child_env(HOME=str(home), SEEDARK_HOME=str(home))
    command = [sys.executable, "-c", AS_NOBODY, str(warm), str(WEIGHTS), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_folders_that_cannot_be_read_count_as_failures(shared_dir: Path) -> None:
    """Before: ``batch -r`` left out the RAW files of an unreadable subfolder and said ``"ok": true``;
    an unreadable path given by name was ``internal error: PermissionError``."""
    top = shared_dir / "top"
    (top / "open").mkdir(parents=True)
    (top / "locked").mkdir()
    shot(top / "open" / "b.dng").chmod(0o644)
    hidden = shot(top / "locked" / "a.dng", seed=1)
    (top / "locked").chmod(0o700)  # root's: uid 65534 can neither list nor enter it
    out = shared_dir / "out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)

    done = as_nobody(shared_dir, "batch", top, "-r", "-o", out, "--ratio", "4", *ENGINE, "--json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] is False and summary["counts"] == {"converted": 1, "skipped": 0, "failed": 1, "ignored": 0}
    reason = "cannot read this folder (permission denied): the RAW files in it, if any, are not converted"
    assert summary["failed"] == [{"source": str(top / "locked"), "reason": reason}]
    assert f"seedark: failed: {top / 'locked'}: {reason}" in done.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["open/b.png"]

    done = as_nobody(shared_dir, "batch", hidden, top / "open" / "b.dng", "-o", out, "--ratio", "4", *ENGINE)
    assert done.returncode == 1, done.stderr
    assert "seedark: converted 1, skipped 0, failed 1" in done.stderr
    assert f"seedark: failed: {hidden}: permission denied" in done.stderr and "internal error" not in done.stderr


def test_a_tree_deeper_than_path_max_counts_as_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: ``internal error: OSError``. The folders are made relative to each other (``dir_fd``)."""
    top = tmp_path / "top"
    top.mkdir()
    shot(top / "near.dng")
    data = shot(tmp_path / "deep.dng", seed=2).read_bytes()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(24):  # 24 x 201 bytes: past the 4096 of PATH_MAX
            os.mkdir("d" * 200, dir_fd=fd)
            deeper = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        out = os.open("deep.dng", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    try:
        code, printed, err = run_cli(capsys, "batch", top, "-r", "-o", tmp_path / "out", "--ratio", "4", *ENGINE)
    finally:
        shutil.rmtree(top)  # fd-based: paths this long are fine
    assert code == 1 and "internal error" not in err
    assert "seedark: converted 1, skipped 0, failed 1" in err
    failed = [line for line in lines(err) if line.startswith("seedark: failed: ")]
    assert len(failed) == 1 and failed[0].endswith(
        ": cannot read this folder (its path is longer than the system allows): "
        "the RAW files in it, if any, are not converted"
    )
    assert len(failed[0].split(": ")[2]) > 4096 - 1 and printed.split() == [str(tmp_path / "out" / "near.png")]


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_dir: Path
) -> None:
    """Before: every file was decoded and run through the network, then failed with PermissionError."""
    folder = tmp_path / "in"
    folder.mkdir()
    shot(folder / "a.dng")
    shot(folder / "b.dng", seed=1)
    (tmp_path / "plain").write_text("a file, not a folder")
    code, printed, err = run_cli(capsys, "batch", folder, "-o", tmp_path / "plain" / "out", *ENGINE)
    assert code == 1 and printed == ""
    plain = tmp_path / "plain"
    assert lines(err) == [  # one line: no file was tried, so no summary either
        f"seedark: error: {plain / 'out'}: cannot create the output folder: {plain} is not a folder"
    ]
    # a real unprivileged user and a folder it may not write in
    (shared_dir / "in").mkdir()
    shot(shared_dir / "in" / "a.dng").chmod(0o644)
    denied = shared_dir / "root-only"
    denied.mkdir(mode=0o755)
    done = as_nobody(shared_dir, "batch", shared_dir / "in", "-o", denied / "new", *ENGINE)
    assert done.returncode == 1
    assert lines(done.stderr) == [
        f"seedark: error: {denied / 'new'}: cannot create the output folder: {denied} is not writable"
    ]
    assert list(denied.iterdir()) == []


# --------------------------------------------------------------------------- 5. the stale-temporary sweep


def test_the_sweep_removes_only_seedarks_own_temporaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh_sweeps: None
) -> None:
    """Before: anything named ``.<x>.<8 hex>.part`` a day old went, folders included, recursively."""
    raw = shot(tmp_path / "a.dng")
    out = tmp_path / "out"
    out.mkdir()
    then = time.time() - 2 * DAY
    mine = out / ".notes.deadbeef.part"  # a user's file: no writer fields
    mine.write_text("keep me")
    album = out / ".album.12345678.part"  # a user's folder
    (album / "inner").mkdir(parents=True)
    (album / "inner" / "photo.jpg").write_bytes(b"precious")
    twin = out / f".album.{os.getpid() + 1}-000000.0123abcd.part"  # a folder even named exactly like ours
    twin.mkdir()
    (twin / "x").write_bytes(b"precious too")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".a.png.{gone.stdout.strip()}-{_files._machine()}.0123abcd.part"  # a killed writer's
    stale.write_bytes(b"half an image")
    for path in (mine, album, twin, stale):
        os.utime(path, (then, then))
    code, _, err = run_cli(capsys, "enhance", raw, "-o", out / "a.png", "--ratio", "4", *ENGINE, "-q")
    assert code == 0, err
    assert not stale.exists()
    assert mine.read_text() == "keep me" and (album / "inner" / "photo.jpg").read_bytes() == b"precious"
    assert (twin / "x").read_bytes() == b"precious too"
    assert lines(err) == [
        f"seedark: removed 1 temporary file(s) left in {out} by an interrupted run: {stale.name}",
        f"seedark: left 1 folder(s) in {out} named like an interrupted run's temporary "
        f"(remove them if no seedark is writing there): {twin.name}",
    ]


# --------------------------------------------------------------------------- 6. the OpenVINO engine cache


def _ov_entry(home: Path) -> Path:
    folders = (home / "engines").glob("openvino-*/*")
    entries = [p for p in folders if p.name not in ("compiled", "sources") and p.is_dir()]
    assert len(entries) == 1, entries
    return entries[0]


def test_a_damaged_openvino_cache_is_converted_again(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a same-size corruption of ``model.bin`` gave silently wrong images, and a garbage
    ``model.xml`` printed OpenVINO's parser lines on stderr even under ``-q``."""
    pytest.importorskip("openvino")
    from seedark.runtime.ircache import DIGEST_NAME, ir_digest

    raw = shot(tmp_path / "big.dng", size=(1024, 1024))  # 512x512 packed: OpenVINO runs it
    args = ("enhance", raw, "--ratio", "4", "--weights", WEIGHTS, "--device", "cpu", "--engine", "openvino")
    code, _, err = run_cli(capsys, *args, "-o", tmp_path / "first.png", "-q")
    assert code == 0 and err == "", err
    entry = _ov_entry(home)
    assert (entry / DIGEST_NAME).read_text().strip() == ir_digest(entry)

    def damaged(name: str, data: bytes | None = None) -> None:
        path = entry / name
        if data is None:  # the same size, a run of weights overwritten
            data = bytearray(path.read_bytes())
            data[len(data) // 2 : len(data) // 2 + 4096] = b"\x7f" * 4096
        path.write_bytes(bytes(data))
        shutil.rmtree(entry.parent / "compiled", ignore_errors=True)  # nothing compiled from the good one

    warning = f"seedark: the OpenVINO model cached in {entry} fails its checksum (damaged?); converting it again"
    for n, (name, data) in enumerate([("model.bin", None), ("model.xml", b"garbage\x00\x01 not xml")]):
        damaged(name, data)
        code, _, err = run_cli(capsys, *args, "-o", tmp_path / f"again{n}.png", "-q")
        assert code == 0, err
        assert (tmp_path / f"again{n}.png").read_bytes() == (tmp_path / "first.png").read_bytes()
        assert lines(err) == [warning]
        assert (entry / DIGEST_NAME).read_text().strip() == ir_digest(entry)  # the entry was replaced


def test_openvinos_own_messages_are_captured(
    tmp_path: Path, home: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``model.xml`` that passes its checksum but that OpenVINO cannot read: its parser's lines
    (written on fd 2 by C++ code) never reach the terminal; the model is converted again."""
    pytest.importorskip("openvino")
    # seedark's own log lines go to pytest's log capture, not to stderr (an earlier CLI test may have set a handler)
    monkeypatch.setattr(logging.getLogger("seedark"), "handlers", [])
    monkeypatch.setattr(logging.getLogger("seedark"), "propagate", True)
    from seedark.runtime.backends import OpenVINOBackend
    from seedark.runtime.ircache import write_ir_digest

    weights = load_weights(WEIGHTS)
    tile = np.random.default_rng(5).random((32, 32, 4), dtype=np.float32) * 0.2
    first = np.zeros((64, 64, 3), np.float32)
    OpenVINOBackend(weights, "fp32", persist=True).run_tile(tile, first, 0, 0)
    entry = _ov_entry(home)
    (entry / "model.xml").write_bytes(b"garbage\x00\x01 not xml")
    write_ir_digest(entry)
    capfd.readouterr()
    again = np.zeros_like(first)
    OpenVINOBackend(weights, "fp32", persist=True).run_tile(tile, again, 0, 0)
    assert capfd.readouterr().err == ""
    np.testing.assert_array_equal(again, first)
    assert first.max() > 0


# --------------------------------------------------------------------------- 7. a Ray head that is not there


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


def _cluster_batch(tmp_path: Path, timeout: str) -> tuple[list[str], dict[str, str]]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    shot(folder / "a.dng")
    command = [sys.executable, "-m", "seedark", "batch", str(folder), "-o", str(tmp_path / "out")]
    command += ["--weights", str(WEIGHTS), "--device", "cpu", "--cluster", "ray"]
    env = child_env(
        RAY_ADDRESS=_dead_address(),
        SEEDARK_RAY_CONNECT_TIMEOUT=timeout,
        SEEDARK_HOME=str(tmp_path / "home"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    return command, env


def test_a_dead_ray_head_is_given_up_after_the_connect_timeout(tmp_path: Path) -> None:
    """Before: Ray retried a dead address for about 820 s, without a word."""
    pytest.importorskip("ray")
    command, env = _cluster_batch(tmp_path, "2")
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert lines(done.stderr) == [
        f"seedark: error: cannot connect to the Ray cluster at {env['RAY_ADDRESS']}: no answer within 2 s "
        "(Connection refused); is its head running? (SEEDARK_RAY_CONNECT_TIMEOUT sets how long to wait)"
    ]
    assert time.monotonic() - started < 90  # imports included; Ray alone took 820 s
    assert not (tmp_path / "out").exists()


def _ray_loaded(pid: int) -> bool:
    try:
        return "_raylet" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the child load Ray")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_a_connecting_cluster_batch(tmp_path: Path, signum: int, code: int) -> None:
    """Before: Ctrl-C was ignored while Ray connected, and SIGTERM gave exit 15 without a word."""
    pytest.importorskip("ray")
    command, env = _cluster_batch(tmp_path, "300")
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        while not _ray_loaded(proc.pid) and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # into the wait for the head
        started = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    summary = "converted 0, skipped 0, failed 0 (interrupted: run the same command again to continue)"
    assert lines(err) == [f"seedark: {summary}"]
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- 8. --weights FOLDER


def test_weights_come_from_the_folder_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A copied folder whose ``checkpoint`` file names the original by its absolute path: the copy's
    own files are read (before: the original's, so a damaged copy still "worked"), and ``-v`` says which."""
    original = tmp_path / "original"
    shutil.copytree(WEIGHTS, original)
    (original / "checkpoint").write_text(
        f'model_checkpoint_path: "{original / "model.ckpt"}"\nall_model_checkpoint_paths: "{original / "model.ckpt"}"\n'
    )
    copy = damaged_copy(original, tmp_path / "copy", at=1 / 2, mask=0xFF)
    data = copy / "model.ckpt.data-00000-of-00001"
    raw = shot(tmp_path / "a.dng")

    code, _, err = run_cli(capsys, "enhance", raw, "-o", tmp_path / "a.png", "--weights", copy, "--device", "cpu", "-v")
    assert code == 1 and not (tmp_path / "a.png").exists()
    assert f"seedark: weights: reading {copy / 'model.ckpt.index'}" in err
    assert f"seedark: error: {data}: tensor " in err and "fails its CRC32C check" in err
    assert str(original) not in err

    shutil.copy(WEIGHTS / "model.ckpt.data-00000-of-00001", data)  # mended: the copy's files work
    code, _, err = run_cli(capsys, "enhance", raw, "-o", tmp_path / "a.png", "--weights", copy, "--device", "cpu", "-v")
    assert code == 0, err
    assert f"seedark: weights: reading {copy / 'model.ckpt.index'}" in err
    assert f"seedark: weights: reading {data}" in err and str(original) not in err
    assert load_weights(copy).source == copy / "model.ckpt"


# --------------------------------------------------------------------------- 10. and 11. the demo


def test_a_demo_ratio_below_one_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: ``internal error: ValueError: lam value too large`` and an empty folder left."""
    out = tmp_path / "demo"
    for ratio in ("1e-16", "0.5"):
        code, printed, err = run_cli(capsys, "demo", "-o", out, "--ratio", ratio)
        assert code == 2 and printed == ""
        assert lines(err) == [
            f"seedark: error: the demo's ratio says how many times too short the exposure is: at least 1, got {ratio}"
        ]
    assert not out.exists()


def test_a_failed_demo_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A demo that fails before its first file is written (here a real full disk: the dark DNG,
    about 480 kB, does not fit a 64 kB tmpfs) removes the folders it made, as ``enhance -o new/``
    does; a folder that was there stays. (Offline, the demo still writes its DNG: tests/test_first_run.py.)"""
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    with tmpfs(tmp_path / "disk", 64 << 10) as disk:
        code, printed, err = run_cli(capsys, "demo", "-o", disk / "new" / "deeper")
        assert (
            code == 1 and printed == "" and err.startswith("seedark: error: ") and "No space left on device" in err
        ), err
        assert list(disk.iterdir()) == []
        (disk / "kept").mkdir()
        code, _, err = run_cli(capsys, "demo", "-o", disk / "kept")
        assert code == 1 and "No space left on device" in err and list((disk / "kept").iterdir()) == []


# --------------------------------------------------------------------------- 12. and 16. eval


@pytest.fixture
def two_of_a_name(tmp_path: Path) -> Path:
    """A list of two pairs whose dark files share a name, in two folders (two datasets' frames)."""
    one = make_sid_dataset(tmp_path / "sid", test={10003: (10.0, (0.1,))})
    two = make_sid_dataset(tmp_path / "other", test={10003: (10.0, (0.1,))}, seed=7)
    (one.root / "Other" / "short").mkdir(parents=True)
    shutil.copy(two.root / "Sony" / "short" / "10003_00_0.1s.ARW", one.root / "Other" / "short")
    listing = one.root / "two.txt"
    listing.write_text(
        "./Sony/short/10003_00_0.1s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9\n"
        "./Other/short/10003_00_0.1s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9\n"
    )
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        (one.root / f"only{n}.txt").write_text(line + "\n")
    return listing


def test_eval_images_of_a_shared_name_are_kept_apart(two_of_a_name: Path, tmp_path: Path) -> None:
    """Before: the second image silently replaced the first."""
    root = two_of_a_name.parent
    args = {"weights": WEIGHTS, "device": "cpu", "tile": 0, "save_images": True}
    report = evaluate(two_of_a_name, out_dir=tmp_path / "both", **args)  # type: ignore[arg-type]
    first, second = tmp_path / "both" / "10003_00_0.1s_1.png", tmp_path / "both" / "10003_00_0.1s_2.png"
    assert [s.output for s in report.scores] == [first, second]
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == sorted(
        [first.name, second.name, "results.csv", "results.json"]
    )
    for n, image in enumerate((first, second), 1):  # each is what a run of its pair alone writes
        alone = evaluate(root / f"only{n}.txt", out_dir=tmp_path / f"alone{n}", **args)  # type: ignore[arg-type]
        assert alone.scores[0].output == tmp_path / f"alone{n}" / "10003_00_0.1s.png"
        assert image.read_bytes() == alone.scores[0].output.read_bytes()
    assert first.read_bytes() != second.read_bytes()


def test_eval_never_replaces_an_image_without_overwrite(
    two_of_a_name: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an existing ``<stem>.png`` in ``--out`` was replaced."""
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / "10003_00_0.1s.png"
    theirs.write_bytes(b"someone's picture")
    base = ("eval", "--list", two_of_a_name.parent / "only1.txt", "--out", out, "--save-images", *ENGINE, "--tile", "0")
    code, printed, err = run_cli(capsys, *base)
    assert code == 1 and printed == ""
    assert lines(err) == [f"seedark: error: {theirs}: already exists (use --overwrite to replace it)"]
    assert theirs.read_bytes() == b"someone's picture" and sorted(p.name for p in out.iterdir()) == [theirs.name]
    code, _, err = run_cli(capsys, *base, "--overwrite")
    assert code == 0, err
    with Image.open(theirs) as im:
        assert im.size == (96, 64)


def test_eval_reads_the_list_only_up_to_the_limit(tmp_path: Path) -> None:
    """A list of a million lines with ``--limit 1`` (before: 34 s and 1.45 GB, the whole list read
    and every file looked for): past its first line, this one names missing files and ends in a
    line that is not a pair at all, so reading further would fail."""
    layout = make_sid_dataset(tmp_path / "sid", test={10003: (10.0, (0.1,))})
    listing = tmp_path / "sid" / "huge.txt"
    with open(listing, "w") as fh:
        fh.write("./Sony/short/10003_00_0.1s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9\n")
        missing = "./Sony/short/10099_00_0.1s.ARW ./Sony/long/10099_00_10s.ARW ISO200 F9\n"
        fh.writelines(missing for _ in range(1_000_000))
        fh.write("not a pair\n")
    started = time.monotonic()
    report = evaluate(listing, weights=WEIGHTS, device="cpu", tile=0, limit=1)  # type: ignore[arg-type]
    assert [s.pair.short for s in report.scores] == [layout.root / "Sony" / "short" / "10003_00_0.1s.ARW"]
    assert time.monotonic() - started < 30
