"""Every ``SEEDARK_*`` environment variable, read at call time (so tests and callers can set them).

=================== ========================================================
``SEEDARK_HOME``    the cache root (models, converted engines); default:
                    the per-user cache folder (platformdirs)
``SEEDARK_MIRROR``  a base URL that replaces every model's default sources
``SEEDARK_OFFLINE`` ``1``/``true``/``yes``/``on``: never touch the network
``SEEDARK_ENGINE``  the back end ``--engine auto`` means: pytorch or openvino
=================== ========================================================
"""

from __future__ import annotations

import os
from pathlib import Path

HOME = "SEEDARK_HOME"
MIRROR = "SEEDARK_MIRROR"
OFFLINE = "SEEDARK_OFFLINE"
ENGINE = "SEEDARK_ENGINE"

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


def mirror() -> str | None:
    """``$SEEDARK_MIRROR`` without a trailing slash, or None."""
    return _get(MIRROR).rstrip("/") or None


def offline() -> bool:
    """True when ``SEEDARK_OFFLINE`` asks us never to touch the network."""
    return _get(OFFLINE).lower() in _TRUE


def engine() -> str:
    """The back end ``auto`` stands for (``$SEEDARK_ENGINE``, lower case), or ``auto``."""
    return _get(ENGINE).lower() or "auto"
