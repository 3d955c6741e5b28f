"""``seedark info``: what seedark sees in a RAW file, without running the network."""

from __future__ import annotations

import os
from pathlib import Path

from seedark.exposure import RATIO_RANGE, auto_ratio
from seedark.io.raw import read_raw
from seedark.io.text import printable
from seedark.models.registry import default_model_for
from seedark.packing import sensor_area


def _exposure(seconds: float | None) -> str:
    if not seconds:
        return "unknown"
    if seconds < 1:
        return f"1/{round(1 / seconds)} s"
    return f"{seconds:g} s"


def describe(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(label, value) rows describing a RAW file, in display order.

    The values are ready to print: the file's own strings are cleaned when they are read,
    and each value goes through :func:`~seedark.io.text.printable`, so a file name that is
    not UTF-8 or holds control characters is shown with escapes.
    """
    frame = read_raw(path)
    cam = frame.camera
    _, _, h, w = sensor_area(frame)
    out_h, out_w = (w, h) if frame.flip & 4 else (h, w)
    suits = default_model_for(frame.sensor)
    blacks = sorted({float(b) for b in frame.black_levels.ravel()})
    rows = [
        ("file", str(Path(path))),
        ("camera", " ".join(x for x in (cam.make, cam.model) if x) or "unknown"),
        ("lens", cam.lens_model or "unknown"),
        ("sensor", f"{frame.sensor} {frame.width}x{frame.height} (visible)"),
        ("output size", f"{out_w}x{out_h}" + (" (cropped to the 6x6 pattern)" if frame.sensor == "xtrans" else "")),
        ("CFA layout", frame.cfa_string),
        ("black level", ", ".join(f"{b:g}" for b in blacks)),
        ("white level", str(frame.white_level)),
        ("exposure", _exposure(cam.exposure_time)),
        ("ISO", str(cam.iso) if cam.iso else "unknown"),
        ("taken", cam.datetime_original or "unknown"),
        ("auto ratio", f"x{auto_ratio(frame):.1f} (range {RATIO_RANGE[0]:g}-{RATIO_RANGE[1]:g})"),
        (
            "model",
            f"{suits} (the default model, sony, {'suits' if suits == 'sony' else 'does not suit'} this sensor"
            + (")" if suits == "sony" else f"; {suits} is used automatically)"),
        ),
    ]
    return [(label, printable(value)) for label, value in rows]
