"""``seedark eval``: the scores match a hand computation, and the reports hold what they say."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rawpy
from PIL import Image

import seedark
from helpers.cli import run_cli
from helpers.sid_layout import SidLayout, make_sid_dataset
from seedark.errors import DatasetError, UsageError
from seedark.models.weights import load_weights
from seedark.training.evaluate import evaluate

FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"
# short file -> ratio, worked out by hand from the exposures in the names (10s / 0.1s ...)
HAND_RATIOS = {"10003_00_0.1s": 100.0, "10003_00_0.04s": 250.0, "10040_00_0.1s": 300.0, "10034_00_0.1s": 100.0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine() -> seedark.Engine:
    return seedark.Engine(load_weights(FIXTURE), device="cpu", precision="fp32")


def by_hand(layout: SidLayout, engine: seedark.Engine, short: str, long: str) -> tuple[float, float, np.ndarray]:
    """PSNR and SSIM the long way: enhance, postprocess, and the textbook formulas."""
    out = seedark.enhance(layout.root / "Sony/short" / f"{short}.ARW", ratio=HAND_RATIOS[short], engine=engine, tile=0)
    with rawpy.imread(str(layout.root / "Sony/long" / f"{long}.ARW")) as raw:
        gt = raw.postprocess(use_camera_wb=True, half_size=False, no_auto_bright=True, output_bps=16)
    gt = np.float32(gt / 65535.0)
    mse = np.mean((gt.astype(np.float64) - out.astype(np.float64)) ** 2)
    hand_psnr = 10 * math.log10(1.0 / mse)
    skm = pytest.importorskip("skimage.metrics")
    hand_ssim = float(skm.structural_similarity(gt, out, data_range=1.0, channel_axis=2))
    return hand_psnr, hand_ssim, out


def test_scores_match_a_hand_computation(layout: SidLayout, engine: seedark.Engine, tmp_path: Path) -> None:
    report = evaluate(layout.test_list, engine=engine, out_dir=tmp_path, save_images=True, tile=0)
    names = [s.pair.short.stem for s in report.scores]
    assert names == ["10003_00_0.1s", "10003_00_0.04s", "10040_00_0.1s"]  # misaligned 10034 left out
    hand: dict[str, tuple[float, float]] = {}
    for score in report.scores:
        short, long = score.pair.short.stem, score.pair.long.stem
        assert score.pair.ratio == HAND_RATIOS[short]
        hand_psnr, hand_ssim, out = by_hand(layout, engine, short, long)
        assert score.psnr == pytest.approx(hand_psnr, abs=1e-4)
        assert score.ssim == pytest.approx(hand_ssim, abs=1e-6)
        hand[short] = (hand_psnr, hand_ssim)
        with Image.open(tmp_path / f"{short}.png") as im:
            saved = np.asarray(im)
        np.testing.assert_array_equal(saved, np.floor(out * 255 + 0.5).astype(np.uint8))
    assert report.mean_psnr == pytest.approx(np.mean([v[0] for v in hand.values()]), abs=1e-4)
    assert report.mean_ssim == pytest.approx(np.mean([v[1] for v in hand.values()]), abs=1e-6)
    groups = report.per_ratio()
    assert list(groups) == ["x100", "x250", "x300"]
    assert groups["x250"]["psnr"] == pytest.approx(hand["10003_00_0.04s"][0], abs=1e-4)
    assert groups["x100"]["count"] == 1

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["count"] == 3 and data["excluded_scenes"] == [10034]
    assert data["excluded_pairs"] == ["./Sony/short/10034_00_0.1s.ARW"]
    assert data["mean"]["psnr"] == pytest.approx(report.mean_psnr)
    assert data["per_ratio"]["x300"]["ssim"] == pytest.approx(hand["10040_00_0.1s"][1], abs=1e-6)
    assert data["weights_file"] == str(engine.source)
    assert "data_range=1.0" in data["metrics"]["ssim"] and "channel_axis=2" in data["metrics"]["ssim"]
    assert [row["short"] for row in data["images"]] == [s.pair.short_name for s in report.scores]

    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["short", "long", "scene", "ratio", "psnr", "ssim"]
    assert rows[1] == {
        "short": "./Sony/short/10003_00_0.04s.ARW",
        "long": "./Sony/long/10003_00_10s.ARW",
        "scene": "10003",
        "ratio": "250",
        "psnr": f"{hand['10003_00_0.04s'][0]:.6f}",
        "ssim": f"{hand['10003_00_0.04s'][1]:.6f}",
    }


def test_all_keeps_the_misaligned_scenes(layout: SidLayout, engine: seedark.Engine) -> None:
    report = evaluate(layout.test_list, engine=engine, include_misaligned=True, tile=0)
    assert [s.pair.scene for s in report.scores] == [10003, 10003, 10034, 10040]
    assert report.excluded == [] and report.to_dict()["excluded_scenes"] == []


def test_rotated_files_line_up(tmp_path: Path, engine: seedark.Engine) -> None:
    layout = make_sid_dataset(tmp_path, train={}, test={10003: (10.0, (0.1,))}, val={}, orientation=6)
    score = evaluate(layout.test_list, engine=engine, tile=0).scores[0]
    hand_psnr, hand_ssim, out = by_hand(layout, engine, "10003_00_0.1s", "10003_00_10s")
    assert out.shape == (96, 64, 3)
    assert score.psnr == pytest.approx(hand_psnr, abs=1e-4) and score.ssim == pytest.approx(hand_ssim, abs=1e-6)


def test_usage_errors(layout: SidLayout, engine: seedark.Engine, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--save-images needs --out"):
        evaluate(layout.test_list, engine=engine, save_images=True)
    only_bad = tmp_path / "bad_list.txt"
    only_bad.write_text("./Sony/short/10034_00_0.1s.ARW ./Sony/long/10034_00_10s.ARW ISO200 F8\n")
    with pytest.raises(UsageError, match="misaligned"):
        evaluate(only_bad, data_root=layout.root, engine=engine)
    with pytest.raises(DatasetError, match="list file not found"):
        evaluate(tmp_path / "none.txt", engine=engine)


def test_cli_eval(layout: SidLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "eval"
    options = ["--weights", FIXTURE, "--device", "cpu", "--tile", "0", "--out", out_dir, "--limit", "3"]
    code, out, err = run_cli(capsys, "eval", "--data", layout.root, "--list", "Sony_test_list.txt", *options)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("./Sony/short/10003_00_0.1s.ARW  x100  PSNR ")
    assert "mean of 3 images: PSNR" in out and "x250: PSNR" in out
    # the list is read up to the 3rd pair scored, past the misaligned one (tests/test_guard_round3.py)
    assert "left out 1 pair(s) of misaligned scenes 10034" in out
    data = json.loads((out_dir / "results.json").read_text())
    assert data["count"] == 3 and data["weights"] == str(FIXTURE)
    assert f"{data['mean']['psnr']:.2f} dB" in out
    assert (out_dir / "results.csv").is_file()

    code, _, err = run_cli(capsys, "eval", "--list", tmp_path / "missing.txt", "--weights", FIXTURE)
    assert code == 1 and "list file not found" in err
