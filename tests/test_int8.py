"""``--precision int8``: NNCF's quantised OpenVINO model, its calibration, its cache, and no telemetry.

Speed and the PSNR of int8 on the trained full-width model are measured by
benchmarks/bench_vs_official.py (docs/performance.md); here the network is width 8
with random weights, where int8 is only required to stay in the same picture.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from helpers import rawgen
from helpers.cli import child_env
from seedark.errors import DeviceError
from seedark.frames.packing import amplify, pack
from seedark.io.raw import read_raw
from seedark.models.network import NetworkSpec
from seedark.models.weights import random_weights, save_safetensors
from seedark.runtime import quantize
from seedark.runtime.backends import OpenVINOBackend, select_backend


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_calibration_frames_are_what_inference_feeds_the_network(tmp_path: Path) -> None:
    # Independent path: the synthetic mosaic written as a DNG, decoded by LibRaw and packed by seedark's packer.
    mosaic, ratio = quantize.calibration_frame(np.random.default_rng(5))
    assert mosaic.dtype == np.uint16 and mosaic.shape == (quantize.CALIBRATION_SIDE,) * 2
    assert 100 <= ratio <= 300
    frame = read_raw(rawgen.write_dng(tmp_path / "calib.dng", mosaic, cfa="RGGB", black_level=512, white_level=16383))
    expected = amplify(pack(frame), ratio).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(quantize.network_input(mosaic, ratio), expected, rtol=0, atol=1e-6)
    # Dark frames: the amplified input spans the range the network sees (not all black, not all clipped).
    packed = quantize.network_input(mosaic, ratio)
    assert 0.02 < float(packed.mean()) < 0.8 and float((packed >= 1.0).mean()) < 0.2


def test_calibration_is_reproducible() -> None:
    a = quantize.calibration_inputs(2, seed=3)
    b = quantize.calibration_inputs(2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], quantize.calibration_inputs(1, seed=4)[0])


def test_int8_is_refused_where_it_cannot_run() -> None:
    import torch

    with pytest.raises(DeviceError, match="Bayer models only"):
        quantize.check_int8(NetworkSpec(in_channels=9, block=3, width=4))
    weights = random_weights(NetworkSpec(width=4), seed=1)
    with pytest.raises(DeviceError, match="OpenVINO engine"):
        select_backend(weights, torch.device("cpu"), torch.int8, "pytorch")


@pytest.mark.slow
def test_int8_quantises_once_caches_and_stays_in_the_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    weights = random_weights(NetworkSpec(width=8), seed=3)
    tile = np.random.default_rng(0).random((96, 96, 4), dtype=np.float32)
    outputs = {}
    for precision in ("fp32", "int8"):
        backend = OpenVINOBackend(weights, precision, persist=True)
        outputs[precision] = np.zeros((192, 192, 3), np.float32)
        backend.run_tile(tile, outputs[precision], 0, 0)
    # Really quantised: the stored model carries NNCF's FakeQuantize ops, and the output moved.
    stored = [p for p in (tmp_path / "home" / "engines").rglob("model.xml") if "FakeQuantize" in p.read_text()]
    assert len(stored) == 1
    assert not np.array_equal(outputs["int8"], outputs["fp32"])
    assert psnr(outputs["int8"], outputs["fp32"]) > 20  # random width-8 weights; trained full width: benchmark
    again = OpenVINOBackend(weights, "int8", persist=True)
    out = np.zeros_like(outputs["int8"])
    again.run_tile(tile, out, 0, 0)
    assert "load_ir" in again.timings and "convert" not in again.timings
    np.testing.assert_array_equal(out, outputs["int8"])


@pytest.mark.slow
def test_cli_int8_runs_and_says_so_without_telemetry(tmp_path: Path) -> None:
    home = tmp_path / "user"
    home.mkdir()
    weights = save_safetensors(random_weights(NetworkSpec(width=8), seed=2), tmp_path / "w8.safetensors")
    mosaic = np.random.default_rng(1).integers(512, 3000, size=(64, 96), dtype=np.uint16)
    dng = rawgen.write_dng(tmp_path / "tiny.dng", mosaic)
    env = child_env(HOME=str(home), SEEDARK_HOME=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "seedark", "enhance", str(dng), "--weights", str(weights), "--ratio", "50"]
    proc = subprocess.run([*cmd, "--precision", "int8", "-o", str(tmp_path / "out.png")], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert b"int8, openvino" in proc.stderr and (tmp_path / "out.png").is_file()
    # OpenVINO's conversion and NNCF write a telemetry client id under ~/intel unless muted.
    assert list(home.iterdir()) == []
    probe = textwrap.dedent(
        """
        from seedark.runtime.telemetry import mute_telemetry
        mute_telemetry()
        import openvino_telemetry, nncf  # nncf creates its telemetry object on import
        print(openvino_telemetry.Telemetry().consent)
        """
    )
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False" and list(home.iterdir()) == []
