"""Measuring a camera's low-light noise from dark and flat frames: the estimators (NumPy only).

What ``seedark calibrate`` computes (seedark.training.calibrate reads the files and
calls these), in the camera's DN, per ISO, following ELD (Wei et al., CVPR 2020):

* **black level**: the mean of the dark frames (read and row noise have mean 0);
* **row noise**: the spread of each row's mean about the frame's mean, less the share
  the read noise has in a mean of W pixels: ``var(row means) - var(within rows) / W``;
* **read noise**: the pixels less their row's mean, fitted as Tukey-lambda: the shape
  λ maximises the probability-plot correlation coefficient (PPCC) between the sorted
  values and the distribution's order-statistic medians (Filliben's), the scale s is
  the slope of that probability plot;
* **system gain K** (DN per electron) by photon transfer: two flats at the same
  exposure differ by noise alone (the light, its unevenness and the sensor's fixed
  pattern cancel), and with the row offsets taken out ``var(a - b) / 2 = K · signal +
  c``; the slope over several exposure levels is K.

Across ISOs, ``log s`` and ``log σ_row`` are fitted against ``log K`` (ELD's model: the
fields of :class:`~seedark.synthesis.noiseprofile.NoiseProfile`).

Each frame is summarised on its own (:func:`dark_stats`, :func:`flat_pair_stats`), so a
calibration holds one or two frames in memory at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seedark.synthesis.noiseprofile import IsoNoise, NoiseProfile

#: Read-noise values kept per dark frame for the Tukey-lambda fit (a random sample).
SAMPLE_PER_FRAME = 40_000
#: The Tukey-lambda shapes searched (a profile's read_lambda must lie in (-0.5, 1)).
LAMBDA_RANGE = (-0.45, 0.95)
#: A fitted shape this close to 0 (the logistic limit) is stored as ±this: 0 has no closed form.
LAMBDA_FLOOR = 1e-3
#: A row-noise scale no smaller than this, so that its logarithm can be fitted.
ROW_FLOOR = 1e-3
#: Flats with more than this share of sites at the white level are saturated.
SATURATED_SHARE = 0.001
#: Dark frames with more than this share of sites at 0 were clipped by the camera.
CLIPPED_SHARE = 0.01
#: Flats whose brightest and darkest eighths differ by more than this, relative to the mean, are uneven.
UNEVEN_SPREAD = 1.0
#: The two flats of a pair may differ in brightness by this much (flicker); more is another exposure.
PAIR_MISMATCH = 0.10


# --------------------------------------------------------------------------- dark frames


@dataclass(frozen=True)
class DarkStats:
    """One dark frame, summarised."""

    mean: float  # DN
    row_var: float  # variance of the row means about the frame's mean (unbiased)
    within_var: float  # variance of the pixels about their row's mean (unbiased)
    width: int  # pixels per row
    clipped: float  # share of sites at 0
    sample: np.ndarray  # pixels less their row's mean, a random sample (float64)


def dark_stats(mosaic: np.ndarray, rng: np.random.Generator, sample_size: int = SAMPLE_PER_FRAME) -> DarkStats:
    """Summarise a dark frame (H x W raw DN)."""
    x = np.asarray(mosaic, dtype=np.float64)
    rows = x.mean(axis=1, keepdims=True)
    residual = x - rows
    h, w = x.shape
    within = float(np.square(residual).sum() / (h * (w - 1)))
    flat = residual.ravel()
    sample = flat[rng.choice(flat.size, size=min(sample_size, flat.size), replace=False)]
    return DarkStats(
        mean=float(x.mean()),
        row_var=float(np.var(rows, ddof=1)),
        within_var=within,
        width=w,
        clipped=float(np.count_nonzero(x <= 0) / x.size),
        sample=sample,
    )


def black_level(darks: Sequence[DarkStats]) -> float:
    """The black level: the mean of the dark frames."""
    return float(np.mean([d.mean for d in darks]))


def row_scale(darks: Sequence[DarkStats]) -> float:
    """The standard deviation of the row offsets: the spread of the row means, less the read
    noise's share in a mean of ``width`` pixels (never below :data:`ROW_FLOOR`)."""
    share = np.mean([d.within_var / d.width for d in darks])
    variance = float(np.mean([d.row_var for d in darks]) - share)
    return max(math.sqrt(max(variance, 0.0)), ROW_FLOOR)


# --------------------------------------------------------------------------- Tukey lambda by PPCC


def filliben_medians(n: int) -> np.ndarray:
    """Filliben's approximation of the medians of the n uniform order statistics (n >= 2)."""
    m = (np.arange(1, n + 1) - 0.3175) / (n + 0.365)
    m[0] = 1.0 - 0.5 ** (1.0 / n)
    m[-1] = 0.5 ** (1.0 / n)
    return m


def _quantile(u: np.ndarray, lam: float) -> np.ndarray:
    """The standard Tukey-lambda quantile function; the logistic one at lam = 0."""
    if abs(lam) < 1e-9:
        return np.log(u / (1.0 - u))
    return (np.power(u, lam) - np.power(1.0 - u, lam)) / lam


def _ppcc(ordered: np.ndarray, medians: np.ndarray, lam: float) -> float:
    return float(np.corrcoef(ordered, _quantile(medians, lam))[0, 1])


def fit_tukey_lambda(sample: np.ndarray) -> tuple[float, float]:
    """(shape λ, scale s) of a zero-centred sample, by the probability-plot correlation.

    λ maximises the correlation between the sorted sample and the Tukey-lambda quantiles
    of :func:`filliben_medians` (a grid of step 0.01 over :data:`LAMBDA_RANGE`, then a
    golden-section search around the best); s is the least-squares slope of that plot.
    """
    ordered = np.sort(np.asarray(sample, dtype=np.float64).ravel())
    medians = filliben_medians(ordered.size)
    grid = np.arange(LAMBDA_RANGE[0], LAMBDA_RANGE[1] + 1e-9, 0.01)
    best = int(np.argmax([_ppcc(ordered, medians, lam) for lam in grid]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(30):  # the bracket shrinks to 0.02 * 0.618**30, far below any use
        c, d = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if _ppcc(ordered, medians, c) > _ppcc(ordered, medians, d):
            hi = d
        else:
            lo = c
    lam = float((lo + hi) / 2.0)
    q = _quantile(medians, lam)
    scale = float(np.cov(ordered, q)[0, 1] / np.var(q, ddof=1))
    if abs(lam) < LAMBDA_FLOOR:
        lam = math.copysign(LAMBDA_FLOOR, lam)
    return lam, scale


# --------------------------------------------------------------------------- flat pairs and gain


@dataclass(frozen=True)
class FlatPairStats:
    """Two flats at one exposure, summarised: mean signal above black, and half the variance of
    their difference with the row offsets taken out."""

    signal: float  # DN above black
    variance: float


def _by_site(x: np.ndarray, period: int) -> np.ndarray:
    """Per colour site of the CFA tile (period x period), the mean of x: a period x period array."""
    h, w = x.shape[0] // period * period, x.shape[1] // period * period
    return x[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))


def flat_pair_stats(a: np.ndarray, b: np.ndarray, black: float, period: int = 2) -> FlatPairStats:
    """Photon transfer of one pair of flats (H x W raw DN) above the black level ``black``.

    ``b`` is first scaled to ``a``'s brightness per CFA site (``period``: 2 Bayer, 6 X-Trans),
    so a light that flickered between the shots does not leave its pattern in the
    difference; then each row's mean is taken out of the difference (row noise), and the
    remaining variance is corrected for that (W / (W - 1)) and halved.
    """
    fa = np.asarray(a, dtype=np.float64) - black
    fb = np.asarray(b, dtype=np.float64) - black
    gain = _by_site(fa, period) / np.maximum(_by_site(fb, period), 1e-9)
    reps = (-(-fa.shape[0] // period), -(-fa.shape[1] // period))
    diff = fa - fb * np.tile(gain, reps)[: fa.shape[0], : fa.shape[1]]
    diff -= diff.mean(axis=1, keepdims=True)
    w = diff.shape[1]
    variance = float(np.square(diff).mean() * w / (w - 1) / 2.0)
    return FlatPairStats(float((fa.mean() + fb.mean()) / 2.0), variance)


def pair_mismatch(a: np.ndarray, b: np.ndarray, black: float) -> float:
    """How much brighter one flat of a pair is than the other: |mean a - mean b| / mean."""
    ma = float(np.mean(a, dtype=np.float64)) - black
    mb = float(np.mean(b, dtype=np.float64)) - black
    return abs(ma - mb) / max((ma + mb) / 2.0, 1e-9)


def fit_gain(pairs: Sequence[FlatPairStats]) -> float:
    """K, the slope of variance against signal over the pairs (weighted least squares: each
    variance's own spread grows with it, so each point is weighted by 1 / variance²)."""
    x = np.array([p.signal for p in pairs])
    y = np.array([p.variance for p in pairs])
    weights = 1.0 / np.maximum(y, 1e-12) ** 2
    slope, _ = np.polyfit(x, y, 1, w=np.sqrt(weights))
    return float(slope)


def flat_problem(mosaic: np.ndarray, black: float, white: int) -> str | None:
    """Why a flat cannot serve (saturated, or not evenly lit), or None when it can."""
    x = np.asarray(mosaic)
    saturated = np.count_nonzero(x >= white) / x.size
    if saturated > SATURATED_SHARE:
        return f"{100 * saturated:.1f}% of the pixels are saturated (at the white level {white}); shoot it darker"
    h, w = x.shape[0] // 8 * 8, x.shape[1] // 8 * 8
    blocks = x[:h, :w].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3), dtype=np.float64) - black
    mean = float(blocks.mean())
    if mean <= 0:
        return "holds no light (its mean is at the black level); it is not a flat frame"
    spread = (float(blocks.max()) - float(blocks.min())) / mean
    if spread > UNEVEN_SPREAD:
        why = f"its brightest and darkest parts differ by {100 * spread:.0f}% of its mean"
        return f"not evenly lit ({why}); photograph an evenly lit wall, out of focus"
    return None


# --------------------------------------------------------------------------- one ISO, then the fits


def estimate_iso(iso: int, darks: Sequence[DarkStats], pairs: Sequence[FlatPairStats]) -> IsoNoise:
    """Everything measured at one ISO."""
    lam, scale = fit_tukey_lambda(np.concatenate([d.sample for d in darks]))
    return IsoNoise(
        iso=iso,
        k=fit_gain(pairs),
        read_scale=scale,
        row_scale=row_scale(darks),
        black_level=black_level(darks),
        read_lambda=lam,
    )


def fit_log_linear(k: Sequence[float], values: Sequence[float]) -> tuple[float, float, float]:
    """(slope, intercept, sigma) of ``log(value) = slope * log(K) + intercept + N(0, sigma)``:
    least squares, sigma the residuals' standard deviation (0 with two points)."""
    x, y = np.log(np.asarray(k, dtype=np.float64)), np.log(np.asarray(values, dtype=np.float64))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    sigma = float(np.sqrt(np.square(residual).sum() / (x.size - 2))) if x.size > 2 else 0.0
    return float(slope), float(intercept), sigma


def build_profile(per_iso: Sequence[IsoNoise], *, name: str, make: str, model: str, white_level: int) -> NoiseProfile:
    """The profile of a camera from its ISOs (at least two, with distinct K): the ELD fits over K
    and the measurements themselves."""
    entries = tuple(sorted(per_iso, key=lambda e: e.iso))
    ks = [e.k for e in entries]
    read = fit_log_linear(ks, [e.read_scale for e in entries])
    row = fit_log_linear(ks, [e.row_scale for e in entries])
    lam = float(np.mean([e.read_lambda for e in entries]))
    return NoiseProfile(
        name=name,
        k_min=min(ks),
        k_max=max(ks),
        read_lambda=lam if abs(lam) >= LAMBDA_FLOOR else math.copysign(LAMBDA_FLOOR, lam),
        read_slope=read[0],
        read_intercept=read[1],
        read_sigma=read[2],
        row_slope=row[0],
        row_intercept=row[1],
        row_sigma=row[2],
        black_level=round(float(np.mean([e.black_level for e in entries]))),
        white_level=white_level,
        make=make,
        model=model,
        per_iso=entries,
    )


__all__ = [
    "CLIPPED_SHARE",
    "PAIR_MISMATCH",
    "DarkStats",
    "FlatPairStats",
    "black_level",
    "build_profile",
    "dark_stats",
    "estimate_iso",
    "filliben_medians",
    "fit_gain",
    "fit_log_linear",
    "fit_tukey_lambda",
    "flat_pair_stats",
    "flat_problem",
    "pair_mismatch",
    "row_scale",
]
