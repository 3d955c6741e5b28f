"""``seedark enhance``, ``seedark batch`` and ``seedark info``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from seedark.cli import signals
from seedark.cli.display import BatchDisplay, Progress, print_path, safe
from seedark.cli.options import engine_options, output_options
from seedark.errors import SeedarkError

log = logging.getLogger("seedark")


def _download_progress(quiet: bool) -> Progress | None:
    return None if quiet else Progress("downloading model", "B")


@click.command()
@click.argument("raw_file", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Output file or folder (default: next to the input)."
)
@output_options
@engine_options
@click.pass_context
def enhance(ctx: click.Context, raw_file: Path, output: Path | None, **options: Any) -> None:
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
    "-o", "--output", "outdir", type=click.Path(path_type=Path), help="Output folder (default: next to each input)."
)
@click.option("-r", "--recursive", is_flag=True, help="Look into subfolders and mirror the tree in the output folder.")
@output_options
@engine_options
@click.pass_context
def batch(ctx: click.Context, inputs: tuple[Path, ...], outdir: Path | None, recursive: bool, **options: Any) -> None:
    """Enhance every RAW file in the folders (and files) given; existing outputs are skipped."""
    from seedark.pipeline.batch import run_batch

    quiet = ctx.obj["quiet"]
    report = run_batch(
        inputs,
        outdir,
        recursive=recursive,
        **options,
        on_event=BatchDisplay(quiet),
        download_progress=_download_progress(quiet),
    )
    err = sys.stderr
    summary = f"converted {len(report.converted)}, skipped {len(report.skipped)}, failed {len(report.failed)}"
    if report.interrupted:
        summary += " (interrupted: run the same command again to continue)"
    err.write(f"seedark: {summary}\n")
    for source, reason in report.failed:
        err.write(f"seedark: failed: {safe(source)}: {safe(reason)}\n")
    if report.ignored:
        log.info("ignored %d file(s) without a RAW extension", len(report.ignored))
    ctx.exit(signals.exit_code() if report.interrupted else 0 if report.ok else 1)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def info(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Describe RAW files: camera, sensor, levels, exposure, auto ratio, model."""
    from seedark.pipeline.info import describe

    failed = 0
    for i, path in enumerate(files):
        try:
            rows = describe(path)
        except SeedarkError as exc:
            click.echo(f"seedark: error: {safe(exc)}", err=True)
            failed += 1
            continue
        if i:
            click.echo()
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            click.echo(f"{label + ':':<{width + 1}} {value}")
    ctx.exit(1 if failed else 0)
