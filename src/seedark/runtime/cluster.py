"""Files spread over a Ray cluster: a pool of actors, each with its own engines, fed one file at a time.

``seedark batch`` and ``seedark eval`` share this machinery and pass in what one file
is (a *job*: a picklable function called in the worker as ``job(context, item)``), so
neither imports the other. Ray is imported only here and only when a cluster is asked
for, so ``import seedark`` and ``seedark --help`` never load it (``pip install
'seedark[ray]'``).

What the pool promises (docs/cluster.md):

* the weights travel once: read by the driver and put into Ray's object store, which
  each node fetches once for all its workers (a model picked per file's sensor is read
  from each node's model cache instead);
* each worker builds an engine once per sensor kind and keeps it for every file;
* a worker that dies (killed, out of memory, LibRaw crashing on a hostile file) costs
  only its file, which is given once more to a fresh worker; a second death makes it
  failed (:class:`WorkerLost`), and no other file is touched;
* Ctrl-C asks every worker to stop at the next tile or before writing, waits for the
  files in hand (:data:`STOP_GRACE_SECONDS` at most), then ends the workers and, if the
  driver started Ray, Ray itself.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from seedark import config
from seedark.errors import DeviceError, UsageError
from seedark.io.metadata import CameraMetadata
from seedark.models.cache import load_model
from seedark.runtime.devices import Device, auto_precision_name
from seedark.runtime.engine import Engine, EngineCache, EngineOptions

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger("seedark")

Item = TypeVar("Item")
Result = TypeVar("Result")

INSTALL_HINT = "running on a Ray cluster needs Ray: pip install 'seedark[ray]'"
#: How often the driver looks up from waiting, so that Ctrl-C is handled within this many seconds.
POLL_SECONDS = 0.5
#: After Ctrl-C, how long the files in hand may take to stop (a tile, a write); a worker stuck longer
#: (in a decoder, say) is ended, and the caller sweeps the temporary file it may leave.
STOP_GRACE_SECONDS = 20.0
#: Workers that share one GPU at most (``--workers`` beyond GPUs x this are not started): each runs its
#: own network on its own tiles, and more of them only queue on the GPU and divide its memory.
MAX_WORKERS_PER_GPU = 4


@dataclass(frozen=True)
class Cluster:
    """Where to run: ``address`` None means ``$RAY_ADDRESS``, else a Ray instance started here.

    ``workers``: how many actors (default: one per CPU the cluster has).
    """

    address: str | None = None
    workers: int | None = None


def parse_cluster(value: str | None, workers: int | None = None) -> Cluster | None:
    """``--cluster``: None (run here), ``ray`` or ``ray://HOST:PORT`` (Ray Client)."""
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    if value is None:
        if workers is not None:
            raise UsageError("--workers needs --cluster")
        return None
    text = value.strip()
    if text.lower() == "ray":
        return Cluster(None, workers)
    host = text[len("ray://") :] if text.lower().startswith("ray://") else ""
    if not host or "/" in host:
        raise UsageError(f"cluster must be ray or ray://HOST:PORT, got {value!r}")
    return Cluster(text, workers)


class Stopped(Exception):
    """Raised inside a job when the driver was interrupted: the file is left for the next run."""


class WorkerLost(Exception):
    """A file whose worker died twice while converting it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class WorkerContext:
    """What a job sees in its worker: the engines (one per sensor kind, built on first use),
    a stop flag set by the driver, and ``state`` for a job's own per-worker caches."""

    options: EngineOptions
    engines: EngineCache = field(init=False)
    stopping: threading.Event = field(default_factory=threading.Event)
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engines = EngineCache(self.options)

    def engine(self, sensor: str | None, camera: CameraMetadata | None = None) -> Engine:
        return self.engines.get(sensor, camera)

    def check(self) -> None:
        if self.stopping.is_set():
            raise Stopped

    def progress(self, done: int, total: int) -> None:
        """A tile callback for :func:`~seedark.runtime.engine.infer`: stops between tiles."""
        self.check()


Job = Callable[[WorkerContext, Item], Result]


class SeedarkWorker:
    """The actor (made remote by :class:`ClusterPool`). Two threads, so that ``stop`` reaches a busy ``run``."""

    def __init__(self, options: EngineOptions) -> None:
        self.context = WorkerContext(options)

    def run(self, job: Job[Any, Any], item: Any) -> Any:
        return job(self.context, item)

    def stop(self) -> None:
        self.context.stopping.set()


@dataclass(frozen=True)
class Placement:
    """What the driver asks Ray for: ``workers`` actors of ``num_cpus`` CPUs and ``num_gpus``
    GPUs each, running on ``device`` in ``precision`` (both resolved here, on the driver)."""

    workers: int
    num_cpus: float
    num_gpus: float
    device: str
    precision: str

    def describe(self) -> str:
        gpus = "" if not self.num_gpus else f", {self.num_gpus:g} GPU each"
        return f"{self.workers} worker(s) on {self.device.split(':')[0]} ({self.precision}{gpus})"


def place_workers(
    device: str, precision: str, workers: int | None, total: dict[str, float], free: dict[str, float]
) -> Placement:
    """The actors for ``--device``, ``--precision`` and ``--workers`` on a cluster with ``total``
    resources of which ``free`` are free now (``ray.cluster_resources()``, ``ray.available_resources()``).

    The device is resolved here, since an actor is given no GPU unless it asks for one (Ray then
    hides every GPU from it): ``auto`` is the GPUs when the cluster has any, else the CPUs. A
    GPU worker sees its own GPU as ``cuda:0`` (Ray sets ``CUDA_VISIBLE_DEVICES``), whatever
    ``cuda:N`` was asked for; more workers than GPUs share them (a fraction of a GPU each).
    Workers are capped at what the free resources can place, since an actor Ray cannot
    place never starts and its files would wait for ever.
    """
    spec = (device or "auto").strip().lower()
    gpus = int(total.get("GPU", 0))
    if spec == "auto":
        spec = "cuda" if gpus else "cpu"
    if spec == "mps":
        raise UsageError("--device mps does not work with --cluster: Ray gives its workers CPUs and CUDA GPUs")
    if spec != "cpu" and not re.fullmatch(r"cuda(:\d+)?", spec):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    on_gpu = spec != "cpu"
    if on_gpu and not gpus:
        raise DeviceError(f"device {device!r} requested but the Ray cluster has no GPU")
    if on_gpu and spec not in ("cuda", "cuda:0"):
        log.info("on a cluster each worker runs on the GPU Ray gives it (seen as cuda:0), not %s", spec)
    wanted = workers or (gpus if on_gpu else max(int(total.get("CPU", 1)), 1))
    per_gpu = min(MAX_WORKERS_PER_GPU, math.ceil(wanted / gpus)) if on_gpu else 0
    placeable = int(free.get("CPU", 0))
    if on_gpu:
        placeable = min(placeable, int(free.get("GPU", 0)) * per_gpu)
    count = max(1, min(wanted, placeable))
    if count < wanted:
        log.warning(
            "%d worker(s) asked for, but the cluster can place %d now (%g CPUs, %g GPUs free): running %d",
            wanted,
            count,
            free.get("CPU", 0),
            free.get("GPU", 0),
            count,
        )
    target = "cuda" if on_gpu else "cpu"
    return Placement(
        count, 1, 1 / per_gpu if on_gpu else 0, "cuda:0" if on_gpu else "cpu", _precision(precision, target)
    )


def _precision(precision: str, device_type: str) -> str:
    """``--precision`` for the workers: on GPUs resolved here (``auto`` is fp32 on every GPU);
    on CPUs ``auto`` stays for each worker to resolve, since it means bf16 on a node whose CPU
    has native bf16 and fp32 on the others."""
    spec = (precision or "auto").strip().lower()
    if spec == "auto":
        spec = config.precision()
    if spec not in config.PRECISIONS:
        raise UsageError(f"unknown precision {spec!r}; use {', '.join(config.PRECISIONS)}")
    if device_type == "cuda" and spec == "auto":
        return auto_precision_name(Device("cuda"))
    if device_type == "cuda" and spec == "int8":
        raise DeviceError("int8 runs on the CPU (OpenVINO), not on a GPU; use fp32, bf16 or fp16 there")
    return spec


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    return ray


def shipped(options: EngineOptions) -> EngineOptions:
    """The options as the workers get them: the weights read here once (so they travel through
    the object store), no callbacks (they belong to the driver's display)."""
    options = replace(options.with_weights_loaded(), progress=None, download_progress=None)
    if options.model is not None:
        options = replace(options, weights=load_model(options.model), model=None)
    return options


@contextlib.contextmanager
def _signals_kept(ray: ModuleType) -> Iterator[None]:
    """ray.init installs its own SIGTERM/SIGINT handlers; the command line's (SIGTERM as Ctrl-C) stay.

    Ray's SIGTERM handler (``sys.exit(15)``: exit 15, without a word) is not even installed
    while ray.init connects, which can take long, so SIGTERM then stops the command as it
    always does.
    """
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    setter = getattr(utils, "set_sigterm_handler", None)
    if setter is not None:
        utils.set_sigterm_handler = lambda handler: None  # type: ignore[union-attr]
    try:
        yield
    finally:
        if setter is not None:
            utils.set_sigterm_handler = setter  # type: ignore[union-attr]
        if threading.current_thread() is threading.main_thread():
            for signum, handler in kept.items():
                if handler is not None:
                    signal.signal(signum, handler)


def _head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for Ray's other forms (``auto``)."""
    text = address.strip()
    if text.lower().startswith("ray://"):
        text = text[len("ray://") :]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in text:
        return None
    return host.strip("[]"), int(port)


def wait_for_head(address: str, timeout: float) -> None:
    """Return once something answers at ``address``; UsageError after ``timeout`` seconds.

    Ray itself retries a dead address for about 14 minutes inside calls that Ctrl-C cannot
    interrupt; this wait is bounded (``SEEDARK_RAY_CONNECT_TIMEOUT``) and stops at Ctrl-C.
    """
    endpoint = _head_endpoint(address)
    if endpoint is None:
        return
    log.debug("connecting to the Ray cluster at %s (waiting %g s at most)", address, timeout)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection(endpoint, timeout=min(max(left, 0.1), 5.0)):
                return
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise UsageError(
                f"cannot connect to the Ray cluster at {address}: no answer within {timeout:g} s ({why}); "
                f"is its head running? ({config.RAY_CONNECT_TIMEOUT} sets how long to wait)"
            )
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def _log_ray_message(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    for line in data.get("lines", ()):
        log.debug("ray (%s): %s", data.get("pid", "?"), line)


@contextlib.contextmanager
def _ray_messages_logged(ray: ModuleType) -> Iterator[None]:
    """Ray's driver prints the cluster's error messages (a worker died...) on stdout, where the
    command line writes its paths and JSON: they go to the debug log instead (``-v`` shows them)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:  # another Ray: leave it be
        yield
        return
    worker.print_to_stdstream = _log_ray_message  # type: ignore[union-attr]
    try:
        yield
    finally:
        worker.print_to_stdstream = printer  # type: ignore[union-attr]


def _shut_down(ray: ModuleType) -> None:
    """After a failed ray.init, which can leave Ray half set up: the next attempt must start clean."""
    with contextlib.suppress(Exception):
        ray.shutdown()


@contextlib.contextmanager
def connected(cluster: Cluster) -> Iterator[ModuleType]:
    """Ray, connected (or started here, and then stopped at the end); an existing connection is reused."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    settings: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = cluster.address or os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        wait_for_head(address, config.ray_connect_timeout())
    else:
        # started here: as many CPUs as workers asked for, the dashboard is not needed
        settings.update(include_dashboard=False, num_cpus=max(os.cpu_count() or 1, cluster.workers or 1))
    try:
        with _signals_kept(ray):
            ray.init(address=cluster.address, **settings)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        _shut_down(ray)
        raise UsageError(f"cannot connect to the Ray cluster at {address or 'a local Ray instance'}: {exc}") from exc
    except BaseException:  # Ctrl-C, SIGTERM
        _shut_down(ray)
        raise
    try:
        with _ray_messages_logged(ray):
            yield ray
    finally:
        ray.shutdown()


class ClusterPool(Generic[Item, Result]):
    """Actors that run ``job`` on items, one item per actor at a time, in the order given.

    :meth:`run` yields ``(item, result or exception)`` as files finish: a job's own
    exception, or :class:`WorkerLost` after the second death.
    """

    def __init__(self, ray: ModuleType, options: EngineOptions, job: Job[Item, Result], workers: int | None) -> None:
        self.ray = ray
        self.job = job
        placement = place_workers(
            options.device, options.precision, workers, ray.cluster_resources(), ray.available_resources()
        )
        log.info("cluster: %s", placement.describe())
        self.placement = placement
        options = replace(options, device=placement.device, precision=placement.precision)
        self.options = ray.put(options)  # once; each node fetches it once for all its workers
        self.remote = ray.remote(num_cpus=placement.num_cpus, num_gpus=placement.num_gpus, max_concurrency=2)(
            SeedarkWorker
        )
        self.actors: list[Any] = [self.remote.remote(self.options) for _ in range(placement.workers)]
        self.running: dict[Any, tuple[int, Item, int]] = {}
        self.interrupted = False
        self.forced = False
        #: the Ctrl-C (or SIGTERM) that stopped :meth:`run`, for a caller that raises it once the workers stopped
        self.interrupt: KeyboardInterrupt | None = None
        self.stopped_at: float | None = None

    def run(self, items: Sequence[Item]) -> Iterator[tuple[Item, Result | BaseException]]:
        queue: collections.deque[tuple[Item, int]] = collections.deque((item, 1) for item in items)
        idle = list(range(len(self.actors)))
        while queue or self.running:
            while queue and idle and not self.interrupted:
                slot = idle.pop(0)
                item, attempt = queue.popleft()
                self.running[self.actors[slot].run.remote(self.job, item)] = (slot, item, attempt)
            if not self.running or self._past_grace():
                return
            try:
                ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=POLL_SECONDS)
            except KeyboardInterrupt as exc:
                if self.interrupted:  # pressed again: the files in hand are not waited for
                    self.forced = True
                    raise
                self.interrupt = exc
                self.stop()
                continue
            for ref in ready:
                slot, item, attempt = self.running.pop(ref)
                idle.append(slot)
                outcome = self._outcome(ref, slot, item, attempt)
                if outcome is None:
                    queue.appendleft((item, attempt + 1))
                else:
                    yield item, outcome

    def _outcome(self, ref: Any, slot: int, item: Item, attempt: int) -> Result | BaseException | None:
        """The result, or the exception; None: the worker died, the item goes again to a fresh one."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)  # type: ignore[no-any-return]
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as exc:
            self.actors[slot] = self.remote.remote(self.options)
            if self.interrupted:
                return Stopped()
            if attempt >= 2:
                return WorkerLost(f"the worker died on this file twice ({type(exc).__name__})")
            log.warning("a worker died; its file goes to another worker")
            return None
        except exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return cause

    def _past_grace(self) -> bool:
        """Whether the files in hand have had their time to stop (they are then ended by :meth:`close`)."""
        if self.stopped_at is None or time.monotonic() - self.stopped_at < STOP_GRACE_SECONDS:
            return False
        self.forced = True
        return True

    def stop(self) -> None:
        """Ctrl-C: no new files; the files in hand stop at their next tile or before writing."""
        self.interrupted = True
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        for actor in self.actors:
            with contextlib.suppress(Exception):
                actor.stop.remote()

    def close(self) -> None:
        """End the workers; a second Ctrl-C while the files in hand finish ends them at once."""
        try:
            if self.running and not self.forced:
                self.stop()
                self.ray.wait(list(self.running), num_returns=len(self.running), timeout=STOP_GRACE_SECONDS)
        except KeyboardInterrupt:
            pass
        finally:
            for actor in self.actors:
                with contextlib.suppress(Exception):
                    self.ray.kill(actor)
            self.running.clear()


@contextlib.contextmanager
def worker_pool(
    cluster: Cluster, options: EngineOptions, job: Job[Item, Result]
) -> Iterator[ClusterPool[Item, Result]]:
    """A pool on ``cluster`` (Ray connected or started, and stopped again at the end)."""
    options = shipped(options)  # weights that cannot be read fail before Ray is started
    with connected(cluster) as ray:
        pool = ClusterPool(ray, options, job, cluster.workers)
        try:
            yield pool
        finally:
            pool.close()


__all__ = [
    "Cluster",
    "ClusterPool",
    "Placement",
    "Stopped",
    "WorkerContext",
    "WorkerLost",
    "parse_cluster",
    "place_workers",
    "shipped",
    "worker_pool",
]
