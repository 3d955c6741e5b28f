"""Plain HTTP(S): one request per attempt, the body appended to a resumed ``.part`` or written anew.

What it tells :mod:`seedark.downloads.fetch` about each answer:

* 200 writes from zero, 206 appends where the ``.part`` ends (``Range: bytes=N-``); a
  server that ignores Range starts again from zero, one that rejects it (416) or resumes
  at the wrong place makes the ``.part`` start again (:class:`~seedark.downloads.job.Restart`).
* A host name that does not resolve and a refused connection fail the source at once;
  other connection errors, timeouts, 5xx and 429 (with its ``Retry-After``) are
  :class:`~seedark.downloads.job.Transient`; 401/403/404/410 fail the source.
* Bytes count as they arrive, not per full chunk, so progress moves and the pace
  (:class:`~seedark.downloads.job.Pace`) is judged on a trickle too.
* A web page where data was expected is refused, quoting its title; a downloader for a
  site whose files come behind a page (:mod:`seedark.downloads.gdrive`) overrides
  :meth:`HTTPDownloader.next_url` to follow it.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http.client
import logging
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from html.parser import HTMLParser
from urllib.parse import urlsplit

import requests
import urllib3

from seedark.config import cache_write_reason
from seedark.downloads.job import Job, Pace, Restart, Transient, UrlFailed, discard, part_size
from seedark.errors import DownloadError

log = logging.getLogger("seedark")

CHUNK_SIZE = 64 * 1024
#: How much of an unexpected web page we read to recognise it.
MAX_HTML_BYTES = 1 << 20
USER_AGENT = "seedark (Learning-to-See-in-the-Dark weights downloader)"

_BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def new_session() -> requests.Session:
    sess = requests.Session()
    sess.headers["User-Agent"] = USER_AGENT
    return sess


class HTTPDownloader:
    """A file served as itself over HTTP(S); any web page in its place is refused."""

    def stream(self, job: Job, url: str) -> None:
        """One attempt: append (206) or write (200) the body of ``url`` to job.part."""
        self._stream(job, url, 0)

    def next_url(self, job: Job, resp: requests.Response, page: str, hops: int) -> str | None:
        """Where a web page served instead of the file leads on to (``hops`` pages followed so far);
        None refuses the page."""
        return None

    def _stream(self, job: Job, url: str, hops: int) -> None:
        offset = part_size(job.part)
        if job.size is not None:
            if offset == job.size:
                return  # complete already (e.g. verification was interrupted last time)
            if offset > job.size:
                raise Restart
        resp = _request(job, url, offset)
        with resp:
            _check_status(job, resp, offset)
            chunks = _arrivals(resp, Pace(job.min_rate, job.rate_window))
            first = _next_chunk(chunks, 0)
            if _looks_like_html(resp, first):
                page = _read_page(first, chunks)
                follow = self.next_url(job, resp, page, hops)
                if follow is None:
                    raise UrlFailed(_refusal(page))
                resp.close()
                self._stream(job, follow, hops + 1)
                return
            mode, offset, total = _plan_body(job, resp, offset)
            done = _write_body(job, mode, offset, total, first, chunks)
        if total is not None and done < total:
            raise Transient(f"connection closed early: got {done:,} of {total:,} bytes")


def _request(job: Job, url: str, offset: int) -> requests.Response:
    """GET ``url`` from byte ``offset`` on, network failures told apart as transient or not."""
    headers = {"Accept-Encoding": "identity"}  # byte ranges and lengths must refer to the stored bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return job.session.get(url, headers=headers, stream=True, timeout=(job.timeout, job.timeout))
    except _BAD_URL as exc:
        raise UrlFailed(f"invalid URL ({exc})") from None
    except requests.Timeout:
        raise Transient("timed out waiting for the server") from None
    except requests.ConnectionError as exc:
        lasting = _lasting_connect_failure(exc, url)
        if lasting is not None:  # retrying would only repeat it: fail this source now
            raise UrlFailed(lasting) from None
        raise Transient(f"cannot connect: {_short(exc)}") from None
    except _NETWORK_ERRORS as exc:
        raise Transient(f"request failed: {_short(exc)}") from None


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


def _check_status(job: Job, resp: requests.Response, offset: int) -> None:
    """Raise what an answer other than 200/206 means: start again, retry, or give up on this URL."""
    status, reason = resp.status_code, resp.reason
    if status == 416:
        if offset:
            log.info("server refused to resume %s (HTTP 416); starting again from zero", job.part.name)
            raise Restart
        raise UrlFailed("HTTP 416 Range Not Satisfiable for a request without a range")
    if status == 429:
        raise Transient("HTTP 429 Too Many Requests (rate limited)", _retry_after(resp))
    if status >= 500:
        raise Transient(f"HTTP {status} {reason or 'server error'} (server error)", _retry_after(resp))
    if status in (401, 403):
        raise UrlFailed(f"HTTP {status} {reason or 'Forbidden'}: access denied")
    if status in (404, 410):
        raise UrlFailed(f"HTTP {status} {reason or 'Not Found'}: the file is not at this address")
    if status not in (200, 206):
        raise UrlFailed(f"HTTP {status} {reason or ''}: unexpected answer".replace("  ", " "))


def _plan_body(job: Job, resp: requests.Response, offset: int) -> tuple[str, int, int | None]:
    """How to store the body: file mode (append a resumed range, else write from zero), the offset it
    starts at, and the size the file will have (None when unknown)."""
    length = _content_length(resp)
    if resp.status_code == 206:
        start = _content_range_start(resp)
        if start != offset:
            if not offset:
                raise UrlFailed("the server answered a plain request with a partial response (HTTP 206)")
            log.info("server resumed %s at the wrong place; starting again from zero", job.part.name)
            raise Restart
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
            raise Restart
        raise UrlFailed(f"the server offers {announced:,} bytes, expected {job.size:,} (a different file)")
    return mode, offset, job.size if job.size is not None else announced


def _write_body(
    job: Job, mode: str, offset: int, total: int | None, first: bytes | None, chunks: Iterator[bytes]
) -> int:
    """Store ``first`` and the rest of ``chunks`` in job.part; the file's size when the body ends."""
    done = offset
    try:
        f = open(job.part, mode)  # noqa: SIM115 - a failed open is the disk's fault, told apart from the network's
    except OSError as exc:
        raise DownloadError(cache_write_reason(exc), job.part) from exc
    with f:
        if job.progress is not None:
            job.progress(done, total)
        chunk = first
        while chunk is not None:
            done += len(chunk)
            if job.size is not None and done > job.size:
                f.close()
                discard(job.part)
                raise UrlFailed(f"the server sent more than the expected {job.size:,} bytes (a different file)")
            try:
                f.write(chunk)
            except OSError as exc:
                f.close()
                if exc.errno == errno.ENOSPC:
                    discard(job.part)  # a partial file would only keep the disk full
                raise DownloadError(cache_write_reason(exc), job.part) from exc
            if job.progress is not None and chunk:
                job.progress(done, total)
            chunk = _next_chunk(chunks, done)
    return done


def _arrivals(resp: requests.Response, pace: Pace) -> Iterator[bytes]:
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
        raise Transient(f"timed out after {done:,} bytes") from None
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError, http.client.IncompleteRead):
        raise Transient(f"connection lost after {done:,} bytes") from None
    except _NETWORK_ERRORS as exc:
        raise Transient(f"connection lost after {done:,} bytes ({_short(exc)})") from None


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


class PageParser(HTMLParser):
    """What a page served instead of a file shows: its title (quoted when refused), its forms and its
    links carrying ``confirm=`` (where a site such as Google Drive puts the real download)."""

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


def parse_page(page: str) -> PageParser:
    parser = PageParser()
    with contextlib.suppress(Exception):  # a malformed page is still a page; we only refuse it
        parser.feed(page)
        parser.close()
    return parser


def _page_title(page: str) -> str:
    return " ".join(parse_page(page).title.split())[:100]


def _refusal(page: str) -> str:
    title = _page_title(page)
    return (
        "the server sent a web page instead of the file (a Google Drive quota-exceeded or "
        f"access-denied page, or a captive portal?){f' titled {title!r}' if title else ''}"
    )
