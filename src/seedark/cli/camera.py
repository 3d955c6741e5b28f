"""``seedark calibrate`` and ``seedark finetune``: a model of your own camera."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from seedark.cli.display import Progress
from seedark.cli.options import verbosity_options
from seedark.training.config import FINETUNE_PATCH, FINETUNE_STEPS


@click.command("calibrate")
@click.argument("darks", type=click.Path(path_type=Path))
@click.option(
    "--flats",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of flat frames: pairs at several exposure times, at each ISO of the dark frames.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Also write the profile to this JSON file (default: only the cache keeps it).",
)
@verbosity_options
@click.pass_context
def calibrate_command(ctx: click.Context, darks: Path, flats: Path, output: Path | None) -> None:
    """Measure your camera's noise from DARKS (a folder of dark frames: lens cap on) and flat pairs.

    The profile is kept in the cache under the camera's make and model, where
    'seedark finetune' finds it; its path is printed (and -o's). How to shoot the
    frames: docs/calibrate.md.
    """
    from seedark.training.calibrate import calibrate

    bar = None if ctx.obj["quiet"] else Progress("reading frames", " frames")
    result = calibrate(darks, flats, output=output, progress=bar)
    click.echo(str(result.stored))
    if result.written is not None:
        click.echo(str(result.written))


@click.command("finetune")
@click.option(
    "--photos",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of your own well-exposed RAW photos from the camera (searched recursively).",
)
@click.option(
    "--profile",
    type=click.Path(path_type=Path),
    help="Noise profile JSON (default: the one 'seedark calibrate' keeps for the photos' camera).",
)
@click.option("--base", default="sony", show_default=True, help="Cached model to start from.")
@click.option(
    "--pairs",
    type=click.Path(path_type=Path),
    help="Also train on real pairs: a folder with one subfolder per scene, each holding a well-exposed "
    "RAW file and darker shots of it (default: none).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=FINETUNE_STEPS,
    show_default=True,
    help="Training steps (rounded up to whole passes over the photos).",
)
@click.option("--name", help="Name of the new model (default: from the camera, e.g. nikon-d850).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Run folder: checkpoints and logs (default: <cache>/finetune/<name>).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its latest checkpoint.")
@click.option(
    "--patch",
    type=click.IntRange(min=8),
    default=FINETUNE_PATCH,
    show_default=True,
    help="Patch side in packed pixels (larger: more context, slower steps).",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps; auto picks CUDA, then MPS."
)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data-loading processes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data order, patches and noise.")
@click.option(
    "--match-sensor/--no-match-sensor",
    "match_sensor",
    default=True,
    show_default=True,
    help="Train on the photos' colours matched to the base model's camera, as enhance matches them "
    "(docs/cameras.md); --no-match-sensor trains on the camera's own values, and enhance then "
    "leaves its files unmatched.",
)
@verbosity_options
@click.pass_context
def finetune_command(ctx: click.Context, photos: Path, **options: Any) -> None:
    """Fine-tune a model for your camera from its RAW photos and its noise profile.

    'enhance' and 'batch' then use it for that camera's files (--model overrides);
    'seedark models list' shows it. Prints the installed weights' path.
    """
    from seedark.cli.training import training_progress
    from seedark.training.finetune import finetune

    on_step, cache_bar = training_progress(ctx.obj["quiet"])
    result = finetune(photos, progress=on_step, cache_progress=cache_bar, **options)
    click.echo(str(result.model))
