"""The test DNG writer against LibRaw (rawpy), and what LibRaw reports for such files.

These also pin down LibRaw facts the rest of seedark relies on (LibRaw 0.22 via
rawpy 0.28):

* colour indices in ``raw_pattern``/``raw_colors_visible``: 0 R, 1 G, 2 B, 3 the
  second green, which is the green *on the blue rows* (RGGB -> [[0, 1], [3, 2]],
  BGGR -> [[2, 3], [1, 0]]); ``color_desc`` is b"RGBG".
* DNG per-position black levels (BlackLevelRepeatDim 2x2) come back in
  ``black_level_per_channel`` indexed by *colour index*, not by position:
  ``black_level_per_channel[raw_pattern[i, j]] == BlackLevel[2*i + j]``.
* TIFF Orientation -> ``sizes.flip``: 1->0, 2->1, 3->3, 4->2, 5->4, 6->6, 7->7, 8->5.
* Files with a side under 22 pixels are refused at open (LibRawFileUnsupportedError).
* A 6x6 CFA DNG is read as X-Trans: ``raw_pattern`` is the 6x6 pattern (colours 0..2,
  no 3), ``raw_colors_visible`` repeats it; but a full-size ``postprocess`` fails with
  LibRawIOError when either side is under 512 pixels (and the RawPy object is then
  unusable: further calls raise LibRawOutOfOrderCallError); ``half_size=True`` works.
* LinearRaw with 3 samples: ``raw_type`` Stack, ``raw_pattern`` None,
  ``raw_image_visible`` HxWx4 (4th plane 0), ``raw_colors_visible`` raises
  RuntimeError, ``num_colors`` 3, black levels [b, b, b, 0].
* LinearRaw with 1 sample (mono): ``raw_type`` Flat, ``num_colors`` 1,
  ``raw_pattern`` [[6]], ``raw_colors_visible`` all 6, ``postprocess`` gives HxWx1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy

from helpers.rawgen import CFA_PATTERNS, XTRANS_PATTERN, cfa_array, quadrant_mosaic, write_dng
from seedark.io.exifread import read_camera_metadata

FLIP_FOR_ORIENTATION = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}


def _mosaic(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(512, 16383, (h, w), dtype=np.uint16)


def _libraw_colors(cfa: np.ndarray) -> np.ndarray:
    """DNG colour indices as LibRaw numbers them: the green on blue rows becomes 3."""
    out = cfa.astype(np.int64)
    for row in range(cfa.shape[0]):
        if 2 in cfa[row]:
            out[row][cfa[row] == 1] = 3
    return out


@pytest.mark.parametrize("cfa", list(CFA_PATTERNS))
def test_bayer_mosaic_and_colours(tmp_path: Path, rng: np.random.Generator, cfa: str) -> None:
    mosaic = _mosaic(rng, 36, 48)
    path = write_dng(tmp_path / "a.dng", mosaic, cfa=cfa)
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Flat
        assert raw.num_colors == 3 and raw.color_desc == b"RGBG"
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        pattern = _libraw_colors(cfa_array(cfa))
        np.testing.assert_array_equal(raw.raw_pattern, pattern)
        np.testing.assert_array_equal(raw.raw_colors_visible, np.tile(pattern, (18, 24)))
        assert raw.black_level_per_channel == [512] * 4
        assert raw.white_level == 16383
        assert raw.sizes.flip == 0
        # The a7S II matrix and the as-shot white balance made it through.
        np.testing.assert_allclose(raw.rgb_xyz_matrix[0], [0.5838, -0.1430, -0.0246], atol=1e-4)
        np.testing.assert_allclose(raw.camera_whitebalance[:3], [2.0, 1.0, 1 / 0.7], rtol=1e-5)


@pytest.mark.parametrize("cfa", list(CFA_PATTERNS))
def test_per_position_black_levels(tmp_path: Path, rng: np.random.Generator, cfa: str) -> None:
    levels = [500, 510, 520, 530]  # positions (0,0), (0,1), (1,0), (1,1)
    path = write_dng(tmp_path / "a.dng", _mosaic(rng, 24, 24), cfa=cfa, black_level=levels, white_level=15000)
    with rawpy.imread(str(path)) as raw:
        per_colour = raw.black_level_per_channel
        assert raw.raw_pattern is not None
        for i in range(2):
            for j in range(2):
                assert per_colour[raw.raw_pattern[i, j]] == levels[2 * i + j]
        assert raw.white_level == 15000
    if cfa == "RGGB":
        assert per_colour == [500, 510, 530, 520]  # R, G, B, G2 - not position order


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_to_flip(tmp_path: Path, rng: np.random.Generator, orientation: int) -> None:
    path = write_dng(tmp_path / "a.dng", _mosaic(rng, 36, 48), orientation=orientation)
    with rawpy.imread(str(path)) as raw:
        flip = raw.sizes.flip
        out = raw.postprocess()
    assert flip == FLIP_FOR_ORIENTATION[orientation]
    assert out.shape == ((48, 36, 3) if flip & 4 else (36, 48, 3))


@pytest.mark.parametrize("orientation", [1, 6])
def test_odd_sizes(tmp_path: Path, rng: np.random.Generator, orientation: int) -> None:
    mosaic = _mosaic(rng, 37, 53)
    path = write_dng(tmp_path / "odd.dng", mosaic, cfa="GBRG", orientation=orientation)
    with rawpy.imread(str(path)) as raw:
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        assert (raw.sizes.height, raw.sizes.width) == (37, 53)
        assert raw.raw_colors_visible.shape == (37, 53)
        out = raw.postprocess()
    assert out.shape == ((53, 37, 3) if orientation == 6 else (37, 53, 3))


def test_quadrant_postprocess_levels(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "q.dng", quadrant_mosaic(32, 32))
    with rawpy.imread(str(path)) as raw:
        out = raw.postprocess(no_auto_bright=True, gamma=(1, 1), output_bps=16, user_wb=[1, 1, 1, 1])
    means = [out[4:12, 4:12].mean(), out[4:12, 20:28].mean(), out[20:28, 4:12].mean(), out[20:28, 20:28].mean()]
    assert means == sorted(means) and means[0] < means[3] / 3


def test_xtrans_pattern_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    mosaic = _mosaic(rng, 36, 48)
    path = write_dng(tmp_path / "x.dng", mosaic, cfa=XTRANS_PATTERN)
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Flat and raw.num_colors == 3
        np.testing.assert_array_equal(raw.raw_pattern, XTRANS_PATTERN)  # no 3s
        np.testing.assert_array_equal(raw.raw_colors_visible, np.tile(XTRANS_PATTERN, (6, 8)))
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        # LibRaw won't demosaic X-Trans frames this small (see module docstring).
        with pytest.raises(rawpy.LibRawIOError):
            raw.postprocess()


@pytest.mark.parametrize(("h", "w", "ok"), [(512, 512, True), (511, 600, False), (600, 511, False)])
def test_xtrans_postprocess_needs_512_pixels(
    tmp_path: Path, rng: np.random.Generator, h: int, w: int, ok: bool
) -> None:
    path = write_dng(tmp_path / "x.dng", _mosaic(rng, h, w), cfa=XTRANS_PATTERN)
    with rawpy.imread(str(path)) as raw:
        if ok:
            assert raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR).shape == (h, w, 3)
        else:
            with pytest.raises(rawpy.LibRawIOError):
                raw.postprocess()
    with rawpy.imread(str(path)) as raw:  # half size skips the demosaic that refuses
        assert raw.postprocess(half_size=True).shape == ((h + 1) // 2, (w + 1) // 2, 3)


def test_linear_raw(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(512, 16383, (24, 30, 3), dtype=np.uint16)
    path = write_dng(tmp_path / "l.dng", data, photometric="linear")
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Stack
        assert raw.num_colors == 3 and raw.raw_pattern is None
        visible = raw.raw_image_visible
        assert visible.shape == (24, 30, 4)
        np.testing.assert_array_equal(visible[..., :3], data)
        assert not visible[..., 3].any()
        assert raw.black_level_per_channel == [512, 512, 512, 0]
        with pytest.raises(RuntimeError, match="not flat"):
            _ = raw.raw_colors_visible
        assert raw.postprocess().shape == (24, 30, 3)


def test_mono_raw(tmp_path: Path, rng: np.random.Generator) -> None:
    data = _mosaic(rng, 24, 30)
    path = write_dng(tmp_path / "m.dng", data, photometric="mono")
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Flat and raw.num_colors == 1
        np.testing.assert_array_equal(raw.raw_image_visible, data)
        assert raw.raw_pattern is not None and raw.raw_pattern.tolist() == [[6]]
        assert (raw.raw_colors_visible == 6).all()
        assert raw.postprocess().shape == (24, 30, 1)


@pytest.mark.parametrize(("h", "w"), [(21, 40), (40, 21)])
def test_libraw_refuses_sides_under_22_pixels(tmp_path: Path, h: int, w: int) -> None:
    path = write_dng(tmp_path / "tiny.dng", np.full((h, w), 1000, dtype=np.uint16))
    with pytest.raises(rawpy.LibRawFileUnsupportedError):
        rawpy.imread(str(path))
    path = write_dng(tmp_path / "small.dng", np.full((22, 22), 1000, dtype=np.uint16))
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image_visible.shape == (22, 22)


def test_metadata_is_written(tmp_path: Path, rng: np.random.Generator) -> None:
    path = write_dng(
        tmp_path / "a.dng",
        _mosaic(rng, 8, 8),
        make="Nikon",
        model="Z 6",
        iso=51200,
        exposure_time=1 / 4,
        f_number=1.8,
        focal_length=50.0,
        lens_model=None,
        datetime_original="2025:01:01 00:00:00",
    )
    meta = read_camera_metadata(path)
    assert (meta.make, meta.model, meta.iso, meta.exposure_time, meta.f_number) == ("Nikon", "Z 6", 51200, 0.25, 1.8)
    assert meta.focal_length == 50.0 and meta.lens_model is None
    assert meta.datetime_original == "2025:01:01 00:00:00"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.uint16), cfa="RGBW")
    with pytest.raises(ValueError):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.uint16), photometric="linear")
    with pytest.raises(ValueError):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.uint16), orientation=9)
