"""Weights in files, before they are read: which files, and what tells this version of them apart.

``--weights PATH`` and the model cache name files; reading and checking their tensors
(:mod:`seedark.models.weights`) takes torch and a tenth of a second or more. An engine
whose network is converted and cached already (the OpenVINO IR, seedark.runtime.ircache)
needs neither when the files are the very ones it converted. :func:`locate_weights`
finds the files without reading a tensor, and :class:`WeightsFile` carries their
``identity``: device, inode, size, modification and change times (in ns) of every file
the loader reads, plus, for the model cache, the SHA-256 that :func:`seedark.models.cache.model_file`
checks against the provenance record on every load. Any change to the content changes
it, so each version of a file is still read and checked in full once
(:func:`seedark.models.weights.load_located`).
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from seedark.errors import WeightsError
from seedark.models import tfcheckpoint


@dataclass(frozen=True)
class WeightsFile:
    """Weights not read yet: ``source`` (a safetensors file, or a TF checkpoint's prefix), their
    ``kind`` ("safetensors" or "tensorflow"), the ``files`` the loader reads, and their
    ``identity`` when located (None when a file could not be looked at: then nothing is
    taken on trust and the weights are read)."""

    source: Path
    kind: str
    files: tuple[Path, ...]
    identity: str | None

    def current_identity(self) -> str | None:
        """The identity of :attr:`files` as they are now (compared after reading them: a file
        replaced meanwhile must not pass for the version that was read)."""
        extra = self.identity.partition("/")[2] if self.identity else ""
        return file_identity(self.files, extra)


def file_identity(files: tuple[Path, ...], extra: str = "") -> str | None:
    """What changes whenever the content of ``files`` may have: each file's device, inode, size,
    and modification and change times in ns (a rewrite that restores the modification time
    still moves the change time), then ``extra`` (a checksum known to match). None if a
    file cannot be looked at."""
    h = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            return None
        h.update(
            f"{os.fsencode(path)!r}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}\n".encode()
        )
    return h.hexdigest() + (f"/{extra}" if extra else "")


def located(source: Path, kind: str, files: tuple[Path, ...], extra: str = "") -> WeightsFile:
    """A :class:`WeightsFile` with the identity of ``files`` taken now, before anything reads them."""
    return WeightsFile(source, kind, files, file_identity(files, extra))


def _tf_files(prefix: Path) -> tuple[Path, ...]:
    """A checkpoint's index and every data file beside it (any shard that changes changes the identity)."""
    index = prefix.with_name(prefix.name + ".index")
    shards = sorted(Path(p) for p in glob.glob(glob.escape(str(prefix)) + ".data-*"))
    return (index, *shards)


def locate_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """``--weights``: a TF checkpoint (folder, prefix, ``.index`` or ``.data-*``) or a safetensors
    file, found without reading a tensor; WeightsError when it is neither."""
    p = Path(path)
    tfcheckpoint.check_weights_path(p)
    if p.suffix == ".safetensors" and p.is_file():
        return located(p, "safetensors", (p,))
    if tfcheckpoint.is_tf_checkpoint(p):
        prefix = tfcheckpoint.resolve_prefix(p)
        return located(prefix, "tensorflow", _tf_files(prefix))
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(16)
        # safetensors starts with an 8-byte header length then '{'
        if len(head) > 8 and head[8:9] == b"{":
            return located(p, "safetensors", (p,))
        raise WeightsError("not a TensorFlow checkpoint or safetensors file", p)
    if not p.exists() and not p.with_name(p.name + ".index").exists():
        raise WeightsError("no such file or folder", p)
    raise WeightsError("no TensorFlow checkpoint or safetensors weights found here", p)


__all__ = ["WeightsFile", "file_identity", "locate_weights", "located"]
