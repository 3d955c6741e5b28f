"""Choosing the amplification ratio: given by the user, or estimated from the frame.

The automatic rule (docs/exposure.md): a "normal exposure" puts the scene's
average sensor signal at ``TARGET_LEVEL`` of the black-to-white range, about
three stops below clipping, which is where camera metering puts an average
scene. The ratio is ``TARGET_LEVEL / level`` where ``level`` is the mean
black-subtracted signal of the frame, with the brightest 1% of the 2x2 blocks
left out so a street lamp doesn't darken the whole picture. The result is
clamped to ``RATIO_RANGE`` (1 to 300, the paper's range ends at 300).
"""

from __future__ import annotations

import math

import numpy as np

from seedark.errors import UsageError
from seedark.io.raw import RawFrame

AUTO = "auto"
TARGET_LEVEL = 0.12
RATIO_RANGE = (1.0, 300.0)
HIGHLIGHT_SHARE = 0.01
#: Sampling stride in 2x2 blocks: a 12 MP frame is estimated from ~190k blocks.
_STRIDE = 4


def parse_ratio(value: float | str | None) -> float | None:
    """A ratio the user gave: a float > 0, or ``auto``/None for the automatic choice."""
    if value is None:
        return None
    given = value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return None
        try:
            value = float(text)
        except ValueError as exc:
            raise UsageError(f"ratio must be 'auto' or a number > 0, got {value}") from exc
    try:
        ratio = float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"ratio must be 'auto' or a number > 0, got {value}") from exc
    if not math.isfinite(ratio) or ratio <= 0:
        raise UsageError(f"ratio must be a finite number > 0, got {given}")
    return ratio


def signal_level(frame: RawFrame) -> float:
    """Mean black-subtracted signal of the frame, as a fraction of white - black.

    Not clipped at zero: in a very dark frame, read noise swings both ways and
    clipping would count it as light.
    """
    period = frame.pattern.shape[0]
    h = frame.height // period * period
    w = frame.width // period * period
    mosaic = frame.mosaic[:h, :w]
    black = frame.black_levels.astype(np.float32)
    blocks = mosaic.reshape(h // period, period, w // period, period)[::_STRIDE, :, ::_STRIDE, :].astype(np.float32)
    norm = (blocks - black[None, :, None, :]) / (np.float32(frame.white_level) - black[None, :, None, :])
    per_block = norm.mean(axis=(1, 3)).ravel()
    if per_block.size == 0:
        return 0.0
    cut = np.quantile(per_block, 1.0 - HIGHLIGHT_SHARE)
    return float(per_block[per_block <= cut].mean())


def auto_ratio(frame: RawFrame) -> float:
    """The amplification that brings this frame to a normal exposure, clamped to RATIO_RANGE."""
    level = signal_level(frame)
    low, high = RATIO_RANGE
    if level <= TARGET_LEVEL / high:
        return high
    return float(min(high, max(low, TARGET_LEVEL / level)))
