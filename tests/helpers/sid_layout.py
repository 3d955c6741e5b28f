"""Tiny datasets in the official SID layout, generated on the fly (no real dataset needed).

``make_sid_dataset(root)`` writes::

    root/Sony/long/00001_00_10s.ARW      (DNG content: LibRaw identifies files by content)
    root/Sony/short/00001_00_0.1s.ARW
    ...
    root/Sony_train_list.txt             official format, paths relative to root
    root/Sony_test_list.txt              includes misaligned scene 10034
    root/Sony_val_list.txt

The long exposure of a scene is a smooth random scene plus a little read noise;
each short exposure is that scene darkened by the exposure ratio with the a7S II
noise model, so the pairs look like the real ones to the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.rawgen import write_dng
from seedark.synthesis.noise import synthesize
from seedark.synthesis.noiseprofile import SONY_A7S2

BLACK = 512
WHITE = 16383

#: scene id -> (long exposure, short exposures), by split.
TRAIN_SCENES = {1: (10.0, (0.1, 0.04)), 2: (30.0, (0.1,)), 3: (10.0, (0.1,))}
TEST_SCENES = {10003: (10.0, (0.1, 0.04)), 10034: (10.0, (0.1,)), 10040: (30.0, (0.1,))}
VAL_SCENES = {20005: (10.0, (0.1,))}


@dataclass
class SidLayout:
    root: Path
    train_list: Path
    test_list: Path
    val_list: Path
    #: clean black-subtracted signal of each scene, in DN at the long exposure
    clean: dict[int, np.ndarray] = field(default_factory=dict)


def _exposure_text(seconds: float) -> str:
    return f"{seconds:g}"


def clean_scene(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth, textured scene: blurred random blocks plus a gradient, in DN above black."""
    h, w = size
    coarse = rng.uniform(200, 5000, size=(h // 8 + 2, w // 8 + 2))
    ys = np.linspace(0, coarse.shape[0] - 1.001, h)
    xs = np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    smooth = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    gradient = np.linspace(0, 1000, w)[None, :]
    return smooth + gradient


def _write_scene(
    root: Path,
    camera: str,
    ext: str,
    scene: int,
    long_exp: float,
    shorts: tuple[float, ...],
    rng: np.random.Generator,
    size: tuple[int, int],
    orientation: int,
) -> tuple[np.ndarray, list[str]]:
    clean = clean_scene(rng, size)
    long_name = f"{scene:05d}_00_{_exposure_text(long_exp)}s{ext}"
    long_mosaic = np.clip(np.round(clean + BLACK + rng.normal(0, 2.0, size)), 0, WHITE).astype(np.uint16)
    write_dng(root / camera / "long" / long_name, long_mosaic, exposure_time=long_exp, iso=100, orientation=orientation)
    lines = []
    for short_exp in shorts:
        short_name = f"{scene:05d}_00_{_exposure_text(short_exp)}s{ext}"
        mosaic = synthesize(clean, long_exp / short_exp, SONY_A7S2, rng, black_level=BLACK, white_level=WHITE)
        write_dng(
            root / camera / "short" / short_name, mosaic, exposure_time=short_exp, iso=3200, orientation=orientation
        )
        lines.append(f"./{camera}/short/{short_name} ./{camera}/long/{long_name} ISO3200 F8")
    return clean, lines


def make_sid_dataset(
    root: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    camera: str = "Sony",
    ext: str = ".ARW",
    train: dict[int, tuple[float, tuple[float, ...]]] | None = None,
    test: dict[int, tuple[float, tuple[float, ...]]] | None = None,
    val: dict[int, tuple[float, tuple[float, ...]]] | None = None,
    orientation: int = 1,
) -> SidLayout:
    """Write a tiny dataset in the official layout under ``root`` and return where things are.

    ``orientation`` is the TIFF orientation of every file (6: shot in portrait, turned 90 degrees).
    """
    base = Path(root)
    (base / camera / "long").mkdir(parents=True, exist_ok=True)
    (base / camera / "short").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    layout = SidLayout(
        base, base / f"{camera}_train_list.txt", base / f"{camera}_test_list.txt", base / f"{camera}_val_list.txt"
    )
    splits = (
        (layout.train_list, TRAIN_SCENES if train is None else train),
        (layout.test_list, TEST_SCENES if test is None else test),
        (layout.val_list, VAL_SCENES if val is None else val),
    )
    for list_file, scenes in splits:
        lines: list[str] = []
        for scene, (long_exp, shorts) in scenes.items():
            clean, scene_lines = _write_scene(base, camera, ext, scene, long_exp, shorts, rng, size, orientation)
            layout.clean[scene] = clean
            lines += scene_lines
        list_file.write_text("\n".join(lines) + "\n")
    return layout
