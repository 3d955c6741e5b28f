"""sRGB images made back into the clean raw mosaics a camera would have recorded.

Roughly Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR 2019),
step by step undoing what a raw converter does: the sRGB transfer function, the
camera-to-sRGB colour matrix (optional), the white balance, then one colour per
site of an RGGB mosaic at the sensor's raw levels. No tone curve is undone, and the
brightness is kept: the photograph's white becomes the sensor's white.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: White balance gains (R, G, B) undone when an sRGB image is turned into a raw mosaic.
#: A daylight-like a7S II balance; not part of the noise calibration.
DEFAULT_SRGB_WB = (2.0, 1.0, 1.5)

#: Linear sRGB (D65) to CIE XYZ, IEC 61966-2-1.
XYZ_FROM_SRGB = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Inverse of the sRGB transfer function (IEC 61966-2-1), on values in [0, 1]."""
    x = np.asarray(srgb, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def camera_from_srgb(color_matrix: Sequence[float]) -> np.ndarray:
    """The 3 x 3 matrix from linear sRGB to camera RGB, for a DNG ColorMatrix (XYZ -> camera, D65).

    Rows are normalised to sum to 1, so sRGB white is the camera's white before white
    balance: what dcraw and LibRaw assume when they invert it, and what Brooks et al. do.
    """
    cam_from_xyz = np.asarray(color_matrix, dtype=np.float64).reshape(3, 3)
    m = cam_from_xyz @ XYZ_FROM_SRGB
    return m / m.sum(axis=1, keepdims=True)


def as_shot_neutral(wb: Sequence[float]) -> tuple[float, float, float]:
    """DNG AsShotNeutral (the camera's reading of white, green = 1) for white balance gains ``wb``."""
    r, g, b = (float(v) for v in wb)
    return g / r, 1.0, g / b


def srgb_to_mosaic(
    srgb: np.ndarray,
    *,
    black_level: int,
    white_level: int,
    wb: Sequence[float] = DEFAULT_SRGB_WB,
    cam_from_srgb: np.ndarray | None = None,
) -> np.ndarray:
    """A clean RGGB mosaic (black-subtracted DN, float64) from an even-sized H x W x 3 sRGB image in [0, 1].

    Linearise, turn into camera colours (``cam_from_srgb``, see :func:`camera_from_srgb`;
    None keeps sRGB primaries), divide by the white balance gains (the camera saw the
    scene before balancing), scale to the raw range and keep one colour per site.
    Saturated colours outside the camera's gamut may come out slightly negative.
    """
    if srgb.ndim != 3 or srgb.shape[2] != 3 or srgb.shape[0] % 2 or srgb.shape[1] % 2:
        raise ValueError(f"expected an even-sized H x W x 3 image, got shape {srgb.shape}")
    lin = srgb_to_linear(srgb)
    if cam_from_srgb is not None:
        lin = lin @ np.asarray(cam_from_srgb, dtype=np.float64).T
    lin /= np.asarray(wb, dtype=np.float64)
    lin *= white_level - black_level
    h, w = srgb.shape[:2]
    mosaic = np.empty((h, w), dtype=np.float64)
    mosaic[0::2, 0::2] = lin[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = lin[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = lin[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = lin[1::2, 1::2, 2]
    return mosaic


__all__ = [
    "DEFAULT_SRGB_WB",
    "XYZ_FROM_SRGB",
    "as_shot_neutral",
    "camera_from_srgb",
    "srgb_to_linear",
    "srgb_to_mosaic",
]
