"""PSNR and SSIM: hand-computed cases (always run) and agreement with scikit-image.

The hand-computed SSIM follows Wang et al. 2004 with the constants of that paper
written out here (K1 = 0.01, K2 = 0.03), a 7x7 uniform window and the sample
covariance (normalised by 48), which is scikit-image's default
(``use_sample_covariance=True``). Only the comparisons with scikit-image skip when it
is not installed.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from seedark.training import metrics
from seedark.training.metrics import psnr, ssim

# Wang, Bovik, Sheikh, Simoncelli (2004), "Image quality assessment: from error
# visibility to structural similarity", section III-B: K1 = 0.01, K2 = 0.03.
PAPER_K1, PAPER_K2 = 0.01, 0.03
WINDOW = 7


@pytest.fixture
def skm() -> ModuleType:
    return pytest.importorskip("skimage.metrics", reason="scikit-image (a dev dependency) checks the metrics")


def _pair(rng: np.random.Generator, shape: tuple[int, ...], noise: float, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    # a smooth image plus noise, so SSIM is neither ~0 nor ~1
    gt = rng.random(shape)
    for axis in (0, 1):
        gt = (gt + np.roll(gt, 1, axis=axis) + np.roll(gt, -1, axis=axis)) / 3
    out = np.clip(gt + rng.normal(0, noise, shape), 0, 1)
    return gt.astype(dtype), out.astype(dtype)


def window_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of one 7x7 window, straight from the formula."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    assert x.shape == y.shape == (WINDOW, WINDOW)
    c1 = (PAPER_K1 * data_range) ** 2
    c2 = (PAPER_K2 * data_range) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = ((x - mx) * (y - my)).sum() / (x.size - 1)
    return float((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))


def reference_ssim(gt: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> float:
    """Mean of window_ssim over every window wholly inside the image, then over channels."""
    if gt.ndim == 2:
        gt, out = gt[:, :, None], out[:, :, None]
    h, w, channels = gt.shape
    per_channel = []
    for c in range(channels):
        values = [
            window_ssim(gt[r : r + WINDOW, q : q + WINDOW, c], out[r : r + WINDOW, q : q + WINDOW, c], data_range)
            for r in range(h - WINDOW + 1)
            for q in range(w - WINDOW + 1)
        ]
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


@pytest.mark.parametrize(("mu_x", "mu_y"), [(0.3, 0.5), (0.2, 0.2), (0.0, 0.9), (0.05, 0.01)])
def test_constant_images_by_hand(mu_x: float, mu_y: float) -> None:
    # no variance, no covariance: the contrast-structure term is C2 / C2 = 1
    c1 = (0.01 * 1.0) ** 2
    want = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    got = ssim(np.full((7, 7), mu_x), np.full((7, 7), mu_y))
    assert got == pytest.approx(want, abs=1e-9)


def test_single_window_by_hand() -> None:
    """A 7x7 pair with known means, variances and covariance, worked through in full."""
    # x: a ramp 0, 1/48, ..., 48/48 (row-major); y = 0.5 x + 0.2 with one pixel changed.
    x = np.arange(49, dtype=np.float64).reshape(7, 7) / 48
    y = 0.5 * x + 0.2
    y[3, 3] += 0.25
    # By hand: mean(x) = 0.5; sum((x - 0.5)^2) = sum_{k=0..48} (k - 24)^2 / 48^2 = 9800 / 2304,
    # so var(x) = 9800 / 2304 / 48. y = 0.5 x + 0.2 + 0.25 e with e the centre pixel (x = 0.5 there):
    # mean(y) = 0.45 + 0.25 / 49; cov(x, y) = 0.5 var(x) + 0.25 (x_c - mean x) / 48 = 0.5 var(x);
    # var(y) = 0.25 var(x) + 0.25^2 (1 - 1/49) / 48 (the 0.5 x and e parts are uncorrelated).
    var_x = 9800 / 2304 / 48
    mu_x, mu_y = 0.5, 0.45 + 0.25 / 49
    cov = 0.5 * var_x
    var_y = 0.25 * var_x + 0.25**2 * (1 - 1 / 49) / 48
    c1, c2 = 0.01**2, 0.03**2
    want = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    assert window_ssim(x, y) == pytest.approx(want, abs=1e-12)  # the helper agrees with the algebra
    assert ssim(x, y) == pytest.approx(want, abs=1e-9)
    # the same on paper: var(x) = 0.0886140, cov = 0.0443070, var(y) = 0.0234290, mean(y) = 0.4551020;
    # luminance 0.455202 / 0.457218 = 0.995591, contrast-structure 0.089514 / 0.112943 = 0.792558
    assert ssim(x, y) == pytest.approx(0.995591 * 0.792558, abs=2e-6)
    # three channels: the mean over channels of each channel's value
    xs = np.stack([x, 1 - x, x], axis=2)
    ys = np.stack([y, y, x], axis=2)
    per_channel = [window_ssim(xs[:, :, c], ys[:, :, c]) for c in range(3)]
    assert ssim(xs, ys) == pytest.approx(np.mean(per_channel), abs=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "noise"), [((7, 7), 0.2), ((7, 7, 3), 0.05), ((12, 15, 3), 0.1), ((9, 30), 0.3)])
def test_matches_the_formula_window_by_window(
    rng: np.random.Generator, shape: tuple[int, ...], noise: float, dtype: type
) -> None:
    gt, out = _pair(rng, shape, noise, dtype)
    assert ssim(gt, out) == pytest.approx(reference_ssim(gt, out), abs=1e-9)
    # data_range scales C1 and C2: images on a 0..255 scale give the same value
    assert ssim(gt * 255, out * 255, data_range=255) == pytest.approx(reference_ssim(gt, out), abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "noise"), [((7, 7, 3), 0.1), ((40, 57, 3), 0.05), ((64, 48, 3), 0.3), ((33, 29), 0.1)]
)
def test_matches_skimage(
    skm: ModuleType, rng: np.random.Generator, shape: tuple[int, ...], noise: float, dtype: type
) -> None:
    gt, out = _pair(rng, shape, noise, dtype)
    channel_axis = 2 if len(shape) == 3 else None
    want_ssim = skm.structural_similarity(gt, out, data_range=1.0, channel_axis=channel_axis)
    want_psnr = skm.peak_signal_noise_ratio(gt, out, data_range=1.0)
    # scikit-image keeps float32 images in float32; on a single 7x7 window that rounding alone is ~1e-6
    tolerance = 1e-5 if dtype == np.float32 and gt.size < 1000 else 1e-6
    assert ssim(gt, out) == pytest.approx(float(want_ssim), abs=tolerance)
    assert psnr(gt, out) == pytest.approx(float(want_psnr), abs=1e-6)


def test_row_strips_do_not_change_the_result(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    gt, out = _pair(rng, (30, 12, 3), 0.1, np.float32)
    whole = ssim(gt, out)
    monkeypatch.setattr(metrics, "_STRIP_ROWS", 5)
    assert ssim(gt, out) == pytest.approx(whole, abs=1e-12)
    assert ssim(gt, out) == pytest.approx(reference_ssim(gt, out), abs=1e-9)


def test_row_strips_match_skimage(skm: ModuleType, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    gt, out = _pair(rng, (70, 40, 3), 0.1, np.float32)
    monkeypatch.setattr(metrics, "_STRIP_ROWS", 9)
    want = skm.structural_similarity(gt, out, data_range=1.0, channel_axis=2)
    assert ssim(gt, out) == pytest.approx(float(want), abs=1e-6)


def test_psnr_by_hand(rng: np.random.Generator) -> None:
    gt = rng.random((10, 12, 3)).astype(np.float32)
    out = gt.copy()
    out[0, 0, 0] += 0.5
    mse = 0.25 / gt.size
    assert psnr(gt, out) == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)


def test_psnr_data_range_by_hand() -> None:
    # every pixel off by 2 on a 0..255 scale: MSE 4, PSNR = 10 log10(255^2 / 4)
    gt = np.full((4, 5), 100.0)
    assert psnr(gt, gt + 2, data_range=255) == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-9)
    assert psnr(gt / 255, (gt + 2) / 255) == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-9)


def test_identical_images(rng: np.random.Generator) -> None:
    gt = rng.random((16, 16, 3)).astype(np.float32)
    assert psnr(gt, gt) == math.inf
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-9)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.zeros((6, 20, 3)), np.zeros((6, 20, 3)))
