"""``seedark eval`` and ``seedark train``."""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from seedark.cli.display import Progress
from seedark.cli.options import cluster_options, engine_options, find_list, verbosity_options
from seedark.synthesis.noiseprofile import NoiseProfile, load_profile
from seedark.training.config import TrainConfig

if TYPE_CHECKING:
    from seedark.training.loop import TrainStatus

log = logging.getLogger("seedark")


@click.command("eval")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Dataset folder the list's paths are relative to (default: the list's folder).",
)
@click.option(
    "--list",
    "list_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Official list, e.g. Sony_test_list.txt (looked up in --data too).",
)
@click.option("--all", "include_all", is_flag=True, help="Also score the misaligned scenes 10034, 10045 and 10172.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for results.csv and .json (default: none).")
@click.option(
    "--save-images",
    is_flag=True,
    help="Also write each output as <input name>.png into --out (<input name>_<N>.png for a name two pairs share).",
)
@click.option("--overwrite", is_flag=True, help="Replace the images (--save-images) of an earlier run in --out.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Keep decoded ground truth here (default: none).")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N pairs (default: all).")
@engine_options
@cluster_options
@click.pass_context
def eval_command(
    ctx: click.Context,
    data: Path | None,
    list_file: Path,
    include_all: bool,
    out: Path | None,
    save_images: bool,
    overwrite: bool,
    cache_dir: Path | None,
    limit: int | None,
    weights: Path | None,
    model: str | None,
    device: str,
    precision: str,
    backend: str,
    tile: str | int | None,
    match_sensor: bool,
    cluster: str | None,
    workers: int | None,
) -> None:
    """Score a model on an official SID list: PSNR and SSIM per image, overall and per ratio."""
    from seedark.training.evaluate import ImageScore, evaluate

    quiet = ctx.obj["quiet"]

    def show(score: ImageScore) -> None:
        if not quiet:
            name = score.pair.short_name or str(score.pair.short)
            click.echo(f"{name}  x{score.pair.ratio:g}  PSNR {score.psnr:.2f} dB  SSIM {score.ssim:.4f}")

    report = evaluate(
        find_list(list_file, data),
        data_root=data,
        weights=weights,
        model=model,
        include_misaligned=include_all,
        out_dir=out,
        save_images=save_images,
        overwrite=overwrite,
        device=device,
        precision=precision,
        backend=backend,
        tile=tile,
        match_sensor=match_sensor,
        cache_dir=cache_dir,
        limit=limit,
        on_image=show,
        cluster=cluster,
        workers=workers,
    )
    _print_scores(report, out)


def _print_scores(report: Any, out: Path | None) -> None:
    """The means of an ``EvalReport``, overall and per ratio, and where the results went."""
    click.echo(f"mean of {len(report.scores)} images: PSNR {report.mean_psnr:.2f} dB, SSIM {report.mean_ssim:.4f}")
    for label, group in report.per_ratio().items():
        click.echo(f"  {label}: PSNR {group['psnr']:.2f} dB, SSIM {group['ssim']:.4f} ({group['count']} images)")
    if report.excluded:
        scenes = ", ".join(f"{s:05d}" for s in sorted({p.scene for p in report.excluded}))
        click.echo(f"left out {len(report.excluded)} pair(s) of misaligned scenes {scenes} (--all keeps them)")
    if out is not None:
        click.echo(f"results: {out / 'results.csv'}, {out / 'results.json'}")


#: Help order of the options from TrainConfig: where the data is, where the run goes, then the rest in field order.
_FIRST = (
    "data_root",
    "train_list",
    "val_list",
    "synthetic",
    "noise_profile",
    "ratio_min",
    "ratio_max",
    "out",
    "resume",
    "resume_from",
)


def _option_type(hint: Any, metadata: Mapping[str, Any]) -> Any:
    """The click type of an option whose field has type ``hint`` (``X | None`` counts as ``X``)."""
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    kind = kinds[0]
    if kind in (Path, NoiseProfile):  # a noise profile is given as its JSON file
        return click.Path(path_type=Path)
    if kind is int and "min" in metadata:
        return click.IntRange(min=metadata["min"])
    return kind


def _config_option(f: dataclasses.Field[Any], hint: Any) -> Callable[[Any], Any]:
    """The click option of one TrainConfig field (see seedark.training.config for the metadata)."""
    meta = f.metadata
    flag = meta.get("flag", "--" + f.name.replace("_", "-"))
    if hint is bool:
        if f.default is True:
            flag = "--no-" + f.name.replace("_", "-")
        return click.option(flag, f.name, is_flag=True, help=meta["help"])
    kwargs: dict[str, Any] = {"type": _option_type(hint, meta), "help": meta["help"]}
    if f.default is dataclasses.MISSING:
        kwargs["required"] = True
    elif isinstance(f.default, (int, float, str)):
        kwargs.update(default=f.default, show_default=True)
    return click.option(flag, f.name, **kwargs)


def _config_options(command: Any) -> Any:
    """Every TrainConfig field with help text, as an option named after the field."""
    hints = typing.get_type_hints(TrainConfig)
    fields = [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]
    fields.sort(key=lambda f: _FIRST.index(f.name) if f.name in _FIRST else len(_FIRST))
    for f in reversed(fields):  # click lists options in the order the decorators are written
        command = _config_option(f, hints[f.name])(command)
    return command


def _config(values: dict[str, Any]) -> TrainConfig:
    """TrainConfig from the options: lists looked up in --data, the profile read, --no-* switches turned around."""
    data = values["data_root"]
    for name in ("train_list", "val_list"):
        if values[name] is not None:
            values[name] = find_list(values[name], data)
    if values["noise_profile"] is not None:
        values["noise_profile"] = load_profile(values["noise_profile"])
    for f in dataclasses.fields(TrainConfig):
        if f.default is True and f.name in values:
            values[f.name] = not values[f.name]
    values["resume"] = values["resume"] or values["resume_from"] is not None
    # an option left out keeps the dataclass default (the a7S II noise profile, say)
    return TrainConfig(**{k: v for k, v in values.items() if v is not None})


@click.command("train")
@_config_options
@verbosity_options
@click.pass_context
def train_command(ctx: click.Context, **options: Any) -> None:
    """Train the SID network (the paper's recipe by default); run under torchrun for several GPUs or nodes."""
    from seedark.training.loop import train

    rank = int(os.environ.get("RANK", "0") or 0)
    if rank != 0:  # one voice per job: the other ranks only report problems
        log.setLevel(logging.WARNING)
    quiet = ctx.obj["quiet"] or rank != 0
    config = _config(options)
    on_step, cache_bar = training_progress(quiet)
    result = train(config, progress=on_step, cache_progress=cache_bar)
    if rank == 0 and result.model is not None:
        click.echo(str(result.model))


def training_progress(quiet: bool) -> tuple[Callable[[TrainStatus], None] | None, Progress | None]:
    """The callbacks that draw a training run: a bar of steps (epoch, loss, ETA) and one of the
    ground truth decoded into the cache; none with --quiet."""
    if quiet:
        return None, None
    bar = Progress("training", " steps", delay=0)

    def on_step(status: TrainStatus) -> None:
        bar.label = f"epoch {status.epoch}/{status.epochs}"
        bar.postfix = f"loss {status.epoch_loss:.4f}"
        bar(status.step, status.total_steps)

    return on_step, Progress("decoding ground truth", " files")
