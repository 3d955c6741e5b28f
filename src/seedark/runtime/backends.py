"""Back ends that run the SID network on one tile: lean PyTorch and (optional) OpenVINO.

A back end takes an ``h x w x C`` float32 tile (a view into the packed frame) and
writes the clipped ``(b*h) x (b*w) x 3`` network output, cropped to the tile's
core, into a destination array: float32, or uint8/uint16 quantised on the spot
(so a frame's output never exists as float32 in full). :class:`seedark.runtime.engine.Engine` plans the tiles
and picks the back end (:func:`select_backend`):

* ``pytorch``: the network's memory-lean forward (``SIDUNet.lean_forward``: in-place
  activations, every intermediate freed as soon as it is consumed: ~520 instead of
  ~920 bytes per packed pixel at width 32), channels_last on CPU and CUDA.
* ``openvino`` (``pip install seedark[openvino]``): the same module converted once
  to OpenVINO IR, cached under ``<cache>/engines/`` (:mod:`seedark.runtime.ircache`), compiled for one static tile
  shape (static shapes let OpenVINO plan its memory: ~590 bytes per pixel against
  ~960 for a dynamic-shape model), with compiled blobs cached by OpenVINO itself.

Both compute what :class:`seedark.models.network.SIDUNet` computes (tests/test_engines.py).

torch is imported only by the PyTorch back end and by a conversion: an OpenVINO engine
whose weights' conversion is cached (:class:`seedark.runtime.ircache.KnownWeights`) runs
without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from seedark import config
from seedark._parallel import release_heap
from seedark.errors import DeviceError, UsageError
from seedark.io.pixels import quantise
from seedark.runtime import ircache, quantize
from seedark.runtime.devices import CPU, Device, precision_name, release_memory, torch_dtype
from seedark.runtime.ircache import KnownWeights
from seedark.runtime.telemetry import mute_telemetry
from seedark.runtime.tiling import TileWork

if TYPE_CHECKING:
    from types import ModuleType

    import torch

    from seedark.models.network import SIDUNet
    from seedark.models.weights import LoadedWeights
    from seedark.models.weightsfile import WeightsFile

log = logging.getLogger("seedark")

#: OpenVINO's pooling refuses a 2-wide window over a 1-pixel map; below this side, tiles run on PyTorch.
OV_MIN_SIDE = 16
#: Under this many packed pixels a frame runs on PyTorch even when OpenVINO is the engine: converting
#: (seconds, once per weights) and compiling a new shape (~0.4 s) would cost more than the whole inference.
OV_MIN_PIXELS = 512 * 512


class Backend(Protocol):
    name: str
    precision: str
    #: What the process holds for the model itself (weights, runtime), beyond the activations.
    model_bytes: int

    def bytes_per_pixel(self) -> float:
        """Peak activation bytes per packed pixel of a tile (measured; docs/performance.md)."""
        ...

    def prepare(self, height: int, width: int) -> None:
        """Get ready to run tiles of this shape (OpenVINO compiles it; safe on another thread
        while the caller packs the first tile)."""
        ...

    def run_tile(self, tile: np.ndarray, dest: np.ndarray, oy: int, ox: int) -> None:
        """Write clip(net(tile))[oy:oy+dh, ox:ox+dw] into ``dest`` (dh x dw x 3; see :func:`write_core`)."""
        ...

    def run_tiles(self, work: Iterable[TileWork], count: int | None = None) -> None:
        """:meth:`run_tile` for each tile, in order (a GPU overlaps one tile's copies with another's work).
        ``count``: how many tiles ``work`` holds, when known (a back end may give its working memory
        back before it stores the last tile's output)."""
        ...

    def release(self) -> None:
        """Give back activation memory between frames (the file is written meanwhile)."""
        ...


def write_core(core: np.ndarray, dest: np.ndarray) -> None:
    """Network output ``core`` into ``dest``: float32 clipped to [0, 1], or uint8/uint16 quantised.

    Quantising here gives exactly the samples ``write_image`` would give for the
    float image (``quantise`` clips and rounds per sample).
    """
    if dest.dtype == np.float32:
        np.clip(core, 0.0, 1.0, out=dest)
    elif dest.dtype in (np.uint8, np.uint16):
        quantise(core, 8 * dest.dtype.itemsize, out=dest)
    else:
        raise ValueError(f"output must be float32, uint8 or uint16, not {dest.dtype}")


# --------------------------------------------------------------------------- PyTorch


class TorchBackend:
    """The network in eager PyTorch on any device, in the device's fast layout.

    ``device`` and ``precision``: a :class:`Device` or ``torch.device``, and a precision's name
    (``fp32``, ``bf16``, ``fp16``; ``fp64`` for tests) or a ``torch.dtype``.
    """

    name = "pytorch"

    def __init__(
        self, weights: LoadedWeights, device: Device | torch.device, precision: str | torch.dtype = "fp32"
    ) -> None:
        import torch

        device = torch.device(str(device))
        dtype = torch_dtype(precision) if isinstance(precision, str) else precision
        self.device = device
        self.dtype = dtype
        self.spec = weights.spec
        # oneDNN (CPU) and cuDNN (CUDA) convolutions are fastest on NHWC; MPS support for it is patchy.
        self.layout = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
        net = weights.build().to(device=device, dtype=dtype)
        self.net: SIDUNet = net.to(memory_format=self.layout)  # type: ignore[call-overload]  # stubs lack it
        #: Tiles through :class:`TilePipeline` (CUDA: pinned buffers, asynchronous copies, the output
        #: quantised on the device) rather than one at a time with the host doing the output.
        self.pipelined = device.type == "cuda"
        # fp64 only serves tests that prove tiling exact beyond float32 rounding.
        self.precision = precision_name(dtype)
        itemsize = dtype.itemsize
        # The module's parameters, plus the caller's copy of the weights when they are on the same device.
        self.model_bytes = 2 * sum(v.numel() for v in weights.state.values()) * itemsize

    def bytes_per_pixel(self) -> float:
        # Width 32, fp32, CPU: 518 B/px for the forward alone and up to 645 B/px measured inside
        # `seedark enhance` (allocator slack): the decoder's full-resolution concat (64 channels), the
        # skip and one conv output, then the output planes. Scaled by width and element size.
        itemsize = self.dtype.itemsize
        return (560.0 * self.spec.width / 32 + 64.0) * itemsize / 4 + 16

    def prepare(self, height: int, width: int) -> None:
        return None

    def run_tile(self, tile: np.ndarray, dest: np.ndarray, oy: int, ox: int) -> None:
        self.run_tiles([TileWork(tile, dest, oy, ox)])

    def run_tiles(self, work: Iterable[TileWork], count: int | None = None) -> None:
        import torch

        from seedark.runtime.gpu import TilePipeline, inference_scope

        with torch.inference_mode(), inference_scope(self.dtype):
            if self.pipelined:
                TilePipeline(self._forward, self.device, self.dtype, self.layout).run(work)
                return
            for item in work:
                self._run_one(item.tile, item.dest, item.oy, item.ox)
                item.done()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.lean_forward(x)

    def _run_one(self, tile: np.ndarray, dest: np.ndarray, oy: int, ox: int) -> None:
        """One tile, the output done on the host (the CPU's path, and MPS's)."""
        import torch

        x = torch.from_numpy(np.asarray(tile, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        x = x.to(self.device, self.dtype).contiguous(memory_format=self.layout)
        y = self._forward(x)
        del x
        dh, dw = dest.shape[:2]
        core = y[0, :, oy : oy + dh, ox : ox + dw].permute(1, 2, 0)
        if dest.dtype == np.float32:
            out = torch.from_numpy(dest)
            out.copy_(core)  # device -> host and dtype -> float32 in one step
            out.clamp_(0.0, 1.0)
        else:
            write_core(core.to("cpu", torch.float32).numpy(), dest)

    def release(self) -> None:
        release_memory(self.device)


# --------------------------------------------------------------------------- OpenVINO


def openvino_installed() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def _openvino() -> ModuleType:
    mute_telemetry()
    import openvino

    return openvino


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def _ov_core() -> Any:
    """One OpenVINO Core per process (it owns the thread pool and the plugin)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = _openvino().Core()
        return _CORE


def openvino_version() -> str:
    """OpenVINO's release (``2026.4.1``): its conversions and blobs are kept apart per release."""
    return str(_openvino().get_version()).split("-")[0]


def openvino_has_native_bf16() -> bool:
    try:
        caps = _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # any failure of the plugin means "no"
        return False
    return "BF16" in [str(c) for c in caps]


def convert_network(weights: LoadedWeights) -> Any:
    """The network as an OpenVINO model with dynamic H and W (traces the module: seconds)."""
    import torch

    ov = _openvino()
    net = weights.build()
    example = torch.zeros(1, weights.spec.in_channels, 64, 64)
    with torch.no_grad():
        return ov.convert_model(
            net, example_input=example, input=[ov.PartialShape([1, weights.spec.in_channels, -1, -1])]
        )


class OpenVINOBackend:
    """The network converted to OpenVINO, compiled per tile shape, on the CPU.

    Each step is done once and kept: the weights converted to OpenVINO IR
    (:meth:`model`, stored on disk per weights digest when they come from a file),
    the IR compiled for one static tile shape (:meth:`compiled`, the last two shapes
    kept in memory, their blobs on disk by OpenVINO itself), then each tile run on
    a compiled request (:meth:`run_tile`). ``weights`` may be :class:`KnownWeights`,
    whose conversion is cached: their files are read (and torch loaded) only if the
    tensors are needed after all.
    """

    name = "openvino"

    def __init__(
        self, weights: LoadedWeights | KnownWeights, precision: str = "fp32", *, persist: bool | None = None
    ) -> None:
        if precision not in ("fp32", "bf16", "int8"):
            raise DeviceError(f"OpenVINO runs fp32, bf16 or int8 on the CPU, not {precision}")
        if precision == "bf16" and not openvino_has_native_bf16():
            raise DeviceError("bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); use fp32")
        if precision == "int8":
            quantize.check_int8(weights.spec)
        self.weights = weights
        self.spec = weights.spec
        self.precision = precision
        self.persist = weights.kind in ircache.PERSISTENT_KINDS if persist is None else persist
        self.version = openvino_version()
        self._digest = weights.digest if isinstance(weights, KnownWeights) else None
        self._model: Any = None
        self._compiled: OrderedDict[tuple[int, int], tuple[Any, Any]] = OrderedDict()
        self._fallback: TorchBackend | None = None
        # Measured for width 32: the runtime (~120 MB once compiled) and about five copies of the
        # weights (caller's, converted model, compiled and repacked, I/O buffers); four without
        # the caller's, when they were never read.
        copies = 4 if isinstance(weights, KnownWeights) else 5
        self.model_bytes = 120_000_000 + copies * self.spec.parameter_count() * 4
        #: Seconds spent converting / compiling (for the benchmark and docs).
        self.timings: dict[str, float] = {}

    # -- the converted model

    def _folder(self) -> Path:
        return ircache.openvino_folder(self.version)

    def tensors(self) -> LoadedWeights:
        """The weights themselves: read now (and kept) if only their conversion was known."""
        if isinstance(self.weights, KnownWeights):
            from seedark.models.weights import load_located

            self.weights = load_located(self.weights.located)
        return self.weights

    def _weights_digest(self) -> str:
        if self._digest is None:
            self._digest = ircache.weights_digest(self.tensors())
        return self._digest

    def _entry(self, precision: str) -> Path:
        """Where the converted model of ``precision`` is cached: fp32 and bf16 share one, int8 has its own."""
        variant = quantize.RECIPE if precision == "int8" else None
        return ircache.ir_entry(self._folder(), self._weights_digest(), variant)

    def _read_ir(self, entry: Path) -> Any | None:
        return ircache.read_ir(entry, lambda xml: _ov_core().read_model(xml))

    def _convert(self) -> Any:
        if self.precision != "int8":
            return convert_network(self.tensors())
        fp32 = self._read_ir(self._entry("fp32")) if self.persist else None
        return quantize.quantize(convert_network(self.tensors()) if fp32 is None else fp32)

    def model(self) -> Any:
        """The converted model (dynamic H and W): from the cache, else converted (and cached)."""
        if self._model is None:
            self._model = self._load_or_convert()
        return self._model

    def _load_or_convert(self) -> Any:
        start = time.perf_counter()
        entry = self._entry(self.precision)
        model = self._read_ir(entry) if self.persist else None
        if model is not None:
            self.timings["load_ir"] = time.perf_counter() - start
            self._remember()
            return model
        log.info("preparing the OpenVINO engine (once per model)")
        model = self._convert()
        if self.persist and ircache.save_ir(model, entry, _openvino().save_model):
            # Compile what later runs will read, so that OpenVINO's blob cache recognises it then.
            stored = self._read_ir(entry)
            model = model if stored is None else stored
            self._remember()
        release_heap()  # tracing leaves ~100 MB of freed heap that would otherwise add to the frame's peak
        self.timings["convert"] = time.perf_counter() - start
        return model

    def _remember(self) -> None:
        """Let the next run find this conversion by the weights' files, without reading them."""
        if self.persist and not isinstance(self.weights, KnownWeights):
            ircache.remember_weights(self._folder(), self.weights, self._weights_digest())

    # -- compiled shapes

    def compiled(self, height: int, width: int) -> Any:
        """The network compiled for one static ``height x width`` tile (kept for the last 2 shapes)."""
        key = (height, width)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key][0]
        compiled = self._compile(height, width)
        request = compiled.create_infer_request()
        self._compiled[key] = (request, compiled)
        while len(self._compiled) > 2:
            self._compiled.popitem(last=False)
        return request

    def _compile(self, height: int, width: int) -> Any:
        ov = _openvino()
        # The tiles come as H x W x C: OpenVINO transposes them itself, so no NCHW copy of the
        # input exists next to the tile (48 MB for a 12 MP frame).
        ppp = ov.preprocess.PrePostProcessor(self.model().clone())
        ppp.input().tensor().set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        model = ppp.build()
        model.reshape([1, height, width, self.spec.in_channels])
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        blobs = ircache.blob_folder(self._folder())
        if self.persist:
            with contextlib.suppress(OSError):
                blobs.mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(blobs)
        start = time.perf_counter()
        compiled = _ov_core().compile_model(model, "CPU", config)
        self.timings["compile"] = self.timings.get("compile", 0.0) + time.perf_counter() - start
        if self.persist:
            ircache.prune(blobs, ircache.KEEP_COMPILED)
        return compiled

    # -- running

    def bytes_per_pixel(self) -> float:
        # Measured at width 32, static shape, in whole `enhance` runs (docs/performance.md): fp32 589 B/px
        # (AVX2) and up to 610 (AVX-512); bf16 up to 326 (AVX512-BF16). ~960 with dynamic shapes.
        base = 520.0 * self.spec.width / 32 + 64.0
        return base * 0.56 + 16 if self.precision == "bf16" else base + 36

    def torch_fallback(self) -> TorchBackend:
        """PyTorch on the CPU in fp32, for frames too small to be worth compiling for."""
        if self._fallback is None:
            self._fallback = TorchBackend(self.tensors(), CPU, "fp32")
        return self._fallback

    def prepare(self, height: int, width: int) -> None:
        if min(height, width) >= OV_MIN_SIDE:
            self.compiled(height, width)

    def run_tile(self, tile: np.ndarray, dest: np.ndarray, oy: int, ox: int, *, last: bool = False) -> None:
        """See :class:`Backend`; ``last``: the frame's last tile, whose output is stored once the
        network's working memory is given back (the output tensor is the request's own and stays),
        so the frame's output and the activations never peak together."""
        h, w = tile.shape[:2]
        if min(h, w) < OV_MIN_SIDE:
            self.torch_fallback().run_tile(tile, dest, oy, ox)
            return
        request = self.compiled(h, w)
        x = np.ascontiguousarray(tile, dtype=np.float32)[None]  # a packed tile is contiguous already
        request.infer({0: x}, share_inputs=True, share_outputs=True)
        del x
        if last:
            self.release()
        y = request.get_output_tensor(0).data  # 1 x 3 x bh x bw, owned by the request
        dh, dw = dest.shape[:2]
        write_core(y[0, :, oy : oy + dh, ox : ox + dw].transpose(1, 2, 0), dest)

    def run_tiles(self, work: Iterable[TileWork], count: int | None = None) -> None:
        for done, item in enumerate(work, 1):
            self.run_tile(item.tile, item.dest, item.oy, item.ox, last=done == count)
            item.done()

    def release(self) -> None:
        # A compiled model keeps its activation memory (~600 B/px) until told otherwise; the
        # next frame allocates it again in a fraction of a second.
        for _request, compiled in self._compiled.values():
            with contextlib.suppress(AttributeError, RuntimeError):
                compiled.release_memory()


# --------------------------------------------------------------------------- choosing


def requested_backend(name: str | None) -> str:
    spec = (name or "auto").strip().lower()
    if spec == "auto":
        spec = config.engine()
    if spec not in config.ENGINES:
        raise UsageError(f"unknown engine {spec!r}; use {', '.join(config.ENGINES)}")
    return spec


def engine_conflict(engine: str, precision: str, device: str) -> str | None:
    """Why ``engine`` (pytorch, openvino, auto) cannot run ``precision`` on ``device`` (cpu, cuda:0, auto...),
    as far as the names alone tell; None when nothing does. Checked as the options are read, and again
    once ``auto`` is resolved."""
    if precision == "int8" and engine == "pytorch":  # only OpenVINO runs the quantised model
        return "int8 runs on the OpenVINO engine; drop --engine pytorch or use another precision"
    if engine == "openvino" and device.split(":")[0] not in ("cpu", "auto"):
        return f"the OpenVINO engine runs on the CPU, not {device}"
    return None


def backend_name(device: Device | torch.device, precision: str, name: str | None = "auto") -> str:
    """Which back end :func:`select_backend` builds for ``device`` and ``precision`` (a name):
    ``openvino`` or ``pytorch``; an error for a request that cannot run. Builds nothing.

    ``auto``: OpenVINO on the CPU when it is installed and can run the precision,
    otherwise PyTorch. ``openvino`` asked for by name and unusable is an error.
    """
    want = requested_backend(name)
    conflict = engine_conflict(want, precision, str(device))
    if conflict is not None:
        raise DeviceError(conflict)
    if precision == "int8":  # only OpenVINO runs the quantised model
        if not openvino_installed():
            raise DeviceError("int8 needs OpenVINO and NNCF: pip install 'seedark[int8]'")
        return "openvino"
    if want == "openvino":
        if device.type != "cpu":
            raise DeviceError(f"the OpenVINO engine runs on the CPU, not {device}")
        if not openvino_installed():
            raise DeviceError("the OpenVINO engine is not installed (pip install 'seedark[openvino]')")
        return "openvino"
    runs = precision == "fp32" or (precision == "bf16" and openvino_has_native_bf16())
    if want == "auto" and device.type == "cpu" and openvino_installed() and runs:
        return "openvino"
    return "pytorch"


def select_backend(
    weights: LoadedWeights | KnownWeights,
    device: Device | torch.device,
    precision: str | torch.dtype,
    name: str | None = "auto",
) -> Backend:
    """The fastest back end for this device and precision (:func:`backend_name`; docs/performance.md).

    ``precision``: a name, or a torch dtype. OpenVINO chosen by ``auto`` and failing to start
    falls back to PyTorch, with a warning.
    """
    precision = precision if isinstance(precision, str) else precision_name(precision)
    if backend_name(device, precision, name) == "openvino":
        if requested_backend(name) != "auto" or precision == "int8":
            return OpenVINOBackend(weights, precision)
        try:
            return OpenVINOBackend(weights, precision)
        except (ImportError, RuntimeError, DeviceError) as exc:
            log.warning("OpenVINO is installed but unusable (%s); using PyTorch", exc)
    if isinstance(weights, KnownWeights):
        from seedark.models.weights import load_located

        weights = load_located(weights.located)
    return TorchBackend(weights, device, precision)


def start_openvino() -> None:
    """Load OpenVINO and its CPU plugin now (a third of a second), e.g. on a thread while a RAW
    file is decoded, rather than when the engine is first needed."""
    _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def known_conversion(where: WeightsFile) -> KnownWeights | None:
    """The weights in ``where``'s files, if this OpenVINO has converted them unchanged before
    (seedark.runtime.ircache): then nothing needs reading them, nor torch."""
    return ircache.recall_weights(ircache.openvino_folder(openvino_version()), where)
