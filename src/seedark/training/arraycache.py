"""Decoded images on disk: the official ground truth, sRGB sources and RAW mosaics.

The official training script keeps every decoded image in RAM (64 GB for the Sony
set); here each is decoded once into a ``.npy`` file under a cache folder and
memory-mapped, so a patch reads only its own rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from seedark._files import atomic_output, write_atomic
from seedark.errors import DatasetError, RawReadError
from seedark.io.raw import RawFrame, check_input, read_raw
from seedark.progress import ProgressFn

log = logging.getLogger("seedark")

#: Bumped when the cached arrays change meaning, so old entries are not reused.
CACHE_VERSION = "1"

#: A cached array and the facts stored with it.
Entry = tuple[np.ndarray, dict[str, Any]]


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

    def _load(self, base: Path) -> Entry | None:
        npy, meta = _entry_files(base)
        if not npy.is_file() or not meta.is_file():
            return None
        try:
            return np.load(npy, mmap_mode="r"), json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable cache entry (%s); decoding again", npy, exc)
            return None

    def _store(self, base: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
        npy, meta_file = _entry_files(base)
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            # the .npy is what readers look for first, so it goes in last
            write_atomic(meta_file, json.dumps(meta))
            with atomic_output(npy) as fh:
                np.save(fh, array, allow_pickle=False)
        except OSError as exc:
            raise DatasetError(f"cannot write the cache ({exc.strerror or exc})", base.parent) from exc

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


__all__ = ["ArrayCache", "decode_ground_truth", "decode_image"]
