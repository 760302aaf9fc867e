"""Toy shower generator: primaries, energies, directions, cores and shower maxima.

Everything is vectorised numpy drawn from one ``np.random.Generator`` so a seed fixes
the output. This is a **toy**: the depth of maximum follows Heitler's model, heights
come from an isothermal exponential atmosphere; no CORSIKA physics.

Primaries: gammas (Heitler ``X0·ln(E/Ec)``, first interaction after one pair-production
length 9/7·X0), electrons (electromagnetic like gammas, but the cascade starts with the
first bremsstrahlung, about one radiation length earlier: first interaction after
~X0 and X_max shallower by ``X0·ln 2`` ≈ 25 g/cm²) and protons (maximum ~50 g/cm²
higher and fluctuating more). Muons are not showers: see :mod:`dvp.sim.muons`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.frames import telescope_to_altaz

# CORSIKA/sim_telarray primary ids (muon: mu-, id 6; mu+ would be 5)
PARTICLE_IDS = {"gamma": 0, "electron": 3, "muon": 6, "proton": 101}
SHOWER_PARTICLES = ("gamma", "electron", "proton")
X0_G_CM2 = 36.7            # radiation length in air
EC_TEV = 85e-6             # critical energy of electrons in air (85 MeV)
SCALE_HEIGHT_M = 8400.0    # isothermal atmosphere scale height
SEA_LEVEL_DEPTH_G_CM2 = 1030.0
GAMMA_X_SIGMA = 20.0       # shower-to-shower fluctuation of X_max (gammas)
GAMMA_LAMBDA_G_CM2 = 9.0 / 7.0 * X0_G_CM2   # pair-production mean free path
ELECTRON_LAMBDA_G_CM2 = X0_G_CM2            # first bremsstrahlung: one radiation length
ELECTRON_X_SHIFT = -X0_G_CM2 * np.log(2.0)  # one splitting step earlier than a gamma: ≈ -25 g/cm²
PROTON_LAMBDA_G_CM2 = 80.0                  # proton-air interaction length
PROTON_X_SHIFT = -50.0     # protons reach maximum higher than gammas of the same energy
PROTON_X_SIGMA = 30.0      # extra Gaussian spread on top of the first-interaction spread


@dataclass
class Showers:
    """One entry per simulated event (shower × reuse), all arrays shape (n_events,).

    ``energy_tev`` TeV, ``alt_deg``/``az_deg`` deg (direction the shower comes from),
    ``core_x_m``/``core_y_m`` m in the ground frame (x north, y west) at the array
    reference height, ``x_max_g_cm2`` slant depth of maximum, ``h_max_m`` and
    ``h_first_int_m`` heights a.s.l., ``x_first_g_cm2`` slant depth of first interaction.
    """

    shower_num: np.ndarray
    event_id: np.ndarray
    energy_tev: np.ndarray
    alt_deg: np.ndarray
    az_deg: np.ndarray
    core_x_m: np.ndarray
    core_y_m: np.ndarray
    x_first_g_cm2: np.ndarray
    x_max_g_cm2: np.ndarray
    h_first_int_m: np.ndarray
    h_max_m: np.ndarray

    def __len__(self):
        return len(self.energy_tev)


def power_law(rng, n, e_min, e_max, index):
    """``n`` energies (TeV) from dN/dE ∝ E**index between ``e_min`` and ``e_max`` (index < 0, e.g. -2)."""
    u = rng.random(n)
    g = index + 1.0
    if abs(g) < 1e-12:
        return e_min * (e_max / e_min) ** u
    return (e_min**g + u * (e_max**g - e_min**g)) ** (1.0 / g)


def height_of_depth(slant_depth_g_cm2, zenith_rad):
    """Height a.s.l. (m) where the slant depth along a zenith angle is reached (exponential atmosphere)."""
    vertical = np.maximum(slant_depth_g_cm2 * np.cos(zenith_rad), 1e-3)
    return SCALE_HEIGHT_M * np.log(SEA_LEVEL_DEPTH_G_CM2 / vertical)


def x_max(rng, particle, energy_tev):
    """Toy ``(x_first, x_max)`` slant depths (g/cm²), shape (n,).

    Gammas: Heitler, ``X0·ln(E/Ec)`` plus ~20 g/cm² fluctuations. Electrons: the same,
    ``X0·ln 2`` shallower, first interaction after ~X0. Protons: maximum ~50 g/cm² higher
    and fluctuating more, mostly through the exponential depth of first interaction.
    """
    n = len(energy_tev)
    heitler = X0_G_CM2 * np.log(energy_tev / EC_TEV)
    if particle == "gamma":
        x_first = rng.exponential(GAMMA_LAMBDA_G_CM2, n)
        xm = heitler + rng.normal(0.0, GAMMA_X_SIGMA, n)
    elif particle == "electron":
        x_first = rng.exponential(ELECTRON_LAMBDA_G_CM2, n)
        xm = heitler + ELECTRON_X_SHIFT + rng.normal(0.0, GAMMA_X_SIGMA, n)
    elif particle == "proton":
        x_first = rng.exponential(PROTON_LAMBDA_G_CM2, n)
        xm = heitler + PROTON_X_SHIFT + (x_first - PROTON_LAMBDA_G_CM2) + rng.normal(0.0, PROTON_X_SIGMA, n)
    else:
        raise ValueError(f"no shower model for particle {particle!r} (one of {', '.join(SHOWER_PARTICLES)})")
    return x_first, np.maximum(xm, x_first + 10.0)


def directions(rng, n, viewcone_deg, offset_deg, pointing_alt_deg, pointing_az_deg):
    """``(alt_deg, az_deg)``, each (n,): uniform in solid angle within ``viewcone_deg`` of the
    pointing, or (viewcone 0) a point ``offset_deg`` from it along fov_lon."""
    if viewcone_deg > 0:
        cos_t = 1.0 - rng.random(n) * (1.0 - np.cos(np.deg2rad(viewcone_deg)))
        theta = np.arccos(cos_t)
        phi = rng.uniform(0.0, 2 * np.pi, n)
        # offset vector in the pointing's offset frame → spherical fov coordinates
        v = np.stack([cos_t, np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)], -1)
        lon = np.rad2deg(np.arctan2(v[:, 1], v[:, 0]))
        lat = np.rad2deg(np.arcsin(np.clip(v[:, 2], -1, 1)))
    else:
        lon = np.full(n, float(offset_deg))
        lat = np.zeros(n)
    return telescope_to_altaz(lon, lat, pointing_alt_deg, pointing_az_deg)


def generate(rng, particle: str, n_showers: int, *, energy_range=(0.03, 10.0), spectral_index=-2.0,
             viewcone_deg=0.0, offset_deg=0.0, scatter_radius_m=1000.0, reuse=10,
             pointing_alt_deg=70.0, pointing_az_deg=0.0) -> Showers:
    """Draw ``n_showers`` showers, each reused ``reuse`` times with a new core (like sim_telarray).

    Directions: with ``viewcone_deg > 0`` uniform in solid angle within that cone around
    the pointing (diffuse); else a point source ``offset_deg`` from the pointing along
    fov_lon. Cores: uniform in a disk of ``scatter_radius_m`` in the ground plane.
    Event ids are ``shower_num * 100 + reuse_index`` as in sim_telarray.
    """
    e = power_law(rng, n_showers, energy_range[0], energy_range[1], spectral_index)
    alt, az = directions(rng, n_showers, viewcone_deg, offset_deg, pointing_alt_deg, pointing_az_deg)
    x_first, xm = x_max(rng, particle, e)
    zen = np.deg2rad(90.0 - alt)
    n_ev = n_showers * reuse
    r = scatter_radius_m * np.sqrt(rng.random(n_ev))
    ang = rng.uniform(0.0, 2 * np.pi, n_ev)
    rep = np.repeat
    shower_num = np.arange(1, n_showers + 1, dtype=np.int64)
    return Showers(
        shower_num=rep(shower_num, reuse),
        event_id=(rep(shower_num, reuse) * 100 + np.tile(np.arange(reuse), n_showers)),
        energy_tev=rep(e, reuse), alt_deg=rep(alt, reuse), az_deg=rep(az, reuse),
        core_x_m=r * np.cos(ang), core_y_m=r * np.sin(ang),
        x_first_g_cm2=rep(x_first, reuse), x_max_g_cm2=rep(xm, reuse),
        h_first_int_m=rep(height_of_depth(x_first, zen), reuse), h_max_m=rep(height_of_depth(xm, zen), reuse))
