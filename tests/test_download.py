"""seedark.downloads.fetch against a real local HTTP server with injected faults."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers.cli import run_cli
from helpers.httpserver import QUOTA_PAGE, FaultyServer, InternetBlocked, block_internet, clean_environment
from helpers.registries import LOCAL_DRIVE
from helpers.tfwriter import write_sid_checkpoint
from seedark.downloads import choose, gdrive, http
from seedark.downloads import fetch as fetching
from seedark.downloads.fetch import fetch
from seedark.downloads.gdrive import drive_confirmation_url
from seedark.errors import DownloadError, UsageError, WeightsError
from seedark.models.tfcheckpoint import verify_data_file

REAL_GETADDRINFO = socket.getaddrinfo  # before any test guards it
DATA = bytes(range(256)) * 2048 + b"tail"  # 512 KiB + 4: several chunks on the wire


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[float]]:
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    monkeypatch.setattr(fetching, "RETRY_BASE_DELAY", 0.01)
    monkeypatch.setattr(fetching, "RETRY_MAX_DELAY", 0.5)
    delays: list[float] = []
    monkeypatch.setattr(fetching, "_sleep", delays.append)
    yield delays


@pytest.fixture
def delays(_isolated: list[float]) -> list[float]:
    return _isolated


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    write_sid_checkpoint(prefix)
    return prefix


def kept_after_drop(dropped_at: int) -> int:
    # the body is stored as it arrives (read1), so every byte before the drop is kept
    return dropped_at


def no_leftovers(folder: Path) -> bool:
    return not any(folder.iterdir())


# --------------------------------------------------------------------------- happy path


def test_fetch_streams_verifies_and_reports_progress(server: FaultyServer, tmp_path: Path) -> None:
    route = server.add("/f.bin", DATA)
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "out" / "f.bin"
    got = fetch(
        [server.url("/f.bin")], dest, size=len(DATA), sha256=sha(DATA), progress=lambda d, t: seen.append((d, t))
    )
    assert got == dest and dest.read_bytes() == DATA
    assert not dest.with_name("f.bin.part").exists()
    assert seen[-1] == (len(DATA), len(DATA))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(route.hits) == 1 and route.full_downloads() == 1


def test_fetch_without_pins_uses_content_length(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/f.bin", DATA)
    seen: list[tuple[int, int | None]] = []
    fetch(server.url("/f.bin"), tmp_path / "f.bin", progress=lambda d, t: seen.append((d, t)))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert seen[-1] == (len(DATA), len(DATA))


# --------------------------------------------------------------------------- interrupted transfers


def test_dropped_connection_resumes_with_range(server: FaultyServer, tmp_path: Path) -> None:
    route = server.add("/f.bin", DATA, drop_after=100_000, drop_times=1)
    fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert [h.status for h in route.hits] == [200, 206]
    kept = kept_after_drop(100_000)
    assert route.hits[1].range == f"bytes={kept}-"
    assert route.bytes_sent() == len(DATA) + 100_000 - kept


def test_flaky_link_that_keeps_dropping_still_finishes(server: FaultyServer, tmp_path: Path) -> None:
    # more drops than the retry budget, but each attempt makes progress
    route = server.add("/f.bin", DATA, drop_after=100_000, drop_times=-1)
    fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA), retries=2)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert len(route.hits) > 3
    assert all(h.status == 206 for h in route.hits[1:])


def test_server_without_range_support_restarts_from_zero(server: FaultyServer, tmp_path: Path) -> None:
    route = server.add("/f.bin", DATA, ranges=False, drop_after=100_000, drop_times=1)
    fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert [h.status for h in route.hits] == [200, 200]
    assert route.hits[1].range == f"bytes={kept_after_drop(100_000)}-"  # asked, ignored, and the client coped
    assert route.full_downloads() == 1


def test_truncated_download_is_reported_then_resumed_later(server: FaultyServer, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    # a server that ignores Range and always drops at the same place: no progress is possible
    route = server.add("/f.bin", DATA, ranges=False, drop_after=200_000, drop_times=-1)
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], dest, size=len(DATA), sha256=sha(DATA), retries=2)
    kept = kept_after_drop(200_000)
    assert f"connection lost after {kept:,} bytes" in info.value.reason
    assert "gave up after 3 attempts" in info.value.reason
    assert info.value.path == dest
    assert not dest.exists()
    part = dest.with_name("f.bin.part")
    assert part.stat().st_size == kept  # kept so a later run resumes
    # later, a server that does support Range: only the rest is fetched
    route.ranges, route.drop_times = True, 0
    route.hits.clear()
    fetch([server.url("/f.bin")], dest, size=len(DATA), sha256=sha(DATA))
    assert dest.read_bytes() == DATA and not part.exists()
    assert route.hits[0].range == f"bytes={kept}-" and route.hits[0].status == 206


def test_range_not_satisfiable_restarts(server: FaultyServer, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"x" * (len(DATA) + 10))  # longer than the file: unusable
    route = server.add("/f.bin", DATA)
    fetch([server.url("/f.bin")], dest, sha256=sha(DATA))
    assert dest.read_bytes() == DATA
    assert [h.status for h in route.hits] == [416, 200]


def test_stale_corrupt_partial_is_not_resumed_forever(server: FaultyServer, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"\xff" * 1000)  # from some earlier, different file
    route = server.add("/f.bin", DATA)
    fetch([server.url("/f.bin")], dest, size=len(DATA), sha256=sha(DATA))
    assert dest.read_bytes() == DATA
    assert [h.status for h in route.hits] == [206, 200]  # resumed, failed sha256, fetched fresh


def test_timeout_is_retried(server: FaultyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The first request gets no answer at all until the test releases it, which it does only
    # after fetch() has returned: the download can only succeed by timing out and asking again.
    # Later requests are answered at once; retries are plentiful so that a busy machine
    # (where even those may take longer than the small timeout) still cannot exhaust them.
    release = threading.Event()
    route = server.add("/f.bin", DATA, hold=release, hold_times=1)
    caplog.set_level(logging.INFO, logger="seedark")
    try:
        fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA), timeout=0.2, retries=20)
        first = route.hits[0]
        assert first.status == 0 and first.sent == 0, "the first request was never answered"
    finally:
        release.set()
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert len(route.hits) >= 2 and route.hits[-1].complete
    assert "timed out waiting for the server" in caplog.text


# --------------------------------------------------------------------------- a server that trickles

# The server sends one byte every 10 ms at most (it sleeps before each), so it can never bring the
# 10,000 bytes/s these tests demand over any window: the outcome does not depend on the machine's
# speed, only how soon it comes (the window, 0.3 s, plus a byte).
TRICKLE = {"chunk_size": 1, "chunk_delay": 0.01}


def test_a_trickling_server_is_given_up_with_progress_shown(server: FaultyServer, tmp_path: Path) -> None:
    slow = server.add("/slow.bin", DATA, **TRICKLE)
    dest = tmp_path / "f.bin"
    seen: list[int] = []
    with pytest.raises(DownloadError) as info:
        fetch(
            [server.url("/slow.bin")],
            dest,
            size=len(DATA),
            progress=lambda done, total: seen.append(done),
            min_rate=10_000,
            rate_window=0.3,
        )
    reason = info.value.reason
    assert "too slow:" in reason and "under the minimum of 10,000 bytes/s" in reason
    assert "SEEDARK_MIN_DOWNLOAD_RATE" in reason and "\n" not in reason
    assert len(slow.hits) == 1  # not retried: a minute-long crawl is not a blip
    # progress moved with the bytes as they came, not once per 64 KiB chunk
    assert seen == sorted(seen) and 0 < seen[-1] < http.CHUNK_SIZE
    part = dest.with_name("f.bin.part")
    assert part.stat().st_size == seen[-1] and not dest.exists()  # kept, so the next run resumes


def test_the_next_source_is_tried_after_a_trickling_one(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/slow.bin", DATA, **TRICKLE)
    fast = server.add("/fast.bin", DATA)
    dest = tmp_path / "f.bin"
    fetch([server.url("/slow.bin"), server.url("/fast.bin")], dest, sha256=sha(DATA), min_rate=10_000, rate_window=0.3)
    assert dest.read_bytes() == DATA
    assert fast.hits[0].range is not None  # resumed what the slow source had brought


def test_the_minimum_rate_comes_from_the_environment(
    server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = server.add("/slow.bin", DATA, **TRICKLE)
    monkeypatch.setenv("SEEDARK_MIN_DOWNLOAD_RATE", "20000")
    with pytest.raises(DownloadError, match=r"under the minimum of 20,000 bytes/s"):
        fetch([server.url("/slow.bin")], tmp_path / "a.bin", rate_window=0.3)
    # 0: any pace; 60 bytes take at least 0.6 s, twice the window
    server.add("/tiny.bin", DATA[:60], **TRICKLE)
    monkeypatch.setenv("SEEDARK_MIN_DOWNLOAD_RATE", "0")
    fetch([server.url("/tiny.bin")], tmp_path / "b.bin", sha256=sha(DATA[:60]), rate_window=0.3)
    assert (tmp_path / "b.bin").read_bytes() == DATA[:60]
    route.hits.clear()
    monkeypatch.setenv("SEEDARK_MIN_DOWNLOAD_RATE", "fast")
    with pytest.raises(UsageError, match="SEEDARK_MIN_DOWNLOAD_RATE='fast' is not a number"):
        fetch([server.url("/slow.bin")], tmp_path / "c.bin")
    assert route.hits == []  # refused before any request


def test_a_fast_server_passes_a_short_window(server: FaultyServer, tmp_path: Path) -> None:
    # whole 64 KiB chunks, 20 ms apart: 3 MB/s against a minimum of 1 kB/s over 50 ms windows
    server.add("/f.bin", DATA, chunk_delay=0.02)
    fetch([server.url("/f.bin")], tmp_path / "f.bin", sha256=sha(DATA), min_rate=1_000, rate_window=0.05)
    assert (tmp_path / "f.bin").read_bytes() == DATA


# --------------------------------------------------------------------------- HTTP errors


def test_500_then_200_is_retried_with_backoff(server: FaultyServer, tmp_path: Path, delays: list[float]) -> None:
    route = server.add("/f.bin", DATA, fail_status=500, fail_times=2)
    fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert [h.status for h in route.hits] == [500, 500, 200]
    assert delays == [0.01, 0.02]


def test_429_honours_retry_after_up_to_a_cap(server: FaultyServer, tmp_path: Path, delays: list[float]) -> None:
    server.add("/a", DATA, fail_status=429, fail_times=1, retry_after="0.25")
    server.add("/b", DATA, fail_status=429, fail_times=1, retry_after="3600")
    fetch([server.url("/a")], tmp_path / "a", size=len(DATA))
    fetch([server.url("/b")], tmp_path / "b", size=len(DATA))
    assert delays == [0.25, 0.5]  # 0.5 is RETRY_MAX_DELAY in these tests


def test_persistent_5xx_gives_up_with_a_clear_error(server: FaultyServer, tmp_path: Path) -> None:
    route = server.add("/f.bin", DATA, fail_status=503, fail_times=-1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], dest, size=len(DATA), retries=3)
    assert "HTTP 503" in info.value.reason and server.url("/f.bin") in info.value.reason
    assert len(route.hits) == 4
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(("status", "words"), [(404, "not at this address"), (403, "access denied")])
def test_404_and_403_fail_at_once_and_the_next_source_is_tried(
    server: FaultyServer, tmp_path: Path, status: int, words: str
) -> None:
    bad = server.add("/gone", DATA, fail_status=status, fail_times=-1)
    good = server.add("/f.bin", DATA)
    fetch([server.url("/gone"), server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA))
    assert len(bad.hits) == 1 and len(good.hits) == 1
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/gone")], tmp_path / "g.bin", size=len(DATA))
    assert f"HTTP {status}" in info.value.reason and words in info.value.reason
    assert len(bad.hits) == 2  # no retries
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()


def test_every_source_failing_lists_each(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/a", DATA, fail_status=404, fail_times=-1)
    server.add("/b", DATA, html=QUOTA_PAGE)
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/a"), server.url("/b")], tmp_path / "f", retries=0)
    first, *rest = info.value.reason.splitlines()
    # the first line says what failed; then each source with its reason
    assert first == "HTTP 404 Not Found: the file is not at this address; every other source failed too:"
    assert rest[0] == f"  {server.url('/a')}: HTTP 404 Not Found: the file is not at this address"
    assert rest[1].startswith(f"  {server.url('/b')}: the server sent a web page") and len(rest) == 2


# --------------------------------------------------------------------------- no network: fail at once

# A name under .invalid never resolves (RFC 6761): a real resolver failure, offline or not, with no
# packet leaving the machine on a resolver that honours the RFC (glibc's answers it locally here).
UNRESOLVABLE = "seedark-test.invalid"


@pytest.fixture
def resolver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Let names under .invalid reach the real resolver (the test guard blocks every other name), counting lookups."""
    guarded = socket.getaddrinfo
    calls: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.endswith(".invalid"):
            calls.append(name)
            return REAL_GETADDRINFO(host, *args, **kwargs)
        return guarded(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_a_host_that_does_not_resolve_fails_at_once(
    tmp_path: Path, resolver_calls: list[str], delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="seedark")
    with pytest.raises(DownloadError) as info:
        fetch([f"https://{UNRESOLVABLE}/f.bin"], tmp_path / "f.bin", retries=4)
    assert info.value.reason == f"cannot resolve host {UNRESOLVABLE} (no network?)"
    assert resolver_calls == [UNRESOLVABLE]  # one attempt, one lookup
    assert delays == [] and "retrying" not in caplog.text
    assert no_leftovers(tmp_path)


def test_a_refused_connection_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port that was just free: nobody listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guarded = socket.socket.connect
    attempts: list[object] = []

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family == socket.AF_INET and address[1] == port:
            attempts.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    caplog.set_level(logging.DEBUG, logger="seedark")
    with pytest.raises(DownloadError) as info:
        fetch([f"http://127.0.0.1:{port}/f"], tmp_path / "f", retries=4)
    assert info.value.reason == f"connection refused by 127.0.0.1:{port} (is the server down?)"
    assert attempts == [("127.0.0.1", port)] and delays == [] and "retrying" not in caplog.text
    assert no_leftovers(tmp_path)


def test_a_dead_source_does_not_stop_the_next(server: FaultyServer, tmp_path: Path, resolver_calls: list[str]) -> None:
    good = server.add("/f.bin", DATA)
    fetch([f"https://{UNRESOLVABLE}/f.bin", server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA))
    assert resolver_calls == [UNRESOLVABLE] and len(good.hits) == 1
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_503_is_retried_with_a_short_log_line(
    server: FaultyServer, tmp_path: Path, delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    route = server.add("/f.bin", DATA, fail_status=503, fail_times=1)
    caplog.set_level(logging.INFO, logger="seedark")
    fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA))
    assert [h.status for h in route.hits] == [503, 200] and delays == [0.01]
    host = server.base_url.removeprefix("http://")
    retry = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retry == [f"HTTP 503 Service Unavailable (server error); retrying {host} in 0.0 s (1/4)"]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_connection_reset_mid_body_is_retried(
    server: FaultyServer, tmp_path: Path, delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # the server aborts the connection (TCP RST, not a clean close) after 100,000 bytes, once
    route = server.add("/f.bin", DATA, drop_after=100_000, drop_times=1, reset=True)
    caplog.set_level(logging.INFO, logger="seedark")
    fetch([server.url("/f.bin")], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert [h.status for h in route.hits] == [200, 206] and route.hits[0].sent == 100_000
    host = server.base_url.removeprefix("http://")
    retry = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retry == [f"connection lost after 100,000 bytes; retrying {host} in 0.0 s (1/4)"]
    assert delays == [0.01]  # retried after a backoff, not given up


def test_the_cli_says_what_failed_first_then_how_to_install_by_hand(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    resolver_calls: list[str],
    delays: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEEDARK_MIRROR", f"https://{UNRESOLVABLE}/sid")
    code, _, err = run_cli(capsys, "models", "download", "sony")
    assert code == 1 and delays == [] and resolver_calls == [UNRESOLVABLE]
    lines = [line for line in err.splitlines() if line.startswith("seedark: error:")]
    assert lines == [
        "seedark: error: cannot download model 'sony' (model.ckpt.index): "
        f"cannot resolve host {UNRESOLVABLE} (no network?)"
    ]
    guide = err[err.index(lines[0]) + len(lines[0]) :]
    assert guide.startswith("\n\nTo install the sony model by hand") and "seedark models import sony <folder>" in guide
    assert f"https://{UNRESOLVABLE}/sid/sony/model.ckpt.index" in guide
    assert "retrying" not in err


# --------------------------------------------------------------------------- web pages instead of data


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_instead_of_data_is_refused_not_saved(
    server: FaultyServer, tmp_path: Path, content_type: str
) -> None:
    route = server.add("/f.bin", DATA, html=QUOTA_PAGE, html_content_type=content_type)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], dest, size=len(DATA))
    assert "web page instead of the file" in info.value.reason
    assert "Quota exceeded" in info.value.reason and server.url("/f.bin") in info.value.reason
    assert len(route.hits) == 1  # not retried: it is an answer, not an accident
    assert no_leftovers(tmp_path)


def test_drive_confirmation_page_is_followed(server: FaultyServer, tmp_path: Path) -> None:
    confirm, payload = server.add_drive("FILEID", DATA)
    url = server.url("/uc?export=download&id=FILEID")
    fetch([url], tmp_path / "f.bin", size=len(DATA), sha256=sha(DATA), downloaders=LOCAL_DRIVE)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert len(confirm.hits) == 1 and len(payload.hits) == 1


def test_a_confirmation_page_from_a_plain_http_host_is_refused(server: FaultyServer, tmp_path: Path) -> None:
    """Only the Drive downloader follows Drive's page: any other host's page is refused, never followed."""
    confirm, payload = server.add_drive("FILEID", DATA)
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/uc?export=download&id=FILEID")], tmp_path / "f.bin", size=len(DATA))
    reason = info.value.reason
    assert "web page instead of the file" in reason and "'Google Drive - Virus scan warning'" in reason
    assert len(confirm.hits) == 1 and payload.hits == []
    assert no_leftovers(tmp_path)


def test_drive_quota_page_after_confirmation_is_refused(server: FaultyServer, tmp_path: Path) -> None:
    _, payload = server.add_drive("FILEID", DATA)
    payload.html = QUOTA_PAGE
    with pytest.raises(DownloadError) as info:
        url = server.url("/uc?export=download&id=FILEID")
        fetch([url], tmp_path / "f.bin", size=len(DATA), downloaders=LOCAL_DRIVE)
    assert "web page" in info.value.reason
    assert no_leftovers(tmp_path)


def test_drive_confirmation_url_parsing() -> None:
    page = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="hidden" name="id" value="X1"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form>'
    )
    assert drive_confirmation_url(page, "https://drive.google.com/uc?id=X1") == (
        "https://drive.usercontent.google.com/download?id=X1&export=download&confirm=t&uuid=u-1"
    )
    old = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbCd&amp;id=X1">Download anyway</a>'
    assert drive_confirmation_url(old, "https://drive.google.com/uc?id=X1") == (
        "https://drive.google.com/uc?export=download&confirm=AbCd&id=X1"
    )
    jar = requests.cookies.RequestsCookieJar()
    jar.set("download_warning_123", "tok")
    assert drive_confirmation_url("<html></html>", "https://drive.google.com/uc?id=X1", jar) == (
        "https://drive.google.com/uc?id=X1&confirm=tok"
    )
    assert drive_confirmation_url(QUOTA_PAGE, "https://drive.google.com/uc?id=X1") is None


def test_the_downloader_is_chosen_by_host_then_scheme() -> None:
    drive, plain = choose.DOWNLOADERS["drive.google.com"], choose.DOWNLOADERS["https"]
    assert isinstance(drive, gdrive.GoogleDriveDownloader) and type(plain) is http.HTTPDownloader
    # the registry's own Drive URLs, both forms
    assert choose.choose_downloader("https://drive.google.com/uc?export=download&id=X1") is drive
    assert choose.choose_downloader("https://DRIVE.usercontent.google.com/download?id=X1&confirm=t") is drive
    for url in ("https://raw.githubusercontent.com/a/b", "http://127.0.0.1:8000/f", "HTTPS://mirror.example/f"):
        assert choose.choose_downloader(url) is plain, url
    # no scheme, an unknown one, a malformed URL: plain HTTP, which says what is wrong with it
    for url in ("ftp://example.com/f", "example.com/f", "http://[::1/f"):
        assert type(choose.choose_downloader(url)) is http.HTTPDownloader, url
    # a caller extends the table in a mapping of its own; the module's table stays as it was
    assert choose.choose_downloader("http://127.0.0.1:8000/f", LOCAL_DRIVE) is LOCAL_DRIVE["127.0.0.1"]
    assert "127.0.0.1" not in choose.DOWNLOADERS
    with pytest.raises(TypeError):
        choose.DOWNLOADERS["127.0.0.1"] = drive  # type: ignore[index]


# --------------------------------------------------------------------------- verification


def test_wrong_bytes_fail_sha256_and_nothing_is_kept(server: FaultyServer, tmp_path: Path) -> None:
    bad = bytearray(DATA)
    bad[1234] ^= 0xFF
    server.add("/f.bin", DATA, wrong_bytes=bytes(bad))
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], dest, size=len(DATA), sha256=sha(DATA))
    assert "failed verification" in info.value.reason and "sha256" in info.value.reason
    assert no_leftovers(tmp_path)


def test_wrong_bytes_from_one_source_then_good_from_the_next(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/bad", DATA, wrong_bytes=DATA[::-1])
    server.add("/good", DATA)
    fetch([server.url("/bad"), server.url("/good")], tmp_path / "f", size=len(DATA), sha256=sha(DATA))
    assert (tmp_path / "f").read_bytes() == DATA


def test_crc_validation_of_a_checkpoint_data_file(server: FaultyServer, tmp_path: Path, checkpoint: Path) -> None:
    index = checkpoint.with_name("model.ckpt.index")
    data = checkpoint.with_name("model.ckpt.data-00000-of-00001").read_bytes()
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x01
    server.add("/good", data)
    server.add("/bad", bytes(bad))
    dest = tmp_path / "dl" / "model.ckpt.data-00000-of-00001"

    def validate(p: Path) -> None:
        verify_data_file(index, p)

    with pytest.raises(DownloadError) as info:
        fetch([server.url("/bad")], dest, size=len(data), validate=validate)
    assert "CRC32C" in info.value.reason
    assert no_leftovers(dest.parent)
    fetch([server.url("/good")], dest, size=len(data), validate=validate)
    assert dest.read_bytes() == data


def test_size_mismatch_is_refused(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/f.bin", DATA)
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], tmp_path / "f", size=len(DATA) - 4)
    assert "expected" in info.value.reason
    assert no_leftovers(tmp_path)


def test_validate_may_raise_any_seedark_error(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/f.bin", DATA)

    def refuse(p: Path) -> None:
        raise WeightsError("tensor 'x' fails its CRC32C check", p)

    with pytest.raises(DownloadError, match="CRC32C"):
        fetch([server.url("/f.bin")], tmp_path / "f", validate=refuse)
    assert no_leftovers(tmp_path)


# --------------------------------------------------------------------------- local failures


def test_offline_mode_never_touches_the_network(
    server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = server.add("/f.bin", DATA)
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        fetch([server.url("/f.bin")], tmp_path / "f")
    assert route.hits == []


def test_disk_full_is_reported_and_the_partial_removed(server: FaultyServer, tmp_path: Path) -> None:
    server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    os.symlink("/dev/full", dest.with_name("f.bin.part"))  # every write fails with ENOSPC
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], dest, size=len(DATA))
    assert "disk full" in info.value.reason
    assert no_leftovers(tmp_path)


def test_unwritable_folder_is_reported(server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.add("/f.bin", DATA)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(http, "open", denied, raising=False)
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/f.bin")], tmp_path / "f.bin")
    assert "not writable" in info.value.reason and "SEEDARK_HOME" in info.value.reason


def test_a_file_in_the_way_of_the_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    with pytest.raises(DownloadError) as info:
        fetch(["http://127.0.0.1:9/f"], tmp_path / "blocker" / "sub" / "f")
    assert "a file is in the way" in info.value.reason


def test_the_tests_cannot_reach_the_internet(tmp_path: Path) -> None:
    with pytest.raises(InternetBlocked):
        socket.create_connection(("93.184.215.14", 80), timeout=1)
    with pytest.raises(DownloadError) as info:
        fetch(["http://example.com/f"], tmp_path / "f", retries=0)
    assert "never touch the internet" in info.value.reason
