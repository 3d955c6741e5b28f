"""Automatic ratio: recover known under-exposures of generated scenes.

Every expectation is built from docs/exposure.md's literal numbers (a normal
exposure puts the average scene at 0.12 of the black-to-white range; the ratio is
clamped to [1, 300]) or from exposure times, never from seedark.frames.exposure's constants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seedark.errors import UsageError
from seedark.frames.exposure import auto_ratio, parse_ratio, signal_level
from seedark.io.raw import RawFrame

BLACK, WHITE = 512, 16383
# docs/exposure.md: "A normal exposure puts an average scene at TARGET_LEVEL = 0.12 of the range".
NORMAL_LEVEL = 0.12
# docs/exposure.md: "ratio = 0.12 / level, clamped to [1, 300]".
LOWEST, HIGHEST = 1.0, 300.0
# The acceptance band of the issue: the estimate is within ±30% of the true ratio.
TOLERANCE = 0.30


def scene(rng: np.random.Generator, h: int = 256, w: int = 384) -> np.ndarray:
    """A normally exposed linear scene (fraction of white), textured, with a few lamps."""
    coarse = rng.lognormal(mean=0.0, sigma=0.8, size=(h // 16 + 1, w // 16 + 1))
    field = np.kron(coarse, np.ones((16, 16)))[:h, :w] * rng.lognormal(0.0, 0.3, size=(h, w))
    colour = np.ones((h, w))
    colour[0::2, 0::2] = 0.55  # R under daylight WB
    colour[1::2, 1::2] = 0.7  # B
    img = field * colour
    lamps = rng.random((h, w)) < 0.003
    img[lamps] = 50.0  # far above white: the highlight trim must ignore them
    bulk = img[~lamps]
    return img * (NORMAL_LEVEL / bulk.mean())


def expose(rng: np.random.Generator, clean: np.ndarray, ratio: float, gain: float, read_sigma: float) -> np.ndarray:
    electrons = np.clip(clean, 0, 1) * (WHITE - BLACK) / ratio / gain
    signal = rng.poisson(electrons) * gain + rng.normal(0, read_sigma, clean.shape)
    return np.clip(np.round(signal + BLACK), 0, WHITE).astype(np.uint16)


def frame(mosaic: np.ndarray, black: int = BLACK, white: int = WHITE) -> RawFrame:
    pattern = np.array([["R", "G"], ["G", "B"]])
    return RawFrame(Path("x.dng"), mosaic, pattern, "bayer", np.full((2, 2), black, np.float32), white, 0)


@pytest.mark.parametrize("ratio", [30, 50, 100, 150, 250, 300])
@pytest.mark.parametrize(("gain", "read_sigma"), [(0.5, 2.0), (2.0, 5.0), (6.0, 8.0)])
def test_recovers_known_under_exposure(rng: np.random.Generator, ratio: float, gain: float, read_sigma: float) -> None:
    clean = scene(rng)
    got = auto_ratio(frame(expose(rng, clean, ratio, gain, read_sigma)))
    assert abs(got / ratio - 1) <= TOLERANCE, (ratio, got)


def test_bright_frames_get_no_amplification(rng: np.random.Generator) -> None:
    clean = scene(rng) * 4  # over-exposed by two stops
    assert auto_ratio(frame(expose(rng, clean, 1, 1.0, 2.0))) == LOWEST


def test_black_frames_get_the_maximum(rng: np.random.Generator) -> None:
    mosaic = np.clip(np.round(rng.normal(BLACK, 3.0, (64, 64))), 0, None).astype(np.uint16)
    assert abs(signal_level(frame(mosaic))) < 1e-3
    assert auto_ratio(frame(mosaic)) == HIGHEST


# Hand-computed cases. Black 1000 and white 11000 make the range exactly 10000 DN, so a
# signal of s DN above black is the level s / 10000 and the ratio 0.12 / (s / 10000).
HAND_BLACK, HAND_WHITE = 1000, 11000


@pytest.mark.parametrize(
    ("above_black", "want"),
    [
        (120, 10.0),  # level 0.012 -> 0.12 / 0.012
        (12, 100.0),  # level 0.0012
        (40, 30.0),  # level 0.004
        (600, 2.0),  # level 0.06
        (4, 300.0),  # level 0.0004: exactly the top of the range
        (3, 300.0),  # level 0.0003 -> 400, clamped to 300
        (0, 300.0),  # no signal at all
        (1200, 1.0),  # level 0.12: a normal exposure
        (2400, 1.0),  # level 0.24 -> 0.5, clamped to 1
    ],
)
def test_flat_frame_by_hand(above_black: int, want: float) -> None:
    mosaic = np.full((64, 96), HAND_BLACK + above_black, np.uint16)
    assert auto_ratio(frame(mosaic, HAND_BLACK, HAND_WHITE)) == pytest.approx(want, rel=1e-5)


def test_textured_frame_by_hand() -> None:
    """Colour filter texture, a checkerboard of dark and bright patches and two lamps.

    Each 2x2 cell holds R 60, G 144, G 144, B 132 DN above black (mean 120) in dark
    patches and three times that (mean 360) in bright ones; patches are 8x8 pixels
    (4x4 cells), so the dark and bright cells are balanced on every sampling grid.
    Two cells are lamps at white, under 1% of the cells: the highlight trim drops
    them. The level is then (120 + 360) / 2 / 10000 = 0.024 and the ratio 0.12 / 0.024 = 5.
    """
    h, w = 128, 128
    cell = np.array([[60, 144], [144, 132]], dtype=np.int64)
    patch = (np.arange(h)[:, None] // 8 + np.arange(w)[None, :] // 8) % 2  # 0 dark, 1 bright
    mosaic = HAND_BLACK + np.tile(cell, (h // 2, w // 2)) * (1 + 2 * patch)
    for y, x in [(0, 0), (64, 32)]:  # cells on every 1-, 2- and 4-cell grid
        mosaic[y : y + 2, x : x + 2] = HAND_WHITE
    got = auto_ratio(frame(mosaic.astype(np.uint16), HAND_BLACK, HAND_WHITE))
    # the two lamp cells replace one dark and one bright cell (~1 in 4096 of each): within 1%
    assert got == pytest.approx(5.0, rel=0.01)


# SID's Sony a7S II pairs: a 10 s reference and 0.1 / 0.04 / 0.033 s short exposures.
T_LONG = 10.0


def photon_scene(rng: np.random.Generator, h: int = 128, w: int = 192) -> np.ndarray:
    """Relative scene radiance (mean 1 over the scene bulk), textured, with a few lamps."""
    coarse = rng.lognormal(mean=0.0, sigma=0.7, size=(h // 16 + 1, w // 16 + 1))
    field = np.kron(coarse, np.ones((16, 16)))[:h, :w] * rng.lognormal(0.0, 0.3, size=(h, w))
    colour = np.ones((h, w))
    colour[0::2, 0::2] = 0.55
    colour[1::2, 1::2] = 0.7
    img = field * colour
    lamps = rng.random((h, w)) < 0.0005
    img[lamps] = 0
    img /= img[~lamps].mean()
    img[lamps] = 400.0  # saturates even the shortest exposure
    return img


def capture(
    rng: np.random.Generator, radiance: np.ndarray, seconds: float, gain: float, read_sigma: float
) -> np.ndarray:
    """Photon counts proportional to exposure time, Poisson shot noise, read noise, 14-bit."""
    # the photon rate that puts the average scene at 0.12 of the range in T_LONG seconds
    rate = radiance * NORMAL_LEVEL * (WHITE - BLACK) / gain / T_LONG
    electrons = rng.poisson(rate * seconds)
    signal = electrons * gain + rng.normal(0, read_sigma, radiance.shape)
    return np.clip(np.round(signal + BLACK), 0, WHITE).astype(np.uint16)


@pytest.mark.parametrize(("gain", "read_sigma"), [(1.0, 3.0), (4.0, 6.0)])
def test_exposure_pairs(rng: np.random.Generator, gain: float, read_sigma: float) -> None:
    radiance = photon_scene(rng)
    long_ratio = auto_ratio(frame(capture(rng, radiance, T_LONG, gain, read_sigma)))
    assert abs(long_ratio - 1) <= TOLERANCE, long_ratio
    for t_short in (0.1, 0.04, 0.033):
        want = min(HIGHEST, T_LONG / t_short)  # 100, 250, 303 -> 300
        got = auto_ratio(frame(capture(rng, radiance, t_short, gain, read_sigma)))
        assert abs(got / want - 1) <= TOLERANCE, (t_short, want, got)


@pytest.mark.parametrize(("value", "want"), [("auto", None), (None, None), ("120", 120.0), (2.5, 2.5), ("AUTO", None)])
def test_parse_ratio(value: object, want: float | None) -> None:
    assert parse_ratio(value) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["-1", "0", "nan", "lots", float("inf")])
def test_parse_ratio_rejects(bad: object) -> None:
    with pytest.raises(UsageError, match="ratio"):
        parse_ratio(bad)  # type: ignore[arg-type]
