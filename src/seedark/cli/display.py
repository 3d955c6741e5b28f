"""What the user sees on stderr: progress bars, batch lines, log lines."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, TextIO

import click

from seedark.io.text import printable

log = logging.getLogger("seedark")


def safe(text: object) -> str:
    """Text for the terminal: file names and strings from files may hold escape sequences or
    undecodable bytes; each line is made printable (the line breaks of a message stay)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def print_path(path: os.PathLike[str]) -> None:
    """A written path on stdout: made printable for a person at a terminal, the exact bytes
    for a script (``$(seedark enhance ...)`` must get the real name, whatever its encoding)."""
    if sys.stdout.isatty():
        click.echo(safe(path))
    else:
        click.echo(os.fsencode(path))


class Progress:
    """A one-line progress bar on stderr, shown only on a terminal and only after a moment."""

    def __init__(self, label: str, unit: str = "", *, stream: TextIO | None = None, delay: float = 0.5) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.delay = delay
        self.start = time.monotonic()
        self.shown = False
        self.enabled = self.stream.isatty()

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        finished = total is not None and done >= total
        if elapsed < self.delay and not self.shown:
            return
        width = 30
        if total:
            frac = min(1.0, done / total)
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            count = human(done, self.unit) + "/" + human(total, self.unit)
            self.stream.write(f"\r{self.label} [{bar}] {count} {elapsed:5.1f}s")
        else:
            self.stream.write(f"\r{self.label} {human(done, self.unit)} {elapsed:5.1f}s")
        self.shown = True
        if finished:
            self.stream.write("\n")
            self.shown = False
            self.enabled = False
        self.stream.flush()


def human(n: int, unit: str) -> str:
    if unit != "B":
        return f"{n}{unit}"
    size = float(n)
    for suffix in ("B", "kB", "MB", "GB"):
        if size < 1000 or suffix == "GB":
            return f"{size:.0f}{suffix}" if suffix == "B" else f"{size:.1f}{suffix}"
        size /= 1000
    return f"{n}B"  # pragma: no cover


class StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (it may be replaced after setup)."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing sensible left to do
            sys.stderr.write(safe(self.format(record)) + "\n")


def setup_logging(verbose: int, quiet: bool) -> None:
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("seedark: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


class BatchDisplay:
    """Overall progress: a bar on a terminal, plain lines otherwise, nothing with --quiet."""

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.timed = 0

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        name = event.source.name
        if event.kind == "converted":
            self.timed += 1
            line = f"converted {name} -> {event.output} (ratio x{event.ratio:.1f}, {event.seconds:.1f} s)"
        elif event.kind == "skipped":
            line = f"skipped {name}: {event.output} exists"
        else:
            line = f"failed {name}: {event.reason}"
        if not self.tty:
            self.stream.write(f"[{event.done}/{event.total}] {safe(line)}\n")
        else:
            elapsed = time.monotonic() - self.start
            left = event.total - event.done
            eta = f" ETA {elapsed / self.timed * left:.0f}s" if self.timed and left else ""
            fill = int(30 * event.done / event.total)
            bar = f"[{'#' * fill}{'-' * (30 - fill)}] {event.done}/{event.total} files{eta}"
            # the event's line scrolls up; the bar stays on the last line
            self.stream.write(f"\r\x1b[K{safe(line)}\n{bar}" + ("\n" if not left else ""))
        self.stream.flush()
