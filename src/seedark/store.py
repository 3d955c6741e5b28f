"""The model cache: fetch, verify, convert, keep and load pretrained weights.

Layout, under :func:`cache_dir` (``$SEEDARK_HOME``, else platformdirs' user cache
folder for ``seedark``)::

    models/
      sony.lock                 file lock: one process at a time writes models/sony/
      sony/
        model.safetensors       the converted network weights (float32, ~31 MB for sony)
        provenance.json         where they came from, the pins, and their sha256
        download/               only while a download is incomplete (index + *.part)
      mine/                     an imported model, same shape

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
(``URL/<model>/<official file name>`` replaces every default source; plain HTTP,
no Google Drive handling), ``SEEDARK_OFFLINE=1`` (never touch the network).

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
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import platformdirs
from filelock import FileLock
from filelock import Timeout as LockTimeout

from . import download as dl
from . import tfcheckpoint
from .errors import DownloadError, SeedarkError, UsageError, WeightsError
from .registry import DEFAULT_MODEL, MODELS, ModelRecord, SourceFile, drive_view_url

if TYPE_CHECKING:
    from .weights import LoadedWeights

log = logging.getLogger("seedark")

Progress = Callable[[int, int | None], None]

WEIGHTS_NAME = "model.safetensors"
PROVENANCE_NAME = "provenance.json"
PROVENANCE_VERSION = 1
DOWNLOAD_DIR = "download"
#: Seconds to wait for another process holding a model's lock (a slow download) before giving up.
LOCK_TIMEOUT = 3600.0


def _weights() -> ModuleType:
    # importing torch takes seconds; `models list`, `path` and `remove` never need it
    from . import weights

    return weights


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """Root of seedark's cache: ``$SEEDARK_HOME`` if set, else the user cache folder."""
    home = os.environ.get("SEEDARK_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_cache_dir("seedark"))


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


def mirror() -> str | None:
    """``$SEEDARK_MIRROR`` without a trailing slash, or None."""
    value = os.environ.get("SEEDARK_MIRROR", "").strip().rstrip("/")
    return value or None


def sources(record: ModelRecord) -> tuple[SourceFile, ...]:
    """The record's files with their effective URLs (a mirror replaces every default source)."""
    base = mirror()
    if base is None:
        return record.files
    return tuple(replace(f, urls=(f"{base}/{record.name}/{f.name}",), gdrive_id=None) for f in record.files)


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
        if d.name not in MODELS and _NAME_RE.fullmatch(d.name) and (d / PROVENANCE_NAME).is_file()
    ]


def _resolve(name: str) -> ModelRecord | None:
    """The registry record, None for a model imported into the cache, UsageError otherwise."""
    _check_name(name)
    record = MODELS.get(name)
    if record is not None:
        return record
    if model_files(name).provenance.is_file():
        return None
    known = ", ".join(sorted(MODELS))
    imported = _imported_names()
    extra = f"; imported: {', '.join(imported)}" if imported else ""
    raise UsageError(f"unknown model {name!r}; known models: {known}{extra}")


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
    if not files.provenance.is_file():
        return "not in the cache"
    prov = _read_json(files.provenance)
    if prov is None or not isinstance(prov.get("weights_sha256"), str):
        return f"its provenance record {PROVENANCE_NAME} is unreadable"
    try:
        size = files.weights.stat().st_size
    except OSError:
        return f"{WEIGHTS_NAME} is missing"
    if prov.get("weights_size") not in (None, size):
        return f"{WEIGHTS_NAME} has {size:,} bytes, the provenance record says {prov['weights_size']:,}"
    try:
        digest = dl.hash_file(files.weights)
    except OSError as exc:
        return f"{WEIGHTS_NAME} is unreadable ({exc.strerror or exc})"
    if digest != prov["weights_sha256"]:
        return f"{WEIGHTS_NAME} has sha256 {digest}, the provenance record says {prov['weights_sha256']}"
    if record is not None and prov.get("verified"):
        pinned = {f.get("name"): (f.get("pinned_sha256"), f.get("size")) for f in prov.get("files", [])}
        for f in record.files:
            if pinned.get(f.name, (None, None)) != (f.sha256, f.size):
                return "it was built from other files than this version of seedark pins"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_dict(weights: LoadedWeights) -> dict[str, Any]:
    s = weights.spec
    return {"in_channels": s.in_channels, "width": s.width, "block": s.block, "packing": s.packing}


# --------------------------------------------------------------------------- locking and installing


@contextlib.contextmanager
def _locked(files: ModelFiles, error: type[SeedarkError]) -> Iterator[None]:
    try:
        files.lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(dl.os_error_reason(exc), files.lock.parent) from exc
    lock = FileLock(files.lock)
    try:
        try:
            lock.acquire(timeout=0)
        except LockTimeout:
            log.info(
                "another seedark process is working on the %s model; waiting for it (lock %s)", files.name, files.lock
            )
            lock.acquire(timeout=LOCK_TIMEOUT)
    except LockTimeout:
        raise error(
            f"gave up after {LOCK_TIMEOUT:.0f} s waiting for another seedark process working on this model", files.lock
        ) from None
    except OSError as exc:
        raise error(dl.os_error_reason(exc), files.lock) from exc
    try:
        yield
    finally:
        lock.release()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(files: ModelFiles, weights: LoadedWeights, provenance: dict[str, Any], error: type[SeedarkError]) -> Path:
    """Write weights + provenance under temporary names, then rename: weights first, provenance last."""
    tmp_weights = files.dir / f".{WEIGHTS_NAME}.{os.getpid()}.tmp"
    tmp_prov = files.dir / f".{PROVENANCE_NAME}.{os.getpid()}.tmp"
    try:
        files.dir.mkdir(parents=True, exist_ok=True)
        _weights().save_safetensors(weights, tmp_weights, metadata={"seedark_model": files.name})
        _fsync(tmp_weights)
        record = dict(provenance)
        record.update(
            {
                "weights_file": WEIGHTS_NAME,
                "weights_sha256": dl.hash_file(tmp_weights),
                "weights_size": tmp_weights.stat().st_size,
                "spec": _spec_dict(weights),
                "created": _now(),
            }
        )
        _write_synced(tmp_prov, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        os.replace(tmp_weights, files.weights)
        os.replace(tmp_prov, files.provenance)
    except OSError as exc:
        raise error(dl.os_error_reason(exc), files.dir) from exc
    finally:
        for tmp in (tmp_weights, tmp_prov):
            with contextlib.suppress(OSError):
                tmp.unlink()
    return files.weights


def _cleanup_downloads(files: ModelFiles) -> None:
    """Drop the download folder unless it holds a partial file worth resuming; drop an empty model folder."""
    with contextlib.suppress(OSError):
        if files.downloads.is_dir() and not any(p.name.endswith(".part") for p in files.downloads.iterdir()):
            shutil.rmtree(files.downloads)
    with contextlib.suppress(OSError):
        files.dir.rmdir()  # only succeeds when empty: nothing else was cached here


def _split_checkpoint_files(record: ModelRecord) -> tuple[SourceFile, SourceFile]:
    index = [f for f in record.files if f.name.endswith(".index")]
    data = [f for f in record.files if ".data-" in f.name]
    if len(index) != 1 or len(data) != 1 or len(record.files) != 2:
        raise UsageError(f"registry entry {record.name!r} must list one .index and one .data-* file")
    if index[0].sha256 is None:
        raise UsageError(f"registry entry {record.name!r} has no pinned sha256 for {index[0].name}")
    return index[0], data[0]


def _check_packing(record: ModelRecord, weights: LoadedWeights, path: Path) -> None:
    if weights.spec.packing != record.packing:
        raise WeightsError(
            f"checkpoint takes {weights.spec.packing} input, the {record.name} model should take {record.packing}",
            path,
        )


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


def list_models() -> list[ModelStatus]:
    """Registry models (cached or not), then models imported into the cache. Does not hash anything."""
    rows: list[ModelStatus] = []
    for name, record in MODELS.items():
        rows.append(_status(name, record.description, record.download_size))
    for name in _imported_names():
        prov = read_provenance(name) or {}
        description = str(prov.get("description") or f"imported from {prov.get('original_path', '?')}")
        rows.append(_status(name, description, None))
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
    record = MODELS.get(name)
    if record is None:
        raise UsageError(f"{name!r} is not a downloadable model; known models: {', '.join(sorted(MODELS))}")
    effective = sources(record)
    lines = [
        f"To install the {name} model by hand, download these {len(record.files)} files (from any one address "
        "listed under each) into one folder, keeping their names:"
    ]
    for official, actual in zip(record.files, effective, strict=True):
        size = f" ({official.size:,} bytes)" if official.size is not None else ""
        lines.append(f"  {official.name}{size}")
        urls = list(actual.urls)
        urls += [u for u in official.urls if u not in urls]  # behind a mirror, the official sources too
        if official.gdrive_id is not None:
            urls.append(f"{drive_view_url(official.gdrive_id)}  (in a browser: Google Drive, then 'Download anyway')")
        lines += [f"    {u}" for u in urls]
    lines.append("then run:")
    lines.append(f"  seedark models import {name} <folder>")
    lines.append(f"(the files are checked against the official checksums and converted into {model_files(name).dir})")
    return "\n".join(lines)


def load_model(name: str | None = None, *, download: bool = True, progress: Progress | None = None) -> LoadedWeights:
    """The weights of a cached model (default ``sony``), downloading a registry model on first use.

    The converted file is hashed and checked against its provenance record every
    time. A corrupt registry model is fetched again when ``download`` allows;
    otherwise, and for imported models, WeightsError says how to repair it.
    """
    name = name or DEFAULT_MODEL
    record = _resolve(name)
    files = model_files(name)
    problem = _entry_problem(files, record)
    if problem is None:
        return _weights().load_safetensors(files.weights)
    cached = files.provenance.is_file()
    if record is None or not download or (cached and dl.offline()):
        if not cached:
            raise WeightsError(
                f"the {name} model is not in the cache; run `seedark models download {name}`\n\n"
                + manual_instructions(name),
                files.weights,
            )
        fix = f"`seedark models download {name}`" if record is not None else "import it again"
        raise WeightsError(
            f"the cached {name} model is corrupt ({problem}); run `seedark models remove {name}` and then {fix}",
            files.weights,
        )
    if cached:
        log.info("the cached %s model is corrupt (%s); downloading it again", name, problem)
    elif not dl.offline():  # offline, download_model explains why nothing is fetched
        size = f" ({record.download_size / 1e6:.1f} MB)" if record.download_size else ""
        hosts = sorted({urlsplit(u).netloc for f in sources(record) for u in f.urls[:1]})
        log.info(
            "the %s model is not in the cache yet: downloading it once%s from %s into %s",
            name,
            size,
            ", ".join(hosts),
            files.dir,
        )
    download_model(name, progress=progress)
    problem = _entry_problem(files, record)
    if problem is not None:  # pragma: no cover - only if the disk changes under us
        raise WeightsError(f"the freshly downloaded {name} model fails its check ({problem})", files.weights)
    return _weights().load_safetensors(files.weights)


def download_model(name: str, *, force: bool = False, progress: Progress | None = None) -> Path:
    """Make sure registry model ``name`` is cached (verified and converted); return its weights file.

    Does nothing when a valid entry exists (unless ``force``). Raises DownloadError
    whose reason ends with :func:`manual_instructions` when the files can't be fetched
    or fail verification; nothing is cached then.
    """
    _check_name(name)
    record = MODELS.get(name)
    files = model_files(name)
    if record is None:
        if files.provenance.is_file():
            raise UsageError(f"{name!r} is an imported model; there is nothing to download for it")
        raise UsageError(f"unknown model {name!r}; downloadable models: {', '.join(sorted(MODELS))}")
    index_src, data_src = _split_checkpoint_files(record)
    if dl.offline():
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
            return _download_locked(record, files, index_src, data_src, progress)
        except DownloadError as exc:
            raise DownloadError(f"{exc.reason}\n\n{manual_instructions(name)}", exc.path) from exc
        except WeightsError as exc:
            raise DownloadError(
                f"the downloaded {name} checkpoint was refused: {exc.reason}\n\n{manual_instructions(name)}", exc.path
            ) from exc
        finally:
            _cleanup_downloads(files)


def _download_locked(
    record: ModelRecord, files: ModelFiles, index_src: SourceFile, data_src: SourceFile, progress: Progress | None
) -> Path:
    effective = {f.name: f for f in sources(record)}
    index_urls, data_urls = effective[index_src.name].urls, effective[data_src.name].urls
    total = record.download_size
    index_path = files.downloads / index_src.name
    data_file = files.downloads / data_src.name

    def shifted(before: int) -> Progress | None:
        if progress is None:
            return None
        return lambda done, file_total: progress(before + done, total if total is not None else file_total)

    if not (index_path.is_file() and dl.hash_file(index_path) == index_src.sha256):
        log.info("fetching %s for the %s model from %s", index_src.name, record.name, index_urls[0])
        dl.fetch(index_urls, index_path, size=index_src.size, sha256=index_src.sha256, progress=shifted(0))
    before = index_src.size or index_path.stat().st_size
    log.info("fetching %s for the %s model from %s", data_src.name, record.name, data_urls[0])
    dl.fetch(
        data_urls,
        data_file,
        size=data_src.size,
        sha256=data_src.sha256,
        validate=lambda part: tfcheckpoint.verify_data_file(index_path, part),
        progress=shifted(before),
    )
    weights = _weights().load_tf_checkpoint(tfcheckpoint.resolve_prefix(index_path))
    _check_packing(record, weights, data_file)
    provenance = {
        "provenance_version": PROVENANCE_VERSION,
        "name": record.name,
        "source": "download",
        "verified": True,
        "description": record.description,
        "licence": record.licence,
        "homepage": record.homepage,
        "mirror": mirror(),
        "files": [
            _file_facts(index_src, index_path, effective[index_src.name].urls),
            _file_facts(data_src, data_file, effective[data_src.name].urls, verified_by=index_src.name),
        ],
    }
    path = _install(files, weights, provenance, DownloadError)
    shutil.rmtree(files.downloads, ignore_errors=True)  # the TF files are not kept: see the module docstring
    log.info("the %s model is ready: %s", record.name, path)
    return path


def _file_facts(src: SourceFile, path: Path, urls: tuple[str, ...], verified_by: str | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "name": src.name,
        "urls": list(urls),
        "size": src.size,
        "pinned_sha256": src.sha256,
        "sha256": dl.hash_file(path),
    }
    if verified_by is not None:
        facts["verified_by"] = f"CRC32C of every tensor recorded in {verified_by}"
    return facts


def import_model(name: str, path: str | os.PathLike[str], *, unverified: bool = False) -> Path:
    """Put weights obtained by hand into the cache; return the cached weights file.

    For a registry model, ``path`` is an official TF checkpoint (folder, prefix or
    ``.index``) checked against the same pins as a download. With
    ``unverified=True``, ``name`` must be new and ``path`` may be any TF checkpoint
    or seedark ``.safetensors`` file that fits the network.
    """
    _check_name(name)
    src = Path(path).expanduser()
    record = MODELS.get(name)
    files = model_files(name)
    if unverified:
        if record is not None:
            raise UsageError(
                f"{name!r} is an official model: import the official checkpoint without --unverified "
                "(it is then checked against the official checksums), or choose another name for your own weights"
            )
        weights = _weights().load_weights(src)
        provenance: dict[str, Any] = {
            "provenance_version": PROVENANCE_VERSION,
            "name": name,
            "source": "import",
            "verified": False,
            "original_path": str(src.resolve()),
            "original_format": weights.kind,
            "description": f"imported from {src.resolve()} (unverified)",
        }
    else:
        if record is None:
            raise UsageError(
                f"{name!r} is not an official model ({', '.join(sorted(MODELS))}); "
                "to import your own weights under a new name, mark them unverified (--unverified)"
            )
        weights, facts = _verify_official(record, src)
        provenance = {
            "provenance_version": PROVENANCE_VERSION,
            "name": name,
            "source": "import",
            "verified": True,
            "original_path": str(src.resolve()),
            "description": record.description,
            "licence": record.licence,
            "homepage": record.homepage,
            "files": facts,
        }
    with _locked(files, WeightsError):
        out = _install(files, weights, provenance, WeightsError)
    log.info("imported %s as the %s model: %s", src, name, out)
    return out


def _verify_official(record: ModelRecord, src: Path) -> tuple[LoadedWeights, list[dict[str, Any]]]:
    index_src, data_src = _split_checkpoint_files(record)
    prefix = tfcheckpoint.resolve_prefix(src)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise WeightsError("checkpoint index (.index) not found", index)
    try:
        digest = dl.hash_file(index)
    except OSError as exc:
        raise WeightsError(f"cannot read the checkpoint index ({exc.strerror or exc})", index) from exc
    if digest != index_src.sha256:
        raise WeightsError(
            f"not the official {record.name} checkpoint index: its sha256 is {digest}, expected {index_src.sha256}",
            index,
        )
    header, _entries = tfcheckpoint.read_index(index)
    data = tfcheckpoint.data_path(prefix, 0, header.num_shards)
    # the data file passes only if every tensor matches the CRC32C the pinned index records
    tfcheckpoint.verify_data_file(index, data)
    weights = _weights().load_tf_checkpoint(prefix)
    _check_packing(record, weights, data)
    facts = [_file_facts(index_src, index, index_src.urls), _file_facts(data_src, data, data_src.urls, index_src.name)]
    for fact in facts:
        fact["original_path"] = str((index if fact["name"] == index_src.name else data).resolve())
    return weights, facts


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
            raise WeightsError(dl.os_error_reason(exc), files.dir) from exc
    log.info("removed the %s model from %s", name, files.dir)
    return True


__all__ = [
    "DEFAULT_MODEL",
    "ModelFiles",
    "ModelStatus",
    "cache_dir",
    "download_model",
    "import_model",
    "list_models",
    "load_model",
    "manual_instructions",
    "mirror",
    "model_files",
    "models_dir",
    "read_provenance",
    "remove_model",
    "sources",
]
