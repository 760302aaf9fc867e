"""Event loop of the toy simulation: showers → expected images → trigger → R1 tables.

Showers are processed in chunks; a telescope whose brightest expected pixel is far
below the trigger threshold is dropped before any per-pixel work, so showers that
trigger nothing cost only their geometry. All randomness comes from one generator,
drawn in a fixed order, so a seed fixes the output bit for bit.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .. import schemas as S
from . import camera as C
from .showers import Showers

CHUNK_EVENTS = 256
PRECHECK_FRACTION = 0.25   # drop telescopes whose brightest expected pixel < this × threshold


def _fixed(values: np.ndarray, arrow_type) -> pa.Array:
    n = values.shape[0]
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), arrow_type), values.size // max(n, 1)) \
        if n else pa.array([], pa.list_(arrow_type, values.shape[1] if values.ndim > 1 else 1))


def r1_table(obs_id, event_id, tel_id, waveform, true_image, gain, impact, trig_time, n_trig_pix,
             pointing_alt, pointing_az) -> pa.Table:
    """``r1.telescope_events`` table for one telescope type; ``waveform`` (n, n_pix, n_samples)."""
    n, n_pix, n_s = waveform.shape
    cols = {
        S.OBS_ID: pa.array(np.full(n, obs_id, np.int32)), S.EVENT_ID: pa.array(event_id.astype(np.int64)),
        S.TEL_ID: pa.array(tel_id.astype(np.int16)), S.N_PIXELS: pa.array(np.full(n, n_pix, np.int32)),
        S.N_SAMPLES: pa.array(np.full(n, n_s, np.int32)),
        S.WAVEFORM: pa.FixedSizeListArray.from_arrays(pa.array(waveform.reshape(-1)), n_pix * n_s),
        S.SELECTED_GAIN: pa.FixedSizeListArray.from_arrays(pa.array(gain.reshape(-1).astype(np.int8)), n_pix),
        # status bits as simtel-to-r1 writes them: 1 = high gain, 2 = low gain
        S.PIXEL_STATUS: pa.FixedSizeListArray.from_arrays(pa.array((gain + 1).reshape(-1).astype(np.uint8)), n_pix),
        S.HV_DISABLED: pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * n_pix, np.bool_)), n_pix),
        S.TIME_SHIFT: pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * n_pix, np.float32)), n_pix),
        S.TRUE_IMAGE: pa.FixedSizeListArray.from_arrays(pa.array(true_image.reshape(-1).astype(np.int32)), n_pix),
        S.TRUE_IMAGE_SUM: pa.array(true_image.sum(axis=1).astype(np.float64)),
        S.TRUE_IMPACT: pa.array(impact.astype(np.float64)),
        S.POINTING_ALT: pa.array(np.full(n, pointing_alt)), S.POINTING_AZ: pa.array(np.full(n, pointing_az)),
        "trigger_time_ns": pa.array(trig_time.astype(np.float64)),
        "n_trigger_pixels": pa.array(n_trig_pix.astype(np.int32)),
    }
    return S.validate(pa.table(cols), S.R1_EVENTS, source="dvp simulate")


class ToySimulation:
    """Simulate the events of ``showers`` seen by ``subarray``.

    Iterate :meth:`run` for ``(tel_type, r1_table)`` batches; afterwards ``triggered``
    (n_events,) bool and the trigger rows (``trigger_rows``) are filled.
    """

    def __init__(self, rng, subarray, showers: Showers, components, particle: str, *, obs_id: int,
                 obs_height_m: float, pointing_alt_deg: float, pointing_az_deg: float):
        self.rng, self.sub, self.sh, self.comp = rng, subarray, showers, components
        self.particle, self.obs_id, self.obs_height = particle, obs_id, obs_height_m
        self.p_alt, self.p_az = pointing_alt_deg, pointing_az_deg
        self.tel_ids = subarray.tel_ids
        self.positions = subarray.positions()
        types = subarray.telescopes.column(S.TEL_TYPE).to_pylist()
        self.types = np.asarray(types)
        self.focal = np.array([subarray.optics[t].equivalent_focal_length_m for t in types])
        self.area = np.array([subarray.optics[t].mirror_area_m2 for t in types])
        cams = subarray.telescopes.column(S.CAMERA_NAME).to_pylist()
        self.geoms = [subarray.geometries[c] for c in cams]
        self.ro_names = np.asarray(subarray.telescopes.column(S.READOUT_NAME).to_pylist())
        self.readouts = [subarray.readouts[r] for r in self.ro_names]
        self.triggered = np.zeros(len(showers), bool)
        self.trigger_rows = {S.EVENT_ID: [], "tels_with_trigger": []}
        self.n_candidates = 0

    def run(self, progress=None):
        n = len(self.sh)
        for start in range(0, n, CHUNK_EVENTS):
            yield from self._chunk(np.arange(start, min(start + CHUNK_EVENTS, n)))
            if progress:
                progress(0)

    def _chunk(self, idx):
        sh, (w, o1, o2, dl, s_lat, s_long) = self.sh, self.comp
        n_ev, n_c, n_tel = len(idx), w.shape[1], len(self.tel_ids)
        d, e1, e2 = C.shower_frame(sh.alt_deg[idx], sh.az_deg[idx])
        core = np.stack([sh.core_x_m[idx], sh.core_y_m[idx], np.zeros(n_ev)], -1)
        h = sh.h_max_m[idx] - self.obs_height
        centre = core + d * (h / d[:, 2])[:, None]                      # shower maximum, (n_ev, 3)
        cc = (centre[:, None] - dl[idx][..., None] * d[:, None] + o1[idx][..., None] * e1[:, None]
              + o2[idx][..., None] * e2[:, None])                       # (n_ev, n_c, 3)
        axes = np.stack([-d, e1, e2], 1)                                # (n_ev, 3, 3)
        rel = self.positions[None] - core[:, None]                      # (n_ev, n_tel, 3)
        impact = np.linalg.norm(np.cross(rel, d[:, None]), axis=-1)
        n_pe = C.light_density(impact, sh.energy_tev[idx, None], self.particle) * self.area * C.EFFICIENCY
        # project every (event, telescope, component) at once
        shape = (n_ev, n_tel, n_c)
        bc = lambda a, k: np.broadcast_to(a, shape + a.shape[k:]).reshape((-1,) + a.shape[k:])  # noqa: E731
        sig = np.stack([s_long[idx], s_lat[idx], s_lat[idx]], -1)       # (n_ev, n_c, 3)
        mean, cov, jac, t_c, dt_long = C.project(
            bc(cc[:, None], 3), bc(axes[:, None, None], 3), bc(sig[:, None], 3),
            bc(self.positions[None, :, None], 3), bc(self.focal[None, :, None], 3), self.p_alt, self.p_az)
        mean, cov = mean.reshape(shape + (2,)), cov.reshape(shape + (2, 2))
        jac, dt_long = jac.reshape(shape + (2,)), dt_long.reshape(shape)
        det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
        pix_area = np.array([g.pix_area.mean() for g in self.geoms])
        peak = n_pe * pix_area * (w[idx][:, None] / (2 * np.pi * np.sqrt(det))).sum(-1)
        cand = np.argwhere(peak >= PRECHECK_FRACTION * C.TRIGGER_THRESHOLD_PE)   # (k, 2) sorted by event
        self.n_candidates += len(cand)
        true = {}
        tel_trig = np.zeros((n_ev, n_tel), bool)
        n_above = np.zeros((n_ev, n_tel), np.int64)
        for ti in range(n_tel):   # per telescope: pixel arrays differ between cameras
            ev = cand[cand[:, 1] == ti, 0]
            if not len(ev):
                continue
            g = self.geoms[ti]
            mu = C.expected_image(mean[ev, ti], cov[ev, ti], w[idx][ev], n_pe[ev, ti], g.pix_x, g.pix_y, g.pix_area)
            img = self.rng.poisson(mu)
            trig, above = C.telescope_trigger(img)
            tel_trig[ev, ti] = trig
            n_above[ev, ti] = above
            for k, e in enumerate(ev):
                true[(e, ti)] = img[k]
        stereo = tel_trig.sum(1) >= C.STEREO_MULTIPLICITY
        self.triggered[idx] = stereo
        for e in np.nonzero(stereo)[0]:
            self.trigger_rows[S.EVENT_ID].append(int(self.sh.event_id[idx[e]]))
            self.trigger_rows["tels_with_trigger"].append(self.tel_ids[tel_trig[e]].astype(np.int16).tolist())
        keep = tel_trig & stereo[:, None]
        for tel_type in sorted(set(self.types[keep.any(0)].tolist())):
            ev, ti = np.nonzero(keep & (self.types == tel_type)[None])
            order = np.lexsort((ti, ev))     # event order, telescopes by id within an event
            ev, ti = ev[order], ti[order]
            g, ro = self.geoms[ti[0]], self.readouts[ti[0]]
            img = np.stack([true[(e, t)] for e, t in zip(ev, ti)])
            # arrival time across the image: the brightest sub-shower's gradient along its axis
            c = np.argmax(w[idx][ev], axis=1)
            m, j, dtl = mean[ev, ti, c], jac[ev, ti, c], dt_long[ev, ti, c]
            dxy = np.stack([g.pix_x, g.pix_y], -1)[None] - m[:, None]
            s = (dxy @ j[..., None])[..., 0] / np.maximum((j * j).sum(-1), 1e-12)[:, None]
            t_start = C.pulse_start_times(s * dtl[:, None], ro)
            # readouts may differ within a type (LST-1 vs LST-2..4): synthesise per readout
            wf = np.empty((len(ev), g.n_pixels, ro.n_samples), np.float32)
            ro_names = self.ro_names[ti]
            for name in sorted(set(ro_names)):
                sel = ro_names == name
                wf[sel] = C.synthesize_waveforms(self.rng, img[sel], t_start[sel], self.sub.readouts[name])
            gain = (img > C.HIGH_GAIN_MAX_PE).astype(np.int8)
            yield tel_type, r1_table(self.obs_id, sh.event_id[idx[ev]], self.tel_ids[ti], wf, img, gain,
                                     impact[ev, ti], t_c.reshape(shape)[ev, ti, c], n_above[ev, ti],
                                     self.p_alt, self.p_az)
