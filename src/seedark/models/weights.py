"""Weights: official TF checkpoints and seedark's own safetensors format.

Both load into the same ``state_dict`` for :class:`~seedark.models.network.SIDUNet`;
the network's shape (input channels, width, depth-to-space factor) is inferred
from the tensors, so reduced-width or Fuji checkpoints need no flags.

Only safe formats are read: the TF bundle by our own parser, safetensors by the
safetensors library. Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seedark.errors import WeightsError
from seedark.models import tfcheckpoint
from seedark.models.network import LEVELS, NetworkSpec, SIDUNet

FORMAT_NAME = "seedark"
FORMAT_VERSION = "1"

# TF transposed-conv filters are unnamed tf.Variables, created in this order.
_TF_UP_NAMES = {"Variable": "up6", "Variable_1": "up7", "Variable_2": "up8", "Variable_3": "up9"}


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


def expected_shapes(spec: NetworkSpec) -> dict[str, tuple[int, ...]]:
    """The exact state-dict layout of a network with this spec."""
    return {k: tuple(v.shape) for k, v in SIDUNet(spec).state_dict().items()}


def _tf_name_to_torch(name: str) -> str | None:
    if name in _TF_UP_NAMES:
        return f"{_TF_UP_NAMES[name]}.weight"
    if name.startswith("g_conv") and "/" in name:
        scope, leaf = name.split("/", 1)
        return {"weights": f"{scope}.weight", "biases": f"{scope}.bias"}.get(leaf)
    return None


def spec_from_tf(tensors: dict[str, np.ndarray], source: Path) -> NetworkSpec:
    try:
        first = tensors["g_conv1_1/weights"]
        last = tensors["g_conv10/weights"]
    except KeyError as exc:
        raise WeightsError(f"not a SID checkpoint: tensor {exc.args[0]!r} is missing", source) from exc
    return _spec_from_dims(int(first.shape[2]), int(first.shape[3]), int(last.shape[3]), source)


def _spec_from_dims(in_channels: int, width: int, out_channels: int, source: Path) -> NetworkSpec:
    block = math.isqrt(max(out_channels // 3, 0))
    if out_channels != 3 * block * block or block < 1:
        raise WeightsError(f"last layer has {out_channels} channels; expected 3*b*b (12 or 27)", source)
    if in_channels not in (4, 9):
        raise WeightsError(
            f"first layer takes {in_channels} channels; SID networks take 4 (Bayer) or 9 (X-Trans)", source
        )
    return NetworkSpec(in_channels=in_channels, width=width, block=block)


def _check_fit(spec: NetworkSpec, state: dict[str, torch.Tensor], source: Path) -> None:
    want = expected_shapes(spec)
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:4])}{'...' if len(extra) > 4 else ''}")
        raise WeightsError(f"weights don't fit the SID network: {'; '.join(parts)}", source)
    for key, shape in want.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise WeightsError(f"weights don't fit the SID network: {key} has shape {got}, expected {shape}", source)
        if not torch.isfinite(state[key]).all():
            raise WeightsError(f"weights contain NaN or infinity in {key}", source)


def tf_to_state(tensors: dict[str, np.ndarray], source: Path) -> tuple[NetworkSpec, dict[str, torch.Tensor]]:
    """Map official TF variables onto the PyTorch module, checking every shape."""
    spec = spec_from_tf(tensors, source)
    state: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        key = _tf_name_to_torch(name)
        if key is None:
            raise WeightsError(f"unexpected tensor {name!r} in checkpoint (not part of the SID network)", source)
        arr = np.asarray(value, dtype=np.float32)
        if key.endswith(".weight"):
            if arr.ndim != 4:
                raise WeightsError(f"{name} has shape {arr.shape}, expected a 4-D filter", source)
            # TF conv [kh, kw, in, out] and transposed conv [kh, kw, out, in] both map
            # to PyTorch by the same axis order: [out, in, kh, kw] / [in, out, kh, kw].
            arr = arr.transpose(3, 2, 0, 1)
        state[key] = torch.from_numpy(np.ascontiguousarray(arr))
    _check_fit(spec, state, source)
    return spec, state


def load_tf_checkpoint(path: str | os.PathLike[str]) -> LoadedWeights:
    """Load an official-format TF checkpoint (directory or prefix), CRC-verified."""
    prefix = tfcheckpoint.resolve_prefix(path)
    tensors = tfcheckpoint.read_checkpoint(prefix)
    spec, state = tf_to_state(tensors, prefix)
    return LoadedWeights(spec, state, prefix, "tensorflow", {"source_format": "tensorflow"})


def save_safetensors(
    weights: LoadedWeights | tuple[NetworkSpec, dict[str, torch.Tensor]],
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write weights in seedark's format (safetensors + spec in the header)."""
    from safetensors.torch import save_file

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
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}, str(dest), metadata=meta)
    return dest


def load_safetensors(path: str | os.PathLike[str]) -> LoadedWeights:
    from safetensors import SafetensorError, safe_open

    src = Path(path)
    try:
        with safe_open(str(src), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"not a readable safetensors file ({exc})", src) from exc
    try:
        first = state["g_conv1_1.weight"]
        last = state["g_conv10.weight"]
    except KeyError as exc:
        raise WeightsError(f"weights don't fit the SID network: {exc.args[0]} is missing", src) from exc
    spec = _spec_from_dims(int(first.shape[1]), int(first.shape[0]), int(last.shape[0]), src)
    _check_fit(spec, state, src)
    return LoadedWeights(spec, state, src, "safetensors", meta)


def load_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Load ``--weights``: a TF checkpoint (dir, prefix, .index) or a .safetensors file."""
    p = Path(path)
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
