"""``seedark batch --cluster ray``: the batch's files converted by the workers of a Ray cluster.

The driver plans exactly as a local batch does (:func:`seedark.pipeline.batch.plan_batch`:
the same outputs, the same files skipped) and counts and reports; each worker decodes,
infers and publishes one file at a time through the same code as a local batch
(:func:`seedark.pipeline.enhance.write_result`, atomic), so its outputs are the local
run's, byte for byte, with the same engine and precision. Inputs and outputs are paths
every node must see (a shared filesystem: docs/cluster.md).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from seedark._files import sweep_stale_parts
from seedark.errors import OutputError, SeedarkError
from seedark.frames.prepare import Prepared
from seedark.io.image import check_destination
from seedark.pipeline.batch import BatchEvent, BatchReport, Decoder, Job, _describe
from seedark.pipeline.enhance import write_result
from seedark.runtime.cluster import Cluster, Stopped, WorkerContext, worker_pool
from seedark.runtime.engine import EngineOptions, infer


class Done(NamedTuple):
    """What a worker did with one file. ``kind``: converted, skipped, failed or stopped."""

    kind: str
    output: Path | None = None
    ratio: float | None = None
    seconds: float | None = None
    reason: str | None = None


def _exists(job: Job, overwrite: bool) -> bool:
    return not overwrite and job.plan.path.exists()


def _convert(context: WorkerContext, job: Job, prepared: Prepared, *, overwrite: bool, compare: bool) -> Done:
    """Infer and publish one decoded file (the steps after the decoder's)."""
    try:
        engine = context.engine(prepared.sensor)
        image = infer(prepared, engine, tile=context.options.tile, bits=job.plan.bits, progress=context.progress)
    except (SeedarkError, RuntimeError, MemoryError) as exc:
        return Done("failed", reason=_describe(exc, job.source))
    context.check()
    try:
        job.plan.path.parent.mkdir(parents=True, exist_ok=True)
        written = write_result(job.plan, image, prepared, overwrite=overwrite, compare=compare, block=engine.spec.block)
    except OutputError as exc:
        if exc.path == job.plan.path and _exists(job, overwrite):  # another run published it meanwhile
            return Done("skipped", job.plan.path)
        return Done("failed", reason=_describe(exc, job.plan.path))
    except OSError as exc:
        return Done("failed", reason=_describe(exc, job.plan.path))
    return Done("converted", written, prepared.ratio)


def convert_on_worker(
    context: WorkerContext,
    job: Job,
    *,
    ratio: float | str | None,
    overwrite: bool,
    compare: bool,
    decoder: Decoder,
) -> Done:
    """One file, in a worker: looked at again first (another run may have done it), then converted."""
    started = time.monotonic()
    try:
        if _exists(job, overwrite):
            return Done("skipped", job.plan.path)
        try:
            check_destination(job.plan.path, overwrite=overwrite, create_folder=True)
            if compare:
                check_destination(job.plan.compare_path, overwrite=overwrite, create_folder=True)
            prepared = decoder(job.source, ratio)
        except Exception as exc:
            return Done("failed", reason=_describe(exc, job.source))
        context.check()
        if _exists(job, overwrite):
            return Done("skipped", job.plan.path)
        done = _convert(context, job, prepared, overwrite=overwrite, compare=compare)
    except Stopped:
        return Done("stopped")
    return done._replace(seconds=time.monotonic() - started)


class _Tally:
    """The driver's counts, report and progress events."""

    def __init__(
        self, report: BatchReport, counted: int, total: int, on_event: Callable[[BatchEvent], None] | None
    ) -> None:
        self.report = report
        self.done = counted
        self.total = total
        self.on_event = on_event
        self.finished: set[Path] = set()

    def add(self, job: Job, outcome: Done | BaseException) -> None:
        if isinstance(outcome, BaseException):
            outcome = Done("stopped") if isinstance(outcome, Stopped) else Done("failed", reason=str(outcome))
        if outcome.kind == "stopped":
            self.report.interrupted = True  # not done: the next run does it
            return
        self.done += 1
        self.finished.add(job.source)
        if outcome.kind == "skipped":
            self.report.skipped.append((job.source, job.plan.path))
            event = BatchEvent("skipped", job.source, self.done, self.total, output=job.plan.path)
        elif outcome.kind == "converted" and outcome.output is not None and outcome.ratio is not None:
            self.report.converted.append((job.source, outcome.output, outcome.ratio))
            event = BatchEvent(
                "converted", job.source, self.done, self.total, outcome.output, outcome.ratio, seconds=outcome.seconds
            )
        else:
            reason = outcome.reason or "not written"
            self.report.failed.append((job.source, reason))
            event = BatchEvent("failed", job.source, self.done, self.total, reason=reason)
        if self.on_event is not None:
            self.on_event(event)


def run_on_cluster(
    jobs: list[Job],
    *,
    cluster: Cluster,
    options: EngineOptions,
    ratio: float | str | None,
    overwrite: bool,
    compare: bool,
    decoder: Decoder,
    report: BatchReport,
    counted: int,
    total: int,
    on_event: Callable[[BatchEvent], None] | None,
) -> BatchReport:
    """Convert ``jobs`` on the cluster's workers, counting on from ``counted`` files already
    reported; ``KeyboardInterrupt`` stops after the files in hand."""
    tally = _Tally(report, counted, total, on_event)
    job = functools.partial(convert_on_worker, ratio=ratio, overwrite=overwrite, compare=compare, decoder=decoder)
    try:
        with worker_pool(cluster, options, job) as pool:
            for item, outcome in pool.run(jobs):
                tally.add(item, outcome)
            report.interrupted = report.interrupted or pool.interrupted
    except KeyboardInterrupt:
        report.interrupted = True
    if report.interrupted:
        # a worker ended while it wrote (stuck past the grace, or Ctrl-C pressed twice) leaves its temporary
        for folder in {j.plan.path.parent for j in jobs if j.source not in tally.finished}:
            sweep_stale_parts(folder)
    return report
