"""docs/development.md and docs/usage.md: "the library never prints or exits".

Messages go to the ``seedark`` logger, progress to callbacks, failures are SeedarkError
subclasses; only seedark.cli (and ``python -m seedark``) talks to the terminal or exits.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import seedark
from helpers.httpserver import block_internet, clean_environment
from helpers.rawgen import dark_dng
from seedark.errors import DeviceError, OutputError, RawReadError, SeedarkError, UsageError, WeightsError

SRC = Path(__file__).resolve().parents[1] / "src" / "seedark"
FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"
#: What may talk to the terminal or exit: the command line (cli/) and ``python -m seedark``.
TERMINAL = ("cli", "__main__.py")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


FORBIDDEN_CALLS = {"print", "exit", "quit", "input", "breakpoint", "sys.exit", "os._exit", "os.abort"}
FORBIDDEN_PREFIXES = ("click.", "sys.stdout.", "sys.__stdout__.", "sys.__stderr__.")
FORBIDDEN_STREAM_WRITES = {"sys.stderr.write", "sys.stderr.writelines"}


def test_no_module_but_the_cli_prints_or_exits() -> None:
    offences = []
    modules = sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in TERMINAL)
    assert len(modules) > 40
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in FORBIDDEN_CALLS or name in FORBIDDEN_STREAM_WRITES or name.startswith(FORBIDDEN_PREFIXES):
                    offences.append(f"{where}: {name}()")
            elif isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if _dotted(exc) in ("SystemExit", "KeyboardInterrupt"):
                    offences.append(f"{where}: raise {_dotted(exc)}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in ("click", "tqdm") for n in names):
                    offences.append(f"{where}: imports {names}")
    assert offences == []


def _raises(call: Callable[[], object], kind: type[SeedarkError]) -> SeedarkError:
    """The call fails with a ``kind`` (a SeedarkError), not SystemExit or anything else."""
    try:
        call()
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are what we look for
        assert isinstance(exc, kind), f"{type(exc).__name__}: {exc}"
        return exc
    raise AssertionError(f"no {kind.__name__} raised")


def test_library_calls_print_nothing_and_raise_seedark_errors(
    tmp_path: Path,
    rng: np.random.Generator,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    # The logger as the library leaves it (an earlier CLI test in this process may have given it a
    # stderr handler): no handler of its own, so every message only reaches logging's own machinery.
    logger = logging.getLogger("seedark")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    caplog.set_level(logging.DEBUG, logger="seedark")

    shots = tmp_path / "shots"
    shots.mkdir()
    dng = dark_dng(shots / "a.dng", rng, (40, 54), (500, 900), orientation=6)
    (shots / "b.dng").write_bytes(b"not a raw file\n" * 10)  # fails inside the batch
    progress: list[tuple[int, int]] = []

    # everything that works
    engine = seedark.load_engine(weights=FIXTURE, device="cpu", precision="fp32")
    image = seedark.enhance(dng, ratio=20, engine=engine)
    written = seedark.enhance_file(
        dng, tmp_path / "a.png", engine=engine, compare=True, progress=lambda d, t: progress.append((d, t))
    )  # auto ratio
    rows = seedark.describe(dng)
    # in process (isolate=False): a spawned decoder costs seconds of imports; its output would reach fd 1/2 too
    report = seedark.run_batch([shots], tmp_path / "batch", weights=FIXTURE, ratio=20, device="cpu", isolate=False)
    assert image.shape == (54, 40, 3) and written.exists() and (tmp_path / "a_compare.jpg").exists()
    assert progress[-1][0] == progress[-1][1] and rows
    assert [src.name for src, _, _ in report.converted] == ["a.dng"]
    assert [src.name for src, _ in report.failed] == ["b.dng"]

    # everything that fails: a SeedarkError subclass, never an exit
    _raises(lambda: seedark.enhance(tmp_path / "missing.ARW", ratio=3, engine=engine), RawReadError)
    _raises(lambda: seedark.describe(shots / "b.dng"), RawReadError)
    _raises(lambda: seedark.enhance(dng, ratio="bright", engine=engine), UsageError)
    _raises(lambda: seedark.enhance_file(dng, tmp_path / "x.png", ratio=0, engine=engine), UsageError)
    _raises(lambda: seedark.enhance_file(dng, tmp_path / "x.bmp", ratio=3, engine=engine), UsageError)
    _raises(lambda: seedark.enhance_file(dng, tmp_path / "a.png", ratio=3, engine=engine), OutputError)  # exists
    _raises(lambda: seedark.enhance(dng, ratio=3, tile="huge", engine=engine), UsageError)
    _raises(lambda: seedark.run_batch([shots], ratio=-1, weights=FIXTURE), UsageError)
    _raises(lambda: seedark.load_weights(tmp_path / "no-weights"), WeightsError)
    _raises(lambda: seedark.load_model("canon"), UsageError)
    _raises(lambda: seedark.load_model("sony", download=False), WeightsError)  # not cached
    _raises(lambda: seedark.load_engine(weights=FIXTURE, device="cuda:3"), DeviceError)

    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # the messages went to the logger instead
    assert any("running on cpu" in r.getMessage() for r in caplog.records)


def test_libraw_complaints_become_the_error_not_output(
    tmp_path: Path, rng: np.random.Generator, capfd: pytest.CaptureFixture[str]
) -> None:
    truncated = dark_dng(tmp_path / "cut.dng", rng, (64, 96), (500, 900))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # LibRaw complains on fd 2
    error = _raises(lambda: seedark.read_raw(truncated), RawReadError)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "Unexpected end of file" in error.reason
