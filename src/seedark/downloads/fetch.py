"""Fetch one file from its sources: streamed, resumable, retried, verified, then renamed into place.

:func:`fetch` is the only entry point; each source goes to the downloader
:func:`seedark.downloads.choose.choose_downloader` picks for its URL. What it guarantees:

* Nothing unverified ever appears at ``dest``. Bytes go to ``<dest>.part`` in the
  same folder; the size, sha256 and the caller's ``validate`` check (CRC32C for
  checkpoints) run on the complete ``.part``, which is then renamed into place.
* A ``.part`` left by a dropped connection or an interrupted process is resumed
  with ``Range: bytes=N-``; a server that ignores Range (answers 200) or rejects it
  (416) makes us start again from zero. A ``.part`` that fails verification is
  deleted, so a corrupt partial is never resumed forever; if that partial came from
  an earlier attempt, the same source is tried once more from scratch.
* A host name that does not resolve and a refused connection fail that source at once
  (offline, a retry would fail the same way seconds later). Other connection errors
  (resets, drops), timeouts, HTTP 5xx and 429 are retried with exponential
  backoff (``Retry-After`` is honoured up to :data:`RETRY_MAX_DELAY`); the retry
  budget starts afresh whenever an attempt made progress, so a flaky link that
  keeps dropping still finishes. 401/403/404/410 fail that source at once.
* A transfer slower than ``min_rate`` bytes/s over a whole :data:`RATE_WINDOW`
  (default ``SEEDARK_MIN_DOWNLOAD_RATE``, 4096) gives up on that source: a server
  that trickles a byte every 20 s is not waited on for hours. Bytes count as they
  arrive, not per full chunk, so progress moves and the pace is judged on a
  trickle too. The ``.part`` is kept for the next attempt.
* Several ``urls`` are tried in order; the error lists what went wrong with each.
* A web page where data was expected is recognised: on a Google Drive URL, Drive's
  "can't scan this file for viruses" confirmation is followed; anything else (quota
  exceeded, access denied, any page from another host) is refused rather than saved.
* ``SEEDARK_OFFLINE=1`` fails before any network access.

It takes no lock: two callers fetching the same ``dest`` must be serialised by the
caller (:mod:`seedark.models.cache` holds a file lock per model).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import requests

from seedark._files import hash_file, publish
from seedark.config import cache_write_reason, min_download_rate, offline
from seedark.downloads.choose import choose_downloader
from seedark.downloads.http import new_session
from seedark.downloads.job import Downloader, Job, Restart, Transient, UrlFailed, Validate, discard, part_size
from seedark.errors import DownloadError, SeedarkError
from seedark.progress import ByteProgress

log = logging.getLogger("seedark")

#: First retry waits this long, then twice as long each time (tests make it tiny).
RETRY_BASE_DELAY = 1.0
#: No wait between retries (backoff or ``Retry-After``) is longer than this.
RETRY_MAX_DELAY = 60.0
#: Seconds over which a transfer's pace is judged against ``min_rate``: long enough that a
#: moment's congestion passes, short enough that a stalled server is noticed in a minute.
RATE_WINDOW = 60.0

# Module-level so tests can observe the delays without slowing down.
_sleep = time.sleep


def fetch(
    urls: Iterable[str] | str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    validate: Validate | None = None,
    progress: ByteProgress | None = None,
    timeout: float = 30,
    retries: int = 4,
    session: requests.Session | None = None,
    backoff: float | None = None,
    min_rate: float | None = None,
    rate_window: float | None = None,
    downloaders: Mapping[str, Downloader] | None = None,
) -> Path:
    """Download the first of ``urls`` that yields a file passing every check, to ``dest``.

    ``size`` and ``sha256`` (lower-case hex) are checked when given; ``validate``
    gets the complete temporary file and raises a :class:`SeedarkError` to reject it.
    ``progress(done, total)`` is called as bytes arrive (``total`` None when unknown).
    ``retries`` is the number of extra attempts per URL after transient failures,
    ``backoff`` the first delay (default :data:`RETRY_BASE_DELAY`). A source that brings fewer
    than ``min_rate`` bytes/s (default ``$SEEDARK_MIN_DOWNLOAD_RATE``) over ``rate_window``
    seconds (default :data:`RATE_WINDOW`) is given up. ``downloaders`` replaces the table a source's
    downloader is chosen from (default :data:`seedark.downloads.choose.DOWNLOADERS`).
    Raises :class:`DownloadError` (path = ``dest``) when every URL failed.
    """
    target = Path(dest)
    sources = (urls,) if isinstance(urls, str) else tuple(urls)
    if not sources:
        raise DownloadError("no source URL to download from", target)
    if offline():
        raise DownloadError(f"offline mode (SEEDARK_OFFLINE is set): not downloading {sources[0]}", target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(cache_write_reason(exc), target.parent) from exc
    rate = min_download_rate() if min_rate is None else min_rate  # a bad setting fails before any request
    sess = session if session is not None else new_session()
    job = Job(
        target.with_name(target.name + ".part"),
        size,
        sha256.lower() if sha256 else None,
        validate,
        progress,
        timeout,
        sess,
        rate,
        RATE_WINDOW if rate_window is None else rate_window,
    )
    failures: list[tuple[str, str]] = []
    try:
        for url in sources:
            try:
                downloader = choose_downloader(url, downloaders)
                _fetch_url(job, downloader, url, retries, RETRY_BASE_DELAY if backoff is None else backoff)
            except UrlFailed as exc:
                log.info("could not download %s from %s: %s", target.name, url, exc.reason)
                failures.append((url, exc.reason))
                continue
            try:
                publish(job.part, target, overwrite=True)
            except OSError as exc:
                raise DownloadError(cache_write_reason(exc), target) from exc
            return target
    finally:
        if session is None:
            sess.close()
    raise DownloadError(_failure_reason(failures), target)


def _failure_reason(failures: list[tuple[str, str]]) -> str:
    """What went wrong, first line first: the first source's reason; then each source's when there were several."""
    url, reason = failures[0]
    if len(failures) == 1:
        # a host-level failure names the host already; the whole (long) URL would only bury it
        return reason if reason.startswith(_HOST_FAILURES) else f"{reason} (from {url})"
    lines = "\n".join(f"  {url}: {reason}" for url, reason in failures)
    return f"{reason}; every other source failed too:\n{lines}"


_HOST_FAILURES = ("cannot resolve host ", "connection refused by ")


def _fetch_url(job: Job, downloader: Downloader, url: str, retries: int, backoff: float) -> None:
    """Leave a complete, verified file at ``job.part`` or raise UrlFailed."""
    attempt = 0
    best = part_size(job.part)
    fresh_retry_used = False
    restarts = 0
    while True:
        job.resumed = part_size(job.part) > 0
        if job.resumed:
            log.info("resuming %s at %s bytes", job.part.name, f"{part_size(job.part):,}")
        try:
            downloader.stream(job, url)
        except Restart:
            discard(job.part)
            restarts += 1
            if restarts > 3:  # a server that keeps contradicting itself
                raise UrlFailed("the server's answers to resumed requests are inconsistent") from None
            continue
        except Transient as exc:
            now = part_size(job.part)
            if now > best:  # progress: a flaky link rather than a dead server, so the budget starts afresh
                best = now
                attempt = 0
            attempt += 1
            if attempt > retries:
                raise UrlFailed(f"{exc.reason} (gave up after {retries + 1} attempts)") from None
            delay = backoff * 2 ** (attempt - 1) if exc.retry_after is None else exc.retry_after
            delay = max(0.0, min(delay, RETRY_MAX_DELAY))
            log.info("%s; retrying %s in %.1f s (%d/%d)", exc.reason, urlsplit(url).netloc, delay, attempt, retries)
            _sleep(delay)
            continue
        problem = _verify(job)
        if problem is None:
            return
        # never keep, and so never resume, bytes that failed verification
        discard(job.part)
        if job.resumed and not fresh_retry_used:
            fresh_retry_used = True
            log.info(
                "%s failed verification (%s); the partial file may be stale, downloading again from zero",
                job.part.name,
                problem,
            )
            best = 0
            continue
        raise UrlFailed(f"the downloaded file failed verification: {problem}")


def _verify(job: Job) -> str | None:
    """None when the complete .part is good, else why not."""
    try:
        got = job.part.stat().st_size
        if job.size is not None and got != job.size:
            return f"got {got:,} bytes, expected {job.size:,} (truncated, or a different file)"
        if job.sha256 is not None:
            digest = hash_file(job.part)
            if digest != job.sha256:
                return (
                    f"sha256 is {digest}, expected {job.sha256} "
                    "(the file changed upstream, or was corrupted or tampered with)"
                )
        if job.validate is not None:
            try:
                job.validate(job.part)
            except SeedarkError as exc:
                return exc.reason
    except OSError as exc:
        raise DownloadError(f"cannot read the downloaded file back: {exc.strerror or exc}", job.part) from exc
    return None
