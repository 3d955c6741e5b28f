"""Decoders for batch tests; importable by the spawned decoder process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from seedark.prepare import Prepared, prepare_file


def crashing_decoder(path: Path, ratio: float | str | None) -> Prepared:
    """Behaves like LibRaw meeting a hostile file: the process dies on the spot."""
    if "hostile" in Path(path).name:
        os.kill(os.getpid(), signal.SIGSEGV)
    return prepare_file(path, ratio)


def exiting_decoder(path: Path, ratio: float | str | None) -> Prepared:
    if "hostile" in Path(path).name:
        os._exit(3)
    return prepare_file(path, ratio)
