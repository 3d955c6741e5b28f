"""Option blocks shared by several commands (one copy each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from seedark import config
from seedark.cli.display import setup_logging
from seedark.io.formats import FORMATS, TIFF_COMPRESSIONS


def _verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """-v/-q given after a subcommand's name add to those given before it (kept in ``ctx.obj``,
    which every subcommand shares with the group): quiet wins, -v counts."""
    obj = ctx.ensure_object(dict)
    if param.name == "verbose":
        obj["verbose"] = obj.get("verbose", 0) + value
    else:
        obj["quiet"] = obj.get("quiet", False) or value
    setup_logging(obj.get("verbose", 0), obj.get("quiet", False))
    return value


def _given(ctx: click.Context, param: click.Parameter, value: Any) -> bool:
    return value is not None and ctx.get_parameter_source(str(param.name)) != click.core.ParameterSource.DEFAULT


def _parse_tile(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """--tile parsed here, once: a bad one is a usage error at parse time, before torch loads
    (``parse_tile`` needs none); the library takes the parsed value as it is."""
    if _given(ctx, param, value):
        from seedark.runtime.tiling import parse_tile

        return parse_tile(value)
    return value


def _parse_ratio(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """--ratio parsed here, once (a number, or None for auto): a bad one is a usage error at
    parse time, before torch loads; the library takes the parsed value as it is."""
    if _given(ctx, param, value):
        from seedark.frames.exposure import parse_ratio  # numpy: only when a value was given

        return parse_ratio(value)
    return value


VERBOSE_HELP = "More detail on stderr (debug log lines)."
QUIET_HELP = "Only warnings and errors on stderr: no progress, no log lines."


def verbosity_options(f: Any) -> Any:
    """-v/--verbose and -q/--quiet on a subcommand, so that they work after its name as well
    as before it (``seedark enhance x.dng -q`` = ``seedark -q enhance x.dng``)."""
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_verbosity, help=QUIET_HELP)(f)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_verbosity, help=VERBOSE_HELP)(f)


def engine_options(f: Any) -> Any:
    """The engine's options, each named as the keyword of ``EngineOptions.from_kwargs`` it fills
    (``--engine`` is ``backend``), so a command hands them on as they are (``**options``)."""
    options = [
        click.option(
            "--weights",
            type=click.Path(path_type=Path),
            help="TF checkpoint (folder or prefix) or .safetensors file (default: none; --model is used).",
        ),
        click.option(
            "--model",
            help="Cached model name (default: from the camera: your model for it from 'seedark finetune', "
            "else sony for Bayer sensors, fuji for X-Trans). See 'seedark models list'.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto, cpu, cuda, cuda:N or mps; auto picks CUDA, then MPS, then the CPU.",
        ),
        click.option(
            "--precision",
            type=click.Choice(config.PRECISIONS),
            default="auto",
            show_default=True,
            help="Arithmetic precision. auto: bf16 on CPUs where it is faster than fp32 (AMX, AMD's "
            "AVX512-BF16, Arm BF16), fp32 elsewhere ($SEEDARK_PRECISION overrides); fp32 is the exact "
            "reference; int8 (opt-in, CPU, pip install 'seedark[int8]') is the fast mode for CPUs without bf16.",
        ),
        click.option(
            "--tile",
            default="auto",
            show_default=True,
            callback=_parse_tile,
            help="Tile core size in packed pixels; 0 = whole frame; auto keeps the process under ~1.4 GB "
            "or half the free memory.",
        ),
        click.option(
            "--engine",
            "backend",
            type=click.Choice(config.ENGINES),
            default=lambda: config.engine(),
            show_default="auto, or $SEEDARK_ENGINE",
            help="Inference back end; auto uses OpenVINO on the CPU when installed (pip install 'seedark[openvino]').",
        ),
        click.option(
            "--match-sensor/--no-match-sensor",
            "match_sensor",
            default=True,
            show_default=True,
            help="Map each file's colours to those of the camera the model was trained on (from both colour "
            "matrices) before the network; --no-match-sensor passes the camera's values unchanged "
            "(docs/cameras.md).",
        ),
    ]
    f = verbosity_options(f)  # applied first, so listed last in --help
    for option in reversed(options):
        f = option(f)
    return f


def output_options(f: Any) -> Any:
    options = [
        click.option(
            "--ratio",
            default="auto",
            show_default=True,
            callback=_parse_ratio,
            help="Amplification (reference exposure / this exposure; paper: 100-300), or auto to estimate it.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            help="Output format (default: from -o's file extension, else png). dng: 16-bit linear DNG for "
            "raw editors (docs/dng.md).",
        ),
        click.option(
            "--suffix",
            default="",
            help="Added to the input's name for the output's: --suffix _sid gives DSC0001_sid.png (default: none).",
        ),
        click.option(
            "--bits", type=int, help="Bits per sample for PNG/TIFF: 8 or 16 (default: 8 PNG, 16 TIFF; DNG: 16 only)."
        ),
        click.option("--quality", type=int, help="JPEG quality, 1-100 (default: 95). JPEG only."),
        click.option(
            "--compression",
            type=click.Choice(TIFF_COMPRESSIONS),
            help="TIFF compression: deflate (lossless, default) or none. TIFF only.",
        ),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option(
            "--keep-mtime", is_flag=True, help="Give each output its RAW file's modification time (for catalogues)."
        ),
        click.option(
            "--compare",
            is_flag=True,
            help="Also write <output name>_compare.jpg: naively brightened input | enhanced (replaced only with "
            "--overwrite).",
        ),
        click.option(
            "--compare-width",
            type=int,
            help="Largest width of the --compare picture in pixels; 0 = full size (default: 2400).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def cluster_options(f: Any) -> Any:
    """Where the files are converted: here (default) or on the workers of a Ray cluster."""
    f = click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="With --cluster: how many Ray workers, one CPU each (default: one per CPU of the cluster).",
    )(f)
    return click.option(
        "--cluster",
        metavar="ray|ray://HOST:PORT",
        help="Run on a Ray cluster: ray ($RAY_ADDRESS, else a Ray instance started here) or ray://HOST:PORT "
        "(Ray Client). Inputs and outputs must be on storage every node sees (pip install 'seedark[ray]'). "
        "Default: none, on this machine.",
    )(f)


def find_list(list_file: Path, data: Path | None) -> Path:
    """A list file as given, else inside --data (``--data DIR --list Sony_test_list.txt``)."""
    if list_file.exists() or data is None or list_file.is_absolute():
        return list_file
    return data / list_file
