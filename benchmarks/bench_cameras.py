#!/usr/bin/env python
"""Sensor matching on other cameras: mean ΔE2000 and PSNR against the clean image, unmatched vs matched.

    python benchmarks/bench_cameras.py scenes /tmp/proxy/clean        # the proxy's training set
    nice seedark train --synthetic /tmp/proxy/clean --out /tmp/proxy/run --device cpu --cache-inputs \\
        --width 32 --patch 128 --epochs 200 --workers 0 --lr 3e-4 --val-every 0 --save-every 50
    python benchmarks/bench_cameras.py table --weights /tmp/proxy/run/model.safetensors [--json out.json]

What it shows (docs/cameras.md, "The proof"): a model that learnt one camera's colours
(a proxy of the official Sony model, trained here on a7S II frames) given the raw values
of other cameras, with and without seedark's sensor matching.

One camera-independent scene (CIE XYZ, from a photograph's linear sRGB) is projected into
each camera's raw space with that camera's published colour matrix (camera = CM · XYZ ·
k, the same k for every camera), darkened by ``--ratio``, given the same noise in
normalised units (the a7S II's ELD noise model), and stored at the camera's own CFA phase
and black/white levels as a DNG: the a7S II, the Canon EOS 5D Mark IV and Nikon D850
(make and model only: their matrices come from LibRaw's table, as for their CR2/NEF
files), and a Samsung Galaxy S7 phone DNG (its matrix in its own ColorMatrix tag, which
LibRaw's table does not know by its Exif model name). The reference is the clean image
the proxy was trained to produce: LibRaw's development of the clean a7S II DNG of the
scene (``postprocess`` as the official ground truth). Outputs are compared as sRGB-
encoded images (ΔE2000 through scikit-image's Lab, PSNR with peak 1), averaged over the
test scenes (scikit-image's coffee and chelsea photographs, kept out of the training set,
and a colour-checker chart of the usual published sRGB values).

The proxy's training set is made by ``scenes``: clean a7S II DNGs of scikit-image's
other colour photographs, made the same way (no noise; ``seedark train --synthetic``
darkens them and adds the a7S II noise itself). The weights file gets the a7S II as its
camera (seedark's ``camera_matrix`` metadata) before the table is made.

Needs scikit-image. Nothing here is a test: a synthetic frame shows the colour map's
arithmetic at work, not how real sensors behave (docs/cameras.md, limits).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

# Published D65 matrices (XYZ -> camera, x 10000), LibRaw's src/tables/colordata.cpp
# (Adobe DNG Converter): "ILCE-7S" (same for ILCE-7SM2), "EOS 5D Mark IV", "D850", "Galaxy S7".
A7S2 = (5838, -1430, -246, -3497, 11477, 2297, -748, 1885, 5778)
CANON_5D4 = (6446, -366, -864, -4436, 12204, 2513, -952, 2496, 6348)
NIKON_D850 = (10405, -3755, -1270, -5461, 13787, 1793, -1040, 2015, 6785)
GALAXY_S7 = (9927, -3704, -1024, -3935, 12758, 1257, -389, 1512, 4993)

#: Linear sRGB (D65) -> XYZ, IEC 61966-2-1.
XYZ_FROM_SRGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
D65 = np.array([0.95047, 1.0, 1.08883])
#: Scene scale: D65 white at 0.9 of the a7S II's green range; the same for every camera.
K = 0.9 / float((np.array(A7S2).reshape(3, 3) / 10000 @ D65)[1])

#: The colour checker's 24 patches as commonly published in sRGB (8 bits), row by row.
CHECKER = (
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
)  # fmt: skip


@dataclass(frozen=True)
class Camera:
    name: str
    make: str
    model: str
    matrix: tuple[int, ...]
    cfa: str
    black: int
    white: int
    tags: bool  # the matrix in the DNG's ColorMatrix1 tag (else LibRaw's table, by make and model)


CAMERAS = (
    Camera("Sony a7S II (the model's camera)", "Sony", "ILCE-7SM2", A7S2, "RGGB", 512, 16383, True),
    Camera("Canon EOS 5D Mark IV", "Canon", "Canon EOS 5D Mark IV", CANON_5D4, "GRBG", 2048, 15000, False),
    Camera("Nikon D850", "Nikon", "NIKON D850", NIKON_D850, "BGGR", 400, 15520, False),
    Camera("Samsung Galaxy S7 (phone DNG)", "samsung", "SM-G930F", GALAXY_S7, "GBRG", 256, 4095, True),
)


def cm(matrix: tuple[int, ...]) -> np.ndarray:
    return np.array(matrix, dtype=np.float64).reshape(3, 3) / 10000


def srgb_to_xyz(srgb8: np.ndarray) -> np.ndarray:
    """CIE XYZ (D65) of an 8-bit sRGB image, cropped to sides that are multiples of 32."""
    from seedark.synthesis.unprocess import srgb_to_linear

    h, w = srgb8.shape[0] // 32 * 32, srgb8.shape[1] // 32 * 32
    return srgb_to_linear(srgb8[:h, :w, :3] / 255.0) @ XYZ_FROM_SRGB.T


def normalised_mosaic(xyz: np.ndarray, camera: Camera) -> np.ndarray:
    """The camera's clean raw values (CM · XYZ · K, 0 = black, 1 = white), one per site of its CFA."""
    raw = np.maximum(xyz @ cm(camera.matrix).T * K, 0.0)
    index = {"R": 0, "G": 1, "B": 2}
    out = np.empty(xyz.shape[:2])
    for k, letter in enumerate(camera.cfa):
        r, c = divmod(k, 2)
        out[r::2, c::2] = raw[r::2, c::2, index[letter]]
    return out


def write(path: Path, normalised: np.ndarray, camera: Camera) -> Path:
    """A DNG of normalised values at the camera's levels (rounded, clipped), with its matrix or its name."""
    from seedark.io.dng import write_dng
    from seedark.io.metadata import CameraMetadata

    dn = np.clip(np.round(camera.black + normalised * (camera.white - camera.black)), 0, camera.white)
    neutral = cm(camera.matrix) @ D65
    return write_dng(
        path,
        dn.astype(np.uint16),
        overwrite=True,
        cfa=camera.cfa,
        black_level=camera.black,
        white_level=camera.white,
        metadata=CameraMetadata(make=camera.make, model=camera.model),
        as_shot_neutral=tuple(float(v) for v in neutral / neutral[1]),
        color_matrix=tuple(v / 10000 for v in camera.matrix) if camera.tags else None,
    )


def dark(normalised: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """The clean normalised mosaic shot ``ratio`` times too short, with the a7S II's noise (ELD model,
    at the middle of its gain range) in normalised units: the same noise for every camera."""
    from seedark.pipeline.demo import demo_noise
    from seedark.synthesis.noise import add_noise
    from seedark.synthesis.noiseprofile import SONY_A7S2 as P

    span = P.white_level - P.black_level
    noisy = add_noise(
        normalised * span, ratio, demo_noise(), np.random.default_rng(seed), black_level=P.black_level,
        white_level=P.white_level,
    )  # fmt: skip
    return (noisy.astype(np.float64) - P.black_level) / span


def developed(path: Path) -> np.ndarray:
    """LibRaw's development of a clean DNG, as the official ground truth (the proxy's target)."""
    import rawpy

    with rawpy.imread(str(path)) as raw:
        rgb = raw.postprocess(use_camera_wb=True, half_size=False, no_auto_bright=True, output_bps=16)
    return rgb.astype(np.float32) / 65535


def test_scenes() -> dict[str, np.ndarray]:
    from skimage import data

    chart = np.kron(np.array(CHECKER, dtype=np.uint8).reshape(4, 6, 3), np.ones((64, 64, 1), np.uint8))
    return {"coffee": data.coffee(), "chelsea": data.chelsea(), "checker": chart}


def training_scenes() -> dict[str, np.ndarray]:
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    return {
        "astronaut": data.astronaut(),
        "rocket": data.rocket(),
        "immunohistochemistry": data.immunohistochemistry(),
        "hubble": data.hubble_deep_field(),
        "retina": data.retina()[::2, ::2],
        "colorwheel": data.colorwheel(),
        "motorcycle_left": left,
        "motorcycle_right": right,
    }


def make_scenes(folder: Path) -> None:
    """Clean a7S II DNGs of the training photographs (``seedark train --synthetic`` reads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in training_scenes().items():
        written = write(folder / f"{name}.dng", normalised_mosaic(srgb_to_xyz(image), CAMERAS[0]), CAMERAS[0])
        print(written)


def _metrics(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    from skimage.color import deltaE_ciede2000, rgb2lab

    h, w = min(out.shape[0], ref.shape[0]), min(out.shape[1], ref.shape[1])
    a, b = np.clip(out[:h, :w], 0, 1).astype(np.float64), ref[:h, :w].astype(np.float64)
    delta = float(np.mean(deltaE_ciede2000(rgb2lab(a), rgb2lab(b))))
    return delta, float(10 * np.log10(1 / np.mean((a - b) ** 2)))


def table(weights: Path, ratio: float, seed: int) -> list[dict[str, Any]]:
    import seedark
    from seedark.models.registry import MODELS, camera_metadata
    from seedark.models.weights import load_weights

    proxy = load_weights(weights)
    camera = MODELS["sony"].camera
    assert camera is not None
    proxy.metadata.update(camera_metadata(camera))  # trained on a7S II frames: the a7S II is its camera
    engine = seedark.Engine(proxy, device="cpu", precision="fp32")
    scores: dict[str, list[tuple[float, float, float, float]]] = {c.name: [] for c in CAMERAS}
    with tempfile.TemporaryDirectory() as tmp:
        for s, (scene, image) in enumerate(test_scenes().items()):
            xyz = srgb_to_xyz(image)
            ref = developed(write(Path(tmp) / f"{scene}-clean.dng", normalised_mosaic(xyz, CAMERAS[0]), CAMERAS[0]))
            for camera in CAMERAS:
                path = write(Path(tmp) / "dark.dng", dark(normalised_mosaic(xyz, camera), ratio, seed + s), camera)
                off = seedark.enhance(path, ratio=ratio, engine=engine, match_sensor=False)
                on = seedark.enhance(path, ratio=ratio, engine=engine)
                scores[camera.name].append((*_metrics(off, ref), *_metrics(on, ref)))
    keys = ("de_off", "psnr_off", "de_on", "psnr_on")
    return [{"camera": name, **dict(zip(keys, np.mean(v, axis=0).tolist(), strict=True))} for name, v in scores.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    scenes = sub.add_parser("scenes", help="write the proxy's training set: clean a7S II DNGs")
    scenes.add_argument("folder", type=Path)
    tab = sub.add_parser("table", help="unmatched vs matched on the test scenes of every camera")
    tab.add_argument("--weights", type=Path, required=True, help="the proxy Sony model (seedark train's output)")
    tab.add_argument("--ratio", type=float, default=100.0)
    tab.add_argument("--seed", type=int, default=1)
    tab.add_argument("--json", type=Path, help="also save the table here")
    args = parser.parse_args()
    if args.command == "scenes":
        make_scenes(args.folder)
        return
    rows = table(args.weights, args.ratio, args.seed)
    print(f"ratio x{args.ratio:g}, mean of {len(test_scenes())} scenes; ΔE2000 (lower is better), PSNR in dB\n")
    print("| camera | ΔE2000 unmatched | ΔE2000 matched | PSNR unmatched | PSNR matched |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['camera']} | {r['de_off']:.2f} | {r['de_on']:.2f} | {r['psnr_off']:.2f} | {r['psnr_on']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
