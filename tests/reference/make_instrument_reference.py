"""Derive small instrument reference tables from ctapipe 0.28 (run in a separate venv).

Usage: python make_instrument_reference.py OUT_DIR FILE...

For every file: ``<stem>.subarray.parquet`` (tel_id, tel_type, position, focal lengths,
mirror area) and, per camera name, ``camera_<name>.parquet`` (pixel x/y in metres after
derotation, area, neighbour list, border mask). Only derived numbers are written; no
ctapipe code is copied.
"""
import re
import sys
from pathlib import Path
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ctapipe.io import EventSource

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for f in sys.argv[2:]:
    stem = re.sub(r"(\.simtel)?(\.(gz|zst))?$", "", Path(f).name)
    with EventSource(f, focal_length_choice="EQUIVALENT") as src:
        sub = src.subarray
        rows = []
        for tel_id, tel in sub.tel.items():
            pos = sub.positions[tel_id].to_value("m")
            rows.append(dict(
                tel_id=int(tel_id), tel_type=str(tel), camera_name=tel.camera.name,
                optics_name=tel.optics.name, size_type=str(tel.optics.size_type.value),
                pos_x_m=float(pos[0]), pos_y_m=float(pos[1]), pos_z_m=float(pos[2]),
                equivalent_focal_length_m=float(tel.optics.equivalent_focal_length.to_value("m")),
                effective_focal_length_m=float(tel.optics.effective_focal_length.to_value("m")),
                mirror_area_m2=float(tel.optics.mirror_area.to_value("m2")),
            ))
        pq.write_table(pa.Table.from_pylist(rows), out / f"{stem}.subarray.parquet")
        for cam in {t.camera.name: t.camera for t in sub.tel.values()}.values():
            g = cam.geometry
            nb = g.neighbor_matrix_sparse.tocsr()
            neighbors = [sorted(nb.indices[nb.indptr[i]:nb.indptr[i + 1]].tolist()) for i in range(g.n_pixels)]
            t = pa.table({
                "pix_x_m": g.pix_x.to_value("m").astype(np.float64),
                "pix_y_m": g.pix_y.to_value("m").astype(np.float64),
                "pix_area_m2": g.pix_area.to_value("m2").astype(np.float64),
                "neighbors": pa.array(neighbors, type=pa.list_(pa.int32())),
                "border": np.asarray(g.get_border_pixel_mask(1)).ravel(),
            })
            meta = {"pix_type": str(g.pix_type.value), "pix_rotation_deg": str(g.pix_rotation.to_value("deg")),
                    "cam_rotation_deg": str(g.cam_rotation.to_value("deg")),
                    "sampling_rate_ghz": str(cam.readout.sampling_rate.to_value("GHz")),
                    "n_samples": str(cam.readout.n_samples), "n_channels": str(cam.readout.n_channels)}
            t = t.replace_schema_metadata(meta)
            pq.write_table(t, out / f"{stem}.camera_{cam.name}.parquet", compression="zstd")
    print(f, len(rows))
