"""``--precision int8``: the OpenVINO model quantised after training by NNCF.

For CPUs without native bf16, int8 is the only fast mode (docs/performance.md has its
speed and its PSNR against fp32). It is opt-in and never what ``auto`` picks: its error
depends on the weights and the scene far more than bf16's does.

Calibration uses no files: synthetic dark frames made the way ``seedark demo`` and
``seedark train --synthetic`` make them (a procedural "dead leaves" scene, unprocessed
to an RGGB mosaic, darkened by a ratio in [100, 300] with the a7S II noise model, packed
and amplified as in inference), from a fixed seed, so the same weights always give the
same quantised model. The full-resolution convolutions stay fp32: quantising them cost
20-45 dB in the measurements, quantising the rest costs little.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from seedark.errors import DeviceError
from seedark.frames.packing import amplify, pack_bayer
from seedark.io.raw import RawFrame
from seedark.models.architecture import NetworkSpec
from seedark.runtime.telemetry import mute_telemetry
from seedark.synthesis.noise import synthesize
from seedark.synthesis.noiseprofile import SONY_A7S2
from seedark.synthesis.unprocess import srgb_to_mosaic

log = logging.getLogger("seedark")

#: Part of the quantised model's cache key: change it whenever calibration or the recipe changes.
RECIPE = "nncf-mixed-fp32ends-v1"
CALIBRATION_FRAMES = 24
#: Side of a calibration frame in raw pixels (packed: half).
CALIBRATION_SIDE = 512
CALIBRATION_SEED = 20181108
#: Convolutions left in fp32: the full-resolution ones, where int8 error reaches the output unfiltered.
KEEP_FP32 = ("g_conv1_1", "g_conv1_2", "g_conv9_1", "g_conv9_2", "g_conv10")


def nncf_installed() -> bool:
    try:
        return importlib.util.find_spec("nncf") is not None
    except (ImportError, ValueError):
        return False


def check_int8(spec: NetworkSpec) -> None:
    """Refuse int8 where it cannot run: without NNCF, or for a model it was not calibrated for."""
    if spec.packing != "bayer":
        raise DeviceError("int8 is calibrated for Bayer models only; use fp32 for X-Trans (Fuji) models")
    if not nncf_installed():
        raise DeviceError("int8 needs OpenVINO and NNCF: pip install 'seedark[int8]'")


def dead_leaves(rng: np.random.Generator, side: int) -> np.ndarray:
    """A ``side x side`` sRGB scene of overlapping discs: edges, flat areas and colours at every scale."""
    image = np.empty((side, side, 3))
    image[:] = rng.uniform(0.1, 0.9, 3)
    yy, xx = np.mgrid[0:side, 0:side]
    for _ in range(120):
        radius = rng.uniform(4, side / 4)
        cy, cx = rng.uniform(0, side, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius * radius] = rng.uniform(0, 1, 3) ** 1.5
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)


def calibration_frame(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One synthetic dark RGGB mosaic (uint16, a7S II levels and noise) and the ratio it was darkened by."""
    ratio = float(rng.uniform(100, 300))
    mosaic = srgb_to_mosaic(
        dead_leaves(rng, CALIBRATION_SIDE), black_level=int(SONY_A7S2.black_level), white_level=SONY_A7S2.white_level
    )
    return synthesize(mosaic, ratio, SONY_A7S2, rng), ratio


def network_input(mosaic: np.ndarray, ratio: float) -> np.ndarray:
    """1 x 4 x H/2 x W/2: an a7S II RGGB mosaic packed (:func:`seedark.frames.packing.pack_bayer`)
    and amplified as in inference, channels first as OpenVINO takes them."""
    frame = RawFrame(
        Path("<calibration>"),
        mosaic,
        np.array(list("RGGB")).reshape(2, 2),
        "bayer",
        np.full((2, 2), SONY_A7S2.black_level, dtype=np.float32),
        SONY_A7S2.white_level,
        0,
    )
    packed = amplify(pack_bayer(frame), ratio)
    return np.ascontiguousarray(packed.transpose(2, 0, 1))[None]


def calibration_inputs(count: int = CALIBRATION_FRAMES, *, seed: int = CALIBRATION_SEED) -> list[np.ndarray]:
    """``count`` packed, amplified dark frames, as the network sees them (fixed seed: reproducible)."""
    rng = np.random.default_rng(seed)
    return [network_input(*calibration_frame(rng)) for _ in range(count)]


def quantize(model: Any) -> Any:
    """The fp32 OpenVINO model quantised to int8 (about half a minute on two cores)."""
    mute_telemetry()
    import nncf

    keep = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Convolution" and any(f"{n}/" in op.get_friendly_name() for n in KEEP_FP32)
    ]
    inputs = calibration_inputs()
    log.info("quantising the network to int8 (once per model, about a minute)")
    nncf.set_log_level(logging.ERROR)
    # NNCF draws progress bars on stdout; the library never prints (the CLI owns the terminal).
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(inputs),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(inputs),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=keep),
        )
