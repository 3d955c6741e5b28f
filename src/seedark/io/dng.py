"""Writing DNG files: a mosaic and its camera facts in the form every RAW reader knows.

``seedark demo`` writes its simulated dark frame through here, so the frame reaches
the network through the same decoder (LibRaw) as a camera's file; the test-suite's
RAW generator (tests/helpers/rawgen.py) builds its files with the same layout.

The files are minimal but genuine DNG 1.4: uncompressed 16-bit data in IFD0, a CFA
pattern or LinearRaw samples, black/white levels, a colour matrix, the white
balance and an Exif IFD with the usual shooting data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from seedark._files import ExistsError, atomic_output
from seedark.errors import OutputError
from seedark.io.exifwrite import add_carried_tags, exif_ifd
from seedark.io.metadata import CameraMetadata
from seedark.io.tiff import Ifd, TiffLayout, layout_tiff

# CFA pattern strings as colour indices (DNG CFAPattern: 0 red, 1 green, 2 blue).
CFA_PATTERNS: dict[str, tuple[int, int, int, int]] = {
    "RGGB": (0, 1, 1, 2),
    "BGGR": (2, 1, 1, 0),
    "GRBG": (1, 0, 2, 1),
    "GBRG": (1, 2, 0, 1),
}

# Adobe's D65 matrix (XYZ -> camera) for the Sony a7S / a7S II, as in dcraw's
# adobe_coeff table.
A7S2_COLOR_MATRIX = (0.5838, -0.1430, -0.0246, -0.3497, 1.1477, 0.2297, -0.0748, 0.1885, 0.5778)

Photometric = Literal["cfa", "linear", "mono"]

NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
MAKE = 271
MODEL = 272
STRIP_OFFSETS = 273
ORIENTATION = 274
SAMPLES_PER_PIXEL = 277
ROWS_PER_STRIP = 278
STRIP_BYTE_COUNTS = 279
PLANAR_CONFIGURATION = 284
SOFTWARE = 305
DATETIME = 306
CFA_REPEAT_PATTERN_DIM = 33421
CFA_PATTERN = 33422
EXIF_IFD = 34665
DNG_VERSION = 50706
DNG_BACKWARD_VERSION = 50707
UNIQUE_CAMERA_MODEL = 50708
CFA_PLANE_COLOR = 50710
CFA_LAYOUT = 50711
BLACK_LEVEL_REPEAT_DIM = 50713
BLACK_LEVEL = 50714
WHITE_LEVEL = 50717
COLOR_MATRIX1 = 50721
COLOR_MATRIX2 = 50722
AS_SHOT_NEUTRAL = 50728
CALIBRATION_ILLUMINANT1 = 50778
CALIBRATION_ILLUMINANT2 = 50779

_PHOTOMETRIC_CFA = 32803
_PHOTOMETRIC_LINEAR_RAW = 34892
D65 = 21
STANDARD_LIGHT_A = 17
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


def _samples_per_pixel(data: np.ndarray, photometric: Photometric) -> int:
    if data.dtype != np.uint16:
        raise ValueError(f"mosaic must be uint16, not {data.dtype}")
    if photometric == "linear":
        if data.ndim != 3 or data.shape[2] != 3:
            raise ValueError("a 'linear' DNG takes an HxWx3 array")
        return 3
    if data.ndim != 2:
        raise ValueError(f"a {photometric!r} DNG takes an HxW array")
    return 1


def _add_strips(ifd: Ifd, data: np.ndarray, samples: int) -> None:
    h, w = data.shape[:2]
    row_bytes = w * samples * 2
    rows_per_strip = max(1, min(h, _STRIP_BYTES // row_bytes))
    flat = np.ascontiguousarray(data, dtype="<u2").reshape(-1).view(np.uint8).data
    strip = rows_per_strip * row_bytes
    ifd.long(ROWS_PER_STRIP, rows_per_strip)
    ifd.strips(STRIP_OFFSETS, STRIP_BYTE_COUNTS, [flat[i : i + strip] for i in range(0, len(flat), strip)])


def _add_levels(ifd: Ifd, black_level: int | Sequence[int], white_level: int, samples: int, cfa: bool) -> None:
    if isinstance(black_level, (int, np.integer)):
        ifd.short(BLACK_LEVEL_REPEAT_DIM, [1, 1])
        ifd.long(BLACK_LEVEL, [int(black_level)] * samples)
    else:
        levels = [int(v) for v in black_level]
        if len(levels) != 4 or not cfa:
            raise ValueError("per-position black levels need 4 values and a CFA image")
        ifd.short(BLACK_LEVEL_REPEAT_DIM, [2, 2])
        ifd.long(BLACK_LEVEL, levels)
    ifd.long(WHITE_LEVEL, [white_level] * samples)


#: A DNG calibration: (CalibrationIlluminant, its 9-value ColorMatrix, XYZ -> camera).
Calibration = tuple[int, Sequence[float]]


def _add_colour(ifd: Ifd, calibrations: Sequence[Calibration], as_shot_neutral: Sequence[float]) -> None:
    if len(calibrations) > 2 or any(len(m) != 9 for _, m in calibrations) or len(as_shot_neutral) != 3:
        raise ValueError("up to two colour matrices of 9 values each, and as_shot_neutral 3")
    tags = ((COLOR_MATRIX1, CALIBRATION_ILLUMINANT1), (COLOR_MATRIX2, CALIBRATION_ILLUMINANT2))
    for (matrix_tag, light_tag), (illuminant, matrix) in zip(tags, calibrations, strict=False):
        ifd.srational(matrix_tag, [_fraction(v) for v in matrix])
        ifd.short(light_tag, illuminant)
    ifd.rational(AS_SHOT_NEUTRAL, [_fraction(v) for v in as_shot_neutral])


def dng_layout(
    mosaic: np.ndarray,
    *,
    cfa: str | np.ndarray = "RGGB",
    black_level: int | Sequence[int] = 512,
    white_level: int = 16383,
    orientation: int = 1,
    metadata: CameraMetadata | None = None,
    as_shot_neutral: Sequence[float] = (0.5, 1.0, 0.7),
    color_matrix: Sequence[float] | None = A7S2_COLOR_MATRIX,
    photometric: Photometric = "cfa",
    software: str = "seedark",
    illuminant: int = D65,
    color_matrix2: Calibration | None = None,
    strings: Mapping[int, bytes] | None = None,
) -> TiffLayout:
    """The DNG file of ``mosaic`` (uint16), ready to write.

    ``photometric``: 'cfa' (mosaic HxW, colour filter ``cfa``: a pattern name or a
    2x2/6x6 array of colour indices 0 R, 1 G, 2 B); 'linear' (LinearRaw, HxWx3 RGB
    samples); 'mono' (LinearRaw, HxW, one sample). ``black_level`` is one value or
    four, one per 2x2 position in row-major order (CFA only). ``orientation`` is the
    TIFF Orientation (1..8). ``color_matrix``: ColorMatrix1 (XYZ -> camera), calibrated
    under ``illuminant`` (an EXIF LightSource code, D65 = 21), None for no matrix at all;
    ``color_matrix2``: (illuminant, matrix) of a second one. ``metadata``: Make, Model and the Exif IFD. ``strings``:
    ASCII tags put into IFD0 with exactly these bytes, replacing any written from the
    other arguments (hostile names for the sanitiser's tests).
    """
    data = np.asarray(mosaic)
    samples = _samples_per_pixel(data, photometric)
    if not 1 <= orientation <= 8:
        raise ValueError("orientation must be 1..8")
    meta = metadata or CameraMetadata()
    make, model = meta.make or "", meta.model or ""
    ifd = Ifd()
    ifd.long(NEW_SUBFILE_TYPE, 0)  # the main (full-resolution raw) image
    ifd.long(IMAGE_WIDTH, data.shape[1])
    ifd.long(IMAGE_LENGTH, data.shape[0])
    ifd.short(BITS_PER_SAMPLE, [16] * samples)
    ifd.short(COMPRESSION, 1)
    ifd.short(PHOTOMETRIC, _PHOTOMETRIC_CFA if photometric == "cfa" else _PHOTOMETRIC_LINEAR_RAW)
    ifd.ascii(MAKE, make)
    ifd.ascii(MODEL, model)
    ifd.short(ORIENTATION, orientation)
    ifd.short(SAMPLES_PER_PIXEL, samples)
    ifd.short(PLANAR_CONFIGURATION, 1)
    ifd.ascii(SOFTWARE, software)
    _add_strips(ifd, data, samples)
    if photometric == "cfa":
        pattern = cfa_array(cfa)
        ifd.short(CFA_REPEAT_PATTERN_DIM, list(pattern.shape))
        ifd.byte(CFA_PATTERN, pattern.reshape(-1).tolist())
        ifd.byte(CFA_PLANE_COLOR, [0, 1, 2])
        ifd.short(CFA_LAYOUT, 1)  # rectangular
    _add_levels(ifd, black_level, white_level, samples, photometric == "cfa")
    ifd.byte(DNG_VERSION, [1, 4, 0, 0])
    ifd.byte(DNG_BACKWARD_VERSION, [1, 1, 0, 0])
    ifd.ascii(UNIQUE_CAMERA_MODEL, f"{make} {model}")
    if photometric != "mono":
        first = [] if color_matrix is None else [(illuminant, color_matrix)]
        _add_colour(ifd, first + ([color_matrix2] if color_matrix2 is not None else []), as_shot_neutral)
    if meta.datetime_original:
        ifd.ascii(DATETIME, meta.datetime_original)
    # A raw file has no output colour space, so no ColorSpace tag.
    ifd.sub_ifd(EXIF_IFD, exif_ifd(meta, color_space=None))
    add_carried_tags(ifd, meta)  # GPS, artist, copyright, XMP... when the metadata has them
    for tag, value in (strings or {}).items():
        ifd.ascii(tag, value)
    return layout_tiff(ifd)


def write_dng(
    path: str | os.PathLike[str],
    mosaic: np.ndarray,
    *,
    overwrite: bool = False,
    **fields: object,
) -> Path:
    """Write ``mosaic`` as a DNG file atomically (:func:`dng_layout` takes ``fields``); returns the path.

    Raises OutputError when it cannot be written, or exists and ``overwrite`` is not given.
    """
    final = Path(path)
    layout = dng_layout(mosaic, **fields)  # type: ignore[arg-type]
    try:
        with atomic_output(final, overwrite=overwrite) as fh:
            layout.write_to(fh)
    except ExistsError:
        raise OutputError("already exists (use --overwrite to replace it)", final) from None
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", final) from exc
    return final


__all__ = ["A7S2_COLOR_MATRIX", "CFA_PATTERNS", "D65", "STANDARD_LIGHT_A", "cfa_array", "dng_layout", "write_dng"]
