"""One file: RAW file in, enhanced sRGB image out.

Three stages, so a batch can overlap them (seedark.pipeline.batch):

1. ``prepare_parsed`` (seedark.frames.prepare): decode and choose the ratio (CPU, no
   torch; runs in a decoder process during batches);
2. ``infer``: the network, tiled, on the engine's device; each tile's input is
   packed and amplified from the mosaic when the tile runs (``PackedFrame``);
3. ``write_result`` (seedark.pipeline.output): orientation already applied, encode
   and publish atomically.

``enhance()`` returns the image as an array; ``enhance_file()`` also writes it.
Both are what the CLI calls, so anything the command line can do, Python can.

Every option is checked once, before the work it guards and before anything on disk
is looked at: the ratio by ``parse_ratio``, the engine's options into an
:class:`EngineOptions` (the model's name included), the output's into an
:class:`OutputOptions`; then the input, then the destination (an :class:`OutputPlan`);
the later stages take those as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seedark._parallel import alongside
from seedark.errors import RawReadError
from seedark.frames.exposure import parse_ratio
from seedark.frames.prepare import prepare_parsed
from seedark.io.raw import RawFrame, check_input, decode_raw, read_raw
from seedark.pipeline.output import ConvertKwargs, conversion_options, folder_for, infer_and_write, plan_file
from seedark.runtime.engine import Engine, EngineKwargs, EngineOptions, engine_for, infer, warm_up

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

log = logging.getLogger("seedark")


def enhance(
    source: str | os.PathLike[str] | RawFrame,
    *,
    ratio: float | str | None = "auto",
    engine: Engine | None = None,
    **options: Unpack[EngineKwargs],
) -> np.ndarray:
    """Enhance one RAW file: H x W x 3 float32 sRGB in [0, 1], oriented like ``rawpy.postprocess()``.

    ``source``: a path, or a frame decoded already (``read_raw``). ``ratio``:
    amplification (reference exposure / this exposure), or ``"auto"`` to estimate it
    from the frame (seedark.frames.exposure). Without ``weights``, ``model`` or
    ``engine``, the model ``seedark finetune`` made for the file's camera is used where
    there is one, else the model matching the sensor (sony / fuji).
    ``match_sensor`` (default True): the file's colours are mapped to those of the
    model's camera first (docs/cameras.md).
    """
    given = parse_ratio(ratio)
    settings = EngineOptions.from_kwargs(**options)
    frame = source if isinstance(source, RawFrame) else read_raw(source)
    if engine is None:
        engine = engine_for(frame.sensor, settings, frame.camera)
    prepared = prepare_parsed(frame, given)
    return infer(prepared, engine, tile=settings.tile, progress=settings.progress, match_sensor=settings.match_sensor)


def check_source(source: Path) -> None:
    """``check_input``, and for a folder, the command that takes one."""
    try:
        check_input(source)
    except RawReadError as exc:
        if source.is_dir():
            hint = f"to enhance every RAW file in it, run: seedark batch {shlex.quote(str(source))}"
            raise RawReadError(f"{exc.reason}; {hint}", source) from None
        raise


def enhance_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    ratio: float | str | None = "auto",
    engine: Engine | None = None,
    **options: Unpack[ConvertKwargs],
) -> Path:
    """Enhance ``source`` and write it; returns the written path.

    ``output``: a file, or a folder (existing, or ending in ``/``: created when the
    image is written, removed again if writing fails) to write ``<stem><suffix>.<ext>``
    into. Every check that can fail cheaply runs before the RAW file is decoded or the
    model loaded: the options first (ratio, engine, output), then the input, then the
    output folder and existing files. ``keep_mtime``: the output gets the RAW file's
    modification (and access) time. The output keywords (``fmt``, ``bits``,
    ``quality``, ``compression``, ``compare_width``...): see
    :func:`seedark.pipeline.output.plan_output`.
    """
    given = parse_ratio(ratio)
    settings, wanted = conversion_options(options)
    src = Path(source)
    check_source(src)  # a missing input is the first thing on disk to report
    plan = plan_file(src, output, wanted)
    warming = alongside(partial(warm_up, settings)) if engine is None else contextlib.nullcontext()
    with warming:  # OpenVINO starts while LibRaw decodes
        frame = decode_raw(src)
    if engine is None:
        engine = engine_for(frame.sensor, settings, frame.camera)
    prepared = prepare_parsed(frame, given)
    del frame
    with folder_for(plan.path):
        return infer_and_write(plan, prepared, engine, settings)


__all__ = ["enhance", "enhance_file"]
