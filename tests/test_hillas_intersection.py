"""HillasIntersection kernel: hand-worked geometry, ctapipe's weighting, edge cases,
jitted vs Python, and a golden comparison with ctapipe 0.28's ``HillasIntersection``
(tests/reference/kernels/hillas_intersection.npz, made by
tests/reference/make_intersection_reference.py)."""
import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dvp.config import load_config
from dvp.kernels.stereo import EVENT_KEYS, _hillas_intersection, hillas_intersection

REF = Path(__file__).parent / "reference" / "kernels" / "hillas_intersection.npz"
D = np.deg2rad(0.5)


def _run(tel_pos, lon, lat, psi, pointing, intensity=None, width=None, use=None, site_height=0.0):
    n = len(tel_pos)
    return hillas_intersection(np.array([0, n]), np.asarray(lon, float), np.asarray(lat, float),
                               np.asarray(psi, float), np.full(n, 100.0) if intensity is None else intensity,
                               np.full(n, 0.1) if width is None else width, np.full(n, pointing[0]),
                               np.full(n, pointing[1]), tel_pos, np.ones(n, bool) if use is None else use,
                               np.array([pointing[0]]), np.array([pointing[1]]), site_height)


def test_two_telescopes_hand_worked():
    """Pointing (70, 0): axes lat = 0 and lon = 0 cross at the pointing direction. With
    az = 0 the tilted frame is x_t = sin70 x - cos70 z, y_t = y, so the core lines
    x_t = sin70 * 100 and y_t = -40 meet at tilted (93.97, -40), i.e. ground (100, -40);
    h_max = mean(70 m, 150 sin70 m) / 0.5 deg * cos(20 deg)."""
    tel = np.array([[100.0, 30.0, 0.0], [-50.0, -40.0, 0.0]])
    r = _run(tel, [0.5, 0.0], [0.0, 0.5], [0.0, 90.0], (70.0, 0.0), site_height=1800.0)
    s70 = np.sin(np.deg2rad(70))
    assert r["is_valid"][0] and r["n_tels_used"][0] == 2
    assert abs(r["alt_deg"][0] - 70.0) < 1e-9 and min(r["az_deg"][0], 360 - r["az_deg"][0]) < 1e-9
    np.testing.assert_allclose([r["core_tilted_x_m"][0], r["core_tilted_y_m"][0]], [100 * s70, -40], atol=1e-9)
    np.testing.assert_allclose([r["core_x_m"][0], r["core_y_m"][0]], [100.0, -40.0], atol=1e-9)
    h = (70.0 + 150 * s70) / 2 / D * np.cos(np.deg2rad(20))
    np.testing.assert_allclose(r["h_max_rel_m"][0], h, rtol=1e-12)
    np.testing.assert_allclose(r["impact_distance_m"], [70.0, 150 * s70], rtol=1e-12)
    assert r["ang_uncert_deg"][0] == 0.0  # one pair: no spread
    assert r["average_intensity_pe"][0] == 100.0


def _ctapipe_nominal(lon, lat, psi, inten):
    """ctapipe's reconstruct_nominal, transcribed (radians): the weighted crossing points."""
    sx, sy, w = [], [], []
    for a, b in itertools.combinations(range(len(lon)), 2):
        s1, c1, s2, c2 = np.sin(psi[a]), np.cos(psi[a]), np.sin(psi[b]), np.cos(psi[b])
        cc1, cc2 = lat[a] * c1 - lon[a] * s1, lat[b] * c2 - lon[b] * s2
        det = s1 * -c2 - s2 * -c1
        sx.append((-c1 * cc2 + c2 * cc1) / det)
        sy.append((cc1 * s2 - cc2 * s1) / det)
        w.append(inten[a] * inten[b] / (inten[a] + inten[b]) * abs(np.sin(psi[a] - psi[b])))
    x, y = np.average(sx, weights=w), np.average(sy, weights=w)
    err = np.hypot(np.sqrt(np.average((np.array(sx) - x) ** 2, weights=w)),
                   np.sqrt(np.average((np.array(sy) - y) ** 2, weights=w)))
    return x, y, err


def test_weighting_matches_ctapipe_formula():
    """Four telescopes whose axes do not meet in one point, unequal intensities: at the
    zenith with every telescope on the array pointing, the nominal frame is the telescope
    frame, so the direction is ctapipe's weighted crossing average, and so is the spread."""
    rng = np.random.default_rng(3)
    tel = np.array([[120.0, 10, 0], [-80, 150, 0], [-60, -140, 0], [200, -90, 0]])
    lon, lat, psi = rng.uniform(-1, 1, 4), rng.uniform(-1, 1, 4), rng.uniform(-90, 90, 4)
    inten = np.array([80.0, 300.0, 1200.0, 55.0])
    r = _run(tel, lon, lat, psi, (89.0, 0.0), intensity=inten)
    x, y, err = _ctapipe_nominal(np.deg2rad(lon), np.deg2rad(lat), np.deg2rad(psi), inten)
    # nominal (x, y) -> horizontal for the pointing (89, 0) through dvp's tested frames
    from dvp.kernels.frames import telescope_to_altaz
    alt, az = telescope_to_altaz(np.rad2deg(x), np.rad2deg(y), 89.0, 0.0)
    assert r["is_valid"][0]
    np.testing.assert_allclose([r["alt_deg"][0], r["az_deg"][0]], [alt, az], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r["ang_uncert_deg"][0], np.rad2deg(err), rtol=1e-9)
    assert r["ang_uncert_deg"][0] > 0.01


def test_invalid_cases():
    tel = np.array([[100.0, 30.0, 0.0], [-50.0, -40.0, 0.0], [10.0, 80.0, 0.0]])
    p = (70.0, 0.0)
    ok = _run(tel, [0.5, 0.0, 0.3], [0.0, 0.5, 0.3], [0.0, 90.0, 45.0], p)
    assert ok["is_valid"][0] and ok["n_tels_used"][0] == 3
    # one usable telescope; zero and NaN width
    assert not _run(tel, [0.5, 0.0, 0.3], [0.0, 0.5, 0.3], [0.0, 90.0, 45.0], p,
                    use=np.array([True, False, False]))["is_valid"][0]
    for w in (0.0, np.nan):
        r = _run(tel, [0.5, 0.0, 0.3], [0.0, 0.5, 0.3], [0.0, 90.0, 45.0], p, width=np.array([0.1, w, 0.1]))
        assert not r["is_valid"][0] and r["n_tels_used"][0] == 0 and np.isnan(r["alt_deg"][0])
        assert not r["used"].any() and np.isnan(r["impact_distance_m"]).all()
    # all axes parallel: no crossing at all
    assert not _run(tel, [0.5, 0.0, 0.3], [0.0, 0.5, 0.3], [30.0, 30.0, 30.0], p)["is_valid"][0]
    # one parallel pair among three: left out, the other two pairs decide
    r = _run(tel, [0.5, 0.0, 0.0], [0.0, 0.5, -0.7], [0.0, 90.0, 90.0], p)
    assert r["is_valid"][0] and abs(r["alt_deg"][0] - 70.0) < 1e-9
    # crossing > 45 deg from the pointing: invalid as in ctapipe
    assert not _run(tel[:2], [0.0, 0.0], [0.0, 0.5], [0.0, 0.5], p)["is_valid"][0]  # lon ~ -57 deg
    assert _run(tel[:2], [0.0, 0.0], [0.0, 0.5], [0.0, 1.0], p)["is_valid"][0]  # lon ~ -29 deg
    # h_max above 100 km (a.s.l.): NaN, the event stays valid
    r = _run(tel[:2], [0.5, 0.0], [0.0, 0.5], [0.0, 90.0], p, site_height=99_950.0)
    assert r["is_valid"][0] and np.isnan(r["h_max_rel_m"][0]) and np.isfinite(r["core_x_m"][0])


def test_many_events_equal_one_by_one_and_python():
    rng = np.random.default_rng(5)
    n_ev = 300
    n_tel = rng.integers(1, 6, n_ev)
    n = int(n_tel.sum())
    pos = rng.uniform(-300, 300, (n, 3)) * [1, 1, 0.01]
    args = [rng.uniform(-2, 2, n), rng.uniform(-2, 2, n), rng.uniform(-90, 90, n), rng.uniform(50, 5000, n),
            rng.uniform(0.02, 0.1, n), rng.uniform(60, 80, n), rng.uniform(0, 20, n), pos, rng.random(n) > 0.1]
    starts = np.concatenate([[0], np.cumsum(n_tel)])
    aalt, aaz = rng.uniform(60, 80, n_ev), rng.uniform(0, 20, n_ev)
    batch = hillas_intersection(starts, *args, aalt, aaz, 2000.0)
    assert 0.5 < batch["is_valid"].mean() < 1
    for e in (0, 7, 100, 299):
        sl = slice(starts[e], starts[e + 1])
        one = hillas_intersection(np.array([0, n_tel[e]]), *[a[sl] for a in args], aalt[e:e + 1], aaz[e:e + 1], 2000.0)
        for k in (*EVENT_KEYS, "n_tels_used", "is_valid"):
            np.testing.assert_array_equal(one[k], batch[k][e:e + 1])
        np.testing.assert_array_equal(one["impact_distance_m"], batch["impact_distance_m"][sl])
    # the same body run as plain Python
    outs = [np.empty((n_ev, len(EVENT_KEYS))), np.empty(n_ev, np.int16), np.empty(n_ev, bool), np.empty(n), np.empty(n, bool)]
    _hillas_intersection.py_func(starts, *[np.ascontiguousarray(a, float) for a in args[:7]], pos, args[8],
                                 aalt, aaz, 2000.0, *outs)
    ev = np.stack([batch[k] for k in EVENT_KEYS], axis=1)
    np.testing.assert_allclose(outs[0], ev, rtol=1e-10, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(outs[1], batch["n_tels_used"])
    np.testing.assert_array_equal(outs[2], batch["is_valid"])
    np.testing.assert_allclose(outs[3], batch["impact_distance_m"], rtol=1e-10, atol=1e-9, equal_nan=True)


def test_wrapper_checks_shapes():
    tel = np.zeros((2, 3))
    with pytest.raises(ValueError, match="psi_deg must have shape"):
        hillas_intersection(np.array([0, 2]), np.zeros(2), np.zeros(2), np.zeros(3), np.ones(2), np.ones(2),
                            np.full(2, 70.0), np.zeros(2), tel, np.ones(2, bool), [70.0], [0.0])
    with pytest.raises(ValueError, match="tel_pos_m"):
        hillas_intersection(np.array([0, 2]), *[np.zeros(2)] * 7, np.zeros((2, 2)), np.ones(2, bool), [70.0], [0.0])


# -- golden: ctapipe 0.28 HillasIntersection on the shared files -----------------------

def _angle(alt1, az1, alt2, az2):
    a1, z1, a2, z2 = map(np.deg2rad, (alt1, az1, alt2, az2))
    c = np.sin(a1) * np.sin(a2) + np.cos(a1) * np.cos(a2) * np.cos(z1 - z2)
    return np.rad2deg(np.arccos(np.clip(c, -1, 1)))


def test_matches_ctapipe_hillas_intersection(dl1_products, tmp_path):
    from dvp.runner import dl1_to_dl2

    ref = np.load(REF)
    config = load_config(overrides=['dl1_to_dl2.method="HillasIntersection"'])
    n_valid = n_compared = 0
    for i, stem in enumerate(ref["stems"]):
        sel = ref["file_index"] == i
        out = dl1_to_dl2([dl1_products[str(stem)]], tmp_path / str(stem), config).output
        ours = pl.read_parquet(out / "dl2" / "*.parquet")
        assert (ours["reco_method"] == "HillasIntersection").all()
        r = pl.DataFrame({k: ref[k][sel] for k in ref.files if k not in ("stems",)})
        j = r.join(ours, on=["obs_id", "event_id"], how="left")
        assert j.height == int(sel.sum()) and ours.height == j.height, stem
        assert not j["error"].any(), "ctapipe raised on an event: compare that event by hand"
        valid = j["is_valid"].to_numpy()
        np.testing.assert_array_equal(j["reco_is_valid"].to_numpy(), valid, err_msg=str(stem))
        # ours comes out of the join as n_tels_used_right
        np.testing.assert_array_equal(j["n_tels_used_right"].to_numpy(), j["n_tels_used"].to_numpy())
        v = j.filter(pl.col("is_valid"))
        col = lambda c: v[c].to_numpy().astype(float)
        assert (_angle(col("alt_deg"), col("az_deg"), col("reco_alt_deg"), col("reco_az_deg")) < 0.01).all(), stem
        assert (np.abs(col("core_x_m") - col("reco_core_x_m")) < 1.0).all(), stem
        assert (np.abs(col("core_y_m") - col("reco_core_y_m")) < 1.0).all(), stem
        h_ref, h = col("h_max_m"), col("reco_h_max_m")
        assert np.array_equal(np.isnan(h_ref), np.isnan(h)), stem
        ok = ~np.isnan(h_ref)
        assert (np.abs(h[ok] - h_ref[ok]) <= 0.01 * np.abs(h_ref[ok])).all(), stem
        np.testing.assert_allclose(col("reco_alt_uncert_deg"), col("uncert_deg"), rtol=0.01, atol=1e-4)
        np.testing.assert_allclose(col("reco_average_intensity_pe"), col("average_intensity_pe"), rtol=1e-4)
        n_valid += int(valid.sum())
        n_compared += j.height
    assert n_valid >= 8 and n_compared >= 40  # real reconstructions were compared
