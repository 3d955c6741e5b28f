"""A camera's noise calibration: re-exported from seedark.synthesis.noiseprofile (free of NumPy)."""

from __future__ import annotations

from seedark.synthesis.noiseprofile import SONY_A7S2, NoiseProfile, load_profile, save_profile

__all__ = ["SONY_A7S2", "NoiseProfile", "load_profile", "save_profile"]
