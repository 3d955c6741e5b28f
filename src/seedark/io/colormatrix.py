"""A RAW file's colour matrix: how its camera records colours, as XYZ (D65) -> camera RGB.

The matrix is in the Adobe DNG convention (the ``ColorMatrix`` tags, dcraw's and
LibRaw's ``adobe_coeff`` table): camera RGB = M · XYZ, for XYZ under D65. Where it
comes from, first found wins:

1. a DNG's own ``ColorMatrix1``/``ColorMatrix2`` tags: the one whose
   ``CalibrationIlluminant`` is D65 (21) where two are given, else the one whose
   illuminant's colour temperature is nearest D65's; read here with seedark's
   bounds-checked TIFF reader (:mod:`seedark.io.exifread`), since LibRaw reports zeros for
   DNGs of cameras outside its table;
2. LibRaw's table, by make and model (rawpy's ``rgb_xyz_matrix``, first 3 rows): every
   other RAW format, and DNGs without usable tags.

Files come from anywhere, so a matrix is only used when it is plausible: finite, of a
sane size, invertible, and seeing D65 white as positive in every channel. Anything
else reads as "no matrix known" (None), never as an error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from seedark.io.exifread import _Entry, _open_tiff, _Reader, _Tiff
from seedark.io.metadata import KIND_SRAT

#: CIE XYZ of the D65 white point (Y = 1).
D65_WHITE = (0.95047, 1.0, 1.08883)

TAG_DNG_VERSION = 50706
TAG_COLOR_MATRIX = (50721, 50722)
TAG_CALIBRATION_ILLUMINANT = (50778, 50779)
D65 = 21

#: Colour temperatures (K) of the EXIF LightSource codes a CalibrationIlluminant can name
#: (the values the DNG SDK uses), to pick the matrix nearest D65 when neither is D65.
ILLUMINANT_KELVIN = {
    1: 5500,  # daylight
    2: 4200,  # fluorescent
    3: 2850,  # tungsten
    4: 5500,  # flash
    9: 5500,  # fine weather
    10: 6500,  # cloudy
    11: 7500,  # shade
    12: 6400,  # daylight fluorescent
    13: 5000,  # day white fluorescent
    14: 4150,  # cool white fluorescent
    15: 3450,  # white fluorescent
    16: 2940,  # warm white fluorescent
    17: 2856,  # standard light A
    18: 4874,  # standard light B
    19: 6774,  # standard light C
    20: 5503,  # D55
    21: 6504,  # D65
    22: 7504,  # D75
    23: 5003,  # D50
    24: 3200,  # ISO studio tungsten
}

#: Adobe's matrices hold values of a few units; far larger ones are not a camera's.
_MAX_ENTRY = 100.0
#: Beyond this condition number the inverse (the map's other half) is mostly rounding.
_MAX_CONDITION = 1e4


@dataclass(frozen=True)
class ColorMatrix:
    """A camera's XYZ (D65) -> camera RGB matrix, row-major, and where it was found."""

    matrix: tuple[float, ...]  # 9 values
    source: str  # e.g. "DNG ColorMatrix2 (D65)", "LibRaw's table (by make and model)"


def plausible(values: Sequence[float]) -> bool:
    """Whether 9 numbers can be a camera's XYZ -> camera matrix (see the module's docstring)."""
    if len(values) != 9 or not all(isinstance(v, float | int) and math.isfinite(v) for v in values):
        return False
    m = np.asarray(values, dtype=np.float64).reshape(3, 3)
    if np.abs(m).max() > _MAX_ENTRY or np.linalg.cond(m) > _MAX_CONDITION:
        return False
    return bool((m @ np.asarray(D65_WHITE) > 0).all())


def _nearest_d65(found: list[tuple[int, int | None, tuple[float, ...]]]) -> tuple[int, int | None, tuple[float, ...]]:
    """Of (index, illuminant, matrix) entries, the one calibrated nearest D65 (D65 itself first)."""

    def distance(entry: tuple[int, int | None, tuple[float, ...]]) -> float:
        kelvin = ILLUMINANT_KELVIN.get(entry[1]) if entry[1] is not None else None
        # in mireds, as colour temperatures are compared; an unknown illuminant comes last
        return math.inf if kelvin is None else abs(1e6 / kelvin - 1e6 / ILLUMINANT_KELVIN[D65])

    return min(found, key=lambda e: (distance(e), e[0]))


def _describe(index: int, illuminant: int | None, among: int) -> str:
    if illuminant == D65:
        return f"DNG ColorMatrix{index} (D65)"
    light = f"illuminant {illuminant if illuminant is not None else 'unknown'}"
    return f"DNG ColorMatrix{index} ({light}{', the nearest to D65' if among > 1 else ''})"


def _dng_tags(tiff: _Tiff) -> list[tuple[int, int | None, tuple[float, ...]]]:
    """(index, illuminant, matrix) of IFD0's plausible ColorMatrix tags; none unless the file is a DNG."""
    head = tiff.r.read(4, 4)
    if head is None:
        return []
    ifd0, _ = tiff.read_ifd(tiff.u32(head))
    if TAG_DNG_VERSION not in ifd0:
        return []
    found = []
    for index, (tag, light_tag) in enumerate(zip(TAG_COLOR_MATRIX, TAG_CALIBRATION_ILLUMINANT, strict=True), 1):
        values = _srationals(tiff, ifd0.get(tag))
        if values is not None and plausible(values):
            light = tiff.number(ifd0.get(light_tag))
            found.append((index, None if light is None else int(light), values))
    return found


def _srationals(tiff: _Tiff, entry: _Entry | None) -> tuple[float, ...] | None:
    """The 9 signed fractions of a 3-colour ColorMatrix entry; None for any other type, count or a 0 denominator."""
    if entry is None or entry.count != 9:
        return None
    pairs = tiff.carried(entry, KIND_SRAT, 9)  # checks the type (SRATIONAL) and that the values lie in the file
    if not isinstance(pairs, tuple) or len(pairs) != 9:
        return None
    values = []
    for pair in pairs:
        if not isinstance(pair, tuple) or pair[1] == 0:
            return None
        values.append(pair[0] / pair[1])
    return tuple(values)


def dng_color_matrix(source: str | os.PathLike[str] | BinaryIO) -> ColorMatrix | None:
    """The DNG's own matrix for D65 (see the module's docstring), from a path or a file open for
    binary reading; None for other files, or none usable. Never raises: a file that cannot be
    parsed has no matrix here.
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                found = _read_dng_tags(fh)
        else:
            found = _read_dng_tags(source)
    except Exception:  # a safety net, as for the rest of the metadata: the reader bounds-checks everything
        return None
    if not found:
        return None
    index, light, values = _nearest_d65(found)
    return ColorMatrix(values, _describe(index, light, len(found)))


def _read_dng_tags(fh: BinaryIO) -> list[tuple[int, int | None, tuple[float, ...]]]:
    size = fh.seek(0, os.SEEK_END)
    tiff = _open_tiff(_Reader(fh, 0, size))
    return _dng_tags(tiff) if tiff is not None else []


def libraw_color_matrix(rgb_xyz: object) -> ColorMatrix | None:
    """LibRaw's matrix for the file's make and model (rawpy's ``rgb_xyz_matrix``); None when
    LibRaw has none (zeros) or it is not plausible."""
    try:
        m = np.asarray(rgb_xyz, dtype=np.float64)[:3, :3]
    except (TypeError, ValueError, IndexError):
        return None
    if m.shape != (3, 3):
        return None
    values = tuple(float(v) for v in m.ravel())
    return ColorMatrix(values, "LibRaw's table (by make and model)") if plausible(values) else None


def file_color_matrix(source: str | os.PathLike[str] | BinaryIO, rgb_xyz: object) -> ColorMatrix | None:
    """The file's matrix: its DNG tags (``source``: its path, or the file open), else LibRaw's
    table (``rgb_xyz``: rawpy's ``rgb_xyz_matrix``); None when neither has a usable one."""
    return dng_color_matrix(source) or libraw_color_matrix(rgb_xyz)


__all__ = [
    "D65",
    "D65_WHITE",
    "ILLUMINANT_KELVIN",
    "ColorMatrix",
    "dng_color_matrix",
    "file_color_matrix",
    "libraw_color_matrix",
    "plausible",
]
