"""pytest-benchmark of the image extractors on LSTCam (they report; they assert nothing about
time). Each call processes a batch of N_EVENTS events (1855 pixels x 40 samples, 59 MB of
float32 waveforms, so the batch does not sit in cache); divide by N_EVENTS for the cost
per event, printed as ``us/event`` (visible with ``-s``) and stored in ``extra_info``.

Run: .venv/bin/python -m pytest benchmarks/test_bench_extract.py --benchmark-only -q -s
"""

import numpy as np
import pytest

from dvp.kernels import extract as ex

N_EVENTS = 200
N_SAMPLES = 40
RATE_GHZ = 1.0
REF_WIDTH_NS = 0.1


def gaussian_pulses(n_samples, ref_width_ns):
    """Two gain channels with different widths (high gain narrower), unit area."""
    t = np.arange(0, n_samples, ref_width_ns)
    return np.stack([np.exp(-0.5 * ((t - 10) / s) ** 2) for s in (1.2, 1.6)])


@pytest.fixture(scope="module")
def lst(lstcam):
    """LSTCam batch: ~2 p.e. NSB noise in every sample and one shower (~50-300 pixels) per event."""
    x, y, indptr, indices = lstcam.pix_x, lstcam.pix_y, lstcam.neighbor_indptr, lstcam.neighbor_indices
    rng = np.random.default_rng(7)
    n = len(x)
    cx, cy = rng.uniform(-0.6, 0.6, (2, N_EVENTS, 1))
    psi = rng.uniform(0, np.pi, (N_EVENTS, 1))
    width, length = rng.uniform(0.03, 0.06, (N_EVENTS, 1)), rng.uniform(0.08, 0.25, (N_EVENTS, 1))
    size = np.exp(rng.uniform(np.log(1000), np.log(50000), (N_EVENTS, 1)))
    lon = (x - cx) * np.cos(psi) + (y - cy) * np.sin(psi)
    lat = -(x - cx) * np.sin(psi) + (y - cy) * np.cos(psi)
    amp = rng.poisson(size * 0.0022 * np.exp(-0.5 * ((lon / length) ** 2 + (lat / width) ** 2))
                      / (2 * np.pi * width * length))
    t_peak = 18 + 20 * lon + rng.normal(0, 0.5, lon.shape)
    samples = np.arange(N_SAMPLES)
    wf = np.empty((N_EVENTS, n, N_SAMPLES), np.float32)
    for e in range(N_EVENTS):
        pulse = np.exp(-0.5 * ((samples - t_peak[e, :, None]) / 1.3) ** 2) / (1.3 * np.sqrt(2 * np.pi))
        wf[e] = amp[e, :, None] * pulse + rng.normal(0, 1.4, (n, N_SAMPLES))
    gain = (amp > 200).astype(np.int8)
    broken = np.zeros((N_EVENTS, n), bool)
    broken[:, rng.choice(n, 5, replace=False)] = True
    return dict(waveforms=wf, gain=gain, broken=broken, indptr=indptr, indices=indices, pix_x=x, pix_y=y)


def kwargs(lst):
    return dict(sampling_rate_ghz=RATE_GHZ, neighbor_indptr=lst["indptr"], neighbor_indices=lst["indices"],
                reference_pulse_shape=gaussian_pulses(N_SAMPLES, REF_WIDTH_NS),
                reference_pulse_sample_width_ns=REF_WIDTH_NS, pix_x=lst["pix_x"], pix_y=lst["pix_y"])


def report(benchmark, n_events, label):
    us = benchmark.stats.stats.median / n_events * 1e6
    benchmark.extra_info["us_per_event"] = round(us, 2)
    print(f"\n{label}: {us:.1f} us/event (median of {benchmark.stats.stats.rounds} batches of {n_events})")


def test_neighbor_peak_window_sum_lstcam(benchmark, lst):
    """The default extractor, through the kernel (correction precomputed once per camera)."""
    corr = ex.integration_correction(gaussian_pulses(N_SAMPLES, REF_WIDTH_NS), REF_WIDTH_NS, RATE_GHZ, 7, 3)
    charge, _ = benchmark(ex.neighbor_peak_window_sum, lst["waveforms"], lst["gain"], lst["indptr"],
                          lst["indices"], corr, RATE_GHZ, 7, 3, 0, lst["broken"])
    report(benchmark, N_EVENTS, "NeighborPeakWindowSum kernel")
    assert charge.shape == lst["gain"].shape


@pytest.mark.parametrize("name", ["NeighborPeakWindowSum", "LocalPeakWindowSum", "GlobalPeakWindowSum",
                                  "FixedWindowSum", "FullWaveformSum", "SlidingWindowMaxSum",
                                  "BaselineSubtractedNeighborPeakWindowSum"])
def test_extract_lstcam(benchmark, lst, name):
    """Through `extract` (argument checks + cached integration correction) with the broken-pixel mask."""
    charge, _ = benchmark(ex.extract, name, lst["waveforms"], lst["gain"], broken_pixels=lst["broken"],
                          **kwargs(lst))
    report(benchmark, N_EVENTS, name)
    assert charge.shape == lst["gain"].shape


def test_two_pass_window_sum_lstcam(benchmark, lst):
    n = 40  # per-event Python loop for the second pass: a smaller batch
    wf, gain, broken = lst["waveforms"][:n], lst["gain"][:n], lst["broken"][:n]
    charge, _ = benchmark.pedantic(ex.extract, ("TwoPassWindowSum", wf, gain),
                                   dict(broken_pixels=broken, **kwargs(lst)), rounds=5, warmup_rounds=1)
    report(benchmark, n, "TwoPassWindowSum")
    assert charge.shape == gain.shape


def test_neighbor_average_lstcam(benchmark, lst):
    image = lst["waveforms"][:, :, 18].copy()
    peak_time = lst["waveforms"][:, :, 19].copy()
    out, _ = benchmark(ex.neighbor_average, image, peak_time, lst["broken"], lst["indptr"], lst["indices"])
    report(benchmark, N_EVENTS, "NeighborAverage (5 broken pixels)")
    assert out.shape == image.shape
