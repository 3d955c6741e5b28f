#!/usr/bin/env python
"""Calibrated noise and fine-tuning on synthetic cameras: calibrate's estimates, then base vs matched vs fine-tuned.

    nice python benchmarks/bench_finetune.py --proxy /tmp/proxy/run32/model.safetensors [--json out.json]

For each camera (docs/cameras.md, "Calibrated noise and fine-tuning"):

1. Its calibration frames, made by tests/helpers/calibframes.py (independent of seedark's
   noise code): dark frames and flat pairs at four ISOs whose gain K spans the camera's
   published range, the read and row noise from its published fits at each K.
2. ``seedark calibrate`` on them: the table of true against estimated values.
3. Its "user photos": clean raw frames of scikit-image's photographs as the camera records
   them (camera RGB = CM · XYZ, the same scene scale for every camera, as
   benchmarks/bench_cameras.py makes them), at its CFA phase and black/white levels, as
   DNGs with its make, model and colour matrix.
4. ``seedark finetune`` from the proxy Sony model (a network trained by ``seedark train
   --synthetic`` on a7S II frames of other scikit-image photographs; its camera, the
   a7S II, is written into the copy the benchmark imports, so sensor matching knows it).
5. Held-out dark frames of photographs neither network saw (coffee, chelsea), at ratios
   100 and 300, with the camera's true noise at a randomly drawn ISO (the independent
   generator again); scored against LibRaw's development of the clean frame (the SID
   ground truth) by PSNR and SSIM: the base model as it is (``match_sensor=False``), the
   base with the camera's colours matched to the a7S II's, and the fine-tuned model
   (picked by ``enhance`` for the camera's files on its own).

The cameras: the Nikon D850 and the Sony IMX686 phone sensor, with the ELD-style fits
megvii-research/PMN publishes for them (data_process/process.py,
``get_camera_noisy_params``: log K range, Tukey-lambda shape, log-linear read and row
noise), and a made-up 12-bit camera with light-tailed read noise and strong banding.
The D850's colour matrix is Adobe's (LibRaw's table); the other two are made up.

Needs scikit-image and scipy. Not a test: it shows what the commands do with frames whose
truth is known, not how a real sensor behaves (docs/cameras.md says what it cannot show).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

#: Linear sRGB (D65) -> XYZ, IEC 61966-2-1; D65's white.
XYZ_FROM_SRGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
D65 = np.array([0.95047, 1.0, 1.08883])
#: The a7S II's matrix (x 10000, LibRaw's table): the scene scale puts D65 white at 0.9 of its green range.
A7S2 = (5838, -1430, -246, -3497, 11477, 2297, -748, 1885, 5778)
SCALE = 0.9 / float((np.array(A7S2).reshape(3, 3) / 10000 @ D65)[1])
CROP = (256, 320)  # sRGB pixels of one photo (the mosaic's size)
RATIOS = (100.0, 300.0)


@dataclass(frozen=True)
class Camera:
    """A camera of the benchmark: its published (or made-up) ELD-style fits and colour matrix."""

    label: str
    make: str
    model: str
    matrix: tuple[int, ...]  # XYZ (D65) -> camera, x 10000
    cfa: str
    black: int
    white: int
    log_k: tuple[float, float]  # range of log K
    read_lambda: float
    read_fit: tuple[float, float]  # log s = a log K + b
    row_fit: tuple[float, float]


CAMERAS = {
    "d850": Camera(
        "Nikon D850 (PMN's fits)", "NIKON CORPORATION", "NIKON D850",
        (10405, -3755, -1270, -5461, 13787, 1793, -1040, 2015, 6785), "RGGB", 512, 16383,
        (1.2, 2.4828), -0.26, (0.906, -0.6754), (0.8322, -2.3326),
    ),
    "imx686": Camera(
        "Sony IMX686 phone sensor (PMN's fits)", "Xiaomi", "IMX686 phone",
        (9100, -3300, -900, -4300, 12600, 1700, -700, 1900, 5600), "BGGR", 64, 1023,
        (-0.19118, 2.16820), 0.102, (0.85187, 0.07991), (0.87611, -2.11455),
    ),
    "madeup": Camera(
        "Made-up 12-bit camera", "Acme", "Nightcam 12",
        (7500, -2200, -600, -4200, 12500, 1700, -800, 2100, 6200), "GRBG", 256, 4095,
        (math.log(0.25), math.log(2.0)), 0.05, (0.5, 0.3), (0.7, -0.3),
    ),
}  # fmt: skip


def truth(camera: Camera) -> Any:
    """The camera's four ISOs: K log-spaced over its range, the noise from its fits at each K."""
    from helpers.calibframes import CameraTruth, IsoTruth

    isos = []
    for n, log_k in enumerate(np.linspace(*camera.log_k, 4)):
        read = math.exp(camera.read_fit[0] * log_k + camera.read_fit[1])
        row = math.exp(camera.row_fit[0] * log_k + camera.row_fit[1])
        isos.append(IsoTruth(800 * 2**n, math.exp(log_k), camera.read_lambda, read, row))
    return CameraTruth(camera.make, camera.model, camera.black, camera.white, tuple(isos), cm_tuple(camera), camera.cfa)


def cm_tuple(camera: Camera) -> tuple[float, ...]:
    return tuple(v / 10000 for v in camera.matrix)


# --------------------------------------------------------------------------- scenes and frames


def photographs(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    found = {"motorcycle_left": left, "motorcycle_right": right, "retina": data.retina()[::2, ::2]}
    return {n: found[n] if n in found else getattr(data, n if n != "hubble" else "hubble_deep_field")() for n in names}


#: The proxy's training photographs (bench_cameras.py's), so the fine-tuning photos add no new scenes;
#: the held-out ones neither network saw.
TRAIN = ("astronaut", "rocket", "immunohistochemistry", "hubble", "retina", "colorwheel", "motorcycle_left")
HELD_OUT = ("coffee", "chelsea")


def crops(images: dict[str, np.ndarray], count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random CROP-sized crops (even offsets), spread over the images in turn."""
    out, names = [], sorted(images)
    for k in range(count):
        image = images[names[k % len(names)]]
        y = int(rng.integers(0, (image.shape[0] - CROP[0]) // 2 + 1)) * 2
        x = int(rng.integers(0, (image.shape[1] - CROP[1]) // 2 + 1)) * 2
        out.append(image[y : y + CROP[0], x : x + CROP[1], :3])
    return out


def clean_raw(srgb8: np.ndarray, camera: Camera) -> np.ndarray:
    """The camera's clean frame of an sRGB photograph, in DN above black (float): CM · XYZ · SCALE."""
    from seedark.synthesis.unprocess import srgb_to_linear

    xyz = srgb_to_linear(srgb8 / 255.0) @ XYZ_FROM_SRGB.T
    rgb = np.maximum(xyz @ (np.array(camera.matrix).reshape(3, 3) / 10000).T * SCALE, 0.0)
    out = np.empty(srgb8.shape[:2])
    for k, letter in enumerate(camera.cfa):
        r, c = divmod(k, 2)
        out[r::2, c::2] = rgb[r::2, c::2, "RGB".index(letter)]
    return np.minimum(out, 1.0) * (camera.white - camera.black)


def write_frame(path: Path, dn: np.ndarray, camera: Camera, **shot: Any) -> Path:
    """A DNG of the camera: DN above black, rounded with the black level added, clipped."""
    from helpers.rawgen import write_dng

    neutral = np.array(camera.matrix).reshape(3, 3) / 10000 @ D65
    values = np.clip(np.round(dn + camera.black), 0, camera.white).astype(np.uint16)
    return write_dng(
        path, values, cfa=camera.cfa, black_level=camera.black, white_level=camera.white,
        color_matrix=cm_tuple(camera), as_shot_neutral=tuple(neutral / neutral[1]),
        make=camera.make, model=camera.model, **shot,
    )  # fmt: skip


def dark_dn(clean: np.ndarray, ratio: float, iso: Any, rng: np.random.Generator) -> np.ndarray:
    """The clean frame shot ``ratio`` times too short with the camera's true noise at ``iso``
    (Poisson electrons, Tukey-lambda read noise, row offsets: helpers.calibframes), DN above black."""
    from helpers.calibframes import tukey_lambda

    electrons = rng.poisson(clean / ratio / iso.k)
    noise = tukey_lambda(rng, iso.read_lambda, iso.read_scale, clean.shape)
    return electrons * iso.k + noise + rng.normal(0.0, iso.row_scale, size=(clean.shape[0], 1))


def developed(path: Path) -> np.ndarray:
    """The SID ground truth of a clean frame: LibRaw's development, / 65535."""
    import rawpy

    with rawpy.imread(str(path)) as raw:
        rgb = raw.postprocess(use_camera_wb=True, half_size=False, no_auto_bright=True, output_bps=16)
    return rgb.astype(np.float32) / 65535


# --------------------------------------------------------------------------- the steps


def calibrated(camera: Camera, work: Path, seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """calibrate on the camera's frames; the table rows of true against estimated values."""
    from helpers.calibframes import write_frames
    from seedark.training.calibrate import calibrate

    hidden = truth(camera)
    span = camera.white - camera.black
    levels = tuple(f * span for f in (0.06, 0.12, 0.25, 0.5))
    darks, flats = write_frames(hidden, work / "calibration", np.random.default_rng(seed), darks=6, levels=levels)
    profile = calibrate(darks, flats).profile
    rows = []
    for t, e in zip(hidden.isos, profile.per_iso, strict=True):
        rows.append({"iso": t.iso, "k": (t.k, e.k), "read_scale": (t.read_scale, e.read_scale),
                     "row_scale": (t.row_scale, e.row_scale), "lambda": (t.read_lambda, e.read_lambda),
                     "black": (camera.black, e.black_level)})  # fmt: skip
    return profile, rows


def user_photos(camera: Camera, folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(crops(photographs(TRAIN), count, np.random.default_rng(seed))):
        write_frame(folder / f"DSC{k:04d}.dng", clean_raw(image, camera), camera, iso=100, exposure_time=1 / 30)
    return folder


def scores(camera: Camera, work: Path, count: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """PSNR and SSIM of base, matched and fine-tuned on held-out dark frames, per ratio."""
    import seedark
    from seedark.training.metrics import psnr, ssim

    rng = np.random.default_rng(seed)
    isos = truth(camera).isos
    out: dict[str, dict[str, list[float]]] = {}
    for n, image in enumerate(crops(photographs(HELD_OUT), count, rng)):
        clean = clean_raw(image, camera)
        gt = developed(write_frame(work / f"clean{n}.dng", clean, camera))
        for ratio in RATIOS:
            iso = isos[int(rng.integers(len(isos)))]
            path = write_frame(work / "dark.dng", dark_dn(clean, ratio, iso, rng), camera, iso=iso.iso)
            runs = {
                "base": seedark.enhance(path, ratio=ratio, model="proxy", match_sensor=False, device="cpu"),
                "matched": seedark.enhance(path, ratio=ratio, model="proxy", device="cpu"),
                "fine-tuned": seedark.enhance(path, ratio=ratio, device="cpu"),  # picked for the camera
            }
            for key, result in runs.items():
                h, w = min(result.shape[0], gt.shape[0]), min(result.shape[1], gt.shape[1])
                entry = out.setdefault(f"x{ratio:g}", {}).setdefault(key, [])
                entry.append((psnr(gt[:h, :w], result[:h, :w]), ssim(gt[:h, :w], result[:h, :w])))
    return {r: {k: np.mean(v, axis=0).tolist() for k, v in by.items()} for r, by in out.items()}


def install_proxy(proxy: Path, work: Path) -> None:
    """The proxy in the benchmark's cache as ``proxy``, its camera (the a7S II) written into it."""
    from seedark.models.cache import import_model
    from seedark.models.registry import MODELS, camera_metadata
    from seedark.models.weights import load_weights, save_safetensors

    weights = load_weights(proxy)
    camera = MODELS["sony"].camera
    assert camera is not None
    copy = save_safetensors(weights, work / "proxy.safetensors", {**weights.metadata, **camera_metadata(camera)})
    import_model("proxy", copy, unverified=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from seedark.training.finetune import finetune

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        os.environ["SEEDARK_HOME"] = str(work / "home")
        install_proxy(args.proxy, work)
        for key in args.cameras:
            camera, where = CAMERAS[key], work / key
            profile, table = calibrated(camera, where, args.seed)
            photos = user_photos(camera, where / "photos", args.photos, args.seed + 1)
            started = time.monotonic()
            tuned = finetune(photos, base="proxy", steps=args.steps, patch=args.patch, device="cpu", seed=args.seed)
            seconds = time.monotonic() - started
            held = where / "held-out"
            held.mkdir()
            results[key] = {"camera": camera.label, "calibration": table, "profile": profile.to_dict(),
                            "finetune_seconds": round(seconds, 1), "steps": tuned.train.steps,
                            "scores": scores(camera, held, args.held_out, args.seed + 2)}  # fmt: skip
            print(f"{camera.label}: done in {seconds:.0f} s of fine-tuning", file=sys.stderr)
    return results


def report(results: dict[str, Any]) -> None:
    for entry in results.values():
        print(f"\n### {entry['camera']}\n")
        print("| ISO | K true / est. | read scale | row scale | λ | black |")
        print("|---|---|---|---|---|---|")
        for r in entry["calibration"]:
            cells = [f"{r[k][0]:.3g} / {r[k][1]:.3g}" for k in ("k", "read_scale", "row_scale", "lambda")]
            print(f"| {r['iso']} | " + " | ".join(cells) + f" | {r['black'][0]} / {r['black'][1]:.1f} |")
        print(f"\nfine-tuning: {entry['steps']} steps, {entry['finetune_seconds']:.0f} s\n")
        print("| ratio | base PSNR / SSIM | matched | fine-tuned |")
        print("|---|---|---|---|")
        for ratio, by in entry["scores"].items():
            cells = [f"{by[k][0]:.2f} dB / {by[k][1]:.3f}" for k in ("base", "matched", "fine-tuned")]
            print(f"| {ratio} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", type=Path, required=True, help="the proxy Sony model (seedark train's output)")
    parser.add_argument("--cameras", nargs="+", choices=sorted(CAMERAS), default=list(CAMERAS))
    parser.add_argument("--photos", type=int, default=20, help="user photos per camera")
    parser.add_argument("--held-out", type=int, default=6, help="held-out frames per camera (each at both ratios)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--patch", type=int, default=96, help="patch side in packed pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="where the temporary files go (default: /tmp)")
    parser.add_argument("--json", type=Path, help="also save the results here")
    args = parser.parse_args()
    results = run(args)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
