"""Shared test fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# Test the working tree's package even when seedark is not installed (or an older copy
# is): src/ goes first on the import path.
_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every test run sees the same "random" data."""
    return np.random.default_rng(1234)
