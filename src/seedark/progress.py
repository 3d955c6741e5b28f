"""The progress-callback types, one definition each (the CLI draws them; the library only calls them)."""

from __future__ import annotations

from collections.abc import Callable

#: Counted work: ``(done, total)`` — tiles of a frame, files of a batch, images of an evaluation.
ProgressFn = Callable[[int, int], None]
#: Bytes: ``(done, expected or None)`` — downloads.
ByteProgress = Callable[[int, int | None], None]
