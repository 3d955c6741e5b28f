"""The SID dataset layout, its ground truth, a disk cache, and training patches.

List files (``Sony_train_list.txt`` etc.) hold one pair per line, paths relative
to the list's folder::

    ./Sony/short/10003_00_0.04s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9

File names are ``SSSSS_BB_EXPs.EXT``: the scene id (first digit 0 train, 1 test,
2 validation), the burst index and the exposure in seconds. The amplification
ratio is ``min(long exposure / short exposure, 300)``, as in the official code.

Ground truth is the official one: ``rawpy.postprocess(use_camera_wb=True,
half_size=False, no_auto_bright=True, output_bps=16)`` of the long exposure,
divided by 65535. The official training script keeps every decoded image in RAM
(64 GB for the Sony set); here each is decoded once into a ``.npy`` file under a
cache folder and memory-mapped, so a patch reads only its own rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError, RawReadError, UnsupportedSensorError
from .noise import DEFAULT_SRGB_WB, NoiseProfile, add_noise, sample_params, srgb_to_mosaic
from .output import apply_orientation
from .packing import amplify, xtrans_phase
from .raw import RAW_EXTENSIONS, RawFrame, check_input, read_raw

log = logging.getLogger("seedark")

#: The official code caps the amplification ratio here.
MAX_RATIO = 300.0
#: Test scenes whose short and long exposures are misaligned; left out of scores by default.
MISALIGNED_SCENES = frozenset({10034, 10045, 10172})
#: sRGB image files the synthetic mode takes.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
#: Bumped when the cached arrays change meaning, so old entries are not reused.
CACHE_VERSION = "1"

_NAME_RE = re.compile(r"^(?P<scene>\d{5})_(?P<burst>\d+)_(?P<exposure>\d+(?:\.\d*)?|\.\d+)s\.[A-Za-z0-9]+$")
# LibRaw's flip values and the flip that undoes each (90-degree turns swap 5 and 6).
_INVERSE_FLIP = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 5, 7: 7}

ProgressFn = Callable[[int, int], None]
#: A cached array and the facts stored with it.
Entry = tuple[np.ndarray, dict[str, Any]]


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


def read_list(
    list_file: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None, *, check_files: bool = True
) -> list[Pair]:
    """Pairs of an official list file; paths are relative to ``data_root`` (default: the list's folder)."""
    src = Path(list_file)
    if not src.is_file():
        raise DatasetError("list file not found" if not src.exists() else "list file is not a file", src)
    root = Path(data_root) if data_root is not None else src.parent
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the list file ({exc})", src) from exc
    pairs: list[Pair] = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
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
        pairs.append(Pair(root / short, root / long, scene, short_exp, long_exp, short, long, tuple(tokens[2:])))
    if not pairs:
        raise DatasetError("the list file holds no pairs", src)
    if check_files:
        missing = sorted({str(p) for pair in pairs for p in (pair.short, pair.long) if not p.is_file()})
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DatasetError(f"{missing[0]} is missing{more} (paths are relative to {root})", src)
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


# --------------------------------------------------------------------------- decoding


def decode_ground_truth(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """The official ground truth as uint16 H x W x 3 (oriented, as postprocess gives), and LibRaw's flip."""
    import rawpy

    p = Path(path)
    check_input(p)
    try:
        with rawpy.imread(str(p)) as raw:
            flip = int(raw.sizes.flip)
            image = raw.postprocess(use_camera_wb=True, half_size=False, no_auto_bright=True, output_bps=16)
    except rawpy.LibRawFileUnsupportedError as exc:
        raise RawReadError("not a RAW file LibRaw can read (unknown or unsupported format)", p) from exc
    except rawpy.LibRawError as exc:
        raise RawReadError(f"LibRaw could not decode this file ({type(exc).__name__})", p) from exc
    except OSError as exc:
        raise RawReadError(f"cannot read: {exc.strerror or exc}", p) from exc
    return np.ascontiguousarray(image, dtype=np.uint16), flip


def decode_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An sRGB image as uint8 H x W x 3, turned upright by its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            upright = ImageOps.exif_transpose(im)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DatasetError("no such file", p) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"not a readable image ({exc})", p) from exc


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


# --------------------------------------------------------------------------- cache


def _entry_files(base: Path) -> tuple[Path, Path]:
    # names like 10003_00_0.1s hold dots, so no with_suffix()
    return base.parent / (base.name + ".npy"), base.parent / (base.name + ".json")


class ArrayCache:
    """Decoded arrays on disk, memory-mapped when read; ``root=None`` decodes every time.

    Entries are keyed by the source's absolute path, size and modification time,
    and published by an atomic rename, so processes sharing the folder (DDP ranks,
    data-loader workers) never see half-written files.
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    def __repr__(self) -> str:
        return f"ArrayCache({str(self.root) if self.root else None!r})"

    def _key(self, path: Path, kind: str) -> Path | None:
        if self.root is None:
            return None
        st = path.stat()
        ident = f"{CACHE_VERSION}\0{kind}\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
        digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        return self.root / kind / f"{path.stem}-{digest}"

    def _load(self, base: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
        npy, meta = _entry_files(base)
        if not npy.is_file() or not meta.is_file():
            return None
        try:
            return np.load(npy, mmap_mode="r"), json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable cache entry (%s); decoding again", npy, exc)
            return None

    def _store(self, base: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
        base.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}-{os.urandom(4).hex()}"
        tmp_npy = base.parent / (base.name + tag + ".npy")
        tmp_meta = base.parent / (base.name + tag + ".json")
        try:
            np.save(tmp_npy, array, allow_pickle=False)
            tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
            # the .npy is what readers look for first, so it goes in last
            npy, meta_file = _entry_files(base)
            os.replace(tmp_meta, meta_file)
            os.replace(tmp_npy, npy)
        except OSError as exc:
            raise DatasetError(f"cannot write the cache ({exc.strerror or exc})", base.parent) from exc
        finally:
            for tmp in (tmp_npy, tmp_meta):
                if tmp.exists():
                    tmp.unlink()

    def _get(self, path: Path, kind: str, decode: Callable[[], Entry]) -> Entry:
        if kind == "image":
            if not path.is_file():
                raise DatasetError("no such file", path)
        else:
            check_input(path)
        base = self._key(path, kind)
        if base is not None:
            hit = self._load(base)
            if hit is not None:
                return hit
        array, meta = decode()
        if base is None:
            return array, meta
        meta = {**meta, "source": str(path.resolve())}
        self._store(base, array, meta)
        loaded = self._load(base)
        return loaded if loaded is not None else (array, meta)

    def ground_truth(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
        """(uint16 H x W x 3 as ``postprocess`` gives it, LibRaw flip) of a long exposure."""

        def decode() -> Entry:
            image, flip = decode_ground_truth(path)
            return image, {"flip": flip}

        array, meta = self._get(Path(path), "gt", decode)
        return array, int(meta["flip"])

    def frame(self, path: str | os.PathLike[str]) -> RawFrame:
        """A decoded RAW frame whose mosaic is memory-mapped from the cache (or freshly read)."""
        p = Path(path)
        if self.root is None:
            return read_raw(p)
        fresh: list[RawFrame] = []

        def decode() -> Entry:
            frame = read_raw(p)
            fresh.append(frame)
            meta = {
                "pattern": frame.pattern.tolist(),
                "sensor": frame.sensor,
                "black_levels": frame.black_levels.tolist(),
                "white_level": frame.white_level,
                "flip": frame.flip,
                "camera_wb": list(frame.camera_wb),
            }
            return frame.mosaic, meta

        mosaic, meta = self._get(p, "raw", decode)
        if fresh:
            return replace(fresh[0], mosaic=mosaic)
        return RawFrame(
            p,
            mosaic,
            np.array(meta["pattern"]),
            str(meta["sensor"]),
            np.array(meta["black_levels"], dtype=np.float32),
            int(meta["white_level"]),
            int(meta["flip"]),
            camera_wb=tuple(meta["camera_wb"]),  # type: ignore[arg-type]
        )

    def image(self, path: str | os.PathLike[str]) -> np.ndarray:
        """An sRGB source image, uint8 H x W x 3."""
        array, _ = self._get(Path(path), "image", lambda: (decode_image(path), {}))
        return array

    def prepare(
        self,
        paths: Sequence[Path],
        kind: str,
        *,
        shard: tuple[int, int] = (0, 1),
        progress: ProgressFn | None = None,
    ) -> None:
        """Decode this process's share (``shard`` = (index, count)) of ``paths`` into the cache ahead of use."""
        if self.root is None:
            return
        getter = {"gt": self.ground_truth, "raw": self.frame, "image": self.image}[kind]
        mine = list(paths)[shard[0] :: shard[1]]
        for done, path in enumerate(mine, 1):
            getter(path)
            if progress is not None:
                progress(done, len(mine))


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
    from .pipeline import sensor_area

    y0, x0, b, _ = sensor_geometry(frame)
    _, _, h, w = sensor_area(frame)
    sensor_gt = unorient(gt, gt_flip)
    # an odd Bayer side packs into a last, half-empty row or column that the target lacks
    ph = min(-(-h // b), (sensor_gt.shape[0] - y0) // b)
    pw = min(-(-w // b), (sensor_gt.shape[1] - x0) // b)
    return sensor_gt, ph, pw


def paired_patch(
    frame: RawFrame,
    gt: np.ndarray,
    gt_flip: int,
    ratio: float,
    patch: int,
    rng: np.random.Generator,
    *,
    augment_patch: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A training pair from a real dark frame: (C x P x P input, 3 x bP x bP target), float32.

    Input: the packed patch times ``ratio``, clipped at 1 (official train script).
    Target: the matching region of the postprocessed long exposure / 65535.
    """
    from .pipeline import pack

    y0, x0, b, align = sensor_geometry(frame)
    sensor_gt, ph, pw = _gt_window(gt, gt_flip, frame)
    size, py, px = _pick_window(rng, ph, pw, patch, align, frame.path)
    sub = crop_frame(frame, y0 + b * py, x0 + b * px, b * size, b * size)
    inp = amplify(pack(sub), ratio)
    target = np.asarray(
        sensor_gt[y0 + b * py : y0 + b * (py + size), x0 + b * px : x0 + b * (px + size)], dtype=np.float32
    ) / np.float32(65535.0)
    return _chw(*augment(inp, target, rng, augment_patch))


def _black_map(frame: RawFrame) -> np.ndarray:
    period = frame.pattern.shape[0]
    reps = (-(-frame.height // period), -(-frame.width // period))
    return np.tile(frame.black_levels.astype(np.float64), reps)[: frame.height, : frame.width]


def synthetic_raw_patch(
    frame: RawFrame,
    gt: np.ndarray,
    gt_flip: int,
    ratio: float,
    profile: NoiseProfile,
    patch: int,
    rng: np.random.Generator,
    *,
    augment_patch: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic pair from a clean (long-exposure) raw frame: its mosaic, darkened and noised."""
    from .pipeline import pack

    y0, x0, b, align = sensor_geometry(frame)
    sensor_gt, ph, pw = _gt_window(gt, gt_flip, frame)
    size, py, px = _pick_window(rng, ph, pw, patch, align, frame.path)
    sub = crop_frame(frame, y0 + b * py, x0 + b * px, b * size, b * size)
    black = _black_map(sub)
    clean = sub.mosaic.astype(np.float64) - black
    params = sample_params(profile, rng)
    noisy = add_noise(clean, ratio, params, rng, black_level=black, white_level=sub.white_level)
    inp = amplify(pack(replace(sub, mosaic=noisy)), ratio)
    target = np.asarray(
        sensor_gt[y0 + b * py : y0 + b * (py + size), x0 + b * px : x0 + b * (px + size)], dtype=np.float32
    ) / np.float32(65535.0)
    return _chw(*augment(inp, target, rng, augment_patch))


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
    from .packing import pack_bayer

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
    "ArrayCache",
    "DatasetError",
    "Pair",
    "augment",
    "crop_frame",
    "decode_ground_truth",
    "decode_image",
    "exposure_ratio",
    "find_sources",
    "group_by_reference",
    "is_image",
    "paired_patch",
    "parse_name",
    "ratio_label",
    "read_list",
    "sensor_geometry",
    "synthetic_raw_patch",
    "synthetic_srgb_patch",
    "unorient",
]
