"""Calibration frames of a made-up camera whose noise is known: dark frames and flat pairs, as DNGs.

Written independently of seedark's noise code (seedark.synthesis.noise), so that
``seedark calibrate`` is checked against numbers it did not make: the read noise is
drawn by scipy's Tukey-lambda distribution where scipy is installed, else through the
quantile function written out here, ``Q(u) = (u**lam - (1 - u)**lam) / lam``; shot
noise is Poisson in electrons times the gain; each row gets one Gaussian offset; the
values are rounded and clipped as a camera stores them.

The flats are lit unevenly (a vignette), with a small per-pixel sensitivity pattern
(PRNU) and a light that flickers a little between the two shots of a pair, as real
flats are: photon transfer must not be fooled by any of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.rawgen import write_dng


@dataclass(frozen=True)
class IsoTruth:
    """The noise of the made-up camera at one ISO, in DN."""

    iso: int
    k: float  # DN per electron
    read_lambda: float
    read_scale: float
    row_scale: float


@dataclass(frozen=True)
class CameraTruth:
    make: str
    model: str
    black: int
    white: int
    isos: tuple[IsoTruth, ...]
    color_matrix: tuple[float, ...] = (0.6, -0.1, -0.05, -0.35, 1.15, 0.2, -0.05, 0.2, 0.6)
    cfa: str = "RGGB"
    #: the flats' CFA response (R, G, B): white balance is not grey on a sensor
    cfa_response: tuple[float, float, float] = (0.55, 1.0, 0.7)
    extra: dict[str, object] = field(default_factory=dict)


def tukey_lambda(rng: np.random.Generator, lam: float, scale: float, size: tuple[int, ...]) -> np.ndarray:
    """Tukey-lambda samples: scipy's where installed, else the quantile function of uniform draws."""
    try:
        from scipy.stats import tukeylambda
    except ImportError:  # pragma: no cover - scipy comes with scikit-image in the dev install
        u = rng.uniform(np.nextafter(0.0, 1.0), 1.0, size=size)
        return scale * (u**lam - (1.0 - u) ** lam) / lam
    return np.asarray(tukeylambda.rvs(lam, scale=scale, size=size, random_state=rng))


def _store(x: np.ndarray, black: int, white: int, rng: np.random.Generator, truth: IsoTruth) -> np.ndarray:
    """Read and row noise added, the black level, rounded and clipped: what the camera writes."""
    h, w = x.shape
    x = x + tukey_lambda(rng, truth.read_lambda, truth.read_scale, (h, w))
    x = x + rng.normal(0.0, truth.row_scale, size=(h, 1))
    return np.clip(np.round(x + black), 0, white).astype(np.uint16)


def dark_frame(camera: CameraTruth, truth: IsoTruth, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return _store(np.zeros(size), camera.black, camera.white, rng, truth)


def flat_field(camera: CameraTruth, size: tuple[int, int], level: float, rng: np.random.Generator) -> np.ndarray:
    """The light a flat frame's sites receive, in DN above black: ``level`` at the centre of the
    green sites, a vignette to 80% in the corners, the CFA's colour response and 0.5% PRNU (the
    PRNU drawn from a generator of its own, so it is the same in every frame of the camera)."""
    h, w = size
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    vignette = 1.0 - 0.1 * (yy**2 + xx**2)
    response = np.empty((2, 2))
    r, g, b = camera.cfa_response
    response[:] = [[r, g], [g, b]]
    prnu = 1.0 + 0.005 * np.random.default_rng(99).standard_normal(size)
    return level * vignette * np.tile(response, (h // 2, w // 2)) * prnu


def flat_pair(
    camera: CameraTruth, truth: IsoTruth, field_dn: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two flats of one field: shot noise in electrons, the light 1% brighter in the second."""
    out = []
    for flicker in (1.0, 1.01):
        electrons = rng.poisson(field_dn * flicker / truth.k)
        out.append(_store(electrons * truth.k, camera.black, camera.white, rng, truth))
    return out[0], out[1]


def write_frames(
    camera: CameraTruth,
    root: Path,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (256, 384),
    darks: int = 4,
    levels: Sequence[float] = (1200.0, 2500.0, 5000.0, 9000.0),
) -> tuple[Path, Path]:
    """``root/darks`` and ``root/flats`` for every ISO of ``camera``: ``darks`` dark frames per ISO,
    and a pair of flats at each of ``levels`` (DN above black at the centre of the green sites),
    exposure times doubling from 1/250 s. Returns the two folders."""
    dark_dir, flat_dir = root / "darks", root / "flats"
    dark_dir.mkdir(parents=True, exist_ok=True)
    flat_dir.mkdir(parents=True, exist_ok=True)
    meta = {"make": camera.make, "model": camera.model, "color_matrix": camera.color_matrix, "cfa": camera.cfa}
    dng = {"black_level": camera.black, "white_level": camera.white, **meta, **camera.extra}
    for t in camera.isos:
        for k in range(darks):
            write_dng(dark_dir / f"dark_{t.iso}_{k}.dng", dark_frame(camera, t, size, rng), iso=t.iso, **dng)
        for j, level in enumerate(levels):
            field_dn = flat_field(camera, size, level, rng)
            exposure = math.ldexp(1 / 250, j)
            for n, frame in enumerate(flat_pair(camera, t, field_dn, rng)):
                path = flat_dir / f"flat_{t.iso}_{j}_{n}.dng"
                write_dng(path, frame, iso=t.iso, exposure_time=exposure, **dng)
    return dark_dir, flat_dir


#: The hidden camera of tests/test_calibrate.py: four ISOs, K doubling with ISO, read noise of
#: various shapes, row noise a fifth of the read noise or less (at ISO 400 a tenth: there the
#: read noise's share in a row's mean is as large as the row noise itself).
HIDDEN = CameraTruth(
    make="Hidden Optics",
    model="HX-1",
    black=600,
    white=16383,
    isos=(
        IsoTruth(400, 0.55, -0.10, 1.45, 0.15),
        IsoTruth(800, 1.1, -0.16, 2.05, 0.42),
        IsoTruth(1600, 2.2, -0.22, 2.90, 0.66),
        IsoTruth(3200, 4.4, -0.14, 4.10, 0.95),
    ),
)
