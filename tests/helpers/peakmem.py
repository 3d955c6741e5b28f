"""Peak memory of a child process, measured by the child itself.

A test runs its script with :func:`run_measuring`; the script imports this module and
measures with :func:`reset_peak` and :func:`grown_since`. The peak is the process's own
VmHWM from /proc (Linux): ru_maxrss (RUSAGE_SELF or RUSAGE_CHILDREN) would not do, as
Linux carries the parent's peak over into a child across fork/exec.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any


def status(field: str) -> int:
    """A byte count from /proc/self/status (``VmRSS``, ``VmHWM``...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> int:
    """Sets the peak (VmHWM) to the memory in use now, where the kernel lets us; returns that memory.

    Where VmHWM cannot be reset, it keeps the highest mark so far: measure the smaller
    run first.
    """
    base = status("VmRSS")
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    return base


def grown_since(base: int) -> int:
    """How far the peak rose above ``base`` bytes."""
    return status("VmHWM") - base


def run_measuring(script: str, *args: str, timeout: float) -> Any:
    """Runs ``python -c script args...`` with this checkout's seedark and helpers; the JSON of its last line."""
    from helpers.cli import child_env  # here: the child imports this module, and should not import pytest

    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=child_env(), timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])
