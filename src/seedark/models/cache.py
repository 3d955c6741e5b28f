"""The model cache: where pretrained weights are kept, and the operations that fill and read it.

Getting and checking the files is :mod:`seedark.models.official`'s (it knows nothing
of the cache); this module decides when to fetch, installs what it gets, and loads.

Layout, under :func:`cache_dir` (``$SEEDARK_HOME``, else platformdirs' user cache
folder for ``seedark``)::

    models/
      sony.lock                 file lock: one process at a time writes models/sony/
      sony/
        model.safetensors       the converted network weights (float32, ~31 MB for sony)
        provenance.json         where they came from, the pins, and their sha256
        download/               only while a download is incomplete (index + *.part)
      mine/                     an imported model, same shape
      nikon-d850/               a model `seedark finetune` made, same shape
      user-models.json          the table of those (seedark.models.usermodels)
      user-models.lock          file lock: one process at a time writes the table

What is kept: only the converted safetensors and its provenance record. The
official TF files are deleted once converted: two thirds of the 87 MB data file
is Adam optimizer state that inference never reads, and the provenance keeps the
URLs and pins needed to fetch and check them again (``download_model(force=True)``).
An interrupted download leaves ``download/*.part`` so the next attempt resumes;
a ``.part`` is never loadable, is deleted as soon as it fails verification, and
:func:`remove_model` deletes it. A model counts as cached only once
``provenance.json`` exists, and that file is renamed into place last.

``provenance.json`` holds: ``provenance_version``, ``name``, ``source`` ("download" or
"import"), ``verified`` (checked against the registry pins or not), ``description``,
``licence``, ``homepage``, ``mirror`` (downloads) or ``original_path`` /
``original_format`` (imports), ``files`` (per official file: ``name``, ``urls``,
``size``, ``pinned_sha256``, the actual ``sha256``, ``verified_by``), ``spec`` (network
shape), ``created`` (UTC), and ``weights_file`` / ``weights_sha256`` / ``weights_size``
for the converted file.

Trust: the pinned sha256 of the official ``.index`` vouches for the per-tensor
CRC32C values it records, and those verify the data file; nothing that failed a
check is ever moved into ``models/``. The converted file's sha256 is recorded in
``provenance.json`` and checked on every :func:`load_model`, so a corrupted or
tampered entry is noticed and fetched again (registry models) or reported.

Environment, read at call time: ``SEEDARK_HOME`` (cache root), ``SEEDARK_MIRROR``
(where downloads come from: :mod:`seedark.models.official`), ``SEEDARK_OFFLINE=1``
(never touch the network).

Concurrency: everything that writes ``models/<name>/`` holds ``models/<name>.lock``
(an OS lock, released even if the process dies). A second process that wants the
same model waits, then finds it cached and downloads nothing. Readers take no lock:
files are replaced atomically and a reader that catches a half-updated entry sees a
hash mismatch and retries through the lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from filelock import FileLock
from filelock import Timeout as LockTimeout

from seedark._files import fsync_path, hash_file, publish, temp_file
from seedark.config import cache_dir, cache_write_reason, offline
from seedark.errors import DownloadError, SeedarkError, UsageError, WeightsError
from seedark.models import official, registry, usermodels
from seedark.models.registry import DEFAULT_MODEL, ModelRecord
from seedark.models.usermodels import UserModel
from seedark.models.weightsfile import WeightsFile, file_identity, located
from seedark.progress import ByteProgress

if TYPE_CHECKING:
    from seedark.models.weights import LoadedWeights

log = logging.getLogger("seedark")


WEIGHTS_NAME = "model.safetensors"
PROVENANCE_NAME = "provenance.json"
PROVENANCE_VERSION = 1
DOWNLOAD_DIR = "download"
#: Seconds to wait for another process holding a model's lock (a slow download) before giving up.
LOCK_TIMEOUT = 3600.0

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


# --------------------------------------------------------------------------- paths


def models_dir() -> Path:
    return cache_dir() / "models"


@dataclass(frozen=True)
class ModelFiles:
    """Where one model lives in the cache."""

    name: str
    dir: Path
    weights: Path
    provenance: Path
    lock: Path
    downloads: Path


def model_files(name: str) -> ModelFiles:
    _check_name(name)
    root = models_dir()
    d = root / name
    return ModelFiles(name, d, d / WEIGHTS_NAME, d / PROVENANCE_NAME, root / f"{name}.lock", d / DOWNLOAD_DIR)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )


def _imported_names() -> list[str]:
    root = models_dir()
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [
        d.name
        for d in entries
        if d.name not in registry.MODELS and _NAME_RE.fullmatch(d.name) and (d / PROVENANCE_NAME).is_file()
    ]


def _resolve(name: str) -> ModelRecord | None:
    """The registry record, None for a model imported into the cache, UsageError otherwise."""
    _check_name(name)
    record = registry.MODELS.get(name)
    if record is not None:
        return record
    if model_files(name).provenance.is_file():
        return None
    known = ", ".join(sorted(registry.MODELS))
    imported = _imported_names()
    extra = f"; imported: {', '.join(imported)}" if imported else ""
    raise UsageError(f"unknown model {name!r}; known models: {known}{extra}")


def check_model(name: str) -> None:
    """Raise UsageError unless ``name`` is a registry model or one imported into the cache.

    The cheap check (nothing downloaded, read or hashed), so that a mistyped ``--model``
    is reported before any other file is looked at.
    """
    _resolve(name)


# --------------------------------------------------------------------------- provenance


def read_provenance(name: str) -> dict[str, Any] | None:
    """The provenance record of a cached model, None if absent or unreadable."""
    return _read_json(model_files(name).provenance)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _entry_problem(files: ModelFiles, record: ModelRecord | None) -> str | None:
    """Why the cached entry can't be used (None when it's good); hashes the weights file."""
    return _entry_state(files, record)[0]


def _entry_state(files: ModelFiles, record: ModelRecord | None) -> tuple[str | None, str]:
    """Why the cached entry can't be used (None when it's good), and the weights file's SHA-256
    (hashed now) when it matches the provenance record."""
    if not files.provenance.is_file():
        return "not in the cache", ""
    prov = _read_json(files.provenance)
    if prov is None or not isinstance(prov.get("weights_sha256"), str):
        return f"its provenance record {PROVENANCE_NAME} is unreadable", ""
    try:
        size = files.weights.stat().st_size
    except OSError:
        return f"{WEIGHTS_NAME} is missing", ""
    if prov.get("weights_size") not in (None, size):
        return f"{WEIGHTS_NAME} has {size:,} bytes, the provenance record says {prov['weights_size']:,}", ""
    try:
        digest = hash_file(files.weights)
    except OSError as exc:
        return f"{WEIGHTS_NAME} is unreadable ({exc.strerror or exc})", ""
    if digest != prov["weights_sha256"]:
        return f"{WEIGHTS_NAME} has sha256 {digest}, the provenance record says {prov['weights_sha256']}", ""
    if record is not None and prov.get("verified"):
        pinned = {f.get("name"): (f.get("pinned_sha256"), f.get("size")) for f in prov.get("files", [])}
        for f in record.files:
            if pinned.get(f.name, (None, None)) != (f.sha256, f.size):
                return "it was built from other files than this version of seedark pins", ""
    return None, digest


def _checked_file(files: ModelFiles, record: ModelRecord | None) -> tuple[WeightsFile | None, str | None]:
    """The cached weights file, checked against its provenance record now (hashed), or why it can't
    be used. Its identity holds the checksum; it is None (the file is read in full) if the
    file changed while it was hashed."""
    before = file_identity((files.weights,))
    problem, digest = _entry_state(files, record)
    if problem is not None:
        return None, problem
    where = located(files.weights, "safetensors", (files.weights,), f"sha256:{digest}")
    if before is None or where.identity is None or where.identity.partition("/")[0] != before:
        where = replace(where, identity=None)
    return where, None


def _provenance(name: str, origin: dict[str, Any], weights: LoadedWeights, weights_file: Path) -> dict[str, Any]:
    """The whole record: ``origin`` (what :mod:`seedark.models.official` says of the source) plus the
    converted file's facts."""
    s = weights.spec
    return {
        **origin,
        "provenance_version": PROVENANCE_VERSION,
        "name": name,
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": hash_file(weights_file),
        "weights_size": weights_file.stat().st_size,
        "spec": {"in_channels": s.in_channels, "width": s.width, "block": s.block, "packing": s.packing},
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --------------------------------------------------------------------------- locking and installing


@contextlib.contextmanager
def _locked(files: ModelFiles, error: type[SeedarkError]) -> Iterator[None]:
    try:
        files.lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(cache_write_reason(exc), files.lock.parent) from exc
    lock = FileLock(files.lock)
    try:
        while not _acquire(lock, files):  # the lock file was removed (models remove) while we waited
            lock.release()
    except LockTimeout:
        raise error(
            f"gave up after {LOCK_TIMEOUT:.0f} s waiting for another seedark process working on this model", files.lock
        ) from None
    except OSError as exc:
        raise error(cache_write_reason(exc), files.lock) from exc
    try:
        yield
    finally:
        lock.release()


def _acquire(lock: FileLock, files: ModelFiles) -> bool:
    """Take the model's lock, waiting for another process if need be. False when what was locked is
    no longer the lock file: :func:`remove_model` deletes it under the lock, and a process that opened
    it before then holds a lock nobody else will ever ask for (filelock 4 checks this itself, 3 not)."""
    try:
        lock.acquire(timeout=0)
    except LockTimeout:
        log.info("another seedark process is working on the %s model; waiting for it (lock %s)", files.name, files.lock)
        lock.acquire(timeout=LOCK_TIMEOUT)
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if fd is None:  # a filelock that does not say (Windows deletes the file itself when it is free)
        return True
    try:
        return os.path.samestat(os.fstat(fd), os.stat(files.lock))
    except FileNotFoundError:
        return False


def _install(files: ModelFiles, weights: LoadedWeights, origin: dict[str, Any], error: type[SeedarkError]) -> Path:
    """Convert ``weights`` into the cache with their provenance; call it holding the lock.

    Both files are complete and fsync'ed under temporary names before either is
    renamed: weights first, provenance last, since a model counts as cached only
    once its provenance is in place. On failure (a full disk) the temporaries are
    gone and so is the model's folder if this left it empty.
    """
    try:
        files.dir.mkdir(parents=True, exist_ok=True)
        with temp_file(files.weights) as tmp_weights, temp_file(files.provenance) as tmp_prov:
            official.weights_io().save_safetensors(weights, tmp_weights, metadata={"seedark_model": files.name})
            fsync_path(tmp_weights)
            record = _provenance(files.name, origin, weights, tmp_weights)
            tmp_prov.write_bytes((json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
            fsync_path(tmp_prov)
            publish(tmp_weights, files.weights, overwrite=True)
            publish(tmp_prov, files.provenance, overwrite=True)
        fsync_path(files.dir)
    except OSError as exc:
        raise error(cache_write_reason(exc), files.dir) from exc
    finally:
        _drop_if_empty(files.dir)
    return files.weights


def _drop_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when empty: nothing else was cached here


def _cleanup_downloads(files: ModelFiles) -> None:
    """Drop the download folder unless it holds a partial file worth resuming; drop an empty model folder."""
    with contextlib.suppress(OSError):
        if files.downloads.is_dir() and not any(p.name.endswith(".part") for p in files.downloads.iterdir()):
            shutil.rmtree(files.downloads)
    _drop_if_empty(files.dir)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``seedark models list``."""

    name: str
    description: str
    cached: bool
    size: int | None  # bytes on disk when cached
    path: Path | None  # the weights file when cached
    imported: bool
    verified: bool | None = None  # None when not cached
    download_size: int | None = None  # what a download fetches (registry models)
    user: UserModel | None = None  # a model `seedark finetune` made: its camera, base, profile, run


def list_models() -> list[ModelStatus]:
    """Registry models (cached or not), then models imported into the cache. Does not hash anything."""
    rows: list[ModelStatus] = []
    for name, record in registry.MODELS.items():
        rows.append(_status(name, record.description, record.download_size))
    users = {r.name: r for r in usermodels.read_table(user_table())}
    for name in _imported_names():
        prov = read_provenance(name) or {}
        description = str(prov.get("description") or f"imported from {prov.get('original_path', '?')}")
        rows.append(replace(_status(name, description, None), user=users.get(name)))
    return rows


def _status(name: str, description: str, download_size: int | None) -> ModelStatus:
    files = model_files(name)
    prov = _read_json(files.provenance) if files.provenance.is_file() else None
    size: int | None = None
    if prov is not None:
        with contextlib.suppress(OSError):
            size = files.weights.stat().st_size
    cached = prov is not None and size is not None
    return ModelStatus(
        name=name,
        description=description,
        cached=cached,
        size=size if cached else None,
        path=files.weights if cached else None,
        imported=bool(prov and prov.get("source") == "import"),
        verified=bool(prov.get("verified")) if cached and prov is not None else None,
        download_size=download_size,
    )


def manual_instructions(name: str) -> str:
    """How to install a registry model by hand: the exact URLs, where they go, the import command."""
    _check_name(name)
    record = registry.MODELS.get(name)
    if record is None:
        raise UsageError(f"{name!r} is not a downloadable model; known models: {', '.join(sorted(registry.MODELS))}")
    return official.manual_steps(record, model_files(name).dir)


def load_model(
    name: str | None = None, *, download: bool = True, progress: ByteProgress | None = None
) -> LoadedWeights:
    """The weights of a cached model (default ``sony``), downloading a registry model on first use.

    The converted file is hashed and checked against its provenance record every
    time. A corrupt registry model is fetched again when ``download`` allows;
    otherwise, and for imported models, WeightsError says how to repair it.
    """
    return official.weights_io().load_located(model_file(name, download=download, progress=progress))


def model_file(name: str | None = None, *, download: bool = True, progress: ByteProgress | None = None) -> WeightsFile:
    """:func:`load_model` up to reading the tensors: the cached model's weights file, hashed and
    checked against its provenance record (now, every time), downloaded first when needed."""
    name = name or DEFAULT_MODEL
    record = _resolve(name)
    files = model_files(name)
    where, problem = _checked_file(files, record)
    if where is not None:
        return where
    assert problem is not None
    cached = files.provenance.is_file()
    if record is None or not download or (cached and offline()):
        raise _unusable(files, record, problem, cached)
    if cached:
        log.info("the cached %s model is corrupt (%s); downloading it again", name, problem)
    elif not offline():  # offline, download_model explains why nothing is fetched
        _announce_first_download(record, files)
    download_model(name, progress=progress)
    where, problem = _checked_file(files, record)
    if where is None:  # pragma: no cover - only if the disk changes under us
        raise WeightsError(f"the freshly downloaded {name} model fails its check ({problem})", files.weights)
    return where


def _unusable(files: ModelFiles, record: ModelRecord | None, problem: str, cached: bool) -> WeightsError:
    """The error for an entry that is missing or corrupt and won't be downloaded now, with how to fix it."""
    name = files.name
    if not cached:
        return WeightsError(
            f"the {name} model is not in the cache; run `seedark models download {name}`\n\n"
            + manual_instructions(name),
            files.weights,
        )
    fix = f"`seedark models download {name}`" if record is not None else "import it again"
    return WeightsError(
        f"the cached {name} model is corrupt ({problem}); run `seedark models remove {name}` and then {fix}",
        files.weights,
    )


def _announce_first_download(record: ModelRecord, files: ModelFiles) -> None:
    size = f" ({record.download_size / 1e6:.1f} MB)" if record.download_size else ""
    hosts = sorted({urlsplit(u).netloc for f in official.sources(record) for u in f.urls[:1]})
    log.info(
        "the %s model is not in the cache yet: downloading it once%s from %s into %s",
        record.name,
        size,
        ", ".join(hosts),
        files.dir,
    )


def download_model(name: str, *, force: bool = False, progress: ByteProgress | None = None) -> Path:
    """Make sure registry model ``name`` is cached (verified and converted); return its weights file.

    Does nothing when a valid entry exists (unless ``force``). Raises DownloadError
    whose reason ends with :func:`manual_instructions` when the files can't be fetched
    or fail verification; nothing is cached then.
    """
    _check_name(name)
    record = registry.MODELS.get(name)
    files = model_files(name)
    if record is None:
        if files.provenance.is_file():
            raise UsageError(f"{name!r} is an imported model; there is nothing to download for it")
        raise UsageError(f"unknown model {name!r}; downloadable models: {', '.join(sorted(registry.MODELS))}")
    official.checkpoint_files(record)  # a malformed registry entry is a usage error, offline too
    if offline():
        if not force and _entry_problem(files, record) is None:
            return files.weights
        raise DownloadError(
            f"offline mode (SEEDARK_OFFLINE is set): cannot download the {name} model\n\n{manual_instructions(name)}",
            files.weights,
        )
    with _locked(files, DownloadError):
        if not force and _entry_problem(files, record) is None:
            log.info("the %s model is already in the cache: %s", name, files.weights)
            return files.weights
        try:
            return _download_locked(record, files, progress)
        except DownloadError as exc:
            if isinstance(exc.__cause__, OSError):
                raise  # our own disk failed (full, read-only): fetching the files by hand would not help
            raise DownloadError(f"{exc.reason}\n\n{manual_instructions(name)}", exc.path) from exc
        except WeightsError as exc:
            raise DownloadError(
                f"the downloaded {name} checkpoint was refused: {exc.reason}\n\n{manual_instructions(name)}", exc.path
            ) from exc
        finally:
            _cleanup_downloads(files)


def _download_locked(record: ModelRecord, files: ModelFiles, progress: ByteProgress | None) -> Path:
    weights, origin = official.download_official(record, files.downloads, progress)
    path = _install(files, weights, origin, DownloadError)
    shutil.rmtree(files.downloads, ignore_errors=True)  # the TF files are not kept: see the module docstring
    log.info("the %s model is ready: %s", record.name, path)
    return path


def import_model(name: str, path: str | os.PathLike[str], *, unverified: bool = False) -> Path:
    """Put weights obtained by hand into the cache; return the cached weights file.

    For a registry model, ``path`` is an official TF checkpoint (folder, prefix or
    ``.index``) checked against the same pins as a download. With
    ``unverified=True``, ``name`` must be new and ``path`` may be any TF checkpoint
    or seedark ``.safetensors`` file that fits the network.
    """
    _check_name(name)
    src = Path(path).expanduser()
    record = registry.MODELS.get(name)
    if unverified:
        if record is not None:
            raise UsageError(
                f"{name!r} is an official model: import the official checkpoint without --unverified "
                "(it is then checked against the official checksums), or choose another name for your own weights"
            )
        weights, origin = official.read_own(src)
    else:
        if record is None:
            raise UsageError(
                f"{name!r} is not an official model ({', '.join(sorted(registry.MODELS))}); "
                "to import your own weights under a new name, mark them unverified (--unverified)"
            )
        weights, origin = official.read_official(record, src)
    files = model_files(name)
    with _locked(files, WeightsError):
        out = _install(files, weights, origin, WeightsError)
    log.info("imported %s as the %s model: %s", src, name, out)
    return out


def remove_model(name: str) -> bool:
    """Delete a model from the cache (partial downloads included); False if it wasn't there."""
    files = model_files(name)
    if not files.dir.exists():
        return False
    with _locked(files, WeightsError):
        try:
            shutil.rmtree(files.dir)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise WeightsError(cache_write_reason(exc), files.dir) from exc
        finally:
            # Nothing of the model stays behind, its lock file neither: removed while held, so a
            # process waiting on it takes a fresh one (see _acquire).
            with contextlib.suppress(OSError):
                files.lock.unlink()
    if user_table().is_file():
        _update_table(lambda records: [r for r in records if r.name != name])
    log.info("removed the %s model from %s", name, files.dir)
    return True


# --------------------------------------------------------------------------- your own models


def user_table() -> Path:
    """The table of the models ``seedark finetune`` made (seedark.models.usermodels)."""
    return models_dir() / usermodels.TABLE_NAME


def _update_table(change: Callable[[list[UserModel]], list[UserModel]]) -> None:
    """Rewrite the table through ``change``, holding its lock; nothing is written when nothing changes."""
    path = user_table()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_suffix(".lock"), timeout=LOCK_TIMEOUT):
            records = usermodels.read_table(path)
            changed = change(records)
            if changed != records:
                usermodels.write_table(path, changed)
    except (OSError, LockTimeout) as exc:
        reason = cache_write_reason(exc) if isinstance(exc, OSError) else "another process holds the table's lock"
        raise WeightsError(reason, path) from exc


def user_model_for(make: str | None, model: str | None, packing: str) -> UserModel | None:
    """The newest model ``seedark finetune`` made for this camera and sensor kind whose weights
    are in the cache, or None. Reads the table on every call (it is small), hashes nothing."""
    record = usermodels.for_camera(usermodels.read_table(user_table()), make, model, packing)
    if record is None or not model_files(record.name).provenance.is_file():
        return None
    return record


def check_user_model_name(name: str) -> None:
    """Refuse a name a fine-tuned model cannot have: not a model name, or an official model's."""
    _check_name(name)
    if name in registry.MODELS:
        raise UsageError(f"{name!r} is an official model's name; choose another (--name)")


def register_user_model(record: UserModel, weights: LoadedWeights, origin: dict[str, Any]) -> Path:
    """Install fine-tuned ``weights`` as the model ``record.name`` and list it in the table (a
    model of that name made before is replaced; an official model's name is refused)."""
    check_user_model_name(record.name)
    files = model_files(record.name)
    with _locked(files, WeightsError):
        out = _install(files, weights, {**origin, "source": "finetune"}, WeightsError)
    _update_table(lambda records: [r for r in records if r.name != record.name] + [record])
    log.info("registered %s as the model for %s: %s", record.name, record.camera, out)
    return out


__all__ = [
    "DEFAULT_MODEL",
    "ModelFiles",
    "ModelStatus",
    "cache_dir",
    "check_model",
    "check_user_model_name",
    "download_model",
    "import_model",
    "list_models",
    "load_model",
    "manual_instructions",
    "model_file",
    "model_files",
    "models_dir",
    "read_provenance",
    "register_user_model",
    "remove_model",
    "user_model_for",
    "user_table",
]
