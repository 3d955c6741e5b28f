"""What the user sees on stderr: progress bars, batch lines, log lines."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

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
    if not sys.stdout.isatty():
        click.echo(os.fsencode(path))
    elif _bars:  # stdout and stderr are most likely the same terminal: not on the bar's line either
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stdout):
            click.echo(safe(path))
    else:
        click.echo(safe(path))


# The bars now drawn on stderr: while one is, every other line goes through tqdm.write, which clears
# the bar, prints the line and draws the bar again below it (a plain write would land on the bar's line).
_bars: list[Any] = []


def open_bar(**options: Any) -> Any:
    """A tqdm bar on the current stderr. It animates only on a terminal (``disable=None``): in a pipe
    or a log file a bar would be a stream of carriage returns, so there it is silent.
    tqdm is imported here, not with the module: ``seedark --help`` must not pay for it."""
    from tqdm import tqdm

    bar = tqdm(file=sys.stderr, disable=None, **_size(), **options)
    if not bar.disable:
        _bars.append(bar)
    return bar


def _size() -> dict[str, Any]:
    """How large a bar is drawn: as wide as the terminal, following it as it is resized. A terminal
    that says it has no columns or no rows (some consoles and containers do) would leave tqdm no room,
    so it would draw nothing at all: then the size is fixed, without the bar itself where there are no
    columns (the counts, rate and ETA only) and with tqdm's 20 rows where there are no rows."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # not a terminal: the bar is disabled anyway
        return {"dynamic_ncols": True}
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": max(size.columns, 0), "nrows": size.lines if size.lines > 0 else 20}


def same_terminal() -> bool:
    """Whether stdout and stderr are one terminal, as in a shell without redirection: a line on
    stderr that names a file is then already in front of the person stdout would tell again."""
    try:
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
        return os.isatty(out) and os.isatty(err) and os.path.samestat(os.fstat(out), os.fstat(err))
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (a test's capture)
        return False


def close_bar(bar: Any) -> None:
    """Draw ``bar`` a last time and end its line."""
    if bar in _bars:
        _bars.remove(bar)
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing sensible left to do
        bar.close()


def close_bars() -> None:
    """End every bar still drawn, so what comes next (a summary, an error) starts on a line of its own."""
    for bar in list(_bars):
        close_bar(bar)


@contextlib.contextmanager
def bars_closed() -> Iterator[None]:
    """Bars an error or Ctrl-C left open are closed before the error is printed."""
    try:
        yield
    finally:
        close_bars()


def write_line(text: str) -> None:
    """One line on stderr, above the bars if any are drawn."""
    if _bars:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Progress:
    """Draws a library progress callback ``(done, total)`` as a tqdm bar: counted work (tiles, files,
    steps) with its rate and ETA, or bytes (``unit="B"``: size, speed, ETA). The bar opens at the first
    call (on a terminal only, and only after ``delay`` seconds, so quick work shows nothing) and closes
    when ``done`` reaches ``total``."""

    def __init__(self, label: str, unit: str = "it", *, delay: float = 0.5) -> None:
        self.label, self.unit, self.delay = label, unit.strip(), delay  # tqdm's style: 3.2tiles/s, 1.5s/step
        self.postfix = ""  # shown after the counts (training: the loss); the caller may change it, and the label
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        bar = self.bar
        if bar is None:
            byte_options = {"unit_scale": True, "unit_divisor": 1000} if self.unit == "B" else {}
            # initial=done: a resumed download's speed counts only the bytes that arrive now
            bar = self.bar = open_bar(
                desc=self.label, total=total, initial=done, unit=self.unit, delay=self.delay, **byte_options
            )
        if bar.disable:  # not a terminal (a disabled tqdm keeps no state to update)
            return
        if done < bar.n:  # a download starting again from zero
            bar.reset(total)
            bar.initial = 0
        if total != bar.total:
            bar.total = total
        if bar.desc != self.label:
            bar.set_description_str(self.label, refresh=False)
        if self.postfix:
            bar.set_postfix_str(self.postfix, refresh=False)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            close_bar(self.bar)
            self.bar = None


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
    """Writes to whatever sys.stderr is at the time (it may be replaced after setup), around any bar."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing sensible left to do
            write_line(safe(self.format(record)))


def setup_logging(verbose: int, quiet: bool) -> None:
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("seedark: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


class BatchDisplay:
    """A batch's progress: each file's line, and under it a bar of files done with the ETA, on a
    terminal; the same lines prefixed ``[done/total]`` and no bar otherwise; nothing with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.started = time.time()  # tqdm's clock

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        name = event.source.name
        if event.kind == "converted":
            line = f"converted {name} -> {event.output} (ratio x{event.ratio:.1f}, {event.seconds:.1f} s)"
        elif event.kind == "skipped":
            line = f"skipped {name}: {event.output} exists"
        else:
            line = f"failed {name}: {event.reason}"
        if self.bar is None:
            self.bar = open_bar(total=event.total, unit="file", desc="batch")
            # the total is known only now, but the batch (and its first file) started earlier: the
            # rate and ETA count from then, not from a first file that took no time
            self.bar.start_t = self.bar.last_print_t = self.started
        if self.bar.disable:
            write_line(f"[{event.done}/{event.total}] {safe(line)}")
            return
        write_line(safe(line))  # scrolls up; the bar stays on the last line
        self.bar.update(event.done - self.bar.n)
        if event.done >= event.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            close_bar(self.bar)
