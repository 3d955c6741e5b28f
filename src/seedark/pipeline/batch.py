"""Whole folders, unattended: ``seedark batch`` (:func:`run_batch`), and its run loop.

The batch is planned in full first (seedark.pipeline.planning), then three things
run at once, each bounded:

* a decoder **process** reads the next files and chooses their ratios (at
  most ``PREFETCH`` ahead, ``PREFETCH_GPU`` on a GPU; frames over
  ``BIG_MOSAIC_BYTES`` one at a time); a file that crashes LibRaw kills only
  that process (seedark.pipeline.decoder);
* the main thread runs the network on the current frame (the model is loaded
  once per sensor kind and reused: :class:`seedark.runtime.engine.EngineCache`);
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
With ``cluster``, the same jobs run on a Ray cluster's workers instead
(seedark.pipeline.cluster_batch); either way one :class:`~seedark.pipeline.report.Tally`
counts and reports.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from seedark._parallel import release_heap
from seedark.errors import DeviceMemoryError, OutputError, SeedarkError, UsageError
from seedark.frames.exposure import parse_ratio
from seedark.frames.prepare import Prepared, prepare_file
from seedark.io.raw import RAW_EXTENSIONS
from seedark.pipeline.cluster_batch import run_on_cluster
from seedark.pipeline.decoder import Decoder, DecoderProcess
from seedark.pipeline.output import ConvertKwargs, check_output_folder, conversion_options
from seedark.pipeline.planning import find_inputs, plan_batch, plan_jobs
from seedark.pipeline.report import BatchEvent, BatchReport, Job, Outcome, Tally, describe, publish
from seedark.runtime.cluster import parse_cluster
from seedark.runtime.engine import Engine, EngineCache, EngineOptions, infer, warm_up

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

log = logging.getLogger("seedark")

#: Files decoded ahead while a frame runs through the network.
PREFETCH = 1
#: On a GPU, where a frame's inference takes less than its decoding: the decoder is never left idle.
PREFETCH_GPU = 3
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


class _Written(NamedTuple):
    """An inferred image on its way to the writer thread."""

    job: Job
    image: np.ndarray
    prepared: Prepared
    started: float
    block: int


class _BatchRun:
    """One batch in progress here: the decoder process, the writer thread and the engines.

    The main thread (:meth:`run`) decodes ahead, infers and queues images; the writer
    thread (:meth:`_writer`) publishes them and posts outcomes, which the main thread
    counts (:meth:`_drain`), so events always come from the main thread.
    """

    def __init__(
        self, options: EngineOptions, ratio: float | None, decoder: Decoder, *, isolate: bool, tally: Tally
    ) -> None:
        self.options = options
        self.tally = tally
        self.engines = EngineCache(options)  # the weights read once, not per sensor kind
        self.decode = DecoderProcess(decoder, ratio, isolate)
        self.jobs: list[Job] = []
        self.next_job = 0
        self.pending: list[tuple[Job, Future[Prepared]]] = []
        self.write_queue: queue.Queue[_Written | None] = queue.Queue(maxsize=1)
        self.results: queue.Queue[tuple[Job, Outcome]] = queue.Queue()
        self.stop = threading.Event()
        self.writer_done = threading.Event()

    def _fail(self, job: Job, exc: BaseException) -> None:
        self.tally.failed(job.source, describe(exc, job.source))

    def _drain(self) -> None:
        """Count what the writer has finished."""
        while True:
            try:
                self.tally.add(*self.results.get_nowait())
            except queue.Empty:
                return

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
                    outcome = publish(item.job, item.image, item.prepared, item.block)
                    self.results.put((item.job, outcome._replace(seconds=time.monotonic() - item.started)))
            finally:
                del item
                if trim:  # the encoder's freed buffers would otherwise stay in this thread's arena
                    release_heap()  # ~0.1 s, against seconds of inference for an image this large
                self.write_queue.task_done()

    # ----------------------------------------------------------------------- the main thread

    def run(self, jobs: list[Job]) -> None:
        """Convert ``jobs`` in order; ``KeyboardInterrupt`` stops after the image being written."""
        self.jobs = jobs
        # A daemon, so that no mistake can keep the process alive; _finish waits for it on every way out.
        threading.Thread(target=self._writer, name="seedark-writer", daemon=True).start()
        try:
            self._top_up(1)
            warm_up(self.options)  # OpenVINO starts while the decoder reads the first file
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

    def _interrupted(self) -> None:
        self.tally.report.interrupted = True
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

    def _top_up(self, limit: int) -> None:
        """Send files to the decoder until ``limit`` are waiting (or none are left)."""
        while self.next_job < len(self.jobs) and len(self.pending) < limit:
            job = self.jobs[self.next_job]
            self.next_job += 1
            if job.plan.taken():  # published by another run since the plan was made
                self.tally.skipped(job.source, job.plan.path)
                continue
            try:
                job.plan.check_destinations(create_folder=True)
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
        if job.plan.taken():  # published by another run while this one was decoded
            self.tally.skipped(job.source, job.plan.path)
            return
        engine = self._engine(job, prepared)
        if engine is None:
            return
        big = prepared.packed.frame.mosaic.nbytes > BIG_MOSAIC_BYTES
        if big:
            self.write_queue.join()  # the previous image is written (and freed) before this frame runs
            self._drain()
        else:
            self._top_up(prefetch_depth(engine))  # decode ahead while this frame runs
        try:
            reserve = held_besides(prepared, job.plan.network_bits or 32, len(self.pending), writing=not big)
            image = infer(
                prepared,
                engine,
                tile=self.options.tile,
                bits=job.plan.network_bits,
                reserve=reserve,
                match_sensor=self.options.match_sensor,
            )
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

    def _engine(self, job: Job, prepared: Prepared) -> Engine | None:
        """The engine for this file's model (its sensor kind's, or its camera's own), loaded on
        first use (None: this job failed)."""
        try:
            return self.engines.get(prepared.sensor, prepared.camera)
        except SeedarkError as exc:
            # No model at all (offline, bad device...): every file would fail alike. A device
            # out of memory may not stay so (other processes free theirs): only this file fails.
            if not self.engines and not isinstance(exc, DeviceMemoryError):
                raise
            self._fail(job, exc)  # e.g. the fuji model is missing in a mostly-Sony folder
            return None


def prefetch_depth(engine: Engine) -> int:
    """How many files to decode ahead of the frame ``engine`` runs: more on a GPU."""
    return PREFETCH if engine.device.type == "cpu" else PREFETCH_GPU


def run_batch(
    inputs: Iterable[str | os.PathLike[str]],
    outdir: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
    ratio: float | str | None = "auto",
    on_event: Callable[[BatchEvent], None] | None = None,
    decoder: Decoder = prepare_file,
    isolate: bool = True,
    cluster: str | None = None,
    workers: int | None = None,
    **options: Unpack[ConvertKwargs],
) -> BatchReport:
    """Convert many RAW files; one bad file never stops the others.

    Returns a report; raises only for problems that concern every file (bad
    options, weights that cannot be loaded). ``KeyboardInterrupt`` stops after
    the file being written and returns with ``interrupted`` set. ``cluster``
    (``ray`` or ``ray://HOST:PORT``) converts on ``workers`` Ray workers instead,
    with the same outputs (docs/cluster.md). ``keep_mtime``: each output gets its RAW
    file's modification (and access) time. The output keywords (``fmt``, ``bits``,
    ``quality``, ``compression``, ``compare_width``...): as for
    :func:`seedark.pipeline.output.plan_output`. ``decoder``: what decodes a file
    (``decoder(path, ratio)``); ``isolate``: in a child process.
    """
    started = time.monotonic()
    given = parse_ratio(ratio)
    engine, output = conversion_options(options)
    if output.keep_mtime and cluster is not None:
        raise UsageError("--keep-mtime does not work with --cluster yet; convert locally to keep the times")
    where = parse_cluster(cluster, workers)
    settings = output.settings()
    out_root = Path(outdir) if outdir is not None else None
    if out_root is not None:
        check_output_folder(out_root)
    unreadable: list[tuple[Path, str]] = []
    files, ignored = find_inputs(inputs, recursive=recursive, unreadable=unreadable)
    if not files and not unreadable:
        raise UsageError("no RAW files found (looked for: " + " ".join(sorted(RAW_EXTENSIONS)) + ")")
    planned = plan_jobs(
        files, out_root, recursive=recursive, fmt=settings.fmt, compare=output.compare, suffix=output.suffix
    )
    jobs, done = plan_batch(planned, settings, output)
    tally = Tally(BatchReport(ignored=ignored), len(files) + len(unreadable), on_event)
    for path, reason in unreadable:
        tally.failed(path, reason)
    for source, dest in done:
        tally.skipped(source, dest)
    if jobs and where is None:
        _BatchRun(engine, given, decoder, isolate=isolate, tally=tally).run(jobs)
    elif jobs and where is not None:
        run_on_cluster(jobs, cluster=where, options=engine, ratio=given, decoder=decoder, tally=tally)
    tally.report.elapsed = time.monotonic() - started
    return tally.report


__all__ = ["held_besides", "run_batch"]
