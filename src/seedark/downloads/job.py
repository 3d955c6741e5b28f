"""One file's transfer in progress, and what a downloader's attempt can report about a source.

A :class:`Job` is what every downloader writes through: the ``.part`` file beside the
destination, what the file must be (size, sha256, the caller's check), the HTTP session
and the pace it must keep. A downloader (:class:`Downloader`) makes one attempt at one
source and either leaves bytes in the ``.part`` or raises one of the three signals
below; :mod:`seedark.downloads.fetch` decides what follows (retry, restart, next source).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from seedark.config import MIN_DOWNLOAD_RATE, cache_write_reason
from seedark.errors import DownloadError
from seedark.progress import ByteProgress

#: Checks the complete temporary file; raises a :class:`seedark.errors.SeedarkError` to reject it.
Validate = Callable[[Path], None]

# Module-level so tests can observe the pace without waiting.
_clock = time.monotonic


class Transient(Exception):
    """Worth retrying the same URL (network trouble, 5xx, 429)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class UrlFailed(Exception):
    """This URL cannot give us the file; try the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Restart(Exception):
    """The partial file is unusable with this server; start again from zero now."""


@dataclass
class Job:
    part: Path
    size: int | None
    sha256: str | None
    validate: Validate | None
    progress: ByteProgress | None
    timeout: float
    session: requests.Session
    min_rate: float  # bytes/s over each rate_window; 0: any pace
    rate_window: float
    resumed: bool = False  # the bytes we verify include some from an earlier attempt


class Downloader(Protocol):
    """Fetches one source URL into ``job.part``: appends to what is there when the source can resume,
    starts from zero otherwise; raises :class:`Transient`, :class:`UrlFailed` or :class:`Restart`."""

    def stream(self, job: Job, url: str) -> None: ...


class Pace:
    """Gives up on a body that brings fewer than ``min_rate`` bytes/s over a whole window."""

    def __init__(self, min_rate: float, window: float) -> None:
        self.min_rate, self.window = min_rate, window
        self.since, self.count = _clock(), 0

    def arrived(self, count: int) -> None:
        self.count += count
        elapsed = _clock() - self.since
        if self.min_rate <= 0 or elapsed < self.window:
            return
        if self.count < self.min_rate * elapsed:
            raise UrlFailed(
                f"too slow: {self.count:,} bytes in the last {elapsed:.0f} s, under the minimum of "
                f"{self.min_rate:,.0f} bytes/s (set {MIN_DOWNLOAD_RATE} to accept a slower link, 0 for any)"
            )
        self.since, self.count = _clock(), 0


def part_size(part: Path) -> int:
    """Bytes already in the ``.part`` file, 0 when there is none."""
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DownloadError(cache_write_reason(exc), part) from exc


def discard(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
