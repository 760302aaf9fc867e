"""dvp simulate: the toy Monte Carlo writes a valid R1 (or DL1) product, reproducibly, with sane physics."""
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from dvp import schemas as S
from dvp.config import load_config
from dvp.instrument.subarray import SubarrayDescription
from dvp.runner import _sim_layout, dl1_to_dl2, r1_to_dl1, simulate
from dvp.sim import camera as C
from dvp.sim.showers import EC_TEV, X0_G_CM2, generate, height_of_depth

from .conftest import product_tables, run_cli

GAMMA = dict(energy_range=(0.1, 10.0), scatter_radius_m=300.0, reuse=5, seed=3)


@pytest.fixture(scope="module")
def gamma_chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    simulate("gamma", 120, base / "r1", **GAMMA)
    r1_to_dl1([base / "r1"], base / "dl1")
    dl1_to_dl2([base / "dl1"], base / "dl2")
    return base


@pytest.fixture(scope="module")
def proton_dl1(tmp_path_factory):
    base = tmp_path_factory.mktemp("simp")
    simulate("proton", 150, base / "r1", energy_range=(0.3, 30.0), scatter_radius_m=300.0, reuse=5, seed=4,
             viewcone_deg=2.0)
    r1_to_dl1([base / "r1"], base / "dl1")
    return base


def test_same_seed_identical_tables(tmp_path):
    small = dict(GAMMA, reuse=3)
    simulate("proton", 25, tmp_path / "one", **small)
    simulate("proton", 25, tmp_path / "again", **small)
    a = product_tables(tmp_path / "one", by_partition=True)
    b = product_tables(tmp_path / "again", by_partition=True)
    assert a.keys() == b.keys() and any(k.startswith("r1/") for k in a)
    for k in a:
        assert a[k] == b[k], k
    simulate("proton", 25, tmp_path / "other", **dict(small, seed=99))
    c = product_tables(tmp_path / "other", by_partition=True)
    assert a["simulation/showers.parquet"] != c["simulation/showers.parquet"]


def test_showers_and_trigger_consistent(gamma_chain):
    sh = pl.read_parquet(gamma_chain / "r1" / "simulation" / "showers.parquet")
    tr = pl.read_parquet(gamma_chain / "r1" / "trigger" / "part-00000.parquet")
    r1 = pl.read_parquet(gamma_chain / "r1" / "r1" / "**" / "*.parquet", hive_partitioning=True,
                         columns=[S.EVENT_ID, S.TEL_ID, S.TRUE_IMAGE_SUM])
    assert sh.height == 120 * 5 and sh[S.EVENT_ID].n_unique() == sh.height
    assert set(sh.filter(pl.col(S.TRIGGERED))[S.EVENT_ID]) == set(tr[S.EVENT_ID])
    assert 0 < tr.height < sh.height
    assert (tr["n_trigger_tels"] >= 2).all()
    pairs = {(e, t) for e, ts in zip(tr[S.EVENT_ID], tr["tels_with_trigger"]) for t in ts}
    assert pairs == set(zip(r1[S.EVENT_ID], r1[S.TEL_ID]))
    assert (r1[S.TRUE_IMAGE_SUM] > 0).all()
    run = pl.read_parquet(gamma_chain / "r1" / "simulation" / "runs.parquet")
    assert run.row(0, named=True)["n_showers"] == 120 and run.row(0, named=True)["shower_reuse"] == 5
    # energies inside the range, cores inside the disk, X_max around Heitler's value
    assert sh[S.TRUE_ENERGY].min() >= 0.1 and sh[S.TRUE_ENERGY].max() <= 10.0
    assert (np.hypot(sh[S.TRUE_CORE_X], sh[S.TRUE_CORE_Y]) <= 300.0).all()
    heitler = X0_G_CM2 * np.log(sh[S.TRUE_ENERGY].to_numpy() / EC_TEV)
    assert abs(np.mean(sh[S.TRUE_X_MAX].to_numpy() - heitler)) < 10


def test_shower_generator_distributions():
    rng = np.random.default_rng(0)
    s = generate(rng, "gamma", 20000, energy_range=(0.1, 100.0), spectral_index=-2.0, viewcone_deg=5.0, reuse=1)
    # dN/dE ∝ E^-2: the fraction above 1 TeV is (1/1 - 1/100) / (1/0.1 - 1/100) ≈ 0.099
    assert abs(np.mean(s.energy_tev > 1.0) - 0.0991) < 0.01
    p = generate(rng, "proton", 20000, energy_range=(0.1, 100.0), viewcone_deg=5.0, reuse=1)
    sep = np.rad2deg(np.arccos(np.sin(np.deg2rad(s.alt_deg)) * np.sin(np.deg2rad(70.0))
                               + np.cos(np.deg2rad(s.alt_deg)) * np.cos(np.deg2rad(70.0))
                               * np.cos(np.deg2rad(s.az_deg))))
    assert sep.max() <= 5.0 + 1e-9 and np.median(sep) > 3.0       # uniform in solid angle
    both = (s.energy_tev > 1) & (s.energy_tev < 2)
    pb = (p.energy_tev > 1) & (p.energy_tev < 2)
    assert np.mean(p.x_max_g_cm2[pb]) < np.mean(s.x_max_g_cm2[both]) - 30    # protons peak higher
    assert np.std(p.x_max_g_cm2[pb]) > 2 * np.std(s.x_max_g_cm2[both])
    assert height_of_depth(1030.0, 0.0) == pytest.approx(0.0)
    assert 8000 < np.median(s.h_max_m) < 14000


def test_intensity_linear_in_energy(gamma_chain):
    dl1 = pl.read_parquet(gamma_chain / "dl1" / "dl1" / "**" / "*.parquet", hive_partitioning=True)
    sh = pl.read_parquet(gamma_chain / "dl1" / "simulation" / "showers.parquet")
    d = dl1.join(sh.select(S.EVENT_ID, S.TRUE_ENERGY), on=S.EVENT_ID)
    # inside the light pool (flat density) and well contained
    d = d.filter((pl.col(S.TRUE_IMPACT) < 100) & (pl.col("leakage_intensity_width_2") < 0.1)
                 & (pl.col(S.HILLAS_INTENSITY) > 50) & pl.col(S.TEL_TYPE).str.starts_with("LST"))
    assert d.height > 20
    slope = np.polyfit(np.log(d[S.TRUE_ENERGY].to_numpy()), np.log(d[S.HILLAS_INTENSITY].to_numpy()), 1)[0]
    assert 0.7 < slope < 1.3, slope


def test_gamma_directions_reconstructed(gamma_chain):
    dl2 = pl.read_parquet(gamma_chain / "dl2" / "dl2" / "*.parquet")
    ok = dl2.filter(pl.col(S.RECO_IS_VALID) & (pl.col(S.N_TELS_USED) >= 2))
    assert ok.height > 30
    a1, z1 = np.deg2rad(ok[S.RECO_ALT].to_numpy()), np.deg2rad(ok[S.RECO_AZ].to_numpy())
    a2, z2 = np.deg2rad(ok[S.TRUE_ALT].to_numpy()), np.deg2rad(ok[S.TRUE_AZ].to_numpy())
    cos = np.sin(a1) * np.sin(a2) + np.cos(a1) * np.cos(a2) * np.cos(z1 - z2)
    err = np.rad2deg(np.arccos(np.clip(cos, -1, 1)))
    assert np.median(err) < 0.5, np.median(err)


def test_protons_wider_and_more_fragmented_than_gammas(gamma_chain, proton_dl1):
    def params(product):
        d = pl.read_parquet(product / "dl1" / "dl1" / "**" / "*.parquet", hive_partitioning=True)
        return d.filter((pl.col(S.HILLAS_INTENSITY) > 200) & (pl.col(S.HILLAS_INTENSITY) < 2000)
                        & pl.col(S.HILLAS_WIDTH).is_finite())
    g, p = params(gamma_chain), params(proton_dl1)
    assert g.height > 20 and p.height > 20
    gw, pw = g[S.HILLAS_WIDTH].median(), p[S.HILLAS_WIDTH].median()
    assert pw > 1.3 * gw, (pw, gw)
    # sub-showers give separate islands: protons have more of them at equal intensity
    gi, pi = g["morphology_n_islands"].mean(), p["morphology_n_islands"].mean()
    assert pi > gi + 0.05 and (p["morphology_n_islands"] > 1).mean() > 2 * (g["morphology_n_islands"] > 1).mean(), \
        (pi, gi)


def test_dl1_level_equals_r1_then_r1_to_dl1(tmp_path):
    """simulate --level dl1 writes exactly what simulate --level r1 + r1-to-dl1 write."""
    cfg = load_config(None, ["r1_to_dl1.write_images=true"])
    for particle, kw in (("gamma", dict(GAMMA, reuse=2)), ("muon", dict(reuse=1, viewcone_deg=1.0, seed=5))):
        n = 40 if particle == "gamma" else 60
        simulate(particle, n, tmp_path / f"{particle}_r1", **kw)
        r1_to_dl1([tmp_path / f"{particle}_r1"], tmp_path / f"{particle}_via_r1", cfg)
        s = simulate(particle, n, tmp_path / f"{particle}_dl1", level="dl1", config=cfg, **kw)
        a = product_tables(tmp_path / f"{particle}_via_r1", by_partition=True)
        b = product_tables(tmp_path / f"{particle}_dl1", by_partition=True)
        assert a.keys() == b.keys() and sum(k.startswith("dl1/") for k in a) >= 1, (a.keys(), b.keys())
        for k in a:
            assert a[k] == b[k], (particle, k)
        assert not (tmp_path / f"{particle}_dl1" / "r1").exists() and sum(s.n_tel_events.values()) > 5
    assert "simulation/muons.parquet" in b
    # the CLI takes --config/--set for the DL1 stage, only with --level dl1
    res = run_cli("simulate", "--particle", "gamma", "--n-showers", "5", "--reuse", "2", "--scatter-radius-m", "200",
                  "--level", "dl1", "--set", "r1_to_dl1.write_images=true", "-o", tmp_path / "cli", "-q")
    assert res.returncode == 0, res.stderr
    assert S.IMAGE in pq.read_schema(next((tmp_path / "cli" / "dl1").rglob("*.parquet"))).names


def test_noise_and_pulses_calibrated(gamma_chain):
    """Pedestal-subtracted noise has mean 0 and the shot-noise variance of the NSB (exact
    per window), and a signal pulse integrates to its p.e."""
    r1 = pq.read_table(next((gamma_chain / "r1" / "r1").glob("tel_type=LST*/*.parquet")),
                       columns=[S.WAVEFORM, S.TRUE_IMAGE, S.TEL_ID])
    sub = SubarrayDescription.read(gamma_chain / "r1")
    n, n_pix = r1.num_rows, len(r1.column(S.TRUE_IMAGE)[0])
    wf = r1.column(S.WAVEFORM).combine_chunks().flatten().to_numpy().reshape(n, n_pix, -1)
    true = r1.column(S.TRUE_IMAGE).combine_chunks().flatten().to_numpy().reshape(n, n_pix)
    tel = r1.column(S.TEL_ID).to_numpy()
    for name in {sub.readout_name(int(t)) for t in np.unique(tel)}:   # LST-1's pulse differs from LST-2..4's
        ro = sub.readouts[name]
        rows = np.array([sub.readout_name(int(t)) == name for t in tel])
        dark = wf[rows][true[rows] == 0]
        table = C.pulse_table(ro).astype(np.float64)
        # Campbell's theorem: NSB rate × Σ pulse² per sample, plus the electronic noise
        expected_var = C.NSB_RATE_GHZ / ro.sampling_rate_ghz * (table ** 2).sum(1).mean() + C.ELECTRONIC_NOISE_PE ** 2
        assert abs(dark.mean()) < 0.01, (name, dark.mean())
        assert dark.var() == pytest.approx(expected_var, rel=0.05), name
    bright = true > 200
    assert bright.sum() > 20
    ratio = wf[bright].sum(-1) / true[bright]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)


def test_trigger_rises_with_energy_and_saturates(tmp_path):
    sim = simulate("gamma", 1200, tmp_path / "g", energy_range=(0.01, 30.0), spectral_index=-1.0,
                   scatter_radius_m=100.0, reuse=1, seed=11, level="dl1")
    sh = pl.read_parquet(tmp_path / "g" / "simulation" / "showers.parquet")
    assert sh.height == 1200 and sim.n_array_events == sh[S.TRIGGERED].sum()
    edges = np.geomspace(0.01, 30.0, 8)
    e, trig = sh[S.TRUE_ENERGY].to_numpy(), sh[S.TRIGGERED].to_numpy()
    frac = np.array([trig[(e >= lo) & (e < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    assert frac[0] < 0.2 and (frac[-3:] == 1.0).all(), frac
    assert (np.diff(frac) > -0.1).all(), frac          # rises (within binomial noise) ...
    assert frac[-1] - frac[0] > 0.8                   # ... from ~0 to full efficiency


def test_high_energy_trigger_follows_array_geometry(tmp_path):
    """At 10 TeV every shower with ≥ 2 telescopes in its light pool triggers, and none with
    fewer than 2 telescopes close enough that their brightest pixel could pass the pre-check."""
    simulate("gamma", 600, tmp_path / "g", energy_range=(9.99, 10.01), scatter_radius_m=1000.0, reuse=1,
             seed=12, level="dl1")
    sh = pl.read_parquet(tmp_path / "g" / "simulation" / "showers.parquet")
    sub = SubarrayDescription.read(tmp_path / "g")
    pos = sub.positions()
    types = sub.telescopes.column(S.TEL_TYPE).to_pylist()
    alt, az = np.deg2rad(sh[S.TRUE_ALT].to_numpy()), np.deg2rad(sh[S.TRUE_AZ].to_numpy())
    d = np.stack([np.cos(alt) * np.cos(az), -np.cos(alt) * np.sin(az), np.sin(alt)], -1)
    core = np.stack([sh[S.TRUE_CORE_X].to_numpy(), sh[S.TRUE_CORE_Y].to_numpy(), np.zeros(sh.height)], -1)
    impact = np.linalg.norm(np.cross(pos[None] - core[:, None], d[:, None]), axis=-1)   # (n, n_tel)
    # farthest impact at which a telescope's brightest pixel can reach the pre-check level
    # (all its light in one PSF-sized spot): light_density × area × efficiency × bound ≥ 2 p.e.
    r_max = []
    for t in types:
        o = sub.optics[t]
        g = sub.geometries[sub.camera_name(int(sub.tel_ids_of_type(t)[0]))]
        bound = g.pix_area.max() / (2 * np.pi * C.psf_m(o.equivalent_focal_length_m) ** 2)
        pool = C.PHOTON_DENSITY_PER_TEV * 10.0 * o.mirror_area_m2 * C.EFFICIENCY * bound
        r_max.append(C.LIGHT_POOL_RADIUS_M + C.LIGHT_POOL_FALLOFF_M * np.log(pool / (0.25 * C.TRIGGER_THRESHOLD_PE)))
    in_pool = (impact < C.LIGHT_POOL_RADIUS_M).sum(1) >= 2
    reachable = (impact < np.array(r_max)[None]).sum(1) >= 2
    trig = sh[S.TRIGGERED].to_numpy()
    assert in_pool.sum() > 20 and (~reachable).sum() > 20
    assert trig[in_pool].all()
    assert not trig[~reachable].any()
    assert in_pool.mean() <= trig.mean() <= reachable.mean()


def test_electrons_like_gammas(tmp_path, gamma_chain):
    """Electrons: X_max one splitting step (X0 ln 2) above gammas, same images, same reconstruction."""
    simulate("electron", 120, tmp_path / "e", **GAMMA, level="dl1")
    dl1_to_dl2([tmp_path / "e"], tmp_path / "e2")
    sh = pl.read_parquet(tmp_path / "e" / "simulation" / "showers.parquet")
    assert (sh["true_shower_primary_id"] == 3).all() and set(sh[S.PARTICLE]) == {"electron"}
    shift = np.mean(sh[S.TRUE_X_MAX].to_numpy() - X0_G_CM2 * np.log(sh[S.TRUE_ENERGY].to_numpy() / EC_TEV))
    assert shift == pytest.approx(-X0_G_CM2 * np.log(2), abs=6)

    def shape(product):
        d = pl.read_parquet(product / "dl1" / "**" / "*.parquet", hive_partitioning=True)
        d = d.filter((pl.col(S.HILLAS_INTENSITY) > 100) & pl.col(S.HILLAS_WIDTH).is_finite())
        return d[S.HILLAS_WIDTH].median(), d[S.HILLAS_LENGTH].median()
    (ew, el), (gw, gl) = shape(tmp_path / "e"), shape(gamma_chain / "dl1")
    assert ew == pytest.approx(gw, rel=0.15) and el == pytest.approx(gl, rel=0.2)
    dl2 = pl.read_parquet(tmp_path / "e2" / "dl2" / "*.parquet")
    ok = dl2.filter(pl.col(S.RECO_IS_VALID) & (pl.col(S.N_TELS_USED) >= 2))
    a1, z1 = np.deg2rad(ok[S.RECO_ALT].to_numpy()), np.deg2rad(ok[S.RECO_AZ].to_numpy())
    a2, z2 = np.deg2rad(ok[S.TRUE_ALT].to_numpy()), np.deg2rad(ok[S.TRUE_AZ].to_numpy())
    err = np.rad2deg(np.arccos(np.clip(np.sin(a1) * np.sin(a2) + np.cos(a1) * np.cos(a2) * np.cos(z1 - z2), -1, 1)))
    assert ok.height > 30 and np.median(err) < 0.5, np.median(err)


def test_camera_kernels_against_references():
    """The numba projection agrees with the frames kernels; Poisson images average to the
    expected image; the wrappers reject inconsistent shapes."""
    from dvp.kernels.frames import altaz_to_telescope, cartesian_to_altaz, telescope_to_camera
    rng = np.random.default_rng(1)
    n = 50
    centre = np.column_stack([rng.uniform(-300, 300, (n, 2)), rng.uniform(5000, 15000, n)])
    tel = np.column_stack([rng.uniform(-200, 200, (n, 2)), rng.uniform(0, 60, n)])
    d, e1, e2 = C.shower_frame(rng.uniform(60, 80, n), rng.uniform(-10, 10, n))
    axes, sig = np.stack([-d, e1, e2], 1), np.tile([3000.0, 25.0, 25.0], (n, 1))
    mean, cov, jac, t_c, _ = C.project(centre, axes, sig, tel, np.full(n, 28.0), 70.0, 0.0)
    alt, az = cartesian_to_altaz(centre - tel)
    x, y = telescope_to_camera(*altaz_to_telescope(alt, az, 70.0, 0.0), 28.0)
    assert np.allclose(mean, np.column_stack([x, y]), atol=1e-9)
    assert np.allclose(t_c, np.linalg.norm(centre - tel, axis=1) / C.C_M_NS)
    assert (np.linalg.eigvalsh(cov) >= C.psf_m(28.0) ** 2 * (1 - 1e-9)).all()
    # one bright component drawn 2000 times: the mean image is the expected image
    sub = _sim_layout(None)[1]
    g = sub.geometries["LSTN-design"]
    k = 2000
    m = np.tile([[[0.1, -0.05]]], (k, 1, 1))
    cv = np.tile([[[[4e-3, 1e-3], [1e-3, 1e-3]]]], (k, 1, 1, 1))
    w, npe = np.ones((k, 1)), np.full(k, 500.0)
    img, above = C.sample_images(rng, m, cv, w, npe, g.pix_x, g.pix_y, g.pix_area)
    mu = C.expected_image(m[:1], cv[:1], w[:1], npe[:1], g.pix_x, g.pix_y, g.pix_area)[0]
    assert img.dtype == np.int32 and (above == (img >= C.TRIGGER_THRESHOLD_PE).sum(1)).all()
    assert np.allclose(img.mean(0), mu, atol=5 * np.sqrt(mu.max() / k) + 1e-3)
    with pytest.raises(ValueError, match="shapes"):
        C.sample_images(rng, m, cv[:-1], w, npe, g.pix_x, g.pix_y, g.pix_area)
    with pytest.raises(ValueError, match="shapes"):
        C.project(centre, axes[:-1], sig, tel, 28.0, 70.0, 0.0)
    with pytest.raises(ValueError, match="t_start_ns"):
        C.synthesize_waveforms(rng, img[:2], np.zeros((3, g.n_pixels)), sub.readouts["LSTN-design"])


def test_muon_chord_length():
    """Vacanti's D(φ) is the mirror chord: compare with lines intersected with a unit disk."""
    from dvp.sim.muons import chord_length
    rng = np.random.default_rng(0)
    for rho in (0.0, 0.5, 1.0, 1.5):
        psi = rng.uniform(-np.pi, np.pi, 2000)
        # the photon travels from the impact point (rho, 0) along -(cos psi, sin psi): solve
        # |P + tE|² = 1, i.e. t² + 2 t P·E + rho² - 1 = 0, with P·E = -rho cos psi
        b = -rho * np.cos(psi)
        disc = b * b - (rho * rho - 1.0)
        root = np.sqrt(np.maximum(disc, 0))
        t1, t2 = np.maximum(-b - root, 0), np.maximum(-b + root, 0)
        direct = np.where(disc > 0, t2 - t1, 0.0)
        assert np.allclose(chord_length(psi, rho), direct, atol=1e-9), rho
    # the azimuthal integral: 2π for a central impact, 4 at the rim
    psi = np.linspace(-np.pi, np.pi, 200001)
    assert np.trapezoid(chord_length(psi, 0.0), psi) == pytest.approx(2 * np.pi, rel=1e-6)
    assert np.trapezoid(chord_length(psi, 1.0), psi) == pytest.approx(4.0, rel=1e-4)


def _kasa(x, y, w):
    """Weighted algebraic circle fit: (cx, cy, r)."""
    sw = np.sqrt(w)
    a = np.column_stack([x, y, np.ones_like(x)]) * sw[:, None]
    sol = np.linalg.lstsq(a, (x * x + y * y) * sw, rcond=None)[0]
    cx, cy = sol[0] / 2, sol[1] / 2
    return cx, cy, np.sqrt(sol[2] + cx * cx + cy * cy)


def test_muon_rings(tmp_path):
    cfg = load_config(None, ["r1_to_dl1.write_images=true"])
    simulate("muon", 400, tmp_path / "mu", energy_range=(0.015, 0.2), viewcone_deg=1.0, reuse=1, seed=8,
             level="dl1", config=cfg)
    mu = pl.read_parquet(tmp_path / "mu" / "simulation" / "muons.parquet")
    tr = pl.read_parquet(tmp_path / "mu" / "trigger" / "part-00000.parquet")
    sh = pl.read_parquet(tmp_path / "mu" / "simulation" / "showers.parquet")
    assert mu.height == sh.height == 400 and (sh["true_shower_primary_id"] == 6).all()
    assert set(tr[S.EVENT_ID]) == set(mu.filter(pl.col(S.TRIGGERED))[S.EVENT_ID]) and tr.height > 250
    assert (tr["n_trigger_tels"] == 1).all()
    hit = dict(zip(mu[S.EVENT_ID], mu[S.TEL_ID]))
    assert all(ts.to_list() == [hit[e]] for e, ts in zip(tr[S.EVENT_ID], tr["tels_with_trigger"]))
    # Cherenkov angle of fast muons at ~2.2 km: about 1.1-1.2 deg
    assert 1.0 < mu["true_ring_radius_deg"].median() < 1.25
    sub = SubarrayDescription.read(tmp_path / "mu")
    d = pl.read_parquet(tmp_path / "mu" / "dl1" / "**" / "*.parquet", hive_partitioning=True).join(
        mu.drop(S.TRIGGERED), on=[S.OBS_ID, S.EVENT_ID, S.TEL_ID])
    rel, dphi, dcen = [], [], []
    for row in d.iter_rows(named=True):
        o = sub.optics[row[S.TEL_TYPE]]
        g = sub.geometries[sub.camera_name(row[S.TEL_ID])]
        mask, img = np.asarray(row[S.IMAGE_MASK]), np.asarray(row[S.IMAGE])
        mirror_r = np.sqrt(o.mirror_area_m2 / np.pi)
        if mask.sum() < 20 or row["true_impact_m"] > 0.8 * mirror_r:
            continue
        x = np.rad2deg(g.pix_x[mask] / o.equivalent_focal_length_m)
        y = np.rad2deg(g.pix_y[mask] / o.equivalent_focal_length_m)
        cx, cy, r = _kasa(x, y, np.clip(img[mask], 0, None))
        rel.append(r / row["true_ring_radius_deg"] - 1)
        dcen.append(np.hypot(cx - row["true_ring_center_fov_lat_deg"], cy - row["true_ring_center_fov_lon_deg"]))
        if row["true_impact_m"] > 0.3 * mirror_r:   # the ring is brightest towards the impact point
            phi = np.arctan2(y - cy, x - cx)
            w = np.clip(img[mask], 0, None)
            mean_phi = np.arctan2((w * np.sin(phi)).sum(), (w * np.cos(phi)).sum())
            dphi.append(np.angle(np.exp(1j * (mean_phi - np.deg2rad(row["true_impact_phi_deg"])))))
    rel, dphi = np.array(rel), np.rad2deg(np.abs(dphi))
    assert len(rel) > 100 and len(dphi) > 80
    assert np.median(dcen) < 0.02, np.median(dcen)     # camera x = fov_lat, y = fov_lon
    assert abs(np.median(rel)) < 0.01 and np.percentile(np.abs(rel), 90) < 0.03, np.percentile(np.abs(rel), [50, 90])
    assert np.median(dphi) < 10, np.median(dphi)


def test_figure_set(tmp_path):
    from dvp.sim.figures import make_figure_set
    paths = make_figure_set(tmp_path / "fig", n_showers=60, work_dir=tmp_path)
    assert [p.name for p in paths] == ["gamma_vs_proton_dl1.png", "lstcam_toy_vs_simtel_dl1.png",
                                       "lstcam_muons_toy_vs_simtel_dl1.png"]
    for p in paths:
        assert p.stat().st_size > 10_000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--particle", "pion"], "--particle"),
    (["--level", "dl2"], "--level"),
    (["--reuse", "0"], "--reuse"),
    (["--n-showers", "0"], "--n-showers"),
    (["--set", "r1_to_dl1.bogus=1"], "--level dl1"),
    (["--energy-range", "-1", "10"], "--energy-range"),
    (["--energy-range", "5", "1"], "--energy-range"),
    (["--viewcone-deg", "25"], "--viewcone-deg"),
    (["--layout", "/nonexistent/layout.simtel.zst"], "no such file"),
])
def test_bad_parameters(tmp_path, args, message):
    base = ["simulate", "--particle", "gamma", "--n-showers", "3", "--output", tmp_path / "out"]
    res = run_cli(*(base + args))
    assert res.returncode == 1, res.stderr
    assert message in res.stderr and res.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_cli_writes_product(tmp_path):
    res = run_cli("simulate", "--particle", "proton", "--n-showers", "5", "--reuse", "2", "--seed", "1",
                  "--output", tmp_path / "p", "-q")
    assert res.returncode == 0, res.stderr
    sh = pl.read_parquet(tmp_path / "p" / "simulation" / "showers.parquet")
    assert sh.height == 10 and set(sh[S.PARTICLE]) == {"proton"} and (sh["true_shower_primary_id"] == 101).all()


def test_shower_distribution_counts_every_shower(gamma_chain):
    """simulation/shower_distribution.parquet holds histogram 6 of all shower uses, as
    sim_telarray writes it (core distance × energy), consistent with showers.parquet."""
    d = pl.read_parquet(gamma_chain / "r1" / "simulation" / "shower_distribution.parquet").row(0, named=True)
    sh = pl.read_parquet(gamma_chain / "r1" / "simulation" / "showers.parquet")
    h = np.asarray(d["histogram"]).reshape(len(d["bins_core_dist_m"]) - 1, len(d["bins_energy_tev"]) - 1)
    assert d["hist_id"] == 6 and d["n_entries"] == sh.height == h.sum()
    e_counts, _ = np.histogram(sh[S.TRUE_ENERGY].to_numpy(), bins=d["bins_energy_tev"])
    np.testing.assert_array_equal(h.sum(axis=0), e_counts)
    assert d["bins_energy_tev"][0] == pytest.approx(GAMMA["energy_range"][0])
