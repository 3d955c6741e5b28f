"""Generate real RAW files (DNG) for the test-suite, so tests need no camera files.

The files are minimal but genuine DNGs that LibRaw (rawpy) opens: uncompressed 16-bit
data in IFD0, a CFA pattern or LinearRaw samples, black/white levels, a colour matrix,
the white balance and an Exif IFD with the usual shooting data.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from seedark.io.exif import CameraMetadata, exif_ifd
from seedark.io.tiff import Ifd, layout_tiff

# CFA pattern strings as colour indices (DNG CFAPattern: 0 red, 1 green, 2 blue).
CFA_PATTERNS: dict[str, tuple[int, int, int, int]] = {
    "RGGB": (0, 1, 1, 2),
    "BGGR": (2, 1, 1, 0),
    "GRBG": (1, 0, 2, 1),
    "GBRG": (1, 2, 0, 1),
}

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

# Adobe's D65 matrix (XYZ -> camera) for the Sony a7S / a7S II, as in dcraw's
# adobe_coeff table.
A7S2_COLOR_MATRIX = (0.5838, -0.1430, -0.0246, -0.3497, 1.1477, 0.2297, -0.0748, 0.1885, 0.5778)

Photometric = Literal["cfa", "linear", "mono"]

# DNG / TIFF tags written here.
_NEW_SUBFILE_TYPE = 254
_IMAGE_WIDTH = 256
_IMAGE_LENGTH = 257
_BITS_PER_SAMPLE = 258
_COMPRESSION = 259
_PHOTOMETRIC = 262
_MAKE = 271
_MODEL = 272
_STRIP_OFFSETS = 273
_ORIENTATION = 274
_SAMPLES_PER_PIXEL = 277
_ROWS_PER_STRIP = 278
_STRIP_BYTE_COUNTS = 279
_PLANAR_CONFIGURATION = 284
_SOFTWARE = 305
_DATETIME = 306
_CFA_REPEAT_PATTERN_DIM = 33421
_CFA_PATTERN = 33422
_EXIF_IFD = 34665
_DNG_VERSION = 50706
_DNG_BACKWARD_VERSION = 50707
_UNIQUE_CAMERA_MODEL = 50708
_CFA_PLANE_COLOR = 50710
_CFA_LAYOUT = 50711
_BLACK_LEVEL_REPEAT_DIM = 50713
_BLACK_LEVEL = 50714
_WHITE_LEVEL = 50717
_COLOR_MATRIX1 = 50721
_AS_SHOT_NEUTRAL = 50728
_CALIBRATION_ILLUMINANT1 = 50778

_PHOTOMETRIC_CFA = 32803
_PHOTOMETRIC_LINEAR_RAW = 34892
_D65 = 21
_STRIP_BYTES = 64 << 10


def cfa_array(cfa: str | np.ndarray) -> np.ndarray:
    """The CFA as a 2-D array of colour indices (0 R, 1 G, 2 B)."""
    if isinstance(cfa, str):
        try:
            return np.array(CFA_PATTERNS[cfa.upper()], dtype=np.uint8).reshape(2, 2)
        except KeyError:
            raise ValueError(f"unknown CFA {cfa!r}; use one of {sorted(CFA_PATTERNS)}") from None
    arr = np.asarray(cfa, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape not in ((2, 2), (6, 6)) or arr.max() > 2:
        raise ValueError("a CFA array must be 2x2 or 6x6 with values 0 (R), 1 (G), 2 (B)")
    return arr


def _fraction(value: float, den: int = 10000) -> tuple[int, int]:
    return round(value * den), den


def write_dng(
    path: str | os.PathLike[str],
    mosaic: np.ndarray,
    *,
    cfa: str | np.ndarray = "RGGB",
    black_level: int | Sequence[int] = 512,
    white_level: int = 16383,
    orientation: int = 1,
    make: str = "Sony",
    model: str = "ILCE-7SM2",
    exposure_time: float | None = 1 / 30,
    iso: int | None = 3200,
    f_number: float | None = 2.8,
    focal_length: float | None = 35.0,
    lens_model: str | None = "FE 35mm F2.8 ZA",
    datetime_original: str | None = "2026:11:25 21:30:00",
    as_shot_neutral: Sequence[float] = (0.5, 1.0, 0.7),
    color_matrix: Sequence[float] = A7S2_COLOR_MATRIX,
    photometric: Photometric = "cfa",
    strings: Mapping[int, bytes] | None = None,
) -> Path:
    """Write ``mosaic`` as an uncompressed DNG and return its path.

    ``photometric``: 'cfa' (mosaic HxW, colour filter ``cfa``: a pattern name or a
    2x2/6x6 array of colour indices 0 R, 1 G, 2 B); 'linear' (LinearRaw, HxWx3 RGB
    samples); 'mono' (LinearRaw, HxW, one sample). ``black_level`` is one value or
    four, one per 2x2 position in row-major order (BlackLevelRepeatDim 2x2; CFA only).
    ``orientation`` is the TIFF Orientation (1..8). ``strings``: ASCII tags put into
    IFD0 with exactly these bytes, replacing any written from the other arguments
    (hostile Make/Model/LensModel... for the sanitiser's tests).
    """
    data = np.asarray(mosaic)
    if data.dtype != np.uint16:
        raise ValueError(f"mosaic must be uint16, not {data.dtype}")
    if photometric == "linear":
        if data.ndim != 3 or data.shape[2] != 3:
            raise ValueError("a 'linear' DNG takes an HxWx3 array")
        samples = 3
    elif data.ndim == 2:
        samples = 1
    else:
        raise ValueError(f"a {photometric!r} DNG takes an HxW array")
    if not 1 <= orientation <= 8:
        raise ValueError("orientation must be 1..8")
    h, w = data.shape[:2]

    ifd = Ifd()
    ifd.long(_NEW_SUBFILE_TYPE, 0)  # the main (full-resolution raw) image
    ifd.long(_IMAGE_WIDTH, w)
    ifd.long(_IMAGE_LENGTH, h)
    ifd.short(_BITS_PER_SAMPLE, [16] * samples)
    ifd.short(_COMPRESSION, 1)
    ifd.short(_PHOTOMETRIC, _PHOTOMETRIC_CFA if photometric == "cfa" else _PHOTOMETRIC_LINEAR_RAW)
    ifd.ascii(_MAKE, make)
    ifd.ascii(_MODEL, model)
    ifd.short(_ORIENTATION, orientation)
    ifd.short(_SAMPLES_PER_PIXEL, samples)
    ifd.short(_PLANAR_CONFIGURATION, 1)
    ifd.ascii(_SOFTWARE, "seedark tests/rawgen.py")

    row_bytes = w * samples * 2
    rows_per_strip = max(1, min(h, _STRIP_BYTES // row_bytes))
    raw = np.ascontiguousarray(data, dtype="<u2").reshape(-1).view(np.uint8)
    flat = raw.data
    strip = rows_per_strip * row_bytes
    ifd.long(_ROWS_PER_STRIP, rows_per_strip)
    ifd.strips(_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, [flat[i : i + strip] for i in range(0, len(flat), strip)])

    if photometric == "cfa":
        pattern = cfa_array(cfa)
        ifd.short(_CFA_REPEAT_PATTERN_DIM, list(pattern.shape))
        ifd.byte(_CFA_PATTERN, pattern.reshape(-1).tolist())
        ifd.byte(_CFA_PLANE_COLOR, [0, 1, 2])
        ifd.short(_CFA_LAYOUT, 1)  # rectangular

    if isinstance(black_level, int):
        ifd.short(_BLACK_LEVEL_REPEAT_DIM, [1, 1])
        ifd.long(_BLACK_LEVEL, [black_level] * samples)
    else:
        levels = [int(v) for v in black_level]
        if len(levels) != 4 or photometric != "cfa":
            raise ValueError("per-position black levels need 4 values and a CFA image")
        ifd.short(_BLACK_LEVEL_REPEAT_DIM, [2, 2])
        ifd.long(_BLACK_LEVEL, levels)
    ifd.long(_WHITE_LEVEL, [white_level] * samples)

    ifd.byte(_DNG_VERSION, [1, 4, 0, 0])
    ifd.byte(_DNG_BACKWARD_VERSION, [1, 1, 0, 0])
    ifd.ascii(_UNIQUE_CAMERA_MODEL, f"{make} {model}")
    if photometric != "mono":
        if len(color_matrix) != 9 or len(as_shot_neutral) != 3:
            raise ValueError("color_matrix takes 9 values and as_shot_neutral 3")
        ifd.srational(_COLOR_MATRIX1, [_fraction(v) for v in color_matrix])
        ifd.rational(_AS_SHOT_NEUTRAL, [_fraction(v) for v in as_shot_neutral])
        ifd.short(_CALIBRATION_ILLUMINANT1, _D65)

    meta = CameraMetadata(
        make=make,
        model=model,
        lens_model=lens_model,
        exposure_time=exposure_time,
        f_number=f_number,
        iso=iso,
        focal_length=focal_length,
        datetime_original=datetime_original,
    )
    if datetime_original:
        ifd.ascii(_DATETIME, datetime_original)
    # A raw file has no output colour space, so no ColorSpace tag.
    ifd.sub_ifd(_EXIF_IFD, exif_ifd(meta, color_space=None))
    for tag, value in (strings or {}).items():
        ifd.ascii(tag, value)

    out = Path(path)
    with open(out, "wb") as fh:
        layout_tiff(ifd).write_to(fh)
    return out


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
