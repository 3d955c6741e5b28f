"""Test entries in seedark's read-only tables, undone by ``monkeypatch`` after the test.

The model registry and the downloader table are immutable: a test replaces the whole
table with a copy that has its entry, as a caller would (imported as helpers.registries).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pytest

from seedark.downloads import choose
from seedark.downloads.gdrive import GoogleDriveDownloader
from seedark.downloads.job import Downloader
from seedark.models import registry
from seedark.models.registry import ModelRecord

#: The downloaders, with the local test server (127.0.0.1) standing in for Google Drive.
LOCAL_DRIVE: Mapping[str, Downloader] = MappingProxyType({**choose.DOWNLOADERS, "127.0.0.1": GoogleDriveDownloader()})


def add_model(monkeypatch: pytest.MonkeyPatch, record: ModelRecord) -> ModelRecord:
    """``record`` in the registry for this test, replacing a model of the same name."""
    monkeypatch.setattr(registry, "MODELS", MappingProxyType({**registry.MODELS, record.name: record}))
    return record


def serve_drive_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """URLs on the local test server go through the Google Drive downloader for this test."""
    monkeypatch.setattr(choose, "DOWNLOADERS", LOCAL_DRIVE)
