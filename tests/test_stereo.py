"""Stereo kernels: hand-worked geometries, degenerate inputs, grouping, jitted vs Python."""
import numpy as np
import pytest

from dvp.kernels import frames as F
from dvp.kernels.stereo import EVENT_KEYS, _hillas_reconstruct, group_events, hillas_reconstruct


def _images(tel_pos, alt, az, core, pointing, s_cog=12000.0):
    """Hillas cog/psi of an ideal shower axis seen by each telescope (telescope frame, deg).

    The centroid is the axis point at slant distance ``s_cog`` from the core; psi is the
    local direction of the axis image at the centroid (from a point 1 m further down).
    """
    d = F.altaz_to_cartesian(alt, az)
    out = []
    for t in tel_pos:
        pts = [np.array([core[0], core[1], 0.0]) + s * d - t for s in (s_cog, s_cog - 1.0)]
        (a1, z1), (a2, z2) = (F.cartesian_to_altaz(p) for p in pts)
        lon, lat = F.altaz_to_telescope([a1, a2], [z1, z2], pointing[0], pointing[1])
        out.append((lon[0], lat[0], np.rad2deg(np.arctan2(lat[1] - lat[0], lon[1] - lon[0]))))
    return np.array(out)


def _run(tel_pos, img, pointing, use=None, width=None, intensity=None, radius=1e-3):
    n = len(tel_pos)
    return hillas_reconstruct(
        np.array([0, n]), img[:, 0], img[:, 1], img[:, 2],
        np.full(n, 100.0) if intensity is None else intensity, np.full(n, 0.3),
        np.full(n, 0.1) if width is None else width, np.full(n, radius), np.full(n, pointing[0]),
        np.full(n, pointing[1]), tel_pos, np.ones(n, bool) if use is None else use,
        np.array([pointing[0]]), np.array([pointing[1]]))


def test_two_telescopes_vertical_shower():
    """Zenith shower on the origin seen from the north and the west: planes x=0 and y=0
    meet in the z axis, the core lines in the origin, the centroid lines at 12 km."""
    tel = np.array([[100.0, 0, 0], [0, 100.0, 0]])
    img = _images(tel, 90.0, 0.0, (0.0, 0.0), (90.0, 0.0))
    r = _run(tel, img, (90.0, 0.0))
    assert r["is_valid"][0] and r["n_tels_used"][0] == 2
    assert abs(r["alt_deg"][0] - 90.0) < 1e-6
    assert abs(r["core_x_m"][0]) < 1e-3 and abs(r["core_y_m"][0]) < 1e-3
    assert abs(r["h_max_rel_m"][0] - 12000.0) < 1e-3
    np.testing.assert_allclose(r["impact_distance_m"], [100.0, 100.0], atol=1e-3)
    assert r["used"].all()
    assert r["ang_uncert_deg"][0] < 1e-6  # one pair: the average is the pair's intersection


@pytest.mark.parametrize("alt,az,core", [(70.0, 30.0, (50.0, -20.0)), (55.0, 190.0, (-300.0, 120.0))])
def test_inclined_shower_four_telescopes(alt, az, core):
    tel = np.array([[120.0, 10, 1.0], [-80, 150, -2.0], [-60, -140, 0.5], [200, -90, 3.0]])
    img = _images(tel, alt, az, core, (alt, az))
    r = _run(tel, img, (alt, az))
    assert r["is_valid"][0] and r["n_tels_used"][0] == 4
    assert abs(r["alt_deg"][0] - alt) < 1e-6 and abs(r["az_deg"][0] - az) < 1e-6
    # psi is the image direction in (fov_lon, fov_lat) coordinates, as in ctapipe, not the
    # exact great circle: the core comes out within decimetres
    assert abs(r["core_x_m"][0] - core[0]) < 0.5 and abs(r["core_y_m"][0] - core[1]) < 0.5
    d = F.altaz_to_cartesian(alt, az)
    assert abs(r["h_max_rel_m"][0] - 12000.0 * d[2]) < 1e-2
    # impact distance: distance of each telescope from the true axis
    q = tel - np.array([core[0], core[1], 0.0])
    np.testing.assert_allclose(r["impact_distance_m"], np.linalg.norm(np.cross(q, d), axis=1), atol=0.5)


def test_result_independent_of_psi_sign_and_weights():
    tel = np.array([[120.0, 10, 0], [-80, 150, 0], [-60, -140, 0]])
    img = _images(tel, 70.0, 30.0, (50.0, -20.0), (70.0, 30.0))
    a = _run(tel, img, (70.0, 30.0))
    flipped = img.copy()
    flipped[:, 2] = np.where(flipped[:, 2] > 0, flipped[:, 2] - 180, flipped[:, 2] + 180)  # same axis
    b = _run(tel, flipped, (70.0, 30.0), intensity=np.array([60.0, 5000.0, 80.0]))
    for k in ("alt_deg", "az_deg", "core_x_m", "core_y_m", "h_max_rel_m"):
        assert abs(a[k][0] - b[k][0]) < 1e-5, k


def test_one_telescope_and_unused_telescopes_are_invalid():
    tel = np.array([[100.0, 0, 0], [0, 100.0, 0]])
    img = _images(tel, 90.0, 0.0, (0.0, 0.0), (90.0, 0.0))
    r = _run(tel, img, (90.0, 0.0), use=np.array([True, False]))
    assert not r["is_valid"][0] and r["n_tels_used"][0] == 0
    assert all(np.isnan(r[k][0]) for k in EVENT_KEYS)
    assert np.isnan(r["impact_distance_m"]).all() and not r["used"].any()
    r1 = _run(tel[:1], img[:1], (90.0, 0.0))
    assert not r1["is_valid"][0]


@pytest.mark.parametrize("bad", ["nan_width", "zero_width", "nan_cog"])
def test_bad_parameters_give_invalid_not_crash(bad):
    tel = np.array([[100.0, 0, 0], [0, 100.0, 0], [50, 50, 0]])
    img = _images(tel, 80.0, 0.0, (0.0, 0.0), (80.0, 0.0))
    width = np.full(3, 0.1)
    if bad == "nan_width":
        width[1] = np.nan
    elif bad == "zero_width":
        width[1] = 0.0
    else:
        img[1, 0] = np.nan
    r = _run(tel, img, (80.0, 0.0), width=width)
    assert not r["is_valid"][0] and r["n_tels_used"][0] == 0 and np.isnan(r["alt_deg"][0])


def test_parallel_planes_are_invalid():
    """Telescopes in line with a vertical axis see it in one plane: no intersection."""
    tel = np.array([[100.0, 0, 0], [200.0, 0, 0]])
    img = _images(tel, 90.0, 0.0, (0.0, 0.0), (90.0, 0.0))
    for radius in (1e-3, 2.0):
        r = _run(tel, img, (90.0, 0.0), radius=radius)
        assert not r["is_valid"][0] and np.isnan(r["core_x_m"][0])


def test_parallel_core_lines_are_invalid():
    """Identical axis angles from two telescopes: the core lines never meet."""
    tel = np.array([[100.0, 0, 0], [0, 100.0, 0]])
    img = np.array([[0.5, 0.2, 30.0], [-0.4, 0.3, 30.0]])
    for radius in (1e-3, 2.0):
        r = _run(tel, img, (70.0, 0.0), radius=radius)
        assert not r["is_valid"][0] and r["n_tels_used"][0] == 0


def test_group_events_sorts_and_splits():
    obs = np.array([2, 1, 1, 2, 1, 1])
    ev = np.array([5, 7, 3, 5, 7, 3])
    tel = np.array([4, 2, 9, 1, 1, 3])
    order, starts = group_events(obs, ev, tel)
    assert list(zip(obs[order], ev[order], tel[order])) == [(1, 3, 3), (1, 3, 9), (1, 7, 1), (1, 7, 2),
                                                            (2, 5, 1), (2, 5, 4)]
    assert starts.tolist() == [0, 2, 4, 6]
    o, s = group_events(np.array([], int), np.array([], int), np.array([], int))
    assert len(o) == 0 and s.tolist() == [0]
    with pytest.raises(ValueError):
        group_events(obs, ev[:3], tel)


def test_many_events_at_once_equal_one_by_one_and_python():
    rng = np.random.default_rng(5)
    tel = np.array([[120.0, 10, 0], [-80, 150, 0], [-60, -140, 0], [200, -90, 0]])
    rows, starts = [], [0]
    for _ in range(6):
        alt, az = rng.uniform(60, 85), rng.uniform(0, 360)
        img = _images(tel, alt, az, rng.normal(0, 100, 2), (alt, az))
        k = rng.integers(1, 5)
        rows.append((tel[:k], img[:k] + rng.normal(0, 0.01, img[:k].shape), alt, az))
        starts.append(starts[-1] + k)
    pos = np.concatenate([r[0] for r in rows])
    img = np.concatenate([r[1] for r in rows])
    n = len(pos)
    args = [np.array(starts), img[:, 0].copy(), img[:, 1].copy(), img[:, 2].copy(), np.full(n, 100.0),
            np.full(n, 0.3), np.full(n, 0.1), np.full(n, 1.0), np.repeat([r[2] for r in rows], np.diff(starts)),
            np.repeat([r[3] for r in rows], np.diff(starts)), pos, np.ones(n, bool),
            np.array([r[2] for r in rows]), np.array([r[3] for r in rows])]
    batch = hillas_reconstruct(*args)
    assert batch["is_valid"].sum() == sum(len(r[0]) >= 2 for r in rows)
    for e, r in enumerate(rows):
        one = _run(r[0], r[1], (r[2], r[3]), radius=1.0)
        for k in EVENT_KEYS:
            np.testing.assert_array_equal(batch[k][e], one[k][0])
    # the Python body of the kernel gives the same numbers
    m = len(rows)
    outs = [np.empty((m, len(EVENT_KEYS))), np.empty(m, np.int16), np.empty(m, bool), np.empty(n), np.empty(n, bool)]
    _hillas_reconstruct.py_func(*args, *outs)
    np.testing.assert_allclose(outs[0], np.column_stack([batch[k] for k in EVENT_KEYS]), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(outs[1], batch["n_tels_used"])
    np.testing.assert_allclose(outs[3], batch["impact_distance_m"], rtol=1e-12)


def test_wrapper_checks_shapes():
    with pytest.raises(ValueError, match="tel_pos_m"):
        hillas_reconstruct(np.array([0, 2]), *([np.zeros(2)] * 9), np.zeros((2, 2)), np.ones(2, bool),
                           np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="starts"):
        hillas_reconstruct(np.array([1, 2]), *([np.zeros(2)] * 9), np.zeros((2, 3)), np.ones(2, bool),
                           np.zeros(1), np.zeros(1))
