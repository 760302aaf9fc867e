import numpy as np
import pytest

from dvp.kernels.r1 import _calibrate_select, calibrate_r1


def test_hand_worked_two_gains():
    # pixel 0 stays below the threshold: high gain; pixel 1 exceeds it: low gain
    adc = np.array([[[10, 12, 14], [100, 5000, 100]],
                    [[1, 1, 1], [20, 400, 20]]], dtype=np.uint16)
    ped = np.array([[10, 100], [1, 20]], np.float32)
    fac = np.array([[0.5, 0.01], [2.0, 0.25]], np.float32)
    wf, gain = calibrate_r1(adc, ped, fac, threshold=4000)
    assert gain.tolist() == [0, 1]
    np.testing.assert_array_equal(wf, np.array([[0, 1, 2], [0, 95, 0]], np.float32))


def test_threshold_is_strict_and_no_selection():
    adc = np.array([[[4000]], [[7]]], dtype=np.uint16)
    ped = np.zeros((2, 1), np.float32)
    fac = np.ones((2, 1), np.float32)
    assert calibrate_r1(adc, ped, fac, 4000)[1].tolist() == [0]
    adc[0, 0, 0] = 4001
    assert calibrate_r1(adc, ped, fac, 4000)[1].tolist() == [1]
    assert calibrate_r1(adc, ped, fac, 4000, select_gain=False)[1].tolist() == [0]


def test_single_channel_never_selects_low_gain():
    adc = np.full((1, 2, 4), 60000, np.uint16)
    wf, gain = calibrate_r1(adc, np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32))
    assert gain.tolist() == [0, 0] and wf.max() == 60000


def test_matches_numpy_float32_semantics_and_py_func():
    rng = np.random.default_rng(0)
    adc = rng.integers(200, 6000, size=(2, 50, 20)).astype(np.uint16)
    ped = rng.uniform(200, 400, size=(2, 50)).astype(np.float32)
    fac = rng.uniform(0.01, 0.1, size=(2, 50)).astype(np.float32)
    wf, gain = calibrate_r1(adc, ped, fac)
    # ctapipe's expression in numpy
    ref_gain = (adc[0] > 4000).any(axis=1).astype(np.int8)
    ref = ((adc - ped[..., None]) * fac[..., None])[ref_gain, np.arange(50)]
    assert gain.tolist() == ref_gain.tolist()
    np.testing.assert_array_equal(wf, ref)
    out, g2 = np.empty_like(wf), np.empty(50, np.int8)
    _calibrate_select.py_func(adc.astype(np.float32), ped, fac, 4000.0, True, out, g2)
    np.testing.assert_array_equal(out, wf)
    np.testing.assert_array_equal(g2, gain)


def test_wrapper_checks_shapes():
    with pytest.raises(ValueError):
        calibrate_r1(np.zeros((2, 3), np.uint16), np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        calibrate_r1(np.zeros((2, 3, 4), np.uint16), np.zeros((1, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        calibrate_r1(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
