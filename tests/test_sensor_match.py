"""Sensor matching (docs/cameras.md): a file's colours mapped to the model's camera's.

Expected values come from the published matrices, written here as the literals of
LibRaw's colour table (src/tables/colordata.cpp, Adobe DNG Converter's D65 matrices,
in units of 1/10000), and T = CM_model · CM_file⁻¹ is computed here with numpy. The
proof that the map is right runs two DNGs of one scene, each projected into its
camera's raw space with that camera's matrix (camera = CM · XYZ), through one random
full-width network: matched, the other camera's output is the a7S II's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import seedark
from helpers.pngread import decode_png
from helpers.rawgen import write_dng
from seedark.cli import main
from seedark.frames.packing import XTRANS_REFERENCE, PackedFrame
from seedark.frames.sensormatch import match_colours
from seedark.io.raw import RawFrame
from seedark.models.network import NetworkSpec
from seedark.models.registry import MODELS, camera_metadata, model_camera
from seedark.models.weights import random_weights, save_safetensors

# LibRaw's table, x 10000: ILCE-7S/ILCE-7SM2, X-T2/X-T20, X-T3, EOS 5D Mark IV.
A7S2 = (5838, -1430, -246, -3497, 11477, 2297, -748, 1885, 5778)
XT2 = (11434, -4948, -1210, -3746, 12042, 1903, -666, 1479, 5235)
XT3 = (13426, -6334, -1177, -4244, 12136, 2371, -580, 1303, 5980)
CANON_5D4 = (6446, -366, -864, -4436, 12204, 2513, -952, 2496, 6348)
# Linear sRGB (D65) -> XYZ, IEC 61966-2-1.
XYZ_FROM_SRGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
REF_INDICES = np.vectorize({"R": 0, "G": 1, "B": 2}.get)(XTRANS_REFERENCE).astype(np.uint8)


def cm(values: tuple[int, ...]) -> np.ndarray:
    return np.array(values, dtype=np.float64).reshape(3, 3) / 10000


def fractions(values: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(v / 10000 for v in values)


def expected_t(model: tuple[int, ...], file: tuple[int, ...]) -> np.ndarray:
    return cm(model) @ np.linalg.inv(cm(file))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def info_json(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, object]:
    with pytest.raises(SystemExit) as exc:
        main(["info", "--json", str(path)])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    found: dict[str, object] = json.loads(out)[0]
    return found


def engine_for_camera(model: str, spec: NetworkSpec, seed: int = 0) -> seedark.Engine:
    """A random network that says it learnt ``model``'s camera (as a cached registry model does)."""
    weights = random_weights(spec, seed=seed)
    camera = MODELS[model].camera
    assert camera is not None
    weights.metadata.update(camera_metadata(camera))
    return seedark.Engine(weights, device="cpu", precision="fp32")


# --------------------------------------------------------------------------- the matrices


def test_the_registry_holds_the_published_matrices() -> None:
    sony, fuji = MODELS["sony"].camera, MODELS["fuji"].camera
    assert sony is not None and fuji is not None
    assert sony.name == "Sony a7S II" and fuji.name == "Fujifilm X-T2"
    np.testing.assert_allclose(sony.matrix, fractions(A7S2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fuji.matrix, fractions(XT2), rtol=0, atol=1e-12)
    # what a cached registry model's weights say (seedark.models.cache writes seedark_model)
    assert model_camera({"seedark_model": "sony"}) == sony
    assert model_camera({"seedark_model": "mine"}) is None and model_camera({}) is None
    again = model_camera(camera_metadata(fuji))  # what seedark's safetensors header can carry
    assert again is not None and (again.name, again.matrix) == (fuji.name, fuji.matrix)
    assert model_camera({"camera_matrix": "1,2,3"}) is None
    assert model_camera({"camera_matrix": "1,0,0,0,1,0,0,0,nan"}) is None


@pytest.mark.parametrize(
    ("first", "second", "chosen", "source"),
    [
        ((21, CANON_5D4), None, CANON_5D4, "DNG ColorMatrix1 (D65)"),
        ((17, XT3), (21, CANON_5D4), CANON_5D4, "DNG ColorMatrix2 (D65)"),
        ((21, CANON_5D4), (17, XT3), CANON_5D4, "DNG ColorMatrix1 (D65)"),
        # neither is D65: the nearer one (D50, 5003 K, against standard light A, 2856 K)
        ((17, XT3), (23, CANON_5D4), CANON_5D4, "DNG ColorMatrix2 (illuminant 23, the nearest to D65)"),
    ],
)
def test_a_dngs_own_matrix_for_d65(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    first: tuple[int, tuple[int, ...]],
    second: tuple[int, tuple[int, ...]] | None,
    chosen: tuple[int, ...],
    source: str,
) -> None:
    # "Acme" is in no table: only the file's tags can say how it sees colours
    path = write_dng(
        tmp_path / "acme.dng",
        np.full((32, 32), 900, np.uint16),
        make="Acme",
        model="Night 3",
        color_matrix=fractions(first[1]),
        illuminant=first[0],
        color_matrix2=None if second is None else (second[0], fractions(second[1])),
    )
    frame = seedark.read_raw(path)
    assert frame.color_matrix is not None and frame.color_matrix.source == source
    np.testing.assert_allclose(frame.color_matrix.matrix, fractions(chosen), rtol=0, atol=1e-12)
    got = info_json(capsys, path)
    assert got["color_matrix_source"] == source and got["model_camera"] == "Sony a7S II"
    np.testing.assert_allclose(np.array(got["sensor_match"]), expected_t(A7S2, chosen), rtol=0, atol=1e-9)


@pytest.mark.parametrize("tags", ["absent", "zeros"])
def test_libraws_table_when_the_dng_has_no_usable_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tags: str
) -> None:
    """The route of every non-DNG RAW file: LibRaw's table by make and model (rawpy's rgb_xyz_matrix).
    A real file LibRaw identifies by make and model is made here as a DNG without (usable) ColorMatrix
    tags, for which LibRaw also falls back to its table."""
    path = write_dng(
        tmp_path / "canon.dng",
        np.full((32, 32), 900, np.uint16),
        make="Canon",
        model="Canon EOS 5D Mark IV",
        color_matrix=None if tags == "absent" else (0.0,) * 9,
    )
    frame = seedark.read_raw(path)
    assert frame.color_matrix is not None and frame.color_matrix.source.startswith("LibRaw's table")
    np.testing.assert_allclose(frame.color_matrix.matrix, fractions(CANON_5D4), rtol=0, atol=1e-6)  # float32 there
    got = info_json(capsys, path)
    np.testing.assert_allclose(np.array(got["sensor_match"]), expected_t(A7S2, CANON_5D4), rtol=0, atol=1e-5)
    assert "T = [" in "".join(row[1] for row in seedark.describe(path) if row[0] == "colour map")


@pytest.mark.parametrize(
    "matrix",
    [
        (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5),  # singular
        (500.0, 0, 0, 0, 1, 0, 0, 0, 1),  # no camera's
        (-1.0, 0, 0, 0, 1, 0, 0, 0, 1),  # sees white as negative red
    ],
)
def test_implausible_matrices_are_no_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], matrix: tuple[float, ...]
) -> None:
    mosaic = np.full((32, 32), 900, np.uint16)
    path = write_dng(tmp_path / "odd.dng", mosaic, make="Acme", model="X", color_matrix=matrix)
    assert seedark.read_raw(path).color_matrix is None
    got = info_json(capsys, path)
    assert got["color_matrix"] is None and got["sensor_match"] is None


# --------------------------------------------------------------------------- the map's arithmetic


def test_bayer_map_against_the_formula(rng: np.random.Generator) -> None:
    packed = rng.uniform(0.0, 0.2, (5, 7, 4)).astype(np.float32)
    t = expected_t(A7S2, CANON_5D4)
    r, g1, b, g2 = (packed[..., i].astype(np.float64) for i in range(4))
    gm = (g1 + g2) / 2
    new = np.stack([r, gm, b], -1) @ t.T
    want = np.stack([new[..., 0], g1 + new[..., 1] - gm, new[..., 2], g2 + new[..., 1] - gm], -1)
    got = match_colours(packed.copy(), t, "bayer")
    np.testing.assert_allclose(got, np.maximum(want, 0), rtol=0, atol=2e-7)


def test_xtrans_map_against_the_formula(rng: np.random.Generator) -> None:
    packed = rng.uniform(0.0, 0.2, (4, 6, 9)).astype(np.float32)
    t = expected_t(XT2, XT3)
    x = packed.astype(np.float64)
    # per packed pixel (a 3 x 3 patch): 2 R (channels 0, 3), 5 G (1, 5-8), 2 B (2, 4)
    colour = {0: 0, 3: 0, 1: 1, 5: 1, 6: 1, 7: 1, 8: 1, 2: 2, 4: 2}
    means = np.stack([x[..., [c for c in range(9) if colour[c] == k]].mean(-1) for k in range(3)], -1)
    change = means @ t.T - means
    want = np.stack([x[..., c] + change[..., colour[c]] for c in range(9)], -1)
    got = match_colours(packed.copy(), t, "xtrans")
    np.testing.assert_allclose(got, np.maximum(want, 0), rtol=0, atol=2e-7)


@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_matched_windows_are_the_whole_frame(rng: np.random.Generator, sensor: str) -> None:
    if sensor == "bayer":
        frame = RawFrame(
            Path("x.dng"), rng.integers(500, 3000, (37, 51), np.uint16), np.array([["G", "B"], ["R", "G"]]), "bayer",
            np.array([[510, 512], [514, 511]], np.float32), 16383, 0,
        )  # fmt: skip
    else:
        frame = RawFrame(
            Path("x.raf"), rng.integers(1024, 3000, (60, 78), np.uint16), XTRANS_REFERENCE, "xtrans",
            np.full((6, 6), 1024, np.float32), 16383, 0,
        )  # fmt: skip
    packed = PackedFrame(frame, 40.0).matched(expected_t(A7S2, CANON_5D4))
    whole = np.asarray(packed)
    for y0, y1, x0, x1 in [(0, 5, 0, 7), (3, 9, 1, 12), (5, packed.shape[0], 11, packed.shape[1])]:
        np.testing.assert_array_equal(packed[y0:y1, x0:x1], whole[y0:y1, x0:x1])
    assert not np.array_equal(whole, np.asarray(PackedFrame(frame, 40.0)))


# --------------------------------------------------------------------------- the proof: one scene, two cameras

H = W = 256


def smooth_scene(block: int, h: int = H, w: int = W) -> np.ndarray:
    """CIE XYZ of a smooth, camera-independent scene, constant over each ``block`` x ``block``
    patch of the mosaic, so that every CFA site of a packed pixel sees the same light."""
    y, x = np.mgrid[0 : h // block, 0 : w // block] / (h // block)
    rgb = np.stack(
        [
            0.55 + 0.35 * np.sin(2 * np.pi * (0.7 * x + 0.3 * y) + 0.4),
            0.50 + 0.30 * np.sin(2 * np.pi * (0.2 * x - 0.6 * y) + 1.9),
            0.45 + 0.35 * np.sin(2 * np.pi * (-0.5 * x + 0.5 * y) + 3.0),
        ],
        -1,
    )  # linear sRGB
    return np.kron(rgb, np.ones((block, block, 1))) @ XYZ_FROM_SRGB.T


def shoot(xyz: np.ndarray, matrix: tuple[int, ...], cfa: np.ndarray, black: np.ndarray, white: int) -> np.ndarray:
    """The camera's mosaic of the scene: its raw RGB = CM · XYZ (x 0.03, a dark exposure), one colour
    per site as ``cfa`` (a tile of colour indices) says, at its own black and white levels."""
    raw = xyz @ cm(matrix).T * 0.03
    h, w = xyz.shape[:2]
    reps = (h // cfa.shape[0], w // cfa.shape[1])
    sites = np.tile(cfa, reps)
    blacks = np.tile(black, (h // black.shape[0], w // black.shape[1]))
    signal = np.take_along_axis(raw, sites[..., None].astype(np.intp), axis=-1)[..., 0]
    return np.round(blacks + signal * (white - blacks)).astype(np.uint16)


@pytest.fixture(scope="module")
def full_width_sony() -> seedark.Engine:
    """A random full-width (base width 32) Bayer network, seeded, that says it learnt the a7S II."""
    return engine_for_camera("sony", NetworkSpec(in_channels=4, width=32, block=2), seed=7)


def test_another_camera_matched_gives_the_a7s2_output(tmp_path: Path, full_width_sony: seedark.Engine) -> None:
    xyz = smooth_scene(2)
    rggb = np.array([[0, 1], [1, 2]])
    sony = write_dng(tmp_path / "a7s2.dng", shoot(xyz, A7S2, rggb, np.full((2, 2), 512), 16383))
    # the Canon: its own matrix in its DNG, another CFA phase (GBRG), per-position blacks, another white
    gbrg, blacks = np.array([[1, 2], [0, 1]]), np.array([[2046, 2048], [2049, 2051]])
    canon = write_dng(
        tmp_path / "canon.dng",
        shoot(xyz, CANON_5D4, gbrg, blacks, 15871),
        cfa="GBRG",
        black_level=tuple(int(b) for b in blacks.ravel()),
        white_level=15871,
        make="Acme",  # not in LibRaw's table: the DNG's tags are the only source
        model="Canon-like",
        color_matrix=fractions(CANON_5D4),
    )
    run = {"ratio": 20, "engine": full_width_sony, "tile": 0}
    want = seedark.enhance(sony, **run)
    matched = seedark.enhance(canon, **run)
    unmatched = seedark.enhance(canon, match_sensor=False, **run)
    assert float(np.mean((want > 0) & (want < 1))) > 0.2  # the network's output is not all clipped
    assert psnr(matched, want) >= 45.0  # measured 64.9 dB
    assert psnr(unmatched, want) <= 35.0  # measured 31.4 dB
    assert psnr(matched, want) - psnr(unmatched, want) >= 20.0
    # the a7S II's own file: no map at all, bit for bit what matching off gives
    np.testing.assert_array_equal(seedark.enhance(sony, match_sensor=False, **run), want)


def test_another_xtrans_camera_matched_gives_the_xt2_output(tmp_path: Path) -> None:
    engine = engine_for_camera("fuji", NetworkSpec(in_channels=9, width=8, block=3), seed=3)
    xyz = smooth_scene(3, 192, 192)
    xt2_mosaic = shoot(xyz, XT2, REF_INDICES, np.full((6, 6), 1024), 16383)
    xt2 = write_dng(tmp_path / "xt2.dng", xt2_mosaic, cfa=REF_INDICES, black_level=1024)  # rawgen: the X-T2's matrix
    xt3_mosaic = shoot(xyz, XT3, REF_INDICES, np.full((6, 6), 1000), 15000)
    xt3 = write_dng(
        tmp_path / "xt3.dng", xt3_mosaic, cfa=REF_INDICES, black_level=1000, white_level=15000,
        make="Acme", model="X-Trans IV", color_matrix=fractions(XT3),
    )  # fmt: skip
    run = {"ratio": 20, "engine": engine, "tile": 0}
    want = seedark.enhance(xt2, **run)
    matched, unmatched = seedark.enhance(xt3, **run), seedark.enhance(xt3, match_sensor=False, **run)
    assert psnr(matched, want) >= 45.0  # measured 61.3 dB
    assert psnr(matched, want) - psnr(unmatched, want) >= 15.0  # unmatched: 39.0 dB
    np.testing.assert_array_equal(seedark.enhance(xt2, match_sensor=False, **run), want)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def sony_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random network in a weights file whose header says it learnt the a7S II."""
    camera = MODELS["sony"].camera
    assert camera is not None
    path = tmp_path_factory.mktemp("weights") / "sony-like.safetensors"
    return save_safetensors(random_weights(NetworkSpec(4, 8, 2), seed=1), path, camera_metadata(camera))


def canon_dng(path: Path, rng: np.random.Generator, **fields: object) -> Path:
    mosaic = rng.integers(600, 1400, (48, 64), dtype=np.uint16)
    return write_dng(path, mosaic, make="Acme", model="Cam", **fields)  # type: ignore[arg-type]


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_enhance_matches_by_default_and_says_so(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], sony_weights: Path
) -> None:
    path = canon_dng(tmp_path / "c.dng", rng, color_matrix=fractions(CANON_5D4))
    common = ("--weights", sony_weights, "--device", "cpu", "--engine", "pytorch", "--ratio", "30", "--bits", "16")
    code, _, err = cli(capsys, "enhance", path, "-o", tmp_path / "on.png", *common)
    assert code == 0, err
    assert "colours of Acme Cam matched to the model's camera (Sony a7S II); its matrix: DNG ColorMatrix1 (D65)" in err
    code, _, err = cli(capsys, "enhance", path, "-o", tmp_path / "off.png", "--no-match-sensor", *common)
    assert code == 0 and "colours" not in err, err
    on, off = (
        seedark.enhance(path, ratio=30, weights=sony_weights, device="cpu", backend="pytorch", match_sensor=m)
        for m in (True, False)
    )
    assert not np.array_equal(on, off)
    for name, want in (("on.png", on), ("off.png", off)):
        _, got = decode_png(tmp_path / name)
        np.testing.assert_array_equal(got, np.floor(want * 65535 + 0.5).astype(np.uint16))


def test_unknown_matrices_pass_unchanged_and_are_said_once(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], sony_weights: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.dng", "b.dng"):
        canon_dng(folder / name, rng, color_matrix=None)  # Acme: in no table either
    engine = ("--weights", sony_weights, "--device", "cpu", "--engine", "pytorch", "--ratio", "30")
    code, _, err = cli(capsys, "batch", folder, "-o", tmp_path / "out", *engine)
    assert code == 0, err
    assert err.count("colours of Acme Cam not matched to the model's camera (Sony a7S II): no colour matrix") == 1
    on, off = (seedark.enhance(folder / "a.dng", ratio=30, weights=sony_weights, match_sensor=m) for m in (True, False))
    np.testing.assert_array_equal(on, off)
    # weights that do not name their camera: nothing is matched, and that is said once too
    tf = Path(__file__).parent / "data" / "tf_sony_w4"
    code, _, err = cli(capsys, "batch", folder, "-o", tmp_path / "out2", "--weights", tf, *engine[2:])
    assert code == 0, err
    assert err.count("colours not matched: the weights") == 1 and "do not say which camera they learnt" in err


@pytest.mark.parametrize("command", ["enhance", "batch", "demo", "eval"])
def test_every_command_that_enhances_takes_the_switch(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0 and "--match-sensor / --no-match-sensor" in out
