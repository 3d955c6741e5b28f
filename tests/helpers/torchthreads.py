"""Torch's thread count, pinned for a while.

Width-4 networks on tiny images only lose time to threads (and contend for the shared
cores of CI), and float32 sums depend on how many threads share them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch runs on ``count`` threads inside the block, on as many as before after it."""
    import torch  # here, not above: conftest imports this module, and not every test needs torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
