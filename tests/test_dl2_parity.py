"""DL2 parity with ctapipe 0.28 (ShowerProcessor + HillasReconstructor, default config).

Every array event of every shared file: direction within 0.01 deg, core within 1 m,
h_max within 1 %, the same reco_is_valid and n_tels_used. The fraction of events that
match, per column, is printed in the pytest terminal summary.
"""
import numpy as np
import polars as pl
import pytest

from .conftest import REFERENCE, REFERENCE_STEMS

# column -> [matching events, compared events], filled by the tests
PARITY: dict[str, list[int]] = {}
STEMS = [s for s in REFERENCE_STEMS if (REFERENCE / f"{s}.dl2.parquet").is_file()]


def _record(column, ok):
    tally = PARITY.setdefault(column, [0, 0])
    tally[0] += int(np.sum(ok))
    tally[1] += int(np.size(ok))


def _angle(alt1, az1, alt2, az2):
    a1, z1, a2, z2 = map(np.deg2rad, (alt1, az1, alt2, az2))
    c = np.sin(a1) * np.sin(a2) + np.cos(a1) * np.cos(a2) * np.cos(z1 - z2)
    return np.rad2deg(np.arccos(np.clip(c, -1, 1)))


@pytest.mark.parametrize("name", STEMS)
def test_geometry_matches_ctapipe(name, dl2_products):
    ref = pl.read_parquet(REFERENCE / f"{name}.dl2.parquet")
    ours = pl.read_parquet(dl2_products[name] / "dl2" / "*.parquet")
    assert sorted(zip(ref["obs_id"], ref["event_id"])) == sorted(zip(ours["obs_id"], ours["event_id"]))
    j = ref.join(ours, on=["obs_id", "event_id"], suffix="_dvp")
    valid = j["reco_is_valid"].to_numpy()
    checks = {
        "reco_is_valid": j["reco_is_valid"].to_numpy() == j["reco_is_valid_dvp"].to_numpy(),
        "n_tels_used": j["n_tels_used"].to_numpy() == j["n_tels_used_dvp"].to_numpy(),
    }
    col = lambda c: j[c].to_numpy().astype(np.float64)
    d_dir = _angle(col("reco_alt_deg"), col("reco_az_deg"), col("reco_alt_deg_dvp"), col("reco_az_deg_dvp"))
    checks["direction (0.01 deg)"] = np.where(valid, d_dir < 0.01, np.isnan(col("reco_alt_deg_dvp")))
    for c in ("reco_core_x_m", "reco_core_y_m"):
        checks[f"{c} (1 m)"] = np.where(valid, np.abs(col(c) - col(c + "_dvp")) < 1.0, np.isnan(col(c + "_dvp")))
    rel = np.abs(col("reco_h_max_m") - col("reco_h_max_m_dvp")) / np.abs(col("reco_h_max_m"))
    checks["reco_h_max_m (1 %)"] = np.where(valid, rel < 0.01, np.isnan(col("reco_h_max_m_dvp")))
    for c, ok in checks.items():
        _record(c, ok)
    bad = {c: int((~ok).sum()) for c, ok in checks.items() if not ok.all()}
    assert not bad, f"{name}: events differing from ctapipe per column: {bad}"


def test_reference_has_valid_stereo_events(dl2_products):
    """Guard: the comparison above covers real reconstructions, not only invalid events."""
    n_valid = sum(int(pl.read_parquet(REFERENCE / f"{s}.dl2.parquet")["reco_is_valid"].sum()) for s in STEMS)
    assert n_valid >= 8
    ours = sum(int(pl.read_parquet(dl2_products[s] / "dl2" / "*.parquet")["reco_is_valid"].sum())
               for s in STEMS)
    assert ours == n_valid
