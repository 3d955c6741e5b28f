"""Fetch one file over HTTP(S): streamed, resumable, retried, verified, then renamed into place.

:func:`fetch` is the only entry point. What it guarantees:

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
* A web page where data was expected is recognised: Google Drive's "can't scan
  this file for viruses" confirmation is followed, anything else (quota exceeded,
  access denied) is refused rather than saved.
* ``SEEDARK_OFFLINE=1`` fails before any network access.

It takes no lock: two callers fetching the same ``dest`` must be serialised by the
caller (:mod:`seedark.models.cache` holds a file lock per model).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import http.client
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.cookies import RequestsCookieJar

from seedark._files import publish
from seedark.config import MIN_DOWNLOAD_RATE, min_download_rate, offline
from seedark.errors import DownloadError, SeedarkError
from seedark.progress import ByteProgress

log = logging.getLogger("seedark")

Validate = Callable[[Path], None]

CHUNK_SIZE = 64 * 1024
#: First retry waits this long, then twice as long each time (tests make it tiny).
RETRY_BASE_DELAY = 1.0
#: No wait between retries (backoff or ``Retry-After``) is longer than this.
RETRY_MAX_DELAY = 60.0
#: How much of an unexpected web page we read to look for Drive's confirmation form.
MAX_HTML_BYTES = 1 << 20
#: Confirmation pages followed per source before giving up (Drive needs one).
MAX_CONFIRM_HOPS = 3
USER_AGENT = "seedark (Learning-to-See-in-the-Dark weights downloader)"
#: Seconds over which a transfer's pace is judged against ``min_rate``: long enough that a
#: moment's congestion passes, short enough that a stalled server is noticed in a minute.
RATE_WINDOW = 60.0

# Module-level so tests can observe the delays without slowing down.
_sleep = time.sleep
_clock = time.monotonic


def os_error_reason(exc: OSError) -> str:
    """A reason a user can act on for a failed write into the cache."""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "disk full: no space left to write the model (free some space, or set SEEDARK_HOME to another disk)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "cache folder is not writable (permission denied); set SEEDARK_HOME to a writable folder"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return "cannot create the cache folder: a file is in the way; set SEEDARK_HOME to a usable folder"
    return f"cannot write to the cache folder: {exc.strerror or exc}"


def hash_file(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so large files don't sit in memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- internal signals


class _Transient(Exception):
    """Worth retrying the same URL (network trouble, 5xx, 429)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _UrlFailed(Exception):
    """This URL cannot give us the file; try the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Restart(Exception):
    """The partial file is unusable with this server; start again from zero now."""


@dataclass
class _Job:
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


class _Pace:
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
            raise _UrlFailed(
                f"too slow: {self.count:,} bytes in the last {elapsed:.0f} s, under the minimum of "
                f"{self.min_rate:,.0f} bytes/s (set {MIN_DOWNLOAD_RATE} to accept a slower link, 0 for any)"
            )
        self.since, self.count = _clock(), 0


# --------------------------------------------------------------------------- public API


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
) -> Path:
    """Download the first of ``urls`` that yields a file passing every check, to ``dest``.

    ``size`` and ``sha256`` (lower-case hex) are checked when given; ``validate``
    gets the complete temporary file and raises a :class:`SeedarkError` to reject it.
    ``progress(done, total)`` is called as bytes arrive (``total`` None when unknown).
    ``retries`` is the number of extra attempts per URL after transient failures,
    ``backoff`` the first delay (default :data:`RETRY_BASE_DELAY`). A source that brings fewer
    than ``min_rate`` bytes/s (default ``$SEEDARK_MIN_DOWNLOAD_RATE``) over ``rate_window``
    seconds (default :data:`RATE_WINDOW`) is given up.
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
        raise DownloadError(os_error_reason(exc), target.parent) from exc
    rate = min_download_rate() if min_rate is None else min_rate  # a bad setting fails before any request
    sess = session if session is not None else new_session()
    job = _Job(
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
                _fetch_url(job, url, retries, RETRY_BASE_DELAY if backoff is None else backoff)
            except _UrlFailed as exc:
                log.info("could not download %s from %s: %s", target.name, url, exc.reason)
                failures.append((url, exc.reason))
                continue
            try:
                publish(job.part, target, overwrite=True)
            except OSError as exc:
                raise DownloadError(os_error_reason(exc), target) from exc
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


def new_session() -> requests.Session:
    sess = requests.Session()
    sess.headers["User-Agent"] = USER_AGENT
    return sess


# --------------------------------------------------------------------------- one URL


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DownloadError(os_error_reason(exc), part) from exc


def _discard(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()


def _fetch_url(job: _Job, url: str, retries: int, backoff: float) -> None:
    """Leave a complete, verified file at ``job.part`` or raise _UrlFailed."""
    attempt = 0
    best = _part_size(job.part)
    fresh_retry_used = False
    restarts = 0
    while True:
        job.resumed = _part_size(job.part) > 0
        if job.resumed:
            log.info("resuming %s at %s bytes", job.part.name, f"{_part_size(job.part):,}")
        try:
            _stream(job, url, 0)
        except _Restart:
            _discard(job.part)
            restarts += 1
            if restarts > 3:  # a server that keeps contradicting itself
                raise _UrlFailed("the server's answers to resumed requests are inconsistent") from None
            continue
        except _Transient as exc:
            now = _part_size(job.part)
            if now > best:  # progress: a flaky link rather than a dead server, so the budget starts afresh
                best = now
                attempt = 0
            attempt += 1
            if attempt > retries:
                raise _UrlFailed(f"{exc.reason} (gave up after {retries + 1} attempts)") from None
            delay = backoff * 2 ** (attempt - 1) if exc.retry_after is None else exc.retry_after
            delay = max(0.0, min(delay, RETRY_MAX_DELAY))
            log.info("%s; retrying %s in %.1f s (%d/%d)", exc.reason, urlsplit(url).netloc, delay, attempt, retries)
            _sleep(delay)
            continue
        problem = _verify(job)
        if problem is None:
            return
        # never keep, and so never resume, bytes that failed verification
        _discard(job.part)
        if job.resumed and not fresh_retry_used:
            fresh_retry_used = True
            log.info(
                "%s failed verification (%s); the partial file may be stale, downloading again from zero",
                job.part.name,
                problem,
            )
            best = 0
            continue
        raise _UrlFailed(f"the downloaded file failed verification: {problem}")


def _verify(job: _Job) -> str | None:
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


_BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _stream(job: _Job, url: str, hops: int) -> None:
    """One request: append (206) or write (200) the body to job.part."""
    offset = _part_size(job.part)
    if job.size is not None:
        if offset == job.size:
            return  # complete already (e.g. verification was interrupted last time)
        if offset > job.size:
            raise _Restart
    resp = _request(job, url, offset)
    with resp:
        _check_status(job, resp, offset)
        chunks = _arrivals(resp, _Pace(job.min_rate, job.rate_window))
        first = _next_chunk(chunks, 0)
        if _looks_like_html(resp, first):
            confirm = _confirmation_or_refusal(resp, first, chunks, hops)
            log.info("following Google Drive's download confirmation for %s", job.part.name)
            resp.close()
            _stream(job, confirm, hops + 1)
            return
        mode, offset, total = _plan_body(job, resp, offset)
        done = _write_body(job, mode, offset, total, first, chunks)
    if total is not None and done < total:
        raise _Transient(f"connection closed early: got {done:,} of {total:,} bytes")


def _request(job: _Job, url: str, offset: int) -> requests.Response:
    """GET ``url`` from byte ``offset`` on, network failures told apart as transient or not."""
    headers = {"Accept-Encoding": "identity"}  # byte ranges and lengths must refer to the stored bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return job.session.get(url, headers=headers, stream=True, timeout=(job.timeout, job.timeout))
    except _BAD_URL as exc:
        raise _UrlFailed(f"invalid URL ({exc})") from None
    except requests.Timeout:
        raise _Transient("timed out waiting for the server") from None
    except requests.ConnectionError as exc:
        lasting = _lasting_connect_failure(exc, url)
        if lasting is not None:  # retrying would only repeat it: fail this source now
            raise _UrlFailed(lasting) from None
        raise _Transient(f"cannot connect: {_short(exc)}") from None
    except _NETWORK_ERRORS as exc:
        raise _Transient(f"request failed: {_short(exc)}") from None


def _lasting_connect_failure(exc: BaseException, url: str) -> str | None:
    """Why a connection could not even start, when a retry a few seconds later would fail the same way:
    the host name does not resolve (no network, no DNS, a typo) or nothing listens at the address.
    None for what may pass (a reset, a timeout), and for a proxy's failures (the URL's host is not the one at fault)."""
    if isinstance(exc, requests.exceptions.ProxyError):
        return None
    parts = urlsplit(url)
    host = parts.hostname or "?"
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {host} (no network?)"
        if isinstance(cause, ConnectionRefusedError):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            return f"connection refused by {host}:{port} (is the server down?)"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: requests and urllib3 nest the socket error two or three deep."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        inner = [getattr(cur, "reason", None), cur.__cause__, cur.__context__, *cur.args]
        todo += [e for e in inner if isinstance(e, BaseException)]


def _check_status(job: _Job, resp: requests.Response, offset: int) -> None:
    """Raise what an answer other than 200/206 means: start again, retry, or give up on this URL."""
    status, reason = resp.status_code, resp.reason
    if status == 416:
        if offset:
            log.info("server refused to resume %s (HTTP 416); starting again from zero", job.part.name)
            raise _Restart
        raise _UrlFailed("HTTP 416 Range Not Satisfiable for a request without a range")
    if status == 429:
        raise _Transient("HTTP 429 Too Many Requests (rate limited)", _retry_after(resp))
    if status >= 500:
        raise _Transient(f"HTTP {status} {reason or 'server error'} (server error)", _retry_after(resp))
    if status in (401, 403):
        raise _UrlFailed(f"HTTP {status} {reason or 'Forbidden'}: access denied")
    if status in (404, 410):
        raise _UrlFailed(f"HTTP {status} {reason or 'Not Found'}: the file is not at this address")
    if status not in (200, 206):
        raise _UrlFailed(f"HTTP {status} {reason or ''}: unexpected answer".replace("  ", " "))


def _confirmation_or_refusal(resp: requests.Response, first: bytes | None, chunks: Iterator[bytes], hops: int) -> str:
    """The URL to follow for a web page that is Google Drive's download confirmation; _UrlFailed for any other."""
    page = _read_page(first, chunks)
    confirm = drive_confirmation_url(page, resp.url, resp.cookies)
    if confirm is not None and hops < MAX_CONFIRM_HOPS:
        return confirm
    title = _page_title(page)
    raise _UrlFailed(
        "the server sent a web page instead of the file (a Google Drive quota-exceeded or "
        f"access-denied page, or a captive portal?){f' titled {title!r}' if title else ''}"
    )


def _plan_body(job: _Job, resp: requests.Response, offset: int) -> tuple[str, int, int | None]:
    """How to store the body: file mode (append a resumed range, else write from zero), the offset it
    starts at, and the size the file will have (None when unknown)."""
    length = _content_length(resp)
    if resp.status_code == 206:
        start = _content_range_start(resp)
        if start != offset:
            if not offset:
                raise _UrlFailed("the server answered a plain request with a partial response (HTTP 206)")
            log.info("server resumed %s at the wrong place; starting again from zero", job.part.name)
            raise _Restart
        mode = "ab"
    else:
        if offset:
            log.info("server does not support resuming (ignored Range); downloading %s from zero", job.part.name)
        offset = 0
        mode = "wb"
        job.resumed = False
    announced = offset + length if length is not None else None
    if job.size is not None and announced is not None and announced != job.size:
        if offset:
            raise _Restart
        raise _UrlFailed(f"the server offers {announced:,} bytes, expected {job.size:,} (a different file)")
    return mode, offset, job.size if job.size is not None else announced


def _write_body(
    job: _Job, mode: str, offset: int, total: int | None, first: bytes | None, chunks: Iterator[bytes]
) -> int:
    """Store ``first`` and the rest of ``chunks`` in job.part; the file's size when the body ends."""
    done = offset
    try:
        f = open(job.part, mode)  # noqa: SIM115 - a failed open is the disk's fault, told apart from the network's
    except OSError as exc:
        raise DownloadError(os_error_reason(exc), job.part) from exc
    with f:
        if job.progress is not None:
            job.progress(done, total)
        chunk = first
        while chunk is not None:
            done += len(chunk)
            if job.size is not None and done > job.size:
                f.close()
                _discard(job.part)
                raise _UrlFailed(f"the server sent more than the expected {job.size:,} bytes (a different file)")
            try:
                f.write(chunk)
            except OSError as exc:
                f.close()
                if exc.errno == errno.ENOSPC:
                    _discard(job.part)  # a partial file would only keep the disk full
                raise DownloadError(os_error_reason(exc), job.part) from exc
            if job.progress is not None and chunk:
                job.progress(done, total)
            chunk = _next_chunk(chunks, done)
    return done


def _arrivals(resp: requests.Response, pace: _Pace) -> Iterator[bytes]:
    """The body as it arrives, each piece counted by ``pace`` once the caller has stored it.

    ``read1`` returns whatever the connection has (up to CHUNK_SIZE), where ``iter_content``
    waits for a whole chunk: a trickle would show no progress and could not be timed.
    """
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 < 2: whole chunks only
        for chunk in resp.iter_content(CHUNK_SIZE):
            yield chunk
            pace.arrived(len(chunk))
        return
    while True:
        chunk = read1(CHUNK_SIZE, decode_content=True)
        if not chunk:
            return
        yield chunk
        pace.arrived(len(chunk))


def _next_chunk(chunks: Iterator[bytes], done: int) -> bytes | None:
    try:
        return next(chunks)
    except StopIteration:
        return None
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError):
        raise _Transient(f"timed out after {done:,} bytes") from None
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError, http.client.IncompleteRead):
        raise _Transient(f"connection lost after {done:,} bytes") from None
    except _NETWORK_ERRORS as exc:
        raise _Transient(f"connection lost after {done:,} bytes ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 error chain (they nest three deep)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)  # urllib3 MaxRetryError / ProtocolError wrappers
        if isinstance(inner, BaseException):
            exc = inner
            continue
        if exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
            continue
        break
    text = str(exc)
    marker = "Failed to establish a new connection: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text if len(text) <= 200 else text[:197] + "..."


def _content_length(resp: requests.Response) -> int | None:
    try:
        value = int(resp.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _content_range_start(resp: requests.Response) -> int | None:
    # "bytes 100-199/200"
    value = resp.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    if unit.strip().lower() != "bytes":
        return None
    first = rest.split("-", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# --------------------------------------------------------------------------- web pages


def _looks_like_html(resp: requests.Response, first: bytes | None) -> bool:
    ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if ctype in ("text/html", "application/xhtml+xml"):
        return True
    head = (first or b"")[:64].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _read_page(first: bytes | None, chunks: Iterator[bytes]) -> str:
    body = bytearray(first or b"")
    while len(body) < MAX_HTML_BYTES:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except _NETWORK_ERRORS:
            break  # a partial page is still enough to recognise it
        body += chunk
    return bytes(body[:MAX_HTML_BYTES]).decode("utf-8", errors="replace")


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str], dict[str, str]]] = []  # (action, form attrs, inputs)
        self.links: list[str] = []
        self.title = ""
        self._in_title = False
        self._form: tuple[str, dict[str, str], dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = (a.get("action", ""), a, {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form[2][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _parse_page(page: str) -> _PageParser:
    parser = _PageParser()
    with contextlib.suppress(Exception):  # a malformed page is still a page; we only refuse it
        parser.feed(page)
        parser.close()
    return parser


def _page_title(page: str) -> str:
    return " ".join(_parse_page(page).title.split())[:100]


def drive_confirmation_url(page: str, page_url: str, cookies: RequestsCookieJar | None = None) -> str | None:
    """The URL behind Google Drive's "can't scan for viruses" page, or None if this isn't one.

    Current Drive pages hold a form (``action`` = drive.usercontent.google.com/download)
    with hidden inputs id, export, confirm and uuid; older ones a link carrying
    ``confirm=`` or a ``download_warning`` cookie holding the token. Quota and
    permission pages have none of these, so they are not followed.
    """
    parsed = _parse_page(page)
    for action, _attrs, inputs in parsed.forms:
        if "confirm" in inputs and ("id" in inputs or "download" in action):
            base = urljoin(page_url, unescape(action)) if action else page_url
            parts = urlsplit(base)
            query = urlencode(inputs)
            if parts.query:
                query = f"{parts.query}&{query}"
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    for href in parsed.links:
        return urljoin(page_url, unescape(href))
    if cookies is not None:
        for name, value in cookies.items():
            if name.startswith("download_warning") and value:
                sep = "&" if urlsplit(page_url).query else "?"
                return f"{page_url}{sep}confirm={value}"
    return None


__all__ = [
    "CHUNK_SIZE",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "drive_confirmation_url",
    "fetch",
    "hash_file",
    "new_session",
    "offline",
    "os_error_reason",
]
