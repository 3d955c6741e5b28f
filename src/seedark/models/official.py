"""A registry model's official weights: downloaded from their sources, or imported by hand, and checked.

Also reads any other checkpoint a user imports (:func:`read_own`, unverified). Knows
nothing of the cache: each function takes folders or files and gives back checked
weights and the facts of their origin, which :mod:`seedark.models.cache` records in
``provenance.json`` and installs under its lock.

Trust: the pinned sha256 of the official ``.index`` vouches for the per-tensor
CRC32C values it records, and those verify the data file (see
:mod:`seedark.models.registry`); nothing here hands back weights that failed a check.

``SEEDARK_MIRROR`` (``URL/<model>/<official file name>``) replaces every default
source; plain HTTP, no Google Drive handling (:mod:`seedark.downloads` does the downloading).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from seedark._files import hash_file
from seedark.config import MIRROR, mirror
from seedark.errors import DownloadError, UsageError, WeightsError
from seedark.models import tfcheckpoint
from seedark.models.registry import ModelRecord, SourceFile, drive_view_url
from seedark.progress import ByteProgress

if TYPE_CHECKING:
    from seedark.models.weights import LoadedWeights

log = logging.getLogger("seedark")


def weights_io() -> ModuleType:
    """:mod:`seedark.models.weights`, imported on first use: importing torch takes seconds,
    and ``models list``, ``path`` and ``remove`` never need it."""
    from seedark.models import weights

    return weights


def sources(record: ModelRecord) -> tuple[SourceFile, ...]:
    """The record's files with their effective URLs (a mirror replaces every default source)."""
    base = mirror()
    if base is None:
        return record.files
    return tuple(replace(f, urls=(f"{base}/{record.name}/{f.name}",), gdrive_id=None) for f in record.files)


def checkpoint_files(record: ModelRecord) -> tuple[SourceFile, SourceFile]:
    """The record's ``.index`` and ``.data-*`` files; UsageError for an entry that isn't one pinned checkpoint."""
    index = [f for f in record.files if f.name.endswith(".index")]
    data = [f for f in record.files if ".data-" in f.name]
    if len(index) != 1 or len(data) != 1 or len(record.files) != 2:
        raise UsageError(f"registry entry {record.name!r} must list one .index and one .data-* file")
    if index[0].sha256 is None:
        raise UsageError(f"registry entry {record.name!r} has no pinned sha256 for {index[0].name}")
    return index[0], data[0]


def manual_steps(record: ModelRecord, into: Path) -> str:
    """How to install ``record`` by hand: the exact URLs, and the import command that converts it ``into``."""
    name = record.name
    lines = [
        f"To install the {name} model by hand, download these {len(record.files)} files (from any one address "
        "listed under each) into one folder, keeping their names:"
    ]
    for official, actual in zip(record.files, sources(record), strict=True):
        size = f" ({official.size:,} bytes)" if official.size is not None else ""
        lines.append(f"  {official.name}{size}")
        urls = list(actual.urls)
        urls += [u for u in official.urls if u not in urls]  # behind a mirror, the official sources too
        if official.gdrive_id is not None:
            urls.append(f"{drive_view_url(official.gdrive_id)}  (in a browser: Google Drive, then 'Download anyway')")
        lines += [f"    {u}" for u in urls]
    lines.append("then run:")
    lines.append(f"  seedark models import {name} <folder>")
    lines.append(f"(the files are checked against the official checksums and converted into {into})")
    lines += [
        "Or use weights you already have, a TF checkpoint (its folder or .index file) or a .safetensors file:",
        "  seedark enhance PHOTO --weights PATH",
        "  seedark models import NAME PATH --unverified   (kept in the cache, then: --model NAME)",
        f"Or fetch the official files from a mirror of them: {MIRROR}=URL, serving URL/{name}/<file name>.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- downloading


def download_official(
    record: ModelRecord, folder: Path, progress: ByteProgress | None = None
) -> tuple[LoadedWeights, dict[str, Any]]:
    """Download the official checkpoint into ``folder`` (resuming what an earlier try left there),
    verify it and read it: the weights and their origin for the provenance record."""
    from seedark.downloads.fetch import fetch  # requests and its kin: only when downloading

    index_src, data_src = checkpoint_files(record)
    effective = {f.name: f for f in sources(record)}
    index_urls, data_urls = effective[index_src.name].urls, effective[data_src.name].urls
    index_path, data_path = folder / index_src.name, folder / data_src.name
    total = record.download_size

    def shifted(before: int) -> ByteProgress | None:
        """The callback for one file, counting the bytes of the files before it, against the whole download."""
        if progress is None:
            return None
        return lambda done, file_total: progress(before + done, total if total is not None else file_total)

    if not (index_path.is_file() and hash_file(index_path) == index_src.sha256):
        log.info("fetching %s for the %s model from %s", index_src.name, record.name, index_urls[0])
        with _naming(record, index_src):
            fetch(index_urls, index_path, size=index_src.size, sha256=index_src.sha256, progress=shifted(0))
    before = index_src.size or index_path.stat().st_size
    log.info("fetching %s for the %s model from %s", data_src.name, record.name, data_urls[0])
    with _naming(record, data_src):
        fetch(
            data_urls,
            data_path,
            size=data_src.size,
            sha256=data_src.sha256,
            validate=lambda part: tfcheckpoint.verify_data_file(index_path, part),
            progress=shifted(before),
        )
    weights = weights_io().load_tf_checkpoint(tfcheckpoint.resolve_prefix(index_path))
    _check_packing(record, weights, data_path)
    origin = {
        **_official_facts(record),
        "source": "download",
        "mirror": mirror(),
        "files": [
            _file_facts(index_src, index_path, index_urls),
            _file_facts(data_src, data_path, data_urls, verified_by=index_src.name),
        ],
    }
    return weights, origin


@contextlib.contextmanager
def _naming(record: ModelRecord, src: SourceFile) -> Iterator[None]:
    """A failed download said as the user asked for it: the model and the official file, then why.

    The local ``.part`` path means nothing to someone who ran ``seedark enhance``, so the error
    carries no path; a failure of our own disk keeps its path (and its OSError cause, which tells
    :mod:`seedark.models.cache` that fetching the files by hand would not help).
    """
    try:
        yield
    except DownloadError as exc:
        if isinstance(exc.__cause__, OSError):
            raise
        raise DownloadError(f"cannot download model {record.name!r} ({src.name}): {exc.reason}") from exc


# --------------------------------------------------------------------------- importing by hand


def read_official(record: ModelRecord, src: Path) -> tuple[LoadedWeights, dict[str, Any]]:
    """The official checkpoint at ``src`` (folder, prefix or ``.index``), checked against the same
    pins as a download; WeightsError if it is not the pinned one."""
    index_src, data_src = checkpoint_files(record)
    prefix = tfcheckpoint.resolve_prefix(src)
    index = prefix.with_name(prefix.name + ".index")
    _check_official_index(record, index_src, index)
    header, _entries = tfcheckpoint.read_index(index)
    data = tfcheckpoint.data_path(prefix, 0, header.num_shards)
    # the data file passes only if every tensor matches the CRC32C the pinned index records
    tfcheckpoint.verify_data_file(index, data)
    weights = weights_io().load_tf_checkpoint(prefix)
    _check_packing(record, weights, data)
    facts = [_file_facts(index_src, index, index_src.urls), _file_facts(data_src, data, data_src.urls, index_src.name)]
    for fact, path in zip(facts, (index, data), strict=True):
        fact["original_path"] = str(path.resolve())
    origin = {**_official_facts(record), "source": "import", "original_path": str(src.resolve()), "files": facts}
    return weights, origin


def read_own(src: Path) -> tuple[LoadedWeights, dict[str, Any]]:
    """Any TF checkpoint or seedark ``.safetensors`` file at ``src`` that fits the network, unverified."""
    weights = weights_io().load_weights(src)
    origin = {
        "source": "import",
        "verified": False,
        "original_path": str(src.resolve()),
        "original_format": weights.kind,
        "description": f"imported from {src.resolve()} (unverified)",
    }
    return weights, origin


def _check_official_index(record: ModelRecord, pinned: SourceFile, index: Path) -> None:
    if not index.is_file():
        raise WeightsError("checkpoint index (.index) not found", index)
    try:
        digest = hash_file(index)
    except OSError as exc:
        raise WeightsError(f"cannot read the checkpoint index ({exc.strerror or exc})", index) from exc
    if digest != pinned.sha256:
        raise WeightsError(
            f"not the official {record.name} checkpoint index: its sha256 is {digest}, expected {pinned.sha256}. "
            f"If these are weights of your own, import them under another name: seedark models import NAME "
            f"{shlex.quote(str(index.parent))} --unverified; for the official ones, run "
            f"`seedark models download {record.name}` (it says where to get them by hand when it cannot)",
            index,
        )


# --------------------------------------------------------------------------- facts for the provenance record


def _official_facts(record: ModelRecord) -> dict[str, Any]:
    return {
        "verified": True,
        "description": record.description,
        "licence": record.licence,
        "homepage": record.homepage,
    }


def _file_facts(src: SourceFile, path: Path, urls: tuple[str, ...], verified_by: str | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "name": src.name,
        "urls": list(urls),
        "size": src.size,
        "pinned_sha256": src.sha256,
        "sha256": hash_file(path),
    }
    if verified_by is not None:
        facts["verified_by"] = f"CRC32C of every tensor recorded in {verified_by}"
    return facts


def _check_packing(record: ModelRecord, weights: LoadedWeights, path: Path) -> None:
    if weights.spec.packing != record.packing:
        raise WeightsError(
            f"checkpoint takes {weights.spec.packing} input, the {record.name} model should take {record.packing}",
            path,
        )


__all__ = [
    "checkpoint_files",
    "download_official",
    "manual_steps",
    "read_official",
    "read_own",
    "sources",
    "weights_io",
]
