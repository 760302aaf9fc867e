"""Event loop of the toy simulation: showers (or muons) → images → trigger → R1 tables.

Showers are processed in chunks of :data:`CHUNK_EVENTS`. Per (event, telescope) an
analytic bound on the brightest pixel (all light of the telescope in one
PSF-sized spot) drops every telescope that cannot reach the pre-check level before any
projection, so showers that trigger nothing cost only a few vectorised array
operations; the survivors are projected (one numba pass), checked against the exact
brightest-pixel expectation, and only then imaged (numba, Poisson per pixel).
Triggered telescope events get waveforms in batches of at most one Parquet row group
(~16 MiB of waveforms), so memory is bounded whatever the chunk holds.

All randomness comes from one generator, drawn in a fixed order (chunk by chunk;
within a chunk images telescope by telescope, then waveforms batch by batch), so a
seed fixes the output bit for bit.
"""
from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from .. import schemas as S
from ..io.parquet import ROW_GROUP_BYTES
from . import camera as C
from .showers import Showers

CHUNK_EVENTS = 512
PRECHECK_FRACTION = 0.25   # drop telescopes whose brightest expected pixel < this × threshold


@functools.lru_cache(maxsize=16)
def _r1_schema(n_pixels: int, n_samples: int) -> pa.Schema:
    """The validated ``r1.telescope_events`` schema for one camera (a table built on it
    passes :func:`dvp.schemas.validate` without a cast)."""
    sizes = {S.WAVEFORM: n_pixels * n_samples}
    sizes.update({c: n_pixels for c in (S.SELECTED_GAIN, S.PIXEL_STATUS, S.HV_DISABLED, S.TIME_SHIFT, S.TRUE_IMAGE)})
    return S.schema(S.R1_EVENTS, sizes)


def r1_table(obs_id, event_id, tel_id, waveform, true_image, gain, impact, trig_time, n_trig_pix,
             pointing_alt, pointing_az) -> pa.Table:
    """``r1.telescope_events`` table for one telescope type; ``waveform`` (n, n_pix, n_samples)
    float32 (wrapped without a copy)."""
    n, n_pix, n_s = waveform.shape
    fixed = pa.FixedSizeListArray.from_arrays
    cols = {
        S.OBS_ID: pa.array(np.full(n, obs_id, np.int32)), S.EVENT_ID: pa.array(event_id.astype(np.int64)),
        S.TEL_ID: pa.array(tel_id.astype(np.int16)), S.N_PIXELS: pa.array(np.full(n, n_pix, np.int32)),
        S.N_SAMPLES: pa.array(np.full(n, n_s, np.int32)),
        S.WAVEFORM: fixed(pa.array(np.ascontiguousarray(waveform, np.float32).reshape(-1)), n_pix * n_s),
        S.SELECTED_GAIN: fixed(pa.array(gain.reshape(-1).astype(np.int8)), n_pix),
        # status bits as simtel-to-r1 writes them: 1 = high gain, 2 = low gain
        S.PIXEL_STATUS: fixed(pa.array((gain + 1).reshape(-1).astype(np.uint8)), n_pix),
        S.HV_DISABLED: fixed(pa.array(np.zeros(n * n_pix, np.bool_)), n_pix),
        S.TIME_SHIFT: fixed(pa.array(np.zeros(n * n_pix, np.float32)), n_pix),
        S.TRUE_IMAGE: fixed(pa.array(true_image.reshape(-1).astype(np.int32)), n_pix),
        S.TRUE_IMAGE_SUM: pa.array(true_image.sum(axis=1).astype(np.float64)),
        S.TRUE_IMPACT: pa.array(impact.astype(np.float64)),
        S.POINTING_ALT: pa.array(np.full(n, pointing_alt, np.float64)),
        S.POINTING_AZ: pa.array(np.full(n, pointing_az, np.float64)),
        "trigger_time_ns": pa.array(trig_time.astype(np.float64)),
        "n_trigger_pixels": pa.array(n_trig_pix.astype(np.int32)),
    }
    schema = _r1_schema(n_pix, n_s)
    return S.validate(pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema), S.R1_EVENTS,
                      source="dvp simulate")


def max_batch_rows(n_pixels: int, n_samples: int) -> int:
    """Telescope events per R1 batch: one row group of waveforms (as simtel-to-r1 writes)."""
    return max(1, ROW_GROUP_BYTES // (4 * n_pixels * n_samples))


class _Detector:
    """Instrument arrays per telescope, noise traces per readout, and R1 batch synthesis."""

    def __init__(self, rng, subarray, *, obs_id: int, obs_height_m: float, pointing_alt_deg: float,
                 pointing_az_deg: float):
        self.rng, self.sub, self.obs_id, self.obs_height = rng, subarray, obs_id, obs_height_m
        self.p_alt, self.p_az = pointing_alt_deg, pointing_az_deg
        self.tel_ids = subarray.tel_ids
        self.positions = subarray.positions()
        types = subarray.telescopes.column(S.TEL_TYPE).to_pylist()
        self.types = np.asarray(types)
        self.focal = np.array([subarray.optics[t].equivalent_focal_length_m for t in types])
        self.area = np.array([subarray.optics[t].mirror_area_m2 for t in types])
        cams = subarray.telescopes.column(S.CAMERA_NAME).to_pylist()
        self.geoms = [subarray.geometries[c] for c in cams]
        self.pix_area_mean = np.array([g.pix_area.mean() for g in self.geoms])
        self.pix_area_max = np.array([g.pix_area.max() for g in self.geoms])
        self.ro_names = np.asarray(subarray.telescopes.column(S.READOUT_NAME).to_pylist())
        self.readouts = [subarray.readouts[r] for r in self.ro_names]
        self.traces: dict[str, C.NoiseTrace] = {}
        self._pending: dict[str, list] = {}
        self.trigger_rows = {S.EVENT_ID: [], "tels_with_trigger": []}
        self.n_candidates = 0

    def _batches(self, ev, ti):
        """Split rows of one telescope type into R1-batch-sized slices."""
        g, ro = self.geoms[ti[0]], self.readouts[ti[0]]
        step = max_batch_rows(g.n_pixels, ro.n_samples)
        for lo in range(0, len(ev), step):
            yield slice(lo, min(lo + step, len(ev)))

    def _push(self, tel_type, event_id, ti, img, t_rel, impact, trig_time, n_above):
        """Queue triggered telescope events of ``tel_type`` (arrays of m rows, images (m, n_pix));
        yield ``(tel_type, r1_table)`` for every full batch. Batches are filled across
        chunks so that they (and the R1 row groups) have the size simtel-to-r1 gives them,
        whatever the trigger rate, which keeps the per-batch costs of the writer and of
        the R1 → DL1 stage small."""
        rows = (np.asarray(event_id, np.int64), np.asarray(ti, np.int64), img, t_rel, impact, trig_time, n_above)
        queue = self._pending.setdefault(tel_type, [])
        queue.append(rows)
        n = sum(len(r[0]) for r in queue)
        g, ro = self.geoms[int(ti[0])], self.readouts[int(ti[0])]
        step = max_batch_rows(g.n_pixels, ro.n_samples)
        if n < step:
            return
        cols = [np.concatenate(c) for c in zip(*queue)] if len(queue) > 1 else list(queue[0])
        queue.clear()
        full = (n // step) * step
        for lo in range(0, full, step):
            yield tel_type, self._r1_batch(*(c[lo:lo + step] for c in cols))
        if full < n:
            queue.append(tuple(c[full:] for c in cols))

    def run(self, progress=None):
        """Yield ``(tel_type, r1_table)`` batches: :meth:`_chunk` over chunks of
        ``CHUNK_EVENTS`` events, then what is still queued."""
        n = self._n_events()
        for start in range(0, n, CHUNK_EVENTS):
            yield from self._chunk(np.arange(start, min(start + CHUNK_EVENTS, n)))
            if progress:
                progress(0)
        yield from self._flush()

    def _flush(self):
        """Yield the queued telescope events of every type (end of the run)."""
        for tel_type in sorted(self._pending):
            queue = self._pending[tel_type]
            if queue:
                cols = [np.concatenate(c) for c in zip(*queue)]
                queue.clear()
                yield tel_type, self._r1_batch(*cols)

    def _r1_batch(self, event_id, ti, img, t_rel, impact, trig_time, n_above) -> pa.Table:
        """Waveforms and the R1 table of telescope events ``ti`` (one type), images ``img`` (m, n_pix)."""
        g, ro = self.geoms[ti[0]], self.readouts[ti[0]]
        wf = np.empty((len(ti), g.n_pixels, ro.n_samples), np.float32)
        ro_names = self.ro_names[ti]
        # readouts may differ within a type (LST-1 vs LST-2..4): synthesise per readout
        for name in sorted(set(ro_names.tolist())):
            rows = np.flatnonzero(ro_names == name)
            readout = self.sub.readouts[name]
            trace = self.traces.get(name)
            if trace is None:
                trace = self.traces[name] = C.NoiseTrace(readout)
            C.synthesize_waveforms(self.rng, img, C.pulse_start_times(t_rel, readout), readout, trace=trace,
                                   out=wf, rows=rows)
        gain = (img > C.HIGH_GAIN_MAX_PE).astype(np.int8)
        return r1_table(self.obs_id, event_id, self.tel_ids[ti], wf, img, gain, impact, trig_time, n_above,
                        self.p_alt, self.p_az)


class ToySimulation(_Detector):
    """Simulate the events of ``showers`` seen by ``subarray``.

    Iterate :meth:`run` for ``(tel_type, r1_table)`` batches; afterwards ``triggered``
    (n_events,) bool and the trigger rows (``trigger_rows``) are filled.
    """

    def __init__(self, rng, subarray, showers: Showers, components, particle: str, *, obs_id: int,
                 obs_height_m: float, pointing_alt_deg: float, pointing_az_deg: float):
        super().__init__(rng, subarray, obs_id=obs_id, obs_height_m=obs_height_m,
                         pointing_alt_deg=pointing_alt_deg, pointing_az_deg=pointing_az_deg)
        self.sh, self.comp, self.particle = showers, components, particle
        self.triggered = np.zeros(len(showers), bool)
        # brightest pixel if all of a telescope's light fell in one PSF-sized spot: the
        # projected covariance is the PSF's plus a positive semi-definite term, so
        # det(cov) ≥ psf⁴ and no pixel can be brighter than n_pe × this factor
        self.bound_factor = self.pix_area_max / (2 * np.pi * C.psf_m(self.focal) ** 2)

    def _n_events(self) -> int:
        return len(self.sh)

    def _chunk(self, idx):
        sh, (w_all, o1, o2, dl, s_lat, s_long) = self.sh, self.comp
        n_ev, n_tel = len(idx), len(self.tel_ids)
        d, e1, e2 = C.shower_frame(sh.alt_deg[idx], sh.az_deg[idx])
        core = np.stack([sh.core_x_m[idx], sh.core_y_m[idx], np.zeros(n_ev)], -1)
        rel = self.positions[None] - core[:, None]                      # (n_ev, n_tel, 3)
        impact = np.linalg.norm(np.cross(rel, d[:, None]), axis=-1)
        n_pe = C.light_density(impact, sh.energy_tev[idx, None], self.particle) * (self.area * C.EFFICIENCY)
        ev_p, ti_p = np.nonzero(n_pe * self.bound_factor >= PRECHECK_FRACTION * C.TRIGGER_THRESHOLD_PE)
        if not len(ev_p):
            return
        # project every component of the surviving (event, telescope) pairs
        w = w_all[idx[ev_p]]                                            # (k, n_c)
        k, n_c = w.shape
        h = sh.h_max_m[idx[ev_p]] - self.obs_height
        dp, e1p, e2p = d[ev_p], e1[ev_p], e2[ev_p]
        centre = core[ev_p] + dp * (h / dp[:, 2])[:, None]              # shower maximum, (k, 3)
        cc = (centre[:, None] - dl[idx[ev_p]][..., None] * dp[:, None] + o1[idx[ev_p]][..., None] * e1p[:, None]
              + o2[idx[ev_p]][..., None] * e2p[:, None])                # (k, n_c, 3)
        axes = np.broadcast_to(np.stack([-dp, e1p, e2p], 1)[:, None], (k, n_c, 3, 3))
        sig = np.stack([s_long[idx[ev_p]], s_lat[idx[ev_p]], s_lat[idx[ev_p]]], -1)   # (k, n_c, 3)
        mean, cov, jac, t_c, dt_long = C.project(
            cc.reshape(-1, 3), axes.reshape(-1, 3, 3), sig.reshape(-1, 3),
            np.repeat(self.positions[ti_p], n_c, axis=0), np.repeat(self.focal[ti_p], n_c), self.p_alt, self.p_az)
        mean, cov, jac = mean.reshape(k, n_c, 2), cov.reshape(k, n_c, 2, 2), jac.reshape(k, n_c, 2)
        t_c, dt_long = t_c.reshape(k, n_c), dt_long.reshape(k, n_c)
        peak = C.peak_expectation(cov, w, n_pe[ev_p, ti_p], self.pix_area_mean[ti_p])
        sel = np.flatnonzero(peak >= PRECHECK_FRACTION * C.TRIGGER_THRESHOLD_PE)  # pairs, sorted by event
        self.n_candidates += len(sel)
        tel_trig = np.zeros((n_ev, n_tel), bool)
        n_above = np.zeros((n_ev, n_tel), np.int64)
        images, image_row = {}, {}
        for ti in range(n_tel):   # per telescope: pixel arrays differ between cameras
            s = sel[ti_p[sel] == ti]
            if not len(s):
                continue
            g = self.geoms[ti]
            img, above = C.sample_images(self.rng, mean[s], cov[s], w[s], n_pe[ev_p[s], ti], g.pix_x, g.pix_y,
                                         g.pix_area)
            tel_trig[ev_p[s], ti] = above >= C.TRIGGER_N_PIXELS
            n_above[ev_p[s], ti] = above
            images[ti] = img
            image_row[ti] = dict(zip(ev_p[s].tolist(), range(len(s))))
        stereo = tel_trig.sum(1) >= C.STEREO_MULTIPLICITY
        self.triggered[idx] = stereo
        for e in np.flatnonzero(stereo):
            self.trigger_rows[S.EVENT_ID].append(int(sh.event_id[idx[e]]))
            self.trigger_rows["tels_with_trigger"].append(self.tel_ids[tel_trig[e]].astype(np.int16).tolist())
        keep = tel_trig & stereo[:, None]
        if not keep.any():
            return
        pair = np.full((n_ev, n_tel), -1, np.int64)
        pair[ev_p, ti_p] = np.arange(k)
        brightest = np.argmax(w, axis=1)                                # (k,)
        for tel_type in sorted(set(self.types[keep.any(0)].tolist())):
            ev, ti = np.nonzero(keep & (self.types == tel_type)[None])  # event order, telescopes by id
            g = self.geoms[ti[0]]
            pix = np.stack([g.pix_x, g.pix_y], -1)
            for b in self._batches(ev, ti):
                e_b, t_b = ev[b], ti[b]
                p = pair[e_b, t_b]
                c = brightest[p]
                img = np.stack([images[t][image_row[t][e]] for e, t in zip(e_b.tolist(), t_b.tolist())])
                # arrival time across the image: the brightest sub-shower's gradient along its axis
                m, j, dtl = mean[p, c], jac[p, c], dt_long[p, c]
                s = ((pix[None] - m[:, None]) @ j[..., None])[..., 0] / np.maximum((j * j).sum(-1), 1e-12)[:, None]
                yield from self._push(tel_type, sh.event_id[idx[e_b]], t_b, img, s * dtl[:, None],
                                      impact[e_b, t_b], t_c[p, c], n_above[e_b, t_b])
