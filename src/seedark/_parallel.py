"""Thread and process-memory helpers: an ordered parallel map on threads (numpy and zlib
release the GIL on large buffers), and freed heap memory handed back to the OS."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar


def worker_count() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


_T = TypeVar("_T")


def ordered_parallel(job: Callable[[int], _T], count: int) -> Iterator[_T]:
    """``job(0) .. job(count-1)`` run on worker threads, results yielded in order.

    numpy and zlib release the GIL on large buffers, so threads give real parallelism
    here; at most two jobs per worker are in flight, which bounds memory.
    """
    workers = worker_count()
    if workers == 1 or count <= 1:
        yield from map(job, range(count))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[_T]] = deque()
        nxt = 0
        try:
            while nxt < count or pending:
                while nxt < count and len(pending) < 2 * workers:
                    pending.append(pool.submit(job, nxt))
                    nxt += 1
                yield pending.popleft().result()
        finally:
            # On error (or the consumer giving up) don't start the jobs still queued.
            for fut in pending:
                fut.cancel()


def release_heap(*, collect: bool = True) -> None:
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere), after
    collecting garbage unless ``collect`` is False (a full collection takes ~0.1 s
    once torch is loaded).

    Freed small and medium blocks stay in the process (and in its RSS) otherwise,
    on top of everything the frame allocates later.
    """
    if collect:
        gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
