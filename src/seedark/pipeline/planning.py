"""Which files a batch converts, and to which outputs: decided in full before any work.

:func:`find_inputs` lists the RAW files, :func:`plan_jobs` names every output (one
name per file, never two files on one name), :func:`plan_batch` makes the jobs and
sets aside the files whose output exists already, which is what lets an interrupted
batch resume where it stopped. Names follow the rule ``seedark enhance`` follows
(:func:`seedark.pipeline.output.output_name`).
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from seedark.errors import RawReadError
from seedark.io.formats import OutputSettings
from seedark.io.linear_dng import is_seedark_dng
from seedark.io.raw import RAW_EXTENSIONS, check_input
from seedark.pipeline.output import OutputOptions, OutputPlan, compare_path, input_tag, output_name
from seedark.pipeline.report import Job


def is_raw_name(path: Path) -> bool:
    return path.suffix.lower() in RAW_EXTENSIONS


def _folder_failure(exc: OSError) -> str:
    """Why a folder could not be listed, for the summary."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    elif exc.errno == errno.ENAMETOOLONG:
        why = "its path is longer than the system allows"
    else:
        why = exc.strerror or str(exc)
    return f"cannot read this folder ({why}): the RAW files in it, if any, are not converted"


def _is_folder(entry: os.DirEntry[str], *, follow_symlinks: bool = True) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow_symlinks)
    except OSError:  # cannot be looked at: a file, which fails with its reason if it is named like a RAW file
        return False


def _listing(folder: Path, recursive: bool, unreadable: list[tuple[Path, str]]) -> list[Path]:
    """Everything but folders in ``folder`` (and, if ``recursive``, in the folders below it, links to
    folders not followed); a folder that cannot be listed is added to ``unreadable`` with its reason,
    never passed over."""
    found: list[Path] = []
    failed: list[tuple[Path, str]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            failed.append((current, _folder_failure(exc)))
            continue
        for entry in entries:
            if not _is_folder(entry):
                found.append(current / entry.name)
            elif recursive and _is_folder(entry, follow_symlinks=False):
                pending.append(current / entry.name)
    unreadable.extend(sorted(failed))
    return found


def _unreachable(path: Path, exc: OSError) -> str:
    """Why a path given by name cannot even be looked at, in the words used for RAW files."""
    try:
        check_input(path)
    except RawReadError as err:
        return err.reason
    return f"cannot read: {exc.strerror or exc}"


def _unique(found: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """``found`` without a file named twice (by two names or two roots)."""
    seen: set[Path] = set()
    unique = []
    for f, root in found:
        try:
            key = f.resolve() if f.exists() else f.absolute()
        except OSError:  # cannot be looked at: it fails with its reason when it is read
            key = f.absolute()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique


def find_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool,
    unreadable: list[tuple[Path, str]] | None = None,
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(file, root) pairs to convert, and files ignored for not having a RAW extension
    (or for being a linear DNG seedark wrote: ``--format dng`` beside the RAW files).

    Files named on the command line are always taken (the user asked for them);
    inside folders, only RAW extensions count (case-insensitive), so sidecars
    and camera JPEGs are left alone. ``root`` is the folder a file was found
    under, for mirroring the tree; a named file is its own root's child.
    ``unreadable`` receives (path, reason) for every folder that could not be listed
    and every named path that could not be looked at: each counts as a failure.
    """
    found: list[tuple[Path, Path]] = []
    ignored: list[Path] = []
    cannot = unreadable if unreadable is not None else []
    for item in inputs:
        p = Path(item)
        try:
            is_dir = p.is_dir()
        except OSError as exc:  # a folder on the way that cannot be searched, a path too long
            cannot.append((p, _unreachable(p, exc)))
            continue
        if not is_dir:
            found.append((p, p.parent))
            continue
        for f in sorted(_listing(p, recursive, cannot)):
            # A FIFO or a broken link named like a RAW file is counted (and fails with its
            # reason, without being opened), never silently left out of the total.
            if f.name.startswith("."):
                continue
            # seedark's own DNGs beside the RAW files they were made from are outputs, not inputs
            (found.append((f, p)) if is_raw_name(f) and not is_seedark_dng(f) else ignored.append(f))
    return _unique(found), ignored


def _key(path: Path) -> str:
    return os.path.normcase(str(path))


def _input_key(path: Path) -> str:
    """The key of a file however its folder is spelled (``in/a.dng``, ``./in/a.dng``)."""
    return os.path.normcase(os.path.abspath(path))


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
    inputs = {_input_key(src) for src, _ in files}  # with --format dng, IMG_1.dng must not be its own output
    clash = [counts[_key(dest)] > 1 or _key(dest) in pictures or _input_key(dest) in inputs for _, dest in wanted]
    # The names that stay are taken first, so no renamed file lands on one of them.
    taken = set().union(*(names(dest) for (_, dest), renamed in zip(wanted, clash, strict=True) if not renamed))
    result = []
    for (src, dest), renamed in zip(wanted, clash, strict=True):
        if renamed:
            tag = input_tag(src)
            dest, n = dest.with_name(output_name(src, fmt, suffix, clash=tag)), 2
            while names(dest) & taken or _input_key(dest) in inputs:
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
