"""Fuji X-Trans: packing as the official test_Fuji.py, the Fuji network, detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import torch

import seedark
from helpers.cli import run_cli
from helpers.rawgen import dark_dng, write_dng
from seedark.errors import UnsupportedSensorError
from seedark.frames.packing import XTRANS_REFERENCE, PackedFrame, amplify, pack_xtrans, xtrans_phase
from seedark.io.raw import RawFrame
from seedark.models.registry import default_model_for
from seedark.models.weights import load_weights

DATA = Path(__file__).parent / "data"
REF_INDICES = np.vectorize({"R": 0, "G": 1, "B": 2}.get)(XTRANS_REFERENCE).astype(np.uint8)


def official_pack_raw(raw_image_visible: np.ndarray) -> np.ndarray:
    """cchen156/Learning-to-See-in-the-Dark test_Fuji.py pack_raw, verbatim but for the argument."""
    im = raw_image_visible.astype(np.float32)
    im = np.maximum(im - 1024, 0) / (16383 - 1024)  # subtract the black level
    img_shape = im.shape
    H = (img_shape[0] // 6) * 6
    W = (img_shape[1] // 6) * 6
    out = np.zeros((H // 3, W // 3, 9))
    # 0 R
    out[0::2, 0::2, 0] = im[0:H:6, 0:W:6]
    out[0::2, 1::2, 0] = im[0:H:6, 4:W:6]
    out[1::2, 0::2, 0] = im[3:H:6, 1:W:6]
    out[1::2, 1::2, 0] = im[3:H:6, 3:W:6]
    # 1 G
    out[0::2, 0::2, 1] = im[0:H:6, 2:W:6]
    out[0::2, 1::2, 1] = im[0:H:6, 5:W:6]
    out[1::2, 0::2, 1] = im[3:H:6, 2:W:6]
    out[1::2, 1::2, 1] = im[3:H:6, 5:W:6]
    # 1 B
    out[0::2, 0::2, 2] = im[0:H:6, 1:W:6]
    out[0::2, 1::2, 2] = im[0:H:6, 3:W:6]
    out[1::2, 0::2, 2] = im[3:H:6, 0:W:6]
    out[1::2, 1::2, 2] = im[3:H:6, 4:W:6]
    # 4 R
    out[0::2, 0::2, 3] = im[1:H:6, 2:W:6]
    out[0::2, 1::2, 3] = im[2:H:6, 5:W:6]
    out[1::2, 0::2, 3] = im[5:H:6, 2:W:6]
    out[1::2, 1::2, 3] = im[4:H:6, 5:W:6]
    # 5 B
    out[0::2, 0::2, 4] = im[2:H:6, 2:W:6]
    out[0::2, 1::2, 4] = im[1:H:6, 5:W:6]
    out[1::2, 0::2, 4] = im[4:H:6, 2:W:6]
    out[1::2, 1::2, 4] = im[5:H:6, 5:W:6]
    out[:, :, 5] = im[1:H:3, 0:W:3]
    out[:, :, 6] = im[1:H:3, 1:W:3]
    out[:, :, 7] = im[2:H:3, 0:W:3]
    out[:, :, 8] = im[2:H:3, 1:W:3]
    return out


def xframe(mosaic: np.ndarray, pattern: np.ndarray = XTRANS_REFERENCE, black: float = 1024) -> RawFrame:
    return RawFrame(Path("x.raf"), mosaic, pattern, "xtrans", np.full((6, 6), black, np.float32), 16383, 0)


def test_packing_matches_official_test_fuji(rng: np.random.Generator) -> None:
    mosaic = rng.integers(0, 16384, size=(67, 100), dtype=np.uint16)  # not multiples of 6
    ours = pack_xtrans(xframe(mosaic))
    want = official_pack_raw(mosaic)
    assert ours.shape == want.shape == (22, 32, 9)
    np.testing.assert_array_equal(ours, want.astype(np.float32))


@pytest.mark.parametrize(("dy", "dx"), [(0, 1), (2, 3), (5, 5), (3, 0)])
def test_other_cfa_phases_put_the_same_sites_in_the_same_channels(rng: np.random.Generator, dy: int, dx: int) -> None:
    big = rng.integers(0, 16384, size=(80, 80), dtype=np.uint16)
    # A sensor whose visible area starts (6-dy, 6-dx) pixels into the reference pattern.
    sy, sx = (6 - dy) % 6, (6 - dx) % 6
    shifted = big[sy:, sx:]
    pattern = np.roll(XTRANS_REFERENCE, (-sy, -sx), axis=(0, 1))
    y0, x0 = xtrans_phase(pattern)
    assert (np.roll(pattern, (-y0, -x0), axis=(0, 1)) == XTRANS_REFERENCE).all()
    packed = pack_xtrans(xframe(shifted, pattern))
    reference = pack_xtrans(xframe(big[sy + y0 :, sx + x0 :]))
    assert packed.shape == reference.shape
    np.testing.assert_array_equal(packed, reference)


def test_non_xtrans_6x6_is_refused() -> None:
    with pytest.raises(UnsupportedSensorError, match="not an X-Trans"):
        xtrans_phase(np.full((6, 6), "G"))


@pytest.fixture
def xtrans_dng(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    mosaic = rng.integers(1024, 1400, size=(100, 130), dtype=np.uint16)
    path = write_dng(
        tmp_path / "DSCF0001.dng",
        mosaic,
        cfa=REF_INDICES,
        black_level=1024,
        make="FUJIFILM",
        model="X-T2",
        orientation=6,
    )
    return path, mosaic


def test_rawpy_reads_a_generated_xtrans_dng(xtrans_dng: tuple[Path, np.ndarray]) -> None:
    path, mosaic = xtrans_dng
    frame = seedark.read_raw(path)
    assert frame.sensor == "xtrans"
    assert (frame.pattern == XTRANS_REFERENCE).all()
    np.testing.assert_array_equal(frame.mosaic, mosaic)


def test_enhance_xtrans_matches_tf_fixture_network(xtrans_dng: tuple[Path, np.ndarray]) -> None:
    path, mosaic = xtrans_dng
    weights = load_weights(DATA / "tf_fuji_w4")
    assert weights.spec.block == 3 and weights.spec.in_channels == 9
    out = seedark.enhance(path, ratio=100, weights=weights, device="cpu", precision="fp32", tile=0)
    inp = np.minimum(official_pack_raw(mosaic)[None] * 100, 1.0).astype(np.float32)
    with torch.no_grad():
        net = weights.build()
        ref = net(torch.from_numpy(inp).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()[0]
    ref = np.rot90(np.clip(ref, 0, 1), -1)  # orientation 6 = 90° clockwise
    assert out.shape == ref.shape == (126, 96, 3)
    assert float(np.abs(out - ref).max()) <= 1e-4
    with rawpy.imread(str(path)) as raw:
        # Demosaicing generated X-Trans DNGs works with LibRaw's LINEAR method only.
        full = raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR)
    assert full.shape[0] - 6 < out.shape[0] <= full.shape[0]
    assert full.shape[1] - 6 < out.shape[1] <= full.shape[1]


def test_xtrans_tiles_align_with_the_pattern(
    xtrans_dng: tuple[Path, np.ndarray], tmp_path: Path, rng: np.random.Generator
) -> None:
    mosaic = rng.integers(1024, 1600, size=(420, 366), dtype=np.uint16)
    path = write_dng(tmp_path / "big.dng", mosaic, cfa=REF_INDICES, black_level=1024)
    engine = seedark.Engine(load_weights(DATA / "tf_fuji_w4"), device="cpu", precision="fp32")
    whole = seedark.enhance(path, ratio=50, engine=engine, tile=0)
    tiled = seedark.enhance(path, ratio=50, engine=engine, tile=32)
    assert float(np.abs(whole - tiled).max()) <= 1e-5


def test_sensor_and_model_mismatch(
    xtrans_dng: tuple[Path, np.ndarray], tmp_path: Path, rng: np.random.Generator
) -> None:
    path, _ = xtrans_dng
    with pytest.raises(UnsupportedSensorError, match=r"X-Trans sensor, but the model takes a Bayer.*--model fuji"):
        seedark.enhance(path, ratio=10, weights=DATA / "tf_sony_w4")
    bayer = dark_dng(tmp_path / "bayer.dng", rng, (32, 32), (500, 900))
    with pytest.raises(UnsupportedSensorError, match=r"Bayer sensor, but the model takes an X-Trans.*--model sony"):
        seedark.enhance(bayer, ratio=10, weights=DATA / "tf_fuji_w4")


def test_xtrans_picks_the_fuji_model(
    xtrans_dng: tuple[Path, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert default_model_for("xtrans") == "fuji"
    assert default_model_for("bayer") == "sony"
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    path, _ = xtrans_dng
    code, _, err = run_cli(capsys, "enhance", path, "--ratio", "100")
    assert code == 1
    assert "fuji" in err and "models import fuji" in err


@pytest.mark.parametrize(("dy", "dx"), [(0, 0), (2, 3), (5, 1)])
def test_lazy_xtrans_windows_are_the_whole_packing(rng: np.random.Generator, dy: int, dx: int) -> None:
    big = rng.integers(0, 16384, size=(80, 91), dtype=np.uint16)
    pattern = np.roll(XTRANS_REFERENCE, (-dy, -dx), axis=(0, 1))
    f = RawFrame(Path("x.raf"), big, pattern, "xtrans", rng.uniform(1000, 1040, (6, 6)).astype(np.float32), 16383, 0)
    whole = amplify(pack_xtrans(f), 60.0)
    lazy = PackedFrame(f, 60.0)
    assert lazy.shape == whole.shape
    np.testing.assert_array_equal(np.asarray(lazy), whole)
    h, w = whole.shape[:2]
    for y0, y1, x0, x1 in [(0, h, 0, w), (1, 2, 3, 4), (3, h, 0, 5), (2, 9, 4, 10), (h - 1, h, w - 1, w), (5, 5, 1, 3)]:
        np.testing.assert_array_equal(lazy[y0:y1, x0:x1], whole[y0:y1, x0:x1])
