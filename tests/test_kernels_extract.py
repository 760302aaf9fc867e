"""Tests of dvp.kernels.extract: hand-worked cases, jit vs py_func, ctapipe 0.28 references."""
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dvp.kernels import extract as ex

REF = Path(__file__).parent / "reference" / "kernels" / "extract.npz"
LSTCAM = Path(__file__).parent / "reference" / "instrument" / "calib_events.camera_LSTCam.parquet"
RTOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    d = np.load(REF)
    return {k: d[k] for k in d.files}


def camera_csr(path):
    nb = pq.read_table(path, columns=["neighbors"]).column("neighbors").to_pylist()
    indptr = np.zeros(len(nb) + 1, np.int32)
    indptr[1:] = np.cumsum([len(x) for x in nb])
    return indptr, np.concatenate([np.asarray(x, np.int32) for x in nb])


@pytest.fixture(scope="module")
def lstcam_csr():
    return camera_csr(LSTCAM)


def csr(neighbors):
    indptr = np.zeros(len(neighbors) + 1, np.int32)
    indptr[1:] = np.cumsum([len(n) for n in neighbors])
    return indptr, np.array([j for n in neighbors for j in sorted(n)], np.int32)


# 7-pixel hexagon: centre 0, ring 1..6 (ring neighbours adjacent cyclically)
HEX = csr([[1, 2, 3, 4, 5, 6]] + [[0, 1 + (i - 1) % 6, 1 + (i + 1) % 6] for i in range(6)])
# 3 pixels in a row: 0 - 1 - 2
ROW = csr([[1], [0, 2], [1]])


def f32(x):
    return np.asarray(x, np.float32)


def window_expect(row, start, end, peak, rate=1.0):
    """Hand formula of ctapipe's extract_around_peak (float64 sums, float32 rounding)."""
    start, end = max(start, 0), min(end, len(row))
    v = np.asarray(row[start:end], np.float64)
    idx = np.arange(start, end)
    pos = v > 0
    t = np.float32(np.sum(v[pos] * idx[pos]) / np.sum(v[pos])) if pos.any() else np.float32(peak)
    return np.float32(np.sum(v)), np.float32(np.float64(t) / rate)


# ------------------------------------------------------------------ hand-worked answers


def test_fixed_window_hand():
    row = f32([0, 1, 2, 4, -1, 3, 0, 0, 0, 5])
    wf = row[None, None, :]
    c, t = ex.fixed_window_sum(wf, None, None, 2.0, peak_index=3, window_width=4, window_shift=2)
    # window samples 1..4: 1 + 2 + 4 - 1 = 6; time = (1*1 + 2*2 + 4*3) / 7 samples / 2 GHz
    assert c[0, 0] == np.float32(6.0)
    assert t[0, 0] == np.float32(np.float32(17 / 7) / 2.0)


def test_window_clipped_at_both_edges_and_time_fallback():
    row = f32([3, 1, -2, -2, -2, -2, -2, 1])
    wf = np.stack([row, -np.abs(row)])[None]
    # window starts before the readout: peak 0, shift 3 -> samples 0..3
    c, t = ex.fixed_window_sum(wf, None, None, 1.0, peak_index=0, window_width=7, window_shift=3)
    assert c[0, 0] == np.float32(3 + 1 - 2 - 2)  # samples 0..3 only
    assert t[0, 0] == np.float32(1 / 4)  # (3*0 + 1*1) / 4
    # no positive sample: time is the peak index (in ns)
    assert t[0, 1] == np.float32(0.0)
    c, t = ex.fixed_window_sum(wf, None, None, 0.5, peak_index=6, window_width=7, window_shift=0)
    assert c[0, 0] == np.float32(-2 + 1)  # samples 6, 7 only
    assert t[0, 0] == np.float32(7 / 0.5)
    assert t[0, 1] == np.float32(6 / 0.5)


def test_full_waveform_sum_hand():
    wf = f32([[[1, -1, 2, 0.5]], [[-1, -2, -3, -4]]])
    c, t = ex.full_waveform_sum(wf, 1.0)
    np.testing.assert_array_equal(c[:, 0], f32([2.5, -10]))
    assert t[0, 0] == np.float32((0 * 1 + 2 * 2 + 3 * 0.5) / 3.5)
    assert t[1, 0] == 0.0  # no positive sample: peak index 0


def test_local_peak_and_gain_correction_hand():
    wf = np.zeros((1, 2, 10), np.float32)
    wf[0, 0, 6] = 4.0
    wf[0, 0, 8] = 4.0  # tie: the first maximum wins
    wf[0, 1, 2] = 2.0
    wf[0, 1, 3] = 6.0
    corr = np.array([1.5, 3.0])
    c, t = ex.local_peak_window_sum(wf, np.array([[0, 1]], np.int8), corr, 1.0, window_width=3, window_shift=1)
    # pixel 0: peak 6 -> samples 5..7 = 4, high gain correction 1.5
    assert c[0, 0] == np.float32(4 * 1.5) and t[0, 0] == np.float32(6.0)
    # pixel 1: peak 3 -> samples 2..4 = 8, low gain correction 3
    assert c[0, 1] == np.float32(8 * 3.0) and t[0, 1] == np.float32((2 * 2 + 6 * 3) / 8)


def test_global_peak_hand_and_broken_excluded():
    wf = np.zeros((1, 3, 10), np.float32)
    wf[0, 0, 2] = 1.0
    wf[0, 1, 2] = 1.0
    wf[0, 2, 7] = 5.0  # alone it dominates the average
    c, t = ex.global_peak_window_sum(wf, None, None, 1.0, window_width=1, window_shift=0)
    assert np.all(t == 7.0)  # mean waveform peaks at 7 (5/3 > 2/3)
    broken = np.array([[False, False, True]])
    c, t = ex.global_peak_window_sum(wf, None, None, 1.0, window_width=1, window_shift=0, broken_pixels=broken)
    np.testing.assert_array_equal(c[0], f32([1, 1, 0]))  # peak 2 from pixels 0 and 1
    # the brightest third (pixel 2) alone decides
    c, t = ex.global_peak_window_sum(wf, None, None, 1.0, window_width=1, window_shift=0, pixel_fraction=0.4)
    np.testing.assert_array_equal(c[0], f32([0, 0, 5]))


def test_sliding_window_hand():
    wf = f32([[[1, 0, 0, 3, 3, -1, 2, 0]]])
    c, t = ex.sliding_window_max_sum(wf, None, np.array([2.0, 1.0]), 1.0, window_width=2)
    # best pair: samples 3, 4 (sum 6); correction 2 for gain 0
    assert c[0, 0] == np.float32(12.0) and t[0, 0] == np.float32(3.5)
    wf = f32([[[-1, -1, -3, -1]]])
    c, t = ex.sliding_window_max_sum(wf, None, None, 2.0, window_width=2)
    # best pair: samples 0, 1 (-2); no positive sample: window centre 0 + 0.5 * 2 = 1
    assert c[0, 0] == np.float32(-2.0) and t[0, 0] == np.float32(1 / 2.0)


def test_neighbor_peak_hand_hexagon():
    indptr, indices = HEX
    wf = np.zeros((1, 7, 12), np.float32)
    wf[0, 0, 2] = 10.0  # the centre's own pulse is early ...
    wf[0, 1:, 8] = 1.0  # ... its neighbours all peak at 8
    wf[0, 0, 8] = 0.5
    c, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0, window_width=3, window_shift=1)
    # centre: neighbours' peak 8 -> samples 7..9 = 0.5
    assert c[0, 0] == np.float32(0.5) and t[0, 0] == np.float32(8.0)
    # ring pixel: neighbour sum = centre (peak 2) + two ring pixels (2 at 8) -> argmax 2 (10 > 2.5)
    assert t[0, 1] == np.float32(2.0) and c[0, 1] == 0.0
    # local_weight 1 does not change the centre (10 + 0 at sample 2 vs 6 + 0.5 at 8 -> 2)
    c, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0, 3, 1, local_weight=1)
    assert t[0, 0] == np.float32(2.0) and c[0, 0] == np.float32(10.0)
    # broken centre: ring pixels ignore it -> their neighbours peak at 8
    broken = np.zeros((1, 7), bool)
    broken[0, 0] = True
    c, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0, 3, 1, broken_pixels=broken)
    assert np.all(t[0, 1:] == np.float32(8.0)) and np.all(c[0, 1:] == np.float32(1.0))


def test_neighbor_peak_ties_negative_and_zero_first_index():
    indptr, indices = ROW
    wf = np.zeros((1, 3, 8), np.float32)
    wf[0, 1] = f32([-5, -3, -1, -4, -1, -2, -7, -1])  # pixels 0, 2 see only this: max -1 first at 2
    c, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0, 1, 0)
    assert t[0, 0] == 2.0 and t[0, 2] == 2.0
    assert t[0, 1] == 0.0  # neighbours all zero: first sample
    wf[0, 1, 5] = -0.0
    wf[0, 1, 4] = 0.0
    c, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0, 1, 0)
    assert t[0, 0] == 4.0  # +0 == -0: the first of them


def test_nan_gives_first_nan_like_numba_argmax(lstcam_csr):
    indptr, indices = lstcam_csr
    wf = np.random.default_rng(1).normal(size=(1, 1855, 16)).astype(np.float32)
    j = indices[indptr[100]]  # a neighbour of pixel 100
    wf[0, j, 9] = np.nan
    wf[0, j, 12] = np.nan
    wf[0, 100] = 0.0  # no positive sample: the time is the peak index
    _, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0)
    assert t[0, 100] == 9.0


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_baseline_subtraction_hand_and_numpy():
    wf = np.zeros((1, 1, 12), np.float32)
    wf[0, 0, :4] = 2.0
    wf[0, 0, 6] = 7.0
    out = ex.subtract_baseline(wf, 0, 4)
    np.testing.assert_array_equal(out[0, 0], wf[0, 0] - 2.0)
    # numpy's float32 mean (pairwise summation) bit for bit, slices as python slices
    rng = np.random.default_rng(3)
    wf = (rng.normal(size=(3, 5, 300)) * 10 ** rng.uniform(-2, 3, size=(3, 5, 1))).astype(np.float32)
    for a, b in [(0, 10), (3, 250), (-20, None), (0, 300), (5, 5), (200, 1000)]:
        expect = wf - np.mean(wf[..., a:b], axis=-1)[..., None]
        got = ex.subtract_baseline(wf, a, 300 if b is None else b)
        np.testing.assert_array_equal(got, expect)


def test_integration_correction_hand():
    # box pulses sampled at 1 GHz; 4 ns wide in gain 0, 2 ns wide in gain 1
    pulse = np.array([[0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]], float)
    # a 2-sample window from the (first) maximum holds half of the wide pulse, all of the narrow one
    np.testing.assert_allclose(ex.integration_correction(pulse, 1.0, 1.0, 2, 0), [2.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(ex.integration_correction(pulse, 1.0, 1.0, 3, 0), [1 / 0.75, 1.0], rtol=1e-12)
    # the shift moves the window start to before the peak (clipped at 0)
    np.testing.assert_allclose(ex.integration_correction(pulse, 1.0, 1.0, 2, 1), [4.0, 2.0], rtol=1e-12)
    # np.histogram puts the last point into the last bin: [6, 7] holds samples 6 and 7
    late = np.array([[0, 0, 0, 0, 0, 0, 1, 1.0]])
    np.testing.assert_allclose(ex.integration_correction(late, 1.0, 1.0, 1, 0), [1.0], rtol=1e-12)
    # reference pulse sampled 4x finer than the camera: the same box at 0.25 ns
    fine = np.repeat(pulse, 4, axis=1)
    np.testing.assert_allclose(ex.integration_correction(fine, 0.25, 1.0, 2, 0), [2.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(ex.sliding_window_correction(pulse, 1.0, 1.0, 2), [2.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(ex.sliding_window_correction(fine, 0.25, 1.0, 1), [4.0, 2.0], rtol=1e-12)


def test_correction_applied_per_selected_gain(ref):
    """apply_integration_correction and the per-pixel gain indexing, explicitly."""
    wf = ref["waveforms"].astype(np.float32)
    gain = ref["selected_gain_channel"]
    assert gain.any() and not gain.all()
    kw = common_kwargs(ref)
    raw, t_raw = ex.extract("NeighborPeakWindowSum", wf, gain, apply_integration_correction=False, **kw)
    cor, t_cor = ex.extract("NeighborPeakWindowSum", wf, gain, **kw)
    corr = ex.integration_correction(kw["reference_pulse_shape"], kw["reference_pulse_sample_width_ns"],
                                     kw["sampling_rate_ghz"], 7, 3)
    assert corr[0] != corr[1]  # the two gains' pulses differ
    np.testing.assert_array_equal(cor, (raw * corr[gain]).astype(np.float32))
    np.testing.assert_array_equal(t_cor, t_raw)
    # a swapped gain selection must give a different (wrong) image
    assert not np.array_equal(ex.extract("NeighborPeakWindowSum", wf, 1 - gain, **kw)[0], cor)


def test_neighbor_average_hand():
    indptr, indices = HEX
    img = f32([[100, 1, 2, 3, 4, 5, 6]])
    pt = f32([[50, 10, 10, 10, 10, 10, 13]])
    broken = np.zeros((1, 7), bool)
    broken[0, 0] = True
    img_in, pt_in = img.copy(), pt.copy()
    new_img, new_pt = ex.neighbor_average(img, pt, broken, indptr, indices)
    np.testing.assert_array_equal(img, img_in)  # inputs untouched
    np.testing.assert_array_equal(pt, pt_in)
    assert new_img[0, 0] == np.float32(21 / 6) and new_pt[0, 0] == np.float32(63 / 6)
    np.testing.assert_array_equal(new_img[0, 1:], img[0, 1:])
    # pixel 1 broken too: pixel 0 averages 5 neighbours, pixel 1 averages 2 and 6
    broken[0, 1] = True
    new_img, new_pt = ex.neighbor_average(img, pt, broken, indptr, indices)
    assert new_img[0, 0] == np.float32(20 / 5) and new_img[0, 1] == np.float32(4.0)
    # nobody valid around: 0
    new_img, new_pt = ex.neighbor_average(img, pt, np.ones((1, 7), bool), indptr, indices)
    assert not new_img.any() and not new_pt.any()
    # float64 images keep float64
    assert ex.neighbor_average(img.astype(np.float64), pt, broken, indptr, indices)[0].dtype == np.float64


def test_two_pass_noise_only_falls_back_to_first_pass():
    rng = np.random.default_rng(5)
    indptr, indices = HEX
    wf = rng.normal(0, 0.1, size=(2, 7, 20)).astype(np.float32)
    wf[1, 3, 10:13] = f32([2, 5, 2])  # one bright but isolated pixel
    pulse = np.array([[0, 1, 2, 1, 0.0]])
    kw = dict(pix_x=np.arange(7.0), pix_y=np.zeros(7), reference_pulse_shape=pulse,
              reference_pulse_sample_width_ns=1.0, sampling_rate_ghz=1.0)
    c2, t2, valid = ex.two_pass_window_sum(wf, None, indptr, indices, core_threshold=3.0, **kw)
    c1, t1, valid1 = ex.two_pass_window_sum(wf, None, indptr, indices, disable_second_pass=True, **kw)
    assert not valid.any() and valid1.all()
    np.testing.assert_array_equal(c2, c1)
    np.testing.assert_array_equal(t2, t1)
    # 1st pass by hand for the bright pixel: best 3-sum centred on 11 -> samples 9..13
    corr = ex.integration_correction(pulse, 1.0, 1.0, 5, 2)[0]
    s, t = window_expect(wf[1, 3], 9, 14, 11)
    assert c1[1, 3] == np.float32(np.float64(s) * corr) and t1[1, 3] == t


# ------------------------------------------------------------------ fast path == plain definition


def naive_neighbor_peaks(w, indptr, indices, local_weight, broken):
    """ctapipe's neighbor_average_maximum written with numpy, float32, CSR order."""
    n_pix = w.shape[0]
    peaks = np.empty(n_pix, np.int64)
    for p in range(n_pix):
        acc = w[p] * np.float32(local_weight)
        for j in indices[indptr[p]:indptr[p + 1]]:
            if not broken[j]:
                acc = acc + w[j]
        peaks[p] = np.argmax(acc)
    return peaks


@pytest.mark.parametrize("local_weight", [0, 1])
def test_neighbor_peak_matches_naive_on_lstcam(lstcam_csr, local_weight):
    """All neighbour counts (3-6 on LSTCam), broken pixels, negative maxima, ties."""
    indptr, indices = lstcam_csr
    rng = np.random.default_rng(11)
    wf = rng.normal(0, 1, size=(3, 1855, 40)).astype(np.float32)
    wf[1] -= 5.0  # all-negative sums: the exact path
    wf[2] = np.round(wf[2])  # many ties
    broken = rng.random((3, 1855)) < 0.02
    corr = np.array([1.25, 2.5])
    gain = (rng.random((3, 1855)) < 0.3).astype(np.int8)
    c, t = ex.neighbor_peak_window_sum(wf, gain, indptr, indices, corr, 1.024, local_weight=local_weight,
                                       broken_pixels=broken)
    for e in range(3):
        peaks = naive_neighbor_peaks(wf[e], indptr, indices, local_weight, broken[e])
        for p in range(0, 1855, 7):
            s, tt = window_expect(wf[e, p], peaks[p] - 3, peaks[p] + 4, peaks[p], 1.024)
            assert c[e, p] == np.float32(np.float64(s) * corr[gain[e, p]])
            assert t[e, p] == tt
    # one event at a time gives the same as the batch (prefetching, scratch reuse)
    for e in range(3):
        c1, t1 = ex.neighbor_peak_window_sum(wf[e:e + 1], gain[e:e + 1], indptr, indices, corr, 1.024,
                                             local_weight=local_weight, broken_pixels=broken[e:e + 1])
        np.testing.assert_array_equal(c1[0], c[e])
        np.testing.assert_array_equal(t1[0], t[e])


def test_neighbor_peak_matches_naive_on_square_pixels():
    """CHEC: 2-4 neighbours per pixel (the weighted path for corners)."""
    indptr, indices = camera_csr(LSTCAM.with_name("calib_events.camera_CHEC.parquet"))
    assert set(np.diff(indptr)) >= {2, 3, 4}
    rng = np.random.default_rng(12)
    wf = rng.normal(0, 1, size=(2, len(indptr) - 1, 24)).astype(np.float32)
    broken = rng.random(wf.shape[:2]) < 0.01
    c, t = ex.neighbor_peak_window_sum(wf, None, indptr, indices, None, 1.0, 5, 2, broken_pixels=broken)
    for e in range(2):
        peaks = naive_neighbor_peaks(wf[e], indptr, indices, 0, broken[e])
        for p in range(0, wf.shape[1], 5):
            assert (c[e, p], t[e, p]) == window_expect(wf[e, p], peaks[p] - 2, peaks[p] + 3, peaks[p])


def adversarial_rows(rng, n_pix, n_s):
    """Events whose neighbour sums have ties, all-negative rows, +-0, NaN, +-inf."""
    events = []
    w = np.round(rng.normal(0, 1.5, (n_pix, n_s))).astype(np.float32)  # many ties
    events.append(w)
    events.append((-np.abs(rng.normal(0, 1, (n_pix, n_s))) - 1).astype(np.float32))  # negative maxima
    z = np.zeros((n_pix, n_s), np.float32)
    z[rng.random((n_pix, n_s)) < 0.5] = -0.0  # all +-0: the first sample wins
    neg = rng.random(n_pix) < 0.5
    z[neg] -= np.float32(1.0) * (rng.random((neg.sum(), n_s)) < 0.7)  # maxima +-0 among negatives
    events.append(z)
    x = rng.normal(0, 1, (n_pix, n_s)).astype(np.float32)
    special = rng.random((n_pix, n_s))
    x[special < 0.01] = np.nan
    x[(special >= 0.01) & (special < 0.02)] = np.inf
    x[(special >= 0.02) & (special < 0.03)] = -np.inf
    x[(special >= 0.03) & (special < 0.05)] = 0.0
    events.append(x)
    big = rng.normal(0, 1, (n_pix, n_s)).astype(np.float32)
    big[:, ::3] = np.float32(3.4e38)  # sums overflow to inf (ties of inf)
    events.append(big)
    return np.stack(events)


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:overflow encountered")
@pytest.mark.parametrize("local_weight", [0, 1, 2])
def test_neighbor_peaks_adversarial_vs_numpy_argmax(local_weight):
    """Every path of `_neighbor_peaks` (3..6 neighbours, the weighted path for <3, >6 and
    broken neighbours, the plain path for maxima <= 0 and NaN) == np.argmax of the float32
    sums in ctapipe's order, jitted and as Python."""
    rng = np.random.default_rng(5)
    n_pix, n_s = 60, 40
    counts = np.arange(n_pix) % 10  # 0..9 neighbours
    nbs = [sorted(rng.choice(np.delete(np.arange(n_pix), p), c, replace=False).tolist())
           for p, c in enumerate(counts)]
    indptr = np.zeros(n_pix + 1, np.int32)
    indptr[1:] = np.cumsum(counts)
    indices = np.array([j for nb in nbs for j in nb], np.int32)
    wf = adversarial_rows(rng, n_pix, n_s)
    n_ev = len(wf)
    broken = rng.random((n_ev, n_pix)) < 0.1
    broken[0] = False  # one event without broken pixels: has_broken False
    tptr, tind = ex._transpose_csr(indptr, indices, n_pix)
    for fn in (ex._neighbor_peaks, ex._neighbor_peaks.py_func):
        for e in range(n_ev):
            near = np.empty(n_pix, bool)
            has_broken = ex._mark_near_broken(broken, e, tptr, tind, near)
            peaks = np.full(n_pix, -1, np.int64)
            fn(wf[e], wf[(e + 1) % n_ev], True, indptr, indices, local_weight, broken, e, has_broken, near,
               np.empty(n_s, np.float32), np.empty(6, np.int64), np.empty(6, np.float32), peaks)
            expect = naive_neighbor_peaks(wf[e], indptr, indices, local_weight, broken[e])
            np.testing.assert_array_equal(peaks, expect, err_msg=f"event {e} {fn}")


def ctapipe_window(row, peak, width, shift, rate, corr):
    """ctapipe 0.28's ``extract_around_peak`` transcribed (sequential float64 sums from
    +0.0), then the integration correction and the ns conversion as `_windows_at_peaks`."""
    start, end = max(peak - shift, 0), min(peak - shift + width, len(row))
    s = num = den = 0.0
    for i in range(start, end):
        v = float(row[i])
        s += v
        if v > 0:
            num += v * i
            den += v
    t = np.float32(num / den) if den > 0 else np.float32(peak)
    return np.float32(np.float64(np.float32(s)) * corr), np.float32(np.float64(t) / rate)


def same_bits(a, b):
    """Equal values, NaN where NaN, and the same sign of zero."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.int32), b[~nan].view(np.int32)))


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:overflow encountered")
@pytest.mark.parametrize("n_s", [5, 12, 40])
def test_window_sums_vectors_vs_ctapipe_transcription(n_s):
    """The 8-pixel vector path of the default width (`_simd.window_sums8`, with its masked,
    clipped windows) and the scalar tail == ctapipe's loop, bit for bit, for peaks at every
    sample, shifts past both edges, both gains and NaN/inf/+-0 samples; jitted and as Python."""
    rng = np.random.default_rng(11)
    n_pix = 8 * 3 + 5  # three vector groups and a scalar tail
    events = adversarial_rows(rng, n_pix, n_s)
    corr = np.array([1.3, 0.7])
    for shift in (0, 3, 6, 9):
        for e, w in enumerate(events):
            peaks = rng.integers(0, n_s, n_pix).astype(np.int64)
            peaks[:3] = (0, n_s - 1, min(2, n_s - 1))
            gains = (rng.random((1, n_pix)) < 0.5).astype(np.int8)
            expect = np.array([ctapipe_window(w[p], peaks[p], 7, shift, 0.8, corr[gains[0, p]])
                               for p in range(n_pix)], np.float32)
            for fn in (ex._windows_at_peaks, ex._windows_at_peaks.py_func):
                charge, time = np.zeros((1, n_pix), np.float32), np.zeros((1, n_pix), np.float32)
                fn(w, peaks, 7, shift, 0.8, gains, corr, 0, charge, time)
                assert same_bits(charge[0], expect[:, 0]), (shift, e, fn)
                assert same_bits(time[0], expect[:, 1]), (shift, e, fn)


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:overflow encountered")
def test_window_sums8_every_width_vs_ctapipe_transcription():
    """`_simd.window_sums8` compiled for each width it accepts (1..8; the extractor uses 7)
    == ctapipe's loop, bit for bit."""
    from numba import njit

    from dvp.kernels._simd import window_sums8

    @njit
    def compiled(w, peaks, shift, gains, corr, charge, time):
        for q in range(0, w.shape[0] - 7, 8):  # the width must be a literal
            window_sums8(w, peaks, q, shift, 1, 0.8, gains, corr, charge[0], time[0])
            window_sums8(w, peaks, q, shift, 2, 0.8, gains, corr, charge[1], time[1])
            window_sums8(w, peaks, q, shift, 3, 0.8, gains, corr, charge[2], time[2])
            window_sums8(w, peaks, q, shift, 4, 0.8, gains, corr, charge[3], time[3])
            window_sums8(w, peaks, q, shift, 5, 0.8, gains, corr, charge[4], time[4])
            window_sums8(w, peaks, q, shift, 6, 0.8, gains, corr, charge[5], time[5])
            window_sums8(w, peaks, q, shift, 7, 0.8, gains, corr, charge[6], time[6])
            window_sums8(w, peaks, q, shift, 8, 0.8, gains, corr, charge[7], time[7])

    rng = np.random.default_rng(12)
    n_pix, n_s = 16, 12
    corr = np.array([1.3, 0.7])
    for w in adversarial_rows(rng, n_pix, n_s):
        for shift in (0, 2, 5):
            peaks = rng.integers(0, n_s, n_pix).astype(np.int64)
            gains = (rng.random(n_pix) < 0.5).astype(np.int8)
            charge, time = np.zeros((8, n_pix), np.float32), np.zeros((8, n_pix), np.float32)
            compiled(w, peaks, shift, gains, corr, charge, time)
            for k, width in enumerate(range(1, 9)):
                expect = np.array([ctapipe_window(w[p], peaks[p], width, shift, 0.8, corr[gains[p]])
                                   for p in range(n_pix)], np.float32)
                assert same_bits(charge[k], expect[:, 0]) and same_bits(time[k], expect[:, 1]), (width, shift)


def test_neighbor_peak40_vs_python_twin():
    """`_simd.neighbor_peak40` compiled (512-bit vectors) == its Python twin for 3..6
    neighbours, local weights 0, 1, 2 and adversarial sums (ties, NaN, +-inf, maxima <= 0)."""
    from numba import njit

    from dvp.kernels._simd import neighbor_peak40

    @njit
    def compiled(w, indices, lw, out):
        for p in range(w.shape[0]):
            out[p, 0] = neighbor_peak40(w, p, indices, 6 * p, 3, lw)
            out[p, 1] = neighbor_peak40(w, p, indices, 6 * p, 4, lw)
            out[p, 2] = neighbor_peak40(w, p, indices, 6 * p, 5, lw)
            out[p, 3] = neighbor_peak40(w, p, indices, 6 * p, 6, lw)

    rng = np.random.default_rng(3)
    n_pix = 30
    indices = rng.integers(0, n_pix, 6 * n_pix).astype(np.int32)
    seen = set()
    for w in adversarial_rows(rng, n_pix, 40):
        for lw in (0, 1, 2):
            out = np.empty((n_pix, 4), np.int64)
            with np.errstate(invalid="ignore", over="ignore"):
                compiled(w, indices, np.float32(lw), out)
                expect = [[neighbor_peak40(w, p, indices, 6 * p, k, np.float32(lw)) for k in (3, 4, 5, 6)]
                          for p in range(n_pix)]
            np.testing.assert_array_equal(out, expect)
            seen.update(np.sign(out).ravel().tolist())
    assert seen == {-1, 0, 1}  # fallbacks, first-sample maxima and later maxima all occur


def test_empty_batch():
    indptr, indices = HEX
    c, t = ex.neighbor_peak_window_sum(np.zeros((0, 7, 10), np.float32), np.zeros((0, 7), np.int8), indptr,
                                       indices, None, 1.0)
    assert c.shape == t.shape == (0, 7)
    for name in ex.EXTRACTORS:
        out = ex.extract(name, np.zeros((0, 7, 10), np.float32), np.zeros((0, 7), np.int8), sampling_rate_ghz=1.0,
                         neighbor_indptr=indptr, neighbor_indices=indices,
                         reference_pulse_shape=np.array([[0, 1, 2, 1, 0.0] * 3]), reference_pulse_sample_width_ns=1.0,
                         pix_x=np.arange(7.0), pix_y=np.zeros(7))
        assert out[0].shape == (0, 7)


# ------------------------------------------------------------------ jitted vs py_func


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(7)
    indptr, indices = HEX
    wf = rng.normal(0, 1, size=(3, 7, 12)).astype(np.float32)
    wf[1, :, 5] += 6.0
    wf[2] -= 3.0
    gain = (rng.random((3, 7)) < 0.4).astype(np.int8)
    broken = rng.random((3, 7)) < 0.2
    return wf, gain, broken, indptr, indices, np.array([1.3, 2.1])


def run_both(body, args, n_out=2, shape=(3, 7)):
    outs = []
    for fn in (body, body.py_func):
        o = [np.zeros(shape, np.float32) for _ in range(n_out)]
        fn(*args, *o)
        outs.append(o)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    return outs[0]


def test_jit_vs_py_func_window_bodies(small):
    wf, gain, broken, indptr, indices, corr = small
    run_both(ex._fixed_window_sum, (wf, gain, corr, 1.0, 4, 5, 2))
    run_both(ex._local_peak_window_sum, (wf, gain, corr, 0.5, 7, 3))
    run_both(ex._global_peak_window_sum, (wf, gain, corr, 1.0, 7, 3, -1, broken))
    run_both(ex._global_peak_window_sum, (wf, gain, corr, 1.0, 5, 1, 3, broken))
    run_both(ex._sliding_window_max_sum, (wf, gain, corr, 1.0, 4))
    run_both(ex._two_pass_first, (wf, 1.0))


def test_jit_vs_py_func_neighbor_bodies(small):
    wf, gain, broken, indptr, indices, corr = small
    for lw in (0, 1, 3):
        run_both(ex._neighbor_peak_window_sum, (wf, gain, indptr, indices, corr, 1.0, 7, 3, lw, broken))
        run_both(ex._neighbor_peak_window_sum, (wf, gain, indptr, indices, corr, 1.0, 5, 2, lw,
                                                np.zeros((0, 7), bool)))
        run_both(ex._baseline_subtracted_npws, (wf, gain, indptr, indices, corr, 1.0, 7, 3, lw, 0, 4, broken))
    acc = np.empty(12, np.float32)
    tptr, tind = ex._transpose_csr(indptr, indices, 7)
    for got, expect in zip((tptr, tind), ex._transpose_csr.py_func(indptr, indices, 7)):
        np.testing.assert_array_equal(got, expect)
    for fn in (ex._neighbor_peaks, ex._neighbor_peaks.py_func):
        peaks = np.empty(7, np.int64)
        near = np.empty(7, bool)
        assert ex._mark_near_broken(broken, 1, tptr, tind, near) == broken[1].any()
        expect_near = [broken[1, indices[indptr[p]:indptr[p + 1]]].any() for p in range(7)]
        np.testing.assert_array_equal(near, expect_near)
        fn(wf[1], wf[2], True, indptr, indices, 0, broken, 1, True, near, acc, np.empty(6, np.int64),
           np.empty(6, np.float32), peaks)
        assert np.array_equal(peaks, naive_neighbor_peaks(wf[1], indptr, indices, 0, broken[1]))
    img = wf[:, :, 0].astype(np.float64)
    run_both(ex._neighbor_average, (img, wf[:, :, 1], broken, indptr, indices))


def test_jit_vs_py_func_pairwise_sums():
    rng = np.random.default_rng(2)
    a = rng.normal(size=700).astype(np.float32)
    for start, n in [(0, 0), (3, 5), (0, 8), (1, 127), (0, 129), (17, 600)]:
        expect = np.add.reduce(a[start:start + n])
        assert ex._pairwise_sum(a, start, n, True) == expect == ex._pairwise_sum.py_func(a, start, n, True)
    b = a.astype(np.float64)
    for n in (5, 64, 300):
        assert ex._pairwise_sum(b, 0, n, True) == np.add.reduce(b[:n]) == ex._pairwise_sum.py_func(b, 0, n, True)


def test_jit_vs_py_func_two_pass_second(ref):
    wf = ref["waveforms"].astype(np.float32)
    gain = ref["selected_gain_channel"]
    kw = common_kwargs(ref)
    corr = ex.integration_correction(kw["reference_pulse_shape"], kw["reference_pulse_sample_width_ns"],
                                     kw["sampling_rate_ghz"], 5, 2)
    c1, t1 = np.empty((4, wf.shape[1]), np.float32), np.empty((4, wf.shape[1]), np.float32)
    ex._two_pass_first(wf, kw["sampling_rate_ghz"], c1, t1)
    e = 1
    results = []
    for fn in (ex._two_pass_second, ex._two_pass_second.py_func):
        oc, ot = np.empty(wf.shape[1], np.float32), np.empty(wf.shape[1], np.float32)
        valid = fn(wf[e], gain[e], c1[e], t1[e], corr, corr, corr * 1.1, corr * 0.9, True,
                   ref["broken_pixels"][e, 0], True, 6.0, kw["neighbor_indptr"], kw["neighbor_indices"],
                   ref["pix_x"], ref["pix_y"], kw["sampling_rate_ghz"], np.random.default_rng(0), oc, ot)
        results.append((valid, oc, ot))
    assert results[0][0] and results[1][0]
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-6)


# ------------------------------------------------------------------ golden ctapipe references


def common_kwargs(ref):
    return dict(sampling_rate_ghz=float(ref["sampling_rate_ghz"]), neighbor_indptr=ref["neighbor_indptr"],
                neighbor_indices=ref["neighbor_indices"], reference_pulse_shape=ref["pulse_LSTcam_prod6"],
                reference_pulse_sample_width_ns=float(ref["reference_pulse_sample_width_ns"]),
                pix_x=ref["pix_x"], pix_y=ref["pix_y"])


CONFIGS = json.loads(str(np.load(REF)["configs"]))


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_ctapipe_reference(ref, i):
    name, config = CONFIGS[i]
    wf = ref["waveforms"].astype(np.float32)
    wf_in = wf.copy()
    # ctapipe's full (n_channels, n_pixels) outlier mask per event, which differs between gains
    c, t, valid = ex.extract(name, wf, ref["selected_gain_channel"], broken_pixels=ref["broken_pixels"],
                             return_is_valid=True, **common_kwargs(ref), **config)
    np.testing.assert_array_equal(wf, wf_in)
    assert c.dtype == np.float32 and t.dtype == np.float32 and c.shape == wf.shape[:2]
    np.testing.assert_allclose(c, ref[f"charge_{i}"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(t, ref[f"peak_time_{i}"], rtol=RTOL, atol=0)
    np.testing.assert_array_equal(valid, ref[f"is_valid_{i}"])
    if name != "TwoPassWindowSum":  # no BLAS/LAPACK involved: bit for bit
        np.testing.assert_array_equal(c, ref[f"charge_{i}"])
        np.testing.assert_array_equal(t, ref[f"peak_time_{i}"])


def test_reference_exercises_the_interesting_paths(ref):
    """Guard against a reference that cannot fail: the cases differ where they should."""
    names = [n for n, _ in CONFIGS]
    tp, tp1 = names.index("TwoPassWindowSum"), names.index("TwoPassWindowSum") + 1
    assert not ref[f"is_valid_{tp}"].all() and ref[f"is_valid_{tp}"].sum() >= 2
    assert (ref[f"charge_{tp}"] != ref[f"charge_{tp1}"]).sum() > 100
    n0, n1 = names.index("NeighborPeakWindowSum"), names.index("LocalPeakWindowSum")
    assert (ref[f"peak_time_{n0}"] != ref[f"peak_time_{n1}"]).sum() > 100
    b = ref["broken_pixels"]
    assert (b[:, 0] != b[:, 1]).any() and ref["selected_gain_channel"].any()


def test_per_extractor_functions_with_gain_selected_mask(ref):
    wf = ref["waveforms"].astype(np.float32)
    gain = ref["selected_gain_channel"]
    sel = np.take_along_axis(ref["broken_pixels"], gain[:, None, :].astype(np.intp), axis=1)[:, 0]
    kw = common_kwargs(ref)
    names = [n for n, _ in CONFIGS]
    corr = ex.integration_correction(kw["reference_pulse_shape"], kw["reference_pulse_sample_width_ns"],
                                     kw["sampling_rate_ghz"], 7, 3)
    i = names.index("NeighborPeakWindowSum")
    c, t = ex.neighbor_peak_window_sum(wf, gain, kw["neighbor_indptr"], kw["neighbor_indices"], corr,
                                       kw["sampling_rate_ghz"], broken_pixels=sel)
    np.testing.assert_allclose(c, ref[f"charge_{i}"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(t, ref[f"peak_time_{i}"], rtol=RTOL, atol=0)
    i = names.index("GlobalPeakWindowSum")
    c, t = ex.global_peak_window_sum(wf, gain, corr, kw["sampling_rate_ghz"], broken_pixels=sel)
    np.testing.assert_allclose(c, ref[f"charge_{i}"], rtol=RTOL, atol=0)
    i = names.index("TwoPassWindowSum")
    c, t, valid = ex.two_pass_window_sum(wf, gain, kw["neighbor_indptr"], kw["neighbor_indices"], kw["pix_x"],
                                         kw["pix_y"], kw["reference_pulse_shape"],
                                         kw["reference_pulse_sample_width_ns"], kw["sampling_rate_ghz"],
                                         broken_pixels=ref["broken_pixels"][:, 0])
    np.testing.assert_allclose(c, ref[f"charge_{i}"], rtol=RTOL, atol=0)
    np.testing.assert_array_equal(valid, ref[f"is_valid_{i}"])


def test_neighbor_average_reference(ref):
    i = [n for n, _ in CONFIGS].index("NeighborPeakWindowSum")
    img, pt = ex.neighbor_average(ref[f"charge_{i}"], ref[f"peak_time_{i}"], ref["broken_pixels"][:, 0],
                                  ref["neighbor_indptr"], ref["neighbor_indices"])
    np.testing.assert_allclose(img, ref["neighbor_average_image"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(pt, ref["neighbor_average_peak_time"], rtol=RTOL, atol=0)
    assert not np.array_equal(img, ref[f"charge_{i}"])


@pytest.mark.parametrize("cam", ["LSTcam_prod6", "LSTCam", "FlashCam", "ASTRICam", "CHEC"])
def test_integration_correction_reference(ref, cam):
    pulse = ref[f"pulse_{cam}"]
    ref_width, rate = ref[f"meta_{cam}"]
    got = np.array([ex.integration_correction(pulse, ref_width, rate, int(w), int(s)) for w, s in ref["windows"]])
    np.testing.assert_allclose(got, ref[f"window_{cam}"], rtol=1e-12)
    got = np.array([ex.sliding_window_correction(pulse, ref_width, rate, w) for w in (7, 3, 5, 1)])
    np.testing.assert_allclose(got, ref[f"sliding_{cam}"], rtol=1e-12)


def test_defaults_match_ctapipe(ref):
    defaults = json.loads(str(ref["defaults"]))
    assert set(defaults) == set(ex.EXTRACTORS)
    for name, values in defaults.items():
        assert ex.EXTRACTORS[name] == values, name
    for tel_type, value in json.loads(str(ref["core_thresholds"])).items():
        assert ex.two_pass_core_threshold(tel_type) == value


# ------------------------------------------------------------------ argument checking


def test_bad_arguments_raise_value_error(ref):
    wf = ref["waveforms"].astype(np.float32)
    gain = ref["selected_gain_channel"]
    kw = common_kwargs(ref)
    with pytest.raises(ValueError, match="NoSuchExtractor"):
        ex.extract("NoSuchExtractor", wf, gain, **kw)
    with pytest.raises(ValueError, match="window_size"):
        ex.extract("NeighborPeakWindowSum", wf, gain, window_size=3, **kw)
    with pytest.raises(ValueError, match="window_width"):
        ex.extract("NeighborPeakWindowSum", wf, gain, window_width=3.5, **kw)
    with pytest.raises(ValueError, match="apply_integration_correction"):
        ex.extract("LocalPeakWindowSum", wf, gain, apply_integration_correction=1, **kw)
    with pytest.raises(ValueError, match="invalid_pixel_handler_type"):
        ex.extract("TwoPassWindowSum", wf, gain, invalid_pixel_handler_type="Median", **kw)
    with pytest.raises(ValueError, match="float32"):
        ex.extract("FullWaveformSum", wf.astype(np.float64), gain, **kw)
    with pytest.raises(ValueError, match="selected_gain_channel"):
        ex.extract("LocalPeakWindowSum", wf, gain + 1, **kw)
    with pytest.raises(ValueError, match="window_width"):
        ex.extract("SlidingWindowMaxSum", wf, gain, window_width=41, **kw)
    with pytest.raises(ValueError, match="5 samples"):
        ex.extract("TwoPassWindowSum", wf[:, :, :4].copy(), gain, **kw)
    with pytest.raises(ValueError, match="broken_pixels"):
        ex.extract("NeighborPeakWindowSum", wf, gain, broken_pixels=np.zeros(wf.shape[:2], int), **kw)
    with pytest.raises(ValueError, match="neighbor"):
        ex.neighbor_peak_window_sum(wf, gain, kw["neighbor_indptr"][:-1], kw["neighbor_indices"], None, 1.0)
    with pytest.raises(ValueError, match="sampling_rate_ghz"):
        ex.local_peak_window_sum(wf, gain, None, 0.0)
    with pytest.raises(ValueError, match="pixel_fraction"):
        ex.global_peak_window_sum(wf, gain, None, 1.0, pixel_fraction=0.001)
    with pytest.raises(ValueError, match="pix_x"):
        ex.two_pass_window_sum(wf, gain, kw["neighbor_indptr"], kw["neighbor_indices"], None, None,
                               kw["reference_pulse_shape"], 0.1, 1.0)
