"""Reference DL2 geometry from ctapipe 0.28's ``HillasIntersection`` for the shared files.

Usage: /work/venv-ctapipe/bin/python tests/reference/make_intersection_reference.py OUT.npz FILE...

Every event goes through ``CameraCalibrator`` + ``ImageProcessor`` (default config) and
``ShowerProcessor(reconstructor_types=["HillasIntersection"])`` (default config
otherwise), as ``SimTelEventSource(focal_length_choice="EQUIVALENT")`` reads it. One row
per array event: the file's index in ``stems`` (``file_index``), keys, validity, geometry (deg, m), the number of
telescopes used, and ``error`` for events where ctapipe raised (e.g. all pair weights
zero); those rows have ``is_valid`` False.
"""
import re, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np
from ctapipe.io import EventSource
from ctapipe.calib import CameraCalibrator
from ctapipe.image import ImageProcessor
from ctapipe.reco import ShowerProcessor

NAME = "HillasIntersection"
cols = {k: [] for k in ("file_index", "obs_id", "event_id", "is_valid", "error", "alt_deg", "az_deg", "uncert_deg",
                        "core_x_m", "core_y_m", "core_tilted_x_m", "core_tilted_y_m", "h_max_m",
                        "average_intensity_pe", "n_tels_used")}
stems = []
for i, f in enumerate(sys.argv[2:]):
    stems.append(re.sub(r"(\.simtel)?(\.(gz|zst))?$", "", Path(f).name))
    with EventSource(f, focal_length_choice="EQUIVALENT") as src:
        sub = src.subarray
        calib, proc = CameraCalibrator(subarray=sub), ImageProcessor(subarray=sub)
        shower = ShowerProcessor(subarray=sub, reconstructor_types=[NAME])
        for ev in src:
            calib(ev); proc(ev)
            err = False
            try:
                shower(ev)
                g = ev.dl2.stereo.geometry[NAME]
            except Exception:
                err, g = True, None
            ok = g is not None and bool(g.is_valid)
            v = lambda q, unit: float(q.to_value(unit)) if ok else np.nan
            cols["file_index"].append(i); cols["obs_id"].append(ev.index.obs_id); cols["event_id"].append(ev.index.event_id)
            cols["is_valid"].append(ok); cols["error"].append(err)
            cols["alt_deg"].append(v(g.alt, "deg") if ok else np.nan)
            cols["az_deg"].append(v(g.az, "deg") if ok else np.nan)
            cols["uncert_deg"].append(v(g.alt_uncert, "deg") if ok else np.nan)
            for k in ("core_x", "core_y", "core_tilted_x", "core_tilted_y", "h_max"):
                cols[k + "_m"].append(v(getattr(g, k), "m") if ok else np.nan)
            cols["average_intensity_pe"].append(float(g.average_intensity) if ok else np.nan)
            cols["n_tels_used"].append(len(g.telescopes or []) if ok else 0)
    print(f, len(cols["file_index"]), "events so far")
np.savez_compressed(sys.argv[1], stems=np.array(stems), **{k: np.array(v) for k, v in cols.items()})
