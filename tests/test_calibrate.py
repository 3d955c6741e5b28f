"""``seedark calibrate``: a hidden camera's noise recovered from its dark frames and flat pairs.

The frames come from tests/helpers/calibframes.py, written without seedark's noise code
(scipy's Tukey-lambda, numpy's Poisson and Gaussian), with a vignette, PRNU and a
flickering light in the flats. The estimates must land on the hidden values: K per ISO
within 10%, the read and row noise scales within 20%, the Tukey-lambda shape within 0.1,
the black level within 1 DN.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.calibframes import HIDDEN, CameraTruth, IsoTruth, write_frames
from helpers.cli import run_cli
from helpers.rawgen import write_dng
from seedark.errors import CalibrationError, RawReadError, UsageError
from seedark.synthesis.calibration import fit_tukey_lambda
from seedark.synthesis.noiseprofile import SONY_A7S2, IsoNoise, NoiseProfile, load_profile, save_profile
from seedark.training.calibrate import CalibrationResult, calibrate


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CalibrationResult]:
    """The hidden camera's frames, calibrated once for the module (SEEDARK_HOME in the module's folder)."""
    root = tmp_path_factory.mktemp("hidden")
    darks, flats = write_frames(HIDDEN, root, np.random.default_rng(2026))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEEDARK_HOME", str(root / "home"))
        result = calibrate(darks, flats, output=root / "profile.json")
    return darks, flats, result


def test_recovers_the_hidden_camera(hidden: tuple[Path, Path, CalibrationResult]) -> None:
    profile = hidden[2].profile
    assert [e.iso for e in profile.per_iso] == [t.iso for t in HIDDEN.isos]
    for truth, got in zip(HIDDEN.isos, profile.per_iso, strict=True):
        assert got.k == pytest.approx(truth.k, rel=0.10), truth.iso
        assert got.read_scale == pytest.approx(truth.read_scale, rel=0.20), truth.iso
        assert got.row_scale == pytest.approx(truth.row_scale, rel=0.20), truth.iso
        assert abs(got.read_lambda - truth.read_lambda) < 0.1, truth.iso
        assert abs(got.black_level - HIDDEN.black) < 1.0, truth.iso
    assert (profile.make, profile.model, profile.white_level) == (HIDDEN.make, HIDDEN.model, HIDDEN.white)
    assert profile.black_level == HIDDEN.black


def test_fits_the_noise_against_the_gain(hidden: tuple[Path, Path, CalibrationResult]) -> None:
    """ELD's log-linear fits over K: the same line as a fit of the hidden values themselves."""
    profile = hidden[2].profile
    log_k = np.log([t.k for t in HIDDEN.isos])
    read_slope, read_intercept = np.polyfit(log_k, np.log([t.read_scale for t in HIDDEN.isos]), 1)
    row_slope, row_intercept = np.polyfit(log_k, np.log([t.row_scale for t in HIDDEN.isos]), 1)
    assert profile.read_slope == pytest.approx(read_slope, abs=0.1)
    assert profile.read_intercept == pytest.approx(read_intercept, abs=0.15)
    assert profile.row_slope == pytest.approx(row_slope, abs=0.1)
    assert profile.row_intercept == pytest.approx(row_intercept, abs=0.2)
    assert profile.k_min == min(e.k for e in profile.per_iso) and profile.k_max == max(e.k for e in profile.per_iso)
    assert profile.read_lambda == pytest.approx(np.mean([e.read_lambda for e in profile.per_iso]))


def test_kept_in_the_cache_and_written(hidden: tuple[Path, Path, CalibrationResult]) -> None:
    result = hidden[2]
    assert result.stored.name == "hidden-hx-1.json" and result.stored.parent.name == "profiles"
    assert result.stored.parent.parent.name == "home"
    assert result.written is not None and load_profile(result.written) == result.profile
    assert load_profile(result.stored) == result.profile
    data = json.loads(result.stored.read_text())
    assert sorted(data["per_iso"][0]) == ["black_level", "iso", "k", "read_lambda", "read_scale", "row_scale"]
    assert not list(result.stored.parent.glob("*.tmp*")), "written atomically, nothing left behind"


def test_tukey_lambda_fit_on_scipy_samples() -> None:
    tukey = pytest.importorskip("scipy.stats").tukeylambda
    for lam, scale in ((-0.25, 2.0), (0.1, 3.0), (-0.05, 1.0)):
        sample = tukey.rvs(lam, scale=scale, size=100_000, random_state=np.random.default_rng(3))
        got_lam, got_scale = fit_tukey_lambda(sample)
        assert abs(got_lam - lam) < 0.03 and got_scale == pytest.approx(scale, rel=0.05)


# --------------------------------------------------------------------------- the profile file


def test_old_profiles_read_and_write_as_before(tmp_path: Path) -> None:
    """A profile of fits alone (no camera, no per_iso) keeps its JSON: the same keys as before."""
    fits = ["k_min", "k_max", "read_lambda", "read_slope", "read_intercept", "read_sigma"]
    fits += ["row_slope", "row_intercept", "row_sigma"]
    assert sorted(SONY_A7S2.to_dict()) == sorted(["name", *fits, "black_level", "white_level"])
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"per_iso": [{"iso": 800, "k": 1.0, "read_scale": 2.0, "row_scale": 0.3}]}))
    with pytest.raises(UsageError, match="each per_iso entry is an object of"):
        load_profile(path)  # black_level missing
    entry = {"iso": 800, "k": 1.0, "read_scale": 2, "row_scale": 0.3, "black_level": 512}
    path.write_text(json.dumps({"read_lambda": -0.2, "per_iso": [entry]}))
    loaded = load_profile(path)
    assert loaded.per_iso == (IsoNoise(800, 1.0, 2.0, 0.3, 512.0, -0.2),)  # the profile's lambda where none is given
    save_profile(loaded, tmp_path / "again.json")
    assert load_profile(tmp_path / "again.json") == loaded


def test_seedark_train_takes_a_calibrated_profile(
    hidden: tuple[Path, Path, CalibrationResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(clean / "a.png")
    args = ["train", "--synthetic", clean, "--noise-profile", hidden[2].written, "--out", tmp_path / "run"]
    code, _, err = run_cli(capsys, *args, "--epochs", "1", "--width", "4", "--patch", "8", "--workers", "0", "-q")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["noise_profile"]["model"] == "HX-1" and len(saved["noise_profile"]["per_iso"]) == 4


# --------------------------------------------------------------------------- errors


SMALL = CameraTruth(
    make="Hidden Optics",
    model="HX-1",
    black=600,
    white=16383,
    isos=(IsoTruth(400, 0.55, -0.10, 1.45, 0.30), IsoTruth(800, 1.1, -0.16, 2.05, 0.42)),
)


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    return write_frames(SMALL, tmp_path, np.random.default_rng(5), size=(32, 48), darks=2, levels=(1500.0, 6000.0))


def _error(capsys: pytest.CaptureFixture[str], darks: Path, flats: Path) -> tuple[int, str]:
    code, out, err = run_cli(capsys, "calibrate", darks, "--flats", flats, "-q")
    assert out == "" and err.count("\n") == 1, err  # one line
    return code, err


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))


def test_small_set_calibrates(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "calibrate", *small[:1], "--flats", small[1], "-o", tmp_path / "mine.json")
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "home" / "profiles" / "hidden-hx-1.json"), str(tmp_path / "mine.json")]
    assert "ISO 400: K " in err and "ISO 800: K " in err


def test_too_few_darks(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    (small[0] / "dark_800_1.dng").unlink()
    code, err = _error(capsys, *small)
    assert code == 1
    assert "ISO 800: 1 dark frame(s); at least 2 are needed" in err


def test_too_few_flat_levels(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for path in small[1].glob("flat_400_1_*.dng"):
        path.unlink()
    code, err = _error(capsys, *small)
    assert code == 1 and "ISO 400: flat pairs at 1 exposure time(s); at least 2 are needed" in err


def test_one_iso_is_not_enough(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for path in [*small[0].glob("*_800_*"), *small[1].glob("*_800_*")]:
        path.unlink()
    code, err = _error(capsys, *small)
    assert code == 1 and "frames at 1 ISO setting(s); at least 2 are needed" in err


def test_mixed_cameras(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    stranger = small[0] / "zz_other.dng"
    write_dng(stranger, np.full((32, 48), 600, dtype=np.uint16), iso=400, make="Other", model="Cam 2")
    code, err = _error(capsys, *small)
    assert code == 1
    assert "more than one camera: the Hidden Optics HX-1 (dark_400_0.dng), the Other Cam 2 (zz_other.dng)" in err


def test_saturated_flat(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = small[1] / "flat_800_1_0.dng"
    saturated = np.full((32, 48), 16383, dtype=np.uint16)
    write_dng(path, saturated, iso=800, exposure_time=2 / 250, make="Hidden Optics", model="HX-1", black_level=600)
    code, err = _error(capsys, *small)
    assert code == 1 and f"{path}: flat frame 100.0% of the pixels are saturated" in err


def test_uneven_flat(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = small[1] / "flat_400_0_1.dng"
    mosaic = np.full((32, 48), 700, dtype=np.uint16)
    mosaic[:, 24:] = 4000
    write_dng(path, mosaic, iso=400, exposure_time=1 / 250, make="Hidden Optics", model="HX-1", black_level=600)
    code, err = _error(capsys, *small)
    assert code == 1 and f"{path}: flat frame not evenly lit" in err


def test_not_a_raw_file(small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bad = small[0] / "dark_400_9.dng"
    bad.write_bytes(b"this is not a raw file, just some text" * 10)
    code, err = _error(capsys, *small)
    assert code == 1 and str(bad) in err


def test_output_folder_checked_first(
    small: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "calibrate", small[0], "--flats", small[1], "-o", tmp_path / "nowhere" / "p.json")
    assert code == 1 and "nowhere: the folder to write the profile into does not exist" in err
    assert not (tmp_path / "home").exists(), "refused before any frame was read or anything stored"


def test_no_raw_files(tmp_path: Path, small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    Image.new("RGB", (8, 8)).save(jpegs / "a.jpg")
    code, err = _error(capsys, jpegs, small[1])
    assert code == 1 and "no RAW files in the dark frames folder (its 1 file(s) are not RAW files" in err
    shutil.rmtree(jpegs)
    code, err = _error(capsys, jpegs, small[1])
    assert code == 1 and "the dark frames folder does not exist" in err


def test_errors_are_seedark_errors(small: tuple[Path, Path]) -> None:
    bad = small[1] / "flat_400_0_0.dng"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(RawReadError) as info:
        calibrate(*small)
    assert info.value.path == bad
    bad.unlink()
    (small[0] / "dark_800_1.dng").unlink()
    with pytest.raises(CalibrationError):
        calibrate(*small)


def test_bad_measurements_are_refused() -> None:
    with pytest.raises(UsageError, match="read_lambda must be in"):
        IsoNoise(800, 1.0, 2.0, 0.3, 512.0, 0.0)
    with pytest.raises(UsageError, match="need iso, k and read_scale > 0"):
        replace(NoiseProfile(), per_iso=(IsoNoise(800, -1.0, 2.0, 0.3, 512.0, 0.1),))
