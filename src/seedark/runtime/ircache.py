"""The OpenVINO back end's disk cache: converted networks (IR) and compiled blobs.

``<cache>/engines/openvino-<version>/`` holds one folder per converted network, named
by a digest of the weights and of the code that defines the graph (:func:`weights_digest`;
int8 adds its recipe), and ``compiled/``, where OpenVINO keeps the blobs it compiled.
A conversion is written to a temporary folder and published whole; the least recently
used entries beyond :data:`KEEP_CONVERTED` and :data:`KEEP_COMPILED` are removed, and
so are conversions a killed process left half-written. Everything here is always safe
to delete, and a cache that cannot be written only means converting again next time.
The back end (:mod:`seedark.runtime.backends`) hands in OpenVINO's own reader and writer.

A converted network is two files that OpenVINO reads as they are (``model.xml``, the
graph, and ``model.bin``, the weights): a ``model.bin`` damaged on disk, even at the
same size, would give wrong images without any error, and int8 conversion would start
from it too. So their SHA-256 is stored beside them (``model.sha256``, in the same
atomic folder, so the three appear together) and compared before the model is read;
one that does not match, or has no checksum, is converted again, with one warning.
OpenVINO's own messages about a file it cannot read (printed on fd 2) are captured.

Finding a conversion by its digest means reading the weights (and torch). So each
conversion of weights read from files is also found by the files' identity
(:class:`seedark.models.weightsfile.WeightsFile`: inode, size and times of each file,
and the model cache's checked SHA-256): ``sources/<key>.json`` maps it to the digest,
with the network's spec and the weights' metadata (:func:`remember_weights`,
:func:`recall_weights`). Weights whose files are unchanged are then not read at all;
any change gives a new identity, so each version of a file is read and checked once.
Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seedark._files import PART_SUFFIX, atomic_folder, write_atomic
from seedark._parallel import capture_c_stderr
from seedark._version import __version__
from seedark.config import cache_dir
from seedark.models import architecture
from seedark.models.architecture import NetworkSpec
from seedark.models.weightsfile import WeightsFile

if TYPE_CHECKING:
    from seedark.models.weights import LoadedWeights

log = logging.getLogger("seedark")

#: Converted models and compiled blobs kept in the cache; older ones are removed.
KEEP_CONVERTED = 8
KEEP_COMPILED = 24
#: Weights that come from a file are worth converting to disk; training snapshots and random weights are not.
PERSISTENT_KINDS = ("tensorflow", "safetensors")


def _network_source() -> bytes:
    """The source of the code that defines the network: a fix to its semantics must not reuse a
    graph converted from the old code."""
    return Path(architecture.__file__).with_name("network.py").read_bytes()


def graph_code() -> bytes:
    """What the converted graph depends on besides the weights: seedark's version and :func:`_network_source`."""
    return f"seedark-{__version__}\n".encode() + _network_source()


def weights_digest(weights: LoadedWeights) -> str:
    """Content hash of the network: spec, tensors and the code that defines the graph."""
    h = hashlib.sha256()
    spec = weights.spec
    h.update(f"{spec.in_channels}/{spec.width}/{spec.block}/seedark-{__version__}".encode())
    h.update(_network_source())
    for key in sorted(weights.state):
        h.update(key.encode())
        h.update(weights.state[key].detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def engines_dir() -> Path:
    """``<cache>/engines``: converted models and compiled blobs; always safe to delete."""
    return cache_dir() / "engines"


def openvino_folder(version: str) -> Path:
    """Where one OpenVINO version's conversions and compiled blobs are kept."""
    return engines_dir() / f"openvino-{version}"


def ir_entry(folder: Path, digest: str, variant: str | None = None) -> Path:
    """The folder of the weights of ``digest`` (:func:`weights_digest`) converted, in ``folder``;
    a ``variant`` (the int8 recipe) has its own."""
    if variant is not None:
        digest = hashlib.sha256(f"{digest}/{variant}".encode()).hexdigest()[:24]
    return folder / digest


def _is_digest(path: Path) -> bool:
    return len(path.name) == 24 and all(c in "0123456789abcdef" for c in path.name)


def _is_leftover(path: Path) -> bool:
    """A hidden temporary folder of an unfinished conversion (``*.part``, or ``.tmp-*`` as older caches have them)."""
    return path.name.startswith(".") and (path.name.endswith(PART_SUFFIX) or path.name.startswith(".tmp-"))


def prune(folder: Path, keep: int, wanted: Callable[[Path], bool] = lambda _p: True) -> None:
    """Remove all but the ``keep`` most recently used entries of ``folder`` that are ``wanted``,
    and conversions that a killed process left half-written more than an hour ago."""
    try:
        children = list(folder.iterdir())
        entries = sorted((p for p in children if wanted(p)), key=lambda p: p.stat().st_mtime, reverse=True)
        stale = [p for p in children if _is_leftover(p) and p.stat().st_mtime < time.time() - 3600]
    except OSError:
        return
    for old in entries[keep:] + stale:
        with contextlib.suppress(OSError):
            shutil.rmtree(old) if old.is_dir() else old.unlink()


#: The checksum file beside ``model.xml`` and ``model.bin``.
DIGEST_NAME = "model.sha256"
_IR_FILES = ("model.xml", "model.bin")


def ir_digest(folder: Path) -> str:
    """SHA-256 of ``model.xml`` then ``model.bin`` in ``folder`` (each preceded by its size, so
    bytes moved from one file to the other change it). Raises OSError if one cannot be read."""
    h = hashlib.sha256()
    for name in _IR_FILES:
        with open(folder / name, "rb") as fh:
            h.update(f"{name}:{fh.seek(0, 2)}\n".encode())
            fh.seek(0)
            while piece := fh.read(1 << 20):
                h.update(piece)
    return h.hexdigest()


def write_ir_digest(folder: Path) -> None:
    """Store the checksum of the model just saved in ``folder`` (an atomic folder being filled)."""
    (folder / DIGEST_NAME).write_text(ir_digest(folder) + "\n", encoding="ascii")


def ir_intact(folder: Path) -> bool:
    """Whether the model in ``folder`` is what was saved there: its checksum is stored and matches."""
    try:
        return (folder / DIGEST_NAME).read_text(encoding="ascii").strip() == ir_digest(folder)
    except (OSError, UnicodeDecodeError):
        return False


def read_ir(entry: Path, read_model: Callable[[str], Any]) -> Any | None:
    """The converted model stored under ``entry`` (read by ``read_model``, OpenVINO's);
    None when there is none, it fails its checksum or it is unreadable."""
    xml = entry / "model.xml"
    if not xml.is_file():
        return None
    if not ir_intact(entry):
        log.warning("the OpenVINO model cached in %s fails its checksum (damaged?); converting it again", entry)
        return None
    said: list[str] = []  # OpenVINO's XML parser prints its complaints on fd 2
    try:
        with capture_c_stderr(said):
            model = read_model(str(xml))
    except RuntimeError as exc:
        log.debug("cached OpenVINO model unreadable (%s); converting again", " ".join(said) or exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: prune keeps it
    log.debug("OpenVINO model from the cache: %s", entry)
    return model


def save_ir(model: Any, entry: Path, save_model: Callable[..., None]) -> bool:
    """Store the converted model under ``entry`` with ``save_model`` (OpenVINO's), replacing
    an unreadable one; False if the cache is not writable."""
    try:
        with atomic_folder(entry) as tmp:
            # fp16 compression is on by default and would change the results; the weights stay fp32.
            save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            write_ir_digest(tmp)
    except (OSError, RuntimeError) as exc:  # OpenVINO reports a full disk as RuntimeError("iostream error")
        log.debug("could not cache the OpenVINO model (%s); it will be converted again next time", exc)
        return False
    prune(entry.parent, KEEP_CONVERTED, _is_digest)
    return True


def blob_folder(folder: Path) -> Path:
    """Where OpenVINO keeps the blobs it compiled (its ``CACHE_DIR``) for ``folder``'s conversions."""
    return folder / "compiled"


# --------------------------------------------------------------------------- weights by their files

#: Records of weights files' identities kept (each a few hundred bytes); older ones are removed.
KEEP_SOURCES = 64


@dataclass(frozen=True)
class KnownWeights:
    """Weights whose conversion is cached, as an engine needs them, without reading them: the
    network's shape, where they come from, their metadata, the digest of their conversion
    (:func:`ir_entry`), and the files (``located``), read only if the tensors are needed after
    all (a conversion damaged since, or a frame too small for OpenVINO)."""

    spec: NetworkSpec
    source: Path
    kind: str
    digest: str
    located: WeightsFile
    metadata: dict[str, str] = field(default_factory=dict)


def _source_record(folder: Path, identity: str) -> Path:
    """Where the record of the files of ``identity`` is kept: named by it and by :func:`graph_code`,
    so another seedark, or another network code, never takes a conversion made by this one."""
    key = hashlib.sha256(identity.encode() + b"\n" + graph_code()).hexdigest()[:24]
    return folder / "sources" / f"{key}.json"


def remember_weights(folder: Path, weights: LoadedWeights, digest: str) -> None:
    """Record that the files ``weights`` were read from (their identity) convert to ``digest``;
    nothing for weights that do not know their files. A cache that cannot be written only
    means reading the weights again next time."""
    if weights.identity is None:
        return
    spec = weights.spec
    record = {
        "identity": weights.identity,
        "digest": digest,
        "spec": [spec.in_channels, spec.width, spec.block],
        "source": str(weights.source),
        "kind": weights.kind,
        "metadata": weights.metadata,
    }
    path = _source_record(folder, weights.identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, sort_keys=True))
    except OSError as exc:
        log.debug("could not record the weights' conversion (%s)", exc)
        return
    prune(path.parent, KEEP_SOURCES, lambda p: p.suffix == ".json")


def recall_weights(folder: Path, where: WeightsFile) -> KnownWeights | None:
    """The weights in ``where``'s files as :func:`remember_weights` recorded them, if their identity
    is the same now and their conversion is still in ``folder``; None otherwise (read them)."""
    if where.identity is None:
        return None
    path = _source_record(folder, where.identity)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        in_channels, width, block = (int(v) for v in record["spec"])
        known = KnownWeights(
            NetworkSpec(in_channels, width, block),
            Path(record["source"]),
            str(record["kind"]),
            str(record["digest"]),
            where,
            {str(k): str(v) for k, v in record["metadata"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if record.get("identity") != where.identity or not _is_digest(Path(known.digest)):
        return None
    if not (folder / known.digest / "model.xml").is_file():
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: prune keeps it
    return known
