"""Decoders and processes for batch tests; importable by the spawned decoder process.

Run as ``python -m helpers.batchhelpers COMMAND ...`` (with ``src`` and ``tests`` on
PYTHONPATH) it is also a parent process the tests control:

* ``hold-last NAME SEEDARK-ARGS...`` runs the seedark command line, but the writer thread
  stops just before publishing ``NAME`` (complete and fsync'ed, still a hidden ``.part``)
  until the main thread, waiting for the writer at the end of the batch, has been
  interrupted; ``holding`` on stdout says when to send the signal.
* ``startup-mask`` starts a decoder process the way a batch does and prints the signals that
  process had blocked while it imported its main module, then those it has blocked and
  ignores when it decodes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing import parent_process
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from helpers.pngread import decode_png
from seedark.frames.prepare import Prepared, prepare_file
from seedark.pipeline.decoder import decoder_started

#: The signals blocked when this module was imported: in a decoder process started from
#: ``python -m helpers.batchhelpers``, that is while the process started (its main module).
STARTUP_BLOCKED = sorted(map(int, signal.pthread_sigmask(signal.SIG_BLOCK, [])))


def crashing_decoder(path: Path, ratio: float | None) -> Prepared:
    """Behaves like LibRaw meeting a hostile file: the process dies on the spot."""
    if "hostile" in Path(path).name:
        os.kill(os.getpid(), signal.SIGSEGV)
    return prepare_file(path, ratio)


def exiting_decoder(path: Path, ratio: float | None) -> Prepared:
    if "hostile" in Path(path).name:
        os._exit(3)
    return prepare_file(path, ratio)


def checking_decoder(path: Path, ratio: float | None) -> Prepared:
    """The real decoder, refusing to work unless in a decoder process that has not imported torch."""
    prepared = prepare_file(path, ratio)
    if parent_process() is None:
        raise RuntimeError("decoded in the batch's own process")
    if "torch" in sys.modules:
        raise RuntimeError("the decoder process imported torch")
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN or signum in signal.pthread_sigmask(signal.SIG_BLOCK, []):
            raise RuntimeError(f"the decoder process does not ignore {signal.Signals(signum).name}")
    return prepared


def startup_mask(path: Path, ratio: float | None) -> tuple[list[int], list[int], list[int]]:
    """(blocked while starting, blocked now, ignored now), from inside a decoder process."""
    ignored = [int(s) for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is signal.SIG_IGN]
    return STARTUP_BLOCKED, sorted(map(int, signal.pthread_sigmask(signal.SIG_BLOCK, []))), ignored


def idle_decoder(lifeline: Connection, control: Connection) -> None:
    """A decoder process that does nothing but answer ``control``, until its lifeline ends it."""
    decoder_started(lifeline)
    while True:
        control.send_bytes(control.recv_bytes())


# --------------------------------------------------------------------------- processes


def nearly_full_pipe() -> tuple[int, int]:
    """A pipe with room for one page (4 KiB) more: a writer then waits until it is read.

    Linux keeps a pipe's data in pages: a write of up to 4 KiB goes whole into the last
    page if it fits there, else into a free page, else it waits. So once this page is
    full, the next line that does not fit in what is left of it waits.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"\0" * 4096)
    os.set_blocking(write_end, True)
    assert len(os.read(read_end, 4096)) == 4096  # one page free again
    return read_end, write_end


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Wait for an event the test cannot be told of directly; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def gone(process: psutil.Process) -> bool:
    """Exited: a zombie that its new parent (PID 1 here) has not reaped yet runs no more."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(processes: Iterable[psutil.Process], timeout: float = 30) -> None:
    left = list(processes)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: all(gone(p) for p in left), "the processes to end", timeout)
    alive = [(p.pid, kind(p)) for p in left if not gone(p)]
    assert not alive, f"left behind: {alive}"


def kind(process: psutil.Process) -> str:
    """'decoder', 'resource_tracker' or 'other', from a multiprocessing child's command line."""
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile (or a zombie): a short-lived helper of some library
        return "other"
    return "resource_tracker" if "resource_tracker" in line else "decoder" if "spawn_main" in line else "other"


def interrupted_part_way(out: Path, err: str, size: tuple[int, int], total: int = 6) -> list[str]:
    """Checks a batch of n0.dng... interrupted part way: the files done are complete and published
    under their final names, the others absent (no hidden temporary, no partial image), and the
    summary counts them. Returns the names done."""
    names = sorted(p.name for p in out.iterdir())
    done = len(names)
    assert 1 <= done < total and names == [f"n{i}.png" for i in range(done)], (names, err)
    for name in names:
        assert decode_png(out / name)[1].shape == (*size, 3)
    assert f"seedark: converted {done}, skipped 0, failed 0 (interrupted" in err, err
    return names


def maps_torch(process: psutil.Process) -> bool:
    """Whether torch's libraries are mapped into the process (they are once it imports torch)."""
    return any(f"{os.sep}torch{os.sep}" in m.path for m in process.memory_maps())


# --------------------------------------------------------------------------- as a parent process


def _main_thread_waits_for_writer() -> bool:
    """Whether the batch's main thread is blocked (in ``threading``) at the end of its run."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None:
        if frame.f_code.co_filename.endswith("batch.py") and frame.f_code.co_name in ("run", "_finish"):
            return True
        frame = frame.f_back
    return False


def _hold_last(name: str) -> None:
    import seedark._files as files
    import seedark.pipeline.batch as batch

    runs: list[Any] = []
    real_init, real_publish = batch._BatchRun.__init__, files.publish

    def init(self: Any, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        runs.append(self)

    def publish(tmp: Path, final: Path, *args: Any, **kw: Any) -> None:
        if final.name == name:
            wait_for(_main_thread_waits_for_writer, "the main thread to wait for the writer")
            print("holding", flush=True)
            runs[-1].stop.wait()  # set once the interrupt has been received; the file is still to publish
        real_publish(tmp, final, *args, **kw)

    batch._BatchRun.__init__ = init  # type: ignore[method-assign]
    files.publish = publish


def _startup_mask() -> None:
    from seedark.pipeline.decoder import DecoderProcess

    decoder = DecoderProcess(startup_mask, None, isolate=True)  # type: ignore[arg-type]
    try:
        print(decoder.submit(Path("unused")).result(timeout=120), flush=True)
    finally:
        decoder.close()


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "startup-mask":
        _startup_mask()
    else:
        _hold_last(rest[0])
        from seedark.cli import main

        main(rest[1:])
