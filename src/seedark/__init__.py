"""seedark: dark RAW photos to clean sRGB images with the "Learning to See in the Dark" network.

The names below are imported lazily, so ``import seedark`` (and ``seedark --help``)
stays fast; torch and rawpy load on first use. Training and evaluation live in
``seedark.training`` (``seedark.training.loop.train``,
``seedark.training.evaluate.evaluate``); ``calibrate`` and ``finetune`` make a model
of your own camera (``seedark calibrate``, ``seedark finetune``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seedark._version import __version__

_EXPORTS = {
    "enhance": "pipeline.enhance",
    "enhance_file": "pipeline.enhance",
    "load_engine": "runtime.engine",
    "plan_output": "pipeline.output",
    "Engine": "runtime.engine",
    "read_raw": "io.raw",
    "RawFrame": "io.raw",
    "pack_bayer": "frames.packing",
    "amplify": "frames.packing",
    "SIDUNet": "models.network",
    "NetworkSpec": "models.architecture",
    "load_weights": "models.weights",
    "save_safetensors": "models.weights",
    "LoadedWeights": "models.weights",
    "read_checkpoint": "models.tfcheckpoint",
    "write_image": "io.image",
    "SeedarkError": "errors",
    "UsageError": "errors",
    "RawReadError": "errors",
    "UnsupportedSensorError": "errors",
    "WeightsError": "errors",
    "DeviceError": "errors",
    "DeviceMemoryError": "errors",
    "OutputError": "errors",
    "DownloadError": "errors",
    "DatasetError": "errors",
    "TrainingError": "errors",
    "CalibrationError": "errors",
    "run_batch": "pipeline.batch",
    "run_demo": "pipeline.demo",
    "describe": "pipeline.info",
    "raw_info": "pipeline.info",
    "TrainConfig": "training.config",
    "calibrate": "training.calibrate",
    "finetune": "training.finetune",
    "load_model": "models.cache",
    "download_model": "models.cache",
    "import_model": "models.cache",
}

__all__ = [
    "CalibrationError",
    "DatasetError",
    "DeviceError",
    "DeviceMemoryError",
    "DownloadError",
    "Engine",
    "LoadedWeights",
    "NetworkSpec",
    "OutputError",
    "RawFrame",
    "RawReadError",
    "SIDUNet",
    "SeedarkError",
    "TrainConfig",
    "TrainingError",
    "UnsupportedSensorError",
    "UsageError",
    "WeightsError",
    "__version__",
    "amplify",
    "calibrate",
    "describe",
    "download_model",
    "enhance",
    "enhance_file",
    "finetune",
    "import_model",
    "load_engine",
    "load_model",
    "load_weights",
    "pack_bayer",
    "plan_output",
    "raw_info",
    "read_checkpoint",
    "read_raw",
    "run_batch",
    "run_demo",
    "save_safetensors",
    "write_image",
]

if TYPE_CHECKING:  # pragma: no cover
    from seedark.errors import (
        CalibrationError,
        DatasetError,
        DeviceError,
        DeviceMemoryError,
        DownloadError,
        OutputError,
        RawReadError,
        SeedarkError,
        TrainingError,
        UnsupportedSensorError,
        UsageError,
        WeightsError,
    )
    from seedark.frames.packing import amplify, pack_bayer
    from seedark.io.image import write_image
    from seedark.io.raw import RawFrame, read_raw
    from seedark.models.architecture import NetworkSpec
    from seedark.models.cache import download_model, import_model, load_model
    from seedark.models.network import SIDUNet
    from seedark.models.tfcheckpoint import read_checkpoint
    from seedark.models.weights import LoadedWeights, load_weights, save_safetensors
    from seedark.pipeline.batch import run_batch
    from seedark.pipeline.demo import run_demo
    from seedark.pipeline.enhance import enhance, enhance_file
    from seedark.pipeline.info import describe, raw_info
    from seedark.pipeline.output import plan_output
    from seedark.runtime.engine import Engine, load_engine
    from seedark.training.calibrate import calibrate
    from seedark.training.config import TrainConfig
    from seedark.training.finetune import finetune


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'seedark' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"seedark.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
