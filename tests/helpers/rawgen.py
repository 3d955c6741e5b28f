"""Generate real RAW files (DNG) for the test-suite, so tests need no camera files.

The files are minimal but genuine DNGs that LibRaw (rawpy) opens: uncompressed 16-bit
data in IFD0, a CFA pattern or LinearRaw samples, black/white levels, a colour matrix,
the white balance and an Exif IFD with the usual shooting data.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from seedark.io.dng import A7S2_COLOR_MATRIX, CFA_PATTERNS, D65, Calibration, Photometric, cfa_array, dng_layout
from seedark.io.metadata import CameraMetadata

# A Fujifilm X-Trans layout (6x6, colour indices as above).
XTRANS_PATTERN = np.array(
    [
        [1, 1, 0, 1, 1, 2],
        [1, 1, 2, 1, 1, 0],
        [2, 0, 1, 0, 2, 1],
        [1, 1, 2, 1, 1, 0],
        [1, 1, 0, 1, 1, 2],
        [0, 2, 1, 2, 0, 1],
    ],
    dtype=np.uint8,
)

# Adobe's D65 matrix (XYZ -> camera) of the Fujifilm X-T2, the camera of the official Fuji
# model: LibRaw's colour table (src/tables/colordata.cpp, "X-T2", the same for the X-T20).
XT2_COLOR_MATRIX = (1.1434, -0.4948, -0.1210, -0.3746, 1.2042, 0.1903, -0.0666, 0.1479, 0.5235)
#: write_dng's colour matrix when none is given: the camera of the model for that sensor.
DEFAULT_MATRIX = object()

# DNG / TIFF tags the crafted files below patch.
_IMAGE_WIDTH = 256
_IMAGE_LENGTH = 257
_STRIP_OFFSETS = 273
_ROWS_PER_STRIP = 278
_STRIP_BYTE_COUNTS = 279
_EXIF_IFD = 34665


#: The shot :func:`write_dng` records unless told otherwise: a Sony a7S II at night.
SAMPLE_METADATA = CameraMetadata(
    make="Sony",
    model="ILCE-7SM2",
    lens_model="FE 35mm F2.8 ZA",
    exposure_time=1 / 30,
    f_number=2.8,
    iso=3200,
    focal_length=35.0,
    datetime_original="2026:11:25 21:30:00",
)


def write_dng(
    path: str | os.PathLike[str],
    mosaic: np.ndarray,
    *,
    cfa: str | np.ndarray = "RGGB",
    black_level: int | Sequence[int] = 512,
    white_level: int = 16383,
    orientation: int = 1,
    as_shot_neutral: Sequence[float] = (0.5, 1.0, 0.7),
    color_matrix: Sequence[float] | object | None = DEFAULT_MATRIX,
    photometric: Photometric = "cfa",
    strings: Mapping[int, bytes] | None = None,
    illuminant: int = D65,
    color_matrix2: Calibration | None = None,
    **camera: Any,
) -> Path:
    """Write ``mosaic`` as an uncompressed DNG and return its path.

    ``photometric``: 'cfa' (mosaic HxW, colour filter ``cfa``: a pattern name or a
    2x2/6x6 array of colour indices 0 R, 1 G, 2 B); 'linear' (LinearRaw, HxWx3 RGB
    samples); 'mono' (LinearRaw, HxW, one sample). ``black_level`` is one value or
    four, one per 2x2 position in row-major order (BlackLevelRepeatDim 2x2; CFA only).
    ``orientation`` is the TIFF Orientation (1..8). ``strings``: ASCII tags put into
    IFD0 with exactly these bytes, replacing any written from the other arguments
    (hostile Make/Model/LensModel... for the sanitiser's tests). ``camera``: fields of
    :class:`CameraMetadata` in place of :data:`SAMPLE_METADATA`'s (``make``, ``iso``...,
    None to leave one out); among them ``tags``, more tags (GPS, Artist, Copyright,
    UserComment...) in IFD0, the Exif or the GPS IFD, and ``xmp``, an XMP packet written
    as it is into IFD0's tag 700. ``color_matrix``: ColorMatrix1 (XYZ -> camera) calibrated
    under ``illuminant`` (21 = D65); by default the camera of the model for the sensor (the
    a7S II's for Bayer, the X-T2's for X-Trans); None writes none. ``color_matrix2``:
    (illuminant, matrix) of a second one.
    """
    if color_matrix is DEFAULT_MATRIX:
        xtrans = photometric == "cfa" and not isinstance(cfa, str) and np.asarray(cfa).shape == (6, 6)
        color_matrix = XT2_COLOR_MATRIX if xtrans else A7S2_COLOR_MATRIX
    meta = replace(SAMPLE_METADATA, **{**camera, "tags": tuple(camera.get("tags", ()))})
    layout = dng_layout(
        mosaic,
        cfa=cfa,
        black_level=black_level,
        white_level=white_level,
        orientation=orientation,
        metadata=meta,
        as_shot_neutral=as_shot_neutral,
        color_matrix=color_matrix,  # type: ignore[arg-type]
        photometric=photometric,
        software="seedark tests/rawgen.py",
        strings=strings,
        illuminant=illuminant,
        color_matrix2=color_matrix2,
    )
    out = Path(path)
    with open(out, "wb") as fh:  # not atomic, unlike seedark.io.dng.write_dng: tests overwrite freely
        layout.write_to(fh)
    return out


def dark_dng(
    path: str | os.PathLike[str],
    rng: np.random.Generator,
    size: tuple[int, ...] = (40, 56),
    levels: tuple[int, int] = (520, 700),
    **fields: Any,
) -> Path:
    """A random mosaic of ``size`` (HxW; HxWx3 for LinearRaw) as a DNG at ``path``, its folder made.

    Its values are drawn from ``rng`` in [low, high) of ``levels``: by default a little above
    black (512), as in a dark shot. ``fields`` go to :func:`write_dng`.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_dng(out, rng.integers(*levels, size=size, dtype=np.uint16), **fields)


def dark_dngs(folder: str | os.PathLike[str], rng: np.random.Generator, names: Sequence[str], **fields: Any) -> Path:
    """One :func:`dark_dng` per name in ``folder``, in that order; returns the folder."""
    for name in names:
        dark_dng(Path(folder, name), rng, **fields)
    return Path(folder)


def quadrant_mosaic(h: int, w: int, levels: Sequence[int] = (1500, 4000, 8000, 14000)) -> np.ndarray:
    """A mosaic whose four quadrants (TL, TR, BL, BR) have clearly different levels.

    Quadrant edges fall on even rows/columns so every quadrant holds whole 2x2 cells.
    """
    if h % 4 or w % 4:
        raise ValueError("use sizes divisible by 4")
    out = np.empty((h, w), dtype=np.uint16)
    hh, hw = h // 2, w // 2
    out[:hh, :hw], out[:hh, hw:], out[hh:, :hw], out[hh:, hw:] = levels
    return out


# --------------------------------------------------------------------------- crafted files


@dataclass(frozen=True)
class IfdEntry:
    """One 12-byte entry of a little-endian TIFF, where it sits in the file and what it says."""

    at: int  # file offset of the entry
    tag: int
    type: int
    count: int
    value: int  # the 4-byte value/offset field as an unsigned little-endian number


def ifd_entries(data: bytes) -> dict[int, list[IfdEntry]]:
    """The entries of IFD0 and of its Exif IFD, keyed by each IFD's file offset.

    For the DNGs :func:`write_dng` makes (little-endian, as seedark's TIFF builder
    writes); tests patch or mutate these entries to make crafted files.
    """
    assert data[:4] == b"II*\0", "a little-endian TIFF"
    found: dict[int, list[IfdEntry]] = {}
    todo = [struct.unpack_from("<I", data, 4)[0]]
    while todo:
        start = todo.pop()
        (count,) = struct.unpack_from("<H", data, start)
        entries = [
            IfdEntry(start + 2 + 12 * i, *struct.unpack_from("<HHII", data, start + 2 + 12 * i)) for i in range(count)
        ]
        found[start] = entries
        todo += [e.value for e in entries if e.tag == _EXIF_IFD]
    return found


def patch_entry(data: bytearray, tag: int, value: int, *, type_: int = 4) -> None:
    """Set IFD0's ``tag`` to one number, in place (a LONG unless ``type_`` says otherwise)."""
    ifd0 = struct.unpack_from("<I", data, 4)[0]
    for entry in ifd_entries(bytes(data))[ifd0]:
        if entry.tag == tag:
            struct.pack_into("<HHII", data, entry.at, tag, type_, 1, value)
            return
    raise KeyError(f"tag {tag} is not in IFD0")


def write_huge_dng(path: str | os.PathLike[str], width: int, height: int) -> Path:
    """A DNG declaring ``width`` x ``height`` 16-bit pixels in one strip, as a sparse file:
    the size a crafted header can claim, at no cost on disk."""
    out = Path(path)
    write_dng(out, np.full((16, 16), 600, dtype=np.uint16))
    data = bytearray(out.read_bytes())
    for tag, value in ((_IMAGE_WIDTH, width), (_IMAGE_LENGTH, height), (_ROWS_PER_STRIP, height)):
        patch_entry(data, tag, value)
    patch_entry(data, _STRIP_BYTE_COUNTS, width * height * 2)
    (strip,) = [
        e.value for e in ifd_entries(bytes(data))[struct.unpack_from("<I", data, 4)[0]] if e.tag == _STRIP_OFFSETS
    ]
    out.write_bytes(data)
    os.truncate(out, strip + width * height * 2)
    return out


__all__ = [
    "A7S2_COLOR_MATRIX",
    "CFA_PATTERNS",
    "SAMPLE_METADATA",
    "XT2_COLOR_MATRIX",
    "XTRANS_PATTERN",
    "IfdEntry",
    "cfa_array",
    "dark_dng",
    "dark_dngs",
    "ifd_entries",
    "patch_entry",
    "quadrant_mosaic",
    "write_dng",
    "write_huge_dng",
]
