"""The physics-based noise model: distributions, calibration fits, profiles, sRGB inversion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from seedark.errors import UsageError
from seedark.synthesis.noise import (
    NoiseParams,
    add_noise,
    sample_params,
    sample_tukey_lambda,
    synthesize,
    tukey_lambda_quantile,
    tukey_lambda_variance,
)
from seedark.synthesis.noiseprofile import SONY_A7S2, NoiseProfile, load_profile, save_profile
from seedark.synthesis.unprocess import srgb_to_linear, srgb_to_mosaic


def test_a7s2_calibration_is_the_published_one() -> None:
    p = SONY_A7S2
    assert (p.k_min, p.k_max) == (0.0939, 6.0106)
    assert p.read_lambda == -0.26
    assert (p.read_slope, p.read_intercept, p.read_sigma) == (0.4621, 0.5657, 0.2634)
    assert (p.row_slope, p.row_intercept, p.row_sigma) == (0.5275, -0.5917, 0.2943)
    assert (p.black_level, p.white_level) == (512, 16383)


def test_tukey_lambda_quantile_and_variance(rng: np.random.Generator) -> None:
    lam = -0.26
    assert tukey_lambda_quantile(np.array([0.5]), lam)[0] == pytest.approx(0.0)
    u = np.array([0.1, 0.3])
    np.testing.assert_allclose(tukey_lambda_quantile(u, lam), -tukey_lambda_quantile(1 - u, lam))
    # lambda = 1 is uniform on [-1, 1]: variance 1/3; otherwise the integral of Q(u)^2 (the mean is 0)
    assert tukey_lambda_variance(1.0) == pytest.approx(1 / 3)
    grid = (np.arange(1_000_000) + 0.5) / 1_000_000
    assert tukey_lambda_variance(0.14) == pytest.approx(np.mean(tukey_lambda_quantile(grid, 0.14) ** 2), rel=1e-6)
    samples = sample_tukey_lambda(rng, lam, 2.0, (400_000,))
    assert np.isfinite(samples).all()
    assert samples.mean() == pytest.approx(0.0, abs=0.05)
    assert samples.var() == pytest.approx(4.0 * tukey_lambda_variance(lam), rel=0.05)


def test_sample_params_follow_the_log_linear_fits(rng: np.random.Generator) -> None:
    draws = [sample_params(SONY_A7S2, rng) for _ in range(4000)]
    k = np.log([d.gain for d in draws])
    assert k.min() >= math.log(SONY_A7S2.k_min) and k.max() <= math.log(SONY_A7S2.k_max)
    # log-uniform: uniform in log space
    assert k.mean() == pytest.approx((math.log(0.0939) + math.log(6.0106)) / 2, abs=0.05)
    read_resid = np.log([d.read_scale for d in draws]) - (0.4621 * k + 0.5657)
    row_resid = np.log([d.row_scale for d in draws]) - (0.5275 * k - 0.5917)
    assert read_resid.mean() == pytest.approx(0.0, abs=0.02) and read_resid.std() == pytest.approx(0.2634, rel=0.05)
    assert row_resid.mean() == pytest.approx(0.0, abs=0.02) and row_resid.std() == pytest.approx(0.2943, rel=0.05)
    assert all(d.read_lambda == -0.26 for d in draws[:5])


def test_add_noise_mean_and_variance(rng: np.random.Generator) -> None:
    params = NoiseParams(gain=2.0, read_scale=1.5, row_scale=0.0, read_lambda=-0.26)
    clean = np.full((400, 500), 40_000.0)
    noisy = add_noise(clean, 100.0, params, rng, black_level=512, white_level=16383)
    assert noisy.dtype == np.uint16
    signal = 400.0
    assert noisy.mean() == pytest.approx(512 + signal, abs=0.2)
    want = params.gain * signal + params.read_scale**2 * tukey_lambda_variance(-0.26) + 1 / 12
    assert noisy.astype(np.float64).var() == pytest.approx(want, rel=0.03)


def test_row_noise_is_one_offset_per_row(rng: np.random.Generator) -> None:
    params = NoiseParams(gain=1e-6, read_scale=1e-6, row_scale=4.0, read_lambda=-0.26)
    noisy = add_noise(np.full((300, 2000), 1000.0), 1.0, params, rng, black_level=512, white_level=16383)
    rows = noisy.astype(np.float64)
    # within a row only rounding varies; across rows the offset has sd 4
    assert rows.std(axis=1).max() <= 1.0
    assert rows.mean(axis=1).std() == pytest.approx(4.0, rel=0.15)


def test_quantisation_and_clipping(rng: np.random.Generator) -> None:
    params = NoiseParams(gain=1.0, read_scale=50.0, row_scale=10.0, read_lambda=-0.26)
    clean = np.concatenate([np.zeros((20, 50)), np.full((20, 50), 1e7)])
    noisy = add_noise(clean, 1.0, params, rng, black_level=512, white_level=16383)
    assert noisy.min() >= 0 and noisy.max() == 16383
    assert (noisy[20:] == 16383).all()
    # the dark half sits around the black level, both sides of it
    assert (noisy[:20] < 512).any() and (noisy[:20] > 512).any()


def test_per_site_black_levels(rng: np.random.Generator) -> None:
    params = NoiseParams(gain=1e-6, read_scale=1e-6, row_scale=1e-6, read_lambda=-0.26)
    black = np.tile(np.array([[500.0, 510.0], [520.0, 530.0]]), (4, 4))
    noisy = add_noise(np.zeros((8, 8)), 1.0, params, rng, black_level=black, white_level=16383)
    np.testing.assert_array_equal(noisy, black.astype(np.uint16))


def test_synthesize_is_reproducible_and_rejects_bad_ratios() -> None:
    clean = np.full((16, 16), 3000.0)
    a = synthesize(clean, 100, SONY_A7S2, np.random.default_rng(5))
    b = synthesize(clean, 100, SONY_A7S2, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(UsageError, match="ratio"):
        synthesize(clean, 0, SONY_A7S2, np.random.default_rng(5))


def test_profile_json_round_trip_and_partial_profiles(tmp_path: Path) -> None:
    other = NoiseProfile(name="MyCam", k_min=0.5, k_max=3.0, read_lambda=0.1, black_level=256, white_level=4095)
    path = save_profile(other, tmp_path / "mycam.json")
    assert load_profile(path) == other
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"name": "Partial", "k_max": 4.0}))
    loaded = load_profile(partial)
    assert loaded.k_max == 4.0 and loaded.k_min == SONY_A7S2.k_min and loaded.name == "Partial"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"k_mn": 1}', "unknown noise profile field"),
        ('{"k_min": "big"}', "must be a number"),
        ('{"k_min": 5, "k_max": 1}', "k_min <= k_max"),
        ('{"read_lambda": -0.6}', "read_lambda"),
        ('{"white_level": 100.5}', "must be an integer"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not a readable JSON"),
    ],
)
def test_bad_profiles_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        load_profile(path)
    assert info.value.path == path


def test_srgb_inversion_and_mosaic() -> None:
    want = [0, 0.04045 / 12.92, 0.21404, 1]
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])), want, atol=1e-5)
    image = np.zeros((4, 6, 3))
    image[..., 0], image[..., 1], image[..., 2] = 1.0, 0.5, 0.25
    mosaic = srgb_to_mosaic(image, black_level=512, white_level=16383, wb=(2.0, 1.0, 1.5))
    scale = 16383 - 512
    assert mosaic[0, 0] == pytest.approx(scale / 2.0)  # R site
    assert mosaic[0, 1] == pytest.approx(scale * 0.21404, rel=1e-4)  # G sites
    assert mosaic[1, 0] == mosaic[0, 1]
    assert mosaic[1, 1] == pytest.approx(scale * srgb_to_linear(np.array(0.25)) / 1.5)  # B site
    with pytest.raises(ValueError, match="even-sized"):
        srgb_to_mosaic(np.zeros((3, 4, 3)), black_level=0, white_level=10)
