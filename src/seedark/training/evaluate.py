"""Scoring a model on an official SID list, the way the paper's table is made.

For each pair of the list: the dark input is enhanced with the ratio taken from
the file names (``min(long / short exposure, 300)``), the reference is the
official ground truth (``rawpy.postprocess`` of the long exposure / 65535), and
both are compared in [0, 1] sRGB with PSNR and SSIM (seedark.training.metrics, equal to
scikit-image's with ``data_range=1.0`` and ``channel_axis=2``). The three test
scenes whose exposures are misaligned are left out unless asked for.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from seedark._files import write_atomic
from seedark._version import __version__
from seedark.errors import OutputError, UsageError
from seedark.frames.prepare import prepare
from seedark.io.image import check_destination, write_image
from seedark.io.pixels import apply_orientation
from seedark.io.raw import RawFrame, read_raw
from seedark.models.registry import default_model_for
from seedark.models.weights import LoadedWeights
from seedark.models.weightsfile import WeightsFile
from seedark.progress import ProgressFn
from seedark.runtime.cluster import Cluster, Stopped, WorkerContext, parse_cluster, worker_pool
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, engine_for, infer, parse_tile
from seedark.training.arraycache import ArrayCache
from seedark.training.dataset import (
    MISALIGNED_SCENES,
    Pair,
    check_pairs,
    iter_list,
    ratio_label,
    sensor_geometry,
    unorient,
)
from seedark.training.metrics import psnr, ssim

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

log = logging.getLogger("seedark")

CSV_NAME = "results.csv"
JSON_NAME = "results.json"
CSV_COLUMNS = ("short", "long", "scene", "ratio", "psnr", "ssim")
METRIC_SETTINGS = {
    "psnr": "skimage.metrics.peak_signal_noise_ratio(gt, out, data_range=1.0)",
    "ssim": "skimage.metrics.structural_similarity(gt, out, data_range=1.0, channel_axis=2): "
    "7x7 uniform window, K1=0.01, K2=0.03, sample covariance, 3-pixel border cropped",
    "images": "network output clipped to [0, 1]; ground truth rawpy.postprocess(use_camera_wb=True, "
    "half_size=False, no_auto_bright=True, output_bps=16) / 65535",
}


@dataclass(frozen=True)
class ImageScore:
    pair: Pair
    psnr: float
    ssim: float
    output: Path | None = None

    def row(self) -> dict[str, Any]:
        return {
            "short": self.pair.short_name or str(self.pair.short),
            "long": self.pair.long_name or str(self.pair.long),
            "scene": f"{self.pair.scene:05d}",
            "ratio": self.pair.ratio,
            "psnr": self.psnr,
            "ssim": self.ssim,
        }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


@dataclass
class EvalReport:
    """Scores of one run, with what produced them."""

    scores: list[ImageScore]
    excluded: list[Pair] = field(default_factory=list)
    list_file: Path | None = None
    data_root: Path | None = None
    include_misaligned: bool = False
    model: str | None = None
    weights: str | None = None
    weights_file: str | None = None
    device: str | None = None
    precision: str | None = None

    @property
    def mean_psnr(self) -> float:
        return _mean([s.psnr for s in self.scores])

    @property
    def mean_ssim(self) -> float:
        return _mean([s.ssim for s in self.scores])

    def per_ratio(self) -> dict[str, dict[str, float | int]]:
        """Mean PSNR / SSIM per ratio group (x100, x250, x300), in increasing ratio order."""
        groups: dict[str, list[ImageScore]] = {}
        for s in sorted(self.scores, key=lambda s: s.pair.ratio):
            groups.setdefault(ratio_label(s.pair.ratio), []).append(s)
        return {
            label: {"count": len(g), "psnr": _mean([s.psnr for s in g]), "ssim": _mean([s.ssim for s in g])}
            for label, g in groups.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return _finite(
            {
                "seedark_version": __version__,
                "list": str(self.list_file) if self.list_file else None,
                "data": str(self.data_root) if self.data_root else None,
                "model": self.model,
                "weights": self.weights,
                "weights_file": self.weights_file,
                "device": self.device,
                "precision": self.precision,
                "metrics": METRIC_SETTINGS,
                "include_misaligned": self.include_misaligned,
                "excluded_scenes": sorted({p.scene for p in self.excluded}),
                "excluded_pairs": [p.short_name or str(p.short) for p in self.excluded],
                "count": len(self.scores),
                "mean": {"psnr": self.mean_psnr, "ssim": self.mean_ssim},
                "per_ratio": self.per_ratio(),
                "images": [s.row() for s in self.scores],
            }
        )


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: they become null (PSNR is inf only for a perfect match)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def align_ground_truth(
    gt: np.ndarray, gt_flip: int, frame: RawFrame, output: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth, output) cropped to the sensor area both cover, oriented like the output, float32.

    ``gt`` is uint16 as ``postprocess`` gives it; ``output`` is what
    ``seedark.enhance`` returns for ``frame``. The crop happens in sensor
    orientation so that the same sensor pixels are compared whatever the rotation.
    """
    y0, x0, _, _ = sensor_geometry(frame)
    sensor_gt = unorient(gt, gt_flip)[y0:, x0:]
    sensor_out = unorient(output, frame.flip)
    h = min(sensor_gt.shape[0], sensor_out.shape[0])
    w = min(sensor_gt.shape[1], sensor_out.shape[1])
    ref = apply_orientation(sensor_gt[:h, :w], frame.flip)
    out = apply_orientation(sensor_out[:h, :w], frame.flip)
    ref32 = np.asarray(ref, dtype=np.float32) / np.float32(65535.0)
    return ref32, np.ascontiguousarray(out, dtype=np.float32)


def score_image(gt: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of an output against its ground truth, both H x W x 3 in [0, 1]."""
    return psnr(gt, out, 1.0), ssim(gt, out, 1.0)


class _LastGroundTruth:
    """Without a disk cache, keep the last decoded reference: list lines come grouped by scene."""

    def __init__(self, cache: ArrayCache | None) -> None:
        self.cache = cache or ArrayCache(None)
        self.key: Path | None = None
        self.value: tuple[np.ndarray, int] | None = None

    def get(self, path: Path) -> tuple[np.ndarray, int]:
        if self.key != path or self.value is None:
            self.value = self.cache.ground_truth(path)
            self.key = path
        return self.value


def score_pair(
    pair: Pair,
    engine: Engine,
    *,
    tile: int | None,
    references: _LastGroundTruth,
    image_path: Path | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    match_sensor: bool = True,
) -> ImageScore:
    """One pair enhanced and scored (and, with ``image_path``, its output written there as a PNG;
    an existing file is replaced only with ``overwrite``)."""
    frame = read_raw(pair.short)
    output = infer(prepare(frame, pair.ratio), engine, tile=tile, progress=progress, match_sensor=match_sensor)
    gt, gt_flip = references.get(pair.long)
    ref, out = align_ground_truth(gt, gt_flip, frame, output)
    value_psnr, value_ssim = score_image(ref, out)
    written = None
    if image_path is not None:
        written = write_image(
            image_path,
            out,
            fmt="png",
            bits=8,
            metadata=frame.camera,
            software=f"seedark {__version__}",
            overwrite=overwrite,
        )
    log.debug("%s x%g: PSNR %.2f dB, SSIM %.4f", pair.short.name, pair.ratio, value_psnr, value_ssim)
    return ImageScore(pair, value_psnr, value_ssim, written)


def evaluate_pairs(
    pairs: Sequence[Pair],
    engine: Engine,
    *,
    tile: str | int | None = "auto",
    cache: ArrayCache | None = None,
    image_dir: Path | None = None,
    on_image: Callable[[ImageScore], None] | None = None,
    progress: ProgressFn | None = None,
    match_sensor: bool = True,
    overwrite: bool = False,
) -> list[ImageScore]:
    """Score every pair; with ``image_dir``, also write each output as an 8-bit PNG there
    (named by :func:`image_paths`; an existing file is replaced only with ``overwrite``).
    ``match_sensor``: each file's colours are mapped to the model's camera (docs/cameras.md)."""

    tile = parse_tile(tile)
    references = _LastGroundTruth(cache)
    paths = image_paths(pairs, image_dir, overwrite=overwrite)
    scores: list[ImageScore] = []
    for done, pair in enumerate(pairs, 1):
        score = score_pair(
            pair,
            engine,
            tile=tile,
            references=references,
            image_path=paths[done - 1],
            overwrite=overwrite,
            match_sensor=match_sensor,
        )
        scores.append(score)
        if on_image is not None:
            on_image(score)
        if progress is not None:
            progress(done, len(pairs))
    return scores


def image_paths(pairs: Sequence[Pair], folder: Path | None, *, overwrite: bool = False) -> list[Path | None]:
    """Where ``--save-images`` writes each pair's output in ``folder`` (all None without one), checked
    before any work: ``<stem>.png``, or ``<stem>_<n>.png`` (``n``: the pair's place in the list) for a
    stem that two pairs share (the same name in two folders), so that no image replaces another;
    an existing file is refused unless ``overwrite``."""
    if folder is None:
        return [None] * len(pairs)
    counts = Counter(os.path.normcase(p.short.stem) for p in pairs)
    taken = {os.path.normcase(f"{p.short.stem}.png") for p in pairs if counts[os.path.normcase(p.short.stem)] == 1}
    paths: list[Path | None] = []
    for n, pair in enumerate(pairs, 1):
        name = f"{pair.short.stem}.png"
        if counts[os.path.normcase(pair.short.stem)] > 1:
            name, extra = f"{pair.short.stem}_{n}.png", 2
            while os.path.normcase(name) in taken:
                name, extra = f"{pair.short.stem}_{n}_{extra}.png", extra + 1
            taken.add(os.path.normcase(name))
        check_destination(folder / name, overwrite=overwrite)
        paths.append(folder / name)
    return paths


def split_misaligned(pairs: Sequence[Pair], include_misaligned: bool) -> tuple[list[Pair], list[Pair]]:
    """(pairs to score, pairs left out)."""
    if include_misaligned:
        return list(pairs), []
    kept = [p for p in pairs if p.scene not in MISALIGNED_SCENES]
    return kept, [p for p in pairs if p.scene in MISALIGNED_SCENES]


def evaluate(
    list_file: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    engine: Engine | None = None,
    include_misaligned: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    save_images: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    on_image: Callable[[ImageScore], None] | None = None,
    cluster: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    **engine_options: Unpack[EngineKwargs],
) -> EvalReport:
    """Score a model on an official list; with ``out_dir``, write results.csv and results.json there.

    The model: ``engine``, or ``weights`` (a file or loaded weights), or a cached
    ``model`` name (default: the registry's model for the dataset's sensor).
    ``progress`` counts images. ``cluster`` (``ray`` or ``ray://HOST:PORT``) scores the
    pairs on ``workers`` Ray workers instead, with the same results (docs/cluster.md).
    ``save_images``: each output as a PNG in ``out_dir`` (:func:`image_paths`), an existing
    one replaced only with ``overwrite``. ``limit``: the list is read only as far as needed.
    """
    options = EngineOptions.from_kwargs(**engine_options)
    where = parse_cluster(cluster, workers)
    if where is not None and engine is not None:
        raise UsageError("an engine cannot be sent to a cluster: give weights or a model")
    if save_images and out_dir is None:
        raise UsageError("--save-images needs --out, the folder to write the images into")
    src = Path(list_file)
    kept, excluded = _pairs_to_score(src, data_root, include_misaligned, limit)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _prepare_folder(out)
    image_dir = out if save_images else None
    images = image_paths(kept, image_dir, overwrite=overwrite)  # refused before any work, not after hours of it
    model = options.model
    if engine is None and options.picks_model:
        model = default_model_for(read_raw(kept[0].short).sensor)
    if excluded:
        scenes = ", ".join(f"{s:05d}" for s in sorted({p.scene for p in excluded}))
        log.info("leaving out %d pair(s) of misaligned scene(s) %s (--all keeps them)", len(excluded), scenes)
    if where is not None:
        scores, used = score_on_cluster(
            kept, replace(options, model=model), where, cache_dir, images, on_image, overwrite
        )
    else:
        engine = engine or engine_for(None, replace(options, model=model))
        used = _Used(str(engine.source), engine.info.device, engine.info.precision)
        scores = evaluate_pairs(
            kept,
            engine,
            tile=options.tile,
            cache=ArrayCache(cache_dir) if cache_dir is not None else None,
            image_dir=image_dir,
            on_image=on_image,
            progress=options.progress,
            match_sensor=options.match_sensor,
            overwrite=overwrite,
        )
    report = EvalReport(
        scores,
        excluded,
        src,
        Path(data_root) if data_root is not None else src.parent,
        include_misaligned,
        model,
        _weights_name(options.weights),
        *used,
    )
    if out is not None:
        write_report(report, out)
    return report


class _Used(NamedTuple):
    """What scored the images, for the report: the weights file, the device, the precision."""

    source: str
    device: str
    precision: str


def score_on_worker(
    context: WorkerContext, item: tuple[int, Pair, Path | None], *, cache_dir: Path | None, overwrite: bool
) -> tuple[int, ImageScore, _Used]:
    """One pair, in a cluster worker (its last ground truth kept for the next pair it gets)."""
    index, pair, image_path = item
    references = context.state.get("references")
    if references is None:
        references = _LastGroundTruth(ArrayCache(cache_dir) if cache_dir is not None else None)
        context.state["references"] = references
    engine = context.engine(None)
    score = score_pair(
        pair,
        engine,
        tile=context.options.tile,
        references=references,
        image_path=image_path,
        overwrite=overwrite,
        progress=context.progress,
        match_sensor=context.options.match_sensor,
    )
    return index, score, _Used(str(engine.source), engine.info.device, engine.info.precision)


def score_on_cluster(
    pairs: Sequence[Pair],
    options: EngineOptions,
    cluster: Cluster,
    cache_dir: str | os.PathLike[str] | None,
    images: list[Path | None],
    on_image: Callable[[ImageScore], None] | None,
    overwrite: bool = False,
) -> tuple[list[ImageScore], _Used]:
    """Every pair scored on the cluster's workers; the scores in the list's order, as a local run gives them.

    A worker's error stops the evaluation as it would here; Ctrl-C stops the workers and
    is raised again once they have.
    """
    cache = Path(cache_dir) if cache_dir is not None else None
    job = functools.partial(score_on_worker, cache_dir=cache, overwrite=overwrite)
    scored: dict[int, ImageScore] = {}
    used: _Used | None = None
    with worker_pool(cluster, options, job) as pool:
        for _, outcome in pool.run([(i, pair, images[i]) for i, pair in enumerate(pairs)]):
            if isinstance(outcome, Stopped):
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            index, score, used = outcome
            scored[index] = score
            if on_image is not None:
                on_image(score)
            if options.progress is not None:
                options.progress(len(scored), len(pairs))
        if pool.interrupt is not None:  # Ctrl-C, raised again now that the workers have stopped
            raise pool.interrupt
    assert used is not None  # every pair was scored
    return [scored[i] for i in range(len(pairs))], used


def _weights_name(weights: str | os.PathLike[str] | LoadedWeights | WeightsFile | None) -> str | None:
    if isinstance(weights, (LoadedWeights, WeightsFile)):
        return str(weights.source)
    return None if weights is None else str(weights)


def _pairs_to_score(
    src: Path, data_root: str | os.PathLike[str] | None, include_misaligned: bool, limit: int | None
) -> tuple[list[Pair], list[Pair]]:
    """(pairs to score, misaligned pairs left out) of a list file, read no further than ``limit`` needs."""
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}")
    kept: list[Pair] = []
    excluded: list[Pair] = []
    for pair in iter_list(src, data_root):
        (excluded if pair.misaligned and not include_misaligned else kept).append(pair)
        if limit is not None and len(kept) >= limit:
            break
    check_pairs(kept + excluded, src, data_root)
    if not kept:
        raise UsageError("no pairs left to score (every scene in the list is a misaligned one; use --all)", src)
    return kept, excluded


def _prepare_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder ({exc.strerror or exc})", out) from exc
    if not os.access(out, os.W_OK):
        raise OutputError("output folder is not writable", out)


def _write_text(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write ({exc.strerror or exc})", path) from exc


def write_report(report: EvalReport, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write results.csv (one row per image) and results.json (everything) into ``out_dir``."""
    import io

    out = Path(out_dir)
    _prepare_folder(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for s in report.scores:
        row = s.row()
        row["ratio"] = f"{row['ratio']:g}"
        row["psnr"] = f"{row['psnr']:.6f}"
        row["ssim"] = f"{row['ssim']:.6f}"
        writer.writerow(row)
    csv_path, json_path = out / CSV_NAME, out / JSON_NAME
    _write_text(csv_path, buf.getvalue())
    _write_text(json_path, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


__all__ = [
    "CSV_COLUMNS",
    "METRIC_SETTINGS",
    "EvalReport",
    "ImageScore",
    "align_ground_truth",
    "evaluate",
    "evaluate_pairs",
    "image_paths",
    "score_image",
    "split_misaligned",
    "write_report",
]
