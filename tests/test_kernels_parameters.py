"""Image-parameter kernels: Hillas, leakage, concentration, timing, morphology, statistics.

Three kinds of tests: answers worked out by hand on tiny cameras, jitted bodies against their
``.py_func``, and ctapipe 0.28 golden references (``reference/kernels/parameters.npz``, made by
``reference/make_parameters_reference.py``).
"""
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import dvp.kernels.hillas as hillas_mod
import dvp.kernels.parameters as params_mod
import dvp.kernels.timing as timing_mod
from dvp.kernels.hillas import HILLAS_KEYS, hillas_parameters
from dvp.kernels.parameters import (
    concentration_parameters,
    descriptive_statistics,
    leakage_parameters,
    morphology_parameters,
)
from dvp.kernels.timing import _timing_parameters_with_pairs, timing_parameters

REF = Path(__file__).parent / "reference" / "kernels" / "parameters.npz"
RTOL = 1e-6
ATOL = 1e-9


def f32(*rows):
    return np.array(rows, np.float32)


def hillas_1(pix_x, pix_y, values, area=None, pixels=None):
    """Hillas of one image over all given pixels (mask = pixels, default all)."""
    n = len(pix_x)
    mask = np.zeros((1, n), bool)
    mask[0, pixels if pixels is not None else slice(None)] = True
    area = np.ones(n) if area is None else area
    h = hillas_parameters(np.asarray(pix_x, float), np.asarray(pix_y, float), f32(values), mask, pix_area=area)
    return {k: v[0] for k, v in h.items()}


# ------------------------------------------------------------------ hand-worked: Hillas
def test_hillas_four_pixels_on_a_line_by_hand():
    # x = -1.5, -0.5, 0.5, 1.5 deg, weight 1, area 1: cov_xx = (2 * 2.25 + 2 * 0.25) / 4 = 1.25
    h = hillas_1([-1.5, -0.5, 0.5, 1.5], [0, 0, 0, 0], [1, 1, 1, 1])
    assert h["intensity"] == 4 and h["fov_lon"] == 0 and h["fov_lat"] == 0 and h["r"] == 0 and h["phi"] == 0
    assert h["length"] == pytest.approx(np.sqrt(1.25), rel=1e-15)
    assert h["width"] == 0 and np.isnan(h["width_uncertainty"])
    assert h["psi"] == 0
    assert h["skewness"] == pytest.approx(0, abs=1e-15)
    # <x^4> = (2 * 5.0625 + 2 * 0.0625) / 4 = 2.5625, / length^4 = 1.5625
    assert h["kurtosis"] == pytest.approx(2.5625 / 1.5625, rel=1e-14)
    # A_i = (dx^2 - 1.25) / 4 = +-0.25 -> sqrt(sum A^2) = 0.5, / (2 length)
    assert h["length_uncertainty"] == pytest.approx(0.5 / (2 * np.sqrt(1.25)), rel=1e-14)
    # normal matrix [[sum l^2, sum l], [sum l, n]] = [[5, 0], [0, 4]], trans = 0 -> p = 0
    assert h["psi_uncertainty"] == pytest.approx(np.rad2deg(np.sqrt(1 / 5)), rel=1e-14)
    assert h["transverse_cog_uncertainty"] == pytest.approx(np.sqrt(1 / 4), rel=1e-14)


def test_hillas_area_weights_only_the_uncertainty_fit():
    ref = hillas_1([-1.5, -0.5, 0.5, 1.5], [0, 0, 0, 0], [1, 1, 1, 1])
    h = hillas_1([-1.5, -0.5, 0.5, 1.5], [0, 0, 0, 0], [1, 1, 1, 1], area=np.full(4, 4.0))
    assert h["psi_uncertainty"] == pytest.approx(np.rad2deg(np.sqrt(4 / 5)), rel=1e-14)
    assert h["transverse_cog_uncertainty"] == pytest.approx(np.sqrt(4 / 4), rel=1e-14)
    for key in ("length", "width", "psi", "skewness", "length_uncertainty"):
        assert h[key] == ref[key] or (np.isnan(h[key]) and np.isnan(ref[key]))


def test_hillas_orientation_and_centroid_by_hand():
    diag = hillas_1([1, 3], [1, 3], [1, 1])  # cog (2, 2), along 45 deg
    assert diag["psi"] == pytest.approx(45, rel=1e-14)
    assert diag["length"] == pytest.approx(np.sqrt(2), rel=1e-14) and diag["width"] == 0
    assert diag["r"] == pytest.approx(np.sqrt(8), rel=1e-15) and diag["phi"] == pytest.approx(45, rel=1e-15)
    anti = hillas_1([-1, 1], [1, -1], [1, 1])
    assert anti["psi"] == pytest.approx(-45, rel=1e-14)
    # vertical: ctapipe's eigenvector (0, 1) has vx == 0 -> psi = +90 exactly
    vert = hillas_1([0, 0], [-1, 1], [2, 2])
    assert vert["psi"] == 90 and vert["length"] == 1
    # weighted cog: (0 * 1 + 4 * 3) / 4 = 3; phi of (3, -3) is -45 deg
    h = hillas_1([0, 4], [-3, -3], [1, 3])
    assert h["fov_lon"] == 3 and h["fov_lat"] == -3 and h["phi"] == pytest.approx(-45, rel=1e-15)
    # skewness: longi along +x; weights 1 at -3 and 3 at +1 -> <l^3> = (-27 + 3) / 4 = -6,
    # length^2 = (9 + 3) / 4 = 3
    h = hillas_1([-3, 1], [0, 0], [1, 3])
    assert h["fov_lon"] == 0 and h["psi"] == 0
    assert h["skewness"] == pytest.approx(-6 / 3**1.5, rel=1e-14)
    assert h["kurtosis"] == pytest.approx((81 + 3) / 4 / 9, rel=1e-14)


def test_hillas_ellipse_width_and_elongation_term():
    # cross of 4 pixels: x = +-2, y = +-1, equal weights -> cov diag(2, 0.5), length sqrt 2, width sqrt .5
    h = hillas_1([-2, 2, 0, 0], [0, 0, -1, 1], [1, 1, 1, 1])
    assert h["length"] == pytest.approx(np.sqrt(2), rel=1e-15) and h["width"] == pytest.approx(np.sqrt(0.5), rel=1e-15)
    assert h["psi"] == 0
    # lsq: sum l^2 = 8, sum l = 0, n = 4, trans = (0, 0, -1, 1), sum l t = 0 -> p0 = 0
    tan_term = np.tan(np.sqrt(0.5) / np.sqrt(2) * np.pi / 2)
    assert h["psi_uncertainty"] == pytest.approx(np.rad2deg(np.sqrt(1 / 8) * (1 + tan_term**2)), rel=1e-14)
    # B_i = (dy^2 - 0.5) / 4 = -1/8, -1/8, 1/8, 1/8; width_unc = sqrt(sum B^2) / (2 width) (a=1, b=0, c=0)
    assert h["width_uncertainty"] == pytest.approx(np.sqrt(4 / 64) / (2 * np.sqrt(0.5)), rel=1e-14)


def test_hillas_degenerate_images():
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.0, 1.5])
    single = hillas_1(x, y, [0, 0, 7, 0], pixels=[2])
    assert single["intensity"] == 7 and single["fov_lon"] == 2 and single["fov_lat"] == 1
    assert single["length"] == 0 and single["width"] == 0
    for key in ("psi", "psi_uncertainty", "transverse_cog_uncertainty", "skewness", "kurtosis",
                "length_uncertainty", "width_uncertainty"):
        assert np.isnan(single[key]), key
    # where ctapipe raises: everything NaN
    for values, pixels in (([1, 2, 3, 4], []), ([0, 0, 0, 0], None), ([5, -1, 3, 2], None)):
        h = hillas_1(x, y, values, pixels=pixels)
        assert all(np.isnan(v) for v in h.values()), (values, pixels)
    # pixels outside the mask never matter, whatever they hold
    a = hillas_1(x, y, [np.nan, 3, 4, -np.inf], pixels=[1, 2])
    b = hillas_1(x, y, [0, 3, 4, 0], pixels=[1, 2])
    np.testing.assert_array_equal(list(a.values()), list(b.values()))


def test_selected_false_gives_nan_everywhere():
    n = 7
    x = np.cos(np.arange(n)).astype(float)
    y = np.sin(np.arange(n)).astype(float)
    image = np.full((2, n), 10, np.float32)
    mask = np.ones((2, n), bool)
    sel = np.array([True, False])
    h = hillas_parameters(x, y, image, mask, sel, pix_area=np.ones(n))
    assert all(np.isfinite(v[0]) for k, v in h.items()) and all(np.isnan(v[1]) for v in h.values())
    for out in (leakage_parameters(image, mask, np.ones(n, bool), np.ones(n, bool), sel),
                concentration_parameters(x, y, np.ones(n), image, mask, h, sel),
                morphology_parameters(np.ones((2, n), np.int32), np.ones(2, np.int32), sel),
                descriptive_statistics(image, mask, sel),
                timing_parameters(x, y, image, image, mask, h, sel)):
        assert all(np.isnan(v[1]) for v in out.values())
        assert all(not np.isnan(v[0]) for k, v in out.items() if k != "skewness" and k != "kurtosis")


# ------------------------------------------------------------- hand-worked: the others
def hexagon():
    """7-pixel hexagon: centre 0 and a ring 1..6 at distance 1 (ring pixels are the border)."""
    ang = np.deg2rad(60 * np.arange(6))
    x = np.r_[0, np.cos(ang)]
    y = np.r_[0, np.sin(ang)]
    border_1 = np.r_[False, np.ones(6, bool)]
    border_2 = np.ones(7, bool)  # every pixel touches the ring
    return x, y, border_1, border_2


def test_leakage_by_hand():
    x, y, b1, b2 = hexagon()
    image = f32([10, 5, 5, 7, 1, 1, 1], [10, 5, 5, 7, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0, 0])
    mask = np.zeros((4, 7), bool)
    mask[0, [0, 1, 2]] = True
    mask[1, [0]] = True
    mask[3, [0, 1]] = True  # intensity 3 + 0 -> the border holds 0 of 3
    lk = leakage_parameters(image, mask, b1, b2)
    assert lk["pixels_width_1"][0] == pytest.approx(2 / 3, rel=1e-15) and lk["pixels_width_2"][0] == 1
    assert lk["intensity_width_1"][0] == 0.5 and lk["intensity_width_2"][0] == 1
    assert lk["pixels_width_1"][1] == 0 and lk["intensity_width_1"][1] == 0 and lk["intensity_width_2"][1] == 1
    assert all(np.isnan(v[2]) for v in lk.values())  # empty mask: ctapipe divides by zero
    assert lk["pixels_width_1"][3] == 0.5 and lk["intensity_width_1"][3] == 0


def test_concentration_by_hand():
    x, y, _, _ = hexagon()
    image = f32([8, 4, 2, 2, 1, 2, 1])
    mask = np.ones((1, 7), bool)
    size = float(image.sum())
    # cog at the centre, pixel width 0.9: only the centre pixel is within one width
    h = dict(intensity=np.array([size]), fov_lon=np.zeros(1), fov_lat=np.zeros(1), length=np.array([1.5]),
             width=np.array([0.5]), psi=np.zeros(1))
    c = concentration_parameters(x, y, np.full(7, 0.9), image, mask, h)
    assert c["cog"][0] == 8 / size and c["pixel"][0] == 8 / size
    # ellipse along x with semi-axes 1.5, 0.5: centre and the two ring pixels at (+-1, 0)
    assert c["core"][0] == pytest.approx((8 + 4 + 1) / size, rel=1e-15)
    # width 0: core is 0 (ctapipe skips the ellipse); a wider pixel width takes in the ring
    h0 = dict(h, width=np.zeros(1))
    c = concentration_parameters(x, y, np.full(7, 1.01), image, mask, h0)
    assert c["core"][0] == 0 and c["cog"][0] == 1
    # failed Hillas (NaN intensity): nothing
    hn = dict(h, intensity=np.full(1, np.nan))
    assert all(np.isnan(v[0]) for v in concentration_parameters(x, y, np.ones(7), image, mask, hn).values())


def test_morphology_by_hand():
    n = 80
    labels = np.zeros((2, n), np.int32)
    labels[0, [3]] = 1                  # small (1 pixel)
    labels[0, [10, 11]] = 2             # small (2)
    labels[0, [20, 21, 22]] = 3         # medium (3)
    labels[0, 25:76] = 5                # large (51 pixels), label 4 unused
    m = morphology_parameters(labels, np.array([4, 0], np.int32))
    assert m["n_pixels"].tolist() == [57, 0]
    assert m["n_islands"].tolist() == [4, 0]
    assert m["n_small_islands"].tolist() == [2, 0]
    assert m["n_medium_islands"].tolist() == [1, 0]
    assert m["n_large_islands"].tolist() == [1, 0]
    labels[0, 25] = 0  # exactly 50 pixels: medium
    assert morphology_parameters(labels, np.array([4, 0], np.int32))["n_medium_islands"][0] == 2
    with pytest.raises(ValueError):
        morphology_parameters(labels - 1, np.array([4, 0], np.int32))


def test_statistics_by_hand():
    values = f32([1, 2, 3, 4, 100], [5, 5, 5, 0, 0])
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
    s = descriptive_statistics(values, mask)
    assert s["max"][0] == 4 and s["min"][0] == 1 and s["mean"][0] == 2.5
    assert s["std"][0] == np.float32(np.sqrt(1.25))
    assert s["skewness"][0] == pytest.approx(0, abs=1e-7)
    # Fisher kurtosis of 1..4: <z^4> = 2.5625 / 1.5625, minus 3
    assert s["kurtosis"][0] == pytest.approx(2.5625 / 1.5625 - 3, rel=1e-6)
    # constant values: std 0, skewness and kurtosis 0/0
    assert s["std"][1] == 0 and np.isnan(s["skewness"][1]) and np.isnan(s["kurtosis"][1])
    empty = descriptive_statistics(values, np.zeros_like(mask))
    assert all(np.isnan(v).all() for v in empty.values())


def line_event(x, t, image=None):
    """One image whose longitudinal coordinate is exactly x (psi = 0, cog at the origin)."""
    n = len(x)
    h = dict(fov_lon=np.zeros(1), fov_lat=np.zeros(1), psi=np.zeros(1))
    image = np.ones((1, n), np.float32) if image is None else image
    return (np.asarray(x, float), np.zeros(n), image, np.asarray(t, np.float32)[None], np.ones((1, n), bool), h)


def test_timing_exact_line_and_outliers_by_hand():
    x = np.linspace(-1, 1, 20)
    t = (3 + 8 * x).astype(np.float32)
    res = timing_parameters(*line_event(x, t))
    assert res["slope"][0] == pytest.approx(8, rel=1e-5) and res["intercept"][0] == pytest.approx(3, rel=1e-5)
    assert res["deviation"][0] == pytest.approx(0, abs=1e-5)
    # 2 outliers of 20 (k = 17 points kept): the LTS fit ignores them; the deviation does not
    t_out = t.copy()
    t_out[[4, 15]] += np.float32([20, -30])
    res = timing_parameters(*line_event(x, t_out))
    line = 3 + 8 * x
    expected_dev = np.sqrt(np.mean((line - t_out.astype(float)) ** 2))
    assert res["slope"][0] == pytest.approx(8, rel=1e-5) and res["intercept"][0] == pytest.approx(3, rel=1e-5)
    assert res["deviation"][0] == pytest.approx(expected_dev, rel=1e-5)


def test_timing_degenerate():
    # 2 points: the 1-point C-step fits are singular -> NaN (as ctapipe); negative pixel -> NaN
    res = timing_parameters(*line_event([0.0, 1.0], [1.0, 2.0]))
    assert all(np.isnan(v[0]) for v in res.values())
    res = timing_parameters(*line_event([0.0, 1.0, 2.0, 3.0], [1, 2, 3, 4], image=f32([1, -1, 1, 1])))
    assert all(np.isnan(v[0]) for v in res.values())
    # a non-finite peak time is left out of the fit but makes the deviation NaN (ctapipe's rmse)
    x = np.linspace(-1, 1, 12)
    t = (5 - 2 * x).astype(np.float32)
    t[3] = np.nan
    res = timing_parameters(*line_event(x, t))
    assert res["slope"][0] == pytest.approx(-2, rel=1e-5) and np.isnan(res["deviation"][0])
    # NaN psi (point-like Hillas) -> NaN
    args = list(line_event(x, t))
    args[5] = dict(args[5], psi=np.full(1, np.nan))
    assert all(np.isnan(v[0]) for v in timing_parameters(*args).values())


# --------------------------------------------------- LTS against ctapipe's algorithm
_nb_argsort = njit(lambda a: np.argsort(a))  # ctapipe's C-steps run under numba


def ctapipe_lts(x, y, starts, rel=0.85, max_it=20, eps=1e-12):
    """Line-by-line transcription of ctapipe 0.28's ``_lts_linear_regression`` with given
    starting pairs (numpy linear algebra, numba's argsort)."""
    X = np.column_stack([x, np.ones_like(x)])
    k = np.int64(rel * len(x))

    def linreg(Xs, ys):
        mat = Xs.T @ Xs
        if np.linalg.det(mat) < 2 * np.finfo(np.float64).eps:
            return np.full(2, np.nan)
        return np.linalg.inv(mat) @ Xs.T @ ys

    def rss(Xs, ys, b):
        return np.sum((ys - (Xs[:, 0] * b[0] + b[1])) ** 2)

    best_b, best_e = np.full(2, np.nan), np.inf
    for i0, i1 in starts:
        s = np.array([i0, i1])
        b = linreg(X[s], y[s])
        if np.isnan(b[0]):
            continue
        err = rss(X[s], y[s], b)
        for _ in range(max_it):
            s = _nb_argsort((y - (X[:, 0] * b[0] + b[1])) ** 2)[:k]
            b = linreg(X[s], y[s])
            last, err = err, rss(X[s], y[s], b)
            if abs(last - err) < eps:
                break
        if err < best_e:
            best_e, best_b = err, b.copy()
    return best_b


def test_lts_matches_ctapipe_algorithm_on_random_data():
    rng = np.random.default_rng(11)
    mismatches = 0
    cases = 0
    for trial in range(600):
        n = int(rng.integers(4, 160))
        x = rng.uniform(-0.8, 0.8, n)
        y = 15 + rng.uniform(-20, 20) * x + rng.normal(0, rng.uniform(0.1, 2), n)
        n_out = int(rng.integers(0, n // 2 + 1))
        y[rng.choice(n, n_out, replace=False)] = rng.uniform(0, 40, n_out)
        y = y.astype(np.float32)
        samples = int(rng.integers(1, 9))
        pairs = np.array([rng.choice(n, 2, replace=False) for _ in range(samples)])
        ref = ctapipe_lts(x, y.astype(float), pairs)
        got = _timing_parameters_with_pairs(*line_event(x, y), pairs[None])
        if int(0.85 * n) <= 2:
            continue  # every 2-point subset fits exactly: the winner is rounding noise
        cases += 1
        mismatches += not np.allclose([got["slope"][0], got["intercept"][0]], ref, rtol=1e-9, atol=1e-9,
                                      equal_nan=True)
    assert cases > 500 and mismatches == 0


def test_lts_degenerate_c_steps_follow_ctapipe():
    # 17 of 20 points share x = 0: 85 % subsets are singular -> NaN fits, then numba's argsort
    # order of an all-NaN array picks the next subset, as in ctapipe
    rng = np.random.default_rng(3)
    for trial in range(40):
        x = np.r_[np.zeros(17), rng.uniform(-1, 1, 3)]
        y = rng.uniform(0, 10, 20).astype(np.float32)
        pairs = np.array([[17, 18], [0, 19], [18, 19], [1, 2]])[rng.permutation(4)][:3]
        ref = ctapipe_lts(x, y.astype(float), pairs)
        got = _timing_parameters_with_pairs(*line_event(x, y), pairs[None])
        np.testing.assert_allclose([got["slope"][0], got["intercept"][0]], ref, rtol=1e-9, atol=1e-9)


def test_timing_result_depends_on_the_image_only():
    ref = load_reference()
    args = kernel_inputs(ref)
    pix_x, pix_y, _, image, peak_time, mask = args
    h = hillas_parameters(pix_x, pix_y, image, mask, pix_area=ref["pix_area"])
    batch = timing_parameters(pix_x, pix_y, image, peak_time, mask, h)
    order = np.random.default_rng(0).permutation(len(image))
    perm = timing_parameters(pix_x, pix_y, image[order], peak_time[order], mask[order], {k: v[order] for k, v in h.items()})
    for key in batch:
        np.testing.assert_array_equal(perm[key], batch[key][order])
    for e in (0, 7, 50):
        one = timing_parameters(pix_x, pix_y, image[e:e + 1], peak_time[e:e + 1], mask[e:e + 1],
                                {k: v[e:e + 1] for k, v in h.items()})
        for k in batch:
            np.testing.assert_array_equal(one[k], batch[k][e:e + 1])
    # other starting pairs: the same optimum for most images, not for all
    other_seed = timing_parameters(pix_x, pix_y, image, peak_time, mask, h, seed=1)
    same = np.isclose(other_seed["slope"], batch["slope"], rtol=1e-4, atol=0)
    assert 0.7 < same[np.isfinite(batch["slope"])].mean() < 1


# -------------------------------------------------------------- jitted vs .py_func
def random_batch(n_ev=12, n_pix=150, seed=0):
    rng = np.random.default_rng(seed)
    pix_x = rng.uniform(-2, 2, n_pix)
    pix_y = rng.uniform(-2, 2, n_pix)
    image = rng.gamma(1.5, 8, (n_ev, n_pix)).astype(np.float32)
    mask = rng.uniform(size=(n_ev, n_pix)) < rng.uniform(0.05, 0.6, (n_ev, 1))
    mask[0] = False
    mask[1, :] = False
    mask[1, 5] = True
    peak_time = (10 + 5 * pix_x + rng.normal(0, 2, (n_ev, n_pix))).astype(np.float32)
    return pix_x, pix_y, image, peak_time, mask


def test_jitted_bodies_match_py_func(monkeypatch):
    pix_x, pix_y, image, peak_time, mask = random_batch()
    n_pix = len(pix_x)
    area = np.full(n_pix, 0.01)
    width = np.full(n_pix, 0.3)
    b1 = np.arange(n_pix) % 5 == 0
    b2 = np.arange(n_pix) % 3 == 0
    labels = np.where(mask, np.arange(n_pix) % 9 + 1, 0).astype(np.int32)
    n_isl = labels.max(axis=1).astype(np.int32)

    def run_all():
        h = hillas_parameters(pix_x, pix_y, image, mask, pix_area=area)
        out = {"h_" + k: v for k, v in h.items()}
        out.update({"l_" + k: v for k, v in leakage_parameters(image, mask, b1, b2).items()})
        out.update({"c_" + k: v for k, v in concentration_parameters(pix_x, pix_y, width, image, mask, h).items()})
        out.update({"m_" + k: v for k, v in morphology_parameters(labels, n_isl).items()})
        out.update({"s_" + k: v for k, v in descriptive_statistics(peak_time, mask).items()})
        out.update({"t_" + k: v for k, v in timing_parameters(pix_x, pix_y, image, peak_time, mask, h).items()})
        return out

    jitted = run_all()
    for mod, names in ((hillas_mod, ["_hillas", "_masked_pixels"]),
                       (params_mod, ["_leakage", "_concentration", "_morphology", "_statistics",
                                     "_div_f32"]),
                       (timing_mod, ["_timing", "_lts", "_full_select", "_kth_smallest", "_swap_candidates",
                                     "_residual_pass", "_solve_normal_equations"])):
        for name in names:
            monkeypatch.setattr(mod, name, getattr(mod, name).py_func)
    # the wrappers' module-level references are what the py_func bodies look up
    monkeypatch.setattr(params_mod, "_masked_pixels", hillas_mod._masked_pixels)
    monkeypatch.setattr(timing_mod, "_masked_pixels", hillas_mod._masked_pixels)
    python = run_all()
    for key in jitted:
        np.testing.assert_allclose(python[key], jitted[key], rtol=1e-13, atol=1e-13, equal_nan=True, err_msg=key)
    assert np.isfinite(jitted["t_slope"]).sum() >= 8 and np.isnan(jitted["h_intensity"][0])


def test_pairwise_sum_is_numpys():
    rng = np.random.default_rng(2)
    for n in list(range(0, 300)) + [1000, 1855, 4000, 11328, 2_000_003]:
        a = (rng.gamma(1.3, 30, n) * rng.choice([-1, 1], n)).astype(np.float32)
        assert params_mod._add_reduce(a, 0, n) == a.sum(), n


def test_wrappers_check_inputs():
    pix_x, pix_y, image, peak_time, mask = random_batch(3, 20)
    with pytest.raises(ValueError, match="pix_area"):
        hillas_parameters(pix_x, pix_y, image, mask)
    with pytest.raises(ValueError):
        hillas_parameters(pix_x, pix_y[:-1], image, mask, pix_area=np.ones(20))
    with pytest.raises(ValueError):
        hillas_parameters(pix_x, pix_y, image.astype(np.float64), mask, pix_area=np.ones(20))
    with pytest.raises(ValueError):
        hillas_parameters(pix_x, pix_y, image, mask.astype(np.uint8), pix_area=np.ones(20))
    with pytest.raises(ValueError):
        hillas_parameters(pix_x, pix_y, image, mask, np.ones(2, bool), pix_area=np.ones(20))
    with pytest.raises(ValueError):
        leakage_parameters(image, mask, np.ones(19, bool), np.ones(20, bool))
    with pytest.raises(ValueError, match="lacks"):
        concentration_parameters(pix_x, pix_y, np.ones(20), image, mask, {"fov_lon": np.zeros(3)})
    with pytest.raises(ValueError):
        descriptive_statistics(image[0], mask[0])
    with pytest.raises(ValueError):
        morphology_parameters(np.zeros((3, 20), np.float32), np.zeros(3, np.int32))
    h = hillas_parameters(pix_x, pix_y, image, mask, pix_area=np.ones(20))
    with pytest.raises(ValueError):
        timing_parameters(pix_x, pix_y, image, peak_time[:, :5], mask, h)
    with pytest.raises(ValueError):
        _timing_parameters_with_pairs(pix_x, pix_y, image, peak_time, mask, h, np.zeros((3, 5, 3), int))


# ------------------------------------------------------------------ ctapipe golden
def load_reference():
    if not REF.exists():
        raise AssertionError(f"missing {REF}: run tests/reference/make_parameters_reference.py")
    return dict(np.load(REF))


def kernel_inputs(ref):
    """Inputs of the reference images; pixels outside the mask hold NaN / inf, which no
    kernel may look at."""
    n_pix = int(ref["n_pixels"])
    mask = np.unpackbits(ref["mask"], axis=1, count=n_pix).astype(bool)
    image = np.where(mask, ref["image"], np.float32(np.nan))
    peak_time = np.where(mask, ref["peak_time"], np.float32(np.inf))
    return ref["pix_x"], ref["pix_y"], n_pix, image, peak_time, mask


def assert_matches(got, ref, prefix, rtol=RTOL, rows=slice(None)):
    for key, value in got.items():
        expected = ref["ref_" + prefix + key][rows]
        value = value[rows]
        if key == "psi":
            # psi is only defined modulo 180 deg
            diff = (value - expected + 90) % 180 - 90
            both_nan = np.isnan(value) & np.isnan(expected)
            ok = both_nan | (np.abs(diff) <= ATOL + rtol * np.abs(expected))
        else:
            ok = np.isclose(value, expected, rtol=rtol, atol=ATOL) | (np.isnan(value) & np.isnan(expected))
        assert ok.all(), f"{prefix}{key}: events {np.flatnonzero(~ok)} {value[~ok]} != {expected[~ok]}"


@pytest.fixture(scope="module")
def golden():
    ref = load_reference()
    pix_x, pix_y, n_pix, image, peak_time, mask = kernel_inputs(ref)
    h = hillas_parameters(pix_x, pix_y, image, mask, pix_area=ref["pix_area"])
    return ref, (pix_x, pix_y, n_pix, image, peak_time, mask), h


def test_golden_hillas(golden):
    ref, (pix_x, pix_y, n_pix, image, peak_time, mask), h = golden
    assert set(h) == set(HILLAS_KEYS)
    assert_matches(h, ref, "hillas_")
    # the reference covers the degenerate cases: NaN everywhere, NaN psi, width 0
    assert np.isnan(ref["ref_hillas_intensity"]).sum() >= 3
    assert (np.isnan(ref["ref_hillas_psi"]) & np.isfinite(ref["ref_hillas_intensity"])).sum() >= 1
    assert (ref["ref_hillas_width"] == 0).sum() >= 3


def test_golden_leakage_concentration_morphology_statistics(golden):
    ref, (pix_x, pix_y, n_pix, image, peak_time, mask), h = golden
    b1 = np.unpackbits(ref["border_1"], count=n_pix).astype(bool)
    b2 = np.unpackbits(ref["border_2"], count=n_pix).astype(bool)
    assert_matches(leakage_parameters(image, mask, b1, b2), ref, "leakage_")
    assert_matches(concentration_parameters(pix_x, pix_y, ref["pixel_width"], image, mask, h), ref, "concentration_")
    assert_matches(morphology_parameters(ref["labels"].astype(np.int32), ref["n_islands"]), ref, "morphology_")
    # ctapipe's float32 statistics are reproduced bit for bit
    assert_matches(descriptive_statistics(image, mask), ref, "intensity_", rtol=0)
    assert_matches(descriptive_statistics(peak_time, mask), ref, "peak_time_", rtol=0)
    assert (ref["ref_leakage_intensity_width_2"] > 0.2).sum() >= 3  # images at the camera edge
    assert (ref["ref_morphology_n_islands"] > 1).sum() >= 3 and (ref["ref_morphology_n_large_islands"] > 0).sum() >= 3


def test_golden_labels_are_connected_components(golden):
    """The stored ctapipe labels agree with a plain BFS over the mask (neighbours by distance)."""
    ref, (pix_x, pix_y, n_pix, image, peak_time, mask), h = golden
    d = np.hypot(pix_x[:, None] - pix_x[None], pix_y[:, None] - pix_y[None])
    nb = (d < 1.4 * np.sort(d, axis=1)[:, 1:2]) & (d > 0)
    for e in range(0, len(mask), 9):
        labels = np.zeros(n_pix, int)
        current = 0
        for p in np.flatnonzero(mask[e]):
            if labels[p]:
                continue
            current += 1
            todo = [p]
            labels[p] = current
            while todo:
                q = todo.pop()
                for r in np.flatnonzero(nb[q] & mask[e] & (labels == 0)):
                    labels[r] = current
                    todo.append(r)
        assert current == ref["n_islands"][e]
        mine = morphology_parameters(labels[None].astype(np.int32), np.array([current], np.int32))
        for key, value in mine.items():
            assert value[0] == ref["ref_morphology_" + key][e], (e, key)


def test_golden_quality_query_selection(golden):
    ref, (pix_x, pix_y, n_pix, image, peak_time, mask), _ = golden
    sel = ref["quality"]
    assert (~sel).sum() >= 3
    h = hillas_parameters(pix_x, pix_y, image, mask, sel, pix_area=ref["pix_area"])
    assert_matches(h, ref, "hillas_", rows=sel)
    assert all(np.isnan(v[~sel]).all() for v in h.values())
    t = timing_parameters(pix_x, pix_y, image, peak_time, mask, h, sel)
    assert all(np.isnan(v[~sel]).all() for v in t.values())


def test_golden_timing_with_ctapipes_starting_pairs(golden):
    ref, (pix_x, pix_y, n_pix, image, peak_time, mask), h = golden
    pairs = ref["ref_timing_pairs"]
    t = _timing_parameters_with_pairs(pix_x, pix_y, image, peak_time, mask, h, pairs)
    n_fit = mask.sum(axis=1)
    # with 3 points the LTS keeps 2: every pair fits exactly and ctapipe's pick among the
    # zero-error fits is rounding noise; check those fit two points exactly instead
    tie = (n_fit == 3) & np.isfinite(ref["ref_timing_slope"])
    assert_matches(t, ref, "timing_", rows=~tie)
    assert np.isfinite(ref["ref_timing_slope"][~tie]).sum() >= 95
    for e in np.flatnonzero(tie):
        m = mask[e]
        psi = np.deg2rad(h["psi"][e])
        lon = (pix_x[m] - h["fov_lon"][e]) * np.cos(psi) + (pix_y[m] - h["fov_lat"][e]) * np.sin(psi)
        resid = np.abs(lon * t["slope"][e] + t["intercept"][e] - peak_time[e, m])
        assert np.sum(resid < 1e-9 * (1 + np.abs(peak_time[e, m]))) >= 2


def test_golden_timing_default_against_ctapipe_default(golden):
    """dvp's own starting pairs vs ctapipe's history-dependent ones: most images have a
    clear optimum that both find (ctapipe against itself with other RNG states: 83-88 %)."""
    ref, (pix_x, pix_y, n_pix, image, peak_time, mask), h = golden
    t = timing_parameters(pix_x, pix_y, image, peak_time, mask, h)
    same = {k: np.isclose(t[k], ref["ref_timing_" + k], rtol=1e-4, atol=0) | (np.isnan(t[k]) & np.isnan(ref["ref_timing_" + k]))
            for k in t}
    fraction = np.mean(same["slope"] & same["intercept"] & same["deviation"])
    print(f"dvp default LTS == ctapipe default (rtol 1e-4): {fraction:.3f}")
    assert fraction >= 0.75
