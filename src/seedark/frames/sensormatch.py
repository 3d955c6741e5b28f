"""Sensor matching: a file's colours mapped to those of the camera the model was trained on.

The official models each learnt one camera's raw colours (the a7S II's, the X-T2's);
another sensor's raw values describe the same scene with other numbers, which the
network has never seen (colour casts, blotches). With both cameras' colour matrices
(XYZ D65 -> camera, Adobe DNG convention: seedark.io.colormatrix for the file,
the model's registry entry or weights for the model), the values the model's camera
would have recorded for the same light are, to the extent both matrices hold,

    camera_model = T · camera_file,   T = CM_model · CM_file⁻¹.

The map is applied after black subtraction and white normalisation and before
amplification, tile by tile (``PackedFrame``). It acts on each packed pixel's colour
means, and every sensor site keeps its offset from its colour's mean, so texture and
noise pass through: a packed pixel covers a small patch of the mosaic (2 x 2 for Bayer,
3 x 3 for X-Trans) that holds several sites of a colour, and T is a 3 x 3 map of
colours, not of sites. Bayer: R and B are one site each (they are their mean), the two
greens keep their offset from their mean. X-Trans (2 R, 5 G, 2 B per 3 x 3): each
channel shifts by its colour's mean change. Values below 0 after the map are clipped,
as black subtraction clips them, so the network sees what the model's camera gives it.

A file whose matrix gives T within 1e-3 of the identity (the model's own camera, up to
the rounding of the published matrix) is not mapped at all: its input is bit-identical.
"""

from __future__ import annotations

import logging
from collections.abc import MutableSet, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from seedark.io.colormatrix import ColorMatrix

log = logging.getLogger("seedark")

#: T this close to the identity (largest entry difference) is the model's own camera.
IDENTITY_TOLERANCE = 1e-3

#: Packed channels of each colour (R, G, B), per packing (seedark.frames.packing).
COLOUR_CHANNELS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "bayer": ((0,), (1, 3), (2,)),  # R, G on R's row, B, G on B's row
    "xtrans": ((0, 3), (1, 5, 6, 7, 8), (2, 4)),  # the official Fuji packing's channels
}


class CameraMatrix(Protocol):
    """A camera's XYZ (D65) -> camera matrix: a file's (ColorMatrix) or a model's (ModelCamera)."""

    @property
    def matrix(self) -> tuple[float, ...]: ...


class Matchable(Protocol):
    """A lazily packed input that can be remade with its colours mapped (``PackedFrame``, which
    itself maps through :func:`match_colours`: this module does not import it)."""

    def matched(self, match: np.ndarray) -> Any: ...


_Packed = TypeVar("_Packed", bound=Matchable)


def sensor_transform(file: CameraMatrix, model: CameraMatrix) -> np.ndarray | None:
    """T = CM_model · CM_file⁻¹ (3 x 3, float64), or None when T is the identity within
    :data:`IDENTITY_TOLERANCE` (the model's own camera: nothing to map)."""
    cm_file = np.asarray(file.matrix, dtype=np.float64).reshape(3, 3)
    cm_model = np.asarray(model.matrix, dtype=np.float64).reshape(3, 3)
    t = cm_model @ np.linalg.inv(cm_file)
    if np.abs(t - np.eye(3)).max() <= IDENTITY_TOLERANCE:
        return None
    return t


def match_colours(packed: np.ndarray, transform: np.ndarray, sensor: str) -> np.ndarray:
    """Map a packed, normalised H x W x C window (float32) by ``transform``, in place (see the
    module's docstring): per packed pixel, the colour means go through T and each channel moves
    by its colour's change; then values below 0 are clipped. Returns ``packed``."""
    groups = COLOUR_CHANNELS[sensor]
    means = np.empty((*packed.shape[:2], 3), dtype=np.float32)
    for k, channels in enumerate(groups):
        if len(channels) == 1:
            means[..., k] = packed[..., channels[0]]
        else:
            np.mean(packed[..., list(channels)], axis=-1, out=means[..., k])
    change = means @ transform.T.astype(np.float32)
    change -= means
    for k, channels in enumerate(groups):
        for c in channels:
            packed[..., c] += change[..., k]
    return np.maximum(packed, np.float32(0), out=packed)


def _once(said: MutableSet[str], level: int, message: str) -> None:
    if message not in said:
        said.add(message)
        log.log(level, "%s", message)


def matched_input(
    packed: _Packed,
    file: ColorMatrix | None,
    model: CameraMatrix | None,
    *,
    camera: str,
    model_name: str,
    said: MutableSet[str],
) -> _Packed:
    """The network input for ``packed`` with its colours matched to the model's camera.

    Unchanged (the same object) when the file is from the model's own camera, or when either
    matrix is unknown; the log says each such case once per ``said`` (the engine's set of
    messages), and each camera that is matched once too. ``camera``: the file's camera, as
    its make and model name it; ``model_name``: the model's camera, or (``model`` None) the
    weights that do not say which camera they learnt.
    """
    if model is None:
        _once(said, logging.INFO, f"colours not matched: the weights {model_name} do not say which camera they learnt")
        return packed
    if file is None:
        why = f"no colour matrix is known for {camera}"
        _once(said, logging.INFO, f"colours of {camera} not matched to the model's camera ({model_name}): {why}")
        return packed
    transform = sensor_transform(file, model)
    if transform is None:
        return packed
    how = f"matched to the model's camera ({model_name}); its matrix: {file.source}"
    _once(said, logging.INFO, f"colours of {camera} {how}")
    return packed.matched(transform)


def format_transform(transform: np.ndarray | Sequence[Sequence[float]]) -> str:
    """T as text: rows of three numbers."""
    return "[" + "; ".join(" ".join(f"{v:.4f}" for v in row) for row in np.asarray(transform)) + "]"


__all__ = [
    "COLOUR_CHANNELS",
    "IDENTITY_TOLERANCE",
    "CameraMatrix",
    "Matchable",
    "format_transform",
    "match_colours",
    "matched_input",
    "sensor_transform",
]
