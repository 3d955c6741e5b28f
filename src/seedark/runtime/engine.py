"""Running the network over a packed frame: engine, precision, tiles and memory.

:class:`Engine` is prepared once (back end chosen, weights on the device in the
chosen precision) and then reused for every frame of a batch. Frames are cut
into tiles of **one fixed shape** (:func:`plan_tiles_fixed`), so a compiled
engine compiles once per frame size and a batch from one camera compiles once.
Tiled output equals whole-frame output (docs/tiling.md).

On the CPU with OpenVINO and a cached conversion, nothing here loads torch: the
device and precision are decided without it (:func:`seedark.runtime.devices.find_device`),
and weights in files are located, not read, when their conversion is known
(:func:`seedark.runtime.backends.known_conversion`).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

from seedark.errors import DeviceError, DeviceMemoryError, UnsupportedSensorError, UsageError
from seedark.frames.packing import PackedFrame
from seedark.frames.prepare import Prepared
from seedark.frames.sensormatch import matched_input
from seedark.io.metadata import CameraMetadata
from seedark.io.pixels import FinishedRows, apply_orientation, sample_dtype
from seedark.models.cache import check_model, model_file, user_model_for
from seedark.models.registry import default_model_for, model_camera, trained_ratios
from seedark.models.tfcheckpoint import check_weights_path
from seedark.models.usermodels import UserModel, camera_label
from seedark.models.weightsfile import WeightsFile, locate_weights
from seedark.progress import ByteProgress, ProgressFn
from seedark.runtime.backends import (
    OV_MIN_PIXELS,
    Backend,
    OpenVINOBackend,
    backend_name,
    engine_conflict,
    known_conversion,
    select_backend,
    start_openvino,
)
from seedark.runtime.devices import (
    CPU,
    Device,
    available_memory,
    find_device,
    out_of_memory_error,
    precision_for,
    release_after_oom,
    surely_cpu,
    torch_dtype,
)
from seedark.runtime.ircache import KnownWeights
from seedark.runtime.tiling import (
    TilePlan,
    TileWork,
    in_row_order,
    iter_tiles,
    parse_tile,
    plan_for_budget,
    plan_tiles_fixed,
)

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

    from seedark.models.weights import LoadedWeights

log = logging.getLogger("seedark")

SENSOR_NAMES = {"bayer": "a Bayer", "xtrans": "an X-Trans"}

#: Share of free memory ``--tile auto`` lets one tile's activations use.
AUTO_MEMORY_SHARE = 0.5
#: ``--tile auto`` on the CPU keeps the whole process under this peak: the 1.5 GB goal, less 50 MB
#: (the estimate below exceeded every peak measured, by 7-60 MB; docs/performance.md).
AUTO_PEAK_TARGET = 1_450_000_000
#: Tiles never get less than this under ``auto`` (memory allowing): smaller tiles are mostly overlap
#: (+73 % work at 400 MB, +115 % at 250 MB), so a frame too big for the target costs memory, not hours.
AUTO_MIN_BUDGET = 400_000_000
#: Resident size of ``seedark enhance`` before the model: Python, numpy, torch, rawpy (measured 235-265 MB).
PROCESS_BYTES = 260_000_000
#: The same without torch (the cached OpenVINO path): Python, numpy, rawpy, OpenVINO (measured 52-56 MB).
PROCESS_BYTES_LEAN = 60_000_000


def process_bytes() -> int:
    """What the process holds before the model: torch's libraries alone are ~200 MB of it."""
    return PROCESS_BYTES if "torch" in sys.modules else PROCESS_BYTES_LEAN


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class EngineInfo:
    device: str
    precision: str
    backend: str


@dataclass(frozen=True)
class Target:
    """A device and a precision it can run: ``auto|cpu|cuda[:N]|mps`` and ``auto|fp32|bf16|fp16|int8``
    resolved (on the CPU without torch)."""

    device: Device
    precision: str

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto") -> Target:
        where = find_device(device)
        return cls(where, precision_for(precision, where))

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.precision)


class LoadKwargs(TypedDict, total=False):
    """Keywords that say where the network runs (:func:`load_engine`); defaults: :class:`EngineOptions`'s."""

    model: str | None
    device: str
    precision: str
    backend: str
    download_progress: ByteProgress | None


class EngineKwargs(LoadKwargs, total=False):
    """The engine keywords of the public functions (``enhance(path, device="cpu", tile=512)``), declared once."""

    weights: str | os.PathLike[str] | LoadedWeights | WeightsFile | None
    tile: str | int | None
    progress: ProgressFn | None
    match_sensor: bool


@dataclass(frozen=True)
class EngineOptions:
    """Which network runs, where and how: the options every command that enhances shares.

    One object instead of the same keywords in every signature (``--weights``, ``--model``,
    ``--device``, ``--precision``, ``--engine`` → ``backend``, ``--tile``, ``--no-match-sensor``
    → ``match_sensor``, and the progress callbacks). Build it with :meth:`from_kwargs`, which
    checks what can be checked without torch or the file: ``tile`` is stored parsed (None =
    auto, 0 = whole frame, N = core side). ``match_sensor``: map each file's colours to the
    model's camera (seedark.frames.sensormatch; docs/cameras.md).
    """

    weights: str | os.PathLike[str] | LoadedWeights | WeightsFile | None = None
    model: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    tile: int | None = None
    progress: ProgressFn | None = None
    download_progress: ByteProgress | None = None
    match_sensor: bool = True

    @classmethod
    def from_kwargs(cls, **kwargs: Unpack[EngineKwargs]) -> EngineOptions:
        """The options from the public keywords (an unknown keyword is a TypeError, as in any call).

        What the names alone show cannot work is reported here, before any file is looked at
        (an output that exists included): a ``model`` the cache does not know (registered or
        imported), a ``weights`` path that is not there or is a checkpoint's ``.meta`` file, an
        engine that cannot run the precision or device asked for by name.
        """
        if kwargs.get("weights") is not None and kwargs.get("model") is not None:
            raise UsageError("give either --weights or --model, not both")
        if kwargs.get("model") is not None:
            check_model(cast(str, kwargs["model"]))
        weights = kwargs.get("weights")
        if isinstance(weights, (str, os.PathLike)):
            check_weights_path(Path(weights))
        given = cast("dict[str, Any]", dict(kwargs))
        given["tile"] = parse_tile(given.get("tile", "auto"))
        options = cls(**given)
        conflict = engine_conflict(options.backend, options.precision, options.device)
        if conflict is not None:
            raise DeviceError(conflict)
        return options

    @property
    def picks_model(self) -> bool:
        """Neither weights nor a model given: the model is the one made for the file's sensor."""
        return self.weights is None and self.model is None

    def with_weights_loaded(self) -> EngineOptions:
        """Weights given as a path (or located) read now: a cluster's workers get them read."""
        if isinstance(self.weights, (str, os.PathLike, WeightsFile)):
            from seedark.models.weights import load_located

            where = self.weights if isinstance(self.weights, WeightsFile) else locate_weights(self.weights)
            return replace(self, weights=load_located(where))
        return self

    def with_weights_located(self) -> EngineOptions:
        """Weights given as a path found now (a missing file is reported before any work), read
        only if their conversion is not known (:func:`engine_for`)."""
        if isinstance(self.weights, (str, os.PathLike)):
            return replace(self, weights=locate_weights(self.weights))
        return self


class Engine:
    """A SID network ready to run on one device in one precision.

    ``backend``: ``auto`` (OpenVINO on the CPU when installed, else PyTorch;
    ``$SEEDARK_ENGINE`` overrides), ``pytorch`` or ``openvino``.
    """

    def __init__(
        self,
        weights: LoadedWeights | KnownWeights,
        *,
        device: str = "auto",
        precision: str = "auto",
        backend: str = "auto",
    ) -> None:
        self._setup(weights, Target.resolve(device, precision), backend)

    @classmethod
    def on(cls, weights: LoadedWeights | KnownWeights, target: Target, backend: str = "auto") -> Engine:
        """An engine on a device and precision resolved already (:func:`engine_for` resolves them
        before loading the weights, so that a missing GPU is reported before any download)."""
        engine = cls.__new__(cls)
        engine._setup(weights, target, backend)
        return engine

    def _setup(self, weights: LoadedWeights | KnownWeights, target: Target, backend: str) -> None:
        self.device = target.device
        self.precision = target.precision
        self.spec = weights.spec
        self.source = weights.source
        #: The camera the network was trained on (its weights say which), for sensor matching.
        self.camera = model_camera(weights.metadata)
        #: What the log has said about sensor matching: each message once per engine, not per file.
        self.said: set[str] = set()
        #: The registry's name for these weights (a cached model's), None for weights of unknown origin.
        self.model: str | None = weights.metadata.get("seedark_model")
        #: Bytes a tile's activations may take at most, learnt from an out-of-memory error
        #: (:meth:`run`): every later frame plans within it.
        self.memory_cap: float | None = None
        try:
            self.backend: Backend = select_backend(weights, self.device, self.precision, backend)
        except out_of_memory_error() as exc:
            log.debug("out of memory loading the model on %s: %s", self.device, exc)
        else:
            self.info = EngineInfo(str(self.device), self.backend.precision, self.backend.name)
            return
        release_after_oom(self.device)  # outside the handler: the traceback no longer holds the weights
        raise DeviceMemoryError(
            f"out of memory on {self.device} loading the model: free memory on the device, or use --device cpu"
        )

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
            held = process_bytes() + self.backend.model_bytes + height * width * per_pixel + reserve
            budget = min(budget, max(AUTO_PEAK_TARGET - held, AUTO_MIN_BUDGET))
        if self.memory_cap is not None:
            budget = min(budget, self.memory_cap)
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
            plan = plan_tiles_fixed(height, width, tile)
            if self.memory_cap is None or self._tile_bytes(plan) <= self.memory_cap:
                return plan
            # this --tile ran out of memory on an earlier frame: the tiles that ran then, at most
            return plan_for_budget(height, width, self.memory_cap, self.bytes_per_pixel)
        budget = self.tile_budget(height, width, bits, held_input, reserve)
        plan = plan_for_budget(height, width, budget, self.bytes_per_pixel)
        if self._tile_bytes(plan) > budget:
            log.warning(
                "no tiles fit the %.0f MB free on %s: the smallest (%dx%d packed px) do %.1fx the frame's work",
                budget / 1e6,
                self.device,
                *plan.extent,
                plan.pixels / (height * width),
            )
        return plan

    def _tile_bytes(self, plan: TilePlan) -> float:
        """What one tile of ``plan`` takes at the peak (:attr:`bytes_per_pixel` per packed pixel)."""
        return plan.extent[0] * plan.extent[1] * self.bytes_per_pixel

    def _smaller_plan(self, plan: TilePlan, height: int, width: int) -> TilePlan:
        """After ``plan`` ran out of memory: the plan for half its tile's memory, a limit every later
        frame keeps (:attr:`memory_cap`); a :class:`DeviceMemoryError` when no tiles are smaller."""
        budget = self._tile_bytes(plan) / 2
        smaller = plan_for_budget(height, width, budget, self.bytes_per_pixel)
        if self._tile_bytes(smaller) >= self._tile_bytes(plan):
            raise DeviceMemoryError(
                f"out of memory on {self.device} even with the smallest tiles ({plan.extent[0]}x{plan.extent[1]} "
                "packed px): free memory on the device, or use --device cpu"
            )
        self.memory_cap = budget
        log.warning(
            "out of memory on %s with tiles of %dx%d packed px: trying again with %d tile(s) of %dx%d",
            self.device,
            *plan.extent,
            len(smaller.tiles),
            *smaller.extent,
        )
        return smaller

    def _backend_for(self, height: int, width: int) -> Backend:
        # int8 was asked for by name: small frames get it too (its model is compiled anyway).
        small = height * width < OV_MIN_PIXELS and self.backend.precision != "int8"
        if isinstance(self.backend, OpenVINOBackend) and small:
            fallback = self.backend.torch_fallback()
            # the status line named OpenVINO: say once what runs instead (and for each frame with -v)
            level = logging.DEBUG if "fallback" in self.said else logging.INFO
            self.said.add("fallback")
            log.log(
                level,
                "a %dx%d frame is too small to be worth compiling for OpenVINO: running on %s (%s, %s) instead",
                width * self.spec.block,
                height * self.spec.block,
                self.info.device,
                fallback.precision,
                fallback.name,
            )
            return fallback
        return self.backend

    def run(
        self,
        packed: np.ndarray | PackedFrame,
        *,
        tile: int | None = None,
        progress: ProgressFn | None = None,
        bits: int | None = None,
        reserve: int = 0,
        rows: FinishedRows | None = None,
    ) -> np.ndarray:
        """Network output for an amplified H x W x C packed array: (bH) x (bW) x 3.

        The contract: ``packed`` is float32 (any strides, or a :class:`PackedFrame`
        that packs each tile's window when it is needed), already amplified and
        clipped to [0, 1], H and W of any size (no padding is needed or added). The
        output is clipped to [0, 1]: float32 when ``bits`` is None, else uint8/uint16
        samples quantised tile by tile exactly as ``seedark.io.image.quantise`` would
        quantise the float output (a 60 MP frame then holds 180 or 360 MB of output
        instead of 720 MB). ``tile``: None = auto, 0 = whole frame, N = core side in
        packed pixels. ``reserve``: bytes held elsewhere that ``auto`` leaves free.
        ``rows``: told of the output as soon as it exists and of each tile's core once it
        is in place, the tiles run in the order that finishes its rows first, so another
        thread can write them meanwhile (the CPU only: elsewhere a tile may run again).

        When the device runs out of memory, what the failed tiles held is freed and the
        frame runs again in tiles of half the memory (:meth:`_smaller_plan`; later
        frames keep that limit); at the smallest tiles it is a :class:`DeviceMemoryError`.
        """
        if packed.ndim != 3 or packed.shape[2] != self.spec.in_channels:
            raise ValueError(f"expected H x W x {self.spec.in_channels} input, got {packed.shape}")
        if rows is not None and self.device.type != "cpu":
            raise ValueError(f"rows are told of finished tiles on the CPU only, not on {self.device}")
        dtype = np.float32 if bits is None else sample_dtype(bits)
        h, w, _ = packed.shape
        b = self.spec.block
        plan = self.plan(h, w, tile, bits, held_input=not isinstance(packed, PackedFrame), reserve=reserve)
        backend = self._backend_for(h, w)
        out = np.empty((h * b, w * b, 3), dtype=dtype)
        if rows is not None:
            plan = replace(plan, tiles=in_row_order(plan.tiles, *rows.line_order()))
            rows.begin(out)
        try:
            while not self._run_plan(backend, plan, packed, out, progress, rows):
                plan = self._smaller_plan(plan, h, w)
        finally:
            backend.release()
        return out

    def _run_plan(
        self,
        backend: Backend,
        plan: TilePlan,
        packed: np.ndarray | PackedFrame,
        out: np.ndarray,
        progress: ProgressFn | None,
        rows: FinishedRows | None = None,
    ) -> bool:
        """Every tile of ``plan`` into ``out``; False when the device ran out of memory (then freed again).

        The back end prepares the tiles' shape (OpenVINO compiles it) on a thread while the
        first tile is packed."""
        h, w, _ = packed.shape
        b = self.spec.block
        log.debug(
            "%s: %d tile(s) of %dx%d packed px for a %dx%d frame (%.0f%% extra work for the overlaps)",
            backend.name,
            len(plan.tiles),
            *plan.extent,
            h,
            w,
            100 * (plan.pixels / (h * w) - 1),
        )
        work = (
            TileWork(
                packed[t.y0 : t.y1, t.x0 : t.x1],
                out[t.cy0 * b : t.cy1 * b, t.cx0 * b : t.cx1 * b],
                (t.cy0 - t.y0) * b,
                (t.cx0 - t.x0) * b,
                None if rows is None else partial(rows.filled, t.cy0 * b, t.cy1 * b, t.cx0 * b, t.cx1 * b),
            )
            for t in iter_tiles(plan.tiles, progress)
        )
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="seedark-prepare") as pool:
                prepared = pool.submit(backend.prepare, *plan.extent)
                first = next(work)
                prepared.result()
            backend.run_tiles(itertools.chain([first], work), len(plan.tiles))
        except out_of_memory_error() as exc:
            log.debug("out of memory on %s: %s", self.device, exc)
        else:
            return True
        release_after_oom(self.device)  # outside the handler: the traceback no longer holds the tile's tensors
        return False


def _pick(
    sensor: str | None, options: EngineOptions, camera: CameraMetadata | None
) -> tuple[str | None, UserModel | None]:
    """(the cached model ``options`` run, the record of your own model when it is one); the model
    None: the default model, or weights given as such.

    With neither weights nor a model: the model ``seedark finetune`` made for the file's
    ``camera`` where there is one (seedark.models.cache.user_model_for), else the one made for
    ``sensor``'s kind (sony, fuji)."""
    if not options.picks_model or sensor is None:
        return options.model, None
    mine = user_model_for(camera.make, camera.model, sensor) if camera is not None else None
    return (default_model_for(sensor), None) if mine is None else (mine.name, mine)


def engine_for(sensor: str | None, options: EngineOptions, camera: CameraMetadata | None = None) -> Engine:
    """Prepare the network once, as ``options`` say; with neither weights nor a model, the
    model made for the file's ``camera``, else for ``sensor``'s kind (None: the default model).

    The device and precision are resolved first, so a missing GPU is reported
    before anything is downloaded.
    """
    return _engine(options, *_pick(sensor, options, camera))


def _engine(options: EngineOptions, model: str | None, mine: UserModel | None) -> Engine:
    target = Target.resolve(options.device, options.precision)
    weights = _weights_for(options, model, target)
    if mine is not None:
        log.info("using your model %s for the %s (from %s; --model overrides)", model, mine.camera, mine.base)
    engine = Engine.on(weights, target, options.backend)
    log.info("running on %s (%s, %s)", engine.info.device, engine.info.precision, engine.info.backend)
    return engine


def warm_up(options: EngineOptions) -> None:
    """Start what the engine will need whatever the file: OpenVINO and its CPU plugin, when the
    engine will be OpenVINO on the CPU (known without torch). Meant for a thread while the RAW
    file is decoded; it says nothing and raises nothing (the engine reports any problem itself)."""
    if not surely_cpu(options.device):
        return
    try:
        if backend_name(CPU, precision_for(options.precision, CPU), options.backend) == "openvino":
            start_openvino()
    except Exception as exc:  # reported again, and properly, when the engine is made
        log.debug("warming the engine up failed: %s", exc)


def _weights_for(options: EngineOptions, model: str | None, target: Target) -> LoadedWeights | KnownWeights:
    """The weights ``options`` name (else cached ``model``): located first, and read only when their
    OpenVINO conversion is not known already (the cached path reads no weights and imports no torch)."""
    given = options.weights
    if given is not None and not isinstance(given, (str, os.PathLike, WeightsFile)):
        return given  # read already
    if given is None:
        where = model_file(model, progress=options.download_progress)
    else:
        where = given if isinstance(given, WeightsFile) else locate_weights(given)
    if backend_name(target.device, target.precision, options.backend) == "openvino":
        known = known_conversion(where)
        if known is not None:
            log.debug("weights: %s unchanged since converted; not read again", where.source)
            return known
    from seedark.models.weights import load_located

    return load_located(where)


class EngineCache:
    """One engine per model (the model of each sensor kind, and of each camera that has one of
    its own), each prepared on first use from the same options and kept: what a batch and each
    cluster worker hold. The weights, when given as a path, are found once for all of them (and
    read by each engine whose conversion is not known)."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options.with_weights_located()
        self._engines: dict[tuple[str | None, str | None], Engine] = {}

    def __len__(self) -> int:
        return len(self._engines)

    def get(self, sensor: str | None, camera: CameraMetadata | None = None) -> Engine:
        """The engine for a file of ``sensor``'s kind from ``camera`` (None: the default model's),
        prepared now if it is the first for its model."""
        key = (sensor, _pick(sensor, self.options, camera)[0])
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = engine_for(sensor, self.options, camera)
        return engine


def load_engine(
    weights: str | os.PathLike[str] | LoadedWeights | WeightsFile | None = None, **options: Unpack[LoadKwargs]
) -> Engine:
    """Prepare the network once: from ``weights`` (a path or loaded weights) or a cached ``model``.

    The device and precision are checked first, so a missing GPU is reported
    before anything is downloaded.
    """
    return engine_for(None, EngineOptions.from_kwargs(weights=weights, **options))


def check_fit(engine: Engine, sensor: str, path: Path) -> None:
    if engine.spec.packing != sensor:
        want = SENSOR_NAMES.get(engine.spec.packing, "another")
        hint = f" (use --model {default_model_for(sensor)})"
        raise UnsupportedSensorError(
            f"{SENSOR_NAMES[sensor]} sensor, but the model takes {want} sensor's input{hint}", path
        )


def matched_for(prepared: Prepared, engine: Engine) -> PackedFrame:
    """The frame's input with its colours matched to the camera ``engine``'s network was trained on
    (seedark.frames.sensormatch): unchanged for that camera's own files and where a matrix is unknown."""
    cam = prepared.camera
    return matched_input(
        prepared.packed,
        prepared.color_matrix,
        engine.camera,
        camera=camera_label(cam.make, cam.model),
        model_name=engine.camera.name if engine.camera is not None else str(engine.source),
        said=engine.said,
    )


def warn_untrained_ratio(prepared: Prepared, model: str | None) -> None:
    """A warning when the ratio is outside those registry model ``model`` was trained on: the
    network extrapolates there, and the result is worth a look (docs/exposure.md)."""
    trained = trained_ratios(model)
    if trained is not None and not trained[0] <= prepared.ratio <= trained[1]:
        log.warning(
            "%s: ratio x%.1f is outside x%g-x%g, the range the %s model was trained on; "
            "the result may be too dark, too bright or smeared",
            prepared.path.name,
            prepared.ratio,
            *trained,
            model,
        )


def infer(
    prepared: Prepared,
    engine: Engine,
    *,
    tile: int | None = None,
    progress: ProgressFn | None = None,
    bits: int | None = None,
    reserve: int = 0,
    match_sensor: bool = True,
    rows: FinishedRows | None = None,
) -> np.ndarray:
    """Network output for a prepared frame, cropped and oriented: H x W x 3 in [0, 1].

    float32 by default; with ``bits`` (8 or 16), the samples a file of that depth
    holds, quantised tile by tile, so the float image never exists in full. The
    result is a view (orientation is applied by strides, not copied). ``tile``: as
    :func:`parse_tile` returns it (None = auto). ``reserve``: bytes the caller holds
    elsewhere, which ``--tile auto`` leaves free. ``match_sensor``: the file's colours are
    mapped to the model's camera first (:func:`matched_for`). ``rows``: told of the output
    and of its rows as they are computed (:meth:`Engine.run`), for a writer on another thread.
    """
    check_fit(engine, prepared.sensor, prepared.path)
    if prepared.auto_ratio:
        log.info("%s: auto ratio x%.1f", prepared.path.name, prepared.ratio)
    packed = matched_for(prepared, engine) if match_sensor else prepared.packed
    warn_untrained_ratio(prepared, engine.model)
    try:
        image = engine.run(packed, tile=tile, progress=progress, bits=bits, reserve=reserve, rows=rows)
    except DeviceError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(exc.reason, prepared.path) from None  # the file it happened on, like every error
    image = image[: prepared.height, : prepared.width]  # odd Bayer sizes were extended by one row/column
    return apply_orientation(image, prepared.flip)


__all__ = [
    "AUTO_MEMORY_SHARE",
    "AUTO_PEAK_TARGET",
    "Engine",
    "EngineCache",
    "EngineInfo",
    "EngineKwargs",
    "EngineOptions",
    "LoadKwargs",
    "Target",
    "check_fit",
    "engine_for",
    "infer",
    "load_engine",
    "matched_for",
    "parse_tile",
    "warm_up",
]
