"""Toy single-muon events for ``dvp simulate --particle muon``: rings for calibration tests.

Each event is one muon that hits one telescope, chosen uniformly among the array's
telescopes (so every muon event triggers at most that telescope: stereo multiplicity
1). Its impact point lies uniformly in a disk of :data:`MAX_IMPACT_FACTOR` × the mirror
radius ``R = √(A/π)`` in the mirror plane (the plane through the telescope position
perpendicular to the pointing), so some muons pass outside the mirror and give arcs.
The muon direction comes from the viewcone (or the offset) as for showers; the energy
from the power law of ``--energy-range``.

Ring model (Vacanti et al. 1994, Astropart. Phys. 2, 1): the p.e. per radian of ring
azimuth φ are ::

    dN/dφ = η · (α/2) · I · sin(2θc) · D(φ),     I = ∫ dλ/λ² over 300-600 nm,

with ``D(φ)`` the length of the mirror chord from the impact point along the photons'
direction: for ρ ≤ R, ``D = R·[√(1 − (ρ/R)² sin²ψ) + (ρ/R) cos ψ]``; for ρ > R,
``D = 2R·√(1 − (ρ/R)² sin²ψ)`` where ``|sin ψ| ≤ R/ρ`` and ``cos ψ > 0``, else 0;
``ψ = φ − φ_impact``. In the camera (``x = fov_lat·f``, ``y = fov_lon·f``) the ring is
brightest at the azimuth of the impact point (measured along the camera axes).
The Cherenkov angle follows from the muon energy, ``cos θc = 1/(β n)`` with
``n − 1 = 2.7e-4 · exp(−h / 8.4 km)`` at the telescope height; the ring radius is θc.
The radial profile is a Gaussian of σ = √(PSF² + σ_ms²) (the **true ring width**),
σ_ms the multiple scattering of the muon over the track length seen by the mirror
(``R / tan θc``), ``13.6 MeV/(βcp)·√(x/X0)·(1 + 0.038 ln(x/X0)) / √3`` (the mean over
the track). The optical efficiency η is a per-event truth, uniform in
:data:`OPTICAL_EFFICIENCY_RANGE` (absolute, LST-like).

**Toy** simplifications: parallel-light focusing (no parallax from the finite emission
distance), θc constant along the track, no atmospheric absorption, a full disk mirror
(no central hole or camera shadow), all ring light at one time. The camera response
(Poisson p.e., NSB, noise, pulses) is that of :mod:`dvp.sim.camera`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numba import njit

from .. import schemas as S
from ..kernels.frames import altaz_to_telescope
from . import camera as C
from .events import _Detector
from .showers import SCALE_HEIGHT_M, directions, power_law

SIM_MUON = "simulation.muon"           # schemas/simulation.muon.json
MUON_MASS_TEV = 0.1056583755e-3
REFRACTIVITY_SEA_LEVEL = 2.7e-4        # n - 1 at sea level
ALPHA = 1.0 / 137.035999
LAMBDA_NM = (300.0, 600.0)             # Cherenkov band integrated over
I_LAMBDA_PER_M = 1e9 / LAMBDA_NM[0] - 1e9 / LAMBDA_NM[1]   # ∫ dλ/λ², 1/m
MAX_IMPACT_FACTOR = 1.2                # impacts uniform within this × mirror radius
# absolute photon → p.e. efficiency over 300-600 nm (mirror × window × PDE), per-event truth:
# LST-like values, so that rings have the ~1500-4000 p.e. of sim_telarray's lst_muons file.
# (The shower model's camera.EFFICIENCY is part of a toy light yield, not a physical number.)
OPTICAL_EFFICIENCY_RANGE = (0.12, 0.24)
AIR_DENSITY_SEA_LEVEL_G_CM3 = 1.225e-3
X0_AIR_G_CM2 = 36.62
RING_SIGMA_CUT = 8.0                   # pixels beyond this many σ of the ring get no light


def refractive_index(height_m):
    """Air refractive index at ``height_m`` a.s.l. (exponential refractivity)."""
    return 1.0 + REFRACTIVITY_SEA_LEVEL * np.exp(-np.asarray(height_m, np.float64) / SCALE_HEIGHT_M)


def cherenkov_angle_rad(energy_tev, height_m):
    """Cherenkov angle (rad) of muons of total energy ``energy_tev``; 0 below threshold."""
    e = np.asarray(energy_tev, np.float64)
    beta = np.sqrt(np.clip(1.0 - (MUON_MASS_TEV / e) ** 2, 0.0, 1.0))
    cos_t = 1.0 / np.maximum(beta * refractive_index(height_m), 1e-300)
    return np.arccos(np.minimum(cos_t, 1.0))


def multiple_scattering_rad(energy_tev, track_m, height_m):
    """Mean radial ring broadening (rad) from multiple scattering over ``track_m`` of air."""
    e = np.asarray(energy_tev, np.float64)
    p_mev = np.sqrt(np.maximum(e * e - MUON_MASS_TEV ** 2, 1e-30)) * 1e6
    beta = np.sqrt(np.clip(1.0 - (MUON_MASS_TEV / e) ** 2, 1e-12, 1.0))
    rho = AIR_DENSITY_SEA_LEVEL_G_CM3 * np.exp(-np.asarray(height_m, np.float64) / SCALE_HEIGHT_M)
    x = np.maximum(track_m * 100.0 * rho / X0_AIR_G_CM2, 1e-6)   # radiation lengths
    theta0 = 13.6 / (beta * p_mev) * np.sqrt(x) * (1.0 + 0.038 * np.log(x))
    return np.maximum(theta0, 0.0) / np.sqrt(3.0)


def chord_length(psi_rad, rho_over_r):
    """``D(ψ)/R``: mirror chord from the impact point (numpy; see :func:`_chord`)."""
    psi, rho = np.broadcast_arrays(np.asarray(psi_rad, np.float64), np.asarray(rho_over_r, np.float64))
    out = np.empty(psi.shape)
    for i in np.ndindex(psi.shape):
        out[i] = _chord(psi[i], rho[i])
    return out


@njit(cache=True)
def _chord(psi, rho):
    s = rho * np.sin(psi)
    root = np.sqrt(max(1.0 - s * s, 0.0))
    c = np.cos(psi)
    if rho <= 1.0:
        return root + rho * c
    if abs(s) <= 1.0 and c > 0.0:
        return 2.0 * root
    return 0.0


@dataclass
class Muons:
    """One entry per muon event (muon × reuse), arrays of shape (n_events,).

    Truth: ``energy_tev``, ``alt_deg``/``az_deg`` (direction the muon comes from),
    ``tel_index`` (index into the subarray's telescopes), ``impact_x_m``/``impact_y_m``
    (mirror plane, along the camera x/y axes, from the telescope position), ``impact_m``,
    ``impact_phi_deg`` (atan2(y, x)), ``core_x_m``/``core_y_m`` (where the track meets the
    z = 0 ground plane), ``ring_radius_deg`` (θc), ``ring_width_deg``,
    ``center_fov_lon_deg``/``center_fov_lat_deg`` (the muon direction in the telescope
    frame), ``optical_efficiency``. Camera-frame derived: ``cx_m``, ``cy_m``, ``radius_m``,
    ``sigma_m``, ``rho_over_r``, ``amplitude`` (p.e. per radian per unit ``D/R``).
    """

    shower_num: np.ndarray
    event_id: np.ndarray
    energy_tev: np.ndarray
    alt_deg: np.ndarray
    az_deg: np.ndarray
    tel_index: np.ndarray
    impact_x_m: np.ndarray
    impact_y_m: np.ndarray
    impact_m: np.ndarray
    impact_phi_deg: np.ndarray
    core_x_m: np.ndarray
    core_y_m: np.ndarray
    ring_radius_deg: np.ndarray
    ring_width_deg: np.ndarray
    center_fov_lon_deg: np.ndarray
    center_fov_lat_deg: np.ndarray
    optical_efficiency: np.ndarray
    cx_m: np.ndarray
    cy_m: np.ndarray
    radius_m: np.ndarray
    sigma_m: np.ndarray
    rho_over_r: np.ndarray
    amplitude: np.ndarray

    def __len__(self):
        return len(self.energy_tev)


def generate_muons(rng, subarray, n_muons: int, *, energy_range=(0.01, 0.1), spectral_index=-2.0,
                   viewcone_deg=0.0, offset_deg=0.0, reuse=1, pointing_alt_deg=70.0, pointing_az_deg=0.0,
                   obs_height_m=0.0) -> Muons:
    """Draw ``n_muons`` muons (energy, direction), each used ``reuse`` times with a new
    telescope, impact point and optical efficiency. Event ids ``muon_num * 100 + reuse_index``."""
    tel_pos = subarray.positions()
    types = subarray.telescopes.column(S.TEL_TYPE).to_pylist()
    focal = np.array([subarray.optics[t].equivalent_focal_length_m for t in types])
    mirror_r = np.sqrt(np.array([subarray.optics[t].mirror_area_m2 for t in types]) / np.pi)
    e = power_law(rng, n_muons, energy_range[0], energy_range[1], spectral_index)
    alt, az = directions(rng, n_muons, viewcone_deg, offset_deg, pointing_alt_deg, pointing_az_deg)
    n = n_muons * reuse
    tel = rng.integers(0, len(tel_pos), n)
    rho = MAX_IMPACT_FACTOR * mirror_r[tel] * np.sqrt(rng.random(n))
    phi = rng.uniform(0.0, 2 * np.pi, n)
    eta = rng.uniform(OPTICAL_EFFICIENCY_RANGE[0], OPTICAL_EFFICIENCY_RANGE[1], n)
    rep = np.repeat
    num = np.arange(1, n_muons + 1, dtype=np.int64)
    e, alt, az = rep(e, reuse), rep(alt, reuse), rep(az, reuse)
    h = obs_height_m + tel_pos[tel, 2]
    theta = cherenkov_angle_rad(e, h)
    track = mirror_r[tel] / np.maximum(np.tan(theta), 1e-6)
    sigma = np.hypot(np.deg2rad(C.PSF_DEG), multiple_scattering_rad(e, track, h))
    lon, lat = altaz_to_telescope(alt, az, pointing_alt_deg, pointing_az_deg)
    # impact point in 3D: the camera x axis is +fov_lat (up in altitude), y is +fov_lon
    # (towards larger azimuth); ground frame x north, y west, z up
    a, z = np.deg2rad(pointing_alt_deg), np.deg2rad(pointing_az_deg)
    e_x = np.array([-np.sin(a) * np.cos(z), np.sin(a) * np.sin(z), np.cos(a)])
    e_y = np.array([-np.sin(z), -np.cos(z), 0.0])
    ix, iy = rho * np.cos(phi), rho * np.sin(phi)
    p = tel_pos[tel] + ix[:, None] * e_x + iy[:, None] * e_y
    ar, zr = np.deg2rad(alt), np.deg2rad(az)
    d = np.stack([np.cos(ar) * np.cos(zr), -np.cos(ar) * np.sin(zr), np.sin(ar)], -1)
    core = p - d * (p[:, 2] / d[:, 2])[:, None]
    f = focal[tel]
    return Muons(
        shower_num=rep(num, reuse), event_id=rep(num, reuse) * 100 + np.tile(np.arange(reuse), n_muons),
        energy_tev=e, alt_deg=alt, az_deg=az, tel_index=tel, impact_x_m=ix, impact_y_m=iy, impact_m=rho,
        impact_phi_deg=np.rad2deg(phi), core_x_m=core[:, 0], core_y_m=core[:, 1],
        ring_radius_deg=np.rad2deg(theta), ring_width_deg=np.rad2deg(sigma),
        center_fov_lon_deg=lon, center_fov_lat_deg=lat, optical_efficiency=eta,
        cx_m=np.deg2rad(lat) * f, cy_m=np.deg2rad(lon) * f, radius_m=theta * f, sigma_m=sigma * f,
        rho_over_r=rho / mirror_r[tel],
        amplitude=eta * 0.5 * ALPHA * I_LAMBDA_PER_M * np.sin(2 * theta) * mirror_r[tel])


@njit(cache=True)
def _ring_images(rng, cx, cy, radius, sigma, phi_imp, rho_r, amp, pix_x, pix_y, pix_area, mu_min, threshold,
                 out, n_above):
    n_pix = pix_x.shape[0]
    inv_sqrt_2pi = 1.0 / np.sqrt(2.0 * np.pi)
    for i in range(cx.shape[0]):
        k = 0
        for p in range(n_pix):
            dx, dy = pix_x[p] - cx[i], pix_y[p] - cy[i]
            r = np.sqrt(dx * dx + dy * dy)
            z = (r - radius[i]) / sigma[i]
            mu = 0.0
            if abs(z) < RING_SIGMA_CUT and r > 0.0 and amp[i] > 0.0:
                d = _chord(np.arctan2(dy, dx) - phi_imp[i], rho_r[i])
                # surface density = (p.e. per radian) / r × radial Gaussian
                mu = amp[i] * d / r * np.exp(-0.5 * z * z) * inv_sqrt_2pi / sigma[i] * pix_area[p]
            v = 0
            if mu > mu_min:
                v = rng.poisson(mu)
            out[i, p] = v
            if v >= threshold:
                k += 1
        n_above[i] = k


def ring_images(rng, muons: Muons, rows, pix_x, pix_y, pix_area):
    """Poisson p.e. ring images of muon events ``rows`` in one camera geometry.

    Returns ``(image (n, n_pixels) int32, n_above (n,) int64)`` as :func:`camera.sample_images`.
    """
    rows = np.asarray(rows, np.int64)
    pix_x, pix_y, pix_area = (np.ascontiguousarray(a, np.float64) for a in (pix_x, pix_y, pix_area))
    if not (pix_x.shape == pix_y.shape == pix_area.shape):
        raise ValueError("ring_images: pixel arrays differ in shape")
    image = np.empty((len(rows), len(pix_x)), np.int32)
    n_above = np.empty(len(rows), np.int64)
    g = lambda a: np.ascontiguousarray(a[rows], np.float64)  # noqa: E731
    _ring_images(rng, g(muons.cx_m), g(muons.cy_m), g(muons.radius_m), g(muons.sigma_m),
                 np.deg2rad(g(muons.impact_phi_deg)), g(muons.rho_over_r), g(muons.amplitude),
                 pix_x, pix_y, pix_area, C.MU_MIN_PE, C.TRIGGER_THRESHOLD_PE, image, n_above)
    return image, n_above


class MuonSimulation(_Detector):
    """Simulate muon events: each triggers at most the telescope it hits (multiplicity 1).

    Iterate :meth:`run` for ``(tel_type, r1_table)`` batches; afterwards ``triggered``,
    ``trigger_rows`` and :meth:`truth_table` are complete.
    """

    def __init__(self, rng, subarray, muons: Muons, *, obs_id: int, obs_height_m: float, pointing_alt_deg: float,
                 pointing_az_deg: float):
        super().__init__(rng, subarray, obs_id=obs_id, obs_height_m=obs_height_m,
                         pointing_alt_deg=pointing_alt_deg, pointing_az_deg=pointing_az_deg)
        self.mu = muons
        self.triggered = np.zeros(len(muons), bool)

    def _n_events(self) -> int:
        return len(self.mu)

    def _chunk(self, idx):
        mu = self.mu
        tel = mu.tel_index[idx]
        trig = np.zeros(len(idx), bool)
        n_above = np.zeros(len(idx), np.int64)
        images = {}
        for ti in range(len(self.tel_ids)):
            local = np.flatnonzero((tel == ti) & (mu.amplitude[idx] > 0))
            if not len(local):
                continue
            self.n_candidates += len(local)
            g = self.geoms[ti]
            img, above = ring_images(self.rng, mu, idx[local], g.pix_x, g.pix_y, g.pix_area)
            trig[local] = above >= C.TRIGGER_N_PIXELS
            n_above[local] = above
            images.update(zip(local.tolist(), img))
        self.triggered[idx] = trig
        for e in np.flatnonzero(trig):
            self.trigger_rows[S.EVENT_ID].append(int(mu.event_id[idx[e]]))
            self.trigger_rows["tels_with_trigger"].append([int(self.tel_ids[tel[e]])])
        for tel_type in sorted(set(self.types[tel[trig]].tolist())):
            ev = np.flatnonzero(trig & (self.types[tel] == tel_type))
            ti = tel[ev]
            for b in self._batches(ev, ti):
                e_b, t_b = ev[b], ti[b]
                img = np.stack([images[e] for e in e_b.tolist()])
                # the ring's light arrives within ~1 ns: one time for all pixels
                yield from self._push(tel_type, mu.event_id[idx[e_b]], t_b, img, np.zeros(img.shape),
                                      mu.impact_m[idx[e_b]], np.zeros(len(e_b)), n_above[e_b])

    def truth_table(self, obs_id: int) -> pa.Table:
        """``simulation.muon`` rows: one per muon event, triggered or not."""
        mu = self.mu
        n = len(mu)
        return S.validate(pa.table({
            S.OBS_ID: np.full(n, obs_id, np.int32), S.EVENT_ID: mu.event_id.astype(np.int64),
            S.TEL_ID: self.tel_ids[mu.tel_index].astype(np.int16), S.TRUE_ENERGY: mu.energy_tev,
            S.TRUE_ALT: mu.alt_deg, S.TRUE_AZ: mu.az_deg,
            "true_ring_radius_deg": mu.ring_radius_deg, "true_ring_width_deg": mu.ring_width_deg,
            "true_ring_center_fov_lon_deg": mu.center_fov_lon_deg,
            "true_ring_center_fov_lat_deg": mu.center_fov_lat_deg,
            "true_impact_m": mu.impact_m, "true_impact_phi_deg": mu.impact_phi_deg,
            "true_impact_x_m": mu.impact_x_m, "true_impact_y_m": mu.impact_y_m,
            "true_optical_efficiency": mu.optical_efficiency, S.TRIGGERED: self.triggered}), SIM_MUON)
