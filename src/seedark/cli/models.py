"""``seedark models``: list, download, import, path, remove."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from seedark.cli.display import Progress, human
from seedark.cli.options import verbosity_options
from seedark.errors import SeedarkError

if TYPE_CHECKING:
    from seedark.models.usermodels import UserModel


@click.group()
@verbosity_options
def models() -> None:
    """List, download, import and remove cached models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout: one object per model.")
@verbosity_options
def models_list(as_json: bool) -> None:
    """Known and cached models."""
    from seedark.models.cache import list_models

    rows = list_models()
    if as_json:
        fields = ("name", "description", "cached", "size", "path", "imported", "verified", "download_size")
        found = [{f: getattr(row, f) for f in fields} | _yours(row.user) for row in rows]
        click.echo(json.dumps([{**d, "path": None if d["path"] is None else str(d["path"])} for d in found], indent=2))
        return
    click.echo(f"{'name':<12} {'cached':<7} {'size':>9}  {'path / download':<40} description")
    for row in rows:
        if row.cached:
            size, where = (human(row.size, "B") if row.size else "-"), str(row.path)
        else:
            size = "-"
            where = f"not cached ({human(row.download_size, 'B')} download)" if row.download_size else "not cached"
        described = row.description if row.user is None else _run_line(row.user)
        click.echo(f"{row.name:<12} {'yes' if row.cached else 'no':<7} {size:>9}  {where:<40} {described}")


def _yours(user: UserModel | None) -> dict[str, Any]:
    """The JSON fields of a model `seedark finetune` made (none for the others)."""
    if user is None:
        return {}
    return {"camera": user.camera, "base": user.base, "profile": user.profile, "training": user.summary}


def _run_line(user: UserModel) -> str:
    """A fine-tuned model's description: its camera, base, profile and run."""
    run = user.summary
    loss = f", loss {run['loss']:.4f}" if isinstance(run.get("loss"), float) else ""
    steps = f"{run.get('steps', '?')} steps on {run.get('photos', '?')} photos"
    pairs = f" and {run['pairs']} real pairs" if run.get("pairs") else ""
    return f"for the {user.camera}, from {user.base} ({steps}{pairs}{loss}; profile {user.profile})"


@models.command("download")
@verbosity_options
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Fetch again even if cached.")
@click.pass_context
def models_download(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Download, verify and convert official models."""
    from seedark.models.cache import download_model

    for name in names:
        bar = None if ctx.obj["quiet"] else Progress(f"downloading {name}", "B", delay=0)
        click.echo(str(download_model(name, force=force, progress=bar)))


@models.command("import")
@verbosity_options
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--unverified", is_flag=True, help="Import your own checkpoint under a new name (no pinned hashes).")
def models_import(name: str, path: Path, unverified: bool) -> None:
    """Import a checkpoint obtained by hand (official: verified against the pins)."""
    from seedark.models.cache import import_model

    click.echo(str(import_model(name, path, unverified=unverified)))


@models.command("path")
@verbosity_options
def models_path() -> None:
    """Folder where models are cached (SEEDARK_HOME overrides it)."""
    from seedark.models.cache import models_dir

    click.echo(str(models_dir()))


@models.command("remove")
@verbosity_options
@click.argument("name")
def models_remove(name: str) -> None:
    """Delete a cached model."""
    from seedark.models.cache import remove_model

    if not remove_model(name):
        raise SeedarkError(f"model {name!r} is not cached")
    click.echo(f"removed {name}")
