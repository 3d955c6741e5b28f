"""Training the SID network with the paper's recipe, resumably, on one or many devices.

The recipe of the official ``train_Sony.py``: every epoch visits each reference
(long exposure) of the training list once, in random order, with one of its dark
inputs picked at random; a random 512x512 patch of the packed input (times the
ratio, clipped at 1) and the matching region of the ground truth; random flips
and transpose; L1 loss; Adam at 1e-4, then 1e-5 after epoch 2000; 4000 epochs;
one patch per step and process. Every number is a :class:`TrainConfig` field.

What differs from the official script, on purpose:

* ground truth (and, with ``cache_inputs``, the dark mosaics) is decoded once
  into a disk cache and memory-mapped, instead of held in RAM (64 GB):
  seedark.training.arraycache;
* the randomness of each sample comes from a generator seeded by (seed, epoch,
  position), not from global state, so a resumed run, a run with data-loader
  workers and a run on N processes all see the same samples as a straight run:
  seedark.training.samples;
* checkpoints hold the model, Adam's state, the epoch and step and the RNG
  states, in safetensors and JSON (nothing pickled), and resuming continues
  bit-exactly on the CPU (and on GPUs with ``deterministic``):
  seedark.training.checkpoint.

Several processes (``torchrun``, docs/training.md) train one model through
DistributedDataParallel: each takes a disjoint share of every epoch's samples,
gradients are averaged, and only rank 0 writes checkpoints, logs and validates
(seedark.training.distributed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedark._files import write_atomic, write_json
from seedark._version import __version__
from seedark.errors import DatasetError, TrainingError, UsageError
from seedark.io.raw import read_raw
from seedark.models.network import NetworkSpec, SIDUNet
from seedark.models.weights import LoadedWeights, save_safetensors
from seedark.progress import ProgressFn
from seedark.training.arraycache import ArrayCache
from seedark.training.checkpoint import (
    CHECKPOINTS,
    MODEL_NAME,
    Checkpoint,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from seedark.training.config import TrainConfig, resume_changes
from seedark.training.dataset import Pair, read_list
from seedark.training.distributed import Dist, EpochSampler, setup_distributed, steps_per_epoch
from seedark.training.initial import initial_weights
from seedark.training.samples import TrainingSet, load_data, sensor_shape

log = logging.getLogger("seedark")

BEST_NAME = "model-best.safetensors"
TRAIN_LOG = "train_log.jsonl"
VAL_LOG = "validation.jsonl"


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


@dataclass
class _Run:
    """What the steps of one process's run share."""

    config: TrainConfig
    dist: Dist
    spec: NetworkSpec
    net: SIDUNet
    model: torch.nn.Module  # net, or net wrapped for DistributedDataParallel
    optimizer: torch.optim.Optimizer
    val_pairs: list[Pair]
    result: TrainResult  # epochs, steps and checkpoint are kept up to date as the run goes
    best: float = -math.inf  # best validation PSNR so far (rank 0)


# --------------------------------------------------------------------------- run logs


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
    write_atomic(path, "".join(line + "\n" for line in kept))


def _best_validation(path: Path) -> float:
    """Best validation PSNR a resumed run had reached (model-best.safetensors holds those weights)."""
    if not path.is_file():
        return -math.inf
    values = [json.loads(line).get("psnr") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return max((float(v) for v in values if v is not None), default=-math.inf)


# --------------------------------------------------------------------------- validation


def _validation_pairs(config: TrainConfig, in_channels: int) -> list[Pair]:
    if config.val_list is None or config.val_every == 0:
        return []
    from seedark.training.evaluate import split_misaligned

    pairs, _ = split_misaligned(read_list(config.val_list, config.data_root), False)
    pairs = pairs[: config.val_limit] if config.val_limit else pairs
    if pairs and sensor_shape(read_raw(pairs[0].short).sensor)[0] != in_channels:
        raise DatasetError("the validation list is from another kind of sensor than the training data", config.val_list)
    return pairs


def _validate(run: _Run) -> tuple[float, float]:
    """Mean (PSNR, SSIM) of the network as it is now, over the validation pairs."""
    from seedark.runtime.engine import Engine
    from seedark.training.evaluate import evaluate_pairs

    state = {k: v.detach().to("cpu", copy=True) for k, v in run.net.state_dict().items()}
    engine = Engine(
        LoadedWeights(run.spec, state, Path("<training>"), "training"),
        device=str(run.dist.device),
        precision="fp32",
        backend="pytorch",
    )
    cache = ArrayCache(run.config.cache_root)
    scores = evaluate_pairs(run.val_pairs, engine, tile=run.config.val_tile, cache=cache)
    return float(np.mean([s.psnr for s in scores])), float(np.mean([s.ssim for s in scores]))


# --------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    *,
    progress: Callable[[TrainStatus], None] | None = None,
    cache_progress: ProgressFn | None = None,
) -> TrainResult:
    """Train (or resume training) as ``config`` says; returns where the results are.

    Under ``torchrun`` this is one rank of the job. ``progress`` and
    ``cache_progress`` are called on rank 0 only.
    """
    config.check()
    dist = setup_distributed(config.device)
    try:
        return _train(config, dist, progress, cache_progress)
    finally:
        dist.close()


def _train(
    config: TrainConfig,
    dist: Dist,
    progress: Callable[[TrainStatus], None] | None,
    cache_progress: ProgressFn | None,
) -> TrainResult:
    _set_determinism(config, dist.device)
    resume_path = _resume_path(config)
    pairs, sources, in_channels, block = load_data(config)
    val_pairs = _validation_pairs(config, in_channels)
    ckpt = load_checkpoint(resume_path) if resume_path is not None else None
    if ckpt is not None:
        _check_resume(ckpt, config, in_channels, dist.world)
        weights = ckpt.weights
    else:
        weights = initial_weights(config, in_channels, block)
    if dist.main:
        _make_run_folder(config)
    dataset = TrainingSet(config, pairs, sources)
    _fill_cache(dataset, config, dist, cache_progress)
    run = _start(config, dist, weights, ckpt, val_pairs)
    if run.result.epochs >= config.epochs:
        log.info("the run already has %d epoch(s); nothing to train", run.result.epochs)
    else:
        _loop(run, dataset, progress)
    if dist.main:
        _export(run)
    dist.barrier()
    return run.result


def _set_determinism(config: TrainConfig, device: torch.device) -> None:
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same patch size


def _resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint to continue from, if any; refuses to start afresh over an earlier run."""
    checkpoints = config.out / CHECKPOINTS
    if config.resume_from is not None:
        return config.resume_from
    if config.resume:
        found = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        if found is None:
            raise UsageError(f"nothing to resume: no checkpoint in {checkpoints}")
        return found
    if checkpoints.is_dir() and latest_checkpoint(checkpoints) is not None:
        why = "already holds checkpoints; add --resume to continue that run, or choose another --out"
        raise UsageError(f"{config.out} {why}")
    return None


def _check_resume(ckpt: Checkpoint, config: TrainConfig, in_channels: int, world: int) -> None:
    """Refuse a checkpoint that cannot take this data; warn where the resume will not be exact."""
    saved_spec = ckpt.weights.spec
    if saved_spec.in_channels != in_channels:
        why = f"checkpoint takes {saved_spec.in_channels}-channel input, the data {in_channels}"
        raise TrainingError(why, ckpt.path)
    if config.width is not None and config.width != saved_spec.width:
        raise TrainingError(f"checkpoint has width {saved_spec.width}, not --width {config.width}", ckpt.path)
    changes = resume_changes(ckpt.state.get("config", {}), config)
    if changes:
        log.warning("resuming with changed settings, so not exactly where the run stopped: %s", "; ".join(changes))
    if int(ckpt.state.get("world_size", 1)) != world:
        log.warning(
            "resuming on %d process(es), the run used %d: the sample order differs from a straight run",
            world,
            ckpt.state.get("world_size"),
        )


def _make_run_folder(config: TrainConfig) -> None:
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / CHECKPOINTS).mkdir(exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot create the output folder ({exc.strerror or exc})", config.out) from exc
    write_json(config.out / "config.json", config.to_json())


def _fill_cache(dataset: TrainingSet, config: TrainConfig, dist: Dist, cache_progress: ProgressFn | None) -> None:
    """Decode the ground truth into the cache, each process a share, before any process trains."""
    log.info(
        "training on %d %s, %d step(s) per epoch on %d process(es), device %s",
        dataset.items,
        "references" if dataset.groups else "clean images",
        steps_per_epoch(dataset.items, dist.world),
        dist.world,
        dist.device,
    )
    if dist.main:
        log.info("decoding the ground truth once into %s", config.cache_root)
    dataset.prepare_cache((dist.local_rank, dist.local_world), cache_progress if dist.main else None)
    dist.barrier()


def _start(
    config: TrainConfig, dist: Dist, weights: LoadedWeights, ckpt: Checkpoint | None, val_pairs: list[Pair]
) -> _Run:
    """The network on its device and Adam; resuming, their saved state and the RNG states too."""
    from torch.nn.parallel import DistributedDataParallel

    device = dist.device
    net = SIDUNet(weights.spec)
    net.load_state_dict(weights.state)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    run = _Run(config, dist, weights.spec, net, net, optimizer, val_pairs, TrainResult(config.out, None, None, 0, 0))
    if ckpt is not None:
        _restore(run, ckpt)
    if dist.world > 1:
        run.model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def _restore(run: _Run, ckpt: Checkpoint) -> None:
    run.optimizer.load_state_dict(ckpt.optimizer)
    run.result.epochs, run.result.steps, run.result.checkpoint = ckpt.epoch, ckpt.step, ckpt.path
    # after the network is built: building it draws from the global RNG
    set_rng_state(ckpt.state["rng"])
    log.info("resuming %s at epoch %d, step %d", ckpt.path, ckpt.epoch, ckpt.step)
    if run.dist.main:
        out = run.config.out
        _truncate_log(out / TRAIN_LOG, ckpt.epoch)
        _truncate_log(out / VAL_LOG, ckpt.epoch)
        run.best = _best_validation(out / VAL_LOG)


def _loop(run: _Run, dataset: TrainingSet, progress: Callable[[TrainStatus], None] | None) -> None:
    """The remaining epochs, each followed by a checkpoint and validation when they are due."""
    config, dist = run.config, run.dist
    start = run.result.epochs
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=EpochSampler(dataset.items, start, config.epochs, dist.rank, dist.world),
        num_workers=config.workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=False,
    )
    batches = iter(loader)
    per_epoch = steps_per_epoch(dataset.items, dist.world)
    run.model.train()
    for epoch in range(start, config.epochs):
        number = epoch + 1
        _train_epoch(run, epoch, batches, per_epoch, progress)
        if number % config.save_every == 0 or number == config.epochs:
            _save(run, number)
        if run.val_pairs and config.val_every and number % config.val_every == 0:
            _validate_epoch(run, number)


def _train_epoch(
    run: _Run,
    epoch: int,
    batches: Iterator[Any],
    per_epoch: int,
    progress: Callable[[TrainStatus], None] | None,
) -> None:
    """One epoch's steps; its mean loss (over all processes) goes to the history and the train log."""
    config, dist = run.config, run.dist
    number = epoch + 1
    lr = config.lr_at(number)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    started = time.monotonic()
    total = 0.0
    for k in range(per_epoch):
        got_epoch, _, inp, gt = next(batches)
        assert int(got_epoch) == epoch
        value = _step(run, inp, gt)
        total += value
        if progress is not None and dist.main:
            steps = run.result.steps
            progress(TrainStatus(number, config.epochs, steps, config.epochs * per_epoch, value, total / (k + 1), lr))
    epoch_loss = dist.mean(total / per_epoch)
    seconds = time.monotonic() - started
    record = {"epoch": number, "step": run.result.steps, "loss": epoch_loss, "lr": lr, "seconds": round(seconds, 3)}
    run.result.history.append(record)
    run.result.epochs = number
    if dist.main:
        _append_jsonl(config.out / TRAIN_LOG, record)
        if number % config.log_every == 0 or number == config.epochs:
            log.info("epoch %d/%d: loss %.5f, lr %g, %.1f s", number, config.epochs, epoch_loss, lr, seconds)


def _step(run: _Run, inp: torch.Tensor, gt: torch.Tensor) -> float:
    """One optimiser step on one patch; returns its L1 loss."""
    device = run.dist.device
    inp = inp.to(device, non_blocking=True).unsqueeze(0)
    gt = gt.to(device, non_blocking=True).unsqueeze(0)
    loss = (run.model(inp) - gt).abs().mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.result.steps += 1
    return float(loss.item())


def _save(run: _Run, number: int) -> None:
    if run.dist.main:
        config = run.config
        checkpoints = config.out / CHECKPOINTS
        info = {"epoch": number, "step": run.result.steps, "world_size": run.dist.world, "config": config.to_json()}
        folder = checkpoints / checkpoint_name(number)
        run.result.checkpoint = save_checkpoint(folder, run.spec, run.net.state_dict(), run.optimizer, info)
        prune_checkpoints(checkpoints, config.keep, config.keep_every)
        log.debug("checkpoint %s", folder)
    run.dist.barrier()


def _validate_epoch(run: _Run, number: int) -> None:
    """Score the network on the validation pairs (rank 0); the best so far is kept as model-best."""
    if run.dist.main:
        run.net.eval()
        v_psnr, v_ssim = _validate(run)
        run.net.train()
        count = len(run.val_pairs)
        entry = {"epoch": number, "step": run.result.steps, "psnr": v_psnr, "ssim": v_ssim, "count": count}
        run.result.validation.append(entry)
        _append_jsonl(run.config.out / VAL_LOG, entry)
        log.info("epoch %d: validation PSNR %.2f dB, SSIM %.4f (%d pairs)", number, v_psnr, v_ssim, count)
        if v_psnr > run.best:
            run.best = v_psnr
            meta = {"epoch": str(number), "val_psnr": f"{v_psnr:.4f}"}
            save_safetensors((run.spec, run.net.state_dict()), run.config.out / BEST_NAME, meta)
    run.dist.barrier()


def _export(run: _Run) -> None:
    """Write the trained weights as the run's model.safetensors."""
    final = run.config.out / MODEL_NAME
    meta = {"epoch": str(run.result.epochs), "step": str(run.result.steps), "trained_by": f"seedark {__version__}"}
    state = {k: v.detach().cpu() for k, v in run.net.state_dict().items()}
    run.result.model = save_safetensors((run.spec, state), final, meta)
    log.info("trained weights: %s", final)


__all__ = ["TrainResult", "TrainStatus", "train"]
