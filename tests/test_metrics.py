"""PSNR and SSIM agree with scikit-image's peak_signal_noise_ratio / structural_similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seedark import metrics
from seedark.metrics import psnr, ssim

skm = pytest.importorskip("skimage.metrics", reason="scikit-image (a dev dependency) checks the metrics")


def _pair(rng: np.random.Generator, shape: tuple[int, ...], noise: float, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    # a smooth image plus noise, so SSIM is neither ~0 nor ~1
    gt = rng.random(shape)
    for axis in (0, 1):
        gt = (gt + np.roll(gt, 1, axis=axis) + np.roll(gt, -1, axis=axis)) / 3
    out = np.clip(gt + rng.normal(0, noise, shape), 0, 1)
    return gt.astype(dtype), out.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "noise"), [((7, 7, 3), 0.1), ((40, 57, 3), 0.05), ((64, 48, 3), 0.3), ((33, 29), 0.1)]
)
def test_matches_skimage(rng: np.random.Generator, shape: tuple[int, ...], noise: float, dtype: type) -> None:
    gt, out = _pair(rng, shape, noise, dtype)
    channel_axis = 2 if len(shape) == 3 else None
    want_ssim = skm.structural_similarity(gt, out, data_range=1.0, channel_axis=channel_axis)
    want_psnr = skm.peak_signal_noise_ratio(gt, out, data_range=1.0)
    # scikit-image keeps float32 images in float32; on a single 7x7 window that rounding alone is ~1e-6
    tolerance = 1e-5 if dtype == np.float32 and gt.size < 1000 else 1e-6
    assert ssim(gt, out) == pytest.approx(float(want_ssim), abs=tolerance)
    assert psnr(gt, out) == pytest.approx(float(want_psnr), abs=1e-6)


def test_row_strips_do_not_change_the_result(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    gt, out = _pair(rng, (70, 40, 3), 0.1, np.float32)
    whole = ssim(gt, out)
    monkeypatch.setattr(metrics, "_STRIP_ROWS", 9)
    assert ssim(gt, out) == pytest.approx(whole, abs=1e-12)
    want = skm.structural_similarity(gt, out, data_range=1.0, channel_axis=2)
    assert ssim(gt, out) == pytest.approx(float(want), abs=1e-6)


def test_psnr_by_hand(rng: np.random.Generator) -> None:
    gt = rng.random((10, 12, 3)).astype(np.float32)
    out = gt.copy()
    out[0, 0, 0] += 0.5
    mse = 0.25 / gt.size
    assert psnr(gt, out) == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)


def test_identical_images(rng: np.random.Generator) -> None:
    gt = rng.random((16, 16, 3)).astype(np.float32)
    assert psnr(gt, gt) == math.inf
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-9)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.zeros((6, 20, 3)), np.zeros((6, 20, 3)))
