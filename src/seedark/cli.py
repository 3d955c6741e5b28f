"""Command line: parse options, call one library function, report.

Errors from the library arrive as :class:`~seedark.errors.SeedarkError` and are
printed as one line on stderr (``seedark: error: <file>: <reason>``) with the
error's exit code: 1 for failures, 2 for usage errors, 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from . import __version__
from .errors import SeedarkError

log = logging.getLogger("seedark")


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
            count = _human(done, self.unit) + "/" + _human(total, self.unit)
            self.stream.write(f"\r{self.label} [{bar}] {count} {elapsed:5.1f}s")
        else:
            self.stream.write(f"\r{self.label} {_human(done, self.unit)} {elapsed:5.1f}s")
        self.shown = True
        if finished:
            self.stream.write("\n")
            self.shown = False
            self.enabled = False
        self.stream.flush()


def _human(n: int, unit: str) -> str:
    if unit != "B":
        return f"{n}{unit}"
    size = float(n)
    for suffix in ("B", "kB", "MB", "GB"):
        if size < 1000 or suffix == "GB":
            return f"{size:.0f}{suffix}" if suffix == "B" else f"{size:.1f}{suffix}"
        size /= 1000
    return f"{n}B"  # pragma: no cover


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (it may be replaced after setup)."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing sensible left to do
            sys.stderr.write(self.format(record) + "\n")


def _setup_logging(verbose: int, quiet: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("seedark: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="seedark")
@click.option("-v", "--verbose", count=True, help="More detail on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Turn dark RAW photos into clean, bright images ("Learning to See in the Dark")."""
    _setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet}


def _quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(dict)["quiet"] = True
        log.setLevel(logging.WARNING)
    return value


def _engine_options(f: Any) -> Any:
    options = [
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet, help="No progress on stderr."),
        click.option(
            "--weights", type=click.Path(path_type=Path), help="TF checkpoint (folder or prefix) or .safetensors file."
        ),
        click.option("--model", help="Cached model name (default: sony). See 'seedark models list'."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
            default="auto",
            show_default=True,
            help="Arithmetic precision; fp32 is the reference.",
        ),
        click.option(
            "--tile",
            default="auto",
            show_default=True,
            help="Tile core size in packed pixels; 0 = whole frame, auto = from free memory.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@click.argument("raw_file", type=click.Path(path_type=Path))
@click.option(
    "--ratio",
    default="auto",
    show_default=True,
    help="Amplification (reference exposure / this exposure; paper: 100-300), or auto to estimate it.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Output file or folder (default: next to the input)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "tiff", "jpeg"]),
    help="Output format (default: from the extension, else png).",
)
@click.option(
    "--bits", type=click.Choice(["8", "16"]), help="Bits per sample for PNG/TIFF (default: 8 for PNG, 16 for TIFF)."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--compare", is_flag=True, help="Also write <name>_compare.jpg: naively brightened input | enhanced.")
@_engine_options
@click.pass_context
def enhance(
    ctx: click.Context,
    raw_file: Path,
    ratio: str,
    output: Path | None,
    fmt: str | None,
    bits: str | None,
    overwrite: bool,
    compare: bool,
    weights: Path | None,
    model: str | None,
    device: str,
    precision: str,
    tile: str,
) -> None:
    """Enhance one RAW file."""
    from .pipeline import enhance_file

    quiet = ctx.obj["quiet"]
    written = enhance_file(
        raw_file,
        output,
        ratio=ratio,
        fmt=fmt,
        bits=int(bits) if bits else None,
        overwrite=overwrite,
        compare=compare,
        weights=weights,
        model=model,
        device=device,
        precision=precision,
        tile=tile,
        progress=None if quiet else Progress("enhancing", " tiles"),
        download_progress=None if quiet else Progress("downloading model", "B"),
    )
    click.echo(str(written))


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
            self.stream.write(f"[{event.done}/{event.total}] {line}\n")
        else:
            elapsed = time.monotonic() - self.start
            left = event.total - event.done
            eta = f" ETA {elapsed / self.timed * left:.0f}s" if self.timed and left else ""
            fill = int(30 * event.done / event.total)
            bar = f"[{'#' * fill}{'-' * (30 - fill)}] {event.done}/{event.total} files{eta}"
            # the event's line scrolls up; the bar stays on the last line
            self.stream.write(f"\r\x1b[K{line}\n{bar}" + ("\n" if not left else ""))
        self.stream.flush()


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", "outdir", type=click.Path(path_type=Path), help="Output folder (default: next to each input)."
)
@click.option("-r", "--recursive", is_flag=True, help="Look into subfolders and mirror the tree in the output folder.")
@click.option("--ratio", default="auto", show_default=True, help="Amplification for every file, or auto per file.")
@click.option("--format", "fmt", type=click.Choice(["png", "tiff", "jpeg"]), help="Output format (default png).")
@click.option("--bits", type=click.Choice(["8", "16"]), help="Bits per sample for PNG/TIFF.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them, so a re-run resumes).")
@click.option("--compare", is_flag=True, help="Also write <name>_compare.jpg beside each output.")
@_engine_options
@click.pass_context
def batch(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    outdir: Path | None,
    recursive: bool,
    ratio: str,
    fmt: str | None,
    bits: str | None,
    overwrite: bool,
    compare: bool,
    weights: Path | None,
    model: str | None,
    device: str,
    precision: str,
    tile: str,
) -> None:
    """Enhance every RAW file in folders (and files) given."""
    from .batch import run_batch

    report = run_batch(
        inputs,
        outdir,
        recursive=recursive,
        ratio=ratio,
        fmt=fmt,
        bits=int(bits) if bits else None,
        overwrite=overwrite,
        compare=compare,
        weights=weights,
        model=model,
        device=device,
        precision=precision,
        tile=tile,
        on_event=BatchDisplay(ctx.obj["quiet"]),
        download_progress=None if ctx.obj["quiet"] else Progress("downloading model", "B"),
    )
    err = sys.stderr
    summary = f"converted {len(report.converted)}, skipped {len(report.skipped)}, failed {len(report.failed)}"
    if report.interrupted:
        summary += " (interrupted: run the same command again to continue)"
    err.write(f"seedark: {summary}\n")
    for source, reason in report.failed:
        err.write(f"seedark: failed: {source}: {reason}\n")
    if report.ignored:
        log.info("ignored %d file(s) without a RAW extension", len(report.ignored))
    ctx.exit(130 if report.interrupted else 0 if report.ok else 1)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def info(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Describe RAW files: camera, sensor, levels, exposure, auto ratio, model."""
    from .info import describe

    failed = 0
    for i, path in enumerate(files):
        try:
            rows = describe(path)
        except SeedarkError as exc:
            click.echo(f"seedark: error: {exc}", err=True)
            failed += 1
            continue
        if i:
            click.echo()
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            click.echo(f"{label + ':':<{width + 1}} {value}")
    ctx.exit(1 if failed else 0)


@cli.group()
def models() -> None:
    """List, download, import and remove cached models."""


@models.command("list")
def models_list() -> None:
    """Known and cached models."""
    from .store import list_models

    rows = list_models()
    click.echo(f"{'name':<12} {'cached':<7} {'size':>9}  {'path / download':<40} description")
    for row in rows:
        if row.cached:
            size, where = (_human(row.size, "B") if row.size else "-"), str(row.path)
        else:
            size = "-"
            where = f"not cached ({_human(row.download_size, 'B')} download)" if row.download_size else "not cached"
        click.echo(f"{row.name:<12} {'yes' if row.cached else 'no':<7} {size:>9}  {where:<40} {row.description}")


@models.command("download")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Fetch again even if cached.")
@click.pass_context
def models_download(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Download, verify and convert official models."""
    from .store import download_model

    for name in names:
        bar = None if ctx.obj["quiet"] else Progress(f"downloading {name}", "B")
        click.echo(str(download_model(name, force=force, progress=bar)))


@models.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--unverified", is_flag=True, help="Import your own checkpoint under a new name (no pinned hashes).")
def models_import(name: str, path: Path, unverified: bool) -> None:
    """Import a checkpoint obtained by hand (official: verified against the pins)."""
    from .store import import_model

    click.echo(str(import_model(name, path, unverified=unverified)))


@models.command("path")
def models_path() -> None:
    """Folder where models are cached (SEEDARK_HOME overrides it)."""
    from .store import models_dir

    click.echo(str(models_dir()))


@models.command("remove")
@click.argument("name")
def models_remove(name: str) -> None:
    """Delete a cached model."""
    from .store import remove_model

    if not remove_model(name):
        raise SeedarkError(f"model {name!r} is not cached")
    click.echo(f"removed {name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``seedark`` command: one line per error, meaningful exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if debug:
        argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug"]
    try:
        code = cli.main(args=argv, prog_name="seedark", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare 'seedark'
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 0
    except click.exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"seedark: error: {exc.format_message()}{hint}", err=True)
        code = 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("\nseedark: interrupted; no partial output was left behind", err=True)
        code = 130
    except SeedarkError as exc:
        click.echo(f"seedark: error: {exc}", err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # a bug: one line by default, the traceback with --debug
        if debug:
            raise
        click.echo(f"seedark: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
