"""seedark: dark RAW photos to clean sRGB images with the "Learning to See in the Dark" network.

The names below are imported lazily, so ``import seedark`` (and ``seedark --help``)
stays fast; torch and rawpy load on first use.
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
}

__all__ = [
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
    "UnsupportedSensorError",
    "UsageError",
    "WeightsError",
    "__version__",
    "amplify",
    "enhance",
    "enhance_file",
    "enhance_frame",
    "load_engine",
    "load_weights",
    "pack_bayer",
    "plan_output",
    "read_checkpoint",
    "read_raw",
    "save_safetensors",
    "write_image",
]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import (
        DeviceError,
        DownloadError,
        OutputError,
        RawReadError,
        SeedarkError,
        UnsupportedSensorError,
        UsageError,
        WeightsError,
    )
    from .inference import Engine
    from .network import NetworkSpec, SIDUNet
    from .output import write_image
    from .packing import amplify, pack_bayer
    from .pipeline import enhance, enhance_file, enhance_frame, load_engine, plan_output
    from .raw import RawFrame, read_raw
    from .tfcheckpoint import read_checkpoint
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
