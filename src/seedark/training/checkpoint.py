"""Training checkpoints: one folder per saved epoch, complete or absent.

A checkpoint holds the model, Adam's state, the epoch and step and the RNG
states, in safetensors and JSON (nothing pickled), so that resuming continues
bit-exactly on the CPU (and on GPUs with ``deterministic``). A run's
``checkpoints`` folder names its newest in ``latest.json``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedark._files import atomic_folder, write_json
from seedark._version import __version__
from seedark.errors import TrainingError
from seedark.models.network import NetworkSpec
from seedark.models.weights import LoadedWeights, load_safetensors, save_safetensors

CHECKPOINT_FORMAT = "seedark-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "state.json"


# --------------------------------------------------------------------------- RNG and optimizer state


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) global RNG states, as JSON."""
    version, internal, gauss = random.getstate()
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": np_state[0],
            "keys": np.asarray(np_state[1]).tolist(),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Adam's state_dict split into tensors (for safetensors) and the rest (for JSON)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, slots in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


# --------------------------------------------------------------------------- folders


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


def save_checkpoint(
    folder: Path,
    spec: NetworkSpec,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> Path:
    """Write ``folder`` (model, optimizer, state.json) atomically: complete or absent."""
    from safetensors.torch import save_file

    try:
        with atomic_folder(folder) as tmp:
            meta = {"epoch": str(info["epoch"]), "step": str(info["step"]), "trained_by": f"seedark {__version__}"}
            save_safetensors((spec, model_state), tmp / MODEL_NAME, meta)
            tensors, opt_meta = _optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / OPTIMIZER_NAME))
            state = {
                "format": CHECKPOINT_FORMAT,
                "format_version": CHECKPOINT_VERSION,
                "seedark_version": __version__,
                "spec": {"in_channels": spec.in_channels, "width": spec.width, "block": spec.block},
                **info,
                "optimizer": opt_meta,
                "rng": rng_state(),
            }
            write_json(tmp / STATE_NAME, state)
    except OSError as exc:
        raise TrainingError(f"cannot write the checkpoint ({exc.strerror or exc})", folder) from exc
    write_json(folder.parent / LATEST, {"checkpoint": folder.name, "epoch": info["epoch"], "step": info["step"]})
    return folder


@dataclass
class Checkpoint:
    path: Path
    weights: LoadedWeights
    optimizer: dict[str, Any]
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def step(self) -> int:
        return int(self.state["step"])


def load_checkpoint(folder: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder)
    if (path / LATEST).is_file():  # the checkpoints folder itself: take its latest
        path = latest_checkpoint(path) or path
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise TrainingError("not a training checkpoint (state.json is missing)", path)
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"unreadable checkpoint state ({exc})", state_file) from exc
    if state.get("format") != CHECKPOINT_FORMAT or int(state.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise TrainingError("not a checkpoint in a format this seedark reads", state_file)
    weights = load_safetensors(path / MODEL_NAME)
    try:
        tensors = load_file(str(path / OPTIMIZER_NAME))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainingError(f"unreadable optimizer state ({exc})", path / OPTIMIZER_NAME) from exc
    return Checkpoint(path, weights, _optimizer_state(tensors, state["optimizer"]), state)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint in a run's checkpoints folder, if any."""
    pointer = checkpoints / LATEST
    if pointer.is_file():
        try:
            name = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
            if (checkpoints / name / STATE_NAME).is_file():
                return checkpoints / name
        except (OSError, ValueError, KeyError, TypeError):
            pass
    found = sorted(p for p in checkpoints.glob("epoch-*") if (p / STATE_NAME).is_file())
    return found[-1] if found else None


def prune_checkpoints(checkpoints: Path, keep: int, keep_every: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (0 keeps all) and those at multiples of ``keep_every``."""
    if keep <= 0:
        return
    found = sorted(p for p in checkpoints.glob("epoch-*") if p.is_dir() and p.name[6:].isdigit())
    for old in found[:-keep]:
        epoch = int(old.name[6:])
        if keep_every and epoch % keep_every == 0:
            continue
        shutil.rmtree(old, ignore_errors=True)


def export_model(checkpoint: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Write a checkpoint's network as seedark weights (``seedark models import NAME DEST --unverified``)."""
    ckpt = load_checkpoint(checkpoint)
    return save_safetensors(ckpt.weights, dest)


__all__ = [
    "Checkpoint",
    "checkpoint_name",
    "export_model",
    "latest_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
