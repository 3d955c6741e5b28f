"""A pseudo-terminal to run commands on, and the screen it would show: carriage returns and
ESC[K applied, so a line printed onto a progress bar's line shows up glued to it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import struct
import sys
import termios
import threading
import tty
from collections.abc import Iterator

import pytest

ESCAPE = re.compile(r"(\r|\x1b\[[0-9;?]*[A-Za-z])")


def screen(raw: bytes) -> list[str]:
    """The lines a terminal shows for ``raw`` (written with no newline translation)."""
    lines = []
    for text in raw.decode("utf-8", errors="replace").split("\n"):
        cells: list[str] = []
        col = 0
        for part in ESCAPE.split(text):
            if part == "\r":
                col = 0
            elif part.startswith("\x1b["):
                if part.endswith("K"):  # erase to the end of the line
                    del cells[col:]
            else:
                for ch in part:
                    cells[col : col + 1] = [ch]
                    col += 1
        lines.append("".join(cells).rstrip())
    return [line for line in lines if line]


@contextlib.contextmanager
def terminal(columns: int = 150, rows: int = 40) -> Iterator[tuple[int, list[bytes]]]:
    """A pseudo-terminal of this size: yields its slave fd and what was read from it so far."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # no \n -> \r\n: the carriage returns read back are the program's own
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    got: list[bytes] = []

    def drain() -> None:  # read as it comes, so a full terminal buffer never blocks the writer
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the slave side
                return
            if not data:
                return
            got.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield slave, got
    finally:
        with contextlib.suppress(OSError):
            os.close(slave)
        reader.join(timeout=60)
        os.close(master)


def run_on_terminal(*args: str, columns: int = 150, rows: int = 40) -> tuple[int, list[str]]:
    """``seedark ARGS`` in this process, with stderr on a terminal; the exit code and the screen's lines."""
    from seedark.cli import main

    with terminal(columns, rows) as (slave, got), open(slave, "w", encoding="utf-8", closefd=False) as stderr:
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as info:
            patch.setattr(sys, "stderr", stderr)
            main(list(args))
        stderr.flush()
    return int(info.value.code or 0), screen(b"".join(got))
