"""Subarray description: telescopes, optics and cameras, stored as Parquet tables.

On disk (inside a product directory)::

    instrument/subarray.parquet            one row per telescope
    instrument/optics.parquet              one row per telescope type
    instrument/cameras/<camera>.parquet    one row per pixel (geometry, neighbours, border)
    instrument/readout/<camera>.parquet    one row per gain channel (sampling, pulse shape)

:meth:`SubarrayDescription.read` loads all of it in one call.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schemas as S
from ..errors import InputError
from .geometry import CameraGeometry


@dataclass(frozen=True, eq=False)
class CameraReadout:
    """Waveform sampling of one camera.

    ``reference_pulse_shape`` has shape ``(n_channels, n_ref_samples)``.
    """

    name: str
    n_channels: int
    n_pixels: int
    n_samples: int
    sampling_rate_ghz: float
    reference_pulse_sample_width_ns: float
    reference_pulse_shape: np.ndarray

    def same_as(self, other: "CameraReadout") -> bool:
        return (self.n_channels, self.n_pixels, self.n_samples, self.sampling_rate_ghz,
                self.reference_pulse_sample_width_ns) == (other.n_channels, other.n_pixels, other.n_samples,
                                                          other.sampling_rate_ghz, other.reference_pulse_sample_width_ns) \
            and np.array_equal(self.reference_pulse_shape, other.reference_pulse_shape)


@dataclass(frozen=True)
class Optics:
    tel_type: str
    optics_name: str
    size_type: str
    reflector_shape: str
    n_mirrors: int
    n_mirror_tiles: int
    equivalent_focal_length_m: float
    effective_focal_length_m: float
    mirror_area_m2: float


def _read_parquet(path) -> pa.Table:
    """One Parquet file as a table. Not ``pq.read_table``: that imports pyarrow.dataset,
    0.1 s in every dvp process that reads an instrument description."""
    with pq.ParquetFile(path) as f:
        return f.read()


@dataclass(frozen=True, eq=False)
class SubarrayDescription:
    """All instrument information of one product directory.

    Attributes
    ----------
    name : str
        Array name (sim_telarray ``ARRAY_CONFIG_NAME`` or ``MonteCarloArray``).
    telescopes : pa.Table
        ``instrument.subarray`` table, sorted by ``tel_id``.
    optics : dict[str, Optics]
        By telescope type string.
    geometries : dict[str, CameraGeometry]
        By camera name.
    readouts : dict[str, CameraReadout]
        By readout name (``readout_name`` column: the camera name, with a suffix for
        telescopes whose readout differs from others with the same camera).
    reference_location : dict
        ``lon_deg``, ``lat_deg``, ``height_m`` of the array reference point.
    """

    name: str
    telescopes: pa.Table
    optics: dict
    geometries: dict
    readouts: dict
    reference_location: dict

    @property
    def tel_ids(self) -> np.ndarray:
        return self.telescopes.column(S.TEL_ID).to_numpy()

    def tel_type(self, tel_id: int) -> str:
        return self._row(tel_id)[S.TEL_TYPE]

    def camera_name(self, tel_id: int) -> str:
        return self._row(tel_id)[S.CAMERA_NAME]

    def readout_name(self, tel_id: int) -> str:
        return self._row(tel_id)[S.READOUT_NAME]

    def readout(self, tel_id: int) -> CameraReadout:
        return self.readouts[self.readout_name(tel_id)]

    def _row(self, tel_id):
        idx = np.nonzero(self.tel_ids == tel_id)[0]
        if len(idx) == 0:
            raise KeyError(f"no telescope {tel_id} in subarray {self.name}")
        return self.telescopes.slice(int(idx[0]), 1).to_pylist()[0]

    def positions(self) -> np.ndarray:
        """Telescope positions, shape (n_tels, 3), m, in ``tel_ids`` order."""
        t = self.telescopes
        return np.column_stack([t.column(c).to_numpy() for c in ("pos_x_m", "pos_y_m", "pos_z_m")])

    def tel_types(self) -> list[str]:
        return sorted(set(self.telescopes.column(S.TEL_TYPE).to_pylist()))

    def tel_ids_of_type(self, tel_type: str) -> np.ndarray:
        mask = np.asarray(self.telescopes.column(S.TEL_TYPE).to_pylist()) == tel_type
        return self.tel_ids[mask]

    # -- comparison -----------------------------------------------------------------
    def fingerprint(self) -> str:
        """A string that is equal for identical instrument descriptions."""
        t = self.telescopes
        parts = [self.name, json.dumps(t.to_pylist(), sort_keys=True)]
        for cam in sorted(self.geometries):
            g = self.geometries[cam]
            parts.append(f"{cam}:{g.n_pixels}:{np.round(g.pix_x, 9).tobytes().hex()[:64]}")
        return "|".join(parts)

    # -- I/O --------------------------------------------------------------------------
    def write(self, directory: Path, write_table) -> None:
        """Write the instrument tables below ``directory/instrument`` with ``write_table``."""
        inst = Path(directory) / "instrument"
        meta = {b"dvp.array_name": self.name.encode(),
                b"dvp.reference_location": json.dumps(self.reference_location).encode()}
        write_table(self.telescopes.replace_schema_metadata(meta), inst / "subarray.parquet", S.SUBARRAY)
        optics = pa.Table.from_pylist([vars(o) for o in self.optics.values()])
        write_table(optics, inst / "optics.parquet", S.OPTICS)
        for cam, g in self.geometries.items():
            nb = pa.ListArray.from_arrays(pa.array(g.neighbor_indptr, pa.int32()), pa.array(g.neighbor_indices, pa.int32()))
            t = pa.table({
                "pix_id": np.arange(g.n_pixels, dtype=np.int32), S.PIX_X: g.pix_x, S.PIX_Y: g.pix_y,
                S.PIX_AREA: g.pix_area, S.NEIGHBORS: nb,
                "border_width_1": g.border(1), "border_width_2": g.border(2),
            }).replace_schema_metadata({b"dvp.camera_name": cam.encode(), b"dvp.pix_type": g.pix_type.encode(),
                                        b"dvp.pix_rotation_deg": repr(g.pix_rotation_deg).encode(),
                                        b"dvp.cam_rotation_deg": repr(g.cam_rotation_deg).encode()})
            write_table(t, inst / "cameras" / f"{cam}.parquet", S.CAMERA_GEOMETRY)
        for name, r in self.readouts.items():
            t = pa.table({
                "channel": np.arange(r.n_channels, dtype=np.int8),
                S.N_PIXELS: np.full(r.n_channels, r.n_pixels, np.int32),
                S.N_SAMPLES: np.full(r.n_channels, r.n_samples, np.int32),
                "sampling_rate_ghz": np.full(r.n_channels, r.sampling_rate_ghz),
                "reference_pulse_sample_width_ns": np.full(r.n_channels, r.reference_pulse_sample_width_ns),
                "reference_pulse_shape": pa.array([list(map(float, row)) for row in r.reference_pulse_shape],
                                                  pa.list_(pa.float64())),
            }).replace_schema_metadata({b"dvp.camera_name": r.name.encode()})
            write_table(t, inst / "readout" / f"{name}.parquet", S.CAMERA_READOUT)

    @classmethod
    def read(cls, directory) -> "SubarrayDescription":
        """Load the instrument description of a product directory."""
        inst = Path(directory) / "instrument"
        try:
            tel = _read_parquet(inst / "subarray.parquet")
        except (OSError, pa.ArrowInvalid) as e:
            raise InputError(directory, f"no readable instrument/subarray.parquet ({e})") from None
        meta = tel.schema.metadata or {}
        optics = {}
        for row in _read_parquet(inst / "optics.parquet").to_pylist():
            optics[row["tel_type"]] = Optics(**row)
        geometries, readouts = {}, {}
        for cam in sorted(set(tel.column(S.CAMERA_NAME).to_pylist())):
            g = _read_parquet(inst / "cameras" / f"{cam}.parquet")
            gm = g.schema.metadata
            nb = g.column(S.NEIGHBORS).combine_chunks()
            geometries[cam] = CameraGeometry(
                name=cam, pix_x=g.column(S.PIX_X).to_numpy(), pix_y=g.column(S.PIX_Y).to_numpy(),
                pix_area=g.column(S.PIX_AREA).to_numpy(), pix_type=gm[b"dvp.pix_type"].decode(),
                pix_rotation_deg=float(gm[b"dvp.pix_rotation_deg"]),
                cam_rotation_deg=float(gm[b"dvp.cam_rotation_deg"]),
                neighbor_indptr=(nb.offsets.to_numpy() - nb.offsets[0].as_py()).astype(np.int32),
                neighbor_indices=nb.flatten().to_numpy().astype(np.int32))
        for name in sorted(set(tel.column(S.READOUT_NAME).to_pylist())):
            rt = _read_parquet(inst / "readout" / f"{name}.parquet")
            r = rt.to_pylist()
            readouts[name] = CameraReadout(
                name=(rt.schema.metadata or {}).get(b"dvp.camera_name", name.encode()).decode(),
                n_channels=len(r), n_pixels=r[0][S.N_PIXELS], n_samples=r[0][S.N_SAMPLES],
                sampling_rate_ghz=r[0]["sampling_rate_ghz"],
                reference_pulse_sample_width_ns=r[0]["reference_pulse_sample_width_ns"],
                reference_pulse_shape=np.array([x["reference_pulse_shape"] for x in r]))
        return cls(name=meta.get(b"dvp.array_name", b"").decode(),
                   telescopes=tel.replace_schema_metadata(None).select(S.column_names(S.SUBARRAY)),
                   optics=optics, geometries=geometries, readouts=readouts,
                   reference_location=json.loads(meta.get(b"dvp.reference_location", b"{}")))
