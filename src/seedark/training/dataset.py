"""The SID dataset layout (names, lists, pairs), sensor geometry, and training patches.

List files (``Sony_train_list.txt`` etc.) hold one pair per line, paths relative
to the list's folder::

    ./Sony/short/10003_00_0.04s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9

File names are ``SSSSS_BB_EXPs.EXT``: the scene id (first digit 0 train, 1 test,
2 validation), the burst index and the exposure in seconds. The amplification
ratio is ``min(long exposure / short exposure, 300)``, as in the official code.

Ground truth is the official one: ``rawpy.postprocess(use_camera_wb=True,
half_size=False, no_auto_bright=True, output_bps=16)`` of the long exposure,
divided by 65535 (decoded, and cached on disk, by seedark.training.arraycache).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from seedark.errors import DatasetError, UnsupportedSensorError
from seedark.frames.packing import amplify, pack, pack_bayer, sensor_area, xtrans_phase
from seedark.frames.sensormatch import match_colours
from seedark.io.exifread import read_camera_metadata
from seedark.io.pixels import apply_orientation
from seedark.io.raw import RAW_EXTENSIONS, RawFrame
from seedark.synthesis.noise import add_noise, iso_params, sample_params
from seedark.synthesis.noiseprofile import NoiseProfile
from seedark.synthesis.unprocess import DEFAULT_SRGB_WB, srgb_to_mosaic

#: The official code caps the amplification ratio here.
MAX_RATIO = 300.0
#: Test scenes whose short and long exposures are misaligned; left out of scores by default.
MISALIGNED_SCENES = frozenset({10034, 10045, 10172})
#: sRGB image files the synthetic mode takes.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

_NAME_RE = re.compile(r"^(?P<scene>\d{5})_(?P<burst>\d+)_(?P<exposure>\d+(?:\.\d*)?|\.\d+)s\.[A-Za-z0-9]+$")
# LibRaw's flip values and the flip that undoes each (90-degree turns swap 5 and 6).
_INVERSE_FLIP = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 5, 7: 7}

# --------------------------------------------------------------------------- names and lists


def parse_name(path: str | os.PathLike[str]) -> tuple[int, float]:
    """(scene id, exposure in seconds) from an official file name like ``10003_00_0.04s.ARW``."""
    name = Path(path).name
    match = _NAME_RE.match(name)
    if match is None:
        raise DatasetError("file name does not follow the SID pattern SSSSS_BB_<exposure>s.<ext>", path)
    exposure = float(match["exposure"])
    if not (math.isfinite(exposure) and exposure > 0):
        raise DatasetError(f"exposure {match['exposure']}s in the file name is not > 0", path)
    return int(match["scene"]), exposure


def exposure_ratio(short_exposure: float, long_exposure: float) -> float:
    """The official amplification: ``min(long / short, 300)``."""
    return min(long_exposure / short_exposure, MAX_RATIO)


@dataclass(frozen=True)
class Pair:
    """One line of a list file: a dark input and its long-exposure reference."""

    short: Path
    long: Path
    scene: int
    short_exposure: float
    long_exposure: float
    #: The paths as written in the list (e.g. ``./Sony/short/10003_00_0.04s.ARW``), for reports.
    short_name: str = ""
    long_name: str = ""
    extra: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        return exposure_ratio(self.short_exposure, self.long_exposure)

    @property
    def misaligned(self) -> bool:
        return self.scene in MISALIGNED_SCENES


def ratio_label(ratio: float) -> str:
    """``x100``, ``x250``, ``x300``: the groups the paper reports."""
    return f"x{round(ratio):d}"


def _parse_line(line: str, number: int, root: Path, src: Path) -> Pair | None:
    """The pair on line ``number`` of a list file (None: a blank line or a comment)."""
    tokens = line.split()
    if not tokens or tokens[0].startswith("#"):
        return None
    if len(tokens) < 2:
        want = "'<short file> <long file> [ISO] [F]'"
        raise DatasetError(f"line {number}: expected {want}, got {line.strip()!r}", src)
    short, long = tokens[0], tokens[1]
    try:
        scene, short_exp = parse_name(short)
        long_scene, long_exp = parse_name(long)
    except DatasetError as exc:
        raise DatasetError(f"line {number}: {exc}", src) from None
    if scene != long_scene:
        raise DatasetError(f"line {number}: short scene {scene:05d} and long scene {long_scene:05d} differ", src)
    return Pair(root / short, root / long, scene, short_exp, long_exp, short, long, tuple(tokens[2:]))


def iter_list(list_file: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None) -> Iterator[Pair]:
    """The pairs of an official list file, read one line at a time: a caller that needs the first
    few (``eval --limit``) reads no further, however long the list. Files are not looked at."""
    src = Path(list_file)
    if not src.is_file():
        raise DatasetError("list file not found" if not src.exists() else "list file is not a file", src)
    root = Path(data_root) if data_root is not None else src.parent
    try:
        with open(src, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                pair = _parse_line(line, number, root, src)
                if pair is not None:
                    yield pair
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the list file ({exc})", src) from exc


def check_pairs(pairs: list[Pair], list_file: str | os.PathLike[str], data_root: str | os.PathLike[str] | None) -> None:
    """Refuse a list that holds no pairs, or whose pairs name files that are not there."""
    src = Path(list_file)
    if not pairs:
        raise DatasetError("the list file holds no pairs", src)
    missing = sorted({str(p) for pair in pairs for p in (pair.short, pair.long) if not p.is_file()})
    if missing:
        root = Path(data_root) if data_root is not None else src.parent
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(f"{missing[0]} is missing{more} (paths are relative to {root})", src)


def read_list(
    list_file: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None, *, check_files: bool = True
) -> list[Pair]:
    """Pairs of an official list file; paths are relative to ``data_root`` (default: the list's folder)."""
    pairs = list(iter_list(list_file, data_root))
    if not pairs:
        raise DatasetError("the list file holds no pairs", Path(list_file))
    if check_files:
        check_pairs(pairs, list_file, data_root)
    return pairs


def _light(path: Path) -> float:
    """How much light a shot gathered, in ISO-seconds (exposure time x ISO), from its EXIF."""
    meta = read_camera_metadata(path)
    if meta.exposure_time is None or meta.iso is None:
        raise DatasetError("no exposure time or ISO in the file's metadata, so no exposure ratio", path)
    return meta.exposure_time * meta.iso


def read_pair_folders(folder: str | os.PathLike[str]) -> list[Pair]:
    """Real pairs from a folder of scenes (``seedark finetune --pairs``): each subfolder holds the
    RAW files of one scene, shot on a tripod; the one that gathered the most light (exposure
    time x ISO) is the reference, each other one a dark input with the ratio of the two."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError("pairs folder not found" if not root.exists() else "not a folder", root)
    pairs: list[Pair] = []
    for number, scene in enumerate(sorted(d for d in root.iterdir() if d.is_dir())):
        raws = sorted(p for p in scene.iterdir() if p.is_file() and p.suffix.lower() in RAW_EXTENSIONS)
        if len(raws) < 2:
            raise DatasetError("a scene needs its reference and at least one darker shot of it", scene)
        light = {p: _light(p) for p in raws}
        long = max(raws, key=lambda p: light[p])
        for short in raws:
            if short == long:
                continue
            if light[long] < 1.5 * light[short]:
                raise DatasetError(f"not darker than the scene's reference {long.name}", short)
            names = (str(short.relative_to(root)), str(long.relative_to(root)))
            pairs.append(Pair(short, long, number, light[short], light[long], *names))
    if not pairs:
        raise DatasetError("no scene folders with RAW files in it", root)
    return pairs


def group_by_reference(pairs: Iterable[Pair]) -> list[list[Pair]]:
    """Pairs grouped by long exposure, in first-seen order: the training "ids" of the official code."""
    groups: dict[Path, list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(pair.long, []).append(pair)
    return list(groups.values())


def find_sources(folder: str | os.PathLike[str]) -> list[Path]:
    """Clean images for the synthetic mode: RAW files and sRGB images in a folder (recursively), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError("synthetic source folder not found" if not root.exists() else "not a folder", root)
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in RAW_EXTENSIONS | IMAGE_EXTENSIONS)
    if not found:
        raise DatasetError("no RAW files or PNG/JPEG/TIFF images in this folder", root)
    return found


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- geometry


def unorient(image: np.ndarray, flip: int) -> np.ndarray:
    """Undo LibRaw's orientation (a view): sensor rows and columns again."""
    return apply_orientation(image, _INVERSE_FLIP[flip])


def crop_frame(frame: RawFrame, y: int, x: int, height: int, width: int) -> RawFrame:
    """The frame's mosaic region [y:y+height, x:x+width] as a frame of its own (a copy).

    The colour pattern and black levels are rolled so they describe the region's
    first pixel, so packing the region is packing that part of the frame.
    """
    period = frame.pattern.shape[0]
    mosaic = np.array(frame.mosaic[y : y + height, x : x + width], dtype=np.uint16)
    shift = (-(y % period), -(x % period))
    return replace(
        frame,
        mosaic=mosaic,
        pattern=np.roll(frame.pattern, shift, axis=(0, 1)),
        black_levels=np.roll(frame.black_levels, shift, axis=(0, 1)),
    )


# --------------------------------------------------------------------------- patches


def sensor_geometry(frame: RawFrame) -> tuple[int, int, int, int]:
    """(y0, x0, block, align): where packing starts, packed-to-sensor scale, packed offset multiple.

    An X-Trans patch has to start on a whole 6x6 tile (an even packed offset) to
    be packed like the same part of the full frame.
    """
    if frame.sensor == "bayer":
        return 0, 0, 2, 1
    if frame.sensor == "xtrans":
        dy, dx = xtrans_phase(frame.pattern)
        return dy, dx, 3, 2
    raise UnsupportedSensorError(f"{frame.sensor} sensors cannot be trained on", frame.path)


def _pick_window(
    rng: np.random.Generator, packed_h: int, packed_w: int, patch: int, align: int, where: Path
) -> tuple[int, int, int]:
    """(size, y, x) of a random patch in packed pixels, clamped to the image."""
    size = min(patch, packed_h, packed_w) // align * align
    if size < align:
        raise DatasetError(f"image too small for a training patch ({packed_h}x{packed_w} packed pixels)", where)
    py = int(rng.integers(0, (packed_h - size) // align + 1)) * align
    px = int(rng.integers(0, (packed_w - size) // align + 1)) * align
    return size, py, px


def augment(
    inp: np.ndarray, gt: np.ndarray, rng: np.random.Generator, enabled: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's augmentation: flip rows, flip columns, transpose, each with probability 1/2.

    The official script's second flip is over the batch axis (a no-op); here all
    three are applied as intended. The draws happen even when disabled, so the
    rest of a sample's randomness does not depend on the switch.
    """
    draws = rng.integers(0, 2, size=3)
    if enabled:
        if draws[0]:
            inp, gt = inp[::-1], gt[::-1]
        if draws[1]:
            inp, gt = inp[:, ::-1], gt[:, ::-1]
        if draws[2]:
            inp, gt = inp.swapaxes(0, 1), gt.swapaxes(0, 1)
    return inp, gt


def _chw(inp: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(inp.transpose(2, 0, 1), dtype=np.float32),
        np.ascontiguousarray(gt.transpose(2, 0, 1), dtype=np.float32),
    )


def _gt_window(gt: np.ndarray, gt_flip: int, frame: RawFrame) -> tuple[np.ndarray, int, int]:
    """Ground truth in sensor orientation, and the packed size that both it and the input cover."""
    y0, x0, b, _ = sensor_geometry(frame)
    _, _, h, w = sensor_area(frame)
    sensor_gt = unorient(gt, gt_flip)
    # an odd Bayer side packs into a last, half-empty row or column that the target lacks
    ph = min(-(-h // b), (sensor_gt.shape[0] - y0) // b)
    pw = min(-(-w // b), (sensor_gt.shape[1] - x0) // b)
    return sensor_gt, ph, pw


def _raw_window(
    frame: RawFrame, gt: np.ndarray, gt_flip: int, patch: int, rng: np.random.Generator
) -> tuple[RawFrame, np.ndarray]:
    """A random patch of ``frame`` (its mosaic region) and the matching ground truth / 65535 (H x W x 3)."""
    y0, x0, b, align = sensor_geometry(frame)
    sensor_gt, ph, pw = _gt_window(gt, gt_flip, frame)
    size, py, px = _pick_window(rng, ph, pw, patch, align, frame.path)
    sub = crop_frame(frame, y0 + b * py, x0 + b * px, b * size, b * size)
    target = np.asarray(
        sensor_gt[y0 + b * py : y0 + b * (py + size), x0 + b * px : x0 + b * (px + size)], dtype=np.float32
    ) / np.float32(65535.0)
    return sub, target


def paired_patch(
    frame: RawFrame,
    gt: np.ndarray,
    gt_flip: int,
    ratio: float,
    patch: int,
    rng: np.random.Generator,
    *,
    augment_patch: bool = True,
    noise: NoiseProfile | None = None,
    per_iso: bool = False,
    match: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A training pair from a raw frame: (C x P x P input, 3 x bP x bP target), float32.

    Input: the packed patch times ``ratio``, clipped at 1 (official train script).
    Target: the matching region of the postprocessed long exposure / 65535.
    With ``noise``, ``frame`` is the clean long exposure itself and the input is its
    mosaic darkened by ``ratio`` and noised with that profile (a synthetic pair): with
    ``per_iso``, the noise measured at one of its ISOs, drawn at random, else its fits.
    With ``match`` (3 x 3), the packed input's colours are mapped to the model's camera
    before amplification, as ``enhance`` maps them (docs/cameras.md).
    """
    sub, target = _raw_window(frame, gt, gt_flip, patch, rng)
    if noise is not None:
        sub = _darken(sub, ratio, noise, rng, per_iso)
    packed = pack(sub)
    if match is not None:
        match_colours(packed, match, sub.sensor)
    inp = amplify(packed, ratio)
    return _chw(*augment(inp, target, rng, augment_patch))


def _black_map(frame: RawFrame) -> np.ndarray:
    period = frame.pattern.shape[0]
    reps = (-(-frame.height // period), -(-frame.width // period))
    return np.tile(frame.black_levels.astype(np.float64), reps)[: frame.height, : frame.width]


def _darken(
    frame: RawFrame, ratio: float, profile: NoiseProfile, rng: np.random.Generator, per_iso: bool = False
) -> RawFrame:
    """The frame as if exposed ``ratio`` times shorter on the profile's sensor."""
    black = _black_map(frame)
    clean = frame.mosaic.astype(np.float64) - black
    params = iso_params(profile, rng) if per_iso else sample_params(profile, rng)
    noisy = add_noise(clean, ratio, params, rng, black_level=black, white_level=frame.white_level)
    return replace(frame, mosaic=noisy)


_RGGB = np.array([["R", "G"], ["G", "B"]])


def synthetic_srgb_patch(
    image: np.ndarray,
    ratio: float,
    profile: NoiseProfile,
    patch: int,
    rng: np.random.Generator,
    *,
    wb: tuple[float, float, float] = DEFAULT_SRGB_WB,
    source: Path | None = None,
    augment_patch: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic pair from an sRGB image: the target is the image, the input a dark RGGB raw made from it."""
    scale = np.float32(65535.0 if image.dtype == np.uint16 else 255.0)
    size, py, px = _pick_window(rng, image.shape[0] // 2, image.shape[1] // 2, patch, 1, source or Path("<image>"))
    region = np.asarray(image[2 * py : 2 * (py + size), 2 * px : 2 * (px + size)], dtype=np.float32) / scale
    clean = srgb_to_mosaic(region, black_level=profile.black_level, white_level=profile.white_level, wb=wb)
    params = sample_params(profile, rng)
    noisy = add_noise(clean, ratio, params, rng, black_level=profile.black_level, white_level=profile.white_level)
    frame = RawFrame(
        source or Path("<image>"),
        noisy,
        _RGGB,
        "bayer",
        np.full((2, 2), profile.black_level, dtype=np.float32),
        profile.white_level,
        0,
    )
    inp = amplify(pack_bayer(frame), ratio)
    return _chw(*augment(inp, region, rng, augment_patch))


__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_RATIO",
    "MISALIGNED_SCENES",
    "DatasetError",
    "Pair",
    "augment",
    "crop_frame",
    "exposure_ratio",
    "find_sources",
    "group_by_reference",
    "is_image",
    "iter_list",
    "paired_patch",
    "parse_name",
    "ratio_label",
    "read_list",
    "read_pair_folders",
    "sensor_geometry",
    "synthetic_srgb_patch",
    "unorient",
]
