"""Instrument model: subarray, optics, camera geometry and readout."""
from .geometry import CameraGeometry, compute_neighbors, border_mask
from .subarray import CameraReadout, Optics, SubarrayDescription

__all__ = ["CameraGeometry", "CameraReadout", "Optics", "SubarrayDescription", "compute_neighbors", "border_mask"]
