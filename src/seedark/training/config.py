"""What a training run depends on: :class:`TrainConfig`, which is also the ``seedark train`` command.

The fields with help text are the command's options (seedark.cli.training builds
them from this class), so an option's name, help and default are written once,
here. Free of NumPy and torch, so the command line starts fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seedark.errors import UsageError
from seedark.synthesis.noiseprofile import SONY_A7S2, NoiseProfile

#: ``seedark finetune``'s default schedule: optimiser steps (within 30 minutes for 20 photos on a
#: 2-core CPU) and the patch side in packed pixels (the paper's 512 costs four times as much a step).
FINETUNE_STEPS = 600
FINETUNE_PATCH = 256


def _cli(help: str, **option: Any) -> dict[str, Any]:
    """Field metadata that makes the field a ``seedark train`` option.

    ``help`` is the option's help text; ``flag`` names the option where it is not
    ``--<field-name>``; ``min`` bounds an integer. A switch that is on by default
    is the option ``--no-<field-name>``, and its help says what turning it off does.
    """
    return {"help": help, **option}


@dataclass
class TrainConfig:
    """Everything a run depends on; the defaults are the paper's (official train_Sony.py)."""

    out: Path = field(metadata=_cli("Run folder: checkpoints, logs, cache, model.safetensors."))
    train_list: Path | None = field(
        default=None,
        metadata=_cli(
            "Training list, e.g. Sony_train_list.txt (looked up in --data too); this or --synthetic is required.",
            flag="--list",
        ),
    )
    data_root: Path | None = field(
        default=None,
        metadata=_cli("Dataset folder the lists' paths are relative to (default: each list's folder).", flag="--data"),
    )
    val_list: Path | None = field(
        default=None,
        metadata=_cli(
            "Validation list scored every --val-every epochs, e.g. Sony_val_list.txt (default: none, no validation)."
        ),
    )
    synthetic: Path | None = field(
        default=None,
        metadata=_cli(
            "Instead of --list: make pairs from the clean RAW files / sRGB images in this folder (default: none)."
        ),
    )
    noise_profile: NoiseProfile = field(
        default=SONY_A7S2, metadata=_cli("Noise calibration JSON for --synthetic (default: Sony a7S II, ELD).")
    )
    ratio_min: float = field(default=100.0, metadata=_cli("Smallest synthetic amplification ratio."))
    ratio_max: float = field(default=300.0, metadata=_cli("Largest synthetic amplification ratio."))
    epochs: int = field(default=4000, metadata=_cli("Epochs (each visits every reference once)."))
    lr: float = field(default=1e-4, metadata=_cli("Adam learning rate."))
    lr_drop_epoch: int = field(default=2000, metadata=_cli("Epochs after this one use --lr-after-drop (0: never)."))
    lr_after_drop: float = field(default=1e-5, metadata=_cli("Learning rate after --lr-drop-epoch."))
    patch: int = field(default=512, metadata=_cli("Patch side in packed pixels (the target is 2x or 3x)."))
    width: int | None = field(
        default=None, metadata=_cli("Channels of the first level (default 32, or the starting weights').")
    )
    augment: bool = field(default=True, metadata=_cli("No random flips and transpose."))
    save_every: int = field(default=10, metadata=_cli("Write a checkpoint every N epochs."))
    keep: int = field(default=2, metadata=_cli("Checkpoints kept (0: all); see --keep-every."))
    keep_every: int = field(default=500, metadata=_cli("Also keep checkpoints at multiples of N epochs (0: none)."))
    val_every: int = field(default=100, metadata=_cli("Validate every N epochs (0: never)."))
    val_limit: int | None = field(
        default=None, metadata=_cli("Validate on the first N pairs of --val-list only (default: all).", min=1)
    )
    #: How validation tiles the image (``seedark.runtime.engine.parse_tile``); not a command-line option.
    val_tile: str = "auto"
    log_every: int = field(default=10, metadata=_cli("Log the loss every N epochs."))
    seed: int = field(default=0, metadata=_cli("Seed of the initial weights, data order and patches."))
    device: str = field(
        default="auto", metadata=_cli("auto, cpu, cuda, cuda:N or mps (torchrun: one GPU per process).")
    )
    workers: int = field(default=4, metadata=_cli("Data-loading processes per training process."))
    cache_dir: Path | None = field(default=None, metadata=_cli("Decoded-image cache (default: <out>/cache)."))
    cache_inputs: bool = field(
        default=False, metadata=_cli("Also cache the dark RAW mosaics (faster epochs, ~2x the dataset on disk).")
    )
    init_weights: Path | None = field(
        default=None,
        metadata=_cli("Fine-tune: start from these weights (default: none, random initial weights).", flag="--weights"),
    )
    init_model: str | None = field(
        default=None,
        metadata=_cli(
            "Fine-tune: start from this cached model, e.g. sony (default: none, random initial weights).",
            flag="--model",
        ),
    )
    resume: bool = field(default=False, metadata=_cli("Continue the run in --out from its latest checkpoint."))
    resume_from: Path | None = field(
        default=None,
        metadata=_cli("Continue from this checkpoint folder (default: none; --resume takes the latest in --out)."),
    )
    deterministic: bool = field(
        default=False, metadata=_cli("Deterministic GPU kernels (slower), for bit-exact resumes on GPUs.")
    )
    # `seedark finetune`'s recipe (seedark.training.finetune), not options of `seedark train`:
    #: Each synthetic pair's ratio drawn from these (the SID set's 100, 250, 300); empty: uniform
    #: in [ratio_min, ratio_max].
    ratios: tuple[float, ...] = ()
    #: Synthetic noise drawn from the profile's measured ISOs (its per_iso), not from its fits.
    per_iso_noise: bool = False
    #: The 3 x 3 map (9 values, row-major) of the inputs' colours to the model's camera, applied
    #: before amplification as `enhance` does (seedark.frames.sensormatch); None: not mapped.
    sensor_match: tuple[float, ...] | None = None
    #: Real pairs mixed in with the synthetic ones: a folder of scene folders
    #: (seedark.training.dataset.read_pair_folders).
    pairs: Path | None = None

    def check(self) -> None:
        """Refuse settings that cannot work, before anything is read or written."""
        if (self.train_list is None) == (self.synthetic is None):
            raise UsageError("give either a training list (--list) or a folder of clean images (--synthetic)")
        counts = {"epochs": self.epochs, "patch": self.patch, "save_every": self.save_every}
        counts["log_every"] = self.log_every
        for name, count in counts.items():
            if count < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {count}")
        for name, rate in {"lr": self.lr, "lr_after_drop": self.lr_after_drop}.items():
            if not (math.isfinite(rate) and rate > 0):
                raise UsageError(f"{name.replace('_', '-')} must be a number > 0, got {rate}")
        if self.width is not None and self.width < 1:
            raise UsageError(f"width must be at least 1, got {self.width}")
        if not (0 < self.ratio_min <= self.ratio_max and math.isfinite(self.ratio_max)):
            raise UsageError(f"need 0 < ratio-min <= ratio-max, got {self.ratio_min}, {self.ratio_max}")
        if min(self.val_every, self.keep, self.keep_every, self.workers, self.lr_drop_epoch) < 0:
            raise UsageError("val-every, keep, keep-every, workers and lr-drop-epoch cannot be negative")
        if self.val_limit is not None and self.val_limit < 1:
            raise UsageError(f"val-limit must be at least 1, got {self.val_limit}")
        if self.init_weights is not None and self.init_model is not None:
            raise UsageError("give either --weights or --model to start from, not both")
        if self.pairs is not None and self.synthetic is None:
            raise UsageError("real pairs are mixed into synthetic ones: they need --synthetic")
        if any(not (math.isfinite(r) and r > 0) for r in self.ratios):
            raise UsageError(f"ratios must be numbers > 0, got {self.ratios}")
        if self.sensor_match is not None and len(self.sensor_match) != 9:
            raise UsageError("the sensor match is a 3 x 3 map: 9 numbers")

    @property
    def cache_root(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.out / "cache"

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (numbered from 1): drops after ``lr_drop_epoch``."""
        return self.lr_after_drop if self.lr_drop_epoch and epoch > self.lr_drop_epoch else self.lr

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values; ``seedark finetune``'s fields only where they are set, so a
        ``seedark train`` run's config.json is what it always was."""
        data = asdict(self)
        data["noise_profile"] = self.noise_profile.to_dict()
        for name in _FINETUNE_FIELDS:
            value = data.pop(name)
            if value not in ((), None, False):
                data[name] = list(value) if isinstance(value, tuple) else value
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


#: TrainConfig's fields that only ``seedark finetune`` sets.
_FINETUNE_FIELDS = ("ratios", "per_iso_noise", "sensor_match", "pairs")


#: Settings a resumed run must share with the original to continue exactly where it stopped.
_RESUME_SENSITIVE = (
    "train_list",
    "data_root",
    "synthetic",
    "noise_profile",
    "ratio_min",
    "ratio_max",
    "lr",
    "lr_drop_epoch",
    "lr_after_drop",
    "patch",
    "augment",
    "seed",
    *_FINETUNE_FIELDS,
)


def resume_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """``name: old -> new`` for each setting that keeps a resume from continuing exactly (``saved``: to_json's)."""
    now = config.to_json()
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in _RESUME_SENSITIVE if saved.get(k) != now.get(k)]


__all__ = ["FINETUNE_PATCH", "FINETUNE_STEPS", "TrainConfig", "resume_changes"]
