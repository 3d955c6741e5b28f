"""What the PyTorch back end does differently on a GPU: numerics, output and copies.

* :func:`inference_scope`: fp32 is IEEE fp32 while the network runs (cuDNN would
  otherwise convolve fp32 in TF32 on Ampere and later: ``torch.backends.cudnn.conv``
  defaults to ``"tf32"``), and cuDNN's autotuning is on only while it runs, off in a
  run that asked for deterministic algorithms. Both are restored afterwards, so a
  training run around a validation keeps its own settings.
* :func:`device_core`: each tile's core clipped, or quantised to the output's 8- or
  16-bit samples, on the device: the copy back is 1 or 2 bytes a sample instead of 4,
  and the host does no arithmetic. The samples equal :func:`seedark.io.pixels.quantise`'s.
* :class:`TilePipeline`: tiles through the network with host and device both busy: the
  next tile is packed and uploaded (pinned memory, asynchronous copy) while the device
  runs this one, and each core is copied back asynchronously and stored into the
  output while the device runs the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from seedark.io.pixels import quantise
from seedark.runtime.tiling import TileWork

#: The output sample types and their torch twins (torch.uint16 exists from torch 2.3).
_SAMPLE_TYPES: dict[Any, Any] = {np.dtype(np.uint8): torch.uint8}
if hasattr(torch, "uint16"):
    _SAMPLE_TYPES[np.dtype(np.uint16)] = torch.uint16


# --------------------------------------------------------------------------- numerics


def _exact_fp32_settings() -> list[tuple[Any, str, Any]]:
    """``(object, attribute, value)`` that keep fp32 convolutions and matmuls in IEEE fp32.

    torch >= 2.9 has ``torch.backends.cudnn.conv.fp32_precision`` and
    ``torch.backends.cuda.matmul.fp32_precision`` (``"ieee"`` | ``"tf32"`` | ``"none"``),
    and reading the legacy ``allow_tf32`` flags after setting them raises; older
    torch has only ``allow_tf32`` (docs: notes/cuda, "TensorFloat-32 (TF32) on Ampere
    (and later) devices").
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]


@contextlib.contextmanager
def inference_scope(dtype: torch.dtype) -> Iterator[None]:
    """The backend settings inference runs under, restored on the way out.

    fp32 (and fp64) runs with TF32 off. cuDNN's autotuning (``cudnn.benchmark``) is on,
    since a frame's tiles all have one shape and the search is paid once per shape,
    unless ``torch.use_deterministic_algorithms`` is on: the algorithm it picks can
    differ from run to run, and so can the results.
    """
    settings = [(torch.backends.cudnn, "benchmark", not torch.are_deterministic_algorithms_enabled())]
    if dtype in (torch.float32, torch.float64):
        settings += _exact_fp32_settings()
    saved = [(owner, name, getattr(owner, name)) for owner, name, _value in settings]
    try:
        for owner, name, value in settings:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


# --------------------------------------------------------------------------- the output


def quantise_on_device(rgb: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`seedark.io.pixels.quantise` on a tensor where it lies: ``floor(x * maxval + 0.5)``
    in float32, NaN to 0, clipped to ``[0, maxval]``, as uint8 or uint16.

    The same float32 operations in the same order, each rounded once (eager kernels
    are not fused), so the samples are the host's bit for bit.
    """
    dtype = torch.uint8 if bits == 8 else _SAMPLE_TYPES[np.dtype(np.uint16)]
    maxval = float((1 << bits) - 1)
    x = rgb.to(torch.float32).mul(maxval)  # a new tensor, even from float32 input
    x.add_(0.5).floor_()
    # The host's fmax(x, 0) / fmin(x, maxval) send NaN to 0 and +-inf to the ends, as these do.
    torch.nan_to_num_(x, nan=0.0).clamp_(0.0, maxval)
    return x.to(dtype)


def device_core(core: torch.Tensor, sample: np.dtype[Any]) -> torch.Tensor:
    """A ``3 x dh x dw`` slice of the network's output as the ``dh x dw x 3`` samples the
    output holds: quantised to ``sample`` (uint8/uint16), else float32 clipped to [0, 1]
    (for uint16 before torch 2.3, the host quantises that: the same samples)."""
    rgb = core.permute(1, 2, 0)
    if sample in _SAMPLE_TYPES:
        return quantise_on_device(rgb, 8 * sample.itemsize)
    return rgb.to(torch.float32, copy=True).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- the pipeline


class _InFlight(NamedTuple):
    """A core on its way back: the host buffer it is copied into, and the event that says it arrived."""

    host: torch.Tensor
    done: Any  # torch.cuda.Event, or None where copies are synchronous
    work: TileWork

    def finish(self) -> None:
        if self.done is not None:
            self.done.synchronize()
        dest = self.work.dest
        if dest.dtype == np.float32 or self.host.dtype != torch.float32:
            np.copyto(dest, self.host.numpy())
        else:  # clipped float32 of a sample type this torch lacks: quantising it clips nothing more
            quantise(self.host.numpy(), 8 * dest.dtype.itemsize, out=dest)
        self.work.done()


class TilePipeline:
    """Runs tiles so that the host's work on one overlaps the device's on another.

    For each tile, in order: the next tile is packed and uploaded while the device
    runs this one; then the previous tile's core, copied back meanwhile, is stored
    into the output. On CUDA the host buffers are pinned (page-locked), so copies
    are asynchronous (``non_blocking=True``, docs: notes/cuda "Use pinned memory
    buffers"); a buffer goes back to torch's pinned-memory cache once its copy is
    done, which torch tracks for the input and the events here for the output.
    Elsewhere the same steps run synchronously (the tests run them on the CPU).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
        layout: torch.memory_format,
    ) -> None:
        self.forward = forward
        self.device = device
        self.dtype = dtype
        self.layout = layout
        self.pinned = device.type == "cuda"

    def _host(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=self.pinned)

    def upload(self, work: TileWork) -> tuple[torch.Tensor, TileWork]:
        """The tile as the network's input on the device (NCHW shape, the device's layout)."""
        host = self._host(work.tile.shape, torch.float32)
        np.copyto(host.numpy(), work.tile, casting="same_kind")
        x = host.to(self.device, non_blocking=self.pinned)
        # HWC permuted to CHW is channels_last already: no copy unless the layout wants NCHW.
        x = x.permute(2, 0, 1).unsqueeze(0).to(self.dtype).contiguous(memory_format=self.layout)
        return x, work

    def launch(self, x: torch.Tensor, work: TileWork) -> _InFlight:
        """Run the network on ``x`` and start copying the tile's core back (nothing waits here on CUDA)."""
        y = self.forward(x)
        del x
        dh, dw = work.dest.shape[:2]
        core = device_core(y[0, :, work.oy : work.oy + dh, work.ox : work.ox + dw], work.dest.dtype)
        del y
        host = self._host(tuple(core.shape), core.dtype)
        host.copy_(core, non_blocking=self.pinned)
        done = None
        if self.pinned:
            done = torch.cuda.Event()
            done.record()
        return _InFlight(host, done, work)

    def run(self, work: Iterable[TileWork]) -> None:
        items = iter(work)
        first = next(items, None)
        if first is None:
            return
        staged: tuple[torch.Tensor, TileWork] | None = self.upload(first)
        previous: _InFlight | None = None
        while staged is not None:
            flight = self.launch(*staged)
            following = next(items, None)  # packed here while the device runs the tile just launched
            staged = None if following is None else self.upload(following)
            if previous is not None:
                previous.finish()
            previous = flight
        if previous is not None:
            previous.finish()
