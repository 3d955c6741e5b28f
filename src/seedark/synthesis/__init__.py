"""A sensor model: clean sRGB images made into the raw frames a camera would record.

``unprocess`` turns an sRGB image into a clean Bayer mosaic (camera colours, white
balance undone, raw levels); ``noise`` darkens it and adds calibrated low-light
noise (ELD, the a7S II); ``noiseprofile`` holds the calibration. Training makes its
synthetic pairs with it and ``seedark demo`` its dark frame. Imports nothing here,
so ``noiseprofile`` stays free of NumPy for the command line.
"""
