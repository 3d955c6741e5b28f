"""The command line: one line per error, exit codes, and nothing written on failure."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import save_file

import seedark
from helpers.cli import child_env, run_cli
from helpers.httpserver import FaultyServer, block_internet, clean_environment, published_model
from helpers.pngread import decode_png
from helpers.rawgen import dark_dng, write_dng
from helpers.tfwriter import damaged_copy
from seedark.cli import main
from seedark.models.network import NetworkSpec
from seedark.models.registry import DATA_NAME, INDEX_NAME, ModelRecord
from seedark.models.weights import load_safetensors, load_weights, random_weights

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "tf_sony_w4"


@pytest.fixture
def shot(tmp_path: Path, rng: np.random.Generator) -> Path:
    return dark_dng(tmp_path / "night.dng", rng, (45, 67), (500, 800), orientation=6)


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def library_image(raw: Path, ratio: float, bits: int) -> np.ndarray:
    """What the library's enhance() gives for the same options (on the CPU, like the CLI calls compared
    with it), quantised by the documented rule floor(x * maxval + 0.5) (written out here, not seedark's)."""
    image = seedark.enhance(raw, ratio=ratio, weights=FIXTURE, device="cpu", precision="fp32")
    maxval = np.float32(2**bits - 1)
    q = np.floor(np.clip(image, 0, 1) * maxval + np.float32(0.5))
    return q.astype(np.uint8 if bits == 8 else np.uint16)


def read_image(path: Path) -> np.ndarray:
    """The pixels of a written file, read by a decoder that is not seedark's."""
    if path.suffix == ".png":
        return decode_png(path)[1]
    if path.suffix in (".tif", ".tiff"):
        return tifffile.imread(path)
    with Image.open(path) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))


def test_done_when_command(shot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = shot.parent / "out.tiff"
    code, out, err = run_cli(
        capsys,
        "enhance",
        shot,
        "--ratio",
        "100",
        "--weights",
        FIXTURE,
        "-o",
        out_path,
        "--bits",
        "16",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert out.strip() == str(out_path)
    assert "running on cpu (fp32" in err
    img = tifffile.imread(out_path)
    assert img.dtype == np.uint16 and img.shape == (67, 45, 3)  # rotated 90°
    assert len(np.unique(img)) > 256, "16-bit output must use more than 256 levels"
    np.testing.assert_array_equal(img, library_image(shot, 100, 16))


def test_default_output_is_next_to_the_input(shot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "enhance", shot, "--ratio", "50", "--weights", FIXTURE, "--device", "cpu")
    assert code == 0
    assert Path(out.strip()) == shot.with_suffix(".png")
    with Image.open(shot.with_suffix(".png")) as im:
        assert im.size == (45, 67) and im.mode == "RGB"
        assert im.info.get("icc_profile")
        assert im.getexif().get(0x010F) == "Sony"  # Make
    chunks, pixels = decode_png(shot.with_suffix(".png"))
    assert chunks[b"IHDR"][0][8] == 8  # PNG's default depth
    np.testing.assert_array_equal(pixels, library_image(shot, 50, 8))


@pytest.mark.parametrize(
    ("fmt", "bits", "suffix"),
    [("jpeg", "8", ".jpg"), ("tiff", "8", ".tif"), ("png", "16", ".png"), ("tiff", None, ".tif")],
)
def test_output_folder_and_format(
    shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, bits: str | None, suffix: str
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    args = ["enhance", shot, "--ratio", "50", "--weights", FIXTURE, "--device", "cpu", "-o", outdir, "--format", fmt]
    code, out, err = run_cli(capsys, *args, *(["--bits", bits] if bits else []))
    assert code == 0, err
    assert Path(out.strip()) == outdir / f"night{suffix}"
    got = read_image(outdir / f"night{suffix}")
    want = library_image(shot, 50, int(bits) if bits else 16)  # docs/usage.md: TIFF defaults to 16 bits
    assert got.dtype == want.dtype and got.shape == want.shape == (67, 45, 3)
    if fmt == "jpeg":  # quality 95, 4:4:4 (measured: mean 2.3 levels on the random-weight network's output)
        assert np.abs(got.astype(np.float64) - want).mean() < 3.5
    else:
        np.testing.assert_array_equal(got, want)


def test_overwrite(shot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = shot.with_suffix(".png")
    target.write_bytes(b"keep me")
    code, _, err = run_cli(capsys, "enhance", shot, "--ratio", "50", "--weights", FIXTURE)
    assert code == 1 and "already exists (use --overwrite" in err and str(target) in err
    assert target.read_bytes() == b"keep me"
    code, _, _ = run_cli(capsys, "enhance", shot, "--ratio", "50", "--weights", FIXTURE, "--overwrite")
    assert code == 0 and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", ["enhance", "batch"])
def test_a_mistyped_model_is_reported_before_the_existing_output(
    shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Options are checked before anything on disk: the name, not "already exists", is what is wrong."""
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    target = shot.with_suffix(".png")
    target.write_bytes(b"keep me")
    code, out, err = run_cli(capsys, command, shot, "--model", "sny")
    assert (code, out) == (2, "")
    assert err.strip() == "seedark: error: unknown model 'sny'; known models: fuji, sony"
    assert target.read_bytes() == b"keep me" and not (tmp_path / "home").exists()
    # the same with a missing input: the option is still the first thing reported
    code, _, err = run_cli(capsys, command, tmp_path / "gone.dng", "--model", "sny")
    assert code == 2 and "unknown model 'sny'" in err


def _tampered_checkpoint(tmp: Path) -> Path:
    return damaged_copy(FIXTURE, tmp / "tampered", at=1 / 3, mask=1)


def _misfit_weights(tmp: Path) -> Path:
    state = dict(random_weights(NetworkSpec(width=4)).state)
    state["g_conv10.weight"] = torch.zeros(5, 4, 1, 1)
    save_file(state, str(tmp / "misfit.safetensors"))
    return tmp / "misfit.safetensors"


ERROR_CASES = {
    # name: (argument builder, expected exit code, text expected in the message)
    "missing path": (lambda t, s: [t / "nope.ARW", "--ratio", "3"], 1, "no such file"),
    "folder as file": (lambda t, s: [t, "--ratio", "3"], 1, "is a folder"),
    "not a raw file": (lambda t, s: [_text(t), "--ratio", "3"], 1, "not a RAW file"),
    "truncated raw": (lambda t, s: [_truncate(s), "--ratio", "3"], 1, "truncated or corrupt"),
    "linear dng": (lambda t, s: [_linear(t), "--ratio", "3"], 1, "linear"),
    "ratio zero": (lambda t, s: [s, "--ratio", "0"], 2, "ratio must be"),
    "ratio negative": (lambda t, s: [s, "--ratio", "-2"], 2, "ratio must be"),
    "ratio text": (lambda t, s: [s, "--ratio", "bright"], 2, "ratio must be"),
    "missing out folder": (lambda t, s: [s, "--ratio", "3", "-o", t / "no" / "x.png"], 1, "does not exist"),
    "out folder is a file": (lambda t, s: [s, "--ratio", "3", "-o", _text(t) / "x.png"], 1, "not a folder"),
    "unknown extension": (lambda t, s: [s, "--ratio", "3", "-o", t / "x.bmp"], 2, "output format"),
    "bits 12": (lambda t, s: [s, "--ratio", "3", "--bits", "12"], 2, "bits must be 8 or 16"),
    "jpeg 16 bits": (lambda t, s: [s, "--ratio", "3", "-o", t / "x.jpg", "--bits", "16"], 2, "8 bits"),
    "crc failure": (lambda t, s: [s, "--ratio", "3", "--weights", _tampered_checkpoint(t)], 1, "CRC32C"),
    "weights misfit": (
        lambda t, s: [s, "--ratio", "3", "--weights", _misfit_weights(t)],
        1,
        "last layer has 5 channels",
    ),
    "no such device": (lambda t, s: [s, "--ratio", "3", "--device", "cuda:3"], 1, "cuda"),
    "bad tile": (lambda t, s: [s, "--ratio", "3", "--tile", "huge"], 2, "tile"),
}


def _text(t: Path) -> Path:
    p = t / "notes.arw"
    p.write_text("not a photo\n" * 20)
    return p


def _truncate(s: Path) -> Path:
    s.write_bytes(s.read_bytes()[: s.stat().st_size // 2])
    return s


def _linear(t: Path) -> Path:
    return write_dng(t / "linear.dng", np.full((32, 32, 3), 1000, np.uint16), photometric="linear")


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_and_write_nothing(
    case: str, shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, want_code, want_text = ERROR_CASES[case]
    args = build(tmp_path, shot)
    if "--weights" not in args:
        args += ["--weights", FIXTURE]
    before = files(tmp_path)
    code, out, err = run_cli(capsys, "enhance", *args)
    assert code == want_code, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("seedark: error:")]) == 1, err
    assert "Traceback" not in err
    assert want_text in lines[-1]
    assert files(tmp_path) == before


def test_console_script_and_module_entry_point(shot: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "seedark", "enhance", str(shot), "--ratio", "0"],
        capture_output=True,
        text=True,
        env=child_env(base={"PATH": "/usr/bin:/bin"}),
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "seedark: error: ratio must be a finite number > 0, got 0"


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and "seedark" in out
    code, out, _ = run_cli(capsys, "enhance", "--help")
    assert code == 0 and "--ratio" in out and "--tile" in out


def test_output_name_taken_by_a_folder(shot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (shot.parent / "night.png").mkdir()
    code, _, err = run_cli(capsys, "enhance", shot, "--ratio", "5", "--weights", FIXTURE)
    assert code == 1 and "is a folder" in err


def test_output_would_replace_the_input(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    src = dark_dng(tmp_path / "odd.png", rng, (32, 32), (500, 800))  # a DNG named .png
    code, _, err = run_cli(capsys, "enhance", src, "--ratio", "5", "--weights", FIXTURE, "-o", src, "--overwrite")
    assert code == 1 and "replace the input" in err
    assert src.read_bytes()[:2] == b"II"  # still the DNG


def test_unexpected_errors_are_one_line_unless_debug(
    shot: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import seedark.pipeline.enhance

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(seedark.pipeline.enhance, "enhance_file", broken)
    code, _, err = run_cli(capsys, "enhance", shot, "--ratio", "5")
    assert code == 1
    assert err.strip() == "seedark: internal error: RuntimeError: simulated bug (rerun with --debug for details)"
    with pytest.raises(RuntimeError, match="simulated bug"):
        main(["--debug", "enhance", str(shot), "--ratio", "5"])


def test_info(shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "info", shot, tmp_path / "missing.ARW")
    assert code == 1
    assert "camera:      Sony ILCE-7SM2" in out
    assert "CFA layout:  RGGB" in out and "black level: 512" in out and "white level: 16383" in out
    assert "exposure:    1/30 s" in out and "ISO:         3200" in out
    assert "output size: 45x67" in out  # rotated 90°
    assert "auto ratio:  x" in out and "sony (the default model, sony, suits this sensor)" in out
    assert err.strip() == f"seedark: error: {tmp_path / 'missing.ARW'}: no such file"


def test_both_weights_and_model(shot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE, "--model", "sony")
    assert code == 2 and "either --weights or --model" in err


def test_engine_choice(shot: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(capsys, "enhance", shot, "--ratio", "5", "--weights", FIXTURE, "--engine", "pytorch")
    assert code == 0 and "running on cpu (fp32, pytorch)" in err
    monkeypatch.setenv("SEEDARK_ENGINE", "nonsense")
    code, _, err = run_cli(capsys, "enhance", shot, "--ratio", "5", "--weights", FIXTURE, "--overwrite")
    assert code == 2 and "--engine" in err


# --------------------------------------------------------------------------- models


@pytest.fixture
def served_model(server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRecord]:
    """tests/data/tf_sony_w4 published on the local server as the registry model "fixture"; cache in tmp."""
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    index, data = (FIXTURE / INDEX_NAME).read_bytes(), (FIXTURE / DATA_NAME).read_bytes()
    yield published_model(monkeypatch, server, "fixture", index, data, description="tf_sony_w4 served locally")


def list_rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["name", "cached", "size", "path"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_models_path_list_download_and_remove(
    served_model: ModelRecord, server: FaultyServer, shot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    weights_file = home / "models" / "fixture" / "model.safetensors"
    code, out, _ = run_cli(capsys, "models", "path")
    assert code == 0 and out.strip() == str(home / "models")

    code, out, _ = run_cli(capsys, "models", "list")
    rows = list_rows(out)
    assert code == 0 and {"sony", "fuji", "fixture"} <= set(rows)
    assert rows["fixture"][1:5] == ["no", "-", "not", "cached"] and not (home / "models" / "fixture").exists()

    code, out, err = run_cli(capsys, "models", "download", "fixture")
    assert code == 0, err
    assert out.strip() == str(weights_file)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.suffix != ".lock") == [
        "models/fixture/model.safetensors",
        "models/fixture/provenance.json",
    ]
    want = load_weights(FIXTURE).state
    got = load_safetensors(weights_file).state
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    data_route = server.routes[f"/fixture/{DATA_NAME}"]
    assert data_route.full_downloads() == 1

    code, out, _ = run_cli(capsys, "models", "download", "fixture")  # cached: nothing fetched
    assert code == 0 and out.strip() == str(weights_file) and data_route.full_downloads() == 1
    code, out, _ = run_cli(capsys, "models", "download", "fixture", "--force")
    assert code == 0 and out.strip() == str(weights_file) and data_route.full_downloads() == 2
    assert load_safetensors(weights_file).state.keys() == want.keys()

    code, out, _ = run_cli(capsys, "models", "list")
    row = list_rows(out)["fixture"]
    assert row[1] == "yes" and row[3] == str(weights_file)
    assert row[2] == f"{weights_file.stat().st_size / 1000:.1f}kB"

    # the downloaded model enhances exactly as the checkpoint it came from
    code, out, err = run_cli(
        capsys, "enhance", shot, "--ratio", "50", "--model", "fixture", "--device", "cpu", "-o", tmp_path / "m.png"
    )
    assert code == 0, err
    np.testing.assert_array_equal(decode_png(tmp_path / "m.png")[1], library_image(shot, 50, 8))

    code, out, _ = run_cli(capsys, "models", "remove", "fixture")
    assert code == 0 and out.strip() == "removed fixture"
    assert not (home / "models" / "fixture").exists()
    code, out, _ = run_cli(capsys, "models", "list")
    assert list_rows(out)["fixture"][1] == "no"
    code, out, err = run_cli(capsys, "models", "remove", "fixture")
    assert code == 1 and out == "" and err.strip() == "seedark: error: model 'fixture' is not cached"


# --------------------------------------------------------------------------- Ctrl-C


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a real process that imports torch (~3-6 s on 2 cores)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path: Path, rng: np.random.Generator) -> None:
    # Big enough that the width-4 network is still running when SIGINT arrives (a 500x750 packed
    # frame sometimes finished first on an idle machine).
    raw = dark_dng(tmp_path / "big.dng", rng, (2400, 3600), (500, 900))
    env = child_env(drop=("SEEDARK_",), SEEDARK_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "seedark", "-v", "enhance", str(raw), "--ratio", "50", "--weights", str(FIXTURE)]
    cmd += ["--tile", "0", "--engine", "pytorch", "--precision", "fp32"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint
    )
    try:
        assert proc.stderr is not None
        seen = []
        # -v logs the tile plan just before the network starts on the whole 1200x1800 frame (seconds of work)
        for line in proc.stderr:
            seen.append(line)
            if "tile(s) of" in line:
                break
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(seen) + err
    assert out == ""
    assert err.strip().splitlines()[-1] == "seedark: interrupted; no partial output was left behind"
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["big.dng"]  # no .png, no .part
