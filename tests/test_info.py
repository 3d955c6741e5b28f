"""``seedark info``: the printed values against what was written into generated DNGs.

Expected values are the literals put into the files (camera, lens, date, exposure,
ISO, levels, sizes) and auto ratios worked out by hand from docs/exposure.md: a
normal exposure puts the average scene at 0.12 of the black-to-white range, the
ratio is 0.12 / level clamped to [1, 300].
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.rawgen import write_dng

# Black 1000 and white 11000: the range is exactly 10000 DN, so s DN above black is
# the level s / 10000.
BLACK, WHITE = 1000, 11000
# One 2x2 RGGB cell, DN above black: R 60, G 144, G 144, B 132 (mean 120, level 0.012).
CELL = np.array([[60, 144], [144, 132]])
H, W = 48, 64


def fields(block: str) -> dict[str, str]:
    """'label: value' lines as a dict (labels are padded to a common width)."""
    rows = {}
    for line in block.splitlines():
        label, _, value = line.partition(":")
        rows[label] = value.strip()
    return rows


def cell_mosaic(cell: np.ndarray, black: int | np.ndarray = BLACK) -> np.ndarray:
    return (np.tile(cell + black, (H // 2, W // 2))).astype(np.uint16)


def cell_dng(path: Path, cell: np.ndarray = CELL, **camera: Any) -> Path:
    """``cell`` over the whole frame, above black ``BLACK``, white ``WHITE``."""
    return write_dng(path, cell_mosaic(cell), black_level=BLACK, white_level=WHITE, **camera)


def test_prints_the_files_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cell_dng(
        tmp_path / "canon.dng",
        make="Canon",
        model="EOS R6",
        lens_model="RF 50mm F1.2L USM",
        datetime_original="2024:02:29 23:59:58",
        exposure_time=0.04,
        iso=12800,
    )
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert fields(out) == {
        "file": str(path),
        "camera": "Canon EOS R6",
        "lens": "RF 50mm F1.2L USM",
        "sensor": f"bayer {W}x{H} (visible)",
        "output size": f"{W}x{H}",
        "CFA layout": "RGGB",
        "black level": "1000",
        "white level": "11000",
        "exposure": "1/25 s",
        "ISO": "12800",
        "taken": "2024:02:29 23:59:58",
        "auto ratio": "x10.0 (range 1-300)",  # 0.12 / 0.012
        "model": "sony (the default model, sony, suits this sensor)",
        # the file's matrix is the a7S II's (rawgen's default for a Bayer file): the model's own colours
        "colour data": "DNG ColorMatrix1 (D65)",
        "colour map": "none: this is the sony model's camera (Sony a7S II)",
    }
    # labels padded to the longest one ("output size:") plus a space
    assert "auto ratio:  x10.0 (range 1-300)\n" in out
    assert "taken:       2024:02:29 23:59:58\n" in out


@pytest.mark.parametrize(
    ("scale", "want"),
    [
        (1 / 3, "x30.0"),  # R 20, G 48, G 48, B 44: mean 40, level 0.004
        (2.5, "x4.0"),  # mean 300, level 0.03
        (10, "x1.0"),  # mean 1200, level 0.12: a normal exposure
        (20, "x1.0"),  # level 0.24 -> 0.5, clamped to 1
        (0, "x300.0"),  # no signal
    ],
)
def test_auto_ratio_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str], scale: float, want: str) -> None:
    cell = np.round(CELL * scale).astype(np.int64)
    path = cell_dng(tmp_path / "flat.dng", cell)
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert fields(out)["auto ratio"] == f"{want} (range 1-300)"


def test_per_position_black_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Blacks R 1000, G 1500, G 1500, B 2000: ranges 10000, 9500, 9500, 9000 DN. Signals of
    # 60, 152, 152, 90 DN are levels 0.006, 0.016, 0.016, 0.010: mean 0.012, ratio 10.
    blacks = np.array([[1000, 1500], [1500, 2000]])
    signal = np.array([[60, 152], [152, 90]])
    path = write_dng(
        tmp_path / "blacks.dng", cell_mosaic(signal, blacks), black_level=(1000, 1500, 1500, 2000), white_level=WHITE
    )
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    rows = fields(out)
    assert rows["black level"] == "1000, 1500, 2000"
    assert rows["auto ratio"] == "x10.0 (range 1-300)"


def test_rotated_and_sparse_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cell_dng(
        tmp_path / "acme.dng",
        make="Acme",
        model="Night 3",
        lens_model=None,
        exposure_time=10.0,
        iso=None,
        orientation=6,  # 90° clockwise: the output is portrait
    )
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    rows = fields(out)
    assert rows["camera"] == "Acme Night 3"
    assert rows["lens"] == "unknown"
    assert rows["ISO"] == "unknown"
    assert rows["exposure"] == "10 s"
    assert rows["sensor"] == f"bayer {W}x{H} (visible)"
    assert rows["output size"] == f"{H}x{W}"
    assert rows["auto ratio"] == "x10.0 (range 1-300)"


def test_missing_date_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_dng(tmp_path / "nodate.dng", cell_mosaic(CELL), datetime_original=None)
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert fields(out)["taken"] == "unknown"


def test_exposure_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator) -> None:
    """One scene at 10 s (normally exposed) and 0.1 s: info reports ratios ~1 and ~100 (±30%)."""
    black, white, gain = 512, 16383, 2.0
    h, w = 128, 192
    radiance = np.kron(rng.lognormal(0.0, 0.5, (h // 8, w // 8)), np.ones((8, 8))) * rng.lognormal(0, 0.3, (h, w))
    radiance /= radiance.mean()
    rate = radiance * 0.12 * (white - black) / gain / 10.0  # electrons/s: mean level 0.12 in 10 s

    def capture(name: str, seconds: float) -> Path:
        signal = rng.poisson(rate * seconds) * gain + rng.normal(0, 4.0, (h, w))
        mosaic = np.clip(np.round(signal + black), 0, white).astype(np.uint16)
        return write_dng(tmp_path / name, mosaic, black_level=black, white_level=white, exposure_time=seconds)

    code, out, err = run_cli(capsys, "info", capture("long.dng", 10.0), capture("short.dng", 0.1))
    assert code == 0, err
    long_block, short_block = out.split("\n\n")
    ratios = {}
    for name, block in (("long", long_block), ("short", short_block)):
        rows = fields(block)
        match = re.fullmatch(r"x(\d+\.\d) \(range 1-300\)", rows["auto ratio"])
        assert match, rows["auto ratio"]
        ratios[name] = float(match.group(1))
    assert fields(long_block)["exposure"] == "10 s"
    assert fields(short_block)["exposure"] == "1/10 s"
    assert abs(ratios["long"] - 1) <= 0.3, ratios
    assert abs(ratios["short"] / 100 - 1) <= 0.3, ratios
