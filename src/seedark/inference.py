"""Running the network over a packed frame: engine, precision, tiles and memory.

:class:`Engine` is prepared once (back end chosen, weights on the device in the
chosen precision) and then reused for every frame of a batch. Frames are cut
into tiles of **one fixed shape** (:func:`plan_tiles_fixed`), so a compiled
engine compiles once per frame size and a batch from one camera compiles once.
Tiled output equals whole-frame output (docs/tiling.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .devices import available_memory, resolve_device, resolve_precision
from .engines import OV_MIN_PIXELS, Backend, OpenVINOBackend, select_backend
from .errors import UsageError
from .output import sample_dtype
from .packing import PackedFrame
from .tiling import ProgressFn, TilePlan, iter_tiles, plan_for_budget, plan_tiles_fixed
from .weights import LoadedWeights

log = logging.getLogger("seedark")

#: Share of free memory ``--tile auto`` lets one tile's activations use.
AUTO_MEMORY_SHARE = 0.5
#: ``--tile auto`` on the CPU keeps the whole process under this peak (the 1.5 GB goal, less headroom).
AUTO_PEAK_TARGET = 1_400_000_000
#: Tiles never get less than this under ``auto`` (memory allowing): smaller tiles are mostly overlap
#: (+73 % work at 400 MB, +115 % at 250 MB), so a frame too big for the target costs memory, not hours.
AUTO_MIN_BUDGET = 400_000_000
#: Resident size of ``seedark enhance`` before the model: Python, numpy, torch, rawpy (measured 235-265 MB).
PROCESS_BYTES = 260_000_000


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


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class EngineInfo:
    device: str
    precision: str
    backend: str


class Engine:
    """A SID network ready to run on one device in one precision.

    ``backend``: ``auto`` (OpenVINO on the CPU when installed, else PyTorch;
    ``$SEEDARK_ENGINE`` overrides), ``pytorch`` or ``openvino``.
    """

    def __init__(
        self, weights: LoadedWeights, *, device: str = "auto", precision: str = "auto", backend: str = "auto"
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.spec = weights.spec
        self.source = weights.source
        self.backend: Backend = select_backend(weights, self.device, self.dtype, backend)
        self.info = EngineInfo(str(self.device), self.backend.precision, self.backend.name)

    @property
    def bytes_per_pixel(self) -> float:
        """Peak activation bytes per packed pixel of a tile (measured; docs/performance.md)."""
        return self.backend.bytes_per_pixel()

    def frame_bytes_per_pixel(self, bits: int | None = None, held_input: bool = True) -> int:
        """What a frame holds per packed pixel while it is enhanced: the decoded mosaic (uint16),
        the output (float32, or ``bits``-bit samples) and, unless the input is a
        :class:`PackedFrame` (``held_input=False``), the float32 packed input."""
        b, c = self.spec.block, self.spec.in_channels
        sample = 4 if bits is None else bits // 8
        return (4 * c if held_input else 0) + sample * 3 * b * b + 2 * b * b

    def tile_budget(
        self, height: int, width: int, bits: int | None = None, held_input: bool = True, reserve: int = 0
    ) -> float:
        """Bytes ``--tile auto`` lets one tile's activations take for an ``height x width`` frame.

        ``reserve``: host memory the caller holds besides this frame (``batch``: the
        frames decoded ahead and the image being written), left free on the CPU.
        """
        budget = available_memory(self.device) * AUTO_MEMORY_SHARE
        if self.device.type == "cpu":
            # Everything lives in RAM: keep the whole process, frame and model included, under the target.
            per_pixel = self.frame_bytes_per_pixel(bits, held_input)
            held = PROCESS_BYTES + self.backend.model_bytes + height * width * per_pixel + reserve
            budget = min(budget, max(AUTO_PEAK_TARGET - held, AUTO_MIN_BUDGET))
        return budget

    def plan(
        self,
        height: int,
        width: int,
        tile: int | None = None,
        bits: int | None = None,
        held_input: bool = True,
        reserve: int = 0,
    ) -> TilePlan:
        """Tiles for a packed ``height x width`` frame: None = auto, 0 = whole frame, N = core side.

        What ``auto`` counts in the memory it plans for: ``bits``, the output's samples (None:
        float32), ``held_input``, whether the float32 packed input is held whole (an array)
        or packed per tile (a :class:`PackedFrame`), and ``reserve`` (see :meth:`tile_budget`).
        """
        if tile is not None:
            return plan_tiles_fixed(height, width, tile)
        budget = self.tile_budget(height, width, bits, held_input, reserve)
        return plan_for_budget(height, width, budget, self.bytes_per_pixel)

    def _backend_for(self, height: int, width: int) -> Backend:
        if isinstance(self.backend, OpenVINOBackend) and height * width < OV_MIN_PIXELS:
            return self.backend.torch_fallback()
        return self.backend

    def run(
        self,
        packed: np.ndarray | PackedFrame,
        *,
        tile: int | None = None,
        progress: ProgressFn | None = None,
        bits: int | None = None,
        reserve: int = 0,
    ) -> np.ndarray:
        """Network output for an amplified H x W x C packed array: (bH) x (bW) x 3.

        The contract: ``packed`` is float32 (any strides, or a :class:`PackedFrame`
        that packs each tile's window when it is needed), already amplified and
        clipped to [0, 1], H and W of any size (no padding is needed or added). The
        output is clipped to [0, 1]: float32 when ``bits`` is None, else uint8/uint16
        samples quantised tile by tile exactly as ``seedark.output.quantise`` would
        quantise the float output (a 60 MP frame then holds 180 or 360 MB of output
        instead of 720 MB). ``tile``: None = auto, 0 = whole frame, N = core side in
        packed pixels. ``reserve``: bytes held elsewhere that ``auto`` leaves free.
        """
        if packed.ndim != 3 or packed.shape[2] != self.spec.in_channels:
            raise ValueError(f"expected H x W x {self.spec.in_channels} input, got {packed.shape}")
        dtype = np.float32 if bits is None else sample_dtype(bits)
        h, w, _ = packed.shape
        b = self.spec.block
        plan = self.plan(h, w, tile, bits, held_input=not isinstance(packed, PackedFrame), reserve=reserve)
        backend = self._backend_for(h, w)
        log.debug(
            "%s: %d tile(s) of %dx%d packed px for a %dx%d frame (%.0f%% extra work for the overlaps)",
            backend.name,
            len(plan.tiles),
            *plan.extent,
            h,
            w,
            100 * (plan.pixels / (h * w) - 1),
        )
        out = np.empty((h * b, w * b, 3), dtype=dtype)
        try:
            for t in iter_tiles(plan.tiles, progress):
                dest = out[t.cy0 * b : t.cy1 * b, t.cx0 * b : t.cx1 * b]
                backend.run_tile(packed[t.y0 : t.y1, t.x0 : t.x1], dest, (t.cy0 - t.y0) * b, (t.cx0 - t.x0) * b)
        finally:
            backend.release()
        return out


__all__ = [
    "AUTO_MEMORY_SHARE",
    "AUTO_PEAK_TARGET",
    "Engine",
    "EngineInfo",
    "parse_tile",
]
