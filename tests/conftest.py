"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from helpers.httpserver import FaultyServer

# The suite's expected values are fp32 results, and the dev machines differ: on a CPU with native
# bf16, ``--precision auto`` means bf16. Pin ``auto`` to fp32 for every test and child process;
# tests/test_devices.py checks what ``auto`` picks with the variable removed.
os.environ["SEEDARK_PRECISION"] = "fp32"


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
