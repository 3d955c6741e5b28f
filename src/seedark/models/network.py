"""The SID U-Net, computing exactly what the official TensorFlow graph computes.

Tensor contract (``SIDUNet.forward``, and ``SIDUNet.lean_forward``, the same computation
with less memory, which the PyTorch back end runs):

* input: ``N x C_in x H x W`` floating tensor, the packed mosaic already amplified
  and clipped to [0, 1] (``C_in`` = 4 for Bayer, 9 for X-Trans). Any ``H, W >= 1``;
  nothing needs padding to a multiple of 16.
* output: ``N x 3 x (b*H) x (b*W)`` linear-to-sRGB image, **not clipped** (the
  caller clips to [0, 1], as the official scripts do); ``b`` = 2 (Bayer) or 3.

Where TensorFlow and PyTorch disagree, we follow TensorFlow:

* ``max_pool2d(padding='SAME')`` pads at the bottom/right: ``ceil_mode=True``.
* ``conv2d_transpose(..., output_shape=shape(skip), padding='SAME')`` with a 2x2
  kernel and stride 2 is the full 2x output cropped at the top-left to the skip's size.
* ``depth_to_space`` reads channel ``(i*b + j)*3 + c`` for sub-pixel (i, j),
  which is not ``torch.pixel_shuffle``'s ``c*b*b + i*b + j``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seedark.models.architecture import LEVELS, NetworkSpec

LEAKY_SLOPE = 0.2


def depth_to_space_tf(x: torch.Tensor, block: int) -> torch.Tensor:
    """TensorFlow's NHWC ``depth_to_space`` on an NCHW tensor."""
    n, c, h, w = x.shape
    out_c = c // (block * block)
    x = x.reshape(n, block, block, out_c, h, w)
    x = x.permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, out_c, h * block, w * block)


class SIDUNet(nn.Module):
    """U-Net of "Learning to See in the Dark"; module names follow the TF variables."""

    def __init__(self, spec: NetworkSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or NetworkSpec()
        w = self.spec.widths()
        c_in = self.spec.in_channels
        for level in range(LEVELS):
            setattr(self, f"g_conv{level + 1}_1", nn.Conv2d(c_in, w[level], 3, padding=1))
            setattr(self, f"g_conv{level + 1}_2", nn.Conv2d(w[level], w[level], 3, padding=1))
            c_in = w[level]
        for k, level in enumerate(range(LEVELS - 2, -1, -1)):
            idx = 6 + k
            # The official graph creates these filters with tf.Variable and no bias.
            setattr(self, f"up{idx}", nn.ConvTranspose2d(w[level + 1], w[level], 2, stride=2, bias=False))
            setattr(self, f"g_conv{idx}_1", nn.Conv2d(2 * w[level], w[level], 3, padding=1))
            setattr(self, f"g_conv{idx}_2", nn.Conv2d(w[level], w[level], 3, padding=1))
        self.g_conv10 = nn.Conv2d(w[0], self.spec.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, F.leaky_relu)

    def lean_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)``, bit for bit, holding about half the activations at the peak; inference only.

        Activations are in place, so no conv output lives on next to its activation
        (at full resolution each such tensor is 128 bytes per packed pixel at width 32).
        """
        return self._run(x, F.leaky_relu_)

    def _run(self, x: torch.Tensor, activation: Callable[[torch.Tensor, float], torch.Tensor]) -> torch.Tensor:
        """The U-Net. Every intermediate is let go as soon as the next op has consumed it:
        autograd keeps what it needs, and inference holds only what is still to be used."""
        skips: list[torch.Tensor] = []
        for level in range(LEVELS):
            if level:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            x = activation(getattr(self, f"g_conv{level + 1}_1")(x), LEAKY_SLOPE)
            x = activation(getattr(self, f"g_conv{level + 1}_2")(x), LEAKY_SLOPE)
            skips.append(x)
        skips.pop()
        for idx in range(6, 10):
            skip = skips.pop()
            up = getattr(self, f"up{idx}")(x)
            del x
            cat = torch.cat([up[:, :, : skip.shape[2], : skip.shape[3]], skip], dim=1)
            del up, skip
            x = activation(getattr(self, f"g_conv{idx}_1")(cat), LEAKY_SLOPE)
            del cat
            x = activation(getattr(self, f"g_conv{idx}_2")(x), LEAKY_SLOPE)
        return depth_to_space_tf(self.g_conv10(x), self.spec.block)
