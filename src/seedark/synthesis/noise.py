"""A physics-based low-light noise model, for making training pairs from clean images.

The model and the Sony a7S II calibration are from Wei et al., "A Physics-based
Noise Formation Model for Extreme Low-light Raw Denoising" (ELD, CVPR 2020). In
the camera's raw units (DN, black level subtracted):

* shot noise: ``Poisson(signal / K) * K``, ``K`` the system gain (DN per electron);
* read noise: Tukey-lambda with shape ``lambda`` and scale ``sigma_TL``;
* row noise: one Gaussian offset per sensor row, ``N(0, sigma_r)``;
* quantisation: rounding to whole DN, then clipping to ``[0, white]`` with the black
  level added back.

``K`` is drawn log-uniformly from the calibrated range and the noise scales follow
the calibrated log-linear fits ``log(sigma) = slope * log(K) + intercept + N(0, s)``.
A :class:`NoiseProfile` holds one camera's numbers; :data:`SONY_A7S2` is the
published a7S II calibration, and :func:`load_profile` reads another camera's from
a small JSON file (docs/training.md); they live in seedark.synthesis.noiseprofile.
A profile measured by ``seedark calibrate`` also holds each ISO's numbers, which
:func:`iso_params` draws from (``seedark finetune``).

A sensor model, not a training mechanism: training makes its pairs with it and
``seedark demo`` its dark frame, so it sits below both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seedark.errors import UsageError
from seedark.synthesis.noiseprofile import NoiseProfile

#: Where the uniform draws of the Tukey-lambda quantile function are kept away from 0 and 1.
_U_EPS = 2.0**-53


@dataclass(frozen=True)
class NoiseParams:
    """The noise levels of one synthetic frame."""

    gain: float  # K, DN per electron
    read_scale: float  # sigma_TL
    row_scale: float  # sigma_r
    read_lambda: float


def sample_params(profile: NoiseProfile, rng: np.random.Generator) -> NoiseParams:
    """Draw K log-uniformly, then the read and row noise scales from the calibrated fits."""
    log_k = rng.uniform(math.log(profile.k_min), math.log(profile.k_max))
    log_read = profile.read_slope * log_k + profile.read_intercept + rng.normal(0.0, profile.read_sigma)
    log_row = profile.row_slope * log_k + profile.row_intercept + rng.normal(0.0, profile.row_sigma)
    return NoiseParams(math.exp(log_k), math.exp(log_read), math.exp(log_row), profile.read_lambda)


def iso_params(profile: NoiseProfile, rng: np.random.Generator) -> NoiseParams:
    """The noise measured at one of the profile's ISOs, drawn uniformly (``seedark calibrate``'s
    ``per_iso``); the fits' draw (:func:`sample_params`) for a profile without measurements."""
    if not profile.per_iso:
        return sample_params(profile, rng)
    entry = profile.per_iso[int(rng.integers(len(profile.per_iso)))]
    return NoiseParams(entry.k, entry.read_scale, entry.row_scale, entry.read_lambda)


def typical_params(profile: NoiseProfile, gain: float) -> NoiseParams:
    """The noise levels the calibrated fits give at ``gain`` (K), without the fits' scatter."""
    if not profile.k_min <= gain <= profile.k_max:
        raise UsageError(f"gain K must be in the calibrated range [{profile.k_min}, {profile.k_max}], got {gain}")
    log_k = math.log(gain)
    read = math.exp(profile.read_slope * log_k + profile.read_intercept)
    row = math.exp(profile.row_slope * log_k + profile.row_intercept)
    return NoiseParams(gain, read, row, profile.read_lambda)


def tukey_lambda_quantile(u: np.ndarray, lam: float) -> np.ndarray:
    """Tukey-lambda quantile function ``Q(u) = (u**lam - (1 - u)**lam) / lam`` (lam != 0)."""
    return (np.power(u, lam) - np.power(1.0 - u, lam)) / lam


def tukey_lambda_variance(lam: float) -> float:
    """Variance of the standard Tukey-lambda distribution (finite for lam > -1/2)."""
    g = math.lgamma(lam + 1)
    return 2.0 / lam**2 * (1.0 / (1.0 + 2.0 * lam) - math.exp(2 * g - math.lgamma(2 * lam + 2)))


def sample_tukey_lambda(rng: np.random.Generator, lam: float, scale: float, size: tuple[int, ...]) -> np.ndarray:
    """Tukey-lambda samples by inverse transform sampling of uniform draws."""
    u = np.clip(rng.random(size), _U_EPS, 1.0 - _U_EPS)
    return scale * tukey_lambda_quantile(u, lam)


def add_noise(
    clean: np.ndarray,
    ratio: float,
    params: NoiseParams,
    rng: np.random.Generator,
    *,
    black_level: float | np.ndarray,
    white_level: int,
) -> np.ndarray:
    """A dark raw mosaic (uint16) from a clean one taken ``ratio`` times longer.

    ``clean``: H x W black-subtracted signal in DN at the normal exposure. Rows of
    the array are sensor rows (row noise is per row). ``black_level`` (one value, or
    one per site) is added back before rounding and clipping to ``[0, white_level]``,
    as a camera stores it.
    """
    if clean.ndim != 2:
        raise ValueError(f"expected an H x W mosaic, got shape {clean.shape}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"ratio must be a finite number > 0, got {ratio!r}")
    signal = np.maximum(np.asarray(clean, dtype=np.float64), 0.0) / ratio
    k = params.gain
    noisy = rng.poisson(signal / k).astype(np.float64) * k
    noisy += sample_tukey_lambda(rng, params.read_lambda, params.read_scale, clean.shape)
    noisy += rng.normal(0.0, params.row_scale, size=(clean.shape[0], 1))
    noisy += black_level
    np.round(noisy, out=noisy)
    np.clip(noisy, 0, white_level, out=noisy)
    return noisy.astype(np.uint16)


def synthesize(
    clean: np.ndarray,
    ratio: float,
    profile: NoiseProfile,
    rng: np.random.Generator,
    *,
    black_level: float | None = None,
    white_level: int | None = None,
) -> np.ndarray:
    """:func:`add_noise` with noise levels drawn from ``profile`` (levels default to the profile's)."""
    params = sample_params(profile, rng)
    return add_noise(
        clean,
        ratio,
        params,
        rng,
        black_level=profile.black_level if black_level is None else black_level,
        white_level=profile.white_level if white_level is None else white_level,
    )


__all__ = [
    "NoiseParams",
    "add_noise",
    "iso_params",
    "sample_params",
    "sample_tukey_lambda",
    "synthesize",
    "tukey_lambda_quantile",
    "tukey_lambda_variance",
    "typical_params",
]
