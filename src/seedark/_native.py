"""What native libraries print: their messages on fd 2, collected instead of reaching the terminal.

C and C++ code (LibRaw, OpenVINO's XML parser) writes straight to file descriptor 2,
past ``sys.stderr``, so neither ``-q`` nor a host application's redirection stops it.
The library must not print: around such a call, fd 2 goes to a temporary file, and
what was written there becomes part of an error message or a log line instead.
seedark's own log lines made meanwhile (the metadata reader's warnings, say: metadata
is read from the file LibRaw has open) are held and logged once fd 2 is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

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
