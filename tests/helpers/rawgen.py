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

import numpy as np

from seedark.io.dng import A7S2_COLOR_MATRIX, CFA_PATTERNS, Photometric, cfa_array, dng_layout
from seedark.io.metadata import CameraMetadata, ExifTag

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

# DNG / TIFF tags the crafted files below patch.
_IMAGE_WIDTH = 256
_IMAGE_LENGTH = 257
_STRIP_OFFSETS = 273
_ROWS_PER_STRIP = 278
_STRIP_BYTE_COUNTS = 279
_EXIF_IFD = 34665


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
    tags: Sequence[ExifTag] = (),
    xmp: bytes | None = None,
) -> Path:
    """Write ``mosaic`` as an uncompressed DNG and return its path.

    ``photometric``: 'cfa' (mosaic HxW, colour filter ``cfa``: a pattern name or a
    2x2/6x6 array of colour indices 0 R, 1 G, 2 B); 'linear' (LinearRaw, HxWx3 RGB
    samples); 'mono' (LinearRaw, HxW, one sample). ``black_level`` is one value or
    four, one per 2x2 position in row-major order (BlackLevelRepeatDim 2x2; CFA only).
    ``orientation`` is the TIFF Orientation (1..8). ``strings``: ASCII tags put into
    IFD0 with exactly these bytes, replacing any written from the other arguments
    (hostile Make/Model/LensModel... for the sanitiser's tests). ``tags``: more tags
    (GPS, Artist, Copyright, UserComment...) in IFD0, the Exif or the GPS IFD; ``xmp``:
    an XMP packet written as it is into IFD0's tag 700.
    """
    meta = CameraMetadata(
        make=make,
        model=model,
        lens_model=lens_model,
        exposure_time=exposure_time,
        f_number=f_number,
        iso=iso,
        focal_length=focal_length,
        datetime_original=datetime_original,
        tags=tuple(tags),
        xmp=xmp,
    )
    layout = dng_layout(
        mosaic,
        cfa=cfa,
        black_level=black_level,
        white_level=white_level,
        orientation=orientation,
        metadata=meta,
        as_shot_neutral=as_shot_neutral,
        color_matrix=color_matrix,
        photometric=photometric,
        software="seedark tests/rawgen.py",
        strings=strings,
    )
    out = Path(path)
    with open(out, "wb") as fh:  # not atomic, unlike seedark.io.dng.write_dng: tests overwrite freely
        layout.write_to(fh)
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


__all__ = [
    "A7S2_COLOR_MATRIX",
    "CFA_PATTERNS",
    "XTRANS_PATTERN",
    "IfdEntry",
    "cfa_array",
    "ifd_entries",
    "patch_entry",
    "quadrant_mosaic",
    "write_dng",
    "write_huge_dng",
]
