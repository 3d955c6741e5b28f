"""Reading camera RAW files through LibRaw (rawpy) into a :class:`RawFrame`.

Everything the later stages need is copied out of LibRaw here, so the file is
closed before any heavy work starts: the visible mosaic, its colour-filter
pattern, black/white levels, the rotation flag and the camera's metadata.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from seedark import config
from seedark._parallel import capture_c_stderr
from seedark.errors import RawReadError, UnsupportedSensorError
from seedark.io.colormatrix import ColorMatrix, file_color_matrix
from seedark.io.exifread import read_open_metadata
from seedark.io.metadata import CameraMetadata

#: Extensions of RAW formats LibRaw reads; used to find files in folders.
RAW_EXTENSIONS = frozenset(
    [
        ".arw",
        ".srf",
        ".sr2",
        ".dng",
        ".nef",
        ".nrw",
        ".cr2",
        ".cr3",
        ".crw",
        ".orf",
        ".rw2",
        ".raf",
        ".pef",
        ".ptx",
        ".srw",
        ".x3f",
        ".3fr",
        ".fff",
        ".iiq",
        ".mef",
        ".mos",
        ".mrw",
        ".erf",
        ".kdc",
        ".dcr",
        ".rwl",
        ".raw",
        ".gpr",
    ]
)


@dataclass
class RawFrame:
    """A decoded RAW file: the sensor mosaic and how to interpret it."""

    path: Path
    mosaic: np.ndarray  # uint16 H x W, LibRaw's raw_image_visible
    pattern: np.ndarray  # colour letters of the repeating CFA tile at the visible origin
    sensor: str  # "bayer" or "xtrans"
    black_levels: np.ndarray  # float32, per pattern position (same shape as pattern)
    white_level: int
    flip: int  # LibRaw's orientation bitmask (0 none, 3 180 deg, 5 90 ccw, 6 90 cw)
    camera: CameraMetadata = field(default_factory=CameraMetadata)
    #: As-shot white balance multipliers (R, G, B), green = 1; for previews only.
    camera_wb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: How the camera records colours (XYZ D65 -> camera, seedark.io.colormatrix); None if unknown.
    color_matrix: ColorMatrix | None = None

    @property
    def height(self) -> int:
        return int(self.mosaic.shape[0])

    @property
    def width(self) -> int:
        return int(self.mosaic.shape[1])

    @property
    def cfa_string(self) -> str:
        """Pattern as text, e.g. ``RGGB`` or six rows of six letters for X-Trans."""
        return (
            "/".join("".join(row) for row in self.pattern)
            if self.pattern.shape[0] > 2
            else "".join(self.pattern.ravel())
        )


#: LibRaw reads a 64-byte header before it can tell any format: a shorter file is never a RAW file.
MIN_RAW_SIZE = 64

# Files that are not regular files, named for the message; none is ever opened (a FIFO would block).
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _stat_failure(p: Path, exc: OSError) -> str:
    """Why ``os.stat`` could not reach the file, in the user's terms."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT and p.is_symlink():
        return "broken symbolic link (what it points to does not exist)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read: {exc.strerror or exc}"


def check_input(p: Path) -> None:
    """Fail fast, with a clear reason, on paths that cannot be a RAW file (without opening them)."""
    try:
        st = os.stat(p)
    except OSError as exc:
        raise RawReadError(_stat_failure(p, exc), p) from exc
    if stat.S_ISDIR(st.st_mode):
        raise RawReadError("is a folder, not a RAW file", p)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "a special file")
        raise RawReadError(f"not a regular file ({kind}), so not a RAW file", p)
    if st.st_size == 0:
        raise RawReadError("file is empty", p)
    if st.st_size < MIN_RAW_SIZE:
        raise RawReadError(f"not a RAW file: {st.st_size} bytes is too small to be one", p)
    if not os.access(p, os.R_OK):
        raise RawReadError("permission denied", p)


def _decode(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _letters(color_desc: bytes, colors: np.ndarray) -> np.ndarray:
    desc = color_desc.decode("ascii", "replace")
    return np.vectorize(lambda i: desc[i] if 0 <= i < len(desc) else "?")(colors)


def _classify(raw: object, p: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Return (sensor, letter pattern, colour-index pattern) or raise for unusable sensors."""
    import rawpy

    if raw.raw_type != rawpy.RawType.Flat:  # type: ignore[attr-defined]
        raise UnsupportedSensorError(
            "linear (already demosaiced) RAW data; the SID models need the sensor's colour mosaic", p
        )
    if raw.num_colors < 3:  # type: ignore[attr-defined]
        raise UnsupportedSensorError("monochrome sensor; the SID models need a colour mosaic", p)
    try:
        colors = np.asarray(raw.raw_colors_visible)  # type: ignore[attr-defined]
    except NotImplementedError as exc:  # rawpy has no pattern for LibRaw's `filters` code
        raise UnsupportedSensorError(f"colour filter array of a kind rawpy cannot describe ({exc})", p) from exc
    desc = bytes(raw.color_desc)  # type: ignore[attr-defined]
    if not desc.startswith(b"RGB"):
        raise UnsupportedSensorError(f"colour filters {desc.decode('ascii', 'replace')} are not RGB", p)
    for period, sensor in ((2, "bayer"), (6, "xtrans")):
        if colors.shape[0] < period or colors.shape[1] < period:
            continue
        tile = colors[:period, :period]
        h = colors.shape[0] // period * period
        w = colors.shape[1] // period * period
        # A checked subsample keeps this cheap on 60 MP frames while catching 4x4 or 8x2 CFAs.
        view = colors[:h, :w].reshape(h // period, period, w // period, period)[::7, :, ::7, :]
        if (view == tile[None, :, None, :]).all():
            letters = _letters(desc, tile)
            counts = {c: int((letters == c).sum()) for c in "RGB"}
            if sensor == "bayer" and counts == {"R": 1, "G": 2, "B": 1}:
                return sensor, letters, tile
            if sensor == "xtrans" and counts == {"R": 8, "G": 20, "B": 8}:
                return sensor, letters, tile
    raise UnsupportedSensorError("colour filter array is neither a 2x2 Bayer nor a 6x6 X-Trans pattern", p)


def _capture_time(ts: object) -> str | None:
    """LibRaw's capture time as EXIF text. A file without one reads as Unix time 0, which rawpy
    turns into 1970-01-01 in local time: that (or anything before it) means unknown."""
    if not isinstance(ts, datetime.datetime):
        return None
    try:
        if ts.timestamp() <= 0:
            return None
    except (OverflowError, OSError, ValueError):  # before what the platform's time functions handle
        return None
    return ts.strftime("%Y:%m:%d %H:%M:%S")


def _merge_metadata(exif: CameraMetadata, raw: object) -> CameraMetadata:
    """EXIF parsed from the file wins; LibRaw fills what it could not find (e.g. CR3)."""
    try:
        other = raw.other  # type: ignore[attr-defined]
    except (OverflowError, OSError, ValueError):
        # rawpy converts the capture time with datetime.fromtimestamp, which a crafted
        # date outside the platform's range makes raise: the time is then unknown.
        other = None
    lens = raw.lens  # type: ignore[attr-defined]
    stamp = _capture_time(getattr(other, "timestamp", None))

    def pick(a: object, b: object) -> object:
        return a if a not in (None, "", 0) else (b or None)

    return CameraMetadata(
        make=pick(exif.make, None),  # type: ignore[arg-type]
        model=pick(exif.model, None),  # type: ignore[arg-type]
        lens_model=pick(exif.lens_model, getattr(lens, "model", None)),  # type: ignore[arg-type]
        exposure_time=pick(exif.exposure_time, getattr(other, "shutter_speed", None)),  # type: ignore[arg-type]
        f_number=pick(exif.f_number, getattr(other, "aperture", None)),  # type: ignore[arg-type]
        iso=pick(exif.iso, getattr(other, "iso_speed", None)),  # type: ignore[arg-type]
        focal_length=pick(exif.focal_length, getattr(other, "focal_length", None)),  # type: ignore[arg-type]
        datetime_original=pick(exif.datetime_original, stamp),  # type: ignore[arg-type]
        # LibRaw has no say in these: they are copied to outputs as the file (or its sidecar) holds them.
        tags=exif.tags,
        xmp=exif.xmp,
    )


def read_raw(
    path: str | os.PathLike[str], *, sensors: tuple[str, ...] = ("bayer", "xtrans"), max_pixels: int | None = None
) -> RawFrame:
    """Decode a RAW file; raise RawReadError / UnsupportedSensorError naming the file.

    ``max_pixels``: the largest image accepted (default ``config.max_pixels()``,
    ``$SEEDARK_MAX_PIXELS`` or 400 MP), checked from the header before any pixel is read.
    """
    p = Path(path)
    check_input(p)
    return decode_raw(p, sensors=sensors, max_pixels=max_pixels)


def _fits_libraw_path(p: Path) -> bool:
    """Whether LibRaw's ``open_file`` can take this name: rawpy encodes it as UTF-8, so a
    name whose bytes are not UTF-8 (kept by Python as surrogates) cannot reach it."""
    if sys.platform == "win32":  # rawpy passes wide characters there
        return True
    try:
        return str(p).encode("utf-8") == os.fsencode(p)
    except UnicodeEncodeError:
        return False


#: Where an open file can be named by its descriptor (Linux; elsewhere a buffer is used).
_FD_DIR = Path("/proc/self/fd")


@contextlib.contextmanager
def _open_libraw(p: Path) -> Iterator[tuple[Any, BinaryIO]]:
    """LibRaw on ``p``, and the one open file it reads, whatever bytes its name is made of.

    The file is opened once, here, and LibRaw and the metadata reader both read that
    open file: LibRaw through ``/proc/self/fd/N`` (an ASCII name for the same file,
    whatever its own name), so a file swapped for another between two opens cannot mix
    one file's pixels with another's metadata. Without ``/proc``: by name when LibRaw can
    take the name, else as a buffer, which holds all of the file in memory until the
    pixels are unpacked (the pixel limit still applies first).
    """
    import rawpy

    with open(p, "rb") as fh:
        by_fd = _FD_DIR / str(fh.fileno())
        source: str | BinaryIO = str(by_fd) if by_fd.exists() else str(p) if _fits_libraw_path(p) else fh
        with rawpy.imread(source) as raw:
            yield raw, fh


def _check_size(raw: Any, p: Path, max_pixels: int | None) -> None:
    """Refuse an image larger than the limit, from the header LibRaw has parsed; nothing
    is allocated for the pixels until they are unpacked, so a crafted size costs nothing."""
    limit = config.max_pixels() if max_pixels is None else max_pixels
    sizes = raw.sizes
    pixels = int(sizes.raw_width) * int(sizes.raw_height)
    if pixels > limit:
        raise RawReadError(
            f"image too large: {pixels / 1e6:.4g} MP (limit {limit / 1e6:.4g} MP; set {config.MAX_PIXELS} to raise it)",
            p,
        )


def decode_raw(p: Path, *, sensors: tuple[str, ...] = ("bayer", "xtrans"), max_pixels: int | None = None) -> RawFrame:
    """:func:`read_raw` for a path that :func:`check_input` has passed already."""
    import rawpy

    said: list[str] = []
    try:
        with capture_c_stderr(said), _open_libraw(p) as (raw, fh):
            _check_size(raw, p, max_pixels)
            sensor, letters, tile = _classify(raw, p)
            if sensor not in sensors:
                raise UnsupportedSensorError(f"{sensor} sensor is not supported here", p)
            mosaic = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
            per_color = np.asarray(raw.black_level_per_channel, dtype=np.float32)
            black = per_color[np.clip(tile, 0, len(per_color) - 1)]
            white = int(raw.white_level)
            flip = int(raw.sizes.flip)
            camera = _merge_metadata(read_open_metadata(fh, p), raw)
            camera_wb = _white_balance(raw)
            color = file_color_matrix(fh, getattr(raw, "rgb_xyz_matrix", None))
    except (UnsupportedSensorError, RawReadError):
        raise
    except rawpy.LibRawFileUnsupportedError as exc:
        raise RawReadError("not a RAW file LibRaw can read (unknown or unsupported format)", p) from exc
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
        detail = "; ".join(said) or _decode(exc)
        raise RawReadError(f"truncated or corrupt RAW file ({detail})", p) from exc
    except rawpy.LibRawError as exc:
        raise RawReadError(f"LibRaw could not decode this file ({type(exc).__name__}: {_decode(exc)})", p) from exc
    except OSError as exc:
        raise RawReadError(f"cannot read: {exc.strerror or exc}", p) from exc
    if mosaic.ndim != 2 or min(mosaic.shape) < 2:
        raise RawReadError(f"image area {mosaic.shape} is too small", p)
    if white <= float(black.max()):
        raise RawReadError(f"white level {white} is not above the black level {float(black.max()):g}", p)
    return RawFrame(p, mosaic, letters, sensor, black, white, flip, camera, camera_wb, color)


def _white_balance(raw: object) -> tuple[float, float, float]:
    try:
        wb = [float(v) for v in raw.camera_whitebalance[:3]]  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return (1.0, 1.0, 1.0)
    if wb[1] <= 0 or not all(np.isfinite(wb)) or min(wb) <= 0:
        return (1.0, 1.0, 1.0)
    return (wb[0] / wb[1], 1.0, wb[2] / wb[1])
