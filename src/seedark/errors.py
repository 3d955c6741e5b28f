"""Exception classes. Every error seedark raises on purpose is a SeedarkError.

Each carries the file it concerns (``path``, may be None) and a human reason, so
the CLI can print exactly one line: ``<path>: <reason>``.
"""

from __future__ import annotations

import os
from pathlib import Path


class SeedarkError(Exception):
    """Base class: a failure with a file and a reason a user can act on."""

    #: Process exit code the CLI uses for this error.
    exit_code = 1

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(str(self))

    def __reduce__(self) -> tuple[object, tuple[str, Path | None]]:
        # keep reason and path separate when crossing a process boundary
        return (self.__class__, (self.reason, self.path))

    def __str__(self) -> str:
        if self.path is None:
            return self.reason
        return f"{self.path}: {self.reason}"


class UsageError(SeedarkError):
    """An option value that cannot work (bad ratio, bad tile size...)."""

    exit_code = 2


class RawReadError(SeedarkError):
    """The file is missing, not a RAW file, truncated or corrupt."""


class UnsupportedSensorError(SeedarkError):
    """The RAW file is readable but its sensor layout is not one the model takes."""


class WeightsError(SeedarkError):
    """Weights are missing, fail verification, or don't fit the network."""


class DeviceError(SeedarkError):
    """A requested device or precision is not available here."""


class DeviceMemoryError(DeviceError):
    """The device ran out of memory: loading the model, or running a frame even with the smallest tiles.

    Unlike other device errors it may not last (other processes free memory), so a batch
    fails the file it happened on and goes on.
    """


class OutputError(SeedarkError):
    """The output cannot be written (exists, unwritable folder, bad format...)."""


class DownloadError(SeedarkError):
    """A model file could not be fetched or failed verification after fetching."""


class DatasetError(SeedarkError):
    """A list file or dataset folder that does not follow the SID layout."""


class TrainingError(SeedarkError):
    """A training run that cannot start or continue (bad checkpoint, mismatched settings...)."""


class CalibrationError(SeedarkError):
    """Calibration frames that cannot give a noise profile (too few, mixed cameras, saturated...)."""
