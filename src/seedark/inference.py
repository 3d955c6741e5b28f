"""Running the network over a packed frame: device, precision and tiles.

:class:`Engine` is prepared once (weights on the device, in the chosen dtype and
memory layout) and then reused for every frame of a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .devices import available_memory, precision_name, resolve_device, resolve_precision
from .errors import UsageError
from .network import SIDUNet
from .tiling import MARGIN, ProgressFn, auto_tile, iter_tiles, plan_tiles
from .weights import LoadedWeights

log = logging.getLogger("seedark")

#: Share of free memory ``--tile auto`` lets one tile's activations use.
AUTO_MEMORY_SHARE = 0.5
#: Cap on that budget: beyond ~1 GB, bigger tiles stop paying off on CPUs.
AUTO_MEMORY_CAP = 1 << 30


def parse_tile(value: str | int | None) -> int | None:
    """``auto`` -> None, ``0`` -> whole frame, ``N`` -> core size in packed pixels."""
    if value is None:
        return None
    if isinstance(value, int):
        tile = value
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return None
        try:
            tile = int(text)
        except ValueError as exc:
            raise UsageError(f"tile must be auto, 0 or a positive size in packed pixels, got {value!r}") from exc
    if tile < 0:
        raise UsageError(f"tile must be auto, 0 or a positive size, got {tile}")
    return tile


@dataclass(frozen=True)
class EngineInfo:
    device: str
    precision: str
    backend: str


class Engine:
    """A SID network ready to run on one device in one precision."""

    def __init__(self, weights: LoadedWeights, *, device: str = "auto", precision: str = "auto") -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.spec = weights.spec
        self.source = weights.source
        net: SIDUNet = weights.build().to(self.device, self.dtype)
        if self.device.type == "cpu":
            # oneDNN's convolutions are ~2x faster on NHWC than on NCHW on CPUs.
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.info = EngineInfo(str(self.device), precision_name(self.dtype), "pytorch")

    @property
    def bytes_per_pixel(self) -> float:
        """Peak activation bytes per packed input pixel (measured; docs/tiling.md).

        About 150 channels of full-resolution activations are alive at once in the
        last decoder level, the deeper levels add about a third, and oneDNN's
        format reorders roughly double it.
        """
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return 400.0 * itemsize * self.spec.width / 32 + 64

    def choose_tile(self, height: int, width: int, tile: int | None) -> int:
        if tile is not None:
            return tile
        budget = min(AUTO_MEMORY_CAP, int(available_memory(self.device) * AUTO_MEMORY_SHARE))
        return auto_tile(height, width, budget, self.bytes_per_pixel)

    def run(self, packed: np.ndarray, *, tile: int | None = None, progress: ProgressFn | None = None) -> np.ndarray:
        """Network output for an amplified H x W x C packed array: (bH) x (bW) x 3 in [0, 1].

        ``tile``: None = auto, 0 = whole frame, N = core side in packed pixels.
        """
        if packed.ndim != 3 or packed.shape[2] != self.spec.in_channels:
            raise ValueError(f"expected H x W x {self.spec.in_channels} input, got {packed.shape}")
        h, w, _ = packed.shape
        b = self.spec.block
        chosen = self.choose_tile(h, w, tile)
        tiles = plan_tiles(h, w, chosen, margin=MARGIN)
        if len(tiles) > 1:
            log.debug("%d tiles of core %d px (overlap %d px)", len(tiles), chosen, MARGIN)
        out = np.empty((h * b, w * b, 3), dtype=np.float32)
        with torch.inference_mode():
            for t in iter_tiles(tiles, progress):
                x = torch.from_numpy(packed[t.y0 : t.y1, t.x0 : t.x1]).permute(2, 0, 1).unsqueeze(0)
                x = x.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
                y = self.net(x)
                del x
                oy, ox = (t.cy0 - t.y0) * b, (t.cx0 - t.x0) * b
                core = y[0, :, oy : oy + (t.cy1 - t.cy0) * b, ox : ox + (t.cx1 - t.cx0) * b]
                core = core.clamp_(0.0, 1.0).permute(1, 2, 0).to("cpu", torch.float32)
                out[t.cy0 * b : t.cy1 * b, t.cx0 * b : t.cx1 * b] = core.numpy()
                del y, core
        return out
