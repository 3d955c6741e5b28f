"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from helpers.httpserver import FaultyServer


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
