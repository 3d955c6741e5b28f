"""Command-line conventions (issue 14): -v/-q anywhere, ``-o newdir/``, ``--suffix``, help texts
that state the real defaults, ``--json`` output checked against the files written, and a
start-up that loads no heavy module for help, version and usage errors."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import tifffile

from helpers.cli import child_env, run_cli
from helpers.pngread import decode_png
from helpers.rawgen import XTRANS_PATTERN, dark_dng
from seedark.cli import cli
from seedark.models import registry
from seedark.pipeline.planning import plan_jobs

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tf_sony_w4"
# the PyTorch back end on the CPU: no OpenVINO conversion, nothing cached outside tmp
ENGINE = ("--weights", WEIGHTS, "--device", "cpu", "--engine", "pytorch", "--ratio", "50")


dng = functools.partial(dark_dng, size=(44, 66), levels=(500, 800))


@pytest.fixture
def shot(tmp_path: Path, rng: np.random.Generator) -> Path:
    return dng(tmp_path / "in" / "night.dng", rng)


@pytest.fixture
def folder(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Two good files, one that is not a RAW file, and a sidecar batch leaves alone."""
    src = tmp_path / "shots"
    dng(src / "a.dng", rng)
    dng(src / "b.dng", rng, orientation=6)
    (src / "c.dng").write_text("not a photo\n" * 20)
    (src / "notes.txt").write_text("shot list\n")
    return src


# --------------------------------------------------------------------------- -v / -q


def test_verbosity_after_the_subcommand(shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "o.png"
    base = ("enhance", shot, *ENGINE, "-o", out_file, "--overwrite")
    code, out, plain = run_cli(capsys, *base)
    assert code == 0 and "running on cpu (fp32, pytorch)" in plain and "tile(s) of" not in plain
    for args in [(*base, "-q"), ("-q", *base), ("-v", *base, "-q")]:  # quiet wins wherever it is
        code, out, err = run_cli(capsys, *args)
        assert code == 0 and out.strip() == str(out_file) and err == "", args
    for args in [(*base, "-v"), ("-v", *base), (*base, "--verbose")]:
        code, _, err = run_cli(capsys, *args)
        assert code == 0 and "running on cpu" in err and "pytorch: 1 tile(s) of" in err, args


def test_batch_quiet_after_the_subcommand(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "batch", folder / "a.dng", "-o", tmp_path / "o1", *ENGINE)
    assert code == 0 and "[1/1] converted a.dng" in err
    code, _, err = run_cli(capsys, "batch", folder / "a.dng", "-o", tmp_path / "o2", *ENGINE, "-q")
    assert code == 0 and "converted a.dng" not in err and "running on" not in err
    assert "seedark: converted 1, skipped 0, failed 0" in err  # the summary is always shown


@pytest.mark.parametrize("args", [("info", "-q"), ("info", "-v"), ("models", "list", "-q"), ("models", "-v", "path")])
def test_v_and_q_after_info_and_models(
    args: tuple[str, ...],
    shot: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    extra = (shot,) if args[0] == "info" else ()
    code, out, err = run_cli(capsys, *args, *extra)
    assert code == 0, err
    assert out and err == ""


# --------------------------------------------------------------------------- -o DIR/ and --suffix


def test_output_folder_is_created(shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new" / "deeper"
    code, out, err = run_cli(capsys, "enhance", shot, *ENGINE, "-o", f"{target}/")
    assert code == 0, err
    assert out.strip() == str(target / "night.png")  # PNG: no extension to go by, no --format
    chunks, pixels = decode_png(target / "night.png")
    assert chunks[b"IHDR"][0][8] == 8 and pixels.shape == (44, 66, 3)
    code, out, err = run_cli(capsys, "enhance", shot, *ENGINE, "-o", target, "--suffix", "_sid", "--format", "tiff")
    assert code == 0, err
    assert out.strip() == str(target / "night_sid.tif")
    assert tifffile.imread(target / "night_sid.tif").dtype == np.uint16
    assert sorted(p.name for p in target.iterdir()) == ["night.png", "night_sid.tif"]


def test_failed_enhance_leaves_no_new_folder(shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # decoding fails: the folder was never made
    bad = tmp_path / "bad.dng"
    bad.write_text("not a photo\n" * 20)
    code, out, err = run_cli(capsys, "enhance", bad, *ENGINE, "-o", f"{tmp_path / 'n1'}/")
    assert code == 1 and out == "" and "not a RAW file" in err
    # a name over the file system's 255 bytes: refused before any work, the folder never made (a failure
    # after the folder was made removes it again: tests/test_guard_round3.py::test_a_failed_demo_leaves_no_folder)
    code, out, err = run_cli(
        capsys, "enhance", shot, *ENGINE, "-o", f"{tmp_path / 'n2' / 'n3'}/", "--suffix", "x" * 300
    )
    assert code == 1 and out == "" and "file name too long: 309 bytes, the file system takes at most 255" in err
    # a file where a folder should be made: refused before any work
    (tmp_path / "plain").write_text("")
    code, out, err = run_cli(capsys, "enhance", shot, *ENGINE, "-o", f"{tmp_path / 'plain' / 'sub'}/")
    assert code == 1 and err.strip().endswith(f"cannot create the output folder: {tmp_path / 'plain'} is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dng", "in", "plain"]


def test_output_without_extension_or_slash(shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-o newdir`` (no slash, no such folder) stays a usage error, with the way to say "a new folder"."""
    code, out, err = run_cli(capsys, "enhance", shot, *ENGINE, "-o", tmp_path / "newdir")
    assert code == 2 and out == ""
    assert err.strip().endswith(
        "cannot tell the output format from no extension; use .png, .tif/.tiff, .jpg/.jpeg or .dng "
        "(or --format), or end it with / for a folder to create"
    )
    assert not (tmp_path / "newdir").exists()


def test_batch_suffix_and_paths_on_stdout(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "batch", folder, "-o", out_dir, "--suffix", "_sid", *ENGINE)
    assert code == 1  # c.dng fails
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_sid.png", "b_sid.png"]
    assert sorted(out.splitlines()) == [str(out_dir / "a_sid.png"), str(out_dir / "b_sid.png")]
    assert "seedark: converted 2, skipped 0, failed 1" in err


def test_suffix_comes_after_the_clash_marks(tmp_path: Path) -> None:
    files = [(tmp_path / "IMG_1.ARW", tmp_path), (tmp_path / "IMG_1.DNG", tmp_path), (tmp_path / "IMG_2.DNG", tmp_path)]
    got = plan_jobs(files, tmp_path / "o", recursive=False, fmt="png", suffix="_sid")
    assert [dest.name for _, dest in got] == ["IMG_1_arw_sid.png", "IMG_1_dng_sid.png", "IMG_2_sid.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("enhance", "{shot}", "--suffix", "a/b"), "--suffix 'a/b' must not contain a path separator"),
        (("batch", "{shot}", "--suffix", "../x"), "--suffix '../x' must not contain a path separator"),
        (("enhance", "{shot}", "-o", "{tmp}/x.png", "--suffix", "_s"), "--suffix names outputs written into a folder"),
    ],
)
def test_suffix_refused(
    args: tuple[str, ...], message: str, shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, *(a.format(shot=shot, tmp=tmp_path) for a in args), *ENGINE)
    assert code == 2 and out == "" and message in err
    assert sorted(tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- help texts


def test_help_states_the_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "enhance", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "(default: from -o's file extension, else png)" in text
    default = "(default: from the camera: your model for it from 'seedark finetune', else sony for Bayer sensors, fuji"
    assert default in text
    assert "(default: sony)" not in text and "(default: png)" not in text
    for command in ("enhance", "batch", "info", "train"):
        _, out, _ = run_cli(capsys, command, "--help")
        assert "-v, --verbose" in out and "-q, --quiet" in out, command


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        return [c for name, sub in command.commands.items() for c in _commands(sub, (*path, name))]
    return [(path, command)]


def test_every_command_declares_v_and_q() -> None:
    commands = [*_commands(cli), (("models",), cli.commands["models"])]
    for path, command in commands:
        flags = {opt for param in command.params for opt in param.opts}
        assert {"-v", "--verbose", "-q", "--quiet"} <= flags, path


def test_every_option_says_its_default() -> None:
    """An option that takes a value either shows its default, says it in its help, or is required."""
    missing = [
        f"{' '.join(path)} {param.opts[-1]}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option)
        and not (param.is_flag or param.count or param.required or param.show_default)
        and not re.search(r"\b(default|required)\b", param.help or "", re.IGNORECASE)
    ]
    assert missing == []


# --------------------------------------------------------------------------- --json


def test_batch_json_matches_the_files(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "batch", folder, "-o", out_dir, "--json", *ENGINE)
    summary = json.loads(out)  # stdout holds the one JSON document and nothing else
    assert code == 1 and "seedark: converted 2, skipped 0, failed 1" in err
    written = sorted(str(p) for p in out_dir.iterdir())
    assert sorted(item["output"] for item in summary["converted"]) == written
    assert [item["source"] for item in summary["converted"]] == [str(folder / "a.dng"), str(folder / "b.dng")]
    assert all(item["ratio"] == 50 for item in summary["converted"])
    assert summary["counts"] == {"converted": 2, "skipped": 0, "failed": 1, "ignored": 1}
    assert summary["failed"] == [{"source": str(folder / "c.dng"), "reason": summary["failed"][0]["reason"]}]
    assert summary["failed"][0]["reason"].startswith("not a RAW file")
    assert summary["ignored"] == [str(folder / "notes.txt")]
    assert summary["ok"] is False and summary["interrupted"] is False and summary["elapsed"] > 0

    code, out, _ = run_cli(capsys, "batch", folder, "-o", out_dir, "--json", *ENGINE)  # a re-run skips both
    again = json.loads(out)
    assert again["counts"]["skipped"] == 2 and again["converted"] == []
    assert sorted(item["output"] for item in again["skipped"]) == written


def test_batch_json_lines(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "batch", folder, "-o", out_dir, "--json-lines", *ENGINE)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "[3/3]" in err and not any(line.startswith("{") for line in err.splitlines())
    events, summary = lines[:-1], lines[-1]
    assert [e["done"] for e in events] == [1, 2, 3] and all(e["total"] == 3 for e in events)
    assert {e["source"]: e["event"] for e in events} == {
        str(folder / "a.dng"): "converted",
        str(folder / "b.dng"): "converted",
        str(folder / "c.dng"): "failed",
    }
    for e in events:
        if e["event"] == "converted":
            assert Path(e["output"]).is_file() and e["seconds"] > 0 and e["reason"] is None
        else:
            assert e["output"] is None and e["reason"].startswith("not a RAW file")
    assert summary["event"] == "summary" and summary["counts"]["converted"] == 2
    assert sorted(str(p) for p in out_dir.iterdir()) == sorted(e["output"] for e in events if e["output"])

    code, out, err = run_cli(capsys, "batch", folder, "--json", "--json-lines", *ENGINE)
    assert code == 2 and out == "" and "use --json or --json-lines, not both" in err


def test_info_json(tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]) -> None:
    sony = dng(tmp_path / "sony.dng", rng, orientation=6, exposure_time=0.04, iso=12800, black_level=600)
    fuji = dng(tmp_path / "fuji.dng", rng, size=(48, 72), cfa=XTRANS_PATTERN, make="FUJIFILM", model="X-T2")
    missing = tmp_path / "missing.dng"
    code, out, err = run_cli(capsys, "info", sony, fuji, missing, "--json")
    got = json.loads(out)
    assert code == 1 and err.strip() == f"seedark: error: {missing}: no such file"
    assert [item["file"] for item in got] == [str(sony), str(fuji), str(missing)]
    first = got[0]
    assert {k: first[k] for k in ("make", "model", "lens", "sensor", "cfa", "black_levels", "white_level")} == {
        "make": "Sony",
        "model": "ILCE-7SM2",
        "lens": "FE 35mm F2.8 ZA",
        "sensor": "bayer",
        "cfa": "RGGB",
        "black_levels": [600.0],
        "white_level": 16383,
    }
    assert (first["width"], first["height"], first["output_width"], first["output_height"]) == (66, 44, 44, 66)
    assert first["exposure_time"] == 0.04 and first["iso"] == 12800 and first["taken"] == "2026:11:25 21:30:00"
    assert first["ratio_range"] == [1, 300] and 1 <= first["auto_ratio"] <= 300
    # what --model's help promises: sony for Bayer, fuji for X-Trans
    assert first["default_model"] == "sony" and got[1]["default_model"] == "fuji" and got[1]["sensor"] == "xtrans"
    assert got[2] == {"file": str(missing), "error": "no such file"}


def test_json_keeps_names_that_are_not_utf8(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = dng(Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xffodd.dng")), rng)
    code, out, _ = run_cli(capsys, "info", odd, "--json")
    assert code == 0 and out.isascii()
    assert os.fsencode(json.loads(out)[0]["file"]) == os.fsencode(tmp_path) + b"/\xffodd.dng"


def test_models_list_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and set(registry.MODELS) <= set(rows)
    assert not any(row["cached"] for row in rows.values()) and rows["sony"]["path"] is None
    assert rows["sony"]["download_size"] == sum(f.size for f in registry.MODELS["sony"].files if f.size)
    code, out, err = run_cli(capsys, "models", "import", "mine", WEIGHTS, "--unverified")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    mine = {row["name"]: row for row in json.loads(out)}["mine"]
    assert mine["cached"] is True and mine["imported"] is True
    assert (
        mine["size"] == os.path.getsize(mine["path"])
        and Path(mine["path"]).parent.parent == tmp_path / "home" / "models"
    )


# --------------------------------------------------------------------------- start-up

PROBE = """
import sys
from seedark.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "rawpy", "openvino", "numpy", "PIL", "tifffile") if m in sys.modules]
print("PROBE", code, ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["enhance", "--help"], 0),
        (["batch", "--help"], 0),
        (["train", "--help"], 0),
        (["eval", "--help"], 0),
        (["info", "--help"], 0),
        (["models", "list", "--help"], 0),
        (["enhance", "x.dng", "--bogus"], 2),
        (["enhance"], 2),
        (["batch", "x", "--precision", "fp64"], 2),
        (["batch", "x", "--json", "--json-lines"], 2),
        (["info"], 2),
        (["train", "--out", "o", "--epochs", "many"], 2),
        (["eval"], 2),
        (["models", "list", "--bogus"], 2),
        (["-v", "nosuchcommand"], 2),
    ],
)
def test_startup_loads_no_heavy_module(args: list[str], code: int, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=60
    )
    probe = result.stderr.splitlines()[-1]
    assert probe == f"PROBE {code} ", result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["enhance", "x.dng", "--ratio", "-1"],
        ["enhance", "x.dng", "--ratio", "nan"],
        ["batch", "x", "--tile", "big"],
        ["eval", "--list", "l.txt", "--tile", "-5"],
    ],
)
def test_bad_ratio_or_tile_is_a_usage_error_before_torch_loads(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=60
    )
    assert result.stderr.splitlines()[0].startswith("seedark: error: "), result.stderr
    probe = result.stderr.splitlines()[-1].split(" ")
    assert probe[:2] == ["PROBE", "2"], result.stderr
    assert not {"torch", "openvino"} & set(probe[2].split(",")), result.stderr
