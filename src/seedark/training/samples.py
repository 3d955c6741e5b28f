"""The training samples: each a pure function of (epoch, position) and the seed.

The randomness of each sample comes from a generator seeded by (seed, epoch,
position), not from global state, so a resumed run, a run with data-loader
workers and a run on N processes all see the same samples as a straight run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seedark.errors import DatasetError
from seedark.io.raw import read_raw
from seedark.progress import ProgressFn
from seedark.synthesis.unprocess import DEFAULT_SRGB_WB
from seedark.training.arraycache import ArrayCache
from seedark.training.config import TrainConfig
from seedark.training.dataset import (
    Pair,
    find_sources,
    group_by_reference,
    is_image,
    paired_patch,
    read_list,
    read_pair_folders,
    synthetic_srgb_patch,
)


class TrainingSet(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Samples keyed by (epoch, position): a pure function of the key and the seed.

    Paired mode: the items of an epoch are the list's references (long exposures);
    each visit picks one of its dark inputs. Synthetic mode: the items are the clean
    source images, each darkened by a random ratio with the noise model. Both at once
    (``seedark finetune`` with real pairs): the references first, then the sources.
    """

    def __init__(self, config: TrainConfig, pairs: Sequence[Pair] | None, sources: Sequence[Path] | None) -> None:
        self.config = config
        self.groups = group_by_reference(pairs) if pairs else []
        self.sources = list(sources or [])
        self.gt_cache = ArrayCache(config.cache_root)
        self.frames = ArrayCache(config.cache_root if config.cache_inputs else None)
        self.match = None if config.sensor_match is None else np.array(config.sensor_match).reshape(3, 3)
        self._perm: tuple[int, np.ndarray] | None = None

    @property
    def items(self) -> int:
        return len(self.groups) + len(self.sources)

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
        if item < len(self.groups):
            group = self.groups[item]
            pair = group[int(rng.integers(len(group)))]
            frame = self.frames.frame(pair.short)
            gt, flip = self.gt_cache.ground_truth(pair.long)
            return paired_patch(
                frame, gt, flip, pair.ratio, cfg.patch, rng, augment_patch=cfg.augment, match=self.match
            )
        source = self.sources[item - len(self.groups)]
        if cfg.ratios:  # drawn as the SID set's ratios are
            ratio = float(cfg.ratios[int(rng.integers(len(cfg.ratios)))])
        else:
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
        return paired_patch(
            frame,
            gt,
            flip,
            ratio,
            cfg.patch,
            rng,
            augment_patch=cfg.augment,
            noise=cfg.noise_profile,
            per_iso=cfg.per_iso_noise,
            match=self.match,
        )

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, np.ndarray, np.ndarray]:
        epoch, position = key
        inp, gt = self.sample(epoch, position)
        return epoch, position, inp, gt

    def prepare_cache(self, shard: tuple[int, int], progress: ProgressFn | None = None) -> None:
        """Decode this process's share of the references (and inputs) into the cache."""
        if self.groups:
            self.gt_cache.prepare([g[0].long for g in self.groups], "gt", shard=shard, progress=progress)
            if self.config.cache_inputs:
                shorts = [p.short for g in self.groups for p in g]
                self.frames.prepare(shorts, "raw", shard=shard, progress=progress)
        if not self.sources:
            return
        raws = [s for s in self.sources if not is_image(s)]
        self.gt_cache.prepare(raws, "gt", shard=shard, progress=progress)
        self.gt_cache.prepare([s for s in self.sources if is_image(s)], "image", shard=shard, progress=progress)
        if self.config.cache_inputs:
            self.frames.prepare(raws, "raw", shard=shard, progress=progress)


def load_data(config: TrainConfig) -> tuple[list[Pair] | None, list[Path] | None, int, int]:
    """(pairs, sources, input channels, block) of the training data."""
    if config.synthetic is not None:
        sources = find_sources(config.synthetic)
        raws = [s for s in sources if not is_image(s)]
        sensor = read_raw(raws[0]).sensor if raws else "bayer"
        if sensor != "bayer" and len(raws) != len(sources):
            why = "X-Trans RAW files and sRGB images (made into Bayer raws) cannot be mixed"
            raise DatasetError(why, config.synthetic)
        pairs = read_pair_folders(config.pairs) if config.pairs is not None else None
        if pairs and read_raw(pairs[0].short).sensor != sensor:
            raise DatasetError("the real pairs are from another kind of sensor than the photos", config.pairs)
        return pairs, sources, *(sensor_shape(sensor))
    assert config.train_list is not None
    pairs = read_list(config.train_list, config.data_root)
    return pairs, None, *(sensor_shape(read_raw(pairs[0].short).sensor))


def sensor_shape(sensor: str) -> tuple[int, int]:
    return (4, 2) if sensor == "bayer" else (9, 3)


__all__ = ["TrainingSet", "load_data", "sensor_shape"]
