"""Atomic files, the one copy: write to a hidden temporary beside the target, fsync, publish.

A file written through here appears under its final name only once complete and
fsync'ed, so an interrupted run never leaves a truncated file behind, and
(``overwrite=False``) never replaces a file that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

#: Hidden temporaries are named ``.<name>.<8 hex>.part`` (tests and sweeps rely on it).
PART_SUFFIX = ".part"


class ExistsError(FileExistsError):
    """The final name exists and ``overwrite`` was not given."""


def temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


def create_temp(final: Path) -> tuple[int, Path]:
    """A new, empty hidden file beside ``final``; mode follows the umask like open()."""
    for _ in range(100):
        tmp = temp_name(final)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(final))


def publish(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Move the complete ``tmp`` onto ``final``; without ``overwrite`` never clobber (ExistsError)."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        # link() fails if the name exists, so a file created meanwhile is never clobbered.
        os.link(tmp, final)
    except FileExistsError:
        raise ExistsError(errno.EEXIST, "already exists", str(final)) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV):
            raise
        # No hard links here (FAT, some network shares): a small race is unavoidable.
        if final.exists() or final.is_symlink():
            raise ExistsError(errno.EEXIST, "already exists", str(final)) from None
        os.replace(tmp, final)
        return
    # The file is published; a leftover temp name is only untidy, not an error.
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def fsync_path(path: Path) -> None:
    """fsync a file or folder by name; not possible everywhere (folders), and then not fatal."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """``with atomic_output(path) as fh: fh.write(...)``: published only if the block completes.

    On any exception (KeyboardInterrupt too) the temporary is removed and the
    exception propagates; ``final`` is untouched.
    """
    final = Path(final)
    tmp: Path | None = None
    try:
        fd, tmp = create_temp(final)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, final, overwrite=overwrite)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    fsync_path(final.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, overwrite: bool = True) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """``data`` as indented JSON, atomically."""
    return write_atomic(path, json.dumps(data, indent=2) + "\n")


def _create_temp_folder(final: Path) -> Path:
    """A new, empty hidden folder beside ``final`` (named like :func:`create_temp`'s files)."""
    for _ in range(100):
        tmp = temp_name(final)
        try:
            tmp.mkdir(parents=True)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary folder", str(final))


def _replace_folder(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an old ``final`` is moved aside first (a folder cannot be renamed over)."""
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    old = temp_name(final)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_folder(path) as tmp:`` fill ``tmp``; if the block completes it becomes ``path``.

    The files in it are fsync'ed before the folder is renamed into place, so the
    final name never shows a half-written folder. An existing ``path`` is replaced:
    it is missing only between two renames. On any exception the temporary
    folder is deleted and ``final`` is untouched.
    """
    final = Path(final)
    tmp = _create_temp_folder(final)
    try:
        yield tmp
        for entry in tmp.iterdir():
            if entry.is_file():
                fsync_path(entry)
        fsync_path(tmp)
        _replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(final.parent)


@contextlib.contextmanager
def temp_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty hidden file beside ``final``, for writers that want a file name (safetensors).

    Fill it, :func:`fsync_path` it and :func:`publish` it; whatever is left of it
    when the block ends (an error, or it was never published) is deleted. Lets a
    caller publish several files in the order it needs, each one complete.
    """
    fd, tmp = create_temp(Path(final))
    os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
