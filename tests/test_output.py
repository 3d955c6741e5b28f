"""Writing images: orientation, quantisation, the PNG/TIFF/JPEG encoders, atomicity."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import rawpy
import tifffile
from PIL import Image, JpegImagePlugin

from helpers.cli import child_env
from helpers.pngread import decode_png
from helpers.rawgen import SAMPLE_METADATA, dark_dng, quadrant_mosaic, write_dng
from seedark import _parallel
from seedark.errors import OutputError, UsageError
from seedark.io import image as output
from seedark.io import pixels, png
from seedark.io.exifread import read_camera_metadata
from seedark.io.formats import default_extension, format_from_path
from seedark.io.image import srgb_icc_profile, write_image
from seedark.io.metadata import CameraMetadata
from seedark.io.pixels import apply_orientation, quantise
from seedark.io.png import adler32_combine
from seedark.io.tiff import Ifd, LazyChunk, layout_tiff

EXT = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}
FORMAT_BITS = [("png", 8), ("png", 16), ("tiff", 8), ("tiff", 16), ("jpeg", 8)]


@pytest.fixture
def image(rng: np.random.Generator) -> np.ndarray:
    return rng.random((37, 53, 3), dtype=np.float32)


def _write(folder: Path, img: np.ndarray, fmt: str, bits: int, **kw: Any) -> Path:
    kw.setdefault("metadata", SAMPLE_METADATA)
    kw.setdefault("software", "seedark test")
    return write_image(folder / f"out{EXT[fmt]}", img, fmt=fmt, bits=bits, **kw)


# --------------------------------------------------------------------------- orientation


def _flip_index_reference(img: np.ndarray, flip: int) -> np.ndarray:
    """dcraw's write loop with flip_index, transcribed literally."""
    ih, iw = img.shape[:2]
    oh, ow = (iw, ih) if flip & 4 else (ih, iw)
    out = np.empty((oh, ow, *img.shape[2:]), dtype=img.dtype)
    for row in range(oh):
        for col in range(ow):
            r, c = row, col
            if flip & 4:
                r, c = c, r
            if flip & 2:
                r = ih - 1 - r
            if flip & 1:
                c = iw - 1 - c
            out[row, col] = img[r, c]
    return out


@pytest.mark.parametrize("flip", range(8))
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (4, 4, 2)])
def test_apply_orientation_is_dcraw_flip_index(rng: np.random.Generator, flip: int, shape: tuple[int, ...]) -> None:
    img = rng.integers(0, 1000, shape)
    got = apply_orientation(img, flip)
    np.testing.assert_array_equal(got, _flip_index_reference(img, flip))
    assert np.shares_memory(got, img)  # documented: a view


def test_apply_orientation_common_values(rng: np.random.Generator) -> None:
    img = rng.integers(0, 1000, (3, 5, 3))
    np.testing.assert_array_equal(apply_orientation(img, 0), img)
    np.testing.assert_array_equal(apply_orientation(img, 3), np.rot90(img, 2))
    np.testing.assert_array_equal(apply_orientation(img, 5), np.rot90(img, 1))  # 90 CCW
    np.testing.assert_array_equal(apply_orientation(img, 6), np.rot90(img, -1))  # 90 CW


def test_apply_orientation_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        apply_orientation(np.zeros((2, 2)), 8)
    with pytest.raises(ValueError):
        apply_orientation(np.zeros(4), 0)


_POST: dict[str, Any] = {"no_auto_bright": True, "gamma": (1, 1), "output_bps": 16, "user_wb": [1, 1, 1, 1]}


def _quadrant_means(img: np.ndarray) -> np.ndarray:
    """Mean of the inner half of each quadrant (away from demosaicing seams), 2x2."""
    h, w = img.shape[:2]
    out = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            q = img[i * h // 2 : (i + 1) * h // 2, j * w // 2 : (j + 1) * w // 2]
            qh, qw = q.shape[:2]
            out[i, j] = q[qh // 4 : 3 * qh // 4, qw // 4 : 3 * qw // 4].mean()
    return out


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_agrees_with_rawpy(tmp_path: Path, orientation: int) -> None:
    levels = (1500, 4000, 8000, 14000)
    mosaic = quadrant_mosaic(48, 64, levels)
    path = write_dng(tmp_path / "q.dng", mosaic, orientation=orientation)
    with rawpy.imread(str(path)) as raw:
        flip = raw.sizes.flip
        rotated = raw.postprocess(**_POST)
    with rawpy.imread(str(path)) as raw:
        upright = raw.postprocess(user_flip=0, **_POST)

    # Quadrant brightness: where LibRaw puts each quadrant is where we put it.
    expected = apply_orientation(np.array(levels).reshape(2, 2), flip)
    means = _quadrant_means(rotated)
    assert np.argsort(means, axis=None).tolist() == np.argsort(expected, axis=None).tolist()
    # And pixel for pixel: rotating LibRaw's unrotated output gives its rotated output.
    np.testing.assert_array_equal(apply_orientation(upright, flip), rotated)


# --------------------------------------------------------------------------- quantise


@pytest.mark.parametrize("bits", [8, 16])
def test_quantise_rounds_half_up_and_clips(bits: int) -> None:
    maxval = (1 << bits) - 1
    k = np.arange(0, maxval, max(1, maxval // 997), dtype=np.float64)
    exact = (k / maxval).astype(np.float32)
    below = ((k + 0.45) / maxval).astype(np.float32)
    above = ((k + 0.55) / maxval).astype(np.float32)
    img = np.stack([exact, below, above], axis=-1)[None]
    q = quantise(img, bits)
    assert q.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(q[0, :, 0], k)
    np.testing.assert_array_equal(q[0, :, 1], k)
    np.testing.assert_array_equal(q[0, :, 2], k + 1)
    odd = np.array([[[-1.0, 2.0, np.nan], [np.inf, -np.inf, 0.5]]], dtype=np.float32)
    np.testing.assert_array_equal(quantise(odd, bits)[0], [[0, maxval, 0], [maxval, 0, (maxval + 1) // 2]])


def test_quantise_takes_strided_views(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pixels, "_QUANTISE_BLOCK", 50)  # many blocks, several threads
    img = rng.random((41, 29, 3), dtype=np.float32)
    view = apply_orientation(img, 5)
    np.testing.assert_array_equal(quantise(view, 16), quantise(np.ascontiguousarray(view), 16))
    np.testing.assert_array_equal(quantise(view, 16), np.floor(view * np.float32(65535) + np.float32(0.5)))


def test_quantise_into_pieces_is_quantising_the_whole(rng: np.random.Generator) -> None:
    img = rng.normal(0.5, 0.4, (30, 47, 3)).astype(np.float32)  # outside [0, 1] too
    for bits in (8, 16):
        whole = quantise(img, bits)
        out = np.zeros_like(whole)
        for a, b in [(0, 7), (7, 19), (19, 30)]:
            for c, d in [(0, 20), (20, 47)]:
                piece = out[a:b, c:d]
                assert quantise(img[a:b, c:d], bits, out=piece) is piece
        np.testing.assert_array_equal(out, whole)
    with pytest.raises(ValueError, match="uint8"):
        quantise(img, 8, out=np.zeros((30, 47, 3), np.uint16))
    with pytest.raises(ValueError, match="out must be"):
        quantise(img, 16, out=np.zeros((30, 46, 3), np.uint16))


def test_to_8bit_rounds_every_16_bit_level_to_the_nearest() -> None:
    levels = np.arange(65536, dtype=np.uint16).reshape(-1, 1, 1).repeat(3, axis=2)
    want = np.floor(np.arange(65536) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(pixels.to_8bit(levels)[:, 0, 0], want)
    img = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(pixels.to_8bit(img), quantise(img, 8))


@pytest.mark.parametrize(("fmt", "bits"), FORMAT_BITS)
@pytest.mark.parametrize("flip", [0, 6])
def test_quantised_images_are_written_as_they_are(
    tmp_path: Path, image: np.ndarray, fmt: str, bits: int, flip: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image quantised beforehand (what enhance_file does, tile by tile) gives the same file."""
    monkeypatch.setattr(output, "_TIFF_STRIP_BYTES", 1000)  # several strips, copied one at a time
    oriented = apply_orientation(image, flip)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from_float = _write(tmp_path / "a", oriented, fmt, bits)
    samples = apply_orientation(quantise(image, bits), flip)  # a strided view when rotated
    assert samples.flags.c_contiguous == (flip == 0)
    from_samples = _write(tmp_path / "b", samples, fmt, bits)
    assert from_samples.read_bytes() == from_float.read_bytes()
    if fmt == "tiff":
        np.testing.assert_array_equal(tifffile.imread(from_samples), quantise(oriented, bits))


def test_samples_of_the_wrong_depth_are_refused(tmp_path: Path, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="16-bit file needs a float or uint16"):
        _write(tmp_path, quantise(image, 8), "png", 16)
    with pytest.raises(ValueError, match="8-bit file needs"):
        _write(tmp_path, (image * 100).astype(np.int32), "tiff", 8)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip(tmp_path: Path, image: np.ndarray, bits: int) -> None:
    path = _write(tmp_path, image, "png", bits)
    chunks, pixels = decode_png(path)
    assert chunks[b"IHDR"][0][8] == bits
    np.testing.assert_array_equal(pixels, quantise(image, bits))
    name, rest = chunks[b"iCCP"][0].split(b"\0", 1)
    assert name == b"sRGB" and rest[0] == 0
    assert zlib.decompress(rest[1:]) == srgb_icc_profile()

    with Image.open(path) as im:
        assert im.size == (53, 37)
        assert im.info["icc_profile"] == srgb_icc_profile()
        exif = im.getexif()
        assert exif[271] == "Sony" and exif[272] == "ILCE-7SM2" and exif[274] == 1
        assert exif.get_ifd(0x8769)[34855] == 3200
        if bits == 8:
            np.testing.assert_array_equal(np.asarray(im), pixels)
    assert read_camera_metadata(path) == CameraMetadata()  # PNG isn't a TIFF: no claims
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temp file left


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("bits", [8, 16])
def test_png_in_many_pieces(
    tmp_path: Path,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    bits: int,
    workers: int,
    deflate_library: str,
) -> None:
    # Tiny pieces: many independently deflated blocks joined into one zlib stream.
    monkeypatch.setattr(png, "_PNG_PIECE_BYTES", 100)
    monkeypatch.setattr(_parallel, "worker_count", lambda: workers)
    img = rng.random((31, 17, 3), dtype=np.float32)
    img[10:20] = 0.25  # flat rows too
    _, pixels = decode_png(_write(tmp_path, img, "png", bits))
    np.testing.assert_array_equal(pixels, quantise(img, bits))


def test_png_one_pixel(tmp_path: Path) -> None:
    img = np.full((1, 1, 3), 0.5, dtype=np.float32)
    _, pixels = decode_png(_write(tmp_path, img, "png", 16))
    assert pixels.tolist() == [[[32768] * 3]]


def test_adler32_combine(rng: np.random.Generator) -> None:
    for _ in range(20):
        a = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, int(rng.integers(0, 70000)), dtype=np.uint8).tobytes()
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
    big = b"\xff" * 200000
    assert adler32_combine(zlib.adler32(big), zlib.adler32(big), len(big)) == zlib.adler32(big * 2)


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("compression", [None, "none"])
@pytest.mark.parametrize("bits", [8, 16])
def test_tiff_round_trip(tmp_path: Path, image: np.ndarray, bits: int, compression: str | None) -> None:
    path = _write(tmp_path, image, "tiff", bits, compression=compression)
    pixels = tifffile.imread(path)
    assert pixels.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(pixels, quantise(image, bits))
    with tifffile.TiffFile(path) as tf:
        page = tf.pages.first
        tags = page.tags
        assert tf.byteorder == "<" and not tf.is_bigtiff
        assert tags["BitsPerSample"].value == (bits, bits, bits)
        # Adobe deflate with the horizontal predictor by default; none on request
        want = (8, 2) if compression is None else (1, 1)
        assert (tags["Compression"].value, page.predictor) == want
        assert ("Predictor" in tags) == (compression is None)
        assert tags["PhotometricInterpretation"].value == 2
        assert tags["PlanarConfiguration"].value == 1 and tags["Orientation"].value == 1
        assert tags["Make"].value == "Sony" and tags["Software"].value == "seedark test"
        assert tags["DateTime"].value == "2026:11:25 21:30:00"
        assert bytes(tags[34675].value) == srgb_icc_profile()
        codes = [t.code for t in tags.values()]
        assert codes == sorted(codes)
        exif = tags["ExifTag"].value
        assert exif["ExposureTime"] == (1, 30) and exif["ISOSpeedRatings"] == 3200
        assert exif["LensModel"] == "FE 35mm F2.8 ZA" and exif["ColorSpace"] == 1
    assert read_camera_metadata(path) == SAMPLE_METADATA
    with Image.open(path) as im:  # a second, independent reader (libtiff)
        assert im.info["compression"] == ("tiff_adobe_deflate" if compression is None else "raw")
        # Pillow reads 16-bit RGB as 8 bits: the high byte of each sample
        np.testing.assert_array_equal(np.asarray(im), pixels if bits == 8 else pixels >> 8)
        assert im.info["icc_profile"] == srgb_icc_profile()


def test_tiff_many_strips(tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "_TIFF_STRIP_BYTES", 1000)
    img = rng.random((40, 30, 3), dtype=np.float32)
    path = _write(tmp_path, img, "tiff", 16)
    with tifffile.TiffFile(path) as tf:
        assert len(tf.pages.first.dataoffsets) > 1
        np.testing.assert_array_equal(tf.asarray(), quantise(img, 16))


def test_lazy_strips_are_laid_out_like_buffers() -> None:
    def layout(chunks: list[Any]) -> bytes:
        ifd = Ifd()
        ifd.long(256, 4)
        ifd.strips(273, 279, chunks)
        return layout_tiff(ifd).to_bytes()

    data = [b"abcdef", b"gh"]
    assert layout([LazyChunk(6, lambda: data[0]), LazyChunk(2, lambda: data[1])]) == layout(data)
    with pytest.raises(ValueError, match="made 2 bytes, not 3"):
        layout([LazyChunk(3, lambda: b"gh")])


def test_tiff_over_4gb_is_refused_before_encoding(tmp_path: Path) -> None:
    huge = np.broadcast_to(np.float32(0.5), (30000, 30000, 3))  # no memory used
    with pytest.raises(OutputError, match="4 GB"):
        write_image(tmp_path / "big.tif", huge, fmt="tiff", bits=16, metadata=None, software="s")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- JPEG


def test_jpeg_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    # Smooth content: JPEG at quality 95 should then be close to exact.
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    img = np.stack([x / 63, y / 47, (x + y) / 110], axis=-1).astype(np.float32)
    path = _write(tmp_path, img, "jpeg", 8)
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
        assert im.info["icc_profile"] == srgb_icc_profile()
        exif = im.getexif()
        assert exif[271] == "Sony" and exif.get_ifd(0x8769)[42036] == "FE 35mm F2.8 ZA"
        diff = np.abs(np.asarray(im).astype(int) - quantise(img, 8).astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8
    assert read_camera_metadata(path) == SAMPLE_METADATA


def test_jpeg_16_bits_is_a_usage_error(tmp_path: Path, image: np.ndarray) -> None:
    with pytest.raises(UsageError, match="JPEG holds 8 bits"):
        _write(tmp_path, image, "jpeg", 16)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("fmt", "bits"), FORMAT_BITS)
def test_without_metadata(tmp_path: Path, image: np.ndarray, fmt: str, bits: int) -> None:
    path = _write(tmp_path, image, fmt, bits, metadata=None)
    with Image.open(path) as im:
        assert im.getexif()[305] == "seedark test"


def test_bad_shapes_and_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", np.zeros((4, 4)), fmt="png", bits=8, metadata=None, software="")
    with pytest.raises(UsageError):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3)), fmt="png", bits=12, metadata=None, software="")
    with pytest.raises(UsageError):
        write_image(tmp_path / "a.gif", np.zeros((4, 4, 3)), fmt="gif", bits=8, metadata=None, software="")


# --------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize(("fmt", "bits"), FORMAT_BITS)
def test_no_temp_files_after_success(tmp_path: Path, image: np.ndarray, fmt: str, bits: int) -> None:
    path = _write(tmp_path, image, fmt, bits)
    assert os.listdir(tmp_path) == [path.name]
    assert path.stat().st_size > 0


_ENCODERS = {"png": "encode_png", "tiff": "_encode_tiff", "jpeg": "_encode_jpeg"}


def _failing_encoder(exc: BaseException) -> Callable[..., None]:
    def encode(fh: BinaryIO, *args: Any) -> None:
        fh.write(b"partial data" * 1000)
        raise exc

    return encode


@pytest.mark.parametrize(("fmt", "bits"), FORMAT_BITS)
@pytest.mark.parametrize(
    "exc", [RuntimeError("boom"), KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")]
)
def test_failure_mid_write_leaves_nothing(
    tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch, fmt: str, bits: int, exc: BaseException
) -> None:
    seen: list[Path] = []

    def encode(fh: BinaryIO, *args: Any) -> None:
        fh.write(b"partial data" * 1000)
        fh.flush()
        seen.extend(p for p in tmp_path.iterdir() if p.name.endswith(".part"))
        raise exc

    monkeypatch.setattr(output, _ENCODERS[fmt], encode)
    expected: type[BaseException] = OutputError if isinstance(exc, OSError) else type(exc)
    with pytest.raises(expected) as info:
        _write(tmp_path, image, fmt, bits)
    assert len(seen) == 1 and seen[0].name.startswith(f".out{EXT[fmt]}.")  # it was there
    assert os.listdir(tmp_path) == []
    if isinstance(exc, OSError):
        assert "No space left on device" in str(info.value)
        assert str(tmp_path / f"out{EXT[fmt]}") in str(info.value)


def test_failure_keeps_an_existing_file(tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"precious")
    monkeypatch.setattr(output, "encode_png", _failing_encoder(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        _write(tmp_path, image, "png", 8, overwrite=True)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.png"]


def test_existing_file_is_refused_before_encoding(
    tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"precious")
    monkeypatch.setattr(output, "samples", lambda *a: pytest.fail("encoded anyway"))
    with pytest.raises(OutputError, match=r"already exists \(use --overwrite to replace it\)") as info:
        _write(tmp_path, image, "png", 8)
    assert info.value.path == path
    assert path.read_bytes() == b"precious"


def test_overwrite_replaces(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "out.tif"
    path.write_bytes(b"old")
    _write(tmp_path, image, "tiff", 16, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(path), quantise(image, 16))
    assert os.listdir(tmp_path) == ["out.tif"]


def test_file_appearing_during_encoding_is_not_clobbered(
    tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = output.encode_png
    path = tmp_path / "out.png"

    def racing(fh: BinaryIO, *args: Any) -> None:
        path.write_bytes(b"someone else's")  # another process wins the race
        real(fh, *args)

    monkeypatch.setattr(output, "encode_png", racing)
    with pytest.raises(OutputError, match="already exists"):
        _write(tmp_path, image, "png", 8)
    assert path.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize("err", [errno.EPERM, errno.EOPNOTSUPP])
def test_no_hard_links_falls_back(tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    def no_link(src: Any, dst: Any) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", no_link)
    path = _write(tmp_path, image, "png", 8)
    assert os.listdir(tmp_path) == ["out.png"]
    _, pixels = decode_png(path)
    np.testing.assert_array_equal(pixels, quantise(image, 8))
    with pytest.raises(OutputError, match="already exists"):
        _write(tmp_path, image, "png", 8)


def test_missing_folder(tmp_path: Path, image: np.ndarray) -> None:
    target = tmp_path / "nope" / "out.png"
    with pytest.raises(OutputError, match="folder does not exist") as info:
        write_image(target, image, fmt="png", bits=8, metadata=None, software="")
    assert info.value.path == target and str(target) in str(info.value)


def test_folder_that_is_a_file(tmp_path: Path, image: np.ndarray) -> None:
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "out.png"
    with pytest.raises(OutputError, match="not a folder") as info:
        write_image(target, image, fmt="png", bits=8, metadata=None, software="")
    assert info.value.path == target


def test_target_is_a_folder(tmp_path: Path, image: np.ndarray) -> None:
    (tmp_path / "out.png").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        _write(tmp_path, image, "png", 8, overwrite=True)


NOBODY = 65534

# Runs as root, imports what it needs, then gives up root for uid/gid 65534 (the
# interpreter itself may live where that user cannot go, so it cannot be started as it).
# argv: "uid" (real and effective ids dropped) or "euid" (only the effective ones: the
# real uid stays root, so os.access() says yes and only open() finds out), then the
# folder seedark must refuse to write into and one the user owns.
AS_NOBODY = r"""
import json, os, sys
import difflib  # click tries each short option as a long one first, and its NoSuchOption imports difflib
import numpy as np
import seedark.cli, seedark.pipeline.enhance  # everything the command needs, imported while still root
from seedark.errors import OutputError
from seedark.io.image import write_image

how, denied, allowed = sys.argv[1], sys.argv[2], sys.argv[3]
os.setgroups([])
if how == "uid":
    os.setgid(65534)
    os.setuid(65534)
else:
    os.setegid(65534)
    os.seteuid(65534)
report = {"ids": [os.getuid(), os.geteuid()], "access": os.access(denied, os.W_OK)}
image = np.full((5, 7, 3), 0.25, np.float32)
try:
    write_image(os.path.join(denied, "out.png"), image, fmt="png", bits=8, metadata=None, software="t")
except OutputError as exc:
    report["error"], report["path"] = exc.reason, str(exc.path)
ok = write_image(os.path.join(allowed, "ok.png"), image, fmt="png", bits=8, metadata=None, software="t")
report["written"] = str(ok)
print(json.dumps(report), flush=True)
if how == "uid":  # the whole command, as that user: one error line, exit status 1
    seedark.cli.main(["enhance", sys.argv[4], "-o", os.path.join(denied, "cli.png"), "--weights", sys.argv[5]])
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder under /tmp that uid 65534 can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="seedark-perm-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("how", ["uid", "euid"])
def test_unwritable_folder(image: np.ndarray, shared_dir: Path, how: str) -> None:
    denied = shared_dir / "ro"
    denied.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        if how == "euid":
            pytest.skip("a process with a different effective uid needs root to start")
        denied.chmod(0o555)  # as a normal user, the permission bits are enough
        try:
            with pytest.raises(OutputError, match="not writable") as info:
                write_image(denied / "out.png", image, fmt="png", bits=8, metadata=None, software="")
            assert info.value.path == denied / "out.png" and os.listdir(denied) == []
        finally:
            denied.chmod(0o755)
        return
    denied.chmod(0o755)  # root's, and others may not write: uid 65534 cannot
    allowed = shared_dir / "mine"
    allowed.mkdir()
    os.chown(allowed, NOBODY, NOBODY)
    raw = dark_dng(shared_dir / "in.dng", np.random.default_rng(3), (16, 24))
    raw.chmod(0o644)
    weights = Path(__file__).resolve().parent / "data" / "tf_sony_w4"
    cmd = [sys.executable, "-c", AS_NOBODY, how, str(denied), str(allowed), str(raw), str(weights)]
    env = child_env(HOME=str(shared_dir))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout.splitlines()[0])
    assert report["ids"] == ([NOBODY, NOBODY] if how == "uid" else [0, NOBODY])
    # "uid": os.access() already says no; "euid": it says yes (real uid root) and open() refuses.
    assert report["access"] is (how == "euid")
    assert report["error"] == (
        f"cannot write: folder is not writable: {denied}" if how == "uid" else "cannot write: folder is not writable"
    )
    assert report["path"] == str(denied / "out.png")
    assert os.listdir(denied) == []  # no temp file left behind
    written = Path(report["written"])  # the same process could write where it may
    assert written == allowed / "ok.png" and written.stat().st_uid == NOBODY
    assert decode_png(written)[1].shape == (5, 7, 3)
    if how == "uid":
        assert proc.returncode == 1, proc.stderr
        out = denied / "cli.png"
        assert proc.stderr.strip() == f"seedark: error: {out}: cannot write: folder is not writable: {denied}"
    else:
        assert proc.returncode == 0, proc.stderr


def test_new_files_follow_the_umask(tmp_path: Path, image: np.ndarray) -> None:
    old = os.umask(0o022)
    try:
        path = _write(tmp_path, image, "png", 8)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not the 0600 of a typical temp file


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "fmt", "want"),
    [
        ("a.png", None, "png"),
        ("a.PNG", None, "png"),
        ("a.tif", None, "tiff"),
        ("a.TIFF", None, "tiff"),
        ("a.jpg", None, "jpeg"),
        ("a.JPeG", None, "jpeg"),
        ("a.png", "png", "png"),
        ("a.tif", "TIFF", "tiff"),
        ("a.jpg", "jpg", "jpeg"),
        ("a.out", "png", "png"),  # an explicit format for an unusual name
        ("noext", "tiff", "tiff"),
    ],
)
def test_format_from_path(name: str, fmt: str | None, want: str) -> None:
    assert format_from_path(name, fmt) == want


@pytest.mark.parametrize(
    ("name", "fmt"), [("a.png", "jpeg"), ("a.jpg", "tiff"), ("a.bmp", None), ("noext", None), ("a.png", "gif")]
)
def test_format_from_path_refuses(name: str, fmt: str | None) -> None:
    with pytest.raises(UsageError):
        format_from_path(name, fmt)


def test_unknown_extension_names_the_accepted_ones() -> None:
    with pytest.raises(UsageError, match=r"\.png.*\.tif.*\.jpg"):
        format_from_path("x.webp")


def test_default_extension() -> None:
    assert [default_extension(f) for f in ("png", "tiff", "jpeg")] == [".png", ".tif", ".jpg"]
    for fmt in ("png", "tiff", "jpeg"):
        assert format_from_path("x" + default_extension(fmt)) == fmt
    with pytest.raises(UsageError):
        default_extension("gif")


def test_srgb_profile_is_cached_and_valid() -> None:
    profile = srgb_icc_profile()
    assert profile is srgb_icc_profile()
    assert profile[36:40] == b"acsp" and profile[16:20] == b"RGB "
    assert struct.unpack(">I", profile[:4])[0] == len(profile)
