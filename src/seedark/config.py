"""Every ``SEEDARK_*`` environment variable, read at call time (so tests and callers can set them),
and the engine and precision names that they and the CLI's options accept (:data:`ENGINES`,
:data:`PRECISIONS`: here, where the CLI can read them without loading torch).

============================= ==============================================
``SEEDARK_HOME``              the cache root (models, converted engines);
                              default: the per-user cache folder (platformdirs)
``SEEDARK_MIRROR``            a base URL that replaces every model's sources
``SEEDARK_OFFLINE``           ``1``/``true``/``yes``/``on``: never touch the network
``SEEDARK_ENGINE``            the back end ``--engine auto`` means: pytorch or openvino
``SEEDARK_PRECISION``         the precision ``--precision auto`` means: fp32, bf16,
                              fp16 or int8 (default: bf16 on CPUs where it is
                              faster than fp32, fp32 elsewhere)
``SEEDARK_MAX_PIXELS``        the largest RAW image read, in pixels (``400000000``)
                              or megapixels (``400M``, ``400MP``); default 400 MP
``SEEDARK_MIN_DOWNLOAD_RATE`` the slowest download accepted, in bytes/s over a
                              minute (default 4096); ``0`` accepts any pace
``SEEDARK_RAY_CONNECT_TIMEOUT`` how long ``--cluster`` waits for the Ray head to
                              answer, in seconds (default 30)
============================= ==============================================
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from seedark.errors import UsageError

HOME = "SEEDARK_HOME"
MIRROR = "SEEDARK_MIRROR"
OFFLINE = "SEEDARK_OFFLINE"
ENGINE = "SEEDARK_ENGINE"
PRECISION = "SEEDARK_PRECISION"
MIN_DOWNLOAD_RATE = "SEEDARK_MIN_DOWNLOAD_RATE"
MAX_PIXELS = "SEEDARK_MAX_PIXELS"
RAY_CONNECT_TIMEOUT = "SEEDARK_RAY_CONNECT_TIMEOUT"

#: What ``--engine`` and ``$SEEDARK_ENGINE`` accept (the back ends, ``seedark.runtime.backends``).
ENGINES = ("auto", "pytorch", "openvino")
#: What ``--precision`` and ``$SEEDARK_PRECISION`` accept (``seedark.runtime.devices`` resolves them).
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")

#: Far above any camera sold today (about 150 MP for medium format), far below what a
#: crafted header can declare (a 30000x30000 file would take hours and gigabytes).
DEFAULT_MAX_PIXELS = 400_000_000

_TRUE = {"1", "true", "yes", "on"}


def _get(name: str) -> str:
    return os.environ.get(name, "").strip()


def cache_dir() -> Path:
    """Root of seedark's cache: ``$SEEDARK_HOME`` if set, else the user cache folder."""
    home = _get(HOME)
    if home:
        return Path(home).expanduser()
    import platformdirs  # only when needed: the CLI's start-up stays light

    return Path(platformdirs.user_cache_dir("seedark"))


def cache_write_reason(exc: OSError) -> str:
    """A reason a user can act on for a failed write into the cache (the fix is often another ``SEEDARK_HOME``)."""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "disk full: no space left to write the model (free some space, or set SEEDARK_HOME to another disk)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "cache folder is not writable (permission denied); set SEEDARK_HOME to a writable folder"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return "cannot create the cache folder: a file is in the way; set SEEDARK_HOME to a usable folder"
    return f"cannot write to the cache folder: {exc.strerror or exc}"


def mirror() -> str | None:
    """``$SEEDARK_MIRROR`` without a trailing slash, or None."""
    return _get(MIRROR).rstrip("/") or None


def offline() -> bool:
    """True when ``SEEDARK_OFFLINE`` asks us never to touch the network."""
    return _get(OFFLINE).lower() in _TRUE


def engine() -> str:
    """The back end ``auto`` stands for (``$SEEDARK_ENGINE``, lower case), or ``auto``."""
    return _get(ENGINE).lower() or "auto"


def precision() -> str:
    """The precision ``auto`` stands for (``$SEEDARK_PRECISION``, lower case), or ``auto``."""
    return _get(PRECISION).lower() or "auto"


def max_pixels() -> int:
    """The pixel limit for RAW images: ``$SEEDARK_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    text = _get(MAX_PIXELS)
    if not text:
        return DEFAULT_MAX_PIXELS
    number, scale = text.upper(), 1
    for suffix in ("MP", "M"):
        if number.endswith(suffix):
            number, scale = number[: -len(suffix)].strip(), 1_000_000
            break
    try:
        value = round(float(number) * scale)
    except (ValueError, OverflowError):
        value = 0
    if value <= 0:
        raise UsageError(f"{MAX_PIXELS}={text!r} is not a number of pixels (e.g. 400000000 or 400M)")
    return value


#: Any working link is faster; a server that trickles a byte every 20 s is far slower.
DEFAULT_MIN_DOWNLOAD_RATE = 4096.0


def min_download_rate() -> float:
    """The slowest download pace accepted, bytes/s: ``$SEEDARK_MIN_DOWNLOAD_RATE`` or the default; 0: any."""
    return _number(MIN_DOWNLOAD_RATE, DEFAULT_MIN_DOWNLOAD_RATE, "bytes per second (e.g. 4096, or 0)", zero=True)


#: A head that is up answers at once; one that is starting takes a few seconds. Ray itself retries
#: a dead address for about 14 minutes, without a word.
DEFAULT_RAY_CONNECT_TIMEOUT = 30.0


def ray_connect_timeout() -> float:
    """Seconds to wait for a Ray cluster's head: ``$SEEDARK_RAY_CONNECT_TIMEOUT`` or the default."""
    return _number(RAY_CONNECT_TIMEOUT, DEFAULT_RAY_CONNECT_TIMEOUT, "seconds (e.g. 30)", zero=False)


def _number(name: str, default: float, what: str, *, zero: bool) -> float:
    """A finite, positive number (or 0 where ``zero``) from ``$name``, else ``default``."""
    text = _get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not ((value >= 0 if zero else value > 0) and value < float("inf")):
        raise UsageError(f"{name}={text!r} is not a number of {what}")
    return value
