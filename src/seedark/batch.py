"""Whole folders, unattended: ``seedark batch``.

Three things run at once, each bounded:

* a decoder **process** reads the next files and chooses their ratios (at
  most ``PREFETCH`` ahead; frames over ``BIG_MOSAIC_BYTES`` one at a time). LibRaw
  is C code: a hostile file that crashes it kills only that process, which is
  restarted; the file is reported as failed.
* the main thread runs the network on the current frame (the model is loaded
  once per sensor kind and reused);
* a writer thread orients, encodes and atomically publishes the previous
  result (queue of one).

So memory stays within a few frames however large the folder, and ``--tile
auto`` leaves room for them (:func:`held_besides`). Outputs are
only ever published complete, so an interrupted run leaves no partial file
and the next run skips what is done.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engines import release_heap
from .errors import OutputError, SeedarkError, UsageError
from .exposure import parse_ratio
from .inference import Engine, parse_tile
from .output import check_destination, default_extension
from .pipeline import (
    OutputPlan,
    Prepared,
    _engine_for,
    infer,
    output_settings,
    write_result,
)
from .prepare import prepare_file
from .raw import RAW_EXTENSIONS
from .weights import LoadedWeights, load_weights

log = logging.getLogger("seedark")

#: Files decoded ahead while a frame runs through the network.
PREFETCH = 1
#: Frames whose mosaic is larger than this (a ~32 MP sensor) run one stage at a time:
#: none is decoded ahead and the previous image is written before the next inference
#: starts. That costs a second or two against ~45 s of inference for 60 MP, and keeps
#: the batch's peak that of one frame.
BIG_MOSAIC_BYTES = 64 << 20
#: After writing an image at least this large, freed heap goes back to the OS.
TRIM_AFTER_BYTES = 8 << 20


def held_besides(prepared: Prepared, bits: int, waiting: int, writing: bool) -> int:
    """Host memory a batch holds besides the frame being inferred, for ``--tile auto``:
    ``waiting`` frames decoded ahead (taken to be as large as this one) and, if
    ``writing``, the previous image while it is written."""
    mosaic = prepared.packed.frame.mosaic.nbytes
    image = prepared.height * prepared.width * 3 * (bits // 8)
    return waiting * mosaic + (image if writing else 0)


Decoder = Callable[[Path, "float | str | None"], Prepared]


@dataclass(frozen=True)
class Job:
    source: Path
    plan: OutputPlan


@dataclass(frozen=True)
class BatchEvent:
    """One thing that happened, for progress displays. ``kind``: skipped, converted, failed."""

    kind: str
    source: Path
    done: int
    total: int
    output: Path | None = None
    ratio: float | None = None
    reason: str | None = None
    seconds: float | None = None


@dataclass
class BatchReport:
    converted: list[tuple[Path, Path, float]] = field(default_factory=list)
    skipped: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


# --------------------------------------------------------------------------- planning


def is_raw_name(path: Path) -> bool:
    return path.suffix.lower() in RAW_EXTENSIONS


def find_inputs(
    inputs: Iterable[str | os.PathLike[str]], *, recursive: bool
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(file, root) pairs to convert, and files ignored for not having a RAW extension.

    Files named on the command line are always taken (the user asked for them);
    inside folders, only RAW extensions count (case-insensitive), so sidecars
    and camera JPEGs are left alone. ``root`` is the folder a file was found
    under, for mirroring the tree; a named file is its own root's child.
    """
    found: list[tuple[Path, Path]] = []
    ignored: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.iterdir()
            for f in sorted(walker):
                if not f.is_file() or f.name.startswith("."):
                    continue
                (found.append((f, p)) if is_raw_name(f) else ignored.append(f))
        else:
            found.append((p, p.parent))
    seen: set[Path] = set()
    unique = []
    for f, root in found:
        key = f.resolve() if f.exists() else f.absolute()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique, ignored


def plan_jobs(
    files: list[tuple[Path, Path]],
    outdir: Path | None,
    *,
    recursive: bool,
    fmt: str,
) -> list[tuple[Path, Path]]:
    """(source, output) for every file. Colliding names get the source extension, then a number.

    The rule depends only on the sorted list of inputs, so a re-run maps every
    file to the same output and resuming works.
    """
    ext = default_extension(fmt)
    wanted: list[tuple[Path, Path]] = []
    for src, root in files:
        if outdir is None:
            folder = src.parent
        elif recursive and src.is_relative_to(root) and src.parent != root:
            folder = outdir / src.parent.relative_to(root)
        else:
            folder = outdir
        wanted.append((src, folder / (src.stem + ext)))
    counts = Counter(os.path.normcase(str(dest)) for _, dest in wanted)
    taken: set[str] = set()
    result = []
    for src, dest in wanted:
        if counts[os.path.normcase(str(dest))] > 1:
            dest = dest.with_name(f"{src.stem}_{src.suffix.lstrip('.').lower() or 'raw'}{ext}")
            base, n = dest, 2
            while os.path.normcase(str(dest)) in taken:
                dest = base.with_name(f"{base.stem}_{n}{ext}")
                n += 1
        taken.add(os.path.normcase(str(dest)))
        result.append((src, dest))
    return result


# --------------------------------------------------------------------------- running


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Decoder:
    """Runs the decoder in a child process and survives it crashing."""

    def __init__(self, decoder: Decoder, ratio: float | str | None, isolate: bool) -> None:
        self.decoder = decoder
        self.ratio = ratio
        self.isolate = isolate
        self.pool: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
            )
        return self.pool

    def submit(self, source: Path) -> Future[Prepared]:
        if not self.isolate:
            fut: Future[Prepared] = Future()
            try:
                fut.set_result(self.decoder(source, self.ratio))
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        try:
            return self._pool().submit(self.decoder, source, self.ratio)
        except BrokenProcessPool as exc:
            # An earlier file crashed the decoder; that file is blamed when its
            # future is read, and this one is resubmitted then.
            broken: Future[Prepared] = Future()
            broken.set_exception(exc)
            return broken

    def restart(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _describe(exc: BaseException, source: Path) -> str:
    if isinstance(exc, SeedarkError):
        return exc.reason if exc.path in (None, source) else str(exc)
    if isinstance(exc, BrokenProcessPool):
        return "the RAW decoder crashed on this file (corrupt or hostile file?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"


def run_batch(
    inputs: Iterable[str | os.PathLike[str]],
    outdir: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
    ratio: float | str | None = "auto",
    fmt: str | None = None,
    bits: int | None = None,
    overwrite: bool = False,
    compare: bool = False,
    weights: str | os.PathLike[str] | LoadedWeights | None = None,
    model: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    tile: str | int | None = "auto",
    on_event: Callable[[BatchEvent], None] | None = None,
    download_progress: Callable[[int, int | None], None] | None = None,
    decoder: Decoder = prepare_file,
    isolate: bool = True,
) -> BatchReport:
    """Convert many RAW files; one bad file never stops the others.

    Returns a report; raises only for problems that concern every file (bad
    options, weights that cannot be loaded). ``KeyboardInterrupt`` stops after
    the file being written and returns with ``interrupted`` set.
    """
    parse_ratio(ratio)
    tile = parse_tile(tile)
    fmt, bits = output_settings(fmt, bits)
    out_root = Path(outdir) if outdir is not None else None
    if out_root is not None and out_root.exists() and not out_root.is_dir():
        raise OutputError("output folder is not a folder", out_root)
    files, ignored = find_inputs(inputs, recursive=recursive)
    if not files:
        raise UsageError("no RAW files found (looked for: " + " ".join(sorted(RAW_EXTENSIONS)) + ")")
    report = BatchReport(ignored=ignored)
    total = len(files)
    done = 0

    def emit(event: BatchEvent) -> None:
        if on_event is not None:
            on_event(event)

    jobs: list[Job] = []
    for src, dest in plan_jobs(files, out_root, recursive=recursive, fmt=fmt):
        if dest.exists() and not overwrite:
            report.skipped.append((src, dest))
            done += 1
            emit(BatchEvent("skipped", src, done, total, output=dest))
            continue
        jobs.append(Job(src, OutputPlan(dest, fmt, bits)))
    if not jobs:
        return report
    if isinstance(weights, (str, os.PathLike)):
        weights = load_weights(weights)  # once, not per sensor kind

    engines: dict[str, Engine] = {}
    decode = _Decoder(decoder, ratio, isolate)
    write_queue: queue.Queue[Any] = queue.Queue(maxsize=1)
    results: queue.Queue[tuple[Job, float, float, BaseException | None, Path | None]] = queue.Queue()
    stop = threading.Event()

    def writer() -> None:
        while True:
            item = write_queue.get()
            if item is None:
                write_queue.task_done()
                return
            job, image, prepared, started, block = item
            trim = image.nbytes >= TRIM_AFTER_BYTES
            try:
                if stop.is_set():
                    continue  # interrupted: not written, the next run redoes it
                job.plan.path.parent.mkdir(parents=True, exist_ok=True)
                written = write_result(job.plan, image, prepared, overwrite=overwrite, compare=compare, block=block)
                results.put((job, prepared.ratio, time.monotonic() - started, None, written))
            except BaseException as exc:
                results.put((job, prepared.ratio, time.monotonic() - started, exc, None))
            finally:
                del image, prepared, item
                if trim:  # the encoder's freed buffers would otherwise stay in this thread's arena
                    release_heap()  # ~0.1 s, against seconds of inference for an image this large
                write_queue.task_done()

    def drain() -> None:
        nonlocal done
        while True:
            try:
                job, used, seconds, exc, written = results.get_nowait()
            except queue.Empty:
                return
            done += 1
            if exc is None and written is not None:
                report.converted.append((job.source, written, used))
                emit(BatchEvent("converted", job.source, done, total, written, used, seconds=seconds))
            else:
                reason = _describe(exc, job.plan.path) if exc is not None else "not written"
                report.failed.append((job.source, reason))
                emit(BatchEvent("failed", job.source, done, total, reason=reason))

    def fail(job: Job, exc: BaseException) -> None:
        nonlocal done
        done += 1
        reason = _describe(exc, job.source)
        report.failed.append((job.source, reason))
        emit(BatchEvent("failed", job.source, done, total, reason=reason))

    thread = threading.Thread(target=writer, name="seedark-writer", daemon=True)
    thread.start()
    pending: list[tuple[Job, Future[Prepared]]] = []
    next_job = 0

    def top_up(limit: int) -> None:
        """Send files to the decoder until ``limit`` are waiting (or none are left)."""
        nonlocal next_job
        while next_job < len(jobs) and len(pending) < limit:
            job = jobs[next_job]
            next_job += 1
            try:
                check_destination(job.plan.path, overwrite=overwrite, create_folder=True)
            except OutputError as exc:
                fail(job, exc)
                continue
            pending.append((job, decode.submit(job.source)))

    try:
        while next_job < len(jobs) or pending:
            top_up(1)
            if not pending:
                break
            job, future = pending.pop(0)
            started = time.monotonic()
            try:
                prepared = future.result()
            except BrokenProcessPool as exc:
                # The crash was this job's (jobs run in order); the others are innocent.
                fail(job, exc)
                decode.restart()
                pending[:] = [(j, decode.submit(j.source)) for j, _ in pending]
                drain()
                continue
            except Exception as exc:
                fail(job, exc)
                drain()
                continue
            engine = engines.get(prepared.sensor)
            if engine is None:
                try:
                    engine = _engine_for(prepared.sensor, weights, model, device, precision, backend, download_progress)
                except SeedarkError as exc:
                    if not engines:
                        raise  # no model at all (offline, bad device...): every file would fail alike
                    fail(job, exc)  # e.g. the fuji model is missing in a mostly-Sony folder
                    drain()
                    continue
                engines[prepared.sensor] = engine
            big = prepared.packed.frame.mosaic.nbytes > BIG_MOSAIC_BYTES
            if big:
                write_queue.join()  # the previous image is written (and freed) before this frame runs
                drain()
            else:
                top_up(PREFETCH)  # decode ahead while this frame runs
            try:
                reserve = held_besides(prepared, job.plan.bits, len(pending), writing=not big)
                image = infer(prepared, engine, tile=tile, bits=job.plan.bits, reserve=reserve)
            except SeedarkError as exc:
                fail(job, exc)
                drain()
                continue
            except (RuntimeError, MemoryError) as exc:
                fail(job, exc)
                drain()
                continue
            write_queue.put((job, image, prepared, started, engine.spec.block))
            del image, prepared
            drain()
    except KeyboardInterrupt:
        report.interrupted = True
        stop.set()
    finally:
        write_queue.put(None)
        thread.join()
        decode.close()
        drain()
    return report
