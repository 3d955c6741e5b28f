"""The enhanced image as a linear DNG: what a raw editor opens as a RAW file (``--format dng``).

The network's output is display-referred: SID's ground truth is LibRaw's default
rendering, whose transfer curve is BT.709's (``gamma_curve(0.45, 4.5)``: power 0.45,
slope 4.5 at the toe). A DNG holds scene-linear samples, so the curve is undone
exactly here, in float, from the network's float output (:func:`to_linear`), and the
result stored as 16-bit LinearRaw samples (PhotometricInterpretation 34892): three
samples a pixel, already demosaicked and white balanced.

The colour tags say that the "camera" is linear sRGB under D65: ColorMatrix1 is
XYZ -> linear sRGB (CalibrationIlluminant1 21, D65), ForwardMatrix1 linear sRGB ->
XYZ D50 (the Bradford-adapted sRGB matrix), AsShotNeutral 1, 1, 1 (the white balance
is applied), BaselineExposure 0. LibRaw then renders the file as seedark's own
TIFF (tests/test_dng_output.py); what other editors do is in docs/dng.md.

The samples are uncompressed: LibRaw (0.22) reads deflate-compressed DNGs only when
their samples are floating point, and 16-bit integers are what every reader takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seedark.io.dng import (
    AS_SHOT_NEUTRAL,
    BITS_PER_SAMPLE,
    BLACK_LEVEL,
    BLACK_LEVEL_REPEAT_DIM,
    CALIBRATION_ILLUMINANT1,
    COLOR_MATRIX1,
    COMPRESSION,
    DNG_BACKWARD_VERSION,
    DNG_VERSION,
    IMAGE_LENGTH,
    IMAGE_WIDTH,
    NEW_SUBFILE_TYPE,
    PHOTOMETRIC,
    PLANAR_CONFIGURATION,
    ROWS_PER_STRIP,
    SAMPLES_PER_PIXEL,
    UNIQUE_CAMERA_MODEL,
    WHITE_LEVEL,
)
from seedark.io.exifread import read_ifd0_text
from seedark.io.exifwrite import add_camera_tags, exif_ifd
from seedark.io.metadata import TAG_EXIF_IFD, TAG_XMP, CameraMetadata
from seedark.io.tiff import Ifd

PHOTOMETRIC_LINEAR_RAW = 34892
BASELINE_EXPOSURE = 50730
FORWARD_MATRIX1 = 50964
#: EXIF LightSource / DNG CalibrationIlluminant code of D65.
D65 = 21
#: A DNG holds 16-bit samples: 65535 is white (WhiteLevel), 0 black (BlackLevel).
WHITE = 65535

# --------------------------------------------------------------------------- the transfer curve

#: LibRaw's default output curve, ``gamma_curve(0.45, 4.5, ...)`` (dcraw's ``gamm``): below the
#: linear toe ``r < TOE`` it is ``4.5 * r``, above it ``(1 + OFFSET) * r ** 0.45 - OFFSET``. LibRaw
#: solves for the toe where line and power curve meet with the same slope (BT.709 rounds these to
#: 0.018 and 0.099); the values are what its bisection gives (g[3] and g[4] of ``gamm``).
POWER = 0.45
SLOPE = 4.5
TOE = 0.018053968510807452
OFFSET = 0.09929682680944099
#: The curve's value at the toe, where its inverse changes from a line to a power.
TOE_VALUE = SLOPE * TOE


def to_linear(encoded: np.ndarray) -> np.ndarray:
    """Linear light (float32) from values in [0, 1] encoded with LibRaw's default curve: its exact inverse."""
    v = np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)
    power = np.power((v + np.float32(OFFSET)) / np.float32(1 + OFFSET), np.float32(1 / POWER))
    return np.where(v < np.float32(TOE_VALUE), v / np.float32(SLOPE), power).astype(np.float32)


def linear_samples(block: np.ndarray) -> np.ndarray:
    """16-bit linear samples (little-endian) of a block of the output image.

    Float values are the network's output in [0, 1]; 16-bit integers are that output
    quantised already (read as ``value / 65535``). Rounded half up, like every output.
    """
    if np.issubdtype(block.dtype, np.floating):
        encoded = block
    elif block.dtype == np.uint16:
        encoded = block.astype(np.float32) / np.float32(WHITE)
    else:
        raise ValueError(f"a DNG is made from a float or uint16 image, not {block.dtype}")
    linear = to_linear(encoded) * np.float32(WHITE) + np.float32(0.5)
    np.floor(linear, out=linear)
    return np.clip(linear, 0, WHITE).astype("<u2")


# --------------------------------------------------------------------------- colour

#: Linear sRGB (D65) -> XYZ: LibRaw's (dcraw's) ``xyz_rgb``, the matrix it renders sRGB with.
SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
#: The DNG SDK's white points (dng_xy_coord D50 and D65) and the Bradford cone response (MapWhiteMatrix).
_D50_XY = (0.3457, 0.3585)
_D65_XY = (0.3127, 0.3290)
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
#: Denominator of the matrices' SRATIONALs: six decimals, finer than the four the SDK keeps, so
#: that LibRaw (which uses them as stored) turns XYZ back into the very sRGB it came from.
_DENOMINATOR = 1_000_000


def _xyz(xy: tuple[float, float]) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def color_matrix() -> np.ndarray:
    """ColorMatrix1: XYZ (D65) -> linear sRGB, scaled as the DNG SDK's NormalizeColorMatrix does
    (the D50 white, the SDK's PCS, maps to a neutral whose largest component is 1)."""
    m = np.linalg.inv(SRGB_TO_XYZ)
    return m / float(np.max(m @ _xyz(_D50_XY)))


def forward_matrix() -> np.ndarray:
    """ForwardMatrix1: white-balanced linear sRGB -> XYZ D50, by Bradford from D65, with rows scaled
    so that white (1, 1, 1) maps to the D50 white exactly (the SDK's NormalizeForwardMatrix)."""
    cone_ratio = (_BRADFORD @ _xyz(_D50_XY)) / (_BRADFORD @ _xyz(_D65_XY))
    adapted = np.linalg.inv(_BRADFORD) @ np.diag(cone_ratio) @ _BRADFORD @ SRGB_TO_XYZ
    return adapted * (_xyz(_D50_XY) / adapted.sum(axis=1))[:, None]


def _srationals(m: np.ndarray) -> list[tuple[int, int]]:
    return [(round(float(v) * _DENOMINATOR), _DENOMINATOR) for v in m.reshape(-1)]


# --------------------------------------------------------------------------- the directory


#: How UniqueCameraModel ends: the samples are seedark's rendering, not the sensor's.
RENDERING = "(seedark, linear sRGB)"


def rendering_name(metadata: CameraMetadata | None) -> str:
    """UniqueCameraModel: the camera and :data:`RENDERING` (``Sony ILCE-7SM2 (seedark, linear sRGB)``)."""
    make = (metadata.make if metadata else None) or ""
    model = (metadata.model if metadata else None) or ""
    camera = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    return f"{camera} {RENDERING}".strip()


def is_seedark_dng(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a linear DNG seedark wrote (its UniqueCameraModel says so): an output
    beside its RAW files, which a batch run again must not take for one of them."""
    return Path(path).suffix.lower() == ".dng" and (read_ifd0_text(path, UNIQUE_CAMERA_MODEL) or "").endswith(RENDERING)


def linear_dng_ifd(width: int, height: int, rows_per_strip: int, metadata: CameraMetadata | None, software: str) -> Ifd:
    """IFD0 of the linear DNG, less its strips: the image's layout, the DNG colour tags, and the
    shot's Make, Model, Exif, GPS and XMP (the same tags the TIFF output carries). Orientation is 1:
    the pixels are stored upright, as in every other output."""
    ifd = Ifd()
    ifd.long(NEW_SUBFILE_TYPE, 0)  # the main image
    ifd.long(IMAGE_WIDTH, width)
    ifd.long(IMAGE_LENGTH, height)
    ifd.short(BITS_PER_SAMPLE, [16] * 3)
    ifd.short(COMPRESSION, 1)
    ifd.short(PHOTOMETRIC, PHOTOMETRIC_LINEAR_RAW)
    ifd.short(SAMPLES_PER_PIXEL, 3)
    ifd.long(ROWS_PER_STRIP, rows_per_strip)
    ifd.short(PLANAR_CONFIGURATION, 1)
    add_camera_tags(ifd, metadata, software)
    # A raw file has no output colour space, so its Exif IFD has no ColorSpace tag.
    ifd.sub_ifd(TAG_EXIF_IFD, exif_ifd(metadata or CameraMetadata(), color_space=None))
    if metadata is not None and metadata.xmp:
        ifd.byte(TAG_XMP, metadata.xmp)  # type BYTE, as the XMP specification says
    ifd.byte(DNG_VERSION, [1, 4, 0, 0])
    ifd.byte(DNG_BACKWARD_VERSION, [1, 1, 0, 0])  # LinearRaw and every tag here but ForwardMatrix1 are DNG 1.0/1.1
    ifd.ascii(UNIQUE_CAMERA_MODEL, rendering_name(metadata))
    ifd.short(BLACK_LEVEL_REPEAT_DIM, [1, 1])
    ifd.long(BLACK_LEVEL, [0, 0, 0])
    ifd.long(WHITE_LEVEL, [WHITE] * 3)
    ifd.srational(COLOR_MATRIX1, _srationals(color_matrix()))
    ifd.short(CALIBRATION_ILLUMINANT1, D65)
    ifd.srational(FORWARD_MATRIX1, _srationals(forward_matrix()))
    ifd.rational(AS_SHOT_NEUTRAL, [(1, 1)] * 3)  # white balance already applied
    ifd.srational(BASELINE_EXPOSURE, [(0, 1)])
    return ifd


__all__ = [
    "OFFSET",
    "PHOTOMETRIC_LINEAR_RAW",
    "POWER",
    "SLOPE",
    "TOE",
    "color_matrix",
    "forward_matrix",
    "is_seedark_dng",
    "linear_dng_ifd",
    "linear_samples",
    "rendering_name",
    "to_linear",
]
