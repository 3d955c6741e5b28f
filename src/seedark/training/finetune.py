"""``seedark finetune``: a model of your own camera, fine-tuned from a base model on your photos.

LED (Jin et al., ICCV 2023) fine-tunes a pretrained denoiser for a new camera in minutes
from a few pairs; ELD (Wei et al., CVPR 2020) shows that pairs made with a camera's
calibrated noise come close to real ones. Here the pairs are made from your own
well-exposed RAW photos:

* target: the photo as the SID ground truth is rendered (``rawpy.postprocess(
  use_camera_wb=True, half_size=False, no_auto_bright=True, output_bps=16)``);
* input: the same RAW darkened by a ratio drawn as the SID set's are (100, 250, 300),
  with the noise ``seedark calibrate`` measured at one of the camera's ISOs added in
  the camera's own raw values, then its colours matched to the base model's camera as
  ``enhance`` matches them (docs/cameras.md);
* real dark/bright pairs (``--pairs``), when given, mixed in (LED's recipe).

The run is ``seedark train``'s loop (seedark.training.loop: resume, progress, a
checkpoint after every pass over the photos, so Ctrl-C loses at most one), with the
settings of :func:`finetune_config`. The result is installed in the model cache and
listed for the camera (seedark.models.cache.register_user_model), so ``enhance`` and
``batch`` use it for that camera's files.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seedark.config import cache_dir
from seedark.errors import DatasetError, UsageError
from seedark.frames.sensormatch import sensor_transform
from seedark.io.exifread import read_camera_metadata
from seedark.io.raw import read_raw
from seedark.models.cache import check_user_model_name, load_model, register_user_model
from seedark.models.registry import ModelCamera, camera_metadata, model_camera
from seedark.models.usermodels import UserModel, camera_key, camera_label, camera_slug
from seedark.models.weights import load_weights
from seedark.progress import ProgressFn
from seedark.synthesis.noiseprofile import NoiseProfile, load_profile
from seedark.training import cameraprofiles
from seedark.training.config import FINETUNE_PATCH, FINETUNE_STEPS, TrainConfig
from seedark.training.dataset import find_sources, is_image, read_pair_folders
from seedark.training.loop import TrainResult, TrainStatus, train

log = logging.getLogger("seedark")

#: The SID set's amplification ratios, which its dark inputs were shot at.
SID_RATIOS = (100.0, 250.0, 300.0)
#: Adam's learning rate, dropped tenfold for the last fifth of the run.
FINETUNE_LR = 1e-4


@dataclass(frozen=True)
class FinetuneResult:
    name: str
    model: Path  # the installed weights
    run: Path  # the run folder (checkpoints, logs)
    record: UserModel
    train: TrainResult


def photos_of(folder: str | os.PathLike[str]) -> list[Path]:
    """Your RAW photos in a folder (and its subfolders); sRGB images are refused: the pairs are
    made in the camera's own raw values."""
    found = find_sources(folder)
    images = [p for p in found if is_image(p)]
    if images:
        raise DatasetError(
            f"finetune takes your camera's RAW files, and {images[0].name} is an image; keep only RAW files here",
            folder,
        )
    return found


def _camera(photos: list[Path], pairs: list[Path]) -> tuple[str, str]:
    shots = []
    for path in [*photos, *pairs]:
        meta = read_camera_metadata(path)
        shots.append((path, meta.make, meta.model))
    return cameraprofiles.one_camera(shots)


def _profile(given: str | os.PathLike[str] | None, make: str, model: str) -> tuple[NoiseProfile, Path]:
    """The profile to train with: ``given``, else the one ``seedark calibrate`` keeps for the camera."""
    label = camera_label(make, model)
    if given is None:
        stored = cameraprofiles.stored_profile(make, model)
        if stored is None:
            how = "run `seedark calibrate DARKS --flats FLATS` with its frames first (docs/calibrate.md)"
            raise UsageError(f"no noise profile for the {label}: {how}, or give --profile")
        return stored
    path = Path(given)
    profile = load_profile(path)
    if (profile.make or profile.model) and camera_key(profile.make, profile.model) != camera_key(make, model):
        theirs = camera_label(profile.make, profile.model)
        raise UsageError(f"this noise profile is of the {theirs}, and the photos are from the {label}", path)
    return profile, path.resolve()


def colour_match(base: str, photo: Path, enabled: bool) -> tuple[tuple[float, ...] | None, ModelCamera | None]:
    """(T, the base model's camera): the map of the photos' colours to the camera the base model
    learnt (seedark.frames.sensormatch), as ``enhance`` will map this camera's files, and the
    camera the fine-tuned model then says it learnt. T is None where nothing is mapped: matching
    off (and then no camera either, so ``enhance`` does not map the files), the base's camera or
    the photos' matrix unknown, or the photos from the base's own camera."""
    camera = model_camera(load_model(base).metadata) if enabled else None
    if camera is None:
        if enabled:
            log.info("colours not matched: the %s model does not say which camera it learnt", base)
        return None, None
    frame = read_raw(photo)
    label = camera_label(frame.camera.make, frame.camera.model)
    if frame.color_matrix is None:
        log.info("colours of the %s not matched: no colour matrix is known for it", label)
        return None, camera
    transform = sensor_transform(frame.color_matrix, camera)
    if transform is not None:
        log.info("colours of the %s matched to the %s model's camera (%s)", label, base, camera.name)
    return (None if transform is None else tuple(float(v) for v in transform.ravel())), camera


def finetune_config(
    run: Path,
    photos: Path,
    profile: NoiseProfile,
    *,
    base: str,
    items: int,
    steps: int,
    **settings: Any,
) -> TrainConfig:
    """The training run: ``steps`` rounded up to whole passes over the ``items`` (photos and real
    scenes), Adam at :data:`FINETUNE_LR` dropped tenfold after four fifths, a checkpoint after
    every pass, no validation; ``settings``: more TrainConfig fields (pairs, patch, device...)."""
    epochs = max(1, math.ceil(steps / items))
    return TrainConfig(
        out=run,
        synthetic=photos,
        noise_profile=profile,
        per_iso_noise=bool(profile.per_iso),
        ratios=SID_RATIOS,
        init_model=base,
        epochs=epochs,
        lr=FINETUNE_LR,
        lr_drop_epoch=max(1, round(0.8 * epochs)),
        lr_after_drop=FINETUNE_LR / 10,
        save_every=1,
        keep=2,
        keep_every=0,
        val_every=0,
        log_every=max(1, epochs // 10),
        cache_inputs=True,
        **settings,
    )


def finetune(
    photos: str | os.PathLike[str],
    *,
    profile: str | os.PathLike[str] | None = None,
    base: str = "sony",
    pairs: str | os.PathLike[str] | None = None,
    steps: int = FINETUNE_STEPS,
    name: str | None = None,
    out: str | os.PathLike[str] | None = None,
    match_sensor: bool = True,
    progress: Callable[[TrainStatus], None] | None = None,
    cache_progress: ProgressFn | None = None,
    **settings: Any,
) -> FinetuneResult:
    """Fine-tune ``base`` for the camera of ``photos`` and register it for that camera (see the
    module docstring). ``match_sensor``: the inputs' colours matched to the base model's camera
    (:func:`colour_match`). ``settings``: TrainConfig fields (``patch``, ``device``,
    ``workers``, ``seed``, ``resume``...)."""
    if steps < 1:
        raise UsageError(f"steps must be at least 1, got {steps}")
    settings.setdefault("patch", FINETUNE_PATCH)
    settings.setdefault("workers", 0)
    folder = Path(photos)
    sources = photos_of(folder)
    real = read_pair_folders(pairs) if pairs is not None else []
    make, model = _camera(sources, [p.short for p in real] + [p.long for p in real])
    noise, profile_path = _profile(profile, make, model)
    name = name or camera_slug(make, model)
    check_user_model_name(name)  # before any work
    run = Path(out) if out is not None else cache_dir() / "finetune" / name
    items = len(sources) + len({p.long for p in real})
    match, camera = colour_match(base, sources[0], match_sensor)
    pair_folder = Path(pairs) if pairs is not None else None
    config = finetune_config(
        run, folder, noise, base=base, items=items, steps=steps, pairs=pair_folder, sensor_match=match, **settings
    )
    scenes = f" and {items - len(sources)} real scene(s)" if real else ""
    log.info("fine-tuning %s for the %s on %d photo(s)%s", base, camera_label(make, model), len(sources), scenes)
    result = train(config, progress=progress, cache_progress=cache_progress)
    assert result.model is not None  # a single process is rank 0
    weights = load_weights(result.model)
    if camera is not None:  # its inputs were matched to this camera's colours, as enhance's will be
        weights.metadata.update(camera_metadata(camera))
    record = UserModel(
        name=name,
        make=make,
        model=model,
        packing=weights.spec.packing,
        base=base,
        profile=str(profile_path),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        summary=_summary(result, config, len(sources), len(real)),
    )
    origin = {"description": f"fine-tuned for the {record.camera} from {base}", "base": base, "run": str(run)}
    installed = register_user_model(record, weights, {**origin, "verified": False})
    # The decoded photos (about 190 MB a 24 MP photo) only serve a run still going; the
    # checkpoints stay, so `--resume --steps MORE` continues (decoding the photos again).
    shutil.rmtree(config.cache_root, ignore_errors=True)
    return FinetuneResult(name, installed, run, record, result)


def _summary(result: TrainResult, config: TrainConfig, photos: int, pairs: int) -> dict[str, Any]:
    """What ``seedark models list`` shows of the run."""
    last = result.history[-1] if result.history else {}
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "photos": photos,
        "pairs": pairs,
        "patch": config.patch,
        "seconds": round(sum(float(h.get("seconds", 0.0)) for h in result.history), 1),
        "loss": last.get("loss"),
        "profile": config.noise_profile.name,
        "sensor_match": config.sensor_match is not None,
    }


__all__ = ["SID_RATIOS", "FinetuneResult", "colour_match", "finetune", "finetune_config", "photos_of"]
