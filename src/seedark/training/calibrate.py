"""``seedark calibrate``: a camera's noise profile from dark frames and flat pairs.

The frames are found and checked first, from their EXIF alone (one camera, the ISO of
each, enough frames at each ISO), before any pixel is decoded; then each ISO's frames
are decoded one or two at a time and summarised by the estimators of
seedark.synthesis.calibration. The profile is kept in the user cache under the
camera (seedark.training.cameraprofiles), where ``seedark finetune`` finds it, and
written to ``-o`` as well when asked. docs/calibrate.md says how to shoot the frames.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedark.errors import CalibrationError, OutputError
from seedark.io.exifread import read_camera_metadata
from seedark.io.raw import RAW_EXTENSIONS, RawFrame, read_raw
from seedark.models.usermodels import camera_label
from seedark.progress import ProgressFn
from seedark.synthesis import calibration as est
from seedark.synthesis.noiseprofile import IsoNoise, NoiseProfile
from seedark.training import cameraprofiles

log = logging.getLogger("seedark")

#: Dark frames needed at each ISO (docs/calibrate.md asks for 10).
MIN_DARKS = 2
#: Flat exposure levels needed at each ISO, each with a pair of frames (docs: 5).
MIN_LEVELS = 2
#: ISOs needed to fit how the noise grows with the gain (docs: 4 or more).
MIN_ISOS = 2
#: The brightest flat level must be this many times the darkest's signal.
MIN_LEVEL_SPREAD = 1.5
#: Read-noise values fitted per ISO, at most (a random sample of what the darks give).
MAX_SAMPLE = 100_000


@dataclass(frozen=True)
class Frame:
    """A calibration frame as its EXIF describes it."""

    path: Path
    iso: int
    exposure: float | None
    make: str | None
    model: str | None


@dataclass(frozen=True)
class CalibrationResult:
    profile: NoiseProfile
    stored: Path  # where the cache keeps it
    written: Path | None  # the -o copy


# --------------------------------------------------------------------------- finding and checking


def raw_files(folder: str | os.PathLike[str], what: str) -> list[Path]:
    """The RAW files of a folder (not its subfolders), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"the {what} folder " + ("is not a folder" if root.exists() else "does not exist"), root)
    files = sorted(p for p in root.iterdir() if p.is_file())
    raws = [p for p in files if p.suffix.lower() in RAW_EXTENSIONS]
    if not raws:
        others = f" (its {len(files)} file(s) are not RAW files: shoot in RAW)" if files else ""
        raise CalibrationError(f"no RAW files in the {what} folder{others}", root)
    return raws


def describe_frame(path: Path) -> Frame:
    """A frame's ISO, exposure time and camera, from its EXIF (LibRaw's reading where seedark's
    reader finds no ISO, as for CR3)."""
    meta = read_camera_metadata(path)
    if meta.iso is None:
        meta = read_raw(path).camera  # also refuses a file that is not RAW, naming it
    if meta.iso is None:
        raise CalibrationError("no ISO in the file's metadata; calibration groups frames by ISO", path)
    return Frame(path, meta.iso, meta.exposure_time, meta.make, meta.model)


def flat_levels(flats: Sequence[Frame]) -> list[list[Frame]]:
    """Flats of one ISO grouped by exposure time (darkest first), each group in name order."""
    levels: dict[float, list[Frame]] = defaultdict(list)
    for frame in flats:
        if frame.exposure is None:
            raise CalibrationError("no exposure time in the file's metadata; flats are paired by it", frame.path)
        levels[float(f"{frame.exposure:.6g}")].append(frame)
    return [sorted(levels[t], key=lambda f: f.path.name) for t in sorted(levels)]


def plan(darks: Sequence[Frame], flats: Sequence[Frame]) -> dict[int, tuple[list[Frame], list[list[Frame]]]]:
    """Per ISO: its dark frames and its flat levels (pairs); CalibrationError saying what is missing."""
    dark_isos: dict[int, list[Frame]] = defaultdict(list)
    flat_isos: dict[int, list[Frame]] = defaultdict(list)
    for frame in darks:
        dark_isos[frame.iso].append(frame)
    for frame in flats:
        flat_isos[frame.iso].append(frame)
    isos = sorted(set(dark_isos) | set(flat_isos))
    out: dict[int, tuple[list[Frame], list[list[Frame]]]] = {}
    for iso in isos:
        found, levels = dark_isos[iso], [level for level in flat_levels(flat_isos[iso]) if len(level) >= 2]
        if len(found) < MIN_DARKS:
            raise CalibrationError(
                f"ISO {iso}: {len(found)} dark frame(s); at least {MIN_DARKS} are needed (10 recommended)"
            )
        if len(levels) < MIN_LEVELS:
            raise CalibrationError(
                f"ISO {iso}: flat pairs at {len(levels)} exposure time(s); at least {MIN_LEVELS} are needed "
                "(2 frames at each of 5 exposure times recommended)"
            )
        out[iso] = (found, levels)
    if len(out) < MIN_ISOS:
        raise CalibrationError(
            f"frames at {len(out)} ISO setting(s); at least {MIN_ISOS} are needed to fit how the noise "
            "grows with ISO (4 or more recommended)"
        )
    return out


# --------------------------------------------------------------------------- measuring


class _Reader:
    """Decodes frames, counting them for the progress callback."""

    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.done, self.total, self.progress = 0, total, progress
        self.white = 0  # the highest white level of the frames read

    def read(self, path: Path) -> RawFrame:
        frame = read_raw(path)
        self.white = max(self.white, frame.white_level)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        return frame


def _dark_stats(frames: Sequence[Frame], reader: _Reader, rng: np.random.Generator) -> list[est.DarkStats]:
    per_frame = max(MAX_SAMPLE // len(frames), 1000)
    stats = []
    for frame in frames:
        summary = est.dark_stats(reader.read(frame.path).mosaic, rng, per_frame)
        if summary.clipped > est.CLIPPED_SHARE:
            why = f"{100 * summary.clipped:.1f}% of its pixels are 0: the camera clipped the noise below black"
            raise CalibrationError(f"{why}; this camera cannot be calibrated from its dark frames", frame.path)
        stats.append(summary)
    return stats


def _pair_stats(first: RawFrame, second: RawFrame, black: float) -> est.FlatPairStats:
    for frame in (first, second):
        problem = est.flat_problem(frame.mosaic, black, frame.white_level)
        if problem is not None:
            raise CalibrationError(f"flat frame {problem}", frame.path)
    mismatch = est.pair_mismatch(first.mosaic, second.mosaic, black)
    if mismatch > est.PAIR_MISMATCH:
        why = f"{100 * mismatch:.0f}% brighter or darker than {second.path.name}, the other flat of its pair"
        raise CalibrationError(f"{why}; shoot each pair at the same settings and light", first.path)
    return est.flat_pair_stats(first.mosaic, second.mosaic, black, first.pattern.shape[0])


def _flat_stats(levels: Sequence[Sequence[Frame]], black: float, reader: _Reader) -> list[est.FlatPairStats]:
    pairs = []
    for level in levels:
        for first, second in zip(level[0::2], level[1::2], strict=False):
            pairs.append(_pair_stats(reader.read(first.path), reader.read(second.path), black))
    return pairs


def measure_iso(
    iso: int, darks: Sequence[Frame], levels: Sequence[Sequence[Frame]], reader: _Reader, rng: np.random.Generator
) -> IsoNoise:
    """Everything measured at one ISO (the frames decoded one or two at a time)."""
    dark = _dark_stats(darks, reader, rng)
    pairs = _flat_stats(levels, est.black_level(dark), reader)
    signals = [p.signal for p in pairs]
    if max(signals) < MIN_LEVEL_SPREAD * min(signals):
        raise CalibrationError(
            f"ISO {iso}: the flats are all about as bright ({min(signals):.0f} to {max(signals):.0f} DN above black); "
            "vary the exposure time, from about 1/8 to 3/4 of full brightness"
        )
    measured = est.estimate_iso(iso, dark, pairs)
    if not measured.k > 0:
        raise CalibrationError(f"ISO {iso}: the flats' noise does not grow with their brightness, so no gain")
    return measured


def calibrate(
    darks_dir: str | os.PathLike[str],
    flats_dir: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    seed: int = 0,
) -> CalibrationResult:
    """Measure the camera's noise from its dark frames and flat pairs, keep the profile in the
    cache under the camera (and write it to ``output``); see the module docstring."""
    if output is not None and not Path(output).parent.is_dir():
        raise OutputError("the folder to write the profile into does not exist", Path(output).parent)
    darks = [describe_frame(p) for p in raw_files(darks_dir, "dark frames")]
    flats = [describe_frame(p) for p in raw_files(flats_dir, "flat frames")]
    make, model = cameraprofiles.one_camera([(f.path, f.make, f.model) for f in (*darks, *flats)])
    work = plan(darks, flats)
    reader = _Reader(sum(len(d) + sum(len(lv) // 2 * 2 for lv in levels) for d, levels in work.values()), progress)
    rng = np.random.default_rng(seed)
    per_iso = []
    for iso, (found, levels) in work.items():
        m = measure_iso(iso, found, levels, reader, rng)
        what = f"read noise lambda {m.read_lambda:.3f} scale {m.read_scale:.3f}, row noise {m.row_scale:.3f}"
        log.info("ISO %d: K %.4g DN/e-, %s, black %.1f", iso, m.k, what, m.black_level)
        per_iso.append(m)
    label = camera_label(make, model)
    profile = est.build_profile(per_iso, name=label, make=make, model=model, white_level=reader.white)
    stored = cameraprofiles.store_profile(profile)
    written = cameraprofiles.write_copy(profile, output) if output is not None else None
    return CalibrationResult(profile, stored, written)


__all__ = ["CalibrationResult", "Frame", "calibrate", "describe_frame", "plan", "raw_files"]
