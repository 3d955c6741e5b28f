"""Command line: parse options, call one library function, report.

Errors from the library arrive as :class:`~seedark.errors.SeedarkError` and are
printed as one line on stderr (``seedark: error: <file>: <reason>``) with the
error's exit code: 1 for failures, 2 for usage errors, 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
            default=lambda: os.environ.get("SEEDARK_ENGINE", "auto"),
            show_default="auto, or $SEEDARK_ENGINE",
            help="Inference back end; auto uses OpenVINO on the CPU when installed (pip install 'seedark[openvino]').",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _output_options(f: Any) -> Any:
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
            "--compare", is_flag=True, help="Also write <name>_compare.jpg: naively brightened input | enhanced."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@click.argument("raw_file", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Output file or folder (default: next to the input)."
)
@_output_options
@_engine_options
@click.pass_context
def enhance(ctx: click.Context, raw_file: Path, output: Path | None, **options: Any) -> None:
    """Enhance one RAW file; prints the path written."""
    from .pipeline import enhance_file

    quiet = ctx.obj["quiet"]
    written = enhance_file(
        raw_file,
        output,
        **options,
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
@_output_options
@_engine_options
@click.pass_context
def batch(ctx: click.Context, inputs: tuple[Path, ...], outdir: Path | None, recursive: bool, **options: Any) -> None:
    """Enhance every RAW file in the folders (and files) given; existing outputs are skipped."""
    from .batch import run_batch

    quiet = ctx.obj["quiet"]
    report = run_batch(
        inputs,
        outdir,
        recursive=recursive,
        **options,
        on_event=BatchDisplay(quiet),
        download_progress=None if quiet else Progress("downloading model", "B"),
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


def _find_list(list_file: Path, data: Path | None) -> Path:
    """A list file as given, else inside --data (``--data DIR --list Sony_test_list.txt``)."""
    if list_file.exists() or data is None or list_file.is_absolute():
        return list_file
    return data / list_file


@cli.command("eval")
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
@click.option("--out", type=click.Path(path_type=Path), help="Folder to write results.csv and results.json into.")
@click.option("--save-images", is_flag=True, help="Also write each output as <input name>.png into --out.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Keep the decoded ground truth here for later runs.")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N pairs.")
@_engine_options
@click.pass_context
def eval_command(
    ctx: click.Context,
    data: Path | None,
    list_file: Path,
    include_all: bool,
    out: Path | None,
    save_images: bool,
    cache_dir: Path | None,
    limit: int | None,
    weights: Path | None,
    model: str | None,
    device: str,
    precision: str,
    backend: str,
    tile: str,
) -> None:
    """Score a model on an official SID list: PSNR and SSIM per image, overall and per ratio."""
    from .evaluate import ImageScore, evaluate

    quiet = ctx.obj["quiet"]

    def show(score: ImageScore) -> None:
        if not quiet:
            name = score.pair.short_name or str(score.pair.short)
            click.echo(f"{name}  x{score.pair.ratio:g}  PSNR {score.psnr:.2f} dB  SSIM {score.ssim:.4f}")

    report = evaluate(
        _find_list(list_file, data),
        data_root=data,
        weights=weights,
        model=model,
        include_misaligned=include_all,
        out_dir=out,
        save_images=save_images,
        device=device,
        precision=precision,
        backend=backend,
        tile=tile,
        cache_dir=cache_dir,
        limit=limit,
        on_image=show,
    )
    click.echo(f"mean of {len(report.scores)} images: PSNR {report.mean_psnr:.2f} dB, SSIM {report.mean_ssim:.4f}")
    for label, group in report.per_ratio().items():
        click.echo(f"  {label}: PSNR {group['psnr']:.2f} dB, SSIM {group['ssim']:.4f} ({group['count']} images)")
    if report.excluded:
        scenes = ", ".join(f"{s:05d}" for s in sorted({p.scene for p in report.excluded}))
        click.echo(f"left out {len(report.excluded)} pair(s) of misaligned scenes {scenes} (--all keeps them)")
    if out is not None:
        click.echo(f"results: {out / 'results.csv'}, {out / 'results.json'}")


@cli.command("train")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Dataset folder the lists' paths are relative to (default: each list's folder).",
)
@click.option(
    "--list",
    "list_file",
    type=click.Path(path_type=Path),
    help="Training list, e.g. Sony_train_list.txt (looked up in --data too).",
)
@click.option(
    "--val-list",
    type=click.Path(path_type=Path),
    help="Validation list scored every --val-every epochs, e.g. Sony_val_list.txt.",
)
@click.option(
    "--synthetic",
    type=click.Path(path_type=Path),
    help="Instead of --list: make pairs from the clean RAW files / sRGB images in this folder.",
)
@click.option(
    "--noise-profile",
    type=click.Path(path_type=Path),
    help="Noise calibration JSON for --synthetic (default: Sony a7S II, ELD).",
)
@click.option(
    "--ratio-min", type=float, default=100.0, show_default=True, help="Smallest synthetic amplification ratio."
)
@click.option(
    "--ratio-max", type=float, default=300.0, show_default=True, help="Largest synthetic amplification ratio."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder: checkpoints, logs, cache, model.safetensors.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--resume-from", type=click.Path(path_type=Path), help="Continue from this checkpoint folder.")
@click.option("--epochs", type=int, default=4000, show_default=True, help="Epochs (each visits every reference once).")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option(
    "--lr-drop-epoch",
    type=int,
    default=2000,
    show_default=True,
    help="Epochs after this one use --lr-after-drop (0: never).",
)
@click.option(
    "--lr-after-drop", type=float, default=1e-5, show_default=True, help="Learning rate after --lr-drop-epoch."
)
@click.option(
    "--patch", type=int, default=512, show_default=True, help="Patch side in packed pixels (the target is 2x or 3x)."
)
@click.option("--width", type=int, help="Channels of the first level (default 32, or the starting weights').")
@click.option("--no-augment", is_flag=True, help="No random flips and transpose.")
@click.option("--save-every", type=int, default=10, show_default=True, help="Write a checkpoint every N epochs.")
@click.option("--keep", type=int, default=2, show_default=True, help="Checkpoints kept (0: all); see --keep-every.")
@click.option(
    "--keep-every",
    type=int,
    default=500,
    show_default=True,
    help="Also keep checkpoints at multiples of N epochs (0: none).",
)
@click.option("--val-every", type=int, default=100, show_default=True, help="Validate every N epochs (0: never).")
@click.option("--val-limit", type=click.IntRange(min=1), help="Validate on the first N pairs of --val-list only.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Log the loss every N epochs.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the initial weights, data order and patches."
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto, cpu, cuda, cuda:N or mps (torchrun: one GPU per process).",
)
@click.option("--workers", type=int, default=4, show_default=True, help="Data-loading processes per training process.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Decoded-image cache (default: <out>/cache).")
@click.option(
    "--cache-inputs", is_flag=True, help="Also cache the dark RAW mosaics (faster epochs, ~2x the dataset on disk)."
)
@click.option("--weights", type=click.Path(path_type=Path), help="Fine-tune: start from these weights.")
@click.option("--model", help="Fine-tune: start from this cached model (e.g. sony).")
@click.option(
    "--deterministic", is_flag=True, help="Deterministic GPU kernels (slower), for bit-exact resumes on GPUs."
)
@click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet, help="No progress on stderr.")
@click.pass_context
def train_command(
    ctx: click.Context,
    data: Path | None,
    list_file: Path | None,
    val_list: Path | None,
    synthetic: Path | None,
    noise_profile: Path | None,
    ratio_min: float,
    ratio_max: float,
    out: Path,
    resume: bool,
    resume_from: Path | None,
    epochs: int,
    lr: float,
    lr_drop_epoch: int,
    lr_after_drop: float,
    patch: int,
    width: int | None,
    no_augment: bool,
    save_every: int,
    keep: int,
    keep_every: int,
    val_every: int,
    val_limit: int | None,
    log_every: int,
    seed: int,
    device: str,
    workers: int,
    cache_dir: Path | None,
    cache_inputs: bool,
    weights: Path | None,
    model: str | None,
    deterministic: bool,
) -> None:
    """Train the SID network (the paper's recipe by default); run under torchrun for several GPUs or nodes."""
    import os

    from .noise import SONY_A7S2, load_profile
    from .train import TrainConfig, TrainStatus, train

    rank = int(os.environ.get("RANK", "0") or 0)
    if rank != 0:  # one voice per job: the other ranks only report problems
        log.setLevel(logging.WARNING)
    quiet = ctx.obj["quiet"] or rank != 0
    config = TrainConfig(
        out=out,
        train_list=_find_list(list_file, data) if list_file is not None else None,
        data_root=data,
        val_list=_find_list(val_list, data) if val_list is not None else None,
        synthetic=synthetic,
        noise_profile=load_profile(noise_profile) if noise_profile is not None else SONY_A7S2,
        ratio_min=ratio_min,
        ratio_max=ratio_max,
        epochs=epochs,
        lr=lr,
        lr_drop_epoch=lr_drop_epoch,
        lr_after_drop=lr_after_drop,
        patch=patch,
        width=width,
        augment=not no_augment,
        save_every=save_every,
        keep=keep,
        keep_every=keep_every,
        val_every=val_every,
        val_limit=val_limit,
        log_every=log_every,
        seed=seed,
        device=device,
        workers=workers,
        cache_dir=cache_dir,
        cache_inputs=cache_inputs,
        init_weights=weights,
        init_model=model,
        resume=resume or resume_from is not None,
        resume_from=resume_from,
        deterministic=deterministic,
    )
    bar = Progress("training", " steps")
    cache_bar = Progress("decoding ground truth", " files")

    def on_step(status: TrainStatus) -> None:
        bar.label = f"epoch {status.epoch}/{status.epochs} loss {status.epoch_loss:.4f}"
        bar(status.step, status.total_steps)

    result = train(config, progress=None if quiet else on_step, cache_progress=None if quiet else cache_bar)
    if rank == 0 and result.model is not None:
        click.echo(str(result.model))


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
