"""dvp simulate: the toy Monte Carlo writes a valid R1 product, reproducibly, with sane physics."""
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from dvp import schemas as S
from dvp.runner import dl1_to_dl2, r1_to_dl1, simulate
from dvp.sim.showers import EC_TEV, X0_G_CM2, generate, height_of_depth

from .conftest import run_cli

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


def _tables(product):
    """Relative path → the file's table as Arrow IPC bytes (bit-exact, NaN-safe), file
    metadata (provenance timestamps) left out."""
    import pyarrow as pa
    out = {}
    for f in sorted(product.rglob("*.parquet")):
        t = pq.read_table(f).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out[str(f.relative_to(product))] = sink.getvalue().to_pybytes()
    return out


def test_same_seed_identical_tables(tmp_path):
    small = dict(GAMMA, reuse=3)
    simulate("proton", 25, tmp_path / "one", **small)
    simulate("proton", 25, tmp_path / "again", **small)
    a, b = _tables(tmp_path / "one"), _tables(tmp_path / "again")
    assert a.keys() == b.keys() and any(k.startswith("r1/") for k in a)
    for k in a:
        assert a[k] == b[k], k
    simulate("proton", 25, tmp_path / "other", **dict(small, seed=99))
    c = _tables(tmp_path / "other")
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


def test_protons_wider_than_gammas(gamma_chain, proton_dl1):
    def widths(product):
        d = pl.read_parquet(product / "dl1" / "dl1" / "**" / "*.parquet", hive_partitioning=True)
        d = d.filter((pl.col(S.HILLAS_INTENSITY) > 200) & (pl.col(S.HILLAS_INTENSITY) < 2000)
                     & pl.col(S.HILLAS_WIDTH).is_finite())
        return d[S.HILLAS_WIDTH].to_numpy()
    g, p = widths(gamma_chain), widths(proton_dl1)
    assert len(g) > 20 and len(p) > 20
    assert np.median(p) > 1.3 * np.median(g), (np.median(p), np.median(g))


@pytest.mark.parametrize("args, message", [
    (["--particle", "muon"], "--particle"),
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
