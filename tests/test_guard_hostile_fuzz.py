"""Mutated DNGs (issue 15): every damaged file gives a result or one clean SeedarkError.

A real DNG from tests/helpers/rawgen.py has its IFDs mutated with a fixed seed: the
entry counts of IFD0 and the Exif IFD, and each entry's tag, type, count and
value/offset field, plus the out-of-line bytes an entry points at. Each mutant goes
through ``read_raw`` and ``describe`` (what ``seedark info`` prints); anything but a
result or a one-line SeedarkError (an IndexError, a rawpy exception, a MemoryError...)
fails the test, which names the mutant's number and the mutations made.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from helpers.rawgen import IfdEntry, ifd_entries, write_dng
from seedark.errors import SeedarkError
from seedark.io.raw import read_raw
from seedark.pipeline.info import describe

MUTANTS = 1000
SEED = 15


def _number(rng: np.random.Generator, choices: list[int], bits: int) -> int:
    """A boundary value half of the time, any value of the field's width otherwise."""
    if rng.random() < 0.5:
        return int(choices[rng.integers(len(choices))]) % (1 << bits)
    return int(rng.integers(0, 1 << bits))


def _mutate(data: bytearray, ifds: dict[int, list[IfdEntry]], rng: np.random.Generator) -> list[str]:
    """One to three mutations of ``data``, in place; returns what was done."""
    entries = [e for found in ifds.values() for e in found]
    tags = [e.tag for e in entries]
    size = len(data)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        e = entries[rng.integers(len(entries))]
        kind = ("entry count", "tag", "type", "count", "value", "pointed bytes")[rng.integers(6)]
        if kind == "entry count":
            start = list(ifds)[rng.integers(len(ifds))]
            struct.pack_into("<H", data, start, _number(rng, [0, 1, len(ifds[start]) + 1, 0xFFFF], 16))
        elif kind == "tag":
            struct.pack_into("<H", data, e.at, _number(rng, [e.tag + 1, e.tag - 1, *tags], 16))
        elif kind == "type":
            struct.pack_into("<H", data, e.at + 2, int(rng.integers(0, 20)))
        elif kind == "count":
            struct.pack_into("<I", data, e.at + 4, _number(rng, [0, 1, e.count * 2, 2**31, 2**32 - 1], 32))
        elif kind == "value":
            struct.pack_into("<I", data, e.at + 8, _number(rng, [0, 1, size - 1, size, 2**31, 2**32 - 1], 32))
        elif e.value + 8 <= size:  # scramble what the entry points at (CFA pattern, levels, matrix...)
            data[e.value : e.value + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        done.append(f"{kind} of tag {e.tag}")
    return done


def _outcome(call: object, path: Path) -> str:
    """ "result", "error" (a one-line SeedarkError), or what else came out."""
    try:
        call(path)  # type: ignore[operator]
    except SeedarkError as exc:
        text = str(exc)
        return "error" if text and "\n" not in text else f"a SeedarkError of more than one line: {text!r}"
    except Exception as exc:  # the point of the test: nothing else may come out
        return f"{type(exc).__name__}: {exc}"
    return "result"


def test_mutated_dngs_give_a_result_or_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A mutant may declare any size: a 4 MP limit keeps each one to milliseconds and megabytes
    # (the limit itself is checked before any pixel is read, and counts as a clean error).
    monkeypatch.setenv("SEEDARK_MAX_PIXELS", "4M")
    rng = np.random.default_rng(SEED)
    mosaic = rng.integers(500, 3000, size=(24, 36), dtype=np.uint16)
    original = write_dng(tmp_path / "original.dng", mosaic).read_bytes()
    ifds = ifd_entries(original)
    assert len(ifds) == 2 and sum(len(e) for e in ifds.values()) > 30  # IFD0 and the Exif IFD
    mutant = tmp_path / "mutant.dng"
    failures: list[str] = []
    outcomes = {"result": 0, "error": 0}
    for number in range(MUTANTS):
        data = bytearray(original)
        done = _mutate(data, ifds, rng)
        mutant.write_bytes(data)
        for call in (read_raw, describe):
            got = _outcome(call, mutant)
            if got in outcomes:
                outcomes[got] += 1
            else:
                failures.append(f"mutant {number} ({', '.join(done)}) through {call.__name__}: {got}")
    assert failures == []
    # both outcomes are common: the mutants neither all break the file nor all miss what matters
    assert min(outcomes.values()) > MUTANTS // 4, outcomes
