"""Stage 1 of the pipeline: decode a RAW file and make the network's input (lazily).

Nothing here imports torch, so the batch decoder process starts quickly and
stays small: the process runs :func:`prepare_file` and starts with
:func:`decoder_started`, and unpickling either imports only this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from seedark.frames.exposure import auto_ratio, parse_ratio
from seedark.frames.packing import PackedFrame, sensor_area
from seedark.io.metadata import CameraMetadata
from seedark.io.raw import RawFrame, read_raw


@dataclass
class Prepared:
    """A frame ready for the network: everything later stages need (the mosaic, inside ``packed``)."""

    path: Path
    sensor: str
    #: The amplified network input, H x W x C float32, packed window by window as tiles need it
    #: (``np.asarray(packed)`` for the whole array).
    packed: PackedFrame
    ratio: float
    auto_ratio: bool
    height: int  # size of the sensor area the output covers (before orientation)
    width: int
    flip: int
    camera: CameraMetadata = field(default_factory=CameraMetadata)
    camera_wb: tuple[float, float, float] = (1.0, 1.0, 1.0)


def prepare(frame: RawFrame, ratio: float | str | None = "auto") -> Prepared:
    """Choose the ratio; the input is packed and amplified lazily, tile by tile (``PackedFrame``)."""
    return prepare_parsed(frame, parse_ratio(ratio))


def prepare_parsed(frame: RawFrame, given: float | None) -> Prepared:
    """:func:`prepare` with the ratio parsed already (``parse_ratio``): a number > 0, or None for auto."""
    value = auto_ratio(frame) if given is None else given
    packed = PackedFrame(frame, value)
    _, _, h, w = sensor_area(frame)
    return Prepared(
        frame.path, frame.sensor, packed, value, given is None, h, w, frame.flip, frame.camera, frame.camera_wb
    )


def prepare_file(path: str | os.PathLike[str], ratio: float | str | None = "auto") -> Prepared:
    """Decode and prepare one file (a top-level function, so a decoder process can run it)."""
    return prepare(read_raw(path), ratio)


#: Signals the batch's parent process answers for its decoder process: the terminal sends
#: Ctrl-C to the whole process group, and ``systemctl stop`` sends SIGTERM to every process
#: of the service, but only the parent knows whether to finish the image in hand.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# prctl(2) option: the signal this process gets when the thread that started it exits.
_PR_SET_PDEATHSIG = 1


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
