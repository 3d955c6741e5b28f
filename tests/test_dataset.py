"""The SID layout: names, lists, ground truth, the disk cache and training patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy

from helpers.rawgen import dark_dng, quadrant_mosaic, write_dng
from helpers.sid_layout import SidLayout, make_sid_dataset
from seedark.errors import DatasetError
from seedark.frames.packing import XTRANS_REFERENCE, amplify, pack_bayer, pack_xtrans
from seedark.io.pixels import apply_orientation
from seedark.io.raw import RawFrame, read_raw
from seedark.synthesis.noiseprofile import SONY_A7S2
from seedark.training import arraycache
from seedark.training import dataset as ds
from seedark.training.arraycache import ArrayCache
from seedark.training.dataset import (
    crop_frame,
    exposure_ratio,
    find_sources,
    group_by_reference,
    paired_patch,
    parse_name,
    read_list,
    synthetic_srgb_patch,
    unorient,
)

# --------------------------------------------------------------------------- names and lists


@pytest.mark.parametrize(
    ("name", "scene", "exposure"),
    [
        ("10003_00_0.04s.ARW", 10003, 0.04),
        ("00001_00_10s.ARW", 1, 10.0),
        ("20211_05_0.033s.RAF", 20211, 0.033),
        ("10040_00_30s.dng", 10040, 30.0),
    ],
)
def test_parse_name_matches_the_official_slicing(name: str, scene: int, exposure: float) -> None:
    assert parse_name(name) == (scene, exposure)
    if name[-4] == ".":  # the official code's fn[9:-5] assumes a 3-letter extension
        assert float(name[9:-5]) == exposure


@pytest.mark.parametrize(
    "name", ["10003_00_0.04.ARW", "1003_00_0.1s.ARW", "10003_00_s.ARW", "photo.ARW", "10003_00_0s.ARW"]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(DatasetError) as info:
        parse_name(name)
    assert info.value.path == Path(name)


def test_ratio_is_capped_at_300() -> None:
    assert exposure_ratio(0.1, 10) == 100
    assert exposure_ratio(0.04, 10) == 250
    assert exposure_ratio(0.1, 30) == 300
    assert exposure_ratio(0.033, 10) == 300
    assert exposure_ratio(1, 10) == 10


def test_read_list_resolves_against_the_list_folder(layout: SidLayout) -> None:
    pairs = read_list(layout.test_list)
    assert [(p.scene, p.ratio) for p in pairs] == [(10003, 100), (10003, 250), (10034, 100), (10040, 300)]
    first = pairs[0]
    assert first.short == layout.root / "./Sony/short/10003_00_0.1s.ARW"
    assert first.short.is_file() and first.long.is_file()
    assert first.short_name == "./Sony/short/10003_00_0.1s.ARW"
    assert first.extra == ("ISO3200", "F8")
    assert [p.misaligned for p in pairs] == [False, False, True, False]


def test_read_list_with_another_data_root(layout: SidLayout, tmp_path: Path) -> None:
    moved = tmp_path / "lists" / "mine.txt"
    moved.parent.mkdir()
    moved.write_text(layout.val_list.read_text())
    with pytest.raises(DatasetError, match="missing") as info:
        read_list(moved)
    assert info.value.path == moved
    pairs = read_list(moved, layout.root)
    assert pairs[0].long == layout.root / "Sony/long/20005_00_10s.ARW"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("./Sony/short/10003_00_0.1s.ARW", "line 1: expected"),
        ("./Sony/short/10003_00_0.1s.ARW ./Sony/long/10004_00_10s.ARW", "differ"),
        ("./Sony/short/IMG_0001.ARW ./Sony/long/10003_00_10s.ARW", "line 1: .*SID pattern"),
        ("", "holds no pairs"),
    ],
)
def test_bad_lists(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(line + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        read_list(path, check_files=False)
    assert info.value.path == path


def test_missing_list(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="list file not found"):
        read_list(tmp_path / "nope.txt")


def test_group_by_reference(layout: SidLayout) -> None:
    groups = group_by_reference(read_list(layout.train_list))
    assert [[p.short.name for p in g] for g in groups] == [
        ["00001_00_0.1s.ARW", "00001_00_0.04s.ARW"],
        ["00002_00_0.1s.ARW"],
        ["00003_00_0.1s.ARW"],
    ]


def test_dng_content_named_arw_is_read_by_content(layout: SidLayout) -> None:
    frame = read_raw(layout.root / "Sony/short/10003_00_0.1s.ARW")
    assert frame.sensor == "bayer" and frame.cfa_string == "RGGB" and frame.mosaic.shape == (64, 96)


# --------------------------------------------------------------------------- ground truth and cache


def test_ground_truth_is_the_official_postprocess(layout: SidLayout) -> None:
    path = layout.root / "Sony/long/10003_00_10s.ARW"
    gt, flip = arraycache.decode_ground_truth(path)
    with rawpy.imread(str(path)) as raw:
        want = raw.postprocess(use_camera_wb=True, half_size=False, no_auto_bright=True, output_bps=16)
    np.testing.assert_array_equal(gt, want)
    assert gt.dtype == np.uint16 and flip == 0


def test_cache_decodes_once_and_memory_maps(layout: SidLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = layout.root / "Sony/long/10003_00_10s.ARW"
    cache = ArrayCache(tmp_path / "cache")
    first, flip = cache.ground_truth(path)
    assert isinstance(first, np.memmap) and flip == 0
    assert len(list((tmp_path / "cache" / "gt").glob("*.npy"))) == 1

    def fail(_: object) -> None:
        raise AssertionError("decoded twice")

    monkeypatch.setattr(arraycache, "decode_ground_truth", fail)
    again, _ = cache.ground_truth(path)
    np.testing.assert_array_equal(again, first)
    # the mosaic cache gives the same frame as reading the file
    frame = cache.frame(layout.root / "Sony/short/10003_00_0.1s.ARW")
    cached = cache.frame(layout.root / "Sony/short/10003_00_0.1s.ARW")
    assert isinstance(cached.mosaic, np.memmap)
    np.testing.assert_array_equal(cached.mosaic, frame.mosaic)
    np.testing.assert_array_equal(cached.pattern, frame.pattern)
    np.testing.assert_array_equal(cached.black_levels, frame.black_levels)
    assert (cached.white_level, cached.flip, cached.sensor) == (frame.white_level, frame.flip, frame.sensor)
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_cache_notices_a_changed_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = dark_dng(tmp_path / "00001_00_10s.dng", rng, (32, 32), (600, 5000))
    cache = ArrayCache(tmp_path / "cache")
    before, _ = cache.ground_truth(path)
    before = np.array(before)
    dark_dng(path, rng, (32, 32), (6000, 9000))
    after, _ = cache.ground_truth(path)
    assert not np.array_equal(before, after)


def test_no_cache_folder_decodes_every_time(layout: SidLayout) -> None:
    gt, _ = ArrayCache(None).ground_truth(layout.root / "Sony/long/10003_00_10s.ARW")
    assert not isinstance(gt, np.memmap) and gt.shape == (64, 96, 3)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("flip", range(8))
def test_unorient_undoes_orientation(flip: int, rng: np.random.Generator) -> None:
    image = rng.random((5, 7, 3))
    np.testing.assert_array_equal(unorient(apply_orientation(image, flip), flip), image)


def test_rotated_ground_truth_lines_up_with_the_sensor(tmp_path: Path) -> None:
    mosaic = quadrant_mosaic(32, 48, levels=(1000, 3000, 6000, 12000))
    path = write_dng(tmp_path / "00001_00_10s.dng", mosaic, orientation=6)
    gt, flip = arraycache.decode_ground_truth(path)
    assert flip == 6 and gt.shape[:2] == (48, 32)
    sensor = unorient(gt, flip).astype(float).mean(axis=2)
    quads = [sensor[:16, :24], sensor[:16, 24:], sensor[16:, :24], sensor[16:, 24:]]
    means = [q[2:-2, 2:-2].mean() for q in quads]
    assert means == sorted(means)  # quadrant brightness in the mosaic's order


def test_crop_then_pack_is_packing_then_cropping(rng: np.random.Generator) -> None:
    bayer = RawFrame(
        Path("b"),
        rng.integers(0, 16383, (20, 30), dtype=np.uint16),
        np.array([["G", "B"], ["R", "G"]]),
        "bayer",
        np.array([[510.0, 512.0], [514.0, 516.0]], dtype=np.float32),
        16383,
        0,
    )
    full = pack_bayer(bayer)
    np.testing.assert_array_equal(pack_bayer(crop_frame(bayer, 4, 6, 8, 10)), full[2:6, 3:8])
    # an odd offset shifts the CFA phase: the pattern is rolled to match
    odd = crop_frame(bayer, 1, 1, 8, 8)
    assert odd.pattern.tolist() == [["G", "R"], ["B", "G"]]
    assert odd.black_levels.tolist() == [[516.0, 514.0], [512.0, 510.0]]

    pattern = np.roll(XTRANS_REFERENCE, (2, 3), axis=(0, 1))
    xtrans = RawFrame(
        Path("x"),
        rng.integers(0, 16383, (40, 52), dtype=np.uint16),
        pattern,
        "xtrans",
        np.full((6, 6), 1024, dtype=np.float32),
        16383,
        0,
    )
    y0, x0, b, align = ds.sensor_geometry(xtrans)
    assert (b, align) == (3, 2) and (y0, x0) == (2, 3)
    full = pack_xtrans(xtrans)
    np.testing.assert_array_equal(pack_xtrans(crop_frame(xtrans, y0 + 6, x0 + 12, 18, 24)), full[2:8, 4:12])


# --------------------------------------------------------------------------- patches


def _locate(full: np.ndarray, patch: np.ndarray) -> tuple[int, int]:
    p = patch.shape[0]
    hits = [
        (y, x)
        for y in range(full.shape[0] - p + 1)
        for x in range(full.shape[1] - p + 1)
        if np.array_equal(full[y : y + p, x : x + p], patch)
    ]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("orientation", [1, 6])
def test_paired_patch_input_and_target_match(tmp_path: Path, orientation: int) -> None:
    layout = make_sid_dataset(tmp_path, train={1: (10.0, (0.1,))}, test={}, val={}, orientation=orientation)
    pair = read_list(layout.train_list)[0]
    frame = read_raw(pair.short)
    gt, flip = arraycache.decode_ground_truth(pair.long)
    rng = np.random.default_rng(3)
    inp, target = paired_patch(frame, gt, flip, pair.ratio, 8, rng, augment_patch=False)
    assert inp.shape == (4, 8, 8) and target.shape == (3, 16, 16)
    assert inp.dtype == np.float32 and target.dtype == np.float32 and inp.max() <= 1.0
    full = amplify(pack_bayer(frame), pair.ratio)
    y, x = _locate(full, inp.transpose(1, 2, 0))
    want = unorient(gt, flip)[2 * y : 2 * y + 16, 2 * x : 2 * x + 16].astype(np.float32) / np.float32(65535)
    np.testing.assert_array_equal(target.transpose(1, 2, 0), want)


def test_augmentation_is_applied_to_both(layout: SidLayout) -> None:
    pair = read_list(layout.train_list)[0]
    frame = read_raw(pair.short)
    gt, flip = arraycache.decode_ground_truth(pair.long)
    plain = paired_patch(frame, gt, flip, pair.ratio, 8, np.random.default_rng(11), augment_patch=False)
    flipped = paired_patch(frame, gt, flip, pair.ratio, 8, np.random.default_rng(11))
    draws = np.random.default_rng(11)
    draws.integers(0, 32 - 8 + 1)  # the window, in a 32 x 48 packed frame
    draws.integers(0, 48 - 8 + 1)
    rows, cols, transpose = draws.integers(0, 2, size=3)
    for a, b in zip(plain, flipped, strict=True):
        want = a[:, ::-1] if rows else a
        want = want[:, :, ::-1] if cols else want
        want = want.transpose(0, 2, 1) if transpose else want
        np.testing.assert_array_equal(b, want)


def test_patch_is_clamped_to_small_images(layout: SidLayout) -> None:
    pair = read_list(layout.train_list)[0]
    gt, flip = arraycache.decode_ground_truth(pair.long)
    inp, target = paired_patch(read_raw(pair.short), gt, flip, pair.ratio, 512, np.random.default_rng(0))
    assert inp.shape == (4, 32, 32) and target.shape == (3, 64, 64)


def test_synthetic_patches(layout: SidLayout, rng: np.random.Generator) -> None:
    long = layout.root / "Sony/long/00001_00_10s.ARW"
    gt, flip = arraycache.decode_ground_truth(long)
    inp, target = paired_patch(read_raw(long), gt, flip, 200.0, 16, rng, augment_patch=False, noise=SONY_A7S2)
    assert inp.shape == (4, 16, 16) and target.shape == (3, 32, 32)
    # darkened 200x then amplified 200x: about the clean level again, but noisy
    clean = pack_bayer(read_raw(long))
    assert inp.mean() == pytest.approx(clean.mean(), rel=0.25)

    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    inp, target = synthetic_srgb_patch(image, 150.0, SONY_A7S2, 8, rng, augment_patch=False)
    assert inp.shape == (4, 8, 8) and target.shape == (3, 16, 16)
    found = [
        (y, x)
        for y in range(0, 30 - 15, 2)
        for x in range(0, 40 - 15, 2)
        if np.array_equal(image[y : y + 16, x : x + 16].astype(np.float32) / 255, target.transpose(1, 2, 0))
    ]
    assert found, "the target is a region of the sRGB image"


def test_find_sources(tmp_path: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    (tmp_path / "sub").mkdir()
    dark_dng(tmp_path / "sub" / "a.dng", rng, (32, 32), (600, 900))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_sources(tmp_path)] == ["b.png", "a.dng"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no RAW files"):
        find_sources(tmp_path / "empty")


def test_xtrans_patch_starts_on_a_whole_tile(tmp_path: Path, rng: np.random.Generator) -> None:
    from helpers.rawgen import XTRANS_PATTERN

    path = write_dng(
        tmp_path / "00001_00_0.1s.dng",
        rng.integers(600, 3000, (66, 96), dtype=np.uint16),
        cfa=XTRANS_PATTERN,
        make="Fujifilm",
        model="X-T2",
    )
    frame = read_raw(path)
    y0, x0, b, align = ds.sensor_geometry(frame)
    assert frame.sensor == "xtrans" and (b, align) == (3, 2)
    # the target's content does not matter here, only where it is cut from
    gt = rng.integers(0, 65535, (66, 96, 3), dtype=np.uint16)
    inp, target = paired_patch(frame, gt, 0, 100.0, 8, np.random.default_rng(2), augment_patch=False)
    assert inp.shape == (9, 8, 8) and target.shape == (3, 24, 24)
    y, x = _locate(amplify(pack_xtrans(frame), 100.0), inp.transpose(1, 2, 0))
    assert y % 2 == 0 and x % 2 == 0
    want = gt[y0 + 3 * y : y0 + 3 * y + 24, x0 + 3 * x : x0 + 3 * x + 24].astype(np.float32) / np.float32(65535)
    np.testing.assert_array_equal(target.transpose(1, 2, 0), want)
