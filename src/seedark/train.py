"""Training the SID network with the paper's recipe, resumably, on one or many devices.

The recipe of the official ``train_Sony.py``: every epoch visits each reference
(long exposure) of the training list once, in random order, with one of its dark
inputs picked at random; a random 512x512 patch of the packed input (times the
ratio, clipped at 1) and the matching region of the ground truth; random flips
and transpose; L1 loss; Adam at 1e-4, then 1e-5 after epoch 2000; 4000 epochs;
one patch per step and process. Every number is a :class:`TrainConfig` field.

What differs from the official script, on purpose:

* ground truth (and, with ``cache_inputs``, the dark mosaics) is decoded once
  into a disk cache and memory-mapped, instead of held in RAM (64 GB);
* the randomness of each sample comes from a generator seeded by (seed, epoch,
  position), not from global state, so a resumed run, a run with data-loader
  workers and a run on N processes all see the same samples as a straight run;
* checkpoints hold the model, Adam's state, the epoch and step and the RNG
  states, in safetensors and JSON (nothing pickled), and resuming continues
  bit-exactly on the CPU (and on GPUs with ``deterministic``).

Several processes (``torchrun``, docs/training.md) train one model through
DistributedDataParallel: each takes a disjoint share of every epoch's samples,
gradients are averaged, and only rank 0 writes checkpoints, logs and validates.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .dataset import (
    ArrayCache,
    DatasetError,
    Pair,
    find_sources,
    group_by_reference,
    is_image,
    paired_patch,
    read_list,
    synthetic_raw_patch,
    synthetic_srgb_patch,
)
from .devices import resolve_device
from .errors import DeviceError, TrainingError, UsageError
from .network import NetworkSpec, SIDUNet
from .noise import DEFAULT_SRGB_WB, SONY_A7S2, NoiseProfile
from .raw import read_raw
from .weights import LoadedWeights, load_safetensors, load_weights, save_safetensors

log = logging.getLogger("seedark")

CHECKPOINT_FORMAT = "seedark-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
MODEL_NAME = "model.safetensors"
BEST_NAME = "model-best.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "state.json"
TRAIN_LOG = "train_log.jsonl"
VAL_LOG = "validation.jsonl"
DEFAULT_WIDTH = 32
#: How long ranks wait for each other (rank 0 validating a large set, decoding the cache).
DIST_TIMEOUT = timedelta(hours=2)


@dataclass
class TrainConfig:
    """Everything a run depends on; the defaults are the paper's (official train_Sony.py)."""

    out: Path
    train_list: Path | None = None
    data_root: Path | None = None
    val_list: Path | None = None
    #: Folder of clean RAW files or sRGB images: train on synthetic pairs instead of a list.
    synthetic: Path | None = None
    noise_profile: NoiseProfile = SONY_A7S2
    ratio_min: float = 100.0
    ratio_max: float = 300.0
    epochs: int = 4000
    lr: float = 1e-4
    lr_drop_epoch: int = 2000
    lr_after_drop: float = 1e-5
    patch: int = 512
    width: int | None = None
    augment: bool = True
    save_every: int = 10
    keep: int = 2
    keep_every: int = 500
    val_every: int = 100
    val_limit: int | None = None
    val_tile: str = "auto"
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 4
    cache_dir: Path | None = None
    cache_inputs: bool = False
    init_weights: Path | None = None
    init_model: str | None = None
    resume: bool = False
    resume_from: Path | None = None
    deterministic: bool = False

    def check(self) -> None:
        """Refuse settings that cannot work, before anything is read or written."""
        if (self.train_list is None) == (self.synthetic is None):
            raise UsageError("give either a training list (--list) or a folder of clean images (--synthetic)")
        counts = {"epochs": self.epochs, "patch": self.patch, "save_every": self.save_every}
        counts["log_every"] = self.log_every
        for name, count in counts.items():
            if count < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {count}")
        for name, rate in {"lr": self.lr, "lr_after_drop": self.lr_after_drop}.items():
            if not (math.isfinite(rate) and rate > 0):
                raise UsageError(f"{name.replace('_', '-')} must be a number > 0, got {rate}")
        if self.width is not None and self.width < 1:
            raise UsageError(f"width must be at least 1, got {self.width}")
        if not (0 < self.ratio_min <= self.ratio_max and math.isfinite(self.ratio_max)):
            raise UsageError(f"need 0 < ratio-min <= ratio-max, got {self.ratio_min}, {self.ratio_max}")
        if min(self.val_every, self.keep, self.keep_every, self.workers, self.lr_drop_epoch) < 0:
            raise UsageError("val-every, keep, keep-every, workers and lr-drop-epoch cannot be negative")
        if self.val_limit is not None and self.val_limit < 1:
            raise UsageError(f"val-limit must be at least 1, got {self.val_limit}")
        if self.init_weights is not None and self.init_model is not None:
            raise UsageError("give either --weights or --model to start from, not both")

    @property
    def cache_root(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.out / "cache"

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (numbered from 1): drops after ``lr_drop_epoch``."""
        return self.lr_after_drop if self.lr_drop_epoch and epoch > self.lr_drop_epoch else self.lr

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["noise_profile"] = self.noise_profile.to_dict()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


#: Settings a resumed run must share with the original to continue exactly where it stopped.
_RESUME_SENSITIVE = (
    "train_list",
    "data_root",
    "synthetic",
    "noise_profile",
    "ratio_min",
    "ratio_max",
    "lr",
    "lr_drop_epoch",
    "lr_after_drop",
    "patch",
    "augment",
    "seed",
)


@dataclass(frozen=True)
class TrainStatus:
    """What a progress callback is told after every step (rank 0 only)."""

    epoch: int  # the epoch in progress, from 1
    epochs: int
    step: int  # steps done in this run's lifetime (resumed runs included)
    total_steps: int
    loss: float  # this step's L1 loss
    epoch_loss: float  # mean loss of the epoch so far
    lr: float


@dataclass
class TrainResult:
    out: Path
    model: Path | None  # exported final weights (rank 0)
    checkpoint: Path | None
    epochs: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- data


class TrainingSet(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Samples keyed by (epoch, position): a pure function of the key and the seed.

    Paired mode: the items of an epoch are the list's references (long exposures);
    each visit picks one of its dark inputs. Synthetic mode: the items are the clean
    source images, each darkened by a random ratio with the noise model.
    """

    def __init__(self, config: TrainConfig, pairs: Sequence[Pair] | None, sources: Sequence[Path] | None) -> None:
        self.config = config
        self.groups = group_by_reference(pairs) if pairs else []
        self.sources = list(sources or [])
        self.gt_cache = ArrayCache(config.cache_root)
        self.frames = ArrayCache(config.cache_root if config.cache_inputs else None)
        self._perm: tuple[int, np.ndarray] | None = None

    @property
    def items(self) -> int:
        return len(self.groups) if self.groups else len(self.sources)

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.config.seed, epoch]).permutation(self.items))
        return self._perm[1]

    def __len__(self) -> int:
        return self.items

    def sample(self, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """(input C x P x P, target 3 x bP x bP) of the ``position``-th visit of epoch ``epoch`` (from 0)."""
        perm = self.permutation(epoch)
        item = int(perm[position % len(perm)])
        rng = np.random.default_rng([self.config.seed, epoch, position, 1])
        cfg = self.config
        if self.groups:
            group = self.groups[item]
            pair = group[int(rng.integers(len(group)))]
            frame = self.frames.frame(pair.short)
            gt, flip = self.gt_cache.ground_truth(pair.long)
            return paired_patch(frame, gt, flip, pair.ratio, cfg.patch, rng, augment_patch=cfg.augment)
        source = self.sources[item]
        ratio = float(rng.uniform(cfg.ratio_min, cfg.ratio_max))
        if is_image(source):
            image = self.gt_cache.image(source)
            return synthetic_srgb_patch(
                image,
                ratio,
                cfg.noise_profile,
                cfg.patch,
                rng,
                wb=DEFAULT_SRGB_WB,
                source=source,
                augment_patch=cfg.augment,
            )
        frame = self.frames.frame(source)
        gt, flip = self.gt_cache.ground_truth(source)
        return synthetic_raw_patch(frame, gt, flip, ratio, cfg.noise_profile, cfg.patch, rng, augment_patch=cfg.augment)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, np.ndarray, np.ndarray]:
        epoch, position = key
        inp, gt = self.sample(epoch, position)
        return epoch, position, inp, gt

    def prepare_cache(self, shard: tuple[int, int], progress: Callable[[int, int], None] | None = None) -> None:
        """Decode this process's share of the references (and inputs) into the cache."""
        if self.groups:
            self.gt_cache.prepare([g[0].long for g in self.groups], "gt", shard=shard, progress=progress)
            if self.config.cache_inputs:
                shorts = [p.short for g in self.groups for p in g]
                self.frames.prepare(shorts, "raw", shard=shard, progress=progress)
            return
        raws = [s for s in self.sources if not is_image(s)]
        self.gt_cache.prepare(raws, "gt", shard=shard, progress=progress)
        self.gt_cache.prepare([s for s in self.sources if is_image(s)], "image", shard=shard, progress=progress)
        if self.config.cache_inputs:
            self.frames.prepare(raws, "raw", shard=shard, progress=progress)


def steps_per_epoch(items: int, world: int) -> int:
    return -(-items // world)


class EpochSampler(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """(epoch, position) keys of one rank, from ``start`` to ``stop`` epochs.

    Rank r takes positions r, r + world, ... of each epoch's order; the order is
    padded by wrapping so every rank takes the same number of steps (DDP needs it).
    """

    def __init__(self, items: int, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
        self.items, self.start, self.stop, self.rank, self.world = items, start, stop, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_rank = steps_per_epoch(self.items, self.world)
        for epoch in range(self.start, self.stop):
            for k in range(per_rank):
                yield epoch, self.rank + k * self.world

    def __len__(self) -> int:
        return (self.stop - self.start) * steps_per_epoch(self.items, self.world)


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def close(self) -> None:
        if self.created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _setup_distributed(device_name: str) -> _Dist:
    """One process, or one rank of a ``torchrun`` job (WORLD_SIZE, RANK, LOCAL_RANK in the environment)."""
    dist = torch.distributed
    initialized = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialized else int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return _Dist(device=resolve_device(device_name))
    if not dist.is_available():
        raise DeviceError("this PyTorch build has no torch.distributed; run one process")
    rank = dist.get_rank() if initialized else int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    spec = (device_name or "auto").strip().lower()
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        device = resolve_device(f"cuda:{local_rank % torch.cuda.device_count()}")
    elif spec == "auto":
        device = torch.device("cpu")
    else:
        device = resolve_device(device_name)
    if device.type == "mps":
        raise DeviceError("several processes cannot share Apple's MPS device; use --device cpu or one process")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = False
    if not initialized:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=DIST_TIMEOUT)
        created = True
    return _Dist(rank, world, local_rank, local_world, device, created)


# --------------------------------------------------------------------------- model


def init_official(net: SIDUNet, seed: int) -> None:
    """The official initialisation: Glorot-uniform convolutions with zero biases (slim's
    defaults), truncated-normal (std 0.02, cut at 2 std) transposed convolutions."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif name.startswith("up"):
                param.normal_(0.0, 0.02, generator=gen)
                outside = param.abs() > 0.04
                while bool(outside.any()):
                    param[outside] = torch.empty(int(outside.sum())).normal_(0.0, 0.02, generator=gen)
                    outside = param.abs() > 0.04
            else:
                receptive = param[0, 0].numel()
                fan_in, fan_out = param.shape[1] * receptive, param.shape[0] * receptive
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                param.uniform_(-bound, bound, generator=gen)


def _initial_weights(config: TrainConfig, in_channels: int, block: int) -> LoadedWeights:
    if config.init_weights is not None or config.init_model is not None:
        if config.init_weights is not None:
            loaded = load_weights(config.init_weights)
        else:
            from .store import load_model

            loaded = load_model(config.init_model)
        if loaded.spec.in_channels != in_channels:
            raise UsageError(
                f"the starting weights take {loaded.spec.in_channels}-channel input, the training data packs into "
                f"{in_channels} channels",
                loaded.source,
            )
        if config.width is not None and config.width != loaded.spec.width:
            raise UsageError(f"--width {config.width} differs from the starting weights' width {loaded.spec.width}")
        log.info("starting from %s (width %d)", loaded.source, loaded.spec.width)
        return loaded
    spec = NetworkSpec(in_channels=in_channels, width=config.width or DEFAULT_WIDTH, block=block)
    net = SIDUNet(spec)
    init_official(net, config.seed)
    return LoadedWeights(spec, net.state_dict(), Path("<initial>"), "initial")


# --------------------------------------------------------------------------- checkpoints


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


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = {"epoch": str(info["epoch"]), "step": str(info["step"]), "trained_by": f"seedark {__version__}"}
        save_safetensors((spec, model_state), tmp / MODEL_NAME, meta)
        tensors, opt_meta = _optimizer_tensors(optimizer)
        from safetensors.torch import save_file

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
        _write_json(tmp / STATE_NAME, state)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"cannot write the checkpoint ({exc.strerror or exc})", folder) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_json(folder.parent / LATEST, {"checkpoint": folder.name, "epoch": info["epoch"], "step": info["step"]})
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


def _prune(checkpoints: Path, keep: int, keep_every: int) -> None:
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


# --------------------------------------------------------------------------- the loop


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, epoch: int) -> None:
    """Drop records of epochs after ``epoch`` (an interrupted run's tail) before a resume appends."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("epoch", 0) <= epoch
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _best_validation(path: Path) -> float:
    """Best validation PSNR a resumed run had reached (model-best.safetensors holds those weights)."""
    if not path.is_file():
        return -math.inf
    values = [json.loads(line).get("psnr") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return max((float(v) for v in values if v is not None), default=-math.inf)


def _describe_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    now = config.to_json()
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in _RESUME_SENSITIVE if saved.get(k) != now.get(k)]


def _load_data(config: TrainConfig) -> tuple[list[Pair] | None, list[Path] | None, int, int]:
    """(pairs, sources, input channels, block) of the training data."""
    if config.synthetic is not None:
        sources = find_sources(config.synthetic)
        raws = [s for s in sources if not is_image(s)]
        sensor = read_raw(raws[0]).sensor if raws else "bayer"
        if sensor != "bayer" and len(raws) != len(sources):
            why = "X-Trans RAW files and sRGB images (made into Bayer raws) cannot be mixed"
            raise DatasetError(why, config.synthetic)
        return None, sources, *(_sensor_shape(sensor))
    assert config.train_list is not None
    pairs = read_list(config.train_list, config.data_root)
    return pairs, None, *(_sensor_shape(read_raw(pairs[0].short).sensor))


def _sensor_shape(sensor: str) -> tuple[int, int]:
    return (4, 2) if sensor == "bayer" else (9, 3)


def _validation_pairs(config: TrainConfig, in_channels: int) -> list[Pair]:
    if config.val_list is None or config.val_every == 0:
        return []
    from .evaluate import split_misaligned

    pairs, _ = split_misaligned(read_list(config.val_list, config.data_root), False)
    pairs = pairs[: config.val_limit] if config.val_limit else pairs
    if pairs and _sensor_shape(read_raw(pairs[0].short).sensor)[0] != in_channels:
        raise DatasetError("the validation list is from another kind of sensor than the training data", config.val_list)
    return pairs


def _validate(
    net: SIDUNet, spec: NetworkSpec, pairs: Sequence[Pair], config: TrainConfig, device: torch.device
) -> tuple[float, float]:
    from .evaluate import evaluate_pairs
    from .inference import Engine

    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    engine = Engine(
        LoadedWeights(spec, state, Path("<training>"), "training"),
        device=str(device),
        precision="fp32",
        backend="pytorch",
    )
    scores = evaluate_pairs(pairs, engine, tile=config.val_tile, cache=ArrayCache(config.cache_root))
    return float(np.mean([s.psnr for s in scores])), float(np.mean([s.ssim for s in scores]))


def train(
    config: TrainConfig,
    *,
    progress: Callable[[TrainStatus], None] | None = None,
    cache_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train (or resume training) as ``config`` says; returns where the results are.

    Under ``torchrun`` this is one rank of the job. ``progress`` and
    ``cache_progress`` are called on rank 0 only.
    """
    config.check()
    dist = _setup_distributed(config.device)
    try:
        return _train(config, dist, progress, cache_progress)
    finally:
        dist.close()


def _train(
    config: TrainConfig,
    dist: _Dist,
    progress: Callable[[TrainStatus], None] | None,
    cache_progress: Callable[[int, int], None] | None,
) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel

    device = dist.device
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same patch size
    out = config.out
    checkpoints = out / CHECKPOINTS
    resume_path = config.resume_from
    if config.resume and resume_path is None:
        resume_path = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        if resume_path is None:
            raise UsageError(f"nothing to resume: no checkpoint in {checkpoints}")
    elif resume_path is None and checkpoints.is_dir() and latest_checkpoint(checkpoints) is not None:
        raise UsageError(f"{out} already holds checkpoints; add --resume to continue that run, or choose another --out")
    pairs, sources, in_channels, block = _load_data(config)
    val_pairs = _validation_pairs(config, in_channels)

    ckpt = load_checkpoint(resume_path) if resume_path is not None else None
    if ckpt is not None:
        saved_spec = ckpt.weights.spec
        if saved_spec.in_channels != in_channels:
            why = f"checkpoint takes {saved_spec.in_channels}-channel input, the data {in_channels}"
            raise TrainingError(why, ckpt.path)
        if config.width is not None and config.width != saved_spec.width:
            raise TrainingError(f"checkpoint has width {saved_spec.width}, not --width {config.width}", ckpt.path)
        weights = ckpt.weights
        changes = _describe_changes(ckpt.state.get("config", {}), config)
        if changes:
            log.warning("resuming with changed settings, so not exactly where the run stopped: %s", "; ".join(changes))
        if int(ckpt.state.get("world_size", 1)) != dist.world:
            log.warning(
                "resuming on %d process(es), the run used %d: the sample order differs from a straight run",
                dist.world,
                ckpt.state.get("world_size"),
            )
    else:
        weights = _initial_weights(config, in_channels, block)
    spec = weights.spec

    if dist.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            checkpoints.mkdir(exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"cannot create the output folder ({exc.strerror or exc})", out) from exc
        _write_json(out / "config.json", config.to_json())
    dataset = TrainingSet(config, pairs, sources)
    log.info(
        "training on %d %s, %d step(s) per epoch on %d process(es), device %s",
        dataset.items,
        "references" if pairs else "clean images",
        steps_per_epoch(dataset.items, dist.world),
        dist.world,
        device,
    )
    if dist.main:
        log.info("decoding the ground truth once into %s", config.cache_root)
    dataset.prepare_cache((dist.local_rank, dist.local_world), cache_progress if dist.main else None)
    dist.barrier()

    net = SIDUNet(spec)
    net.load_state_dict(weights.state)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    start_epoch, step = 0, 0
    best = -math.inf
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)
        start_epoch, step = ckpt.epoch, ckpt.step
        set_rng_state(ckpt.state["rng"])
        log.info("resuming %s at epoch %d, step %d", ckpt.path, start_epoch, step)
        if dist.main:
            _truncate_log(out / TRAIN_LOG, start_epoch)
            _truncate_log(out / VAL_LOG, start_epoch)
            best = _best_validation(out / VAL_LOG)
    model: torch.nn.Module = net
    if dist.world > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    per_epoch = steps_per_epoch(dataset.items, dist.world)
    total_steps = config.epochs * per_epoch
    history: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    last_ckpt: Path | None = ckpt.path if ckpt is not None else None
    result = TrainResult(out, None, last_ckpt, start_epoch, step, history, validation)
    if start_epoch >= config.epochs:
        log.info("the run already has %d epoch(s); nothing to train", start_epoch)
    else:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            sampler=EpochSampler(dataset.items, start_epoch, config.epochs, dist.rank, dist.world),
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        batches = iter(loader)
        model.train()
        for epoch in range(start_epoch, config.epochs):
            number = epoch + 1
            lr = config.lr_at(number)
            for group in optimizer.param_groups:
                group["lr"] = lr
            started = time.monotonic()
            total = 0.0
            for k in range(per_epoch):
                got_epoch, _, inp, gt = next(batches)
                assert int(got_epoch) == epoch
                inp = inp.to(device, non_blocking=True).unsqueeze(0)
                gt = gt.to(device, non_blocking=True).unsqueeze(0)
                loss = (model(inp) - gt).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                value = float(loss.item())
                total += value
                if progress is not None and dist.main:
                    progress(TrainStatus(number, config.epochs, step, total_steps, value, total / (k + 1), lr))
            epoch_loss = dist.mean(total / per_epoch)
            seconds = time.monotonic() - started
            record = {"epoch": number, "step": step, "loss": epoch_loss, "lr": lr, "seconds": round(seconds, 3)}
            history.append(record)
            if dist.main:
                _append_jsonl(out / TRAIN_LOG, record)
                if number % config.log_every == 0 or number == config.epochs:
                    log.info("epoch %d/%d: loss %.5f, lr %g, %.1f s", number, config.epochs, epoch_loss, lr, seconds)
            if number % config.save_every == 0 or number == config.epochs:
                if dist.main:
                    info = {"epoch": number, "step": step, "world_size": dist.world, "config": config.to_json()}
                    last_ckpt = save_checkpoint(
                        checkpoints / checkpoint_name(number), spec, net.state_dict(), optimizer, info
                    )
                    _prune(checkpoints, config.keep, config.keep_every)
                    log.debug("checkpoint %s", last_ckpt)
                dist.barrier()
            if val_pairs and config.val_every and number % config.val_every == 0:
                if dist.main:
                    net.eval()
                    v_psnr, v_ssim = _validate(net, spec, val_pairs, config, device)
                    net.train()
                    entry = {"epoch": number, "step": step, "psnr": v_psnr, "ssim": v_ssim, "count": len(val_pairs)}
                    validation.append(entry)
                    _append_jsonl(out / VAL_LOG, entry)
                    log.info(
                        "epoch %d: validation PSNR %.2f dB, SSIM %.4f (%d pairs)",
                        number,
                        v_psnr,
                        v_ssim,
                        len(val_pairs),
                    )
                    if v_psnr > best:
                        best = v_psnr
                        save_safetensors(
                            (spec, net.state_dict()),
                            out / BEST_NAME,
                            {"epoch": str(number), "val_psnr": f"{v_psnr:.4f}"},
                        )
                dist.barrier()
        result.epochs, result.steps, result.checkpoint = config.epochs, step, last_ckpt
        del batches
    if dist.main:
        final = out / MODEL_NAME
        meta = {"epoch": str(result.epochs), "step": str(result.steps), "trained_by": f"seedark {__version__}"}
        result.model = save_safetensors((spec, {k: v.detach().cpu() for k, v in net.state_dict().items()}), final, meta)
        log.info("trained weights: %s", final)
    dist.barrier()
    return result


__all__ = [
    "Checkpoint",
    "EpochSampler",
    "TrainConfig",
    "TrainResult",
    "TrainStatus",
    "TrainingError",
    "TrainingSet",
    "export_model",
    "init_official",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
