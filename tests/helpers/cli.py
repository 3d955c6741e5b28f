"""Running the seedark command line from tests: in this process, or as a child process.

``run_cli(capsys, ...)`` calls ``seedark.cli.main`` as the console script does and returns
its exit code and what it printed. ``child_env()`` is the environment for a child Python
(``python -m seedark ...``, ``python -c SCRIPT``) that imports this checkout's seedark,
and the tests' ``helpers``, before anything installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from seedark.cli import main

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """``seedark ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def child_env(*, drop: tuple[str, ...] = (), base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (this process's environment by default) less the variables whose names start
    with one of ``drop``, plus ``extra``; src and tests go first on PYTHONPATH."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env
