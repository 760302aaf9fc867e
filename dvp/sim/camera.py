"""Toy Cherenkov images and camera response for ``dvp simulate``.

Emission model (**toy**): the light of a shower comes from a 3D Gaussian around the
shower maximum, elongated along the shower axis (gammas and electrons: one Gaussian,
σ_long 3 km, σ_lat 25 m; protons: four sub-showers with random transverse and
longitudinal offsets, hence wider, fragmented images). Each Gaussian is seen by a
telescope through its optics: the centre and ±σ points along the three principal axes
are turned into directions from the telescope, then into the telescope frame and the
camera frame (``x = fov_lat·f``, ``y = fov_lon·f``, the convention of
:mod:`dvp.kernels.frames`). The 2D image is the Gaussian with that centre and the
covariance of the projected ±σ points, so the centroid, length, width, orientation and
the time gradient along the major axis all follow from the geometry. Photon density ∝
energy, flat inside the light pool (120 m) and falling exponentially outside.

Camera response (**toy approximations**, chosen for speed, each documented here):

- signal: Poisson p.e. per pixel drawn from the expected image; pixels whose expected
  signal is below :data:`MU_MIN_PE` (1e-6 p.e.) get none without a draw (the chance of
  a p.e. there is below 1e-6);
- signal pulse: all p.e. of a pixel form *one* reference pulse of amplitude ``n_pe``
  whose start is shifted by a Gaussian of σ = :data:`PE_TIME_JITTER_NS` / √n_pe (the
  spread of the mean arrival time of n p.e. with a per-p.e. jitter), not n pulses;
- night-sky background and electronic noise: per readout, one long *circular noise
  trace* of :data:`NOISE_TRACE_SAMPLES` samples is simulated exactly (Poisson NSB p.e.
  with uniform arrival times, each convolved with the reference pulse; Gaussian
  electronic noise per sample; the mean NSB, i.e. the pedestal, subtracted), and each
  pixel's window is cut from it at a random offset (a xorshift64* stream seeded by one
  draw of the run's generator per batch). The
  NSB statistics in every window are exact shot noise; windows are re-used across
  pixels and events, and the trace is simulated anew after it has served
  :data:`NOISE_TRACE_REUSE` × its length in samples;
- pulses are sampled from a table of the reference pulse at :data:`N_PULSE_PHASES`
  sub-sample phases (nearest phase, 1/64 of a sample).

Waveforms are float32 R1 in p.e. (the normalised reference pulse of one p.e. sums to
1 over the samples), as ctapipe's R1 calibration gives. All randomness comes from the
one ``np.random.Generator`` passed in (numba draws from the same bit generator), so a
seed fixes the output bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..kernels.frames import _horizontal_vec_to_offset

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
MU_MIN_PE = 1e-6                # expected signal below which a pixel gets no Poisson draw
PE_TIME_JITTER_NS = 1.0         # per-p.e. arrival-time spread within a pixel (σ)
NOISE_TRACE_SAMPLES = 1 << 18   # simulated NSB + noise trace: 1 MiB of float32 stays in the L2 cache
                                # (random windows out of 8 MiB cost ~4x more: cache misses)
NOISE_TRACE_REUSE = 64          # trace samples served per simulated sample before a new trace
N_PULSE_PHASES = 64             # sub-sample phases of the tabulated reference pulse


def emission_components(rng, particle: str, n_showers: int):
    """Per-shower sub-shower layout: ``(weights, d_lat1, d_lat2, d_long, sigma_lat, sigma_long)``.

    Each of shape (n_showers, n_comp), metres; offsets are along two axes transverse to
    the shower axis and along it, relative to the shower maximum. Gammas and electrons
    (electromagnetic) have one component and draw nothing.
    """
    if particle != "proton":
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


def psf_m(focal_m):
    """Optical PSF σ in the camera plane (m) for focal length(s) ``focal_m``."""
    return np.deg2rad(PSF_DEG) * np.asarray(focal_m, np.float64)


# -- projection of emission regions -------------------------------------------------

@njit(cache=True)
def _to_camera(px, py, pz, tx, ty, tz, p_alt_rad, p_az_rad, focal):
    """Camera (x, y) of the point p seen from t; ground frame x north, y west, z up."""
    # AltAz cartesian has y towards east (azimuth north → east), the ground frame y west
    lon, lat = _horizontal_vec_to_offset(px - tx, -(py - ty), pz - tz, p_alt_rad, p_az_rad)
    return lat * focal, lon * focal


@njit(cache=True)
def _project(centre, axes, sigmas, tel_pos, focal, p_alt_rad, p_az_rad, psf2,
             mean, cov, jac_long, t_centre, dt_long):
    for i in range(centre.shape[0]):
        tx, ty, tz = tel_pos[i, 0], tel_pos[i, 1], tel_pos[i, 2]
        cx, cy = _to_camera(centre[i, 0], centre[i, 1], centre[i, 2], tx, ty, tz, p_alt_rad, p_az_rad, focal[i])
        mean[i, 0], mean[i, 1] = cx, cy
        c00 = psf2[i]
        c11 = psf2[i]
        c01 = 0.0
        for k in range(3):
            s = sigmas[i, k]
            ax, ay, az = axes[i, k, 0] * s, axes[i, k, 1] * s, axes[i, k, 2] * s
            x1, y1 = _to_camera(centre[i, 0] + ax, centre[i, 1] + ay, centre[i, 2] + az, tx, ty, tz,
                                p_alt_rad, p_az_rad, focal[i])
            x2, y2 = _to_camera(centre[i, 0] - ax, centre[i, 1] - ay, centre[i, 2] - az, tx, ty, tz,
                                p_alt_rad, p_az_rad, focal[i])
            jx, jy = 0.5 * (x1 - x2), 0.5 * (y1 - y2)
            c00 += jx * jx
            c11 += jy * jy
            c01 += jx * jy
            if k == 0:
                jac_long[i, 0], jac_long[i, 1] = jx, jy
                # particles run along axis 0 at c, light goes from the emission point to the telescope
                d_plus = np.sqrt((centre[i, 0] + ax - tx) ** 2 + (centre[i, 1] + ay - ty) ** 2
                                 + (centre[i, 2] + az - tz) ** 2)
                d_minus = np.sqrt((centre[i, 0] - ax - tx) ** 2 + (centre[i, 1] - ay - ty) ** 2
                                  + (centre[i, 2] - az - tz) ** 2)
                dt_long[i] = 0.5 * ((s + d_plus) - (-s + d_minus)) / C_M_NS
        cov[i, 0, 0], cov[i, 1, 1], cov[i, 0, 1], cov[i, 1, 0] = c00, c11, c01, c01
        t_centre[i] = np.sqrt((centre[i, 0] - tx) ** 2 + (centre[i, 1] - ty) ** 2
                              + (centre[i, 2] - tz) ** 2) / C_M_NS


def project(centre, axes, sigmas, tel_pos, focal_m, pointing_alt_deg, pointing_az_deg):
    """Project Gaussian emission regions into cameras (one numba pass, no temporaries).

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
    pointing_alt_deg, pointing_az_deg : float
        Telescope pointing, deg.

    Returns
    -------
    mean : ndarray, shape (n, 2)
        Camera-frame image centre (x, y), m.
    cov : ndarray, shape (n, 2, 2)
        Camera-frame covariance of the ±σ points, m², optical PSF included.
    jac_long : ndarray, shape (n, 2)
        Camera displacement for +1σ along the axis, m.
    t_centre, dt_long : ndarray, shape (n,)
        Light arrival time of the centre (ns, relative to the particle front at the
        centre) and its change for +1σ along the axis (ns).
    """
    centre = np.ascontiguousarray(centre, np.float64)
    n = centre.shape[0]
    axes = np.ascontiguousarray(axes, np.float64)
    sigmas = np.ascontiguousarray(sigmas, np.float64)
    tel_pos = np.ascontiguousarray(tel_pos, np.float64)
    focal = np.ascontiguousarray(np.broadcast_to(np.asarray(focal_m, np.float64), (n,)))
    if centre.shape != (n, 3) or axes.shape != (n, 3, 3) or sigmas.shape != (n, 3) or tel_pos.shape != (n, 3):
        raise ValueError(f"project: shapes centre {centre.shape}, axes {axes.shape}, sigmas {sigmas.shape}, "
                         f"tel_pos {tel_pos.shape} do not agree on (n, 3)")
    mean, jac = np.empty((n, 2)), np.empty((n, 2))
    cov = np.empty((n, 2, 2))
    t_c, dt_long = np.empty(n), np.empty(n)
    _project(centre, axes, sigmas, tel_pos, focal, np.deg2rad(float(pointing_alt_deg)),
             np.deg2rad(float(pointing_az_deg)), psf_m(focal) ** 2, mean, cov, jac, t_c, dt_long)
    return mean, cov, jac, t_c, dt_long


def peak_expectation(cov, weights, n_photons_pe, pix_area):
    """Expected p.e. of the brightest possible pixel, Σ_c w_c·N·A / (2π √det cov_c).

    ``cov`` (..., c, 2, 2), ``weights`` (..., c), ``n_photons_pe`` (...), ``pix_area``
    scalar or (...) → (...). An upper bound of every pixel of :func:`expected_image`
    (each component peaks at its centre; no pixel is brighter than the sum of peaks).
    """
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    return n_photons_pe * pix_area * (weights / (2 * np.pi * np.sqrt(det))).sum(-1)


def expected_image(mean, cov, weights, n_photons_pe, pix_x, pix_y, pix_area):
    """Expected p.e. per pixel: Σ_c w_c · N · pixel area · Gaussian pdf at the pixel centre.

    ``mean`` (n, c, 2), ``cov`` (n, c, 2, 2), ``weights`` (n, c), ``n_photons_pe`` (n,)
    → (n, n_pixels). A numpy reference of what :func:`sample_images` draws from.
    """
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    inv00, inv11, inv01 = cov[..., 1, 1] / det, cov[..., 0, 0] / det, -cov[..., 0, 1] / det
    dx = pix_x[None, None, :] - mean[..., 0:1]
    dy = pix_y[None, None, :] - mean[..., 1:2]
    q = inv00[..., None] * dx * dx + 2 * inv01[..., None] * dx * dy + inv11[..., None] * dy * dy
    pdf = np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))[..., None]
    return n_photons_pe[:, None] * pix_area[None, :] * np.einsum("nc,ncp->np", weights, pdf)


@njit(cache=True)
def _sample_images(rng, mean, cov, weights, n_pe, pix_x, pix_y, pix_area, mu_min, threshold, out, n_above):
    n, n_c = weights.shape
    n_pix = pix_x.shape[0]
    a_max = pix_area.max()
    norm = np.empty(n_c)
    i00, i11, i01, q_max = np.empty(n_c), np.empty(n_c), np.empty(n_c), np.empty(n_c)
    for i in range(n):
        for c in range(n_c):
            det = cov[i, c, 0, 0] * cov[i, c, 1, 1] - cov[i, c, 0, 1] ** 2
            i00[c], i11[c], i01[c] = cov[i, c, 1, 1] / det, cov[i, c, 0, 0] / det, -cov[i, c, 0, 1] / det
            norm[c] = n_pe[i] * weights[i, c] / (2 * np.pi * np.sqrt(det))
            # beyond this Mahalanobis distance the component adds < mu_min / n_c to any pixel
            peak = norm[c] * a_max * n_c / mu_min
            q_max[c] = 2.0 * np.log(peak) if peak > 1.0 else -1.0
        k = 0
        for p in range(n_pix):
            mu = 0.0
            for c in range(n_c):
                dx, dy = pix_x[p] - mean[i, c, 0], pix_y[p] - mean[i, c, 1]
                q = i00[c] * dx * dx + 2.0 * i01[c] * dx * dy + i11[c] * dy * dy
                if q < q_max[c]:
                    mu += norm[c] * np.exp(-0.5 * q)
            mu *= pix_area[p]
            v = 0
            if mu > mu_min:
                v = rng.poisson(mu)
            out[i, p] = v
            if v >= threshold:
                k += 1
        n_above[i] = k


def sample_images(rng, mean, cov, weights, n_photons_pe, pix_x, pix_y, pix_area):
    """Poisson p.e. images of Gaussian emission regions, and the pixels at trigger threshold.

    Parameters
    ----------
    rng : numpy.random.Generator
    mean : ndarray, shape (n, c, 2)
        Camera-frame centres of the ``c`` components, m.
    cov : ndarray, shape (n, c, 2, 2)
        Their camera-frame covariances, m².
    weights : ndarray, shape (n, c)
        Fraction of the light in each component.
    n_photons_pe : ndarray, shape (n,)
        Expected p.e. of the whole image (photons on the mirror × efficiency).
    pix_x, pix_y, pix_area : ndarray, shape (n_pixels,)
        Pixel centres (m) and areas (m²) of the camera.

    Returns
    -------
    image : ndarray, shape (n, n_pixels), int32
        Signal p.e. (Poisson of :func:`expected_image`; none where it is < MU_MIN_PE).
    n_above : ndarray, shape (n,), int64
        Pixels with ≥ TRIGGER_THRESHOLD_PE p.e.
    """
    mean = np.ascontiguousarray(mean, np.float64)
    n, n_c = mean.shape[:2]
    cov = np.ascontiguousarray(cov, np.float64)
    weights = np.ascontiguousarray(weights, np.float64)
    n_pe = np.ascontiguousarray(n_photons_pe, np.float64)
    if mean.shape != (n, n_c, 2) or cov.shape != (n, n_c, 2, 2) or weights.shape != (n, n_c) or n_pe.shape != (n,):
        raise ValueError(f"sample_images: shapes mean {mean.shape}, cov {cov.shape}, weights {weights.shape}, "
                         f"n_photons_pe {n_pe.shape} disagree")
    pix_x, pix_y, pix_area = (np.ascontiguousarray(a, np.float64) for a in (pix_x, pix_y, pix_area))
    image = np.empty((n, len(pix_x)), np.int32)
    n_above = np.empty(n, np.int64)
    _sample_images(rng, mean, cov, weights, n_pe, pix_x, pix_y, pix_area, MU_MIN_PE, TRIGGER_THRESHOLD_PE,
                   image, n_above)
    return image, n_above


# -- waveforms ------------------------------------------------------------------------

def normalised_pulse(readout):
    """Reference pulse of the high gain, scaled so one p.e. sums to 1 over samples; and its step (ns)."""
    ref = np.asarray(readout.reference_pulse_shape[0], np.float64)
    step = float(readout.reference_pulse_sample_width_ns)
    dt = 1.0 / float(readout.sampling_rate_ghz)
    return ref / (ref.sum() * step) * dt, step


def pulse_table(readout, n_phases: int = N_PULSE_PHASES):
    """The normalised pulse sampled at the readout's sampling for ``n_phases`` sub-sample phases.

    Returns
    -------
    table : ndarray, shape (n_phases, n_taps), float32
        ``table[q, j]`` is the pulse (linearly interpolated) at ``(j + q / n_phases)``
        samples after its start: a p.e. starting ``u`` samples before sample ``k``
        (``u = j + q / n_phases``) adds ``table[q, j]`` to sample ``k``.
    """
    pulse, step = normalised_pulse(readout)
    dt = 1.0 / float(readout.sampling_rate_ghz)
    n_taps = int(np.ceil(len(pulse) * step / dt)) + 1
    t = (np.arange(n_taps)[None, :] + np.arange(n_phases)[:, None] / n_phases) * dt / step
    ref_t = np.arange(len(pulse), dtype=np.float64)
    return np.interp(t, ref_t, pulse, left=0.0, right=0.0).astype(np.float32)


@njit(cache=True)
def _noise_trace(rng, n_nsb_mean, sigma, pedestal, table, out):
    n = out.shape[0]
    n_ph, n_taps = table.shape
    for i in range(n):
        out[i] = sigma * rng.standard_normal() - pedestal
    n_nsb = rng.poisson(n_nsb_mean)
    for _ in range(n_nsb):
        t = rng.random() * n          # arrival time in samples, uniform on the circle
        k0 = int(np.ceil(t))          # first sample at or after the arrival
        u = k0 - t                    # ∈ [0, 1): the pulse's age at sample k0
        q = int(u * n_ph + 0.5)
        if q == n_ph:                 # rounds up to a whole sample
            q = 0
            k0 -= 1
        if k0 + n_taps <= n:          # the usual case: no wrap-around, no modulo in the loop
            for j in range(n_taps):
                out[k0 + j] += table[q, j]
        else:
            for j in range(n_taps):
                out[(k0 + j) % n] += table[q, j]


class NoiseTrace:
    """A long circular trace of NSB + electronic noise (pedestal subtracted) for one readout.

    See the module docstring: every window has exact NSB shot-noise statistics; the
    trace is re-simulated (from the run's generator) after serving ``reuse`` × its
    length in samples.
    """

    def __init__(self, readout, n_samples_trace: int = NOISE_TRACE_SAMPLES, reuse: int = NOISE_TRACE_REUSE):
        self.table = pulse_table(readout)
        self.dt = 1.0 / float(readout.sampling_rate_ghz)
        self.n_samples = int(readout.n_samples)
        if n_samples_trace < 4 * max(self.n_samples, self.table.shape[1]):
            raise ValueError(f"noise trace of {n_samples_trace} samples is too short for {self.n_samples}-sample windows")
        self.trace = np.empty(int(n_samples_trace), np.float32)
        self.budget = int(reuse) * int(n_samples_trace)
        self.served = None   # samples served since the last simulation; None: not simulated yet

    def windows_for(self, rng, n_windows: int) -> np.ndarray:
        """The trace, simulated anew first if it has served its budget."""
        if self.served is None or self.served >= self.budget:
            _noise_trace(rng, NSB_RATE_GHZ * self.dt * len(self.trace), float(ELECTRONIC_NOISE_PE),
                         float(NSB_RATE_GHZ * self.dt), self.table, self.trace)
            self.served = 0
        self.served += int(n_windows) * self.n_samples
        return self.trace


@njit(cache=True)
def _xorshift(x):
    """One step of xorshift64*: (new state, 32 random bits as uint64)."""
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, (x * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(32)


@njit(cache=True)
def _synthesize(rng, n_pe, t_start_ns, rows, trace, table, dt, jitter_ns, out):
    n_pix, n_s = out.shape[1], out.shape[2]
    n_ph, n_taps = table.shape
    n_off = np.uint64(trace.shape[0] - n_s + 1)
    # window offsets from a xorshift64* stream seeded by the run's generator: one draw per
    # pixel through the Generator costs ~6 ns, as much as copying the window
    x = np.uint64(rng.integers(1, 2 ** 62))
    for r in range(rows.shape[0]):
        e = rows[r]
        for p in range(n_pix):
            w = out[e, p]
            x, bits = _xorshift(x)
            o = int((bits * n_off) >> np.uint64(32))
            for k in range(n_s):
                w[k] = trace[o + k]
            amp = n_pe[e, p]
            if amp > 0:
                t0 = t_start_ns[e, p] + jitter_ns / np.sqrt(amp) * rng.standard_normal()
                s = t0 / dt                   # pulse start in samples
                k0 = int(np.ceil(s))          # first sample at or after the start
                u = k0 - s
                q = int(u * n_ph + 0.5)
                if q == n_ph:
                    q = 0
                    k0 -= 1
                # sample k sees the pulse at tap j = k - k0
                k_lo = max(k0, 0)
                k_hi = min(k0 + n_taps, n_s)
                a = np.float32(amp)
                for k in range(k_lo, k_hi):
                    w[k] += a * table[q, k - k0]


def synthesize_waveforms(rng, true_image, t_start_ns, readout, trace: NoiseTrace | None = None, out=None,
                         rows=None):
    """R1 waveforms (n, n_pixels, n_samples) float32 in p.e.: signal + NSB + noise − pedestal.

    Parameters
    ----------
    rng : numpy.random.Generator
    true_image : ndarray, shape (n, n_pixels), int
        Signal photo-electrons per pixel.
    t_start_ns : ndarray, shape (n, n_pixels)
        Start time of each pixel's signal pulse within the readout window, ns.
    readout : CameraReadout
        Sampling and reference pulse shape.
    trace : NoiseTrace, optional
        The readout's noise trace (kept by the caller across batches); a new one if None.
    out : ndarray, shape (n, n_pixels, n_samples), float32, optional
        Written in place (only ``rows`` if given).
    rows : ndarray of int, optional
        The events to synthesise (default all).
    """
    true_image = np.ascontiguousarray(true_image, np.int32)
    n, n_pix = true_image.shape
    n_s = int(readout.n_samples)
    t_start_ns = np.ascontiguousarray(t_start_ns, np.float64)
    if t_start_ns.shape != (n, n_pix):
        raise ValueError(f"t_start_ns shape {t_start_ns.shape} != {(n, n_pix)}")
    if out is None:
        out = np.empty((n, n_pix, n_s), np.float32)
    if out.shape != (n, n_pix, n_s) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {(n, n_pix, n_s)}, not {out.dtype} {out.shape}")
    rows = np.arange(n, dtype=np.int64) if rows is None else np.ascontiguousarray(rows, np.int64)
    if trace is None:
        trace = NoiseTrace(readout)
    elif trace.n_samples != n_s:
        raise ValueError(f"noise trace made for {trace.n_samples} samples, readout has {n_s}")
    _synthesize(rng, true_image, t_start_ns, rows, trace.windows_for(rng, len(rows) * n_pix), trace.table,
                trace.dt, float(PE_TIME_JITTER_NS), out)
    return out


def pulse_start_times(t_rel_ns, readout):
    """Pulse start times (ns) placing relative arrival times ``t_rel_ns`` (n, n_pix) around
    PEAK_POSITION of the window, delays clipped to ± MAX_TIME_SPREAD of the window."""
    pulse, step = normalised_pulse(readout)
    dt = 1.0 / float(readout.sampling_rate_ghz)
    window = readout.n_samples * dt
    t_peak = np.argmax(pulse) * step
    return PEAK_POSITION * window - t_peak + np.clip(t_rel_ns, -MAX_TIME_SPREAD * window, MAX_TIME_SPREAD * window)
