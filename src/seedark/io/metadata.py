"""The camera metadata model: what a RAW file says about the shot, made safe once.

:class:`CameraMetadata` holds the named fields seedark uses (make, model, lens,
exposure, ISO, focal length, capture time), the tags carried into outputs as they are
(:class:`ExifTag`, chosen by the table :data:`CARRIED`: the shooting data, GPS,
copyright, artist, lens, time zone, serial numbers...) and the XMP packet. The values
come from files anyone can write, so they are made safe here, once, for every
consumer: strings without escape sequences or control characters
(:mod:`seedark.io.text`), numbers within what a camera can record.

The EXIF tag numbers and the carried tags' kinds live here because both sides use
them: :mod:`seedark.io.exifread` reads them from RAW files, :mod:`seedark.io.exifwrite`
writes them into outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seedark.io.text import clean_text

# TIFF / EXIF tags seedark reads or writes by name.
TAG_MAKE = 271
TAG_MODEL = 272
TAG_ORIENTATION = 274
TAG_SOFTWARE = 305
TAG_DATETIME = 306
TAG_EXIF_IFD = 34665
TAG_EXPOSURE_TIME = 33434
TAG_F_NUMBER = 33437
TAG_ISO = 34855
TAG_ISO_SPEED = 34867
TAG_RECOMMENDED_EXPOSURE_INDEX = 34866
TAG_EXIF_VERSION = 36864
TAG_DATETIME_ORIGINAL = 36867
TAG_FOCAL_LENGTH = 37386
TAG_FLASHPIX_VERSION = 40960
TAG_COMPONENTS = 37121
TAG_COLOR_SPACE = 40961
TAG_PIXEL_X = 40962
TAG_PIXEL_Y = 40963
TAG_LENS_MODEL = 42036
TAG_BODY_SERIAL = 42033
TAG_GPS_IFD = 34853
TAG_XMP = 700
TAG_DNG_CAMERA_SERIAL = 50735
# Panasonic RW2 keeps the ISO in its own IFD0 tag.
TAG_RW2_ISO = 23


# --------------------------------------------------------------------------- carried tags

#: The IFDs a carried tag can live in.
IFD0, EXIF, GPS = "ifd0", "exif", "gps"

#: How a carried tag's value is read and written: ASCII text; opaque UNDEFINED bytes
#: (version numbers, codes); UNDEFINED text behind an 8-byte character-set code
#: (UserComment); integers of any integer type (kept); unsigned or signed fractions.
KIND_ASCII, KIND_BYTES, KIND_TEXT, KIND_INT, KIND_RAT, KIND_SRAT = "ascii", "bytes", "text", "int", "rat", "srat"

#: The TIFF types an integer tag may have (BYTE, SHORT, LONG and their signed twins).
INT_TYPES = frozenset({1, 3, 4, 6, 8, 9})
#: The TIFF types each kind is read from; a tag of another type is not carried.
KIND_TYPES = {KIND_ASCII: {2}, KIND_BYTES: {7}, KIND_TEXT: {7}, KIND_INT: INT_TYPES, KIND_RAT: {5}, KIND_SRAT: {10}}


def _table(kind: str, count: int, *tags: int) -> dict[int, tuple[str, int]]:
    return {tag: (kind, count) for tag in tags}


#: Tags copied from the RAW into outputs: (IFD, tag) -> (kind, most values). Left out on
#: purpose: the image structure, maker notes, thumbnails and previews (their pointers
#: would dangle), the Interoperability IFD, pixel coordinates of the RAW (SubjectArea,
#: SubjectLocation), the CFA pattern, Gamma, compression data, and byte-order-dependent
#: structures (OECF, SpatialFrequencyResponse, DeviceSettingDescription). Make, Model,
#: LensModel, ExposureTime, FNumber, ISO, FocalLength and DateTimeOriginal are the
#: named fields of :class:`CameraMetadata`, written from there.
CARRIED: dict[tuple[str, int], tuple[str, int]] = {
    **{(IFD0, t): v for t, v in _table(KIND_ASCII, 1, 270, 315, 33432).items()},  # description, artist, copyright
    **{(IFD0, t): v for t, v in _table(KIND_INT, 1, 18246, 18249).items()},  # Rating, RatingPercent
    **{
        (EXIF, t): v
        for t, v in {
            **_table(KIND_INT, 1, 34850, 34864, 34865, 34866, 34867, 34868, 34869, 37383, 37384, 37385),
            **_table(KIND_INT, 1, 41488, 41495, 41985, 41986, 41987, 41989, 41990, 41991, 41992, 41993),
            **_table(KIND_INT, 1, 41994, 41996, 42080),
            **_table(KIND_ASCII, 1, 34852, 36868, 36880, 36881, 36882, 37520, 37521, 37522),
            **_table(KIND_ASCII, 1, 42016, 42032, 42033, 42035, 42037),
            **_table(KIND_BYTES, 4, 36864, 40960),  # ExifVersion, FlashpixVersion
            **_table(KIND_BYTES, 1, 41728, 41729),  # FileSource, SceneType
            **_table(KIND_TEXT, 1, 37510),  # UserComment
            **_table(KIND_RAT, 1, 37378, 37381, 37382, 37889, 37890, 41483, 41486, 41487, 41493, 41988),
            **_table(KIND_RAT, 3, 37892),  # Acceleration
            **_table(KIND_RAT, 4, 42034),  # LensSpecification
            **_table(KIND_SRAT, 1, 37377, 37379, 37380, 37888, 37891, 37893),
        }.items()
    },
    **{
        (GPS, t): v
        for t, v in {
            **_table(KIND_INT, 4, 0),  # GPSVersionID
            **_table(KIND_INT, 1, 5, 30),  # AltitudeRef, Differential
            **_table(KIND_ASCII, 1, 1, 3, 8, 9, 10, 12, 14, 16, 18, 19, 21, 23, 25, 29),
            **_table(KIND_RAT, 3, 2, 4, 7, 20, 22),  # latitudes, longitudes, time stamp
            **_table(KIND_RAT, 1, 6, 11, 13, 15, 17, 24, 26, 31),
            **_table(KIND_TEXT, 1, 27, 28),  # ProcessingMethod, AreaInformation
        }.items()
    },
}

#: Largest carried text; a few KiB is far more than any catalogue writes.
MAX_CARRIED_TEXT = 4096
#: The 8-byte character-set codes of UserComment-like tags.
CHARSET_ASCII = b"ASCII\0\0\0"
CHARSET_UNICODE = b"UNICODE\0"

#: A carried tag's value: text, opaque bytes, integers, or (numerator, denominator) pairs.
TagValue = str | bytes | tuple[int, ...] | tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ExifTag:
    """One tag copied from the RAW into outputs (see :data:`CARRIED`).

    Text is clean (:func:`seedark.io.text.clean_text`) but may hold any Unicode: the
    writer makes ASCII tags 7-bit and writes UserComment as UCS-2 when it needs to.
    """

    ifd: str
    tag: int
    type: int
    value: TagValue


@dataclass(frozen=True)
class CameraMetadata:
    """What the camera recorded about a shot; None wherever it is unknown.

    ``tags`` and ``xmp`` are carried to outputs as they are; two records of one shot
    compare equal by the named fields alone.
    """

    make: str | None = None
    model: str | None = None
    lens_model: str | None = None
    exposure_time: float | None = None  # seconds
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None  # millimetres
    datetime_original: str | None = None  # "YYYY:MM:DD HH:MM:SS"
    tags: tuple[ExifTag, ...] = field(default=(), compare=False, repr=False)
    #: A cleaned XMP packet (:func:`seedark.io.xmp.clean_xmp`), UTF-8.
    xmp: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The values come from files anyone can write, through our reader or LibRaw.
        # Checked once here, every consumer (the terminal through `info`, the EXIF of
        # outputs) gets text without escape sequences or control characters...
        for name in ("make", "model", "lens_model", "datetime_original"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, clean_text(value) or None)
        # ...and numbers a camera could record: a crafted 1e-313 s exposure makes 1/x
        # overflow when it is printed or written back as a rational.
        for name in ("exposure_time", "f_number", "focal_length", "iso"):
            object.__setattr__(self, name, _plausible(getattr(self, name)))
        if self.iso is not None:
            object.__setattr__(self, "iso", round(self.iso))


#: Far beyond what any camera records (exposures of nanoseconds or decades, ISO 10^9).
_PLAUSIBLE = (1e-9, 1e9)


def _plausible(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or not _PLAUSIBLE[0] <= value <= _PLAUSIBLE[1]:
        return None
    return value
