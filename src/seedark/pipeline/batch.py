"""Whole folders, unattended: ``seedark batch``.

Three things run at once, each bounded:

* a decoder **process** reads the next files and chooses their ratios (at
  most ``PREFETCH`` ahead; frames over ``BIG_MOSAIC_BYTES`` one at a time). LibRaw
  is C code: a hostile file that crashes it kills only that process, which is
  restarted; the file is reported as failed. It imports no torch (it runs
  ``seedark.frames.prepare`` only) and ends when the batch does, however that ends,
  SIGKILL included (:func:`seedark.frames.prepare.decoder_started`);
* the main thread runs the network on the current frame (the model is loaded
  once per sensor kind and reused);
* a writer thread orients, encodes and atomically publishes the previous
  result (queue of one).

So memory stays within a few frames however large the folder, and ``--tile
auto`` leaves room for them (:func:`held_besides`). Outputs are
only ever published complete, so an interrupted run leaves no partial file
and the next run skips what is done. Ctrl-C (or SIGTERM, which the command
line turns into the same KeyboardInterrupt) stops after the image being
written, wherever it lands. An output that appears while the batch runs (a
second batch into the same folder) counts as skipped: each file is looked at
again before it is decoded, before it is inferred, and when it is published.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from seedark._parallel import release_heap
from seedark.errors import OutputError, SeedarkError, UsageError
from seedark.frames.exposure import parse_ratio
from seedark.frames.prepare import STOP_SIGNALS, Prepared, decoder_started, prepare_file
from seedark.io.formats import OutputSettings, default_extension
from seedark.io.image import check_destination
from seedark.io.raw import RAW_EXTENSIONS
from seedark.pipeline.compare import DEFAULT_COMPARE_WIDTH
from seedark.pipeline.enhance import OutputPlan, check_compare_width, check_suffix, output_settings, write_result
from seedark.runtime.cluster import Cluster, parse_cluster
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, engine_for, infer

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

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
    elapsed: float = 0.0  # seconds the whole batch took, planning included

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
                # A FIFO or a broken link named like a RAW file is counted (and fails with its
                # reason, without being opened), never silently left out of the total.
                if f.is_dir() or f.name.startswith("."):
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


def _key(path: Path) -> str:
    return os.path.normcase(str(path))


def _folder(src: Path, root: Path, outdir: Path | None, recursive: bool) -> Path:
    if outdir is None:
        return src.parent
    if recursive and src.is_relative_to(root) and src.parent != root:
        return outdir / src.parent.relative_to(root)
    return outdir


def plan_jobs(
    files: list[tuple[Path, Path]],
    outdir: Path | None,
    *,
    recursive: bool,
    fmt: str,
    compare: bool = False,
    suffix: str = "",
) -> list[tuple[Path, Path]]:
    """(source, output) for every file; no two files are given the same name.

    Each name is ``<stem><suffix><ext>``. A name two files want (``IMG_1.ARW`` and
    ``IMG_1.DNG``) gets the source extension, then a number, before the suffix. With
    ``compare``, every output's comparison picture (``<stem>_compare.jpg``) is a name
    too, so an output that would be another file's comparison (``x_compare.dng`` beside
    ``x.dng``, as JPEG) is renamed the same way: neither replaces the other. The rule
    depends only on the sorted list of inputs and the options, so a re-run maps every
    file to the same output and resuming works.
    """
    ext = default_extension(fmt)

    def picture(dest: Path) -> set[str]:
        # the comparison picture's name does not depend on the bits
        return {_key(OutputPlan(dest, fmt, 8).compare_path)} if compare else set()

    def names(dest: Path) -> set[str]:
        return {_key(dest)} | picture(dest)

    wanted = [(src, _folder(src, root, outdir, recursive) / f"{src.stem}{suffix}{ext}") for src, root in files]
    counts = Counter(_key(dest) for _, dest in wanted)
    pictures = set().union(*(picture(dest) for _, dest in wanted))
    clash = [counts[_key(dest)] > 1 or _key(dest) in pictures for _, dest in wanted]
    # The names that stay are taken first, so no renamed file lands on one of them.
    taken = set().union(*(names(dest) for (_, dest), renamed in zip(wanted, clash, strict=True) if not renamed))
    result = []
    for (src, dest), renamed in zip(wanted, clash, strict=True):
        if renamed:
            stem = f"{src.stem}_{src.suffix.lstrip('.').lower() or 'raw'}"
            dest, n = dest.with_name(f"{stem}{suffix}{ext}"), 2
            while names(dest) & taken:
                dest = dest.with_name(f"{stem}_{n}{suffix}{ext}")
                n += 1
            taken |= names(dest)
        result.append((src, dest))
    return result


def plan_batch(
    files: list[tuple[Path, Path]],
    outdir: Path | None,
    *,
    recursive: bool,
    settings: OutputSettings,
    overwrite: bool,
    compare: bool = False,
    suffix: str = "",
    compare_width: int = DEFAULT_COMPARE_WIDTH,
) -> tuple[list[Job], list[tuple[Path, Path]]]:
    """The jobs to run, and the (source, output) pairs whose output exists already (left alone
    unless ``overwrite``): what makes an interrupted batch resume where it stopped."""
    jobs: list[Job] = []
    done: list[tuple[Path, Path]] = []
    for src, dest in plan_jobs(files, outdir, recursive=recursive, fmt=settings.fmt, compare=compare, suffix=suffix):
        if dest.exists() and not overwrite:
            done.append((src, dest))
        else:
            jobs.append(Job(src, OutputPlan.of(dest, settings, compare_width)))
    return jobs, done


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while a decoder process is started, for its sake and ours.

    The process inherits the blocked mask, so a Ctrl-C that comes while it imports waits
    for :func:`decoder_started` to drop it instead of printing a traceback; here the
    signal is only delayed until the process exists (as CPython does for its resource_tracker).
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to signal
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Decoder:
    """Runs the decoder in a child process and survives it crashing."""

    def __init__(self, decoder: Decoder, ratio: float | str | None, isolate: bool) -> None:
        self.decoder = decoder
        self.ratio = ratio
        self.isolate = isolate
        self.pool: ProcessPoolExecutor | None = None
        # (read end, write end): the decoder process holds only the read end (decoder_started)
        self.lifeline: tuple[Connection, Connection] | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            if self.lifeline is None:
                self.lifeline = multiprocessing.Pipe(duplex=False)
            self.pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=decoder_started,
                initargs=(self.lifeline[0],),
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
            pool = self._pool()  # made first: starting its resource_tracker unblocks the signals
            with _stop_signals_blocked():  # the process starts on the pool's first submit
                return pool.submit(self.decoder, source, self.ratio)
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

    def close(self, *, at_once: bool = False) -> None:
        """End the decoder process once it has decoded the file in hand, or ``at_once``
        (interrupted: that file is not wanted, and a large one takes seconds)."""
        if at_once:
            self._cut()  # the process exits on the spot (decoder_started), the pool sees it gone
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._cut()

    def _cut(self) -> None:
        if self.lifeline is not None:
            for end in self.lifeline:
                end.close()
            self.lifeline = None


def _describe(exc: BaseException, source: Path) -> str:
    if isinstance(exc, SeedarkError):
        return exc.reason if exc.path in (None, source) else str(exc)
    if isinstance(exc, BrokenProcessPool):
        return "the RAW decoder crashed on this file (corrupt or hostile file?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"


class _Written(NamedTuple):
    """An inferred image on its way to the writer thread."""

    job: Job
    image: np.ndarray
    prepared: Prepared
    started: float
    block: int


class _Outcome(NamedTuple):
    """What the writer thread did with one image."""

    job: Job
    ratio: float
    seconds: float
    error: BaseException | None
    written: Path | None


class _BatchRun:
    """One batch in progress: the decoder process, the writer thread, the counters and the report.

    The main thread (:meth:`run`) decodes ahead, infers and queues images; the writer
    thread (:meth:`_writer`) publishes them and posts outcomes, which the main thread
    counts and reports (:meth:`_drain`), so events always come from the main thread.
    """

    def __init__(
        self,
        options: EngineOptions,
        ratio: float | None,
        decoder: Decoder,
        *,
        overwrite: bool,
        compare: bool,
        isolate: bool,
        on_event: Callable[[BatchEvent], None] | None,
        report: BatchReport,
        total: int,
        keep_mtime: bool = False,
    ) -> None:
        self.options = options
        self.overwrite = overwrite
        self.compare = compare
        self.keep_mtime = keep_mtime
        self.on_event = on_event
        self.report = report
        self.total = total
        self.done = 0
        self.engines: dict[str, Engine] = {}
        self.decode = _Decoder(decoder, ratio, isolate)
        self.jobs: list[Job] = []
        self.next_job = 0
        self.pending: list[tuple[Job, Future[Prepared]]] = []
        self.write_queue: queue.Queue[_Written | None] = queue.Queue(maxsize=1)
        self.results: queue.Queue[_Outcome] = queue.Queue()
        self.stop = threading.Event()
        self.writer_done = threading.Event()

    # ----------------------------------------------------------------------- counting

    def _emit(self, event: BatchEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def skipped(self, source: Path, output: Path) -> None:
        self.done += 1
        self.report.skipped.append((source, output))
        self._emit(BatchEvent("skipped", source, self.done, self.total, output=output))

    def _failed(self, source: Path, reason: str) -> None:
        self.done += 1
        self.report.failed.append((source, reason))
        self._emit(BatchEvent("failed", source, self.done, self.total, reason=reason))

    def _fail(self, job: Job, exc: BaseException) -> None:
        self._failed(job.source, _describe(exc, job.source))

    def _drain(self) -> None:
        """Count and report what the writer has finished."""
        while True:
            try:
                job, ratio, seconds, error, written = self.results.get_nowait()
            except queue.Empty:
                return
            if error is not None and self._published_meanwhile(job, error):
                self.skipped(job.source, job.plan.path)
                continue
            if error is not None or written is None:
                self._failed(job.source, _describe(error, job.plan.path) if error is not None else "not written")
                continue
            self.done += 1
            self.report.converted.append((job.source, written, ratio))
            self._emit(BatchEvent("converted", job.source, self.done, self.total, written, ratio, seconds=seconds))

    # ----------------------------------------------------------------------- the writer thread

    def _writer(self) -> None:
        try:
            self._write_all()
        finally:
            self.writer_done.set()

    def _write_all(self) -> None:
        while True:
            item = self.write_queue.get()
            if item is None:
                self.write_queue.task_done()
                return
            trim = item.image.nbytes >= TRIM_AFTER_BYTES
            try:
                if not self.stop.is_set():  # interrupted: not written, the next run redoes it
                    self.results.put(self._write(item))
            finally:
                del item
                if trim:  # the encoder's freed buffers would otherwise stay in this thread's arena
                    release_heap()  # ~0.1 s, against seconds of inference for an image this large
                self.write_queue.task_done()

    def _write(self, item: _Written) -> _Outcome:
        job, prepared = item.job, item.prepared
        try:
            job.plan.path.parent.mkdir(parents=True, exist_ok=True)
            written = write_result(
                job.plan,
                item.image,
                prepared,
                overwrite=self.overwrite,
                compare=self.compare,
                block=item.block,
                keep_mtime=self.keep_mtime,
            )
        except BaseException as exc:
            return _Outcome(job, prepared.ratio, time.monotonic() - item.started, exc, None)
        return _Outcome(job, prepared.ratio, time.monotonic() - item.started, None, written)

    # ----------------------------------------------------------------------- the main thread

    def run(self, jobs: list[Job]) -> BatchReport:
        """Convert ``jobs`` in order; ``KeyboardInterrupt`` stops after the image being written."""
        self.options = self.options.with_weights_loaded()  # once, not per sensor kind
        self.jobs = jobs
        # A daemon, so that no mistake can keep the process alive; _finish waits for it on every way out.
        threading.Thread(target=self._writer, name="seedark-writer", daemon=True).start()
        try:
            while self.next_job < len(self.jobs) or self.pending:
                self._top_up(1)
                if not self.pending:
                    break
                self._step(*self.pending.pop(0))
                self._drain()
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            self._finish()
        return self.report

    def _interrupted(self) -> None:
        self.report.interrupted = True
        self.stop.set()

    def _finish(self) -> None:
        """Let the writer finish the image in hand, end the decoder, count what was done.

        Each step runs to its end even when KeyboardInterrupt (Ctrl-C, SIGTERM) comes during
        it, once or again (each step may be repeated): the image being written is published
        whole and counted, where leaving here would kill the writer mid-file at exit and
        lose the summary. The writer is waited for with an event, not ``Thread.join``, which
        an interrupt can leave believing a running thread has ended (Python 3.11, bpo-45274).
        """
        steps: list[Callable[[], object]] = [
            lambda: self.write_queue.put(None),
            self.writer_done.wait,
            lambda: self.decode.close(at_once=self.stop.is_set()),
            self._drain,
        ]
        for step in steps:
            while True:
                try:
                    step()
                    break
                except KeyboardInterrupt:
                    self._interrupted()

    def _exists(self, job: Job) -> bool:
        """Whether the output appeared since the plan (another batch into the same folder):
        the work is done, and not to be done twice."""
        return not self.overwrite and job.plan.path.exists()

    def _published_meanwhile(self, job: Job, error: BaseException) -> bool:
        """Whether publishing failed because the output appeared while this file was converted."""
        return isinstance(error, OutputError) and error.path == job.plan.path and self._exists(job)

    def _top_up(self, limit: int) -> None:
        """Send files to the decoder until ``limit`` are waiting (or none are left)."""
        while self.next_job < len(self.jobs) and len(self.pending) < limit:
            job = self.jobs[self.next_job]
            self.next_job += 1
            if self._exists(job):
                self.skipped(job.source, job.plan.path)
                continue
            try:
                check_destination(job.plan.path, overwrite=self.overwrite, create_folder=True)
                if self.compare:
                    check_destination(job.plan.compare_path, overwrite=self.overwrite, create_folder=True)
            except OutputError as exc:
                self._fail(job, exc)
                continue
            self.pending.append((job, self.decode.submit(job.source)))

    def _step(self, job: Job, future: Future[Prepared]) -> None:
        """One file through the network; its image goes to the writer thread."""
        started = time.monotonic()
        prepared = self._decoded(job, future)
        if prepared is None:
            return
        if self._exists(job):  # published by another run while this one was decoded
            self.skipped(job.source, job.plan.path)
            return
        engine = self._engine(job, prepared.sensor)
        if engine is None:
            return
        big = prepared.packed.frame.mosaic.nbytes > BIG_MOSAIC_BYTES
        if big:
            self.write_queue.join()  # the previous image is written (and freed) before this frame runs
            self._drain()
        else:
            self._top_up(PREFETCH)  # decode ahead while this frame runs
        try:
            reserve = held_besides(prepared, job.plan.bits, len(self.pending), writing=not big)
            image = infer(prepared, engine, tile=self.options.tile, bits=job.plan.bits, reserve=reserve)
        except (SeedarkError, RuntimeError, MemoryError) as exc:
            self._fail(job, exc)
            return
        self.write_queue.put(_Written(job, image, prepared, started, engine.spec.block))

    def _decoded(self, job: Job, future: Future[Prepared]) -> Prepared | None:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            # The crash was this job's (jobs run in order); the others are innocent.
            self._fail(job, exc)
            self.decode.restart()
            self.pending[:] = [(j, self.decode.submit(j.source)) for j, _ in self.pending]
        except Exception as exc:
            self._fail(job, exc)
        return None

    def _engine(self, job: Job, sensor: str) -> Engine | None:
        """The engine for this sensor kind, loaded on first use (None: this job failed)."""
        engine = self.engines.get(sensor)
        if engine is None:
            try:
                engine = engine_for(sensor, self.options)
            except SeedarkError as exc:
                if not self.engines:
                    raise  # no model at all (offline, bad device...): every file would fail alike
                self._fail(job, exc)  # e.g. the fuji model is missing in a mostly-Sony folder
                return None
            self.engines[sensor] = engine
        return engine


def _run_jobs(batch: _BatchRun, jobs: list[Job], cluster: Cluster | None) -> BatchReport:
    """Here, or on the cluster's workers (Ray is imported only then), counting on from ``batch``."""
    if not jobs:
        return batch.report
    if cluster is None:
        return batch.run(jobs)
    from seedark.pipeline.cluster_batch import run_on_cluster

    return run_on_cluster(
        jobs,
        cluster=cluster,
        options=batch.options,
        ratio=batch.decode.ratio,
        overwrite=batch.overwrite,
        compare=batch.compare,
        decoder=batch.decode.decoder,
        report=batch.report,
        counted=batch.done,
        total=batch.total,
        on_event=batch.on_event,
    )


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
    suffix: str = "",
    keep_mtime: bool = False,
    quality: int | None = None,
    compression: str | None = None,
    compare_width: int | None = None,
    on_event: Callable[[BatchEvent], None] | None = None,
    decoder: Decoder = prepare_file,
    isolate: bool = True,
    cluster: str | None = None,
    workers: int | None = None,
    **engine_options: Unpack[EngineKwargs],
) -> BatchReport:
    """Convert many RAW files; one bad file never stops the others.

    Returns a report; raises only for problems that concern every file (bad
    options, weights that cannot be loaded). ``KeyboardInterrupt`` stops after
    the file being written and returns with ``interrupted`` set. ``cluster``
    (``ray`` or ``ray://HOST:PORT``) converts on ``workers`` Ray workers instead,
    with the same outputs (docs/cluster.md). ``keep_mtime``: each output gets its RAW
    file's modification (and access) time. ``quality``, ``compression``,
    ``compare_width``: as for :func:`seedark.pipeline.enhance.plan_output`.
    """
    started = time.monotonic()
    given = parse_ratio(ratio)
    options = EngineOptions.from_kwargs(**engine_options)
    if keep_mtime and cluster is not None:
        raise UsageError("--keep-mtime does not work with --cluster yet; convert locally to keep the times")
    where = parse_cluster(cluster, workers)
    settings = output_settings(fmt, bits, quality=quality, compression=compression)
    width = check_compare_width(compare_width, compare)
    check_suffix(suffix)
    out_root = Path(outdir) if outdir is not None else None
    if out_root is not None and out_root.exists() and not out_root.is_dir():
        raise OutputError("output folder is not a folder", out_root)
    files, ignored = find_inputs(inputs, recursive=recursive)
    if not files:
        raise UsageError("no RAW files found (looked for: " + " ".join(sorted(RAW_EXTENSIONS)) + ")")
    jobs, done = plan_batch(
        files,
        out_root,
        recursive=recursive,
        settings=settings,
        overwrite=overwrite,
        compare=compare,
        suffix=suffix,
        compare_width=width,
    )
    batch = _BatchRun(
        options,
        given,
        decoder,
        overwrite=overwrite,
        compare=compare,
        isolate=isolate,
        on_event=on_event,
        report=BatchReport(ignored=ignored),
        total=len(files),
        keep_mtime=keep_mtime,
    )
    for source, output in done:
        batch.skipped(source, output)
    report = _run_jobs(batch, jobs, where)
    report.elapsed = time.monotonic() - started
    return report
