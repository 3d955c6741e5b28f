"""Which files a batch converts, and to which outputs: decided in full before any work.

:func:`find_inputs` lists the RAW files, :func:`plan_jobs` names every output (one
name per file, never two files on one name), :func:`plan_batch` makes the jobs and
sets aside the files whose output exists already, which is what lets an interrupted
batch resume where it stopped. Names follow the rule ``seedark enhance`` follows
(:func:`seedark.pipeline.output.output_name`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from seedark.io.formats import OutputSettings
from seedark.io.raw import RAW_EXTENSIONS
from seedark.pipeline.output import OutputOptions, OutputPlan, compare_path, output_name
from seedark.pipeline.report import Job


def is_raw_name(path: Path) -> bool:
    return path.suffix.lower() in RAW_EXTENSIONS


def find_inputs(
    inputs: Iterable[str | os.PathLike[str]], *, recursive: bool
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(file, root) pairs to convert, and files ignored for not having a RAW extension.

    Files named on the command line are always taken (the user asked for them);
    inside folders, only RAW extensions count (case-insensitive), so sidecars
    and camera JPEGs are left alone. ``root`` is the folder a file was found
    under, for mirroring the tree; a named file is its own root's child.
    """
    found: list[tuple[Path, Path]] = []
    ignored: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.iterdir()
            for f in sorted(walker):
                # A FIFO or a broken link named like a RAW file is counted (and fails with its
                # reason, without being opened), never silently left out of the total.
                if f.is_dir() or f.name.startswith("."):
                    continue
                (found.append((f, p)) if is_raw_name(f) else ignored.append(f))
        else:
            found.append((p, p.parent))
    seen: set[Path] = set()
    unique = []
    for f, root in found:
        key = f.resolve() if f.exists() else f.absolute()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique, ignored


def _key(path: Path) -> str:
    return os.path.normcase(str(path))


def _folder(src: Path, root: Path, outdir: Path | None, recursive: bool) -> Path:
    if outdir is None:
        return src.parent
    if recursive and src.is_relative_to(root) and src.parent != root:
        return outdir / src.parent.relative_to(root)
    return outdir


def plan_jobs(
    files: list[tuple[Path, Path]],
    outdir: Path | None,
    *,
    recursive: bool,
    fmt: str,
    compare: bool = False,
    suffix: str = "",
) -> list[tuple[Path, Path]]:
    """(source, output) for every file; no two files are given the same name.

    Each name is ``<stem><suffix><ext>``. A name two files want (``IMG_1.ARW`` and
    ``IMG_1.DNG``) gets the source extension, then a number, before the suffix. With
    ``compare``, every output's comparison picture (``<stem>_compare.jpg``) is a name
    too, so an output that would be another file's comparison (``x_compare.dng`` beside
    ``x.dng``, as JPEG) is renamed the same way: neither replaces the other. The rule
    depends only on the sorted list of inputs and the options, so a re-run maps every
    file to the same output and resuming works.
    """

    def picture(dest: Path) -> set[str]:
        return {_key(compare_path(dest))} if compare else set()

    def names(dest: Path) -> set[str]:
        return {_key(dest)} | picture(dest)

    wanted = [(src, _folder(src, root, outdir, recursive) / output_name(src, fmt, suffix)) for src, root in files]
    counts = Counter(_key(dest) for _, dest in wanted)
    pictures = set().union(*(picture(dest) for _, dest in wanted))
    clash = [counts[_key(dest)] > 1 or _key(dest) in pictures for _, dest in wanted]
    # The names that stay are taken first, so no renamed file lands on one of them.
    taken = set().union(*(names(dest) for (_, dest), renamed in zip(wanted, clash, strict=True) if not renamed))
    result = []
    for (src, dest), renamed in zip(wanted, clash, strict=True):
        if renamed:
            tag = f"_{src.suffix.lstrip('.').lower() or 'raw'}"
            dest, n = dest.with_name(output_name(src, fmt, suffix, clash=tag)), 2
            while names(dest) & taken:
                dest = dest.with_name(output_name(src, fmt, suffix, clash=f"{tag}_{n}"))
                n += 1
            taken |= names(dest)
        result.append((src, dest))
    return result


def plan_batch(
    planned: list[tuple[Path, Path]], settings: OutputSettings, options: OutputOptions
) -> tuple[list[Job], list[tuple[Path, Path]]]:
    """The jobs to run for the (source, output) pairs of :func:`plan_jobs`, and the pairs whose output
    exists already (left alone unless ``overwrite``): what makes an interrupted batch resume where it
    stopped. ``settings``: the output format's, checked (``options.settings()``)."""
    jobs: list[Job] = []
    done: list[tuple[Path, Path]] = []
    for src, dest in planned:
        plan = OutputPlan(dest, settings, options)
        if plan.taken():
            done.append((src, dest))
        else:
            jobs.append(Job(src, plan))
    return jobs, done


__all__ = ["find_inputs", "is_raw_name", "plan_batch", "plan_jobs"]
