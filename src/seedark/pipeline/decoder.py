"""The batch's decoder process, all of its life: started, fed, restarted after a crash, ended.

LibRaw is C code: a hostile file that crashes it kills only this process, which
is restarted; the file is reported as failed. The process runs the decoder
(:func:`seedark.frames.prepare.prepare_file`, or a caller's) and imports no
torch: unpickling its initializer imports only this module, which imports none.

Stopping is the parent's business: Ctrl-C reaches the whole process group and
``systemctl stop`` sends SIGTERM to every process of the service, but only the
parent knows whether to finish the image in hand, so the decoder ignores both
(:data:`STOP_SIGNALS`). It still ends with the batch, however the batch ends,
SIGKILL included (:func:`decoder_started`).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from pathlib import Path

from seedark.frames.prepare import Prepared

#: What decodes one file: ``decoder(path, ratio)``, the ratio parsed already (None: auto).
Decoder = Callable[[Path, "float | None"], Prepared]

#: Signals the batch's parent process answers for its decoder process (see the module's text).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# prctl(2) option: the signal this process gets when the thread that started it exits.
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------- in the decoder process


def decoder_started(lifeline: Connection) -> None:
    """Set up a decoder process (runs there, first): leave stopping to the parent, and die with it.

    The parent may be killed outright (SIGKILL, the OOM killer): no handler of its runs, and
    the decoder, which waits for work on a pipe it also holds the write end of, would wait for
    ever, and keep the pool's resource_tracker alive with it. ``lifeline`` is the read end of a
    pipe only the parent can write to, so it reads end-of-file exactly when the parent is gone,
    however it went; on Linux the kernel also kills this process then (PR_SET_PDEATHSIG), even
    while LibRaw holds the interpreter.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # before unblocking: one that came while starting is dropped
    if hasattr(signal, "pthread_sigmask"):  # POSIX: the parent started this process with them blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl: the lifeline still works
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_exit_with, args=(lifeline,), name="seedark-lifeline", daemon=True).start()


def _exit_with(lifeline: Connection) -> None:
    # The parent never writes: any end of waiting means it is gone (or wants this process gone).
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    # What PR_SET_PDEATHSIG does on Linux, by hand: nothing to save (a decoder only reads), and
    # this ends only the decoder process, never the caller's (Windows: TerminateProcess).
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


# --------------------------------------------------------------------------- in the batch's process


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while a decoder process is started, for its sake and ours.

    The process inherits the blocked mask, so a Ctrl-C that comes while it imports waits
    for :func:`decoder_started` to drop it instead of printing a traceback; here the
    signal is only delayed until the process exists (as CPython does for its resource_tracker).
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to signal
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class DecoderProcess:
    """Runs ``decoder`` in a child process (or, without ``isolate``, right here) and survives it crashing."""

    def __init__(self, decoder: Decoder, ratio: float | None, isolate: bool) -> None:
        self.decoder = decoder
        self.ratio = ratio
        self.isolate = isolate
        self.pool: ProcessPoolExecutor | None = None
        # (read end, write end): the decoder process holds only the read end (decoder_started)
        self.lifeline: tuple[Connection, Connection] | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            if self.lifeline is None:
                self.lifeline = multiprocessing.Pipe(duplex=False)
            self.pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=decoder_started,
                initargs=(self.lifeline[0],),
            )
        return self.pool

    def submit(self, source: Path) -> Future[Prepared]:
        if not self.isolate:
            fut: Future[Prepared] = Future()
            try:
                fut.set_result(self.decoder(source, self.ratio))
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        try:
            pool = self._pool()  # made first: starting its resource_tracker unblocks the signals
            with stop_signals_blocked():  # the process starts on the pool's first submit
                return pool.submit(self.decoder, source, self.ratio)
        except BrokenProcessPool as exc:
            # An earlier file crashed the decoder; that file is blamed when its
            # future is read, and this one is resubmitted then.
            broken: Future[Prepared] = Future()
            broken.set_exception(exc)
            return broken

    def restart(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def close(self, *, at_once: bool = False) -> None:
        """End the decoder process once it has decoded the file in hand, or ``at_once``
        (interrupted: that file is not wanted, and a large one takes seconds)."""
        if at_once:
            self._cut()  # the process exits on the spot (decoder_started), the pool sees it gone
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._cut()

    def _cut(self) -> None:
        if self.lifeline is not None:
            for end in self.lifeline:
                end.close()
            self.lifeline = None


__all__ = ["STOP_SIGNALS", "Decoder", "DecoderProcess", "decoder_started", "stop_signals_blocked"]
