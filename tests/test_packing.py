"""Packing and amplification against hand computations and the official code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from seedark.errors import UnsupportedSensorError, UsageError
from seedark.frames.packing import PackedFrame, amplify, bayer_offsets, pack_bayer
from seedark.io.raw import RawFrame


def frame(mosaic: np.ndarray, cfa: str, black: float | list[float] = 512, white: int = 16383) -> RawFrame:
    pattern = np.array(list(cfa)).reshape(2, 2)
    blacks = np.broadcast_to(np.asarray(black, dtype=np.float32).reshape(-1), (4,)).reshape(2, 2).copy()
    return RawFrame(Path("x.dng"), mosaic, pattern, "bayer", blacks, white, 0)


def official_pack_raw(raw_image_visible: np.ndarray) -> np.ndarray:
    """cchen156/Learning-to-See-in-the-Dark test_Sony.py, verbatim apart from the argument."""
    im = raw_image_visible.astype(np.float32)
    im = np.maximum(im - 512, 0) / (16383 - 512)  # subtract the black level
    im = np.expand_dims(im, axis=2)
    img_shape = im.shape
    H = img_shape[0]
    W = img_shape[1]
    out = np.concatenate((im[0:H:2, 0:W:2, :], im[0:H:2, 1:W:2, :], im[1:H:2, 1:W:2, :], im[1:H:2, 0:W:2, :]), axis=2)
    return out


def test_a7s2_packing_is_bit_identical_to_official(rng: np.random.Generator) -> None:
    mosaic = rng.integers(0, 16384, size=(48, 64), dtype=np.uint16)
    ours = pack_bayer(frame(mosaic, "RGGB"))
    want = official_pack_raw(mosaic)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, want)


def test_packing_by_hand() -> None:
    # GRBG: row 0 = G R, row 1 = B G. Values chosen so every channel is recognisable.
    mosaic = np.array(
        [
            [110, 1100, 120, 1200],
            [2100, 310, 2200, 320],
            [130, 1300, 140, 1400],
            [2300, 330, 2400, 340],
        ],
        dtype=np.uint16,
    )
    black = [100, 1000, 2000, 300]  # per 2x2 position: (0,0) G, (0,1) R, (1,0) B, (1,1) G
    packed = pack_bayer(frame(mosaic, "GRBG", black=black, white=4100))
    assert packed.shape == (2, 2, 4)
    # channel 0 = R at (0,1): (1100-1000)/(4100-1000)
    assert packed[0, 0, 0] == pytest.approx(100 / 3100)
    assert packed[1, 1, 0] == pytest.approx(400 / 3100)
    # channel 1 = G on R's row at (0,0): (110-100)/4000
    assert packed[0, 1, 1] == pytest.approx(20 / 4000)
    # channel 2 = B at (1,0)
    assert packed[1, 0, 2] == pytest.approx(300 / 2100)
    # channel 3 = G on B's row at (1,1)
    assert packed[1, 1, 3] == pytest.approx(40 / 3800)


@pytest.mark.parametrize(
    ("cfa", "offsets"),
    [
        ("RGGB", [(0, 0), (0, 1), (1, 1), (1, 0)]),
        ("BGGR", [(1, 1), (1, 0), (0, 0), (0, 1)]),
        ("GRBG", [(0, 1), (0, 0), (1, 0), (1, 1)]),
        ("GBRG", [(1, 0), (1, 1), (0, 1), (0, 0)]),
    ],
)
def test_offsets_for_every_bayer_phase(cfa: str, offsets: list[tuple[int, int]]) -> None:
    assert bayer_offsets(np.array(list(cfa)).reshape(2, 2)) == offsets


def test_values_below_black_clip_to_zero() -> None:
    mosaic = np.full((4, 4), 10, dtype=np.uint16)
    assert (pack_bayer(frame(mosaic, "RGGB")) == 0).all()


def test_odd_sizes_repeat_the_cfa_phase(rng: np.random.Generator) -> None:
    mosaic = rng.integers(512, 16384, size=(7, 9), dtype=np.uint16)
    packed = pack_bayer(frame(mosaic, "RGGB"))
    assert packed.shape == (4, 5, 4)
    even = np.concatenate([mosaic, mosaic[5:6]], axis=0)
    even = np.concatenate([even, even[:, 7:8]], axis=1)
    np.testing.assert_array_equal(packed, official_pack_raw(even))


def test_not_bayer_pattern_is_refused() -> None:
    with pytest.raises(UnsupportedSensorError):
        bayer_offsets(np.array(list("RRGB")).reshape(2, 2))
    with pytest.raises(UnsupportedSensorError):
        bayer_offsets(np.array(list("RBGG")).reshape(2, 2))


def test_amplify_as_official(rng: np.random.Generator) -> None:
    packed = rng.random((5, 6, 4), dtype=np.float32) * 0.02
    ratio = 250.0
    want = np.minimum(np.expand_dims(packed, 0) * ratio, 1.0)[0]
    got = amplify(packed.copy(), ratio)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert got.max() == 1.0


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf"), "x"])
def test_bad_ratio(bad: object) -> None:
    with pytest.raises(UsageError, match="ratio"):
        amplify(np.zeros((1, 1, 4), np.float32), bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- lazy packing


def _windows(h: int, w: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Whole frame, edges, single rows/columns, empty and random windows."""
    fixed = [(0, h, 0, w), (h - 1, h, 0, w), (0, h, w - 1, w), (0, 1, 0, 1), (h - 1, h, w - 1, w), (2, 2, 0, w)]
    random = []
    for _ in range(20):
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        random.append((int(y0), int(y1), int(x0), int(x1)))
    return fixed + random


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG", "BGGR", "GRBG"])
@pytest.mark.parametrize("size", [(48, 64), (37, 53), (7, 9), (40, 3)])
def test_packed_frame_windows_are_the_whole_packing(rng: np.random.Generator, cfa: str, size: tuple[int, int]) -> None:
    mosaic = rng.integers(0, 16384, size=size, dtype=np.uint16)
    f = frame(mosaic, cfa, black=[500, 505, 510, 515])
    whole = amplify(pack_bayer(f), 37.5)
    lazy = PackedFrame(f, 37.5)
    assert lazy.shape == whole.shape and lazy.ndim == 3 and lazy.dtype == np.float32
    assert whole.min() == 0.0 and whole.max() == 1.0 and 0 < whole.mean() < 1  # both clips happen
    np.testing.assert_array_equal(np.asarray(lazy), whole)
    for y0, y1, x0, x1 in _windows(*whole.shape[:2], rng):
        got = lazy[y0:y1, x0:x1]
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, whole[y0:y1, x0:x1])
    # numpy's slice rules, and anything that is not a 2-D window, come from the whole array
    np.testing.assert_array_equal(lazy[-5:, :100], whole[-5:, :100])
    np.testing.assert_array_equal(lazy[..., 2], whole[..., 2])
    np.testing.assert_array_equal(lazy[::2, 1:], whole[::2, 1:])
    with pytest.raises(IndexError):
        lazy.window(0, whole.shape[0] + 1, 0, 1)


def test_packed_frame_holds_the_mosaic_not_floats(rng: np.random.Generator) -> None:
    mosaic = rng.integers(0, 16384, size=(400, 600), dtype=np.uint16)
    lazy = PackedFrame(frame(mosaic, "RGGB"), 100)
    assert lazy.frame.mosaic is mosaic  # no copy
    assert lazy.nbytes == 2 * mosaic.nbytes
    copy = pickle.loads(pickle.dumps(lazy))  # what the batch decoder process sends
    assert len(pickle.dumps(lazy)) < 0.6 * lazy.nbytes
    np.testing.assert_array_equal(copy[10:20, 30:40], lazy[10:20, 30:40])


def test_packed_frame_refuses_what_packing_refuses(rng: np.random.Generator) -> None:
    mosaic = rng.integers(0, 16384, size=(8, 8), dtype=np.uint16)
    with pytest.raises(UsageError):
        PackedFrame(frame(mosaic, "RGGB"), 0)
    with pytest.raises(UnsupportedSensorError):
        PackedFrame(frame(mosaic, "RRGB"), 10)
