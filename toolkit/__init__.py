"""spotsweep: sweep spatial deconvolution methods over their training settings, reproducibly."""

__version__ = "0.1.0"
