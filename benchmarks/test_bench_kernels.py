"""pytest-benchmark kernel benchmarks (run: make bench). They report; they assert nothing about time."""
import numpy as np
import pytest

from dvp.kernels.r1 import calibrate_r1


@pytest.fixture(scope="module")
def lst_event():
    rng = np.random.default_rng(42)
    adc = rng.integers(300, 5000, size=(2, 1855, 40)).astype(np.uint16)
    ped = rng.uniform(380, 420, size=(2, 1855)).astype(np.float32)
    fac = rng.uniform(0.01, 0.1, size=(2, 1855)).astype(np.float32)
    return adc, ped, fac


def test_calibrate_r1_lstcam(benchmark, lst_event):
    adc, ped, fac = lst_event
    out = np.empty((1855, 40), np.float32)
    wf, gain = benchmark(calibrate_r1, adc, ped, fac, 4000.0, True, out)
    assert wf.shape == (1855, 40)
