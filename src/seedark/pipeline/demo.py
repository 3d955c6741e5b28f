"""``seedark demo``: a first run that needs no RAW file of one's own.

A clean photograph shipped with seedark (``seedark/data/coffee.jpg``, CC0, see
``seedark/data/NOTICE``) is made into the frame a Sony a7S II would have recorded
``ratio`` times too short: unprocessed to a 14-bit RGGB mosaic (seedark.synthesis.unprocess),
darkened, given the calibrated a7S II low-light noise (seedark.synthesis.noise) and
written as a real DNG. That file then goes the way of any RAW file (``enhance_file``):
LibRaw decodes it and the official model, downloaded and verified on first use,
enhances it, with the ``--compare`` picture beside it. Without the model (offline, no
download), the dark frame is still written: a RAW file to try once the model is there.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seedark._version import __version__
from seedark.errors import DownloadError, UsageError, WeightsError
from seedark.frames.exposure import parse_ratio
from seedark.io.dng import A7S2_COLOR_MATRIX, write_dng
from seedark.io.image import check_destination
from seedark.io.metadata import CameraMetadata
from seedark.pipeline.enhance import enhance_file
from seedark.pipeline.output import check_output_folder, folder_for, plan_output
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, engine_for
from seedark.synthesis.noise import NoiseParams, add_noise, typical_params
from seedark.synthesis.noiseprofile import SONY_A7S2, NoiseProfile
from seedark.synthesis.unprocess import DEFAULT_SRGB_WB, as_shot_neutral, camera_from_srgb, srgb_to_mosaic

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: The bundled photograph and the name of the dark frame made from it.
PHOTO = "coffee.jpg"
DARK_NAME = "coffee_dark.dng"
DEFAULT_OUTPUT = Path("seedark-demo")
#: In the middle of the paper's 100-300.
DEFAULT_RATIO = 200.0
#: The demo simulates an exposure shorter than the photograph's, never a longer one.
MIN_RATIO = 1.0
#: The well-exposed shot the photograph stands for, in seconds (SID's long exposures are 10 s),
#: so the dark frame's EXIF exposure time is this / ratio.
REFERENCE_EXPOSURE = 10.0


@dataclass(frozen=True)
class DemoResult:
    """The files one demo wrote: the simulated dark RAW frame, the enhanced image, the comparison."""

    raw: Path
    image: Path
    compare: Path


def demo_photo() -> np.ndarray:
    """The bundled clean photograph: H x W x 3 float64 sRGB in [0, 1], cropped to even sides."""
    from PIL import Image  # only here: nothing else of the demo needs Pillow

    with resources.files("seedark").joinpath("data", PHOTO).open("rb") as fh, Image.open(fh) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    return rgb[:h, :w]


def demo_noise(profile: NoiseProfile = SONY_A7S2) -> NoiseParams:
    """The noise of the demo frame: the calibrated fits at the geometric middle of the gain range."""
    return typical_params(profile, math.sqrt(profile.k_min * profile.k_max))


def clean_mosaic(srgb: np.ndarray, profile: NoiseProfile = SONY_A7S2) -> np.ndarray:
    """The well-exposed a7S II mosaic of an sRGB image (black-subtracted DN, float64, RGGB)."""
    return srgb_to_mosaic(
        srgb,
        black_level=profile.black_level,
        white_level=profile.white_level,
        wb=DEFAULT_SRGB_WB,
        cam_from_srgb=camera_from_srgb(A7S2_COLOR_MATRIX),
    )


def dark_frame(srgb: np.ndarray, ratio: float, seed: int, profile: NoiseProfile = SONY_A7S2) -> np.ndarray:
    """The raw mosaic (uint16, black level included) of ``srgb`` shot ``ratio`` times too short."""
    rng = np.random.default_rng(seed)
    return add_noise(
        clean_mosaic(srgb, profile),
        ratio,
        demo_noise(profile),
        rng,
        black_level=profile.black_level,
        white_level=profile.white_level,
    )


def write_dark_frame(path: Path, ratio: float, seed: int, *, overwrite: bool = False) -> Path:
    """The demo's dark frame as a DNG file with the a7S II's levels, colour matrix and white balance."""
    profile = SONY_A7S2
    meta = CameraMetadata(
        make="seedark",
        model="demo (simulated Sony ILCE-7SM2)",
        exposure_time=REFERENCE_EXPOSURE / ratio,
    )
    return write_dng(
        path,
        dark_frame(demo_photo(), ratio, seed, profile),
        overwrite=overwrite,
        cfa="RGGB",
        black_level=profile.black_level,
        white_level=profile.white_level,
        metadata=meta,
        as_shot_neutral=as_shot_neutral(DEFAULT_SRGB_WB),
        color_matrix=A7S2_COLOR_MATRIX,
        software=f"seedark {__version__} demo",
    )


def _check_numbers(ratio: float | str, seed: int) -> float:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a whole number >= 0, got {seed!r}")
    given = parse_ratio(ratio)
    if given is None:
        raise UsageError("the demo darkens the photograph by the ratio, so it needs a number (e.g. 200), not auto")
    if given < MIN_RATIO:
        # below 1 the frame would be brighter than the photograph; far below, no noise model can make it
        raise UsageError(f"the demo's ratio says how many times too short the exposure is: at least 1, got {ratio}")
    return given


@contextlib.contextmanager
def _removed_on_failure(new: list[Path]) -> Iterator[None]:
    """On any failure (Ctrl-C too), remove ``new``, the files this run creates, so running
    the demo again just works."""
    try:
        yield
    except BaseException:
        for path in new:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _demo_engine(settings: EngineOptions, raw: Path) -> Engine:
    """The engine for the dark frame; a model that cannot be had says what to do with the frame."""
    try:
        return engine_for("bayer", settings)
    except (DownloadError, WeightsError) as exc:
        folder = shlex.quote(str(raw.parent))
        note = (
            f"\n\nThe dark RAW frame is written all the same: {raw}\n"
            f"Once the model is installed, enhance it with `seedark enhance {shlex.quote(str(raw))}`, "
            f"or run the demo again: `seedark demo -o {folder} --overwrite`."
        )
        raise type(exc)(exc.reason + note, exc.path) from exc


def run_demo(
    output: str | os.PathLike[str] = DEFAULT_OUTPUT,
    *,
    ratio: float | str = DEFAULT_RATIO,
    seed: int = 0,
    overwrite: bool = False,
    engine: Engine | None = None,
    **options: Unpack[EngineKwargs],
) -> DemoResult:
    """Make the demo's dark frame in ``output`` and enhance it; returns the three files written.

    Every check comes first. The dark frame is written before the model is loaded (downloaded
    on first use), so that a model that cannot be had still leaves a RAW file to try; a
    failure after that removes the enhanced image and comparison this run began, and a
    failure while enhancing the dark frame too.
    """
    given = _check_numbers(ratio, seed)
    settings = EngineOptions.from_kwargs(**options)
    folder = Path(output)
    raw = folder / DARK_NAME
    check_destination(raw, overwrite=overwrite, create_folder=True)
    check_output_folder(folder)
    with folder_for(raw):  # the folders made here go again if they are left empty (a failure)
        plan = plan_output(raw, folder, overwrite=overwrite, compare=True)
        new = [p for p in (raw, plan.path, plan.compare_path) if not (p.exists() or p.is_symlink())]
        write_dark_frame(raw, given, seed, overwrite=overwrite)
        if engine is None:
            engine = _demo_engine(settings, raw)  # when it fails, the dark frame stays: a RAW file to try
        with _removed_on_failure(new):
            image = enhance_file(
                raw, plan.path, ratio=given, overwrite=overwrite, compare=True, engine=engine, **options
            )
    return DemoResult(raw, image, plan.compare_path)


__all__ = [
    "DEFAULT_OUTPUT",
    "DEFAULT_RATIO",
    "DemoResult",
    "clean_mosaic",
    "dark_frame",
    "demo_noise",
    "demo_photo",
    "run_demo",
    "write_dark_frame",
]
