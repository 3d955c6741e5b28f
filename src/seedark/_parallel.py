"""Process helpers: an ordered parallel map on threads (numpy and zlib release the GIL on
large buffers), freed heap memory handed back to the OS, and what native libraries print.

Native libraries (LibRaw, OpenVINO's XML parser) write straight to file descriptor 2,
past ``sys.stderr``, so neither ``-q`` nor a host application's redirection stops it.
The library must not print: around such a call, fd 2 goes to a temporary file, and
what was written there becomes part of an error message or a log line instead.
seedark's own log lines made meanwhile (the metadata reader's warnings, say: metadata
is read from the file LibRaw has open) are held and logged once fd 2 is back.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar


def worker_count() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


_T = TypeVar("_T")


def ordered_parallel(job: Callable[[int], _T], count: int) -> Iterator[_T]:
    """``job(0) .. job(count-1)`` run on worker threads, results yielded in order.

    numpy and zlib release the GIL on large buffers, so threads give real parallelism
    here; at most two jobs per worker are in flight, which bounds memory.
    """
    workers = worker_count()
    if workers == 1 or count <= 1:
        yield from map(job, range(count))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[_T]] = deque()
        nxt = 0
        try:
            while nxt < count or pending:
                while nxt < count and len(pending) < 2 * workers:
                    pending.append(pool.submit(job, nxt))
                    nxt += 1
                yield pending.popleft().result()
        finally:
            # On error (or the consumer giving up) don't start the jobs still queued.
            for fut in pending:
                fut.cancel()


@contextlib.contextmanager
def alongside(job: Callable[[], object]) -> Iterator[None]:
    """Run ``job`` on a thread while the block runs; wait for it at the end of the block (its
    errors are its own to handle: ``job`` should catch them)."""
    thread = threading.Thread(target=job, name="seedark-alongside", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def release_heap(*, collect: bool = True) -> None:
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere), after
    collecting garbage unless ``collect`` is False (a full collection takes ~0.1 s
    once torch is loaded).

    Freed small and medium blocks stay in the process (and in its RSS) otherwise,
    on top of everything the frame allocates later.
    """
    if collect:
        gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# One capture at a time: fd 2 is one per process.
_STDERR_LOCK = threading.Lock()


class _Held(logging.Handler):
    """Keeps the records it is given, to be logged later."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _own_log_held() -> Iterator[None]:
    """seedark's log records made during the block are logged after it, not into the capture."""
    log = logging.getLogger("seedark")
    held = _Held()
    # new lists, not edits in place: another thread may be going through the old one
    handlers, propagate = log.handlers, log.propagate
    log.handlers, log.propagate = [held], False
    try:
        yield
    finally:
        log.handlers, log.propagate = handlers, propagate
        for record in held.records:
            log.handle(record)


def _flush_c_stdio() -> None:
    """C's stdio buffers hold a library's messages until flushed."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - e.g. Windows without a C runtime handle
        pass


@contextlib.contextmanager
def capture_c_stderr(sink: list[str]) -> Iterator[None]:
    """Collect what native code prints on fd 2 during the block into ``sink`` (one entry, its
    lines joined, each without its ``source: `` prefix; nothing when nothing was printed)."""
    # C code writes to fd 2 whatever Python's sys.stderr is (a log file, pytest's capture).
    fd = 2
    with _STDERR_LOCK, _own_log_held(), tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            _flush_c_stdio()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace").strip()
            if text:
                sink.append(" ".join(line.split(": ", 1)[-1] for line in text.splitlines()))
