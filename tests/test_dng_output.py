"""``--format dng``: the enhanced image as a linear DNG that a raw editor opens.

Read back with independent readers only: LibRaw (rawpy) renders it with its default
settings, tifffile and exiftool read its tags. Expectations come from published
values: BT.709's transfer curve (ITU-R BT.709, constants 4.5, 0.018, 0.099, 0.45),
the sRGB D50 matrix (Bradford-adapted, as in Lindbloom's table), the D50 and D65 white
points of the DNG specification, and the DNG specification's tag numbers and types.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile

from helpers.rawgen import write_dng
from seedark.cli import main
from seedark.errors import UsageError
from seedark.io.image import write_image
from seedark.models.network import NetworkSpec
from seedark.models.weights import LoadedWeights, random_weights
from seedark.pipeline.batch import run_batch
from seedark.pipeline.enhance import enhance_file
from test_exif_carry import parse_xmp, shot_dng, xmp_packet

D50_XYZ = np.array([0.3457 / 0.3585, 1.0, (1 - 0.3457 - 0.3585) / 0.3585])
D65_XYZ = np.array([0.3127 / 0.3290, 1.0, (1 - 0.3127 - 0.3290) / 0.3290])
#: sRGB -> XYZ D50 (Bradford), as tabulated by Bruce Lindbloom.
SRGB_TO_XYZ_D50 = np.array(
    [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
)
ENGINE = {"backend": "pytorch", "device": "cpu", "precision": "fp32"}
ENGINE_ARGS = ["--engine", "pytorch", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def net() -> LoadedWeights:
    """A random-weight reduced-width network: what it outputs does not matter, only that every format holds it."""
    return random_weights(NetworkSpec(width=4), seed=3)


def scene(folder: Path, orientation: int = 1) -> Path:
    """A Sony-like DNG with gradients in every channel, so the output covers much of [0, 1]."""
    yy, xx = np.mgrid[0:96, 0:136]
    mosaic = 560 + (yy * 7 + xx * 5) % 900 + (xx * yy) % 97
    return write_dng(folder / f"scene{orientation}.dng", mosaic.astype(np.uint16), orientation=orientation)


def libraw_default(path: Path) -> np.ndarray:
    """LibRaw's default rendering, as SID's ground truth was made (16 bits, camera white balance, no auto bright)."""
    with rawpy.imread(str(path)) as raw:
        return raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(65535.0**2 / np.mean((a - b) ** 2)))


def tags(path: Path) -> dict[str, object]:
    with tifffile.TiffFile(path) as tif:
        return {tag.name: tag.value for tag in tif.pages[0].tags}


def srational_matrix(values: tuple[int, ...]) -> np.ndarray:
    return (np.array(values[0::2], dtype=float) / np.array(values[1::2], dtype=float)).reshape(3, 3)


# --------------------------------------------------------------------------- LibRaw renders it as seedark does


@pytest.mark.parametrize("orientation", [1, 6])
def test_libraw_renders_the_dng_as_seedarks_own_tiff(tmp_path: Path, net: LoadedWeights, orientation: int) -> None:
    raw = scene(tmp_path, orientation)
    tiff = enhance_file(raw, tmp_path / "out.tif", ratio=30, weights=net, **ENGINE)
    dng = enhance_file(raw, tmp_path / "out.dng", ratio=30, weights=net, **ENGINE)
    want = tifffile.imread(tiff).astype(np.float64)
    got = libraw_default(dng)
    assert got.shape == want.shape == ((136, 96, 3) if orientation == 6 else (96, 136, 3))  # turned the same way
    assert want.std() > 1000  # a picture, not a flat field
    assert psnr(got, want) >= 50.0


def test_the_samples_are_libraws_curve_undone(tmp_path: Path) -> None:
    ramp = np.linspace(0.0, 1.0, 4096, dtype=np.float32).reshape(32, 128, 1).repeat(3, axis=2)
    dng = write_image(tmp_path / "ramp.dng", ramp, fmt="dng", bits=16, metadata=None, software="t")
    with tifffile.TiffFile(dng) as tif:
        samples = tif.pages[0].asarray().astype(np.float64) / 65535
    v = ramp.astype(np.float64)
    bt709 = np.where(v < 4.5 * 0.018, v / 4.5, ((v + 0.099) / 1.099) ** (1 / 0.45))
    # BT.709 rounds LibRaw's toe (0.01805) and offset (0.09930): 0.3% apart at most, above the toe
    assert np.all(np.abs(samples - bt709) <= 4e-3 * bt709 + 2 / 65535)
    assert samples[0, 0, 0] == 0 and samples[-1, -1, 0] == 1.0
    # LibRaw, rendering with its curve, gives the ramp back. It works in 16-bit integers and truncates
    # (the colour conversion, then the curve): each linear level lost is the curve's slope in output levels.
    slope = np.where(v < 4.5 * 0.018, 4.5, 0.45 * 1.099 * np.maximum(bt709, 1e-9) ** -0.55)
    back = libraw_default(dng)
    assert np.all(np.abs(back - v * 65535) <= 2.5 * slope + 1.5)
    assert abs(float(np.mean(back - v * 65535))) < 2  # no drift: only the rounding differs


def test_quantised_and_float_images_give_the_same_dng_within_a_level(tmp_path: Path, rng: np.random.Generator) -> None:
    img = rng.random((20, 30, 3), dtype=np.float32)
    from_float = write_image(tmp_path / "f.dng", img, fmt="dng", bits=16, metadata=None, software="t")
    q = np.floor(img * 65535 + 0.5).astype(np.uint16)
    from_q = write_image(tmp_path / "q.dng", q, fmt="dng", bits=16, metadata=None, software="t")
    a, b = (tifffile.imread(p).astype(np.int64) for p in (from_float, from_q))
    assert np.abs(a - b).max() <= 1  # the shadows' slope is 1/4.5: half a gamma level is under a linear one
    with pytest.raises(ValueError, match="float or uint16"):
        write_image(tmp_path / "b.dng", (img * 255).astype(np.uint8), fmt="dng", bits=16, metadata=None, software="t")


# --------------------------------------------------------------------------- its tags


def test_the_dng_is_linear_raw_with_the_colour_and_camera_tags(
    tmp_path: Path, rng: np.random.Generator, net: LoadedWeights
) -> None:
    raw = shot_dng(tmp_path / "shot.dng", rng, xmp=xmp_packet(4, ["night", "Köln"]))
    dng = enhance_file(raw, tmp_path / "out.dng", ratio=50, weights=net, **ENGINE)
    t = tags(dng)
    assert (t["NewSubfileType"], t["PhotometricInterpretation"], t["SamplesPerPixel"]) == (0, 34892, 3)
    assert (t["BitsPerSample"], t["Compression"], t["PlanarConfiguration"]) == ((16, 16, 16), 1, 1)
    assert (t["ImageWidth"], t["ImageLength"], t["Orientation"]) == (40, 56, 1)  # stored upright, as the PNG
    assert (t["DNGVersion"], t["DNGBackwardVersion"]) == (b"\x01\x04\x00\x00", b"\x01\x01\x00\x00")
    assert (t["Make"], t["Model"]) == ("Sony", "ILCE-7SM2")
    assert t["UniqueCameraModel"] == "Sony ILCE-7SM2 (seedark, linear sRGB)"
    assert (t["BlackLevel"], t["WhiteLevel"]) == ((0, 0, 0), (65535, 65535, 65535))
    assert t["CalibrationIlluminant1"] == 21  # D65
    assert t["AsShotNeutral"] == (1, 1, 1, 1, 1, 1) and t["BaselineExposure"] == (0, 1)
    cm, fm = srational_matrix(t["ColorMatrix1"]), srational_matrix(t["ForwardMatrix1"])
    neutral = cm @ D65_XYZ
    # D65 white is the camera's (sRGB's) neutral; sRGB's D65 (0.3127, 0.3290 rounded) differs in the 4th digit
    assert np.ptp(neutral) < 1e-3 * neutral.mean()
    assert max(cm @ D50_XYZ) == pytest.approx(1.0, abs=1e-5)  # scaled as the DNG SDK normalises
    np.testing.assert_allclose(fm, SRGB_TO_XYZ_D50, atol=2e-4)
    np.testing.assert_allclose(fm.sum(axis=1), D50_XYZ, atol=1e-5)  # white maps to D50 exactly
    # what the other outputs carry: the shot's Exif, GPS and cleaned XMP
    exif, gps = t["ExifTag"], t["GPSTag"]
    assert isinstance(exif, dict) and isinstance(gps, dict)
    assert (exif["ExposureTime"], exif["ISOSpeedRatings"], exif["LensModel"]) == ((1, 30), 3200, "FE 35mm F2.8 ZA")
    assert "ColorSpace" not in exif  # a raw file has no output colour space
    assert (t["Artist"], gps["GPSLatitudeRef"]) == ("Jane Doe", "N")
    xmp = parse_xmp(bytes(t["XMP"]))  # type: ignore[arg-type]
    assert (xmp["rating"], xmp["keywords"], xmp["orientation"], xmp["crs"]) == ("4", ["night", "Köln"], "1", [])


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_exiftool_finds_nothing_wrong_with_it(tmp_path: Path, rng: np.random.Generator, net: LoadedWeights) -> None:
    raw = shot_dng(tmp_path / "shot.dng", rng)
    dng = enhance_file(raw, tmp_path / "out.dng", ratio=50, weights=net, **ENGINE)
    said = subprocess.run(
        ["exiftool", "-j", "-a", "-G1", "-validate", "-warning", "-DNGVersion", "-UniqueCameraModel", str(dng)],
        capture_output=True,
        check=True,
        text=True,
    )
    found = json.loads(said.stdout)[0]
    assert found["ExifTool:Validate"] == "OK"
    assert found["IFD0:DNGVersion"] == "1.4.0.0"
    assert found["IFD0:UniqueCameraModel"] == "Sony ILCE-7SM2 (seedark, linear sRGB)"


# --------------------------------------------------------------------------- choosing it


def test_the_format_comes_from_the_name_or_the_option(
    tmp_path: Path, net: LoadedWeights, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = scene(tmp_path)
    weights = tmp_path / "w.safetensors"
    from seedark.models.weights import save_safetensors

    save_safetensors(net, weights)
    for args, name in (
        (["-o", tmp_path / "named.dng"], "named.dng"),
        (["-o", f"{tmp_path / 'out'}/", "--format", "dng"], "out/scene1.dng"),
        (["--format", "dng"], "scene1_dng.dng"),  # next to a DNG input: its own name is taken by the input
    ):
        with pytest.raises(SystemExit) as info:
            main(["enhance", str(raw), "--ratio", "30", "--weights", str(weights), *ENGINE_ARGS, *map(str, args)])
        out, err = capsys.readouterr()
        assert info.value.code == 0, err
        assert out.strip() == str(tmp_path / name)
        assert tags(tmp_path / name)["PhotometricInterpretation"] == 34892
    assert raw.read_bytes()[:2] == b"II" and tags(raw)["PhotometricInterpretation"] == 32803  # the input is untouched


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"bits": 8}, "DNG holds 16 bits per sample; use --bits 16"),
        ({"compression": "deflate"}, "--compression is for TIFF only, not DNG (a DNG is written uncompressed"),
        ({"quality": 90}, "--quality is for JPEG only, not DNG"),
    ],
)
def test_options_a_dng_cannot_take_are_refused(tmp_path: Path, options: dict[str, int], words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        enhance_file(scene(tmp_path), tmp_path / "out.dng", ratio=30, **options)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene1.dng"]


def test_batch_writes_dngs_beside_dngs_without_replacing_them(tmp_path: Path, net: LoadedWeights) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raws = [scene(folder, o) for o in (1, 6)]
    before = [r.read_bytes() for r in raws]
    report = run_batch([folder], None, fmt="dng", ratio=30, weights=net, isolate=False, **ENGINE)
    assert sorted(p.name for p in folder.iterdir()) == ["scene1.dng", "scene1_dng.dng", "scene6.dng", "scene6_dng.dng"]
    assert [r.read_bytes() for r in raws] == before
    assert len(report.converted) == 2 and not report.failed
    # the same pixels as one file at a time (the batch also keeps the network's output in float)
    single = enhance_file(raws[1], tmp_path / "single.dng", ratio=30, weights=net, **ENGINE)
    np.testing.assert_array_equal(tifffile.imread(folder / "scene6_dng.dng"), tifffile.imread(single))
    # run again: the outputs are there, each input is skipped, none is taken for its own output
    again = run_batch([folder], None, fmt="dng", ratio=30, weights=net, isolate=False, **ENGINE)
    assert len(again.skipped) == 2 and not again.converted
