"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from helpers.httpserver import FaultyServer
from helpers.sid_layout import SidLayout, make_sid_dataset
from helpers.torchthreads import torch_threads
from seedark.io import deflate

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


@pytest.fixture(params=["installed", "zlib"])
def deflate_library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The PNG and TIFF encoders' deflate: the fast libraries installed (ISA-L, zlib-ng), and the
    standard library's zlib that runs where they have no wheel (seedark.io.deflate)."""
    if request.param == "zlib":
        monkeypatch.setattr(deflate, "_module", lambda name: None)
    return str(request.param)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a whole module: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> SidLayout:
    """A tiny dataset in the official SID layout (helpers/sid_layout.py), one per test module."""
    return make_sid_dataset(tmp_path_factory.mktemp("sid"))
