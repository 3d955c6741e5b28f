"""``seedark batch --cluster ray``: the batch's files converted by the workers of a Ray cluster.

The driver plans exactly as a local batch does (:func:`seedark.pipeline.planning.plan_batch`:
the same outputs, the same files skipped) and counts and reports (the same
:class:`~seedark.pipeline.report.Tally`); each worker decodes, infers and publishes
one file at a time through the same steps as a local batch
(:func:`seedark.pipeline.report.publish`, atomic), so its outputs are the local
run's, byte for byte, with the same engine, precision and number of threads
(docs/cluster.md). Inputs and outputs are paths every node must see (a shared
filesystem: docs/cluster.md).
"""

from __future__ import annotations

import functools
import time

from seedark._files import sweep_stale_parts
from seedark.errors import SeedarkError
from seedark.frames.prepare import Prepared
from seedark.pipeline.decoder import Decoder
from seedark.pipeline.report import BatchReport, Job, Outcome, Tally, describe, publish
from seedark.runtime.cluster import Cluster, Stopped, WorkerContext, worker_pool
from seedark.runtime.engine import EngineOptions, infer


def _convert(context: WorkerContext, job: Job, prepared: Prepared) -> Outcome:
    """Infer and publish one decoded file (the steps after the decoder's)."""
    try:
        engine = context.engine(prepared.sensor, prepared.camera)
        tile, match, bits = context.options.tile, context.options.match_sensor, job.plan.network_bits
        image = infer(prepared, engine, tile=tile, bits=bits, progress=context.progress, match_sensor=match)
    except (SeedarkError, RuntimeError, MemoryError) as exc:
        return Outcome("failed", reason=describe(exc, job.source))
    context.check()
    return publish(job, image, prepared, engine.spec.block)


def convert_on_worker(context: WorkerContext, job: Job, *, ratio: float | None, decoder: Decoder) -> Outcome:
    """One file, in a worker: looked at again first (another run may have done it), then converted."""
    started = time.monotonic()
    try:
        if job.plan.taken():
            return Outcome("skipped", job.plan.path)
        try:
            job.plan.check_destinations(create_folder=True)
            prepared = decoder(job.source, ratio)
        except Exception as exc:
            return Outcome("failed", reason=describe(exc, job.source))
        context.check()
        if job.plan.taken():
            return Outcome("skipped", job.plan.path)
        done = _convert(context, job, prepared)
    except Stopped:
        return Outcome("stopped")
    return done._replace(seconds=time.monotonic() - started)


def _outcome(result: Outcome | BaseException) -> Outcome:
    """What a worker's result means: its outcome, or an exception the pool caught (a worker lost twice...)."""
    if isinstance(result, Stopped):
        return Outcome("stopped")
    if isinstance(result, BaseException):
        return Outcome("failed", reason=str(result))
    return result


def run_on_cluster(
    jobs: list[Job], *, cluster: Cluster, options: EngineOptions, ratio: float | None, decoder: Decoder, tally: Tally
) -> BatchReport:
    """Convert ``jobs`` on the cluster's workers, counting on in ``tally``; ``KeyboardInterrupt``
    stops after the files in hand."""
    report = tally.report
    job = functools.partial(convert_on_worker, ratio=ratio, decoder=decoder)
    try:
        with worker_pool(cluster, options, job) as pool:
            for item, result in pool.run(jobs):
                tally.add(item, _outcome(result))
            report.interrupted = report.interrupted or pool.interrupted
    except KeyboardInterrupt:
        report.interrupted = True
    if report.interrupted:
        # a worker ended while it wrote (stuck past the grace, or Ctrl-C pressed twice) leaves its temporary
        for folder in {j.plan.path.parent for j in jobs if j.source not in tally.finished}:
            sweep_stale_parts(folder)
    return report
