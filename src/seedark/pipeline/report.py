"""What becomes of each file of a batch, and the batch's report, here or on a cluster.

A :class:`Job` is a file and its output plan; its :class:`Outcome` is converted,
skipped (the output is there, possibly published by another run meanwhile),
failed (with a reason, :func:`describe`) or stopped (interrupted: the next run does
it). :func:`publish`, a file's last step, is where most outcomes are decided; the
local run loop (seedark.pipeline.batch) and the cluster's workers
(seedark.pipeline.cluster_batch) share it, and one :class:`Tally` counts for both.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from seedark.errors import SeedarkError
from seedark.frames.prepare import Prepared
from seedark.pipeline.output import OutputPlan, write_result


@dataclass(frozen=True)
class Job:
    """One file of a batch and where its result goes."""

    source: Path
    plan: OutputPlan


class Outcome(NamedTuple):
    """What became of one file. ``kind``: converted, skipped, failed or stopped."""

    kind: str
    output: Path | None = None
    ratio: float | None = None
    seconds: float | None = None
    reason: str | None = None


def describe(exc: BaseException, path: Path) -> str:
    """Why a file failed, in a line of the report: a seedark error's reason (with its file when
    that is another one than ``path``), or what kind of failure it was."""
    if isinstance(exc, SeedarkError):
        return exc.reason if exc.path in (None, path) else str(exc)
    if isinstance(exc, BrokenProcessPool):
        return "the RAW decoder crashed on this file (corrupt or hostile file?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"


def publish(job: Job, image: np.ndarray, prepared: Prepared, block: int) -> Outcome:
    """A file's last step, here or on a worker: its image (and comparison picture) written.

    Skipped, not failed, when publishing was refused because another run into the same
    folder published the output meanwhile: the work is done, once.
    """
    try:
        job.plan.path.parent.mkdir(parents=True, exist_ok=True)
        written = write_result(job.plan, image, prepared, block=block)
    except Exception as exc:
        if job.plan.published_meanwhile(exc):
            return Outcome("skipped", job.plan.path)
        return Outcome("failed", reason=describe(exc, job.plan.path))
    return Outcome("converted", written, prepared.ratio)


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


class Tally:
    """A batch's counts, report and progress events, one file at a time, in the order files finish.

    ``finished``: the files counted (a stopped one is not: the next run does it).
    """

    def __init__(self, report: BatchReport, total: int, on_event: Callable[[BatchEvent], None] | None) -> None:
        self.report = report
        self.total = total
        self.on_event = on_event
        self.done = 0
        self.finished: set[Path] = set()

    def _counted(self, source: Path) -> int:
        """Count ``source`` as done; returns how many are."""
        self.done += 1
        self.finished.add(source)
        return self.done

    def _emit(self, event: BatchEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def skipped(self, source: Path, output: Path) -> None:
        self.report.skipped.append((source, output))
        self._emit(BatchEvent("skipped", source, self._counted(source), self.total, output=output))

    def failed(self, source: Path, reason: str) -> None:
        self.report.failed.append((source, reason))
        self._emit(BatchEvent("failed", source, self._counted(source), self.total, reason=reason))

    def converted(self, source: Path, output: Path, ratio: float, seconds: float | None) -> None:
        self.report.converted.append((source, output, ratio))
        done = self._counted(source)
        self._emit(BatchEvent("converted", source, done, self.total, output, ratio, seconds=seconds))

    def add(self, job: Job, outcome: Outcome) -> None:
        """Count what became of ``job``."""
        if outcome.kind == "stopped":
            self.report.interrupted = True  # not done: the next run does it
        elif outcome.kind == "skipped":
            self.skipped(job.source, job.plan.path)
        elif outcome.kind == "converted" and outcome.output is not None and outcome.ratio is not None:
            self.converted(job.source, outcome.output, outcome.ratio, outcome.seconds)
        else:
            self.failed(job.source, outcome.reason or "not written")


__all__ = ["BatchEvent", "BatchReport", "Job", "Outcome", "Tally", "describe", "publish"]
