"""The low-light noise model and the sRGB unprocessing training makes its pairs with.

Both are a sensor model shared with ``seedark demo``, so they live below training and
pipeline, in seedark.synthesis (``noise``, ``noiseprofile``, ``unprocess``); this
module re-exports them under their old names.
"""

from __future__ import annotations

from seedark.synthesis import noise as _noise
from seedark.synthesis.noise import *  # noqa: F403  (the public names, listed once in seedark.synthesis.noise)
from seedark.synthesis.unprocess import DEFAULT_SRGB_WB, srgb_to_linear, srgb_to_mosaic

__all__ = [*_noise.__all__, "DEFAULT_SRGB_WB", "srgb_to_linear", "srgb_to_mosaic"]
