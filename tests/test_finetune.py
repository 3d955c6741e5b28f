"""``seedark finetune``: a tiny run end to end, registered for its camera and picked for its files.

A reduced-width base model (4 channels) is imported into a cache of the test's own; the
"photos" are clean DNGs of a made-up camera, and its noise profile is stored where
``seedark calibrate`` keeps profiles. Whether fine-tuning helps is shown in docs/cameras.md
(benchmarks/bench_finetune.py), not here: a few steps of a 4-channel network prove the
mechanics, not the quality.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seedark
from helpers.cli import run_cli
from helpers.rawgen import write_dng
from helpers.sid_layout import clean_scene
from seedark.errors import CalibrationError, DatasetError, UsageError
from seedark.io.raw import RawFrame
from seedark.models import cache
from seedark.models.network import NetworkSpec
from seedark.models.registry import MODELS, camera_metadata
from seedark.models.weights import load_weights, random_weights, save_safetensors
from seedark.synthesis.noise import iso_params
from seedark.synthesis.noiseprofile import IsoNoise, NoiseProfile, save_profile
from seedark.training import cameraprofiles
from seedark.training.dataset import paired_patch
from seedark.training.finetune import SID_RATIOS, finetune

pytestmark = pytest.mark.usefixtures("one_thread")

CAMERA = {"make": "Fineprint", "model": "FP-1"}
PROFILE = NoiseProfile(
    name="Fineprint FP-1",
    k_min=0.8,
    k_max=3.2,
    read_lambda=-0.17,
    **CAMERA,
    per_iso=(IsoNoise(800, 0.8, 2.0, 0.4, 512.0, -0.15), IsoNoise(3200, 3.2, 4.0, 0.8, 512.0, -0.2)),
)


def _photo(path: Path, rng: np.random.Generator, **camera: object) -> Path:
    mosaic = np.clip(clean_scene(rng, (64, 96)) * 2 + 512, 0, 16383).astype(np.uint16)
    return write_dng(path, mosaic, **{"iso": 100, "exposure_time": 1 / 60, **CAMERA, **camera})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of the test's own holding the 4-channel ``tiny`` base model and the camera's profile."""
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    base = save_safetensors(random_weights(NetworkSpec(4, 4, 2), seed=3), tmp_path / "tiny.safetensors")
    cache.import_model("tiny", base, unverified=True)
    cameraprofiles.store_profile(PROFILE)
    return tmp_path / "home"


@pytest.fixture
def photos(tmp_path: Path, rng: np.random.Generator) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        _photo(folder / f"DSC{k:04d}.dng", rng)
    return folder


def test_end_to_end(home: Path, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = finetune(photos, base="tiny", steps=5, patch=16, device="cpu")
    assert result.name == "fineprint-fp-1"
    assert result.train.steps == 6 and result.train.epochs == 2, "5 steps rounded up to whole passes over 3 photos"
    assert result.run == home / "finetune" / "fineprint-fp-1"
    assert not (result.run / "cache").exists() and (result.run / "checkpoints" / "latest.json").is_file()
    assert result.model == home / "models" / "fineprint-fp-1" / "model.safetensors"

    saved = json.loads((result.run / "config.json").read_text())
    assert saved["ratios"] == list(SID_RATIOS) and saved["per_iso_noise"] is True
    assert saved["init_model"] == "tiny" and saved["synthetic"] == str(photos) and saved["cache_inputs"] is True
    assert saved["noise_profile"]["per_iso"][1]["k"] == 3.2

    tuned = load_weights(result.model)
    base = cache.load_model("tiny")
    assert tuned.spec == base.spec
    assert any(not np.array_equal(tuned.state[k].numpy(), base.state[k].numpy()) for k in base.state)

    (row,) = [r for r in cache.list_models() if r.name == "fineprint-fp-1"]
    assert row.user is not None and row.cached and not row.imported
    assert (row.user.camera, row.user.base, row.user.packing) == ("Fineprint FP-1", "tiny", "bayer")
    assert row.user.profile == str(cameraprofiles.profile_path("Fineprint", "FP-1"))
    assert row.user.summary["steps"] == 6 and row.user.summary["photos"] == 3 and row.user.summary["pairs"] == 0
    assert isinstance(row.user.summary["loss"], float)

    # The camera's files get its model without being told; --model overrides.
    shot = _photo(tmp_path / "night.dng", np.random.default_rng(9))
    with caplog.at_level(logging.INFO, logger="seedark"):
        picked = seedark.enhance(shot, ratio=100, device="cpu", tile=0)
    assert "using your model fineprint-fp-1 for the Fineprint FP-1 (from tiny; --model overrides)" in caplog.text
    np.testing.assert_array_equal(picked, seedark.enhance(shot, ratio=100, weights=result.model, device="cpu", tile=0))
    assert not np.array_equal(picked, seedark.enhance(shot, ratio=100, model="tiny", device="cpu", tile=0))


def test_cli_finetune_list_enhance_remove(
    home: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--photos", photos, "--base", "tiny", "--steps", "3", "--patch", "16", "--device", "cpu", "--name", "mine"]
    code, out, err = run_cli(capsys, "finetune", *args)
    assert code == 0, err
    assert out.strip() == str(home / "models" / "mine" / "model.safetensors")
    assert "fine-tuning tiny for the Fineprint FP-1 on 3 photo(s)" in err and "registered mine" in err

    code, out, err = run_cli(capsys, "models", "list")
    assert code == 0, err
    (line,) = [ln for ln in out.splitlines() if ln.startswith("mine ")]
    assert "for the Fineprint FP-1, from tiny (3 steps on 3 photos, loss " in line and "profile " in line
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    (entry,) = [e for e in json.loads(out) if e["name"] == "mine"]
    assert entry["camera"] == "Fineprint FP-1" and entry["base"] == "tiny" and entry["training"]["steps"] == 3

    shot = _photo(tmp_path / "night.dng", np.random.default_rng(9))
    code, out, err = run_cli(capsys, "enhance", shot, "--ratio", "100", "--device", "cpu", "-o", tmp_path / "a.png")
    assert code == 0 and "using your model mine for the Fineprint FP-1" in err
    code, out, err = run_cli(capsys, "enhance", shot, "--ratio", "100", "--model", "tiny", "-o", tmp_path / "b.png")
    assert code == 0 and "using your model" not in err

    other = _photo(tmp_path / "other.dng", np.random.default_rng(9), make="Other", model="Cam")
    code, _, err = run_cli(capsys, "enhance", other, "--ratio", "100", "--device", "cpu", "-o", tmp_path / "c.png")
    assert code == 1 and str(home / "models" / "sony" / "model.safetensors") in err, "another camera: the default"

    code, out, err = run_cli(capsys, "models", "remove", "mine")
    assert code == 0 and not [r for r in cache.list_models() if r.name == "mine"]
    assert "mine" not in cache.user_table().read_text()


def test_batch_picks_the_cameras_model(home: Path, photos: Path, tmp_path: Path) -> None:
    finetune(photos, base="tiny", steps=3, patch=16, device="cpu", name="mine")
    report = seedark.run_batch([photos], tmp_path / "out", ratio=100, device="cpu", tile=0, isolate=False)
    assert len(report.converted) == 3 and not report.failed
    expected = seedark.enhance(photos / "DSC0000.dng", ratio=100, model="mine", device="cpu", tile=0)
    got = np.asarray(Image.open(tmp_path / "out" / "DSC0000.png"), dtype=np.float32) / 255
    assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6


def test_real_pairs_are_mixed_in(home: Path, photos: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    scene = tmp_path / "pairs" / "kitchen"
    scene.mkdir(parents=True)
    _photo(scene / "long.dng", rng, exposure_time=1 / 10)
    _photo(scene / "short.dng", rng, exposure_time=1 / 1000)
    result = finetune(photos, base="tiny", steps=4, patch=16, device="cpu", pairs=tmp_path / "pairs")
    assert result.train.steps == 4, "3 photos and 1 scene: one pass"
    assert result.record.summary["pairs"] == 1
    assert json.loads((result.run / "config.json").read_text())["pairs"] == str(tmp_path / "pairs")


D850 = (1.0405, -0.3755, -0.1270, -0.5461, 1.3787, 0.1793, -0.1040, 0.2015, 0.6785)


def _known_camera_base(tmp_path: Path) -> None:
    """The ``tiny`` model again, now saying it learnt the a7S II (as the official sony model does)."""
    camera = MODELS["sony"].camera
    assert camera is not None
    weights = random_weights(NetworkSpec(4, 4, 2), seed=3)
    cache.import_model(
        "tiny", save_safetensors(weights, tmp_path / "t.safetensors", camera_metadata(camera)), unverified=True
    )


def test_inputs_matched_to_the_base_models_camera(home: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    _known_camera_base(tmp_path)
    photos = tmp_path / "d850"
    photos.mkdir()
    for k in range(2):
        _photo(photos / f"{k}.dng", rng, color_matrix=D850)
    result = finetune(photos, base="tiny", steps=2, patch=16, device="cpu")
    # T = CM_model · CM_file⁻¹, computed here from the two published matrices
    expected = np.array(MODELS["sony"].color_matrix).reshape(3, 3) @ np.linalg.inv(np.array(D850).reshape(3, 3))
    saved = json.loads((result.run / "config.json").read_text())
    np.testing.assert_allclose(np.array(saved["sensor_match"]).reshape(3, 3), expected, rtol=1e-9)
    # the model says it learnt the a7S II's colours, so enhance matches this camera's files the same way
    metadata = load_weights(result.model).metadata
    assert metadata["camera"] == "Sony a7S II" and metadata["camera_matrix"].startswith("0.5838,")

    off = finetune(photos, base="tiny", steps=2, patch=16, device="cpu", name="plain", match_sensor=False)
    assert "sensor_match" not in json.loads((off.run / "config.json").read_text())
    assert "camera_matrix" not in load_weights(off.model).metadata


def test_the_patch_is_matched_before_amplification() -> None:
    """A flat colour patch: each packed pixel's (R, G, B) goes through T, then x ratio, clipped at 1
    (red is clipped: matching after amplification would map the clipped value)."""
    colour = np.array([0.012, 0.006, 0.002])  # normalised R, G, B above black
    mosaic = np.empty((8, 8))
    mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2] = colour[[0, 1, 1, 2]]
    stored_dn = np.round(512 + mosaic * (16383 - 512)).astype(np.uint16)
    pattern, black = np.array([["R", "G"], ["G", "B"]]), np.full((2, 2), 512, np.float32)
    frame = RawFrame(Path("x"), stored_dn, pattern, "bayer", black, 16383, 0)
    stored = (frame.mosaic[:2, :2].astype(np.float64) - 512) / (16383 - 512)
    rgb = np.array([stored[0, 0], stored[0, 1], stored[1, 1]])
    t = np.array([[1.2, -0.1, -0.1], [-0.2, 1.3, -0.1], [0.0, -0.3, 1.3]])
    gt = np.zeros((8, 8, 3), np.uint16)
    inp, _ = paired_patch(frame, gt, 0, 100.0, 4, np.random.default_rng(0), augment_patch=False, match=t)
    want = np.minimum(np.maximum(t @ rgb, 0) * 100, 1)
    np.testing.assert_allclose(inp[:, 0, 0], [want[0], want[1], want[2], want[1]], rtol=1e-5)
    plain, _ = paired_patch(frame, gt, 0, 100.0, 4, np.random.default_rng(0), augment_patch=False)
    np.testing.assert_allclose(plain[:, 0, 0], np.minimum(rgb[[0, 1, 2, 1]] * 100, 1), rtol=1e-5)


def test_per_iso_noise_draws_the_measured_isos() -> None:
    rng = np.random.default_rng(0)
    drawn = {(p.gain, p.read_scale, p.row_scale, p.read_lambda) for p in (iso_params(PROFILE, rng) for _ in range(50))}
    assert drawn == {(e.k, e.read_scale, e.row_scale, e.read_lambda) for e in PROFILE.per_iso}


def test_refusals(home: Path, photos: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    cameraprofiles.profile_path("Fineprint", "FP-1").unlink()
    with pytest.raises(UsageError, match="no noise profile for the Fineprint FP-1: run `seedark calibrate"):
        finetune(photos, base="tiny", steps=1)
    other = save_profile(NoiseProfile(make="Other", model="Cam"), tmp_path / "other.json")
    with pytest.raises(UsageError, match="this noise profile is of the Other Cam, and the photos are from the Fine"):
        finetune(photos, base="tiny", profile=other, steps=1)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _photo(mixed / "a.dng", rng)
    _photo(mixed / "b.dng", rng, make="Other", model="Cam")
    with pytest.raises(CalibrationError, match="files from more than one camera"):
        finetune(mixed, base="tiny", steps=1)
    Image.new("RGB", (8, 8)).save(photos / "x.png")
    with pytest.raises(DatasetError, match=r"takes your camera.s RAW files, and x\.png is an image"):
        finetune(photos, base="tiny", steps=1)
    (photos / "x.png").unlink()
    with pytest.raises(UsageError, match="official model's name"):
        finetune(photos, base="tiny", profile=save_profile(PROFILE, tmp_path / "p.json"), steps=1, name="sony")
