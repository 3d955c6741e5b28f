"""``seedark demo``: a simulated dark RAW frame, enhanced, with no file of one's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from seedark.cli.display import Progress, print_path
from seedark.cli.options import engine_options


@click.command("demo")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("seedark-demo"),
    show_default=True,
    help="Folder for the dark RAW frame, the enhanced image and the comparison.",
)
@click.option(
    "--ratio",
    type=float,
    default=200.0,
    show_default=True,
    help="How many times too short the simulated exposure is (paper: 100-300); also the amplification.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the simulated noise.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier demo.")
@engine_options
@click.pass_context
def demo(ctx: click.Context, output: Path, ratio: float, seed: int, overwrite: bool, **options: Any) -> None:
    """Make a dark RAW frame from a bundled photograph and enhance it; prints the paths written.

    The frame is what a Sony a7S II would record RATIO times too short, with its
    calibrated low-light noise; the official model is downloaded on first use.
    """
    from seedark.pipeline.demo import run_demo

    quiet = ctx.obj["quiet"]
    result = run_demo(
        output,
        ratio=ratio,
        seed=seed,
        overwrite=overwrite,
        **options,
        progress=None if quiet else Progress("enhancing", " tiles"),
        download_progress=None if quiet else Progress("downloading model", "B", delay=0),
    )
    for path in (result.raw, result.image, result.compare):
        print_path(path)
