"""Your cameras' noise profiles, kept in the user cache by camera, and the check that files come
from one camera.

``seedark calibrate`` stores each profile it measures as
``<cache>/profiles/<camera>.json`` (the cache root of the models: ``$SEEDARK_HOME``,
else the user cache folder; ``<camera>`` is :func:`seedark.models.usermodels.camera_slug`,
e.g. ``nikon-d850``), and ``seedark finetune`` finds it there by the make and model of
the photos it is given. A newer calibration of a camera replaces the older one.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from seedark.config import cache_dir, cache_write_reason
from seedark.errors import CalibrationError
from seedark.models.usermodels import camera_key, camera_label, camera_slug
from seedark.synthesis.noiseprofile import NoiseProfile, load_profile, save_profile

PROFILES = "profiles"


def profiles_dir() -> Path:
    return cache_dir() / PROFILES


def profile_path(make: str | None, model: str | None) -> Path:
    """Where the profile of this camera is kept (whether or not it exists)."""
    return profiles_dir() / f"{camera_slug(make, model)}.json"


def store_profile(profile: NoiseProfile) -> Path:
    """Keep ``profile`` in the cache under its camera (atomically); returns where."""
    path = profile_path(profile.make, profile.model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_profile(profile, path)
    except OSError as exc:
        raise CalibrationError(cache_write_reason(exc), path) from exc


def stored_profile(make: str | None, model: str | None) -> tuple[NoiseProfile, Path] | None:
    """The cached profile of this camera and where it is, or None when it was never calibrated.
    A file of another camera under the same name (two names made alike) counts as none."""
    path = profile_path(make, model)
    if not path.is_file():
        return None
    profile = load_profile(path)
    if camera_key(profile.make, profile.model) != camera_key(make, model):
        return None
    return profile, path


def write_copy(profile: NoiseProfile, path: str | os.PathLike[str]) -> Path:
    """Also write ``profile`` to ``path`` (``-o``), atomically."""
    try:
        return save_profile(profile, path)
    except OSError as exc:
        raise CalibrationError(f"cannot write the profile ({exc.strerror or exc})", path) from exc


def one_camera(shots: Sequence[tuple[Path, str | None, str | None]]) -> tuple[str, str]:
    """The (make, model) that all ``(path, make, model)`` share; CalibrationError naming two
    cameras and a file of each otherwise, or the file that names no camera."""
    cameras: dict[str, list[Path]] = defaultdict(list)
    names: dict[str, tuple[str, str]] = {}
    for path, make, model in shots:
        if not (make or model):
            raise CalibrationError("no camera make or model in the file's metadata", path)
        key = camera_key(make, model)
        cameras[key].append(path)
        names.setdefault(key, (make or "", model or ""))
    if len(cameras) > 1:
        first, second = sorted(cameras, key=lambda k: len(cameras[k]), reverse=True)[:2]
        said = ", ".join(f"the {camera_label(*names[k])} ({cameras[k][0].name})" for k in (first, second))
        raise CalibrationError(f"files from more than one camera: {said}; use one camera's files at a time")
    return next(iter(names.values()))


__all__ = ["one_camera", "profile_path", "profiles_dir", "store_profile", "stored_profile", "write_copy"]
