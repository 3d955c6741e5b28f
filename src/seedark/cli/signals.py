"""Stopping on a signal: SIGTERM is handled like Ctrl-C, by every command.

SIGTERM is what ``kill``, ``timeout``, ``systemctl stop`` and ``docker stop`` send.
Its default action ends the process at once, skipping every ``finally`` and
``except BaseException`` block, so the hidden temporary of the file being written
stays behind (and, as PID 1 in a container, the default is to ignore it). Raising
:class:`KeyboardInterrupt` instead runs exactly the cleanup Ctrl-C runs, wherever it
is written: atomic writes remove their temporaries, a batch stops after the image
being written, training keeps only complete checkpoint folders, a download keeps
its resumable part and releases the model's lock.

The exit code tells which signal stopped the command, by the shell's convention
128 + signal number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: The signals handled like Ctrl-C, and the words the one-line message uses for each.
HANDLED = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}


class Terminated(KeyboardInterrupt):
    """A :class:`KeyboardInterrupt` raised by SIGTERM, so each ``except KeyboardInterrupt`` treats it as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class _Stop:
    """The first handled signal received while :func:`interrupts` is active (None: none yet)."""

    signum: int | None = None


def _raise(signum: int, frame: FrameType | None) -> None:
    # The first signal decides the exit code; a second one (Ctrl-C pressed again) still stops.
    if _Stop.signum is None:
        _Stop.signum = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread.

    A signal the parent process set to be ignored (a background job's SIGINT) stays
    ignored. The previous handlers come back when the block ends, so a signal that
    arrives once the command's work is over ends the process the default way.
    """
    _Stop.signum = None
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    # None: a handler set outside Python, which could not be put back
    previous = {s: h for s in HANDLED if (h := signal.getsignal(s)) is not signal.SIG_IGN and h is not None}
    for signum in previous:
        signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped_by() -> int:
    """The signal that stopped the command: the first one received, SIGINT when none was seen
    (a KeyboardInterrupt raised by Python's own handler, or by code outside :func:`interrupts`)."""
    return _Stop.signum if _Stop.signum is not None else signal.SIGINT


def exit_code() -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + int(stopped_by())


def message() -> str:
    """The one line printed when a command is stopped by a signal."""
    return f"seedark: {HANDLED.get(signal.Signals(stopped_by()), 'interrupted')}; no partial output was left behind"
