"""PSNR and SSIM, computed exactly as scikit-image computes them (without needing it).

The settings are scikit-image's defaults, which is what most SID reproductions
report (docs/training.md):

* PSNR: ``peak_signal_noise_ratio(gt, out, data_range=1.0)``: the mean squared
  error over all pixels and channels, ``10 * log10(1 / mse)``.
* SSIM: ``structural_similarity(gt, out, data_range=1.0, channel_axis=2)``:
  per channel, a 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance
  (normalised by 48, not 49), the 3-pixel border left out, then the mean over
  channels.

The box filter only ever needs windows that lie wholly inside the image (the
border where scikit-image's reflected padding would matter is cropped away), so
it runs on integral images, in row strips so a 12-megapixel frame stays within
a few hundred MB.
"""

from __future__ import annotations

import math

import numpy as np

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03
#: Rows of SSIM map computed at a time.
_STRIP_ROWS = 512


def _float_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    # scikit-image keeps float32 pairs in float32 and promotes everything else to float64
    dtype = np.float32 if a.dtype == np.float32 and b.dtype == np.float32 else np.float64
    return np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)


def mse(gt: np.ndarray, out: np.ndarray) -> float:
    a, b = _float_pair(gt, out)
    return float(np.mean((a - b) ** 2, dtype=np.float64))


def psnr(gt: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    err = mse(gt, out)
    if err == 0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / err))


def _box_sums(x: np.ndarray, win: int) -> np.ndarray:
    """Sums over every win x win window lying wholly inside ``x`` (float64)."""
    c = np.zeros((x.shape[0] + 1, x.shape[1] + 1), dtype=np.float64)
    np.cumsum(x, axis=0, out=c[1:, 1:])
    np.cumsum(c[1:, 1:], axis=1, out=c[1:, 1:])
    return c[win:, win:] - c[:-win, win:] - c[win:, :-win] + c[:-win, :-win]


def _ssim_channel(a: np.ndarray, b: np.ndarray, data_range: float, win: int) -> float:
    """Mean of the SSIM map of one channel, border of (win - 1) // 2 left out."""
    h = a.shape[0]
    n = win * win
    cov_norm = n / (n - 1)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    total = 0.0
    count = 0
    rows = h - win + 1
    for r0 in range(0, rows, _STRIP_ROWS):
        r1 = min(rows, r0 + _STRIP_ROWS)
        sa = a[r0 : r1 + win - 1].astype(np.float64)
        sb = b[r0 : r1 + win - 1].astype(np.float64)
        ux = _box_sums(sa, win) / n
        uy = _box_sums(sb, win) / n
        uxx = _box_sums(sa * sa, win) / n
        uyy = _box_sums(sb * sb, win) / n
        uxy = _box_sums(sa * sb, win) / n
        vx = cov_norm * (uxx - ux * ux)
        vy = cov_norm * (uyy - uy * uy)
        vxy = cov_norm * (uxy - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        total += float(s.sum(dtype=np.float64))
        count += s.size
    return total / count


def ssim(gt: np.ndarray, out: np.ndarray, data_range: float = 1.0, *, win_size: int = WIN_SIZE) -> float:
    """Mean structural similarity of H x W or H x W x C images (channels last, averaged)."""
    a, b = _float_pair(gt, out)
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError("win_size must be odd and at least 3")
    if a.ndim not in (2, 3) or min(a.shape[:2]) < win_size:
        raise ValueError(f"SSIM needs H x W (x C) images at least {win_size} pixels a side, got {a.shape}")
    if a.ndim == 2:
        return _ssim_channel(a, b, data_range, win_size)
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c], data_range, win_size) for c in range(a.shape[2])]))


__all__ = ["K1", "K2", "WIN_SIZE", "mse", "psnr", "ssim"]
