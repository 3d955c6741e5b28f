"""Output settings (issue 14): compressed TIFF, JPEG quality, the --compare picture's size and labels,
and the same bytes on every run.

Expected values come from elsewhere: tifffile and Pillow (libtiff) decode the TIFFs, the deflate
strips are also undone here by hand (zlib, then a running sum per sample, TIFF 6.0 section 14),
Pillow's own JPEG encoder gives the quantisation tables of a quality, and the ICC profile ID is the
MD5 the ICC specification (ICC.1:2022 7.2.18) defines, computed here.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

import seedark
from helpers.cli import run_cli
from helpers.rawgen import dark_dng
from seedark.errors import OutputError, UsageError
from seedark.io import deflate
from seedark.io import image as output
from seedark.io.image import srgb_icc_profile, write_image
from seedark.io.pixels import quantise
from seedark.io.tiff import MAX_TIFF_SIZE, Ifd, ifd_at
from seedark.models.weights import load_weights
from seedark.pipeline.compare import compare_picture, fit_width, label_boxes

FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"


def _write(path: Path, img: np.ndarray, fmt: str, bits: int, **kw: Any) -> Path:
    return write_image(path, img, fmt=fmt, bits=bits, metadata=None, software="seedark test", **kw)


def smooth(h: int, w: int) -> np.ndarray:
    """A photograph-like gradient: what the predictor and deflate are for."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x / w, y / h, (x + y) / (w + h)], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- TIFF


def undo_deflate_strips(path: Path) -> np.ndarray:
    """The pixels of a deflate + horizontal-predictor TIFF, decoded here: each strip inflated, then
    each sample the running sum (modulo 2**bits) of the differences along its row."""
    with tifffile.TiffFile(path) as tf:
        page = tf.pages.first
        h, w = page.shape[:2]
        bits = page.bitspersample
        rows = page.tags["RowsPerStrip"].value
        offsets, counts = page.dataoffsets, page.databytecounts
    data = path.read_bytes()
    dtype = np.dtype("<u2" if bits == 16 else np.uint8)
    strips = []
    for i, (offset, count) in enumerate(zip(offsets, counts, strict=True)):
        n = min(rows, h - i * rows)
        diff = np.frombuffer(zlib.decompress(data[offset : offset + count]), dtype=dtype).reshape(n, w, 3)
        strips.append(np.cumsum(diff, axis=1, dtype=np.uint64) % (1 << bits))
    return np.concatenate(strips).astype(np.uint16 if bits == 16 else np.uint8)


@pytest.mark.parametrize("bits", [8, 16])
def test_tiff_is_deflate_with_the_horizontal_predictor(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, bits: int, deflate_library: str
) -> None:
    monkeypatch.setattr(output, "_TIFF_STRIP_BYTES", 3000)  # several strips, compressed on several threads
    # noise makes differences of both signs: the predictor's arithmetic wraps around
    img = np.clip(smooth(41, 67) + rng.normal(0, 0.002, (41, 67, 3)).astype(np.float32), 0, 1)
    want = quantise(img, bits)
    packed = _write(tmp_path / "deflate.tif", img, "tiff", bits)
    plain = _write(tmp_path / "none.tif", img, "tiff", bits, compression="none")
    for path in (packed, plain):
        np.testing.assert_array_equal(tifffile.imread(path), want)
        with Image.open(path) as im:  # libtiff; 16-bit RGB comes back as its high bytes
            np.testing.assert_array_equal(np.asarray(im), want if bits == 8 else want >> 8)
    with tifffile.TiffFile(packed) as tf:
        page = tf.pages.first
        assert page.compression == 8 and page.predictor == 2 and len(page.dataoffsets) >= 3
    np.testing.assert_array_equal(undo_deflate_strips(packed), want)
    # deflate earns its keep on a smooth picture: measured 37% (8-bit) and 38% (16-bit) of the plain file
    packed = _write(tmp_path / "smooth_deflate.tif", smooth(41, 67), "tiff", bits)
    plain = _write(tmp_path / "smooth_none.tif", smooth(41, 67), "tiff", bits, compression="none")
    assert packed.stat().st_size < 0.6 * plain.stat().st_size


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"),
    reason="ISA-L and zlib-ng are dependencies where they have wheels; checked where CI runs",
)
def test_the_fast_deflate_libraries_are_installed_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyproject's dependencies bring them; without them every PNG and TIFF would quietly take 2-4x longer.
    assert (deflate.compressor_name(16), deflate.compressor_name(8)) == ("isal", "zlib-ng")
    used: list[str] = []
    for name in ("isal.isal_zlib", "zlib_ng.zlib_ng"):
        module = deflate._module(name)
        assert module is not None
        real = module.compressobj
        monkeypatch.setattr(module, "compressobj", lambda *a, _n=name, _f=real: used.append(_n) or _f(*a))
    img = smooth(9, 11)
    np.testing.assert_array_equal(tifffile.imread(_write(tmp_path / "a.tif", img, "tiff", 16)), quantise(img, 16))
    assert set(used) == {"isal.isal_zlib"}
    used.clear()
    with Image.open(_write(tmp_path / "a.png", img, "png", 8)) as im:
        np.testing.assert_array_equal(np.asarray(im), quantise(img, 8))
    assert set(used) == {"zlib_ng.zlib_ng"}


def test_tiff_growing_past_4gb_while_written_is_refused(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The size is checked up front from an estimate; should deflate ever outgrow it, the encoder stops.
    monkeypatch.setattr(output, "_tiff_size_estimate", lambda h, w, bits: 0)
    monkeypatch.setattr(output, "MAX_TIFF_SIZE", 2000)
    monkeypatch.setattr(output, "_TIFF_STRIP_BYTES", 1000)
    noise = rng.random((40, 50, 3), dtype=np.float32)  # incompressible
    with pytest.raises(OutputError, match="too large for TIFF") as info:
        _write(tmp_path / "big.tif", noise, "tiff", 16)
    assert info.value.path == tmp_path / "big.tif"
    assert os.listdir(tmp_path) == []


def test_a_directory_after_the_data_is_checked() -> None:
    ifd = Ifd()
    ifd.long(256, 4)
    with pytest.raises(ValueError, match="even offset"):
        ifd_at(ifd, 1001)
    with pytest.raises(ValueError, match="4 GiB"):
        ifd_at(ifd, MAX_TIFF_SIZE - 11)
    ifd.strips(273, 279, [b"abcd"])
    with pytest.raises(ValueError, match="holds offsets, not strips"):
        ifd_at(ifd, 1000)


# --------------------------------------------------------------------------- JPEG quality


def test_jpeg_quality_is_the_one_asked_for(tmp_path: Path, rng: np.random.Generator) -> None:
    img = np.clip(smooth(64, 96) + rng.normal(0, 0.03, (64, 96, 3)).astype(np.float32), 0, 1)
    q8 = quantise(img, 8)
    errors, sizes = {}, {}
    for quality in (None, 50, 95):
        path = _write(tmp_path / f"q{quality}.jpg", img, "jpeg", 8, quality=quality)
        reference = io.BytesIO()  # Pillow's own encoder at that quality gives the tables to expect
        Image.fromarray(q8).save(reference, format="JPEG", quality=quality or 95, subsampling=0)
        with Image.open(path) as im, Image.open(reference) as ref:
            assert im.quantization == ref.quantization
            errors[quality] = np.abs(np.asarray(im).astype(int) - q8).mean()
        sizes[quality] = path.stat().st_size
    assert sizes[None] == sizes[95]  # the default is 95
    assert sizes[50] < sizes[95] and errors[50] > errors[95]


@pytest.mark.parametrize(
    ("fmt", "kw", "message"),
    [
        ("png", {"quality": 80}, "--quality is for JPEG only"),
        ("tiff", {"quality": 80}, "--quality is for JPEG only"),
        ("jpeg", {"quality": 0}, "must be in 1..100, not 0"),
        ("jpeg", {"quality": 101}, "must be in 1..100, not 101"),
        ("png", {"compression": "none"}, "--compression is for TIFF only"),
        ("jpeg", {"compression": "deflate"}, "--compression is for TIFF only"),
        ("tiff", {"compression": "lzw"}, "unknown TIFF compression 'lzw'"),
    ],
)
def test_settings_for_another_format_are_usage_errors(
    tmp_path: Path, fmt: str, kw: dict[str, Any], message: str
) -> None:
    ext = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}[fmt]
    with pytest.raises(UsageError, match=message):
        _write(tmp_path / f"out{ext}", smooth(4, 4), fmt, 8, **kw)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quality", "80"], "--quality is for JPEG only"),
        (["-o", "{tmp}/x.jpg", "--quality", "0"], "JPEG quality must be in 1..100"),
        (["-o", "{tmp}/x.png", "--compression", "none"], "--compression is for TIFF only"),
        (["--compare-width", "800"], "add --compare"),
        (["--compare", "--compare-width", "50"], "at least 100, not 50"),
        (["--compare", "--compare-width", "-1"], "at least 100, not -1"),
    ],
)
def test_cli_usage_errors(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    shot = dark_dng(tmp_path / "night.dng", rng, (8, 8), (500, 800))
    code, _, err = run_cli(capsys, "enhance", shot, "--weights", FIXTURE, *(a.format(tmp=tmp_path) for a in args))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["night.dng"]


def test_batch_checks_the_settings_before_any_work(tmp_path: Path, rng: np.random.Generator) -> None:
    dark_dng(tmp_path / "night.dng", rng, (8, 8), (500, 800))
    with pytest.raises(UsageError, match="--compression is for TIFF only"):
        seedark.run_batch([tmp_path], fmt="jpeg", compression="none", weights=FIXTURE)
    with pytest.raises(UsageError, match="add --compare"):
        seedark.run_batch([tmp_path], compare_width=0, weights=FIXTURE)
    assert os.listdir(tmp_path) == ["night.dng"]


# --------------------------------------------------------------------------- the --compare picture


def test_compare_picture_scaling_and_labels(rng: np.random.Generator) -> None:
    before = rng.integers(100, 200, (30, 500, 3), dtype=np.uint8)
    after = rng.integers(100, 200, (30, 500, 3), dtype=np.uint8)
    full = compare_picture(before, after, 0)
    assert full.shape == (30, 1008, 3)
    small = compare_picture(before, after, 408)
    assert small.shape == (12, 408, 3)  # halves of 200 px, height 30 * 200 / 500
    assert label_boxes(200, 12) == {}  # a label taller than its half is left out
    np.testing.assert_array_equal(small[:, :200], fit_width(before, 200))
    assert fit_width(before, 800) is before  # never enlarged
    with pytest.raises(ValueError, match="uint8 of one shape"):
        compare_picture(before, after[:, :-1])
    with pytest.raises(ValueError, match="uint8 of one shape"):
        compare_picture(before, after.astype(np.uint16))


# --------------------------------------------------------------------------- the same bytes every run


def test_srgb_profile_is_reproducible_and_srgb() -> None:
    ours = srgb_icc_profile()
    fresh = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())  # stamped now
    assert len(ours) == len(fresh) == struct.unpack(">I", ours[:4])[0]
    assert ours[:24] == fresh[:24] and ours[36:84] == fresh[36:84] and ours[100:] == fresh[100:]
    assert ours[24:36] != fresh[24:36]  # not the time of this run
    year, month, day, hour, minute, second = struct.unpack(">6H", ours[24:36])
    assert 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60 and year >= 2000
    zeroed = bytearray(ours)
    zeroed[44:48], zeroed[64:68], zeroed[84:100] = bytes(4), bytes(4), bytes(16)
    assert ours[84:100] == hashlib.md5(zeroed).digest()
    profile = ImageCms.ImageCmsProfile(io.BytesIO(ours))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    # converting from LittleCMS's sRGB into it changes no pixel
    pixels = Image.fromarray(np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    moved = ImageCms.profileToProfile(pixels, ImageCms.createProfile("sRGB"), profile, outputMode="RGB")
    assert moved is not None
    np.testing.assert_array_equal(np.asarray(moved), np.asarray(pixels))


@pytest.mark.parametrize("name", ["out.png", "out.tif", "out.jpg"])
def test_two_runs_write_the_same_bytes(tmp_path: Path, rng: np.random.Generator, name: str) -> None:
    engine = seedark.Engine(load_weights(FIXTURE), device="cpu", precision="fp32")
    shot = dark_dng(tmp_path / "night.dng", rng, (36, 52), (500, 900), orientation=6)
    runs = []
    for run in ("a", "b"):
        srgb_icc_profile.cache_clear()  # each run makes its profile, as a new process would
        (tmp_path / run).mkdir()
        written = seedark.enhance_file(shot, tmp_path / run / name, ratio=50, engine=engine, compare=True)
        runs.append((written.read_bytes(), written.with_name("out_compare.jpg").read_bytes()))
    assert runs[0] == runs[1]
