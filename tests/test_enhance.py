"""The library pipeline end to end on generated DNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
import torch
from PIL import Image

import seedark
from helpers.pngread import decode_png
from helpers.rawgen import dark_dng, write_dng
from seedark.errors import RawReadError, UnsupportedSensorError
from seedark.io.pixels import quantise
from seedark.models.weights import load_weights

FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"
# np.rot90 turns counter-clockwise; LibRaw's flip 5 is 90° CCW, 6 is 90° CW, 3 is 180°.
ROTATIONS = {0: 0, 3: 2, 5: 1, 6: -1}
TIFF_TO_FLIP = {1: 0, 3: 3, 6: 6, 8: 5}


@pytest.fixture(scope="module")
def weights() -> seedark.LoadedWeights:
    return load_weights(FIXTURE)


@pytest.fixture(scope="module")
def engine(weights: seedark.LoadedWeights) -> seedark.Engine:
    return seedark.Engine(weights, device="cpu", precision="fp32")


def reference(mosaic: np.ndarray, weights: seedark.LoadedWeights, ratio: float, flip: int) -> np.ndarray:
    """The official test script's arithmetic (RGGB, black 512, white 16383) on our network."""
    h, w = mosaic.shape
    im = np.maximum(mosaic.astype(np.float32) - 512, 0) / (16383 - 512)
    packed = np.stack([im[0::2, 0::2], im[0::2, 1::2], im[1::2, 1::2], im[1::2, 0::2]], axis=2)
    inp = np.minimum(packed[None] * ratio, 1.0)
    with torch.no_grad():
        out = weights.build()(torch.from_numpy(inp).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()[0]
    out = np.minimum(np.maximum(out, 0), 1)[:h, :w]
    return np.rot90(out, ROTATIONS[flip])


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_enhance_matches_reference_and_rawpy_geometry(
    tmp_path: Path, rng: np.random.Generator, weights: seedark.LoadedWeights, engine: seedark.Engine, orientation: int
) -> None:
    mosaic = rng.integers(400, 700, size=(48, 80), dtype=np.uint16)
    path = write_dng(tmp_path / "dark.dng", mosaic, orientation=orientation)
    out = seedark.enhance(path, ratio=100, engine=engine, tile=0)
    with rawpy.imread(str(path)) as raw:
        assert out.shape == raw.postprocess().shape
    want = reference(mosaic, weights, 100.0, TIFF_TO_FLIP[orientation])
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(37, 53), (48, 81), (61, 61)])
def test_odd_sizes_give_the_full_frame(
    tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine, size: tuple[int, int]
) -> None:
    mosaic = rng.integers(400, 900, size=size, dtype=np.uint16)
    path = write_dng(tmp_path / "odd.dng", mosaic, cfa="GBRG", black_level=[500, 505, 510, 515])
    out = seedark.enhance(path, ratio=50, engine=engine)
    with rawpy.imread(str(path)) as raw:
        assert out.shape == raw.postprocess().shape == (*size, 3)


def test_tiles_match_whole_frame_through_the_pipeline(
    tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine
) -> None:
    mosaic = rng.integers(400, 1200, size=(330, 420), dtype=np.uint16)
    path = write_dng(tmp_path / "big.dng", mosaic)
    whole = seedark.enhance(path, ratio=30, engine=engine, tile=0)
    tiled = seedark.enhance(path, ratio=30, engine=engine, tile=64)
    assert float(np.abs(whole - tiled).max()) <= 1e-5


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_every_cfa_phase_packs_r_g_b_g(tmp_path: Path, rng: np.random.Generator, cfa: str) -> None:
    mosaic = rng.integers(600, 4000, size=(32, 48), dtype=np.uint16)
    path = write_dng(tmp_path / f"{cfa}.dng", mosaic, cfa=cfa, black_level=512)
    packed = seedark.pack_bayer(seedark.read_raw(path))
    with rawpy.imread(str(path)) as raw:
        colour = np.where(raw.raw_colors_visible == 3, 1, raw.raw_colors_visible)  # 3 = second green
    norm = (mosaic.astype(np.float32) - 512) / (16383 - 512)
    for ch, want in enumerate([0, 1, 2, 1]):  # R, G on R's row, B, G on B's row
        hits = [(r, c) for r in range(2) for c in range(2) if np.array_equal(packed[:, :, ch], norm[r::2, c::2])]
        assert len(hits) == 1, f"channel {ch} is not one sensor phase"
        r, c = hits[0]
        assert colour[r, c] == want
        if ch == 1:  # G on R's row
            assert colour[r, 1 - c] == 0
        if ch == 3:  # G on B's row
            assert colour[r, 1 - c] == 2


def test_unsupported_sensors(tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine) -> None:
    linear = dark_dng(tmp_path / "linear.dng", rng, (32, 32, 3), (0, 4000), photometric="linear")
    with pytest.raises(UnsupportedSensorError, match="linear"):
        seedark.read_raw(linear)
    mono = dark_dng(tmp_path / "mono.dng", rng, (32, 32), (0, 4000), photometric="mono")
    with pytest.raises(UnsupportedSensorError, match="monochrome"):
        seedark.read_raw(mono)


def test_truncated_raw(tmp_path: Path, rng: np.random.Generator) -> None:
    path = dark_dng(tmp_path / "cut.dng", rng, (64, 96), (0, 4000))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RawReadError, match="truncated or corrupt") as info:
        seedark.read_raw(path)
    assert info.value.path == path


def test_camera_metadata_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    path = dark_dng(tmp_path / "meta.dng", rng, (32, 32), (0, 4000), iso=12800)
    cam = seedark.read_raw(path).camera
    assert (cam.make, cam.model, cam.iso) == ("Sony", "ILCE-7SM2", 12800)
    assert cam.exposure_time == pytest.approx(1 / 30)
    assert cam.lens_model == "FE 35mm F2.8 ZA"


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ARW"
    empty.write_bytes(b"")
    with pytest.raises(RawReadError, match="file is empty"):
        seedark.read_raw(empty)


def test_white_level_below_black_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = dark_dng(tmp_path / "w.dng", rng, (32, 32), (0, 400), white_level=400)
    with pytest.raises(RawReadError, match="white level 400 is not above the black level 512"):
        seedark.read_raw(path)


def test_non_bayer_2x2_pattern(tmp_path: Path, rng: np.random.Generator) -> None:
    odd = np.array([[0, 1], [2, 2]], dtype=np.uint8)  # R G / B B: not a Bayer layout
    path = dark_dng(tmp_path / "rgbb.dng", rng, (32, 32), (600, 900), cfa=odd)
    with pytest.raises(UnsupportedSensorError, match="neither a 2x2 Bayer"):
        seedark.read_raw(path)


@pytest.mark.parametrize(("orientation", "fmt", "bits"), [(1, "png", 8), (6, "tiff", 16), (8, "png", 16)])
def test_written_file_holds_the_quantised_image(
    tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine, orientation: int, fmt: str, bits: int
) -> None:
    """enhance_file quantises tile by tile; the file must hold exactly what quantising enhance()'s float gives."""
    mosaic = rng.integers(400, 1200, size=(300, 330), dtype=np.uint16)
    path = write_dng(tmp_path / "shot.dng", mosaic, orientation=orientation)
    written = seedark.enhance_file(
        path, tmp_path / f"out.{fmt}", ratio=40, bits=bits, engine=engine, tile=64, compare=True
    )
    want = quantise(seedark.enhance(path, ratio=40, engine=engine, tile=64), bits)
    if fmt == "tiff":
        got = tifffile.imread(written)
    else:
        _, got = decode_png(written)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert len(np.unique(got)) > 20
    np.testing.assert_array_equal(got, want)
    with Image.open(written.with_name("out_compare.jpg")) as im:
        assert im.size == (2 * want.shape[1] + 8, want.shape[0])


def test_raw_file_is_opened_once(
    tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One open of the RAW file by its name per conversion: LibRaw and the metadata reader read
    the same open file (LibRaw through /proc/self/fd/N), so a file replaced mid-run cannot mix
    two files' pixels and metadata. Python's audit hook sees every open() by name from Python;
    LibRaw's C-level open is seen through the name rawpy.imread is given."""
    import sys

    shot = dark_dng(tmp_path / "once.dng", rng)
    by_name: list[str] = []
    watching = True

    def hook(event: str, args: tuple[object, ...]) -> None:
        if watching and event == "open" and isinstance(args[0], str):
            by_name.append(args[0])

    real_imread = rawpy.imread

    def imread(source: object, *args: object, **kw: object) -> object:
        if isinstance(source, str):
            by_name.append(source)
        return real_imread(source, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rawpy, "imread", imread)
    sys.addaudithook(hook)  # audit hooks cannot be removed; the flag turns this one off
    try:
        out = seedark.enhance_file(shot, tmp_path / "out.png", ratio=100, engine=engine)
    finally:
        watching = False
    assert out.exists()
    assert by_name.count(str(shot)) == 1, by_name
