"""Atomic files, the one copy: write to a hidden temporary beside the target, fsync, publish.

A file written through here appears under its final name only once complete and
fsync'ed, so an interrupted run never leaves a truncated file behind, and
(``overwrite=False``) never replaces a file that appeared meanwhile.

A writer that is killed outright (SIGKILL, a power cut) cannot remove its
temporary; the next run that writes into the same folder does
(:func:`sweep_stale_parts`), telling a dead writer's temporary from a live one's
by the process id in its name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("seedark")

#: Hidden temporaries are named ``.<name>.<pid>-<machine>.<8 hex>.part`` (tests and sweeps rely on it):
#: the writer's process id, and a tag of the machine and PID namespace it runs on, since a folder
#: can be shared with other machines or containers whose process ids mean nothing here.
PART_SUFFIX = ".part"

#: A temporary this old is removed whoever wrote it: no writer spends a day on one file, and a
#: writer on another machine cannot be asked whether it is still alive.
STALE_AFTER = 24 * 3600

#: The longest file name most file systems take, where the folder cannot be asked.
DEFAULT_NAME_MAX = 255

# Exactly what temp_name() makes: the writer fields are what tells a temporary of seedark's from a
# user's file of a similar name, which the sweep must never touch.
_PART_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})-(?P<machine>[0-9a-f]{6})\.[0-9a-f]{8}\.part", re.DOTALL)

# Folders this process has swept already: once is enough, its own temporaries are never stale.
_SWEPT: set[str] = set()


class ExistsError(FileExistsError):
    """The final name exists and ``overwrite`` was not given."""


@functools.cache
def _machine() -> str:
    """6 hex digits naming this machine and PID namespace (containers on one host have their own)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:6]


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (255 where it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # a folder not there yet, or no pathconf (Windows)
        return DEFAULT_NAME_MAX


def _shortened(name: str, most: int) -> str:
    """``name`` cut to at most ``most`` bytes, as the file system counts them (between characters,
    for a UTF-8 name; never empty)."""
    data = os.fsencode(name)
    if len(data) <= most:
        return name
    cut = data[: max(most, 1)]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8 to begin with: its bytes as they are
        return os.fsdecode(cut)
    return cut.decode("utf-8", "ignore") or os.fsdecode(cut)


def temp_name(final: Path) -> Path:
    """``.<name>.<pid>-<machine>.<8 hex>.part`` beside ``final``; a long name is cut short in it, so that
    any name the file system takes can be written (the writer fields, which the sweep reads, stay whole)."""
    tag = f".{os.getpid()}-{_machine()}.{secrets.token_hex(4)}{PART_SUFFIX}"
    name = _shortened(final.name, name_max(final.parent) - 1 - len(os.fsencode(tag)))
    return final.with_name(f".{name}{tag}")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (or a link to one); OSError if it is not.

    Opening a FIFO blocks until a writer comes (forever), and opening a device can act on it, so
    neither is opened: the path is looked at first, opened without blocking, and what was
    opened is looked at again (it may have been replaced in between).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT: let the age rule decide
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):  # not a process id at all
        return False
    return True


def _is_stale(entry: os.DirEntry[str], now: float) -> bool:
    """Whether ``entry`` is named like a temporary of ours whose writer is gone (or a day old)."""
    match = _PART_NAME.fullmatch(entry.name)
    if match is None:
        return False
    if match["machine"] == _machine() and not _alive(int(match["pid"])):
        return True
    try:
        return entry.stat(follow_symlinks=False).st_mtime < now - STALE_AFTER
    except OSError:
        return False


def _named(paths: list[Path], most: int = 5) -> str:
    names = ", ".join(p.name for p in paths[:most])
    return names + (f" and {len(paths) - most} more" if len(paths) > most else "")


def sweep_stale_parts(folder: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``, and say which (a warning).

    A temporary is stale when its writer ran on this machine and is no longer a live
    process, or when it is older than :data:`STALE_AFTER`. Only regular files named
    exactly as :func:`temp_name` names them are removed: a folder is never removed
    (a user's folder of a similar name would go with everything in it), a stale one
    is only named in a warning. Never fails: what cannot be listed or removed is left
    as it is. Returns what was removed.
    """
    now = time.time()
    try:
        with os.scandir(folder) as it:
            stale = [entry for entry in it if _is_stale(entry, now)]
    except OSError:
        return []
    removed, folders = [], []
    for entry in stale:
        if not entry.is_file(follow_symlinks=False):
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    if removed:
        log.warning(
            "removed %d temporary file(s) left in %s by an interrupted run: %s", len(removed), folder, _named(removed)
        )
    if folders:
        log.warning(
            "left %d folder(s) in %s named like an interrupted run's temporary (remove them if no seedark "
            "is writing there): %s",
            len(folders),
            folder,
            _named(folders),
        )
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _SWEPT:
        _SWEPT.add(key)
        sweep_stale_parts(folder)


def create_temp(final: Path) -> tuple[int, Path]:
    """A new, empty hidden file beside ``final``; mode follows the umask like open()."""
    _sweep_once(final.parent)
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


def hash_file(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so large files don't sit in memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    _sweep_once(final.parent)
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
