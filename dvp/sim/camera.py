"""Toy Cherenkov images and camera response for ``dvp simulate``.

Emission model (**toy**): the light of a shower comes from a 3D Gaussian around the
shower maximum, elongated along the shower axis (gammas: one Gaussian, σ_long 3 km,
σ_lat 25 m; protons: four sub-showers with random transverse and longitudinal offsets,
hence wider, fragmented images). Each Gaussian is seen by a telescope through its
optics: the centre and ±σ points along the three principal axes are turned into
directions from the telescope, then into the telescope frame and the camera frame
with :mod:`dvp.kernels.frames` (``x = fov_lat·f``, ``y = fov_lon·f``). The 2D image is
the Gaussian with that centre and the covariance of the projected ±σ points, so the
centroid, length, width, orientation and the time gradient along the major axis all
follow from the geometry. Photon density ∝ energy, flat inside the light pool
(120 m) and falling exponentially outside.

Camera response: Poisson p.e. per pixel, Poisson night-sky background with uniform
arrival times, Gaussian electronic noise, waveform = Σ p.e. × reference pulse (from
the camera readout, normalised so a p.e. sums to 1 over the samples), pedestal (mean
NSB) subtracted: float32 R1 in p.e. as ctapipe's R1 calibration gives.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..kernels.frames import altaz_to_telescope, cartesian_to_altaz, telescope_to_camera

C_M_NS = 0.299792458
SIGMA_LONG_M = 3000.0           # longitudinal extent of the emitting region (gammas)
SIGMA_LAT_M = 25.0              # lateral extent (gammas)
PROTON_N_SUB = 4                # sub-showers of a proton
PROTON_SIGMA_LAT_M = 40.0
PROTON_SUB_SPREAD_M = 80.0      # transverse scatter of sub-shower centres
PROTON_SUB_LONG_M = 1500.0      # longitudinal scatter of sub-shower centres
PROTON_LIGHT_YIELD = 0.4        # hadronic showers give less Cherenkov light per TeV
PHOTON_DENSITY_PER_TEV = 100.0  # photons / m² / TeV inside the light pool
LIGHT_POOL_RADIUS_M = 120.0
LIGHT_POOL_FALLOFF_M = 60.0
EFFICIENCY = 0.1                # mirror reflectivity × PDE × ...
PSF_DEG = 0.04                  # optical point spread (σ)
NSB_RATE_GHZ = 0.2              # night-sky p.e. per ns per pixel
ELECTRONIC_NOISE_PE = 0.05      # σ per sample
TRIGGER_THRESHOLD_PE = 8        # pixel threshold of the telescope trigger
TRIGGER_N_PIXELS = 4            # pixels above threshold for a telescope trigger
STEREO_MULTIPLICITY = 2
HIGH_GAIN_MAX_PE = 200.0        # pixels above this many p.e. are read in low gain
PEAK_POSITION = 0.4             # image mean time at this fraction of the readout window
MAX_TIME_SPREAD = 0.3           # clip geometric delays to ± this fraction of the window


def emission_components(rng, particle: str, n_showers: int):
    """Per-shower sub-shower layout: ``(weights, d_lat1, d_lat2, d_long, sigma_lat, sigma_long)``.

    Each of shape (n_showers, n_comp), metres; offsets are along two axes transverse to
    the shower axis and along it, relative to the shower maximum.
    """
    if particle == "gamma":
        z = np.zeros((n_showers, 1))
        return (np.ones((n_showers, 1)), z, z, z, z + SIGMA_LAT_M, z + SIGMA_LONG_M)
    k = PROTON_N_SUB
    w = rng.dirichlet(np.full(k, 2.0), n_showers)
    off = rng.normal(0.0, PROTON_SUB_SPREAD_M, (n_showers, k, 2))
    dl = rng.normal(0.0, PROTON_SUB_LONG_M, (n_showers, k))
    s = np.ones((n_showers, k))
    return w, off[..., 0], off[..., 1], dl, s * PROTON_SIGMA_LAT_M, s * (SIGMA_LONG_M / 1.5)


def shower_frame(alt_deg, az_deg):
    """Unit vectors, each (n, 3): ``d`` towards the source, ``e1``, ``e2`` transverse."""
    a, z = np.deg2rad(alt_deg), np.deg2rad(az_deg)
    d = np.stack([np.cos(a) * np.cos(z), -np.cos(a) * np.sin(z), np.sin(a)], -1)
    e1 = np.stack([-np.sin(z), -np.cos(z), np.zeros_like(a)], -1)   # horizontal, ⟂ d
    e2 = np.cross(d, e1)
    return d, e1, e2


def light_density(impact_m, energy_tev, particle: str):
    """Cherenkov photons / m² at ``impact_m`` from the axis: flat pool then exponential fall."""
    yield_ = PROTON_LIGHT_YIELD if particle == "proton" else 1.0
    fall = np.exp(-np.maximum(impact_m - LIGHT_POOL_RADIUS_M, 0.0) / LIGHT_POOL_FALLOFF_M)
    return PHOTON_DENSITY_PER_TEV * yield_ * energy_tev * fall


def project(centre, axes, sigmas, tel_pos, focal_m, pointing_alt_deg, pointing_az_deg):
    """Project Gaussian emission regions into cameras.

    Parameters
    ----------
    centre : ndarray, shape (n, 3)
        Region centres, m (ground frame relative to the array reference).
    axes : ndarray, shape (n, 3, 3)
        Principal unit vectors (first: along the particle direction, downwards).
    sigmas : ndarray, shape (n, 3)
        σ along each principal axis, m.
    tel_pos : ndarray, shape (n, 3)
        Telescope position, m.
    focal_m : ndarray, shape (n,)
        Focal length, m.

    Returns
    -------
    mean : ndarray, shape (n, 2)
        Camera-frame image centre (x, y), m.
    cov : ndarray, shape (n, 2, 2)
        Camera-frame covariance, m², optical PSF included.
    jac_long : ndarray, shape (n, 2)
        Camera displacement for +1σ along the axis, m.
    t_centre, dt_long : ndarray, shape (n,)
        Light arrival time of the centre (ns, relative to the particle front at the
        centre) and its change for +1σ along the axis (ns).
    """
    n = len(centre)
    steps = np.concatenate([np.zeros((1, 3)), np.eye(3), -np.eye(3)])             # (7, 3)
    pts = centre[:, None, :] + np.einsum("kj,nj,nji->nki", steps, sigmas, axes)   # (n, 7, 3)
    v = pts - tel_pos[:, None, :]
    dist = np.linalg.norm(v, axis=-1)
    alt, az = cartesian_to_altaz(v)
    lon, lat = altaz_to_telescope(alt.ravel(), az.ravel(), pointing_alt_deg, pointing_az_deg)
    x, y = telescope_to_camera(lon, lat, np.repeat(focal_m, 7))
    cam = np.stack([x, y], -1).reshape(n, 7, 2)
    jac = 0.5 * (cam[:, 1:4] - cam[:, 4:7])                                        # (n, 3, 2)
    psf = (np.deg2rad(PSF_DEG) * focal_m) ** 2
    cov = np.einsum("nki,nkj->nij", jac, jac) + psf[:, None, None] * np.eye(2)
    # particles run along axis 0 at c, light goes from the emission point to the telescope
    t_plus = (sigmas[:, 0] + dist[:, 1]) / C_M_NS
    t_minus = (-sigmas[:, 0] + dist[:, 4]) / C_M_NS
    return cam[:, 0], cov, jac[:, 0], dist[:, 0] / C_M_NS, 0.5 * (t_plus - t_minus)


def expected_image(mean, cov, weights, n_photons_pe, pix_x, pix_y, pix_area):
    """Expected p.e. per pixel: Σ_c w_c · N · pixel area · Gaussian pdf at the pixel centre.

    ``mean`` (n, c, 2), ``cov`` (n, c, 2, 2), ``weights`` (n, c), ``n_photons_pe`` (n,)
    → (n, n_pixels).
    """
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    inv00, inv11, inv01 = cov[..., 1, 1] / det, cov[..., 0, 0] / det, -cov[..., 0, 1] / det
    dx = pix_x[None, None, :] - mean[..., 0:1]
    dy = pix_y[None, None, :] - mean[..., 1:2]
    q = inv00[..., None] * dx * dx + 2 * inv01[..., None] * dx * dy + inv11[..., None] * dy * dy
    pdf = np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))[..., None]
    return n_photons_pe[:, None] * pix_area[None, :] * np.einsum("nc,ncp->np", weights, pdf)


def telescope_trigger(true_image):
    """``(triggered, n_pixels_above)`` for images (n, n_pixels): ≥ TRIGGER_N_PIXELS pixels ≥ threshold."""
    above = (true_image >= TRIGGER_THRESHOLD_PE).sum(axis=1)
    return above >= TRIGGER_N_PIXELS, above


def normalised_pulse(readout):
    """Reference pulse of the high gain, scaled so one p.e. sums to 1 over samples; and its step (ns)."""
    ref = np.asarray(readout.reference_pulse_shape[0], np.float64)
    step = float(readout.reference_pulse_sample_width_ns)
    dt = 1.0 / float(readout.sampling_rate_ghz)
    return ref / (ref.sum() * step) * dt, step


@njit(cache=True)
def _add_pulse(out, amp, t_start, pulse, step, dt):
    n_ref = pulse.shape[0]
    for k in range(out.shape[0]):
        x = (k * dt - t_start) / step
        if x < 0.0:
            continue
        i = int(x)
        if i >= n_ref - 1:
            break
        f = x - i
        out[k] += amp * (pulse[i] * (1.0 - f) + pulse[i + 1] * f)


@njit(cache=True)
def _synthesize(n_pe, t_start, nsb_counts, nsb_times, pulse, step, dt, pedestal, out):
    n_ev, n_pix, _ = out.shape
    j = 0
    for e in range(n_ev):
        for p in range(n_pix):
            w = out[e, p]
            for k in range(w.shape[0]):
                w[k] -= pedestal
            if n_pe[e, p] > 0:
                _add_pulse(w, float(n_pe[e, p]), t_start[e, p], pulse, step, dt)
            for _ in range(nsb_counts[e, p]):
                _add_pulse(w, 1.0, nsb_times[j], pulse, step, dt)
                j += 1


def synthesize_waveforms(rng, true_image, t_start_ns, readout):
    """R1 waveforms (n, n_pixels, n_samples) float32 in p.e.: signal + NSB + noise − pedestal.

    Parameters
    ----------
    true_image : ndarray, shape (n, n_pixels), int
        Signal photo-electrons per pixel.
    t_start_ns : ndarray, shape (n, n_pixels)
        Start time of each pixel's signal pulse within the readout window, ns.
    readout : CameraReadout
        Sampling and reference pulse shape.
    """
    pulse, step = normalised_pulse(readout)
    dt = 1.0 / float(readout.sampling_rate_ghz)
    n, n_pix = true_image.shape
    n_s = int(readout.n_samples)
    window = n_s * dt
    pulse_len = len(pulse) * step
    if t_start_ns.shape != (n, n_pix):
        raise ValueError(f"t_start_ns shape {t_start_ns.shape} != {(n, n_pix)}")
    # NSB p.e. that started up to one pulse length before the window still contribute
    nsb = rng.poisson(NSB_RATE_GHZ * (window + pulse_len), (n, n_pix))
    nsb_times = rng.uniform(-pulse_len, window, int(nsb.sum()))
    out = rng.normal(0.0, ELECTRONIC_NOISE_PE, (n, n_pix, n_s)).astype(np.float32)
    _synthesize(np.ascontiguousarray(true_image, np.int64), np.ascontiguousarray(t_start_ns, np.float64),
                nsb.astype(np.int64), nsb_times, pulse, step, dt, np.float32(NSB_RATE_GHZ * dt), out)
    return out


def pulse_start_times(t_rel_ns, readout):
    """Pulse start times (ns) placing relative arrival times ``t_rel_ns`` (n, n_pix) around
    PEAK_POSITION of the window, delays clipped to ± MAX_TIME_SPREAD of the window."""
    pulse, step = normalised_pulse(readout)
    dt = 1.0 / float(readout.sampling_rate_ghz)
    window = readout.n_samples * dt
    t_peak = np.argmax(pulse) * step
    return PEAK_POSITION * window - t_peak + np.clip(t_rel_ns, -MAX_TIME_SPREAD * window, MAX_TIME_SPREAD * window)
