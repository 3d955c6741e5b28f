"""Deflate for the PNG and TIFF encoders: the fastest compressor installed that writes standard streams.

Whichever runs, the file is a standard PNG or TIFF with the same pixels; only the time
and a little of the size differ. Measured on 12 MP frames (docs/performance.md), against
the standard library's zlib at level 1 with ``Z_RLE`` (string matching finds little in
sensor noise, runs still catch flat areas):

* 16-bit samples: ISA-L (``isal``, level 1) is about 4x faster and at most ~1.5 % larger;
* 8-bit samples: zlib-ng (``zlib-ng``, the same ``Z_RLE``) is about 2x faster and the same
  size (ISA-L would be ~10 % larger on smooth pictures, whose runs it does not favour).

Without those packages (a platform without their wheels), the standard library's zlib.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from types import ModuleType
from typing import Protocol

from seedark.io.tiff import Buffer

#: Flush modes: the same numbers in zlib, zlib-ng and ISA-L.
SYNC_FLUSH = zlib.Z_SYNC_FLUSH
FINISH = zlib.Z_FINISH


class Compressor(Protocol):
    def compress(self, data: Buffer, /) -> bytes: ...

    def flush(self, mode: int = FINISH, /) -> bytes: ...


@functools.cache
def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:  # no wheel for this platform: the standard library's zlib does it
        return None


def isal() -> ModuleType | None:
    """ISA-L's zlib interface, if installed."""
    return _module("isal.isal_zlib")


def zlib_ng() -> ModuleType | None:
    """zlib-ng's zlib interface, if installed."""
    return _module("zlib_ng.zlib_ng")


def compressor(sample_bits: int, *, raw: bool) -> Compressor:
    """A compressor for filtered samples of ``sample_bits`` bits: a raw deflate stream (``raw``,
    PNG's pieces) or a zlib stream (TIFF's Adobe deflate strips)."""
    wbits = -15 if raw else 15
    fast = isal()
    if sample_bits > 8 and fast is not None:
        return fast.compressobj(1, fast.DEFLATED, wbits)  # type: ignore[no-any-return]
    module = zlib_ng() or zlib
    return module.compressobj(1, module.DEFLATED, wbits, 9, module.Z_RLE)  # type: ignore[no-any-return]


def compressor_name(sample_bits: int) -> str:
    """Which library :func:`compressor` uses for ``sample_bits``-bit samples (for the benchmark's report)."""
    if sample_bits > 8 and isal() is not None:
        return "isal"
    return "zlib-ng" if zlib_ng() is not None else "zlib"
