"""``seedark demo``: the simulated dark frame, checked against LibRaw and the noise model, and the run end to end.

The official model's path (registry -> download -> verify -> convert -> cache) is
served from a local HTTP server through ``SEEDARK_MIRROR``, with the default
model's record pinned to a reduced-width fixture checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rawpy
from PIL import Image

from helpers.cli import run_cli
from helpers.httpserver import FaultyServer, block_internet, clean_environment
from helpers.registries import add_model
from helpers.tfwriter import write_sid_checkpoint
from seedark.downloads import fetch
from seedark.errors import DownloadError, OutputError, UsageError
from seedark.frames.exposure import auto_ratio
from seedark.io.dng import write_dng
from seedark.io.raw import read_raw
from seedark.models import registry
from seedark.models.network import NetworkSpec
from seedark.models.registry import DATA_NAME, INDEX_NAME, ModelRecord, SourceFile
from seedark.models.weights import LoadedWeights, random_weights
from seedark.pipeline import demo
from seedark.pipeline.enhance import enhance
from seedark.synthesis.noise import typical_params
from seedark.synthesis.noiseprofile import SONY_A7S2

RATIO = 200.0


def postprocess(path: Path) -> np.ndarray:
    """LibRaw's own development of a DNG, to sRGB in [0, 1]: its colour matrix and white balance, not ours.

    ``adjust_maximum_thr=0``: LibRaw would otherwise take the brightest pixel for the white level.
    """
    with rawpy.imread(str(path)) as raw:
        rgb = raw.postprocess(
            use_camera_wb=True,
            no_auto_bright=True,
            adjust_maximum_thr=0.0,
            gamma=(2.4, 12.92),
            output_bps=16,
            demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR,
            output_color=rawpy.ColorSpace.sRGB,
            user_flip=0,
        )
    return rgb / 65535.0


def write_clean(path: Path, srgb: np.ndarray) -> Path:
    """The unprocessed mosaic of ``srgb`` without noise, as the demo's DNG would hold it at ratio 1."""
    mosaic = np.clip(np.round(demo.clean_mosaic(srgb)) + 512, 0, 16383).astype(np.uint16)
    return write_dng(path, mosaic, as_shot_neutral=(0.5, 1.0, 1 / 1.5))


# --------------------------------------------------------------------------- the dark frame


def test_bundled_photo_is_small_even_and_licensed() -> None:
    photo = demo.demo_photo()
    assert photo.shape == (400, 600, 3) and 0 <= photo.min() < photo.max() <= 1
    data = Path(demo.__file__).resolve().parents[1] / "data"
    assert (data / "coffee.jpg").stat().st_size <= 300_000
    assert "CC0" in (data / "NOTICE").read_text()


def test_dark_dng_decodes_to_the_a7s2_levels_cfa_and_exposure(tmp_path: Path) -> None:
    path = demo.write_dark_frame(tmp_path / "dark.dng", RATIO, seed=3)
    with rawpy.imread(str(path)) as raw:
        assert raw.black_level_per_channel == [512, 512, 512, 512]
        assert raw.white_level == 16383
        assert raw.color_desc == b"RGBG" and raw.raw_pattern.tolist() == [[0, 1], [3, 2]]  # RGGB
        assert raw.camera_whitebalance[:3] == pytest.approx([2.0, 1.0, 1.5], rel=1e-3)
        assert raw.other.shutter_speed == pytest.approx(10.0 / RATIO)
        mosaic = raw.raw_image_visible.copy()
    assert np.array_equal(mosaic, demo.dark_frame(demo.demo_photo(), RATIO, 3))
    # dark: the brightest site (white porcelain) holds about white / ratio above black, plus noise
    assert 512 < np.median(mosaic) < 512 + 40 and np.quantile(mosaic, 0.999) < 512 + 15871 / RATIO + 40
    # as dark as a real frame shot that much too short: the auto ratio (tuned on SID's frames) agrees
    assert auto_ratio(read_raw(path)) == pytest.approx(RATIO, rel=0.3)


def test_noise_of_the_dark_frame_matches_the_a7s2_model(tmp_path: Path) -> None:
    """Variance against signal, through the DNG and LibRaw: slope K (shot noise), intercept read + row +
    rounding noise. The expected numbers are the published ELD fits computed here, and the Tukey-lambda
    variance comes from scipy."""
    stats = pytest.importorskip("scipy.stats")
    path = demo.write_dark_frame(tmp_path / "dark.dng", RATIO, seed=0)
    with rawpy.imread(str(path)) as raw:
        dark = raw.raw_image_visible.astype(np.float64) - 512
    signal = np.maximum(demo.clean_mosaic(demo.demo_photo()), 0) / RATIO
    k = math.sqrt(0.0939 * 6.0106)
    read = math.exp(0.4621 * math.log(k) + 0.5657) ** 2 * stats.tukeylambda(-0.26).var()
    row = math.exp(0.5275 * math.log(k) - 0.5917) ** 2
    floor = read + row + 1 / 12
    residual = dark - signal
    edges = np.quantile(signal, np.linspace(0, 1, 9))
    levels, variances = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (signal >= lo) & (signal < hi)
        levels.append(signal[sel].mean())
        variances.append(residual[sel].var())
    slope, intercept = np.polyfit(levels, variances, 1)
    assert abs(residual.mean()) < 0.1  # shot and read noise are unbiased
    assert slope == pytest.approx(k, rel=0.15)
    assert intercept == pytest.approx(floor, rel=0.06)
    assert np.asarray(variances) == pytest.approx(k * np.asarray(levels) + floor, rel=0.08)
    assert k * (levels[-1] - levels[0]) > 0.5 * floor  # shot noise changes the variance far beyond the tolerance


def test_demo_noise_is_the_calibrated_fit_at_the_middle_gain() -> None:
    params = demo.demo_noise()
    assert params.gain == pytest.approx(math.sqrt(0.0939 * 6.0106))
    assert params.read_scale == pytest.approx(math.exp(0.4621 * math.log(params.gain) + 0.5657))
    with pytest.raises(UsageError, match="calibrated range"):
        typical_params(SONY_A7S2, 10.0)


def test_unprocessing_round_trips_through_libraw_flat_colours(tmp_path: Path) -> None:
    """Flat patches: LibRaw's development of the clean mosaic gives back the sRGB colours."""
    colours = np.array([[0.5, 0.5, 0.5], [0.8, 0.6, 0.5], [0.3, 0.5, 0.8], [0.2, 0.6, 0.2], [0.9, 0.9, 0.9], [0.1] * 3])
    image = np.repeat(np.repeat(colours.reshape(2, 3, 3), 32, axis=0), 32, axis=1)
    out = postprocess(write_clean(tmp_path / "patches.dng", image))
    for i in range(2):
        for j in range(3):
            inside = out[i * 32 + 8 : i * 32 + 24, j * 32 + 8 : j * 32 + 24].reshape(-1, 3)
            assert np.abs(inside - colours[i * 3 + j]).max() < 1 / 255  # measured: <= 0.2/255


def test_unprocessing_round_trips_through_libraw_the_photo(tmp_path: Path) -> None:
    """The whole photograph: colours unbiased; the differences are bilinear demosaicking at edges."""
    photo = demo.demo_photo()
    diff = (postprocess(write_clean(tmp_path / "clean.dng", photo)) - photo)[2:-2, 2:-2]
    assert np.abs(diff.reshape(-1, 3).mean(axis=0)).max() < 1.5 / 255  # measured 0.55/255
    assert np.median(np.abs(diff)) < 4 / 255  # measured 2.2/255


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("demo-ckpt")
    write_sid_checkpoint(d / "model.ckpt", NetworkSpec(width=4), seed=11)
    return (d / INDEX_NAME).read_bytes(), (d / DATA_NAME).read_bytes()


@pytest.fixture
def official(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FaultyServer, checkpoint: tuple[bytes, bytes]
) -> Iterator[FaultyServer]:
    """The default model's record pinned to the fixture checkpoint, its files behind a mirror on 127.0.0.1."""
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    monkeypatch.setattr(fetch, "RETRY_BASE_DELAY", 0.001)
    monkeypatch.setattr(fetch, "RETRY_MAX_DELAY", 0.01)
    index, data = checkpoint
    sony = registry.MODELS[registry.DEFAULT_MODEL]
    record = ModelRecord(
        name=sony.name,
        description=sony.description,
        licence=sony.licence,
        packing=sony.packing,
        sensor=sony.sensor,
        files=(
            SourceFile(INDEX_NAME, sony.files[0].urls, hashlib.sha256(index).hexdigest(), len(index)),
            SourceFile(DATA_NAME, sony.files[1].urls, None, len(data)),
        ),
        homepage=sony.homepage,
    )
    add_model(monkeypatch, record)
    server.add(f"/sid/{sony.name}/{INDEX_NAME}", index)
    server.add(f"/sid/{sony.name}/{DATA_NAME}", data)
    monkeypatch.setenv("SEEDARK_MIRROR", server.url("/sid"))
    yield server


def test_demo_end_to_end_downloads_the_official_model_once(
    official: FaultyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "first run"
    code, stdout, err = run_cli(capsys, "demo", "-o", out, "--engine", "pytorch", "--device", "cpu")
    assert code == 0, err
    raw, image, compare = (Path(line) for line in stdout.splitlines())
    assert (raw.name, image.name, compare.name) == ("coffee_dark.dng", "coffee_dark.png", "coffee_dark_compare.jpg")
    assert sorted(p.name for p in out.iterdir()) == sorted([raw.name, image.name, compare.name])
    assert official.routes[f"/sid/sony/{DATA_NAME}"].full_downloads() == 1
    assert "sony model is not in the cache yet: downloading it once" in err
    # the image is the dark frame enhanced at the demo's ratio, by the cached default model
    with Image.open(image) as im:
        assert im.format == "PNG" and im.size == (600, 400)
        written = np.asarray(im)
    expected = np.floor(enhance(raw, ratio=RATIO, model="sony", backend="pytorch") * 255 + 0.5)
    assert np.abs(written.astype(np.int16) - expected).max() <= 1
    with Image.open(compare) as im:
        assert im.format == "JPEG" and im.size[1] >= 400

    # again: the files are there, so nothing is replaced without --overwrite
    code, _, err = run_cli(capsys, "demo", "-o", out)
    assert code == 1 and "coffee_dark.dng: already exists (use --overwrite" in err
    # with it, offline: the model comes from the cache; another seed is another noise draw
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    before = raw.read_bytes()
    code, _, err = run_cli(capsys, "demo", "-o", out, "--overwrite", "--seed", "5", "-q", "--engine", "pytorch")
    assert code == 0, err
    assert raw.read_bytes() != before and len(raw.read_bytes()) == len(before)
    assert official.routes[f"/sid/sony/{DATA_NAME}"].full_downloads() == 1


def test_download_failure_leaves_the_dark_frame_and_says_what_to_do(official: FaultyServer, tmp_path: Path) -> None:
    route = official.routes[f"/sid/sony/{DATA_NAME}"]
    route.fail_status, route.fail_times = 404, -1
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        demo.run_demo(tmp_path / "out", backend="pytorch")
    raw = tmp_path / "out" / "coffee_dark.dng"
    assert list((tmp_path / "out").iterdir()) == [raw]  # a RAW file to try, nothing else
    assert f"seedark enhance {raw}" in info.value.reason and "--overwrite" in info.value.reason
    with rawpy.imread(str(raw)) as frame:
        assert frame.raw_image_visible.shape == (400, 600)


@pytest.fixture(scope="module")
def tiny() -> LoadedWeights:
    return random_weights(NetworkSpec(width=4), seed=2)


def test_interrupted_demo_removes_what_it_wrote_and_runs_again(
    tmp_path: Path, tiny: LoadedWeights, capfd: pytest.CaptureFixture[str]
) -> None:
    def interrupt(done: int, total: int | None) -> None:
        assert (tmp_path / "coffee_dark.dng").is_file()  # interrupted after the dark frame was written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path, weights=tiny, backend="pytorch", progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    result = demo.run_demo(tmp_path, weights=tiny, backend="pytorch")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (result.raw, result.image, result.compare)
    )
    assert capfd.readouterr() == ("", "")  # the library says nothing (docs/development.md)


def test_bad_options_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: LoadedWeights
) -> None:
    out = tmp_path / "out"
    for args, words in (
        (("--ratio", "0"), "ratio must be a finite number > 0"),
        (("--ratio", "nan"), "ratio must be a finite number > 0"),
        (("--seed", "-1"), "-1 is not in the range x>=0"),
        (("--tile", "banana"), "tile"),
    ):
        code, _, err = run_cli(capsys, "demo", "-o", out, *args)
        assert code == 2 and words in err, err
    with pytest.raises(UsageError, match="needs a number"):
        demo.run_demo(out, ratio="auto", weights=tiny)
    with pytest.raises(UsageError, match="seed"):
        demo.run_demo(out, seed=-1, weights=tiny)
    assert not out.exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="not a folder"):
        demo.run_demo(tmp_path / "file", weights=tiny)


def test_output_folder_that_cannot_be_made_is_refused(tmp_path: Path, tiny: LoadedWeights) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create the output folder"):
        demo.run_demo(tmp_path / "file" / "demo", weights=tiny)


def test_write_dng_never_replaces_without_overwrite(tmp_path: Path) -> None:
    mosaic = np.full((32, 32), 600, dtype=np.uint16)
    path = write_dng(tmp_path / "a.dng", mosaic)
    with pytest.raises(OutputError, match="already exists"):
        write_dng(path, mosaic + 1)
    with rawpy.imread(str(path)) as raw:
        assert int(raw.raw_image_visible.max()) == 600
    write_dng(path, mosaic + 1, overwrite=True)
    with rawpy.imread(str(path)) as raw:
        assert int(raw.raw_image_visible.max()) == 601
    with pytest.raises(OutputError, match="cannot write"):
        write_dng(tmp_path / "missing" / "b.dng", mosaic)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dng"]  # no temporary left
