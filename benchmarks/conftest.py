"""Shared inputs of the kernel benchmarks."""
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dvp.instrument.geometry import CameraGeometry

LSTCAM_FILE = (Path(__file__).resolve().parent.parent / "tests" / "reference" / "instrument"
               / "calib_events.camera_LSTCam.parquet")


@pytest.fixture(scope="session")
def lstcam() -> CameraGeometry:
    """LSTCam (1855 hexagonal pixels, derotated, neighbours as ctapipe computes them)."""
    t = pq.read_table(LSTCAM_FILE)
    nb = t["neighbors"].to_pylist()
    indptr = np.concatenate([[0], np.cumsum([len(v) for v in nb])]).astype(np.int32)
    return CameraGeometry(name="LSTCam", pix_x=t["pix_x_m"].to_numpy(), pix_y=t["pix_y_m"].to_numpy(),
                          pix_area=t["pix_area_m2"].to_numpy(), pix_type=t.schema.metadata[b"pix_type"].decode(),
                          pix_rotation_deg=float(t.schema.metadata[b"pix_rotation_deg"]),
                          neighbor_indptr=indptr, neighbor_indices=np.concatenate(nb).astype(np.int32))
