"""seedark: dark RAW photos to clean sRGB images with the "Learning to See in the Dark" network.

The names below are imported lazily, so ``import seedark`` (and ``seedark --help``)
stays fast; torch and rawpy load on first use. Training and evaluation live in
``seedark.train`` and ``seedark.evaluate`` (not re-exported: a function named like
its module would be shadowed by the module on import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "enhance": "pipeline",
    "enhance_file": "pipeline",
    "enhance_frame": "pipeline",
    "load_engine": "pipeline",
    "plan_output": "pipeline",
    "Engine": "inference",
    "read_raw": "raw",
    "RawFrame": "raw",
    "pack_bayer": "packing",
    "amplify": "packing",
    "SIDUNet": "network",
    "NetworkSpec": "network",
    "load_weights": "weights",
    "save_safetensors": "weights",
    "LoadedWeights": "weights",
    "read_checkpoint": "tfcheckpoint",
    "write_image": "output",
    "SeedarkError": "errors",
    "UsageError": "errors",
    "RawReadError": "errors",
    "UnsupportedSensorError": "errors",
    "WeightsError": "errors",
    "DeviceError": "errors",
    "OutputError": "errors",
    "DownloadError": "errors",
    "DatasetError": "errors",
    "TrainingError": "errors",
    "run_batch": "batch",
    "describe": "info",
    "TrainConfig": "train",
    "load_model": "store",
    "download_model": "store",
    "import_model": "store",
}

__all__ = [
    "DatasetError",
    "DeviceError",
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
    "describe",
    "download_model",
    "enhance",
    "enhance_file",
    "enhance_frame",
    "import_model",
    "load_engine",
    "load_model",
    "load_weights",
    "pack_bayer",
    "plan_output",
    "read_checkpoint",
    "read_raw",
    "run_batch",
    "save_safetensors",
    "write_image",
]

if TYPE_CHECKING:  # pragma: no cover
    from .batch import run_batch
    from .errors import (
        DatasetError,
        DeviceError,
        DownloadError,
        OutputError,
        RawReadError,
        SeedarkError,
        TrainingError,
        UnsupportedSensorError,
        UsageError,
        WeightsError,
    )
    from .inference import Engine
    from .info import describe
    from .network import NetworkSpec, SIDUNet
    from .output import write_image
    from .packing import amplify, pack_bayer
    from .pipeline import enhance, enhance_file, enhance_frame, load_engine, plan_output
    from .raw import RawFrame, read_raw
    from .store import download_model, import_model, load_model
    from .tfcheckpoint import read_checkpoint
    from .train import TrainConfig
    from .weights import LoadedWeights, load_weights, save_safetensors


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'seedark' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
