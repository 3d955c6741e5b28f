"""A real HTTP server on 127.0.0.1 for download tests, with per-path fault injection.

Each path is a :class:`Route`: the bytes to serve plus the faults to inject
(dropped connections, error statuses, HTML pages, stalls, requests held until the
test releases them, wrong bytes, Range support on or off). Every request is logged on its route so tests can assert
what the client did (e.g. that a second process did not download again).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers.registries import add_model
from seedark.models.registry import DATA_NAME, INDEX_NAME, ModelRecord, SourceFile


@dataclass
class Hit:
    """One request as the server saw it."""

    range: str | None
    status: int
    start: int = 0  # first byte of the file sent
    sent: int = 0  # body bytes actually written
    complete: bool = False  # the whole announced body was written


@dataclass
class Route:
    data: bytes | Path
    ranges: bool = True  # honour "Range: bytes=N-"; False answers 200 with the whole file, like a naive server
    content_type: str = "application/octet-stream"
    chunk_size: int = 64 * 1024
    chunk_delay: float = 0.0  # seconds slept before each chunk (makes concurrent clients overlap)
    drop_after: int | None = None  # close the connection after this many body bytes of a response...
    drop_times: int = 0  # ...for the first N requests (-1: every request)
    reset: bool = False  # drop by aborting the connection (TCP RST) rather than closing it cleanly
    fail_status: int | None = None  # answer this status instead...
    fail_times: int = 0  # ...for the first N requests (-1: every request)
    retry_after: str | None = None  # Retry-After header sent with fail_status
    html: str | None = None  # serve this web page instead of the data...
    html_times: int = -1  # ...for the first N requests (-1: every request)
    html_content_type: str = "text/html; charset=utf-8"
    wrong_bytes: bytes | None = None  # serve these bytes instead of data...
    wrong_times: int = -1  # ...for the first N requests
    stall: float = 0.0  # sleep this long before answering...
    stall_times: int = 0  # ...the first N requests
    hold: threading.Event | None = None  # answer only once this is set (or after hold_limit s)...
    hold_times: int = 0  # ...for the first N requests (-1: every request)
    hold_limit: float = 120.0  # a test that never releases must not hang a server thread forever
    held: threading.Event = field(default_factory=threading.Event)  # set when a request starts waiting on hold
    require_query: tuple[str, ...] = ()  # 400 unless the query string has these parameters
    hits: list[Hit] = field(default_factory=list)

    def _active(self, times: int, n: int) -> bool:
        return times < 0 or n < times

    @property
    def size(self) -> int:
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)

    def full_downloads(self) -> int:
        """Responses that delivered the whole file from byte 0."""
        return sum(1 for h in self.hits if h.complete and h.start == 0 and h.status == 200)

    def bytes_sent(self) -> int:
        return sum(h.sent for h in self.hits)


class FaultyServer:
    """``ThreadingHTTPServer`` on 127.0.0.1, port chosen by the OS."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    server._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # ---------------------------------------------------------------- control

    def start(self) -> FaultyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for route in self.routes.values():  # let held requests finish
            if route.hold is not None:
                route.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, data: bytes | Path, **options: Any) -> Route:
        route = Route(data, **options)
        self.routes[path] = route
        return route

    def add_drive(self, file_id: str, data: bytes | Path, **options: Any) -> tuple[Route, Route]:
        """Google Drive's flow: /uc answers the "can't scan for viruses" form, /download the file."""
        page = drive_confirmation_page(self.url("/download"), file_id)
        confirm = self.add("/uc", b"", html=page)
        payload = self.add("/download", data, require_query=("id", "export", "confirm", "uuid"), **options)
        return confirm, payload

    # ---------------------------------------------------------------- serving

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        route = self.routes.get(parts.path)
        range_header = h.headers.get("Range")
        if route is None:
            self._simple(h, 404, b"not found")
            return
        with self._lock:
            n = len(route.hits)
            hit = Hit(range_header, 0)
            route.hits.append(hit)
        if route.stall and n < route.stall_times:
            time.sleep(route.stall)
        if route.hold is not None and route._active(route.hold_times, n):
            route.held.set()
            route.hold.wait(route.hold_limit)
        query = parse_qs(parts.query)
        if any(k not in query for k in route.require_query):
            hit.status = 400
            self._simple(h, 400, b"missing query parameters")
            return
        if route.fail_status is not None and route._active(route.fail_times, n):
            hit.status = route.fail_status
            extra = {"Retry-After": route.retry_after} if route.retry_after else {}
            self._simple(h, route.fail_status, b"<p>injected failure</p>", extra)
            return
        if route.html is not None and route._active(route.html_times, n):
            hit.status = 200
            body = route.html.encode("utf-8")
            self._simple(h, 200, body, {"Content-Type": route.html_content_type}, content_type=None)
            return
        data: bytes | Path = route.data
        if route.wrong_bytes is not None and route._active(route.wrong_times, n):
            data = route.wrong_bytes
        total = data.stat().st_size if isinstance(data, Path) else len(data)
        start = 0
        status = 200
        headers = {"Content-Type": route.content_type}
        if route.ranges:
            headers["Accept-Ranges"] = "bytes"
            if range_header and range_header.startswith("bytes="):
                first = range_header[len("bytes=") :].split("-", 1)[0]
                start = int(first)
                if start >= total:
                    hit.status = 416
                    self._simple(h, 416, b"", {"Content-Range": f"bytes */{total}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        hit.status = status
        hit.start = start
        length = total - start
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        limit = route.drop_after if route.drop_after is not None and route._active(route.drop_times, n) else None
        sent = 0
        with _opened(data) as read:
            while sent < length:
                if route.chunk_delay:
                    time.sleep(route.chunk_delay)
                size = min(route.chunk_size, length - sent)
                if limit is not None:
                    size = min(size, limit - sent)
                    if size <= 0:
                        break
                chunk = read(start + sent, size)
                h.wfile.write(chunk)
                sent += len(chunk)
                hit.sent = sent
        h.wfile.flush()
        if sent < length:  # injected drop: the client sees a body shorter than Content-Length
            h.close_connection = True
            if route.reset:  # SO_LINGER 0: close() sends RST, the client's read fails with ECONNRESET
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
                return
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        hit.complete = True

    @staticmethod
    def _simple(
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str | None = "text/html",
    ) -> None:
        h.send_response(status)
        if content_type:
            h.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


class _opened:
    """Random access to bytes or a (possibly huge) file without loading it."""

    def __init__(self, data: bytes | Path) -> None:
        self.data = data
        self.f: Any = None

    def __enter__(self) -> Any:
        if isinstance(self.data, Path):
            self.f = open(self.data, "rb")

            def read(offset: int, size: int) -> bytes:
                self.f.seek(offset)
                return bytes(self.f.read(size))

            return read
        data = self.data
        return lambda offset, size: data[offset : offset + size]

    def __exit__(self, *exc: object) -> None:
        if self.f is not None:
            self.f.close()


def drive_confirmation_page(action: str, file_id: str) -> str:
    """Modelled on Google Drive's large-file "can't scan for viruses" page."""
    uuid = secrets.token_hex(8)
    return f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption">model.ckpt.data-00000-of-00001 (84M) is too large for Google to scan for viruses.
Would you still like to download this file?</p>
<form id="download-form" action="{escape(action)}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway">
<input type="hidden" name="id" value="{escape(file_id)}">
<input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="{uuid}">
</form></div></body></html>"""


QUOTA_PAGE = """<!DOCTYPE html><html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">
<title>Google Drive - Quota exceeded</title></head><body><div class="uc-main">
<p class="uc-error-caption">Sorry, you can't view or download this file at this time.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing
the file again later.</p></div></body></html>"""


# --------------------------------------------------------------------------- no internet in tests

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


class InternetBlocked(OSError):
    pass


def _is_local(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def block_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any connection or name lookup beyond loopback fail loudly."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise InternetBlocked(f"test tried to reach {address!r}: tests never touch the internet")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_local(name):
            raise InternetBlocked(f"test tried to resolve {name!r}: tests never touch the internet")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def clean_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Cache in ``home``; no mirror, offline flag or proxy inherited from the developer's shell."""
    monkeypatch.setenv("SEEDARK_HOME", str(home))
    for var in ("SEEDARK_MIRROR", "SEEDARK_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


# --------------------------------------------------------------------------- models on the server

FIXTURE_DESCRIPTION = "test fixture (random width-4 network)"


def model_record(
    server: FaultyServer,
    name: str,
    index: bytes,
    data: bytes,
    *,
    description: str = FIXTURE_DESCRIPTION,
    data_path: str | None = None,
) -> ModelRecord:
    """A registry entry for a TF checkpoint whose files are on ``server`` at /NAME/FILE (the data
    file at ``data_path`` if given): the index pinned by its SHA-256, both files by their sizes."""
    return ModelRecord(
        name=name,
        description=description,
        licence="MIT",
        packing="bayer",
        sensor="test",
        files=(
            SourceFile(
                INDEX_NAME, (server.url(f"/{name}/{INDEX_NAME}"),), hashlib.sha256(index).hexdigest(), len(index)
            ),
            SourceFile(DATA_NAME, (server.url(data_path or f"/{name}/{DATA_NAME}"),), None, len(data)),
        ),
        homepage="http://127.0.0.1/",
    )


def published_model(
    monkeypatch: pytest.MonkeyPatch,
    server: FaultyServer,
    name: str,
    index: bytes,
    data: bytes,
    *,
    description: str = FIXTURE_DESCRIPTION,
    **data_route: Any,
) -> ModelRecord:
    """The checkpoint's two files on ``server`` (the data file's route with ``data_route``'s options),
    registered as the model ``name`` for this test (``monkeypatch`` undoes it)."""
    server.add(f"/{name}/{INDEX_NAME}", index)
    server.add(f"/{name}/{DATA_NAME}", data, **data_route)
    return add_model(monkeypatch, model_record(server, name, index, data, description=description))
