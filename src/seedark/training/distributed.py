"""One process, or one rank of a ``torchrun`` job, and its share of every epoch.

Several processes (``torchrun``, docs/training.md) train one model through
DistributedDataParallel: each takes a disjoint share of every epoch's samples,
gradients are averaged, and only rank 0 writes checkpoints, logs and validates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from seedark.errors import DeviceError
from seedark.runtime.devices import resolve_device

#: How long ranks wait for each other (rank 0 validating a large set, decoding the cache).
DIST_TIMEOUT = timedelta(hours=2)


@dataclass
class Dist:
    """This process's place in the job, and the collective operations the loop needs (no-ops alone)."""

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


def setup_distributed(device_name: str) -> Dist:
    """One process, or one rank of a ``torchrun`` job (WORLD_SIZE, RANK, LOCAL_RANK in the environment)."""
    dist = torch.distributed
    initialized = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialized else int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist(device=resolve_device(device_name))
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
    return Dist(rank, world, local_rank, local_world, device, created)


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


__all__ = ["DIST_TIMEOUT", "Dist", "EpochSampler", "setup_distributed", "steps_per_epoch"]
