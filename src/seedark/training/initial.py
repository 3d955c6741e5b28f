"""The weights a run starts from: the official initialisation, or given weights to fine-tune."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from seedark.errors import UsageError
from seedark.models.network import NetworkSpec, SIDUNet
from seedark.models.weights import LoadedWeights, load_weights
from seedark.training.config import TrainConfig

log = logging.getLogger("seedark")

#: Channels of the first level when neither --width nor starting weights say.
DEFAULT_WIDTH = 32


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


def initial_weights(config: TrainConfig, in_channels: int, block: int) -> LoadedWeights:
    if config.init_weights is not None or config.init_model is not None:
        if config.init_weights is not None:
            loaded = load_weights(config.init_weights)
        else:
            from seedark.models.cache import load_model

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


__all__ = ["DEFAULT_WIDTH", "init_official", "initial_weights"]
