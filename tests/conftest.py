"""Shared test fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Test the working tree's package even when seedark is not installed (or an older copy
# is): src/ goes first on the import path.
_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from httpserver import FaultyServer  # noqa: E402 - tests/ is on sys.path (pytest's rootdir-less import mode)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every test run sees the same "random" data."""
    return np.random.default_rng(1234)


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    """A real HTTP server on 127.0.0.1 with per-path fault injection (tests/httpserver.py)."""
    srv = FaultyServer().start()
    yield srv
    srv.stop()
