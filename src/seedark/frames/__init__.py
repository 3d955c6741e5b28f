"""The frame layer: a decoded RAW frame made into the network's input.

``packing`` (Bayer and X-Trans packing, amplification, ``PackedFrame``), ``exposure``
(the ratio) and ``prepare`` (stage 1 of enhancing: decode, ratio, lazy packing; no
torch). Its sibling ``seedark.synthesis`` makes frames instead of reading them.
"""
