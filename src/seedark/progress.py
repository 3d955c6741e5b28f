"""The progress-callback types, one definition each.

The library only calls them; ``seedark.cli.display`` draws them (tqdm bars on a terminal, nothing
in a pipe), so an application embedding seedark may draw them its own way.
"""

from __future__ import annotations

from collections.abc import Callable

#: Counted work: ``(done, total)`` — tiles of a frame, files of a batch, images of an evaluation.
ProgressFn = Callable[[int, int], None]
#: Bytes: ``(done, expected or None)`` — downloads.
ByteProgress = Callable[[int, int | None], None]
