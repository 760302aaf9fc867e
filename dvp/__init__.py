"""dvp: columnar data-processing pipeline for Cherenkov telescope arrays."""

__version__ = "0.1.0"
