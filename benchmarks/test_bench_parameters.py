"""pytest-benchmark of the image-parameter kernels on LSTCam-like cleaned images.

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_parameters.py --benchmark-only -q``.
Each benchmark processes a batch of N_EVENTS images; ``extra_info['us_per_event']`` is the
mean time per event. Nothing about time is asserted.
"""

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from dvp.kernels.hillas import hillas_parameters
from dvp.kernels.parameters import (
    concentration_parameters,
    descriptive_statistics,
    leakage_parameters,
    morphology_parameters,
)
from dvp.kernels.timing import timing_parameters

N_EVENTS = 2000
FOCAL_LENGTH_M = 28.0


@pytest.fixture(scope="module")
def batch(lstcam):
    tel = lstcam.telescope_frame(FOCAL_LENGTH_M)  # ctapipe's TelescopeFrame, deg
    n_pix = tel.n_pixels
    pix_x, pix_y, pix_area, pixel_width = tel.pix_x, tel.pix_y, tel.pix_area, tel.pixel_width
    indptr, indices = lstcam.neighbor_indptr, lstcam.neighbor_indices
    border_1, border_2 = lstcam.border(1), lstcam.border(2)

    rng = np.random.default_rng(7)
    image = rng.normal(0, 2.0, (N_EVENTS, n_pix)).astype(np.float32)
    peak_time = rng.uniform(0, 40, (N_EVENTS, n_pix)).astype(np.float32)
    for e in range(N_EVENTS):
        r, phi = rng.uniform(0, 1.5), rng.uniform(-np.pi, np.pi)
        psi = rng.uniform(-np.pi, np.pi)
        length = rng.uniform(0.15, 0.45)
        width = rng.uniform(0.05, 0.5 * length)
        lon = (pix_x - r * np.cos(phi)) * np.cos(psi) + (pix_y - r * np.sin(phi)) * np.sin(psi)
        tra = -(pix_x - r * np.cos(phi)) * np.sin(psi) + (pix_y - r * np.sin(phi)) * np.cos(psi)
        mu = 10 ** rng.uniform(3.0, 3.9) * np.exp(-0.5 * (lon / length) ** 2 - 0.5 * (tra / width) ** 2) \
            * pix_area / (2 * np.pi * length * width)
        image[e] += mu
        shower = mu > 1
        peak_time[e, shower] = (15 + rng.uniform(-12, 12) * lon + rng.normal(0, 0.5, n_pix))[shower]
    mask = image > 6.0
    graph = csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n_pix, n_pix))
    labels = np.zeros((N_EVENTS, n_pix), np.int32)
    n_islands = np.zeros(N_EVENTS, np.int32)
    for e in range(N_EVENTS):
        m = np.flatnonzero(mask[e])
        k, lab = connected_components(graph[m][:, m], directed=False)
        labels[e, m] = lab + 1
        n_islands[e] = k
    return dict(pix_x=pix_x, pix_y=pix_y, pix_area=pix_area, pixel_width=pixel_width, border_1=border_1,
                border_2=border_2, image=image, peak_time=peak_time, mask=mask, labels=labels,
                n_islands=n_islands)


def _report(benchmark, b):
    benchmark.extra_info["n_events"] = N_EVENTS
    benchmark.extra_info["median_mask_pixels"] = float(np.median(b["mask"].sum(1)))
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_event"] = benchmark.stats.stats.mean / N_EVENTS * 1e6


def _hillas(b):
    return hillas_parameters(b["pix_x"], b["pix_y"], b["image"], b["mask"], pix_area=b["pix_area"])


def test_hillas(benchmark, batch):
    h = benchmark(_hillas, batch)
    _report(benchmark, batch)
    assert np.isfinite(h["length"]).all()


def test_leakage(benchmark, batch):
    b = batch
    benchmark(leakage_parameters, b["image"], b["mask"], b["border_1"], b["border_2"])
    _report(benchmark, b)


def test_concentration(benchmark, batch):
    b = batch
    h = _hillas(b)
    benchmark(concentration_parameters, b["pix_x"], b["pix_y"], b["pixel_width"], b["image"], b["mask"], h)
    _report(benchmark, b)


def test_morphology(benchmark, batch):
    benchmark(morphology_parameters, batch["labels"], batch["n_islands"])
    _report(benchmark, batch)


def test_statistics(benchmark, batch):
    benchmark(descriptive_statistics, batch["image"], batch["mask"])
    _report(benchmark, batch)


def test_timing(benchmark, batch):
    b = batch
    h = _hillas(b)
    t = benchmark(timing_parameters, b["pix_x"], b["pix_y"], b["image"], b["peak_time"], b["mask"], h)
    _report(benchmark, b)
    assert np.isfinite(t["slope"]).mean() > 0.9


def _all(b):
    h = _hillas(b)
    leakage_parameters(b["image"], b["mask"], b["border_1"], b["border_2"])
    concentration_parameters(b["pix_x"], b["pix_y"], b["pixel_width"], b["image"], b["mask"], h)
    morphology_parameters(b["labels"], b["n_islands"])
    descriptive_statistics(b["image"], b["mask"])
    descriptive_statistics(b["peak_time"], b["mask"])
    timing_parameters(b["pix_x"], b["pix_y"], b["image"], b["peak_time"], b["mask"], h)


def test_all_parameters(benchmark, batch):
    benchmark(_all, batch)
    _report(benchmark, batch)
