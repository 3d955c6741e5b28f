"""Hostile files (issue 15): names that are not UTF-8, escape sequences in a file's
strings, and headers declaring more pixels than any camera makes.

Every case is made for real: files are written under non-UTF-8 names, DNGs carry the
escape sequences in their Make/Model/LensModel bytes, and the huge image is a sparse
file of the size its header declares; the commands are the ones users run.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seedark.io.raw as raw_module
from helpers.cli import child_env, run_cli
from helpers.rawgen import dark_dng, ifd_entries, write_huge_dng
from seedark.errors import RawReadError, UsageError
from seedark.io.exifread import read_camera_metadata
from seedark.io.exifwrite import build_exif
from seedark.io.metadata import CameraMetadata
from seedark.io.raw import read_raw
from seedark.io.text import clean_text, printable
from seedark.io.tiff import Ifd, layout_tiff
from seedark.pipeline.enhance import enhance_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"
#: A name that is Latin-1, not UTF-8: Python keeps the byte 0xE9 as the surrogate U+DCE9.
BAD_NAME = os.fsdecode(b"caf\xe9.dng")


def blocks(out: str) -> list[dict[str, str]]:
    """`seedark info` output as one dict of rows per file."""
    return [
        {label: value.strip() for label, _, value in (line.partition(":") for line in block.splitlines())}
        for block in out.split("\n\n")
    ]


def shot(path: Path, seed: int = 0, **kw: object) -> Path:
    return dark_dng(path, np.random.default_rng(seed), (32, 48), (500, 900), **kw)


@pytest.fixture
def bad_name(tmp_path: Path) -> Path:
    """A RAW file whose name is not UTF-8 (skipped where the file system refuses such names)."""
    try:
        return shot(tmp_path / BAD_NAME, seed=1)
    except (OSError, UnicodeEncodeError) as exc:  # e.g. macOS APFS, Windows
        pytest.skip(f"this file system takes no non-UTF-8 names: {exc}")


def cli_env(tmp_path: Path) -> dict[str, str]:
    # C.UTF-8, as on most servers and containers: Python hands names back byte for byte.
    drop = ("SEEDARK_", "LC_", "PYTHONIOENCODING")
    return child_env(drop=drop, SEEDARK_HOME=str(tmp_path / "home"), LC_ALL="C.UTF-8")


def names(folder: Path) -> set[bytes]:
    return {os.fsencode(p.name) for p in folder.iterdir()}


# --------------------------------------------------------------------------- names that are not UTF-8


def test_info_reads_a_non_utf8_name_between_two_others(
    tmp_path: Path, bad_name: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = shot(tmp_path / "a.dng"), shot(tmp_path / "b.dng", seed=2)
    # capsys encodes strictly, like a UTF-8 terminal that is not in C.UTF-8: nothing unencodable may reach it
    code, out, err = run_cli(capsys, "info", a, bad_name, b)
    assert code == 0 and err == ""
    rows = blocks(out)
    assert [r["file"] for r in rows] == [str(a), f"{tmp_path}{os.sep}caf\\xe9.dng", str(b)]
    assert rows[1]["camera"] == "Sony ILCE-7SM2" and rows[1]["sensor"] == "bayer 48x32 (visible)"


@pytest.mark.parametrize("route", ["descriptor", "buffer"])
def test_a_non_utf8_name_decodes_like_any_other(
    tmp_path: Path, bad_name: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    if route == "buffer":  # what happens where there is no /proc: the whole file as a buffer
        monkeypatch.setattr(raw_module, "_FD_DIR", tmp_path / "no-proc")
    elif not raw_module._FD_DIR.is_dir():
        pytest.skip("no /proc/self/fd here")
    same = shot(tmp_path / "same.dng", seed=1)
    got, want = read_raw(bad_name), read_raw(same)
    assert np.array_equal(got.mosaic, want.mosaic) and got.camera == want.camera
    assert got.path == bad_name


COMMON = ["--ratio", "5", "--weights", str(WEIGHTS), "--device", "cpu", "--engine", "pytorch"]


def test_a_huge_size_behind_a_non_utf8_name_is_refused_from_the_header(tmp_path: Path) -> None:
    if not raw_module._FD_DIR.is_dir():
        pytest.skip("without /proc/self/fd the file is read whole, as a buffer")
    try:
        huge = write_huge_dng(tmp_path / os.fsdecode(b"gro\xdf.dng"), 30000, 30000)
    except (OSError, UnicodeEncodeError) as exc:
        pytest.skip(f"this file system takes no non-UTF-8 names: {exc}")
    with pytest.raises(RawReadError, match=r": image too large: 900 MP \(limit 400 MP;"):
        read_raw(huge)


def test_enhance_takes_a_non_utf8_name(tmp_path: Path, bad_name: Path) -> None:
    cmd = [sys.executable, "-m", "seedark", "enhance", str(bad_name), *COMMON]
    done = subprocess.run(cmd, capture_output=True, env=cli_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == os.fsencode(tmp_path / "caf\udce9.png")
    assert names(tmp_path) - {b"home"} == {b"caf\xe9.dng", b"caf\xe9.png"}  # and no .part left


def test_batch_takes_a_non_utf8_name_among_others(tmp_path: Path, bad_name: Path) -> None:
    shot(tmp_path / "a.dng")
    shot(tmp_path / "b.dng", seed=2)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "seedark", "batch", str(tmp_path), "-o", str(out), *COMMON]
    done = subprocess.run(cmd, capture_output=True, env=cli_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    assert b"converted 3, skipped 0, failed 0" in done.stderr, done.stderr
    assert names(out) == {b"a.png", b"b.png", b"caf\xe9.png"}  # and no .part left


# --------------------------------------------------------------------------- escape sequences in a file's strings

HOSTILE = {
    271: b"\x1b]0;pwned\x07Sony",  # OSC: sets the terminal's title
    272: b"\x1b[2JILCE-7SM2\r\nFAKE LINE",  # CSI: clears the screen; then a forged line
    42036: b"\xc2\x9b31mFE 35mm",  # C1 CSI (U+009B, in UTF-8): colours the rest red
    306: b"2026:11:25 21:30:00\x1b[5m",
}
UTF8_MODEL = "Café Ελλάδα".encode()
#: Not UTF-8, so read as Latin-1: a C1 CSI byte, then "Acmé".
LATIN1_MAKE = b"\x9b31mAcm\xe9"


def control_bytes(text: str) -> list[str]:
    """C0 controls but the newline, DEL and C1 controls: what would drive a terminal."""
    return [ch for ch in text if (ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) < 0xA0]


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    return shot(tmp_path / "hostile.dng", lens_model=None, datetime_original=None, strings=HOSTILE)


def test_info_prints_no_control_bytes(hostile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    greek = shot(tmp_path / "greek.dng", strings={271: LATIN1_MAKE, 272: UTF8_MODEL})
    code, out, err = run_cli(capsys, "info", hostile, greek)
    assert code == 0, err
    assert control_bytes(out) == [] and "\x1b" not in out
    assert not any(line.startswith("FAKE") for line in out.splitlines())
    first, second = blocks(out)
    assert first["camera"] == "Sony ILCE-7SM2 FAKE LINE"
    assert first["lens"] == "FE 35mm"  # the CSI goes with its parameters
    assert first["taken"] == "2026:11:25 21:30:00"
    assert second["camera"] == "Acmé Café Ελλάδα"  # printable text is kept


def test_the_reader_hands_out_clean_strings(hostile: Path) -> None:
    meta = read_camera_metadata(hostile)
    assert (meta.make, meta.model, meta.lens_model) == ("Sony", "ILCE-7SM2 FAKE LINE", "FE 35mm")
    # LibRaw's strings merge into the same dataclass, which cleans whatever it is given
    assert CameraMetadata(lens_model="\x1b[1mZoom\x07", make="\r\n").lens_model == "Zoom"
    assert CameraMetadata(make="\r\n").make is None


@pytest.mark.parametrize("fmt", ["jpeg", "png", "tiff"])
def test_output_exif_is_7bit(hostile: Path, tmp_path: Path, fmt: str) -> None:
    raw = shot(
        tmp_path / "mixed.dng",
        lens_model=None,
        datetime_original=None,
        strings={**HOSTILE, 271: LATIN1_MAKE, 272: UTF8_MODEL + b"\x1b[2J"},
    )
    out = enhance_file(raw, tmp_path / f"mixed.{fmt}", ratio=5, fmt=fmt, weights=WEIGHTS, device="cpu")
    with Image.open(out) as im:
        exif = im.getexif()
        strings = {tag: exif.get(tag) for tag in (271, 272, 305, 306)}
        strings[42036] = exif.get_ifd(0x8769).get(42036)
    for tag, value in strings.items():
        assert isinstance(value, str) and value.isascii() and value.isprintable(), (tag, value)
    assert strings[271] == "Acme" and strings[272] == "Cafe ??????"
    assert strings[42036] == "FE 35mm"


def test_tiff_ascii_tags_are_7bit_by_construction() -> None:
    ifd = Ifd()
    ifd.ascii(271, "Caf\u00e9 \x1b[2J\u03a9\r\nX")
    ifd.ascii(272, b"\x1b raw bytes as given")
    head = layout_tiff(ifd).to_bytes()
    assert b"Cafe ? X\0" in head and b"\x1b raw bytes as given\0" in head
    assert b"\x1b" not in build_exif(CameraMetadata(make="\x1b[2J\x9bA", model="\u2028B"), "seedark\x07")


def test_numbers_no_camera_records_are_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = shot(tmp_path / "denormal.dng")
    data = bytearray(raw.read_bytes())
    (exposure,) = [e for found in ifd_entries(bytes(data)).values() for e in found if e.tag == 33434]
    # ExposureTime as a DOUBLE of 1e-313 s: 1/x is infinite, so `info` and the EXIF writer would overflow
    struct.pack_into("<HHI", data, exposure.at, 33434, 12, 1)
    struct.pack_into("<d", data, exposure.value, 1e-313)
    raw.write_bytes(data)
    code, out, err = run_cli(capsys, "info", raw)
    assert code == 0, err
    assert blocks(out)[0]["exposure"] == "unknown"
    odd = CameraMetadata(exposure_time=1e-313, f_number=float("inf"), iso=float("nan"), focal_length=-35)  # type: ignore[arg-type]
    assert (odd.exposure_time, odd.f_number, odd.iso, odd.focal_length) == (None, None, None, None)
    assert CameraMetadata(iso=3200.4).iso == 3200  # type: ignore[arg-type]  # LibRaw's ISO is a float


def test_a_capture_date_out_of_range_is_unknown(tmp_path: Path) -> None:
    # LibRaw turns it into a timestamp that rawpy's datetime.fromtimestamp refuses (ValueError)
    raw = shot(tmp_path / "future.dng", datetime_original=None, strings={306: b"99999:12:31 23:59:59"})
    frame = read_raw(raw)
    assert frame.camera.make == "Sony"
    assert b"99999" not in build_exif(frame.camera, "seedark")  # not a valid EXIF date, so not written


@pytest.mark.parametrize(
    ("text", "clean", "shown"),
    [
        ("\x1b]0;pwned\x07Sony", "Sony", "\\x1b]0;pwned\\x07Sony"),
        ("\x1b]2;title\x1b\\A", "A", "\\x1b]2;title\\x1b\\A"),
        ("\x1b[2J\x1b[1;31mB", "B", "\\x1b[2J\\x1b[1;31mB"),
        ("C\r\nFAKE LINE", "C FAKE LINE", "C\\x0d\\x0aFAKE LINE"),
        ("\x9b31mD\x9c", "D", "\\x9b31mD\\x9c"),
        ("E\u202egnp.exe", "Egnp.exe", "E\\u202egnp.exe"),  # a bidi override reorders what is shown
        ("F\x00\x7f\tG", "F G", "F\\x00\\x7f\\x09G"),
        ("Café Ελλάδα", "Café Ελλάδα", "Café Ελλάδα"),
        (os.fsdecode(b"caf\xe9"), "caf", "caf\\xe9"),
    ],
    ids=["osc-bel", "osc-st", "csi", "crlf", "c1-csi", "bidi", "c0-del-tab", "utf8", "not-utf8"],
)
def test_one_sanitiser(text: str, clean: str, shown: str) -> None:
    assert clean_text(text) == clean
    assert clean_text(clean_text(text)) == clean  # idempotent: the reader and the dataclass both apply it
    assert clean_text(text, ascii=True).isascii()
    assert printable(text) == shown


# --------------------------------------------------------------------------- pixel limit


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory read from wait4 (kB on Linux)")
def test_a_huge_declared_size_is_refused_from_the_header(tmp_path: Path) -> None:
    huge = write_huge_dng(tmp_path / "huge.dng", 30000, 30000)  # 1.8 GB, sparse
    assert huge.stat().st_size > 1_800_000_000
    with open(tmp_path / "err.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "seedark", "info", str(huge)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=cli_env(tmp_path),
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    message = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 1, message
    assert message == (
        f"seedark: error: {huge}: image too large: 900 MP (limit 400 MP; set SEEDARK_MAX_PIXELS to raise it)\n"
    )
    # The interpreter, numpy and rawpy alone take ~0.2-0.6 GB (more in a loaded suite); unpacking took 4.4 GB.
    assert usage.ru_maxrss < 1_000_000, f"peak {usage.ru_maxrss} kB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.txt", "huge.dng"]


def test_the_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = write_huge_dng(tmp_path / "big.dng", 3000, 2000)
    monkeypatch.setenv("SEEDARK_MAX_PIXELS", "5.5M")
    with pytest.raises(RawReadError) as refused:
        read_raw(big)
    assert str(refused.value) == f"{big}: image too large: 6 MP (limit 5.5 MP; set SEEDARK_MAX_PIXELS to raise it)"
    monkeypatch.setenv("SEEDARK_MAX_PIXELS", "6000000")
    assert read_raw(big).mosaic.shape == (2000, 3000)
    with pytest.raises(RawReadError, match=r"limit 5 MP"):
        read_raw(big, max_pixels=5_000_000)
    for value in ("lots", "-1", "0", "nan"):
        monkeypatch.setenv("SEEDARK_MAX_PIXELS", value)
        with pytest.raises(UsageError, match=re.escape(f"SEEDARK_MAX_PIXELS={value!r} is not a number of pixels")):
            read_raw(big)


def test_enhance_refuses_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = write_huge_dng(tmp_path / "huge.dng", 20000, 25000)
    code, out, err = run_cli(capsys, "enhance", huge, "--ratio", "5", "--weights", WEIGHTS)
    assert code == 1 and out == ""
    assert (
        err == f"seedark: error: {huge}: image too large: 500 MP (limit 400 MP; set SEEDARK_MAX_PIXELS to raise it)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.dng"]
