"""pytest-benchmark of the cleaning and island kernels on LSTCam (they report; they assert
nothing about time). Each call processes a batch of N_EVENTS events; divide by N_EVENTS
for the cost per event.

Run: .venv/bin/python -m pytest benchmarks/test_bench_clean.py --benchmark-only -q
"""

import numpy as np
import pytest

from dvp.kernels.clean import CLEANERS, clean, dilate, tailcuts_clean
from dvp.kernels.islands import label_islands, largest_island_mask

N_EVENTS = 1000


@pytest.fixture(scope="module")
def lst(lstcam):
    """Realistic LSTCam batch: NSB noise of ~1-3 p.e. and one shower of ~50-300 pixels."""
    x, y, indptr, indices = lstcam.pix_x, lstcam.pix_y, lstcam.neighbor_indptr, lstcam.neighbor_indices
    rng = np.random.default_rng(7)
    n = len(x)
    nsb = rng.uniform(1.0, 3.0, (N_EVENTS, 1))
    image = rng.poisson(nsb, (N_EVENTS, n)) - nsb + rng.normal(0, 0.5, (N_EVENTS, n))
    time = rng.uniform(0, 40, (N_EVENTS, n))
    cx, cy = rng.uniform(-0.6, 0.6, (2, N_EVENTS, 1))
    psi = rng.uniform(0, np.pi, (N_EVENTS, 1))
    width, length = rng.uniform(0.03, 0.06, (N_EVENTS, 1)), rng.uniform(0.08, 0.25, (N_EVENTS, 1))
    size = np.exp(rng.uniform(np.log(1000), np.log(50000), (N_EVENTS, 1)))
    lon = (x - cx) * np.cos(psi) + (y - cy) * np.sin(psi)
    lat = -(x - cx) * np.sin(psi) + (y - cy) * np.cos(psi)
    signal = rng.poisson(size * 0.0022 * np.exp(-0.5 * ((lon / length) ** 2 + (lat / width) ** 2))
                         / (2 * np.pi * width * length))
    image += signal
    shower = signal > 1
    time[shower] = (15 + 20 * lon + rng.normal(0, 0.5, lon.shape))[shower]
    return image.astype(np.float32), time.astype(np.float32), indptr, indices


def test_tailcuts_lstcam(benchmark, lst):
    image, _, indptr, indices = lst
    mask = benchmark(tailcuts_clean, image, indptr, indices, 10.0, 5.0, False, 2)
    n = mask.sum(axis=1)
    print(f"\nLSTCam bench batch: tailcuts 10/5 keeps {np.median(n):.0f} pixels per event (median), "
          f"{np.percentile(n, 10):.0f}-{np.percentile(n, 90):.0f} (10-90 %)")
    assert mask.shape == image.shape


def test_label_islands_lstcam(benchmark, lst):
    image, _, indptr, indices = lst
    mask = tailcuts_clean(image, indptr, indices, 10.0, 5.0, False, 2)
    labels, n_islands = benchmark(label_islands, mask, indptr, indices)
    assert labels.shape == image.shape


def test_tailcuts_plus_islands_lstcam(benchmark, lst):
    image, _, indptr, indices = lst

    def run():
        mask = tailcuts_clean(image, indptr, indices, 10.0, 5.0, False, 2)
        labels, n_islands = label_islands(mask, indptr, indices)
        return mask, labels, n_islands, largest_island_mask(labels, n_islands)

    out = benchmark(run)
    assert out[0].shape == image.shape


@pytest.mark.parametrize("name", sorted(CLEANERS))
def test_clean_lstcam(benchmark, lst, name):
    image, time, indptr, indices = lst
    mask = benchmark(clean, name, image, time, indptr, indices)
    assert mask.shape == image.shape


def test_dilate2_lstcam(benchmark, lst):
    image, _, indptr, indices = lst
    mask = tailcuts_clean(image, indptr, indices, 10.0, 5.0, False, 2)
    out = benchmark(dilate, mask, indptr, indices, 2)
    assert out.shape == mask.shape
