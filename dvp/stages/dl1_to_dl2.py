"""DL1 → DL2: stereo shower geometry, as ctapipe 0.28's default ``ShowerProcessor``.

ctapipe's ``ShowerProcessor`` runs ``HillasReconstructor`` on every array event: the
telescope events that pass the ``StereoQualityQuery`` (intensity > 50 p.e., width > 0,
more than 3 pixels) enter; fewer than two make the event invalid (NaN geometry, no
telescopes). The array pointing (for the tilted frame and the corrected psi) is the
run's pointing, as ``SimTelEventSource`` fills ``monitoring.pointing``: pass the trigger
table as ``array_pointing``; without it, an event's first telescope pointing is used.

:func:`dl1_to_dl2` is pure: DL1 rows (any order, any telescope types mixed) in, the
``dl2.events`` and ``dl2.telescope_events`` tables out.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .. import schemas as S
from ..config import DL1ToDL2Config
from ..errors import InputError
from ..instrument.subarray import SubarrayDescription
from ..kernels.stereo import group_events, hillas_intersection, hillas_reconstruct

#: DL1 columns the Hillas reconstruction reads (the quality query may add more)
DL1_INPUT_COLUMNS = (S.OBS_ID, S.EVENT_ID, S.TEL_ID, S.POINTING_ALT, S.POINTING_AZ, S.HILLAS_FOV_LON,
                     S.HILLAS_FOV_LAT, S.HILLAS_PSI, S.HILLAS_INTENSITY, S.HILLAS_LENGTH, S.HILLAS_WIDTH)


def required_columns(config: DL1ToDL2Config) -> tuple:
    """DL1 columns :func:`dl1_to_dl2` needs with ``config``."""
    return DL1_INPUT_COLUMNS + tuple(c for c in config.quality.names() if c not in DL1_INPUT_COLUMNS)


def camera_radius_deg(subarray: SubarrayDescription, focal_length_choice: str = "equivalent") -> np.ndarray:
    """Per telescope (``subarray.tel_ids`` order) the camera radius in the telescope frame, deg.

    ctapipe's ``CameraGeometry.guess_radius`` (mean distance of the outermost pixels from
    the pixel centroid) divided by the focal length, as ``HillasReconstructor`` computes it.
    """
    out = np.empty(len(subarray.tel_ids))
    cache = {}
    for i, tel_id in enumerate(subarray.tel_ids):
        tel_type, cam = subarray.tel_type(int(tel_id)), subarray.camera_name(int(tel_id))
        if (tel_type, cam) not in cache:
            g = subarray.geometries[cam]
            border = g.border(1)
            r_m = np.sqrt((g.pix_x[border] - g.pix_x.mean()) ** 2 + (g.pix_y[border] - g.pix_y.mean()) ** 2).mean()
            o = subarray.optics[tel_type]
            f = o.effective_focal_length_m if focal_length_choice == "effective" else o.equivalent_focal_length_m
            cache[tel_type, cam] = np.rad2deg(r_m / f)
        out[i] = cache[tel_type, cam]
    return out


def _numpy(table: pa.Table, column: str, dtype) -> np.ndarray:
    return np.ascontiguousarray(table.column(column).to_numpy(zero_copy_only=False), dtype=dtype)


def _left_join(keys: pa.Table, other: pa.Table, columns) -> pa.Table:
    """``columns`` of ``other`` for each (obs_id, event_id) row of ``keys``, in ``keys`` order
    (null where ``other`` has no row)."""
    idx = "__row"
    left = keys.select([S.OBS_ID, S.EVENT_ID]).append_column(idx, pa.array(np.arange(keys.num_rows)))
    right = other.select([S.OBS_ID, S.EVENT_ID, *columns]).replace_schema_metadata(None)
    right = right.cast(pa.schema([pa.field(f.name, f.type) for f in right.schema]))
    joined = left.join(right, keys=[S.OBS_ID, S.EVENT_ID], join_type="left outer").sort_by(idx)
    return joined.select(list(columns))


def dl1_to_dl2(dl1: pa.Table, subarray: SubarrayDescription, config: DL1ToDL2Config | None = None, *,
               array_pointing: pa.Table | None = None, showers: pa.Table | None = None,
               source: str = "dl1") -> tuple[pa.Table, pa.Table]:
    """Reconstruct the shower geometry of every array event in ``dl1``.

    Parameters
    ----------
    dl1 : pyarrow.Table
        ``dl1.telescope_events`` rows (at least :func:`required_columns`), any order.
    subarray : SubarrayDescription
        Telescope positions, cameras and optics.
    config : DL1ToDL2Config, optional
        Method and stereo quality criteria; default ctapipe's.
    array_pointing : pyarrow.Table, optional
        ``obs_id, event_id, pointing_alt_deg, pointing_az_deg`` per array event (the
        ``r1.trigger`` table).
    showers : pyarrow.Table, optional
        ``simulation.shower`` rows: their true values are joined onto the events.
    source : str
        Named in error messages.

    Returns
    -------
    events, telescopes : pyarrow.Table
        ``dl2.events`` (sorted by obs_id, event_id) and ``dl2.telescope_events`` (sorted by
        obs_id, event_id, tel_id).
    """
    config = config or DL1ToDL2Config()
    for col in required_columns(config):
        if col not in dl1.column_names:
            raise InputError(source, f"missing column {col!r} (needed by dl1-to-dl2)")
    order, starts = group_events(_numpy(dl1, S.OBS_ID, np.int64), _numpy(dl1, S.EVENT_ID, np.int64),
                                 _numpy(dl1, S.TEL_ID, np.int64))
    t = dl1.take(pa.array(order)) if len(order) and not np.array_equal(order, np.arange(len(order))) else dl1
    n_ev = len(starts) - 1
    tel_id = _numpy(t, S.TEL_ID, np.int64)

    ids = subarray.tel_ids.astype(np.int64)
    sorter = np.argsort(ids, kind="stable")
    pos_idx = np.searchsorted(ids, tel_id, sorter=sorter).clip(0, max(len(ids) - 1, 0))
    pos_idx = sorter[pos_idx] if len(ids) else pos_idx
    unknown = (ids[pos_idx] != tel_id) if len(ids) else np.ones(len(tel_id), bool)
    if unknown.any():
        raise InputError(source, f"telescope {int(tel_id[np.flatnonzero(unknown)[0]])} is not in the instrument")
    positions = subarray.positions()[pos_idx]
    radius = camera_radius_deg(subarray, config.focal_length_choice)[pos_idx]

    use = config.quality.evaluate({c: _numpy(t, c, np.float64) for c in config.quality.names()}, t.num_rows)

    ev_keys = t.select([S.OBS_ID, S.EVENT_ID]).take(pa.array(starts[:-1])) if n_ev else \
        t.select([S.OBS_ID, S.EVENT_ID]).slice(0, 0)
    first_alt, first_az = _numpy(t, S.POINTING_ALT, np.float64)[starts[:-1]], _numpy(t, S.POINTING_AZ, np.float64)[starts[:-1]]
    if array_pointing is not None and n_ev:
        p = _left_join(ev_keys, array_pointing, [S.POINTING_ALT, S.POINTING_AZ])
        a_alt = np.where(p.column(0).is_null().to_numpy(zero_copy_only=False), first_alt,
                         p.column(0).to_numpy(zero_copy_only=False).astype(np.float64))
        a_az = np.where(p.column(1).is_null().to_numpy(zero_copy_only=False), first_az,
                        p.column(1).to_numpy(zero_copy_only=False).astype(np.float64))
    else:
        a_alt, a_az = first_alt, first_az

    height = float(subarray.reference_location.get("height_m", 0.0))
    if config.method == "HillasIntersection":
        res = hillas_intersection(starts, _numpy(t, S.HILLAS_FOV_LON, np.float64), _numpy(t, S.HILLAS_FOV_LAT, np.float64),
                                  _numpy(t, S.HILLAS_PSI, np.float64), _numpy(t, S.HILLAS_INTENSITY, np.float64),
                                  _numpy(t, S.HILLAS_WIDTH, np.float64), _numpy(t, S.POINTING_ALT, np.float64),
                                  _numpy(t, S.POINTING_AZ, np.float64), positions, use, np.ascontiguousarray(a_alt),
                                  np.ascontiguousarray(a_az), height)
    else:
        res = hillas_reconstruct(starts, _numpy(t, S.HILLAS_FOV_LON, np.float64), _numpy(t, S.HILLAS_FOV_LAT, np.float64),
                                 _numpy(t, S.HILLAS_PSI, np.float64), _numpy(t, S.HILLAS_INTENSITY, np.float64),
                                 _numpy(t, S.HILLAS_LENGTH, np.float64), _numpy(t, S.HILLAS_WIDTH, np.float64),
                                 radius, _numpy(t, S.POINTING_ALT, np.float64), _numpy(t, S.POINTING_AZ, np.float64),
                                 positions, use, np.ascontiguousarray(a_alt), np.ascontiguousarray(a_az))

    used = res["used"]
    offsets = np.zeros(n_ev + 1, np.int32)
    np.cumsum(res["n_tels_used"], out=offsets[1:])
    telescopes = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tel_id[used].astype(np.int16)))
    cols = {
        S.OBS_ID: ev_keys.column(S.OBS_ID), S.EVENT_ID: ev_keys.column(S.EVENT_ID),
        S.RECO_ALT: res["alt_deg"], S.RECO_AZ: res["az_deg"],
        S.RECO_ALT_UNCERT: res["ang_uncert_deg"], S.RECO_AZ_UNCERT: res["ang_uncert_deg"],
        S.RECO_CORE_X: res["core_x_m"], S.RECO_CORE_Y: res["core_y_m"],
        S.RECO_CORE_TILTED_X: res["core_tilted_x_m"], S.RECO_CORE_TILTED_Y: res["core_tilted_y_m"],
        S.RECO_H_MAX: res["h_max_rel_m"] + height, S.RECO_AVERAGE_INTENSITY: res["average_intensity_pe"],
        S.N_TELS_USED: res["n_tels_used"], S.RECO_TELESCOPES: telescopes, S.RECO_IS_VALID: res["is_valid"],
        S.RECO_METHOD: pa.array([config.method] * n_ev, pa.string()),
    }
    if showers is not None:
        present = [c for c in S.DL2_TRUE_COLUMNS if c in showers.column_names]
        if n_ev:
            joined = _left_join(ev_keys, showers, present)
            cols.update({c: joined.column(c) for c in present})
        else:
            cols.update({c: pa.array([], showers.schema.field(c).type) for c in present})
    events = S.validate(pa.table(cols), S.DL2_EVENTS, source=source)
    tels = S.validate(pa.table({S.OBS_ID: t.column(S.OBS_ID), S.EVENT_ID: t.column(S.EVENT_ID),
                                S.TEL_ID: t.column(S.TEL_ID), S.RECO_IMPACT_DISTANCE: res["impact_distance_m"],
                                S.RECO_USED: used}), S.DL2_TELESCOPE_EVENTS, source=source)
    return events, tels
