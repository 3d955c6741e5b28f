"""Option blocks shared by several commands (one copy each)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from seedark import config

log = logging.getLogger("seedark")


def quiet_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(dict)["quiet"] = True
        log.setLevel(logging.WARNING)
    return value


def engine_options(f: Any) -> Any:
    """The engine's options, each named as the keyword of ``EngineOptions.from_kwargs`` it fills
    (``--engine`` is ``backend``), so a command hands them on as they are (``**options``)."""
    options = [
        click.option(
            "-q", "--quiet", is_flag=True, expose_value=False, callback=quiet_flag, help="No progress on stderr."
        ),
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
            help="Arithmetic precision; fp32 is the reference and what auto uses; bf16 needs a CPU with "
            "native bf16 or a GPU.",
        ),
        click.option(
            "--tile",
            default="auto",
            show_default=True,
            help="Tile core size in packed pixels; 0 = whole frame; auto keeps the process under ~1.4 GB "
            "or half the free memory.",
        ),
        click.option(
            "--engine",
            "backend",
            type=click.Choice(["auto", "pytorch", "openvino"]),
            default=lambda: config.engine(),
            show_default="auto, or $SEEDARK_ENGINE",
            help="Inference back end; auto uses OpenVINO on the CPU when installed (pip install 'seedark[openvino]').",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def output_options(f: Any) -> Any:
    options = [
        click.option(
            "--ratio",
            default="auto",
            show_default=True,
            help="Amplification (reference exposure / this exposure; paper: 100-300), or auto to estimate it.",
        ),
        click.option(
            "--format", "fmt", type=click.Choice(["png", "tiff", "jpeg"]), help="Output format (default: png)."
        ),
        click.option("--bits", type=int, help="Bits per sample for PNG/TIFF: 8 or 16 (default: 8 PNG, 16 TIFF)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option(
            "--compare",
            is_flag=True,
            help="Also write <name>_compare.jpg: naively brightened input | enhanced (replaced only with --overwrite).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def find_list(list_file: Path, data: Path | None) -> Path:
    """A list file as given, else inside --data (``--data DIR --list Sony_test_list.txt``)."""
    if list_file.exists() or data is None or list_file.is_absolute():
        return list_file
    return data / list_file
