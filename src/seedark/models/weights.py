"""Weights: official TF checkpoints and seedark's own safetensors format.

Both load into the same ``state_dict`` for :class:`~seedark.models.network.SIDUNet`;
the network's shape (input channels, width, depth-to-space factor) is inferred
from the tensors, so reduced-width or Fuji checkpoints need no flags.

Only safe formats are read: the TF bundle by our own parser, safetensors by the
safetensors library. Nothing is ever unpickled.

Header first: the names, dtypes and shapes a file declares are checked against
the network they describe, and their byte ranges against the file's length,
before any tensor is read. A file with tensors the network has no use for (say
an extra 2 GiB one, sparse on disk) is refused at the cost of reading its header.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from seedark._files import atomic_output
from seedark.errors import WeightsError
from seedark.models import tfcheckpoint
from seedark.models.network import LEVELS, NetworkSpec, SIDUNet

log = logging.getLogger("seedark")

FORMAT_NAME = "seedark"
FORMAT_VERSION = "1"

#: The official networks have width 32. Far wider ones (a 256-wide one has 0.5 G parameters)
#: are refused before anything is read, since only their header says how large they are.
MAX_WIDTH = 256

#: safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100_000_000
#: The element sizes of the safetensors dtypes weights may have (all are loaded as float32).
_FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}

# TF transposed-conv filters are unnamed tf.Variables, created in this order.
_TF_UP_NAMES = {"Variable": "up6", "Variable_1": "up7", "Variable_2": "up8", "Variable_3": "up9"}

Shapes = dict[str, tuple[int, ...]]


@dataclass
class LoadedWeights:
    """A verified state dict plus where it came from."""

    spec: NetworkSpec
    state: dict[str, torch.Tensor]
    source: Path
    kind: str  # "tensorflow" or "safetensors"
    metadata: dict[str, str] = field(default_factory=dict)

    def build(self) -> SIDUNet:
        net = SIDUNet(self.spec)
        net.load_state_dict(self.state)
        return net.eval()


def expected_shapes(spec: NetworkSpec) -> Shapes:
    """The exact state-dict layout of a network with this spec (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = SIDUNet(spec)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _tf_name_to_torch(name: str) -> str | None:
    if name in _TF_UP_NAMES:
        return f"{_TF_UP_NAMES[name]}.weight"
    if name.startswith("g_conv") and "/" in name:
        scope, leaf = name.split("/", 1)
        return {"weights": f"{scope}.weight", "biases": f"{scope}.bias"}.get(leaf)
    return None


def _spec_from_shapes(shapes: Shapes, source: Path) -> NetworkSpec:
    """The spec a PyTorch layout implies, from its first and last layers."""
    try:
        first, last = shapes["g_conv1_1.weight"], shapes["g_conv10.weight"]
    except KeyError as exc:
        raise WeightsError(f"weights don't fit the SID network: {exc.args[0]} is missing", source) from exc
    if len(first) != 4 or len(last) != 4:
        raise WeightsError("weights don't fit the SID network: g_conv1_1 and g_conv10 must be 4-D filters", source)
    return _spec_from_dims(first[1], first[0], last[0], source)


def _spec_from_dims(in_channels: int, width: int, out_channels: int, source: Path) -> NetworkSpec:
    block = math.isqrt(max(out_channels // 3, 0))
    if out_channels != 3 * block * block or block < 1:
        raise WeightsError(f"last layer has {out_channels} channels; expected 3*b*b (12 or 27)", source)
    if in_channels not in (4, 9):
        raise WeightsError(
            f"first layer takes {in_channels} channels; SID networks take 4 (Bayer) or 9 (X-Trans)", source
        )
    if not 1 <= width <= MAX_WIDTH:
        raise WeightsError(f"network width {width} is not supported (1 to {MAX_WIDTH}; the official one is 32)", source)
    return NetworkSpec(in_channels=in_channels, width=width, block=block)


def _check_layout(spec: NetworkSpec, shapes: Shapes, source: Path) -> None:
    """Every tensor of the network, with its exact shape, and nothing else."""
    want = expected_shapes(spec)
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''}")
        if extra:  # names from the file: quoted, so no control character reaches a terminal
            parts.append(f"unexpected {', '.join(repr(k) for k in extra[:4])}{'...' if len(extra) > 4 else ''}")
        raise WeightsError(f"weights don't fit the SID network: {'; '.join(parts)}", source)
    for key, shape in want.items():
        if shapes[key] != shape:
            raise WeightsError(
                f"weights don't fit the SID network: {key} has shape {shapes[key]}, expected {shape}", source
            )


def _check_fit(spec: NetworkSpec, state: dict[str, torch.Tensor], source: Path) -> None:
    _check_layout(spec, {k: tuple(v.shape) for k, v in state.items()}, source)
    for key, value in state.items():
        if not torch.isfinite(value).all():
            raise WeightsError(f"weights contain NaN or infinity in {key}", source)


def _tf_layout(shapes: Shapes, source: Path) -> tuple[NetworkSpec, Shapes]:
    """The spec and PyTorch layout (key -> shape) of official TF variables; WeightsError for any
    name or shape the SID network does not have."""
    layout: Shapes = {}
    for name, shape in shapes.items():
        key = _tf_name_to_torch(name)
        if key is None:
            raise WeightsError(f"unexpected tensor {name!r} in checkpoint (not part of the SID network)", source)
        if key.endswith(".weight"):
            if len(shape) != 4:
                raise WeightsError(f"{name} has shape {shape}, expected a 4-D filter", source)
            # TF conv [kh, kw, in, out] and transposed conv [kh, kw, out, in] both map
            # to PyTorch by the same axis order: [out, in, kh, kw] / [in, out, kh, kw].
            shape = (shape[3], shape[2], shape[0], shape[1])
        layout[key] = shape
    spec = _spec_from_shapes(layout, source)
    _check_layout(spec, layout, source)
    return spec, layout


def tf_to_state(tensors: dict[str, np.ndarray], source: Path) -> tuple[NetworkSpec, dict[str, torch.Tensor]]:
    """Map official TF variables onto the PyTorch module, checking every shape."""
    spec, _layout = _tf_layout({name: tuple(np.shape(value)) for name, value in tensors.items()}, source)
    state: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        key = _tf_name_to_torch(name)
        assert key is not None  # _tf_layout has checked every name
        arr = np.asarray(value, dtype=np.float32)
        if key.endswith(".weight"):
            arr = arr.transpose(3, 2, 0, 1)
        state[key] = torch.from_numpy(np.ascontiguousarray(arr))
    _check_fit(spec, state, source)
    return spec, state


def load_tf_checkpoint(path: str | os.PathLike[str]) -> LoadedWeights:
    """Load an official-format TF checkpoint (directory or prefix), CRC-verified."""
    prefix = tfcheckpoint.resolve_prefix(path)

    def fits(entries: dict[str, tfcheckpoint.TensorEntry]) -> None:
        network = {n: e.shape for n, e in entries.items() if not tfcheckpoint.is_optimizer_slot(n)}
        _tf_layout(network, prefix)

    tensors = tfcheckpoint.read_checkpoint(prefix, check=fits)
    spec, state = tf_to_state(tensors, prefix)
    return LoadedWeights(spec, state, prefix, "tensorflow", {"source_format": "tensorflow"})


def save_safetensors(
    weights: LoadedWeights | tuple[NetworkSpec, dict[str, torch.Tensor]],
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write weights in seedark's format (safetensors + spec in the header), atomically."""
    from safetensors.torch import save

    if isinstance(weights, LoadedWeights):
        spec, state = weights.spec, weights.state
        meta = dict(weights.metadata)
    else:
        spec, state = weights
        meta = {}
    meta.update(metadata or {})
    meta.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "in_channels": str(spec.in_channels),
            "width": str(spec.width),
            "block": str(spec.block),
            "packing": spec.packing,
        }
    )
    dest = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    # Serialised in memory and written by us, not by safetensors' save_file: a full disk is then an
    # OSError with its errno (save_file says "SafetensorError: ... os error 28") and leaves no partial file.
    with atomic_output(dest) as fh:
        fh.write(save(tensors, metadata=meta))
    return dest


def _safetensors_header(src: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the length of the data after it; nothing else is read."""
    try:
        with open(src, "rb") as f:
            length = os.fstat(f.fileno()).st_size
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else length
            text = f.read(size) if size <= min(MAX_HEADER_BYTES, length - 8) else None
    except OSError as exc:
        raise WeightsError(f"cannot read the weights file ({exc.strerror or exc})", src) from exc
    if text is None:
        raise WeightsError(f"not a readable safetensors file (a {size:,}-byte header in a file of {length:,})", src)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WeightsError(f"not a readable safetensors file (its header is not JSON: {exc})", src) from exc
    if not isinstance(header, dict):
        raise WeightsError("not a readable safetensors file (its header is not a JSON object)", src)
    return header, length - 8 - size


def _counts(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _declared_shape(name: str, entry: object, data_size: int, src: Path) -> tuple[int, ...]:
    """One header entry's shape, once its dtype is a float type and its bytes lie inside the file."""
    if not isinstance(entry, dict):
        raise WeightsError(f"not a readable safetensors file (tensor {name!r} is not described)", src)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _FLOAT_DTYPES:
        raise WeightsError(f"tensor {name!r} has dtype {dtype!r}; weights are F16, BF16, F32 or F64", src)
    if not _counts(shape) or len(shape) > tfcheckpoint.MAX_RANK:
        raise WeightsError(f"not a readable safetensors file (tensor {name!r} has an invalid shape)", src)
    if not _counts(offsets) or len(offsets) != 2 or not offsets[0] <= offsets[1] <= data_size:
        raise WeightsError(
            f"tensor {name!r} lies outside the file ({data_size:,} bytes of data): truncated or corrupt", src
        )
    if offsets[1] - offsets[0] != math.prod(shape) * _FLOAT_DTYPES[dtype]:
        raise WeightsError(f"tensor {name!r} has {offsets[1] - offsets[0]:,} bytes for shape {shape} of {dtype}", src)
    return tuple(shape)


def _safetensors_layout(src: Path) -> tuple[NetworkSpec, Shapes, dict[str, str]]:
    """Spec, layout and metadata of a safetensors file, every entry checked; no tensor read."""
    header, data_size = _safetensors_header(src)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise WeightsError("not a readable safetensors file (its metadata is not a table of strings)", src)
    shapes = {name: _declared_shape(name, entry, data_size, src) for name, entry in header.items()}
    spec = _spec_from_shapes(shapes, src)
    _check_layout(spec, shapes, src)
    return spec, shapes, meta


def load_safetensors(path: str | os.PathLike[str]) -> LoadedWeights:
    """seedark's (or any SID-shaped) safetensors file; the header is checked before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    src = Path(path)
    spec, shapes, meta = _safetensors_layout(src)
    log.debug("weights: reading %s", src)
    try:
        with safe_open(str(src), framework="pt") as f:
            state = {k: f.get_tensor(k).to(torch.float32) for k in shapes}
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"not a readable safetensors file ({exc})", src) from exc
    _check_fit(spec, state, src)  # again: the file may have changed since its header was read
    return LoadedWeights(spec, state, src, "safetensors", meta)


def load_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Load ``--weights``: a TF checkpoint (dir, prefix, .index) or a .safetensors file."""
    p = Path(path)
    tfcheckpoint.check_weights_path(p)
    if p.suffix == ".safetensors" and p.is_file():
        return load_safetensors(p)
    if tfcheckpoint.is_tf_checkpoint(p):
        return load_tf_checkpoint(p)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(16)
        # safetensors starts with an 8-byte header length then '{'
        if len(head) > 8 and head[8:9] == b"{":
            return load_safetensors(p)
        raise WeightsError("not a TensorFlow checkpoint or safetensors file", p)
    if not p.exists() and not p.with_name(p.name + ".index").exists():
        raise WeightsError("no such file or folder", p)
    raise WeightsError("no TensorFlow checkpoint or safetensors weights found here", p)


def random_weights(spec: NetworkSpec, seed: int = 0) -> LoadedWeights:
    """He-initialised weights: for tests and benchmarks, never for real images."""
    gen = torch.Generator().manual_seed(seed)
    net = SIDUNet(spec)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("bias"):
            state[key] = torch.randn(value.shape, generator=gen) * 0.01
        else:
            # a 2x2 stride-2 transposed conv feeds each output pixel from one input pixel
            fan_in = value.shape[0] if key.startswith("up") else value[0].numel()
            state[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / max(fan_in, 1))
    return LoadedWeights(spec, state, Path("<random>"), "random", {})


__all__ = [
    "LEVELS",
    "LoadedWeights",
    "expected_shapes",
    "load_safetensors",
    "load_tf_checkpoint",
    "load_weights",
    "random_weights",
    "save_safetensors",
    "tf_to_state",
]
