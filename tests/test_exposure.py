"""Automatic ratio: recover known under-exposures of generated scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seedark.errors import UsageError
from seedark.exposure import RATIO_RANGE, TARGET_LEVEL, auto_ratio, parse_ratio, signal_level
from seedark.raw import RawFrame

BLACK, WHITE = 512, 16383
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
    return img * (TARGET_LEVEL / bulk.mean())


def expose(rng: np.random.Generator, clean: np.ndarray, ratio: float, gain: float, read_sigma: float) -> np.ndarray:
    electrons = np.clip(clean, 0, 1) * (WHITE - BLACK) / ratio / gain
    signal = rng.poisson(electrons) * gain + rng.normal(0, read_sigma, clean.shape)
    return np.clip(np.round(signal + BLACK), 0, WHITE).astype(np.uint16)


def frame(mosaic: np.ndarray) -> RawFrame:
    pattern = np.array([["R", "G"], ["G", "B"]])
    return RawFrame(Path("x.dng"), mosaic, pattern, "bayer", np.full((2, 2), BLACK, np.float32), WHITE, 0)


@pytest.mark.parametrize("ratio", [30, 50, 100, 150, 250, 300])
@pytest.mark.parametrize(("gain", "read_sigma"), [(0.5, 2.0), (2.0, 5.0), (6.0, 8.0)])
def test_recovers_known_under_exposure(rng: np.random.Generator, ratio: float, gain: float, read_sigma: float) -> None:
    clean = scene(rng)
    got = auto_ratio(frame(expose(rng, clean, ratio, gain, read_sigma)))
    assert abs(got / ratio - 1) <= TOLERANCE, (ratio, got)


def test_bright_frames_get_no_amplification(rng: np.random.Generator) -> None:
    clean = scene(rng) * 4  # over-exposed by two stops
    assert auto_ratio(frame(expose(rng, clean, 1, 1.0, 2.0))) == RATIO_RANGE[0]


def test_black_frames_get_the_maximum(rng: np.random.Generator) -> None:
    mosaic = np.clip(np.round(rng.normal(BLACK, 3.0, (64, 64))), 0, None).astype(np.uint16)
    assert abs(signal_level(frame(mosaic))) < 1e-3
    assert auto_ratio(frame(mosaic)) == RATIO_RANGE[1]


@pytest.mark.parametrize(("value", "want"), [("auto", None), (None, None), ("120", 120.0), (2.5, 2.5), ("AUTO", None)])
def test_parse_ratio(value: object, want: float | None) -> None:
    assert parse_ratio(value) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["-1", "0", "nan", "lots", float("inf")])
def test_parse_ratio_rejects(bad: object) -> None:
    with pytest.raises(UsageError, match="ratio"):
        parse_ratio(bad)  # type: ignore[arg-type]
