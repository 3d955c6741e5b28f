"""Values the pipeline writes, against expectations computed here without seedark's own code.

The reference arithmetic below follows the official SID ``test_Sony.py`` (pack_raw, ``np.minimum(x * ratio,
1.0)``, ``np.minimum(np.maximum(out, 0), 1)``), docs/model.md for odd sizes (the mosaic is extended by the
same-colour row/column two back, the extra output row/column cropped at the bottom/right), the TIFF
Orientation tag's definition, docs/usage.md for the output formats (8 bits PNG, 16 bits TIFF by default),
the quantisation rule ``floor(x * maxval + 0.5)`` documented in seedark.io.pixels, the DNG AsShotNeutral
definition (white balance multipliers are its reciprocals) and IEC 61966-2-1 for the sRGB curve. The only
seedark pieces used to make expectations are the network itself (``weights.build()``), which is first
checked against the TensorFlow outputs stored in tests/data/tf_sony_w4/parity.npz.
"""

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
from helpers.rawgen import write_dng
from seedark.models.weights import LoadedWeights, load_weights
from seedark.pipeline.compare import label_boxes

FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"

# Sites of R, G on R's row, B, G on B's row inside the 2x2 block, written out by hand per CFA.
SITES = {
    "RGGB": ((0, 0), (0, 1), (1, 1), (1, 0)),
    "BGGR": ((1, 1), (1, 0), (0, 0), (0, 1)),
    "GRBG": ((0, 1), (0, 0), (1, 0), (1, 1)),
    "GBRG": ((1, 0), (1, 1), (0, 1), (0, 0)),
}
# np.rot90 turns counter-clockwise. TIFF Orientation 6: the stored 0th row is the visual right side
# (turn 90 degrees clockwise to view), 8: it is the left side (counter-clockwise), 3: 180 degrees.
TIFF_ROT90 = {1: 0, 3: 2, 6: -1, 8: 1}


@pytest.fixture(scope="module")
def weights() -> LoadedWeights:
    return load_weights(FIXTURE)


@pytest.fixture(scope="module")
def engine(weights: LoadedWeights) -> seedark.Engine:
    return seedark.Engine(weights, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def parity() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "parity.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def tf_net(weights: LoadedWeights, parity: dict[str, np.ndarray]) -> torch.nn.Module:
    """The network used for reference values, checked first against TensorFlow's outputs (odd sizes too)."""
    net = weights.build().eval()
    for i in range(len(parity["sizes"])):
        with torch.no_grad():
            out = net(torch.from_numpy(parity[f"in_{i}"]).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        assert out.shape == parity[f"out_{i}"].shape
        assert float(np.abs(out - parity[f"out_{i}"]).max()) <= 1e-4  # docs/development.md's tolerance
    return net


# --------------------------------------------------------------------------- the reference arithmetic


def extend_to_even(mosaic: np.ndarray) -> np.ndarray:
    """docs/model.md: an odd frame gets one more row (column): a copy of the row (column) two back."""
    m = mosaic
    if m.shape[0] % 2:
        m = np.concatenate([m, m[-2:-1]], axis=0)
    if m.shape[1] % 2:
        m = np.concatenate([m, m[:, -2:-1]], axis=1)
    return m


def pack_reference(mosaic: np.ndarray, cfa: str, black: int | list[int], white: int) -> np.ndarray:
    """Official pack_raw (R, G, B, G; black subtracted, divided by white - black), float32, any phase."""
    blacks = np.full((2, 2), black) if isinstance(black, int) else np.array(black).reshape(2, 2)
    m = extend_to_even(mosaic).astype(np.float32)
    planes = []
    for r, c in SITES[cfa]:
        b = np.float32(blacks[r, c])
        planes.append(np.maximum(m[r::2, c::2] - b, np.float32(0)) / (np.float32(white) - b))
    return np.stack(planes, axis=2)


def enhance_reference(
    net: torch.nn.Module,
    mosaic: np.ndarray,
    *,
    cfa: str,
    black: int | list[int],
    white: int,
    ratio: float,
    orientation: int,
) -> np.ndarray:
    h, w = mosaic.shape
    inp = np.minimum(pack_reference(mosaic, cfa, black, white) * np.float32(ratio), np.float32(1.0))
    with torch.no_grad():
        out = net(torch.from_numpy(inp[None]).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()[0]
    out = np.minimum(np.maximum(out, 0), 1)
    assert out.shape == (h + h % 2, w + w % 2, 3)
    return np.rot90(out[:h, :w], TIFF_ROT90[orientation])  # the extra row/column is the last one


def quantise_reference(x: np.ndarray, bits: int) -> np.ndarray:
    """floor(x * maxval + 0.5) in float32, x clipped to [0, 1] (seedark.io.pixels's documented rule)."""
    maxval = np.float32(2**bits - 1)
    q = np.floor(np.clip(x, 0, 1).astype(np.float32) * maxval + np.float32(0.5))
    return q.astype(np.uint8 if bits == 8 else np.uint16)


def srgb_reference(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding, float64."""
    x = np.clip(x.astype(np.float64), 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


# --------------------------------------------------------------------------- network values


@pytest.mark.parametrize("index", [1, 6])  # packed 17x23 and 33x65: odd, not multiples of 16
def test_enhance_reproduces_tensorflow_outputs(
    tmp_path: Path, parity: dict[str, np.ndarray], engine: seedark.Engine, index: int
) -> None:
    """A DNG whose packing is TF's input (to 1/65535) gives TF's clipped output, through the whole pipeline."""
    inp, want = parity[f"in_{index}"][0], np.clip(parity[f"out_{index}"][0], 0, 1)
    levels = np.round(inp.astype(np.float64) * 65535).astype(np.uint16)
    mosaic = np.empty((2 * inp.shape[0], 2 * inp.shape[1]), dtype=np.uint16)
    for ch, (r, c) in enumerate(SITES["RGGB"]):
        mosaic[r::2, c::2] = levels[:, :, ch]
    path = write_dng(tmp_path / "tf.dng", mosaic, black_level=0, white_level=65535)
    got = seedark.enhance(path, ratio=1, engine=engine, tile=0)
    assert got.shape == want.shape
    # measured 5e-5: the input's 1/65535 quantisation plus float summation order
    assert float(np.abs(got - want).max()) <= 5e-4


ODD_CASES = {
    # mosaic size, CFA, black level(s), orientation
    "37x53 RGGB": ((37, 53), "RGGB", 512, 1),
    "45x67 GBRG rotated": ((45, 67), "GBRG", [500, 505, 510, 515], 6),
    "34x45 BGGR odd width": ((34, 45), "BGGR", 512, 8),
    "33x64 GRBG odd height": ((33, 64), "GRBG", [600, 520, 540, 580], 3),
}


@pytest.mark.parametrize("case", sorted(ODD_CASES))
def test_odd_sizes_match_the_official_arithmetic(
    tmp_path: Path, rng: np.random.Generator, tf_net: torch.nn.Module, engine: seedark.Engine, case: str
) -> None:
    size, cfa, black, orientation = ODD_CASES[case]
    mosaic = rng.integers(450, 1400, size=size, dtype=np.uint16)
    path = write_dng(tmp_path / "odd.dng", mosaic, cfa=cfa, black_level=black, orientation=orientation)
    want = enhance_reference(tf_net, mosaic, cfa=cfa, black=black, white=16383, ratio=60, orientation=orientation)
    with rawpy.imread(str(path)) as raw:
        assert want.shape == raw.postprocess().shape  # the reference's geometry is LibRaw's
    got = seedark.enhance(path, ratio=60, engine=engine)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-4
    # ...and the file holds those values at those places (16 bits: within one step of float rounding)
    written = seedark.enhance_file(path, tmp_path / "odd.png", ratio=60, bits=16, engine=engine)
    _, pixels = decode_png(written)
    assert pixels.shape == want.shape
    diff = np.abs(pixels.astype(np.int64) - quantise_reference(want, 16).astype(np.int64))
    assert int(diff.max()) <= 1


# --------------------------------------------------------------------------- every output format


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, engine: seedark.Engine) -> tuple[Path, np.ndarray]:
    """A rotated, odd-sized DNG and enhance()'s float result for it."""
    rng = np.random.default_rng(99)
    path = write_dng(
        tmp_path_factory.mktemp("scene") / "shot.dng",
        rng.integers(480, 1500, size=(57, 83), dtype=np.uint16),
        orientation=6,
    )
    image = seedark.enhance(path, ratio=50, engine=engine, tile=0)
    assert image.dtype == np.float32 and image.shape == (83, 57, 3)
    return path, image


FORMATS = {
    # name: (file name, bits passed, expected format, expected bits)
    "png default": ("out.png", None, "png", 8),
    "png 16": ("out.png", 16, "png", 16),
    "tiff default": ("out.tif", None, "tiff", 16),
    "tiff 8": ("out.tiff", 8, "tiff", 8),
    "tiff 16": ("out.tif", 16, "tiff", 16),
    "jpeg default": ("out.jpg", None, "jpeg", 8),
}


@pytest.mark.parametrize("case", sorted(FORMATS))
def test_every_format_holds_the_quantised_image(
    tmp_path: Path, scene: tuple[Path, np.ndarray], engine: seedark.Engine, case: str
) -> None:
    name, bits, fmt, want_bits = FORMATS[case]
    path, image = scene
    written = seedark.enhance_file(path, tmp_path / name, ratio=50, bits=bits, engine=engine, tile=0)
    assert written == tmp_path / name
    want = quantise_reference(image, want_bits)
    h, w, _ = image.shape
    if fmt == "png":
        chunks, got = decode_png(written)
        assert chunks[b"IHDR"][0][8] == want_bits  # bit depth
        with Image.open(written) as im:
            assert im.format == "PNG" and im.size == (w, h)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif fmt == "tiff":
        with tifffile.TiffFile(written) as tif:
            page = tif.pages[0]
            assert page.bitspersample == want_bits and page.samplesperpixel == 3
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            got = page.asarray()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    else:
        with Image.open(written) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (w, h)
            got = np.asarray(im)
        err = np.abs(got.astype(np.float64) - want)
        # quality 95, 4:4:4 on the random-weight network's busy output: measured mean 2.2, max 18 levels
        assert err.mean() <= 3.5 and err.max() <= 40
    assert len(np.unique(got)) > 50  # not a flat or black picture


# --------------------------------------------------------------------------- the --compare picture


def before_reference(mosaic: np.ndarray, neutral: tuple[float, float, float], ratio: float, turn: int) -> np.ndarray:
    """The naive picture: packed x ratio, white-balanced (1/AsShotNeutral), sRGB, 8 bits, each packed pixel 2x2."""
    h, w = mosaic.shape
    packed = np.minimum(pack_reference(mosaic, "RGGB", 512, 16383) * ratio, 1.0)
    rgb = np.stack([packed[:, :, 0], (packed[:, :, 1] + packed[:, :, 3]) / 2, packed[:, :, 2]], axis=2)
    multipliers = np.array([1 / n for n in neutral]) / (1 / neutral[1])
    before = np.round(srgb_reference(rgb * multipliers) * 255)
    before = np.repeat(np.repeat(before, 2, axis=0), 2, axis=1)[:h, :w]
    return np.rot90(before, turn)


def smooth_mosaic(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth RGGB scene (little for JPEG to lose), different levels per colour, a little noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = 0.2 + 0.8 * (xx / w + yy / h) / 2
    site_colour = np.array([[0, 1], [1, 2]])[yy % 2, xx % 2]  # RGGB: 0 R, 1 G, 2 B
    scale = np.array([0.012, 0.008, 0.010])[site_colour]  # per colour, in units of (white - black)
    level = 512 + (16383 - 512) * scale * ramp + rng.normal(0, 2, size=(h, w))
    return np.round(level).astype(np.uint16)


def outside_labels(h: int, w: int, gap: int = 8, grow: int = 8) -> np.ndarray:
    """True outside the two label boxes, each grown by a JPEG block (8 px) for the ringing at their edges."""
    keep = np.ones((h, 2 * w + gap), dtype=bool)
    for left, top, right, bottom in label_boxes(w, h, gap).values():
        keep[max(0, top - grow) : bottom + grow, max(0, left - grow) : right + grow] = False
    return keep


def assert_labelled(picture: np.ndarray, unlabelled: np.ndarray, h: int, w: int) -> None:
    """Both labels are there: white text on a black box, where the picture itself is neither."""
    boxes = label_boxes(w, h)
    assert sorted(boxes) == ["after", "before"]
    for left, top, right, bottom in boxes.values():
        got, plain = picture[top:bottom, left:right], unlabelled[top:bottom, left:right]
        assert np.abs(got - plain).mean() > 20  # the box hides the picture (measured 44-103)
        grey = got.mean(axis=2)
        assert (grey < 40).mean() > 0.5 and (grey > 200).mean() > 0.03  # mostly black, some white text


def test_compare_before_half_is_packed_times_ratio_and_white_balance(
    tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine
) -> None:
    h, w, ratio = 45, 67, 20
    neutral = (0.5, 1.0, 0.7)  # AsShotNeutral: camera values of a grey; multipliers are 1/neutral
    mosaic = smooth_mosaic(rng, h, w)
    path = write_dng(tmp_path / "wb.dng", mosaic, orientation=6, as_shot_neutral=neutral)
    seedark.enhance_file(path, tmp_path / "wb.png", ratio=ratio, engine=engine, compare=True)
    enhanced = seedark.enhance(path, ratio=ratio, engine=engine)
    before = before_reference(mosaic, neutral, ratio, TIFF_ROT90[6])
    assert before.max() < 250  # nothing clipped: the white balance shows in every channel

    with Image.open(tmp_path / "wb_compare.jpg") as im:
        assert im.format == "JPEG"
        compare = np.asarray(im.convert("RGB")).astype(np.float64)
    out_h, out_w = before.shape[:2]
    assert compare.shape == (out_h, 2 * out_w + 8, 3)  # small pictures keep their size
    keep = outside_labels(out_h, out_w)
    left, left_keep = compare[:, :out_w], keep[:, :out_w]
    # JPEG quality 95, 4:4:4: within 3 levels on average per channel (measured 0.7-1.1)
    for c in range(3):
        assert np.abs(left[:, :, c] - before[:, :, c])[left_keep].mean() < 3, f"channel {c}"
    # the right half is the enhanced image (measured 2.2 levels: the random-weight output is busy)
    right, right_keep = compare[:, out_w + 8 :], keep[:, out_w + 8 :]
    assert np.abs(right - quantise_reference(enhanced, 8))[right_keep].mean() < 3.5
    unlabelled = np.concatenate([before, np.full((out_h, 8, 3), 26.0), quantise_reference(enhanced, 8)], axis=1)
    assert_labelled(compare, unlabelled, out_h, out_w)


def lanczos(img: np.ndarray, width: int) -> np.ndarray:
    height = round(img.shape[0] * width / img.shape[1])
    small = Image.fromarray(img.astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(small).astype(np.float64)


def test_compare_is_scaled_to_2400_and_labelled(
    tmp_path: Path, rng: np.random.Generator, engine: seedark.Engine
) -> None:
    h, w, ratio = 64, 1300, 20  # a wide frame: side by side it is 2608 px, over the default 2400
    neutral = (0.5, 1.0, 0.7)
    mosaic = smooth_mosaic(rng, h, w)
    path = write_dng(tmp_path / "wide.dng", mosaic, as_shot_neutral=neutral)
    seedark.enhance_file(path, tmp_path / "wide.png", ratio=ratio, engine=engine, compare=True, tile=0)
    enhanced = seedark.enhance(path, ratio=ratio, engine=engine, tile=0)
    # Independently: each half scaled to (2400 - 8) / 2 = 1196 columns with Pillow's Lanczos, aspect kept.
    half = (2400 - 8) // 2
    before = lanczos(before_reference(mosaic, neutral, ratio, 0), half)
    after = lanczos(quantise_reference(enhanced, 8), half)
    small_h = round(h * half / w)
    assert before.shape == after.shape == (small_h, half, 3)
    with Image.open(tmp_path / "wide_compare.jpg") as im:
        compare = np.asarray(im.convert("RGB")).astype(np.float64)
    assert compare.shape == (small_h, 2400, 3)
    keep = outside_labels(small_h, half)
    # JPEG quality 95, 4:4:4 after the same scaling: measured 0.8 and 2.6 levels (the busy random-weight output)
    assert np.abs(compare[:, :half] - before)[keep[:, :half]].mean() < 3
    assert np.abs(compare[:, half + 8 :] - after)[keep[:, half + 8 :]].mean() < 3.5
    unlabelled = np.concatenate([before, np.full((small_h, 8, 3), 26.0), after], axis=1)
    assert_labelled(compare, unlabelled, small_h, half)

    # 0 keeps full size; another width is honoured the same way
    for width, want in ((0, 2 * w + 8), (600, 600)):
        seedark.enhance_file(
            path, tmp_path / f"w{width}.png", ratio=ratio, engine=engine, compare=True, compare_width=width, tile=0
        )
        with Image.open(tmp_path / f"w{width}_compare.jpg") as im:
            assert im.width == want
