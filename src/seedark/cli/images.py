"""``seedark enhance``, ``seedark batch`` and ``seedark info``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from seedark.cli import signals
from seedark.cli.display import BatchDisplay, Progress, print_path, safe, same_terminal
from seedark.cli.options import cluster_options, engine_options, output_options, verbosity_options
from seedark.errors import SeedarkError

log = logging.getLogger("seedark")


def _download_progress(quiet: bool) -> Progress | None:
    return None if quiet else Progress("downloading model", "B", delay=0)


@click.command()
@click.argument("raw_file", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(),  # a str: the trailing "/" of a folder to create must survive
    help="Output file, or folder to write <name><suffix>.<ext> into: an existing one, or one ending in / "
    "(created if missing). Default: next to the input.",
)
@output_options
@engine_options
@click.pass_context
def enhance(ctx: click.Context, raw_file: Path, output: str | None, **options: Any) -> None:
    """Enhance one RAW file; prints the path written."""
    from seedark.pipeline.enhance import enhance_file

    quiet = ctx.obj["quiet"]
    written = enhance_file(
        raw_file,
        output,
        **options,
        progress=None if quiet else Progress("enhancing", " tiles"),
        download_progress=_download_progress(quiet),
    )
    print_path(written)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "outdir",
    type=click.Path(path_type=Path),
    help="Output folder, created if missing (default: next to each input).",
)
@click.option("-r", "--recursive", is_flag=True, help="Look into subfolders and mirror the tree in the output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout at the end.")
@click.option(
    "--json-lines", is_flag=True, help="Print a JSON line on stdout per file as it finishes, then the summary line."
)
@output_options
@engine_options
@cluster_options
@click.pass_context
def batch(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    outdir: Path | None,
    recursive: bool,
    as_json: bool,
    json_lines: bool,
    **options: Any,
) -> None:
    """Enhance every RAW file in the folders (and files) given; existing outputs are skipped.

    Prints each written path on stdout (JSON instead with --json or --json-lines);
    progress and the summary go to stderr."""
    if as_json and json_lines:
        raise click.UsageError("use --json or --json-lines, not both", ctx)
    from seedark.pipeline.batch import run_batch

    quiet = ctx.obj["quiet"]
    # each converted file is named once: by the progress line, or on stdout when that line is not
    # on the same terminal (a pipe, a file, --quiet)
    paths = not as_json and (quiet or not same_terminal())
    report = run_batch(
        inputs,
        outdir,
        recursive=recursive,
        **options,
        on_event=_with_stdout(shown := BatchDisplay(quiet), paths=paths, json_lines=json_lines),
        download_progress=_download_progress(quiet),
    )
    shown.close()  # an interrupted batch leaves its bar short of the end: the summary goes below it
    if as_json or json_lines:
        click.echo(json.dumps(batch_summary(report), indent=None if json_lines else 2))
    err = sys.stderr
    summary = f"converted {len(report.converted)}, skipped {len(report.skipped)}, failed {len(report.failed)}"
    if report.interrupted:
        summary += " (interrupted: run the same command again to continue)"
    err.write(f"seedark: {summary}\n")
    for source, reason in report.failed:
        err.write(f"seedark: failed: {safe(source)}: {safe(reason)}\n")
    if report.ignored:
        log.info("ignored %d file(s) without a RAW extension or made by seedark", len(report.ignored))
    ctx.exit(signals.exit_code() if report.interrupted else 0 if report.ok else 1)


def _with_stdout(display: Callable[[Any], None], *, paths: bool, json_lines: bool) -> Callable[[Any], None]:
    """The batch's events to the progress display (stderr) and to stdout: each written path
    (``paths``), a JSON line per file with --json-lines, nothing until the summary with --json."""

    def on_event(event: Any) -> None:
        display(event)
        if json_lines:
            click.echo(json.dumps(_event_json(event)))
        elif event.kind == "converted" and paths:
            print_path(event.output)

    return on_event


def _event_json(event: Any) -> dict[str, Any]:
    """One file's outcome (a ``BatchEvent``) as a --json-lines object."""
    return {
        "event": event.kind,
        "source": str(event.source),
        "output": None if event.output is None else str(event.output),
        "ratio": event.ratio,
        "seconds": event.seconds,
        "reason": event.reason,
        "done": event.done,
        "total": event.total,
    }


def batch_summary(report: Any) -> dict[str, Any]:
    """The ``BatchReport`` as the --json summary object (docs/usage.md has the schema)."""
    return {
        "event": "summary",
        "ok": report.ok,
        "interrupted": report.interrupted,
        "elapsed": round(report.elapsed, 3),
        "counts": {
            "converted": len(report.converted),
            "skipped": len(report.skipped),
            "failed": len(report.failed),
            "ignored": len(report.ignored),
        },
        "converted": [{"source": str(s), "output": str(o), "ratio": r} for s, o, r in report.converted],
        "skipped": [{"source": str(s), "output": str(o)} for s, o in report.skipped],
        "failed": [{"source": str(s), "reason": reason} for s, reason in report.failed],
        "ignored": [str(p) for p in report.ignored],
    }


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout: one object per file.")
@verbosity_options
@click.pass_context
def info(ctx: click.Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Describe RAW files: camera, sensor, levels, exposure, auto ratio, model."""
    import dataclasses

    from seedark.pipeline.info import raw_info

    described: list[dict[str, Any]] = []  # for --json: the fields, or the file and its error
    shown = 0
    for path in files:
        try:
            found = raw_info(path)
        except SeedarkError as exc:
            click.echo(f"seedark: error: {safe(exc)}", err=True)
            described.append({"file": str(path), "error": exc.reason})
            continue
        described.append(dataclasses.asdict(found))
        if not as_json:
            if shown:
                click.echo()
            _print_rows(found.rows())
            shown += 1
    if as_json:
        click.echo(json.dumps(described, indent=2))
    ctx.exit(1 if any("error" in d for d in described) else 0)


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label + ':':<{width + 1}} {value}")
