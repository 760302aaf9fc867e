"""Per-array-event combination of per-telescope predictions (ctapipe's StereoMeanCombiner).

Rows are telescope events sorted by array event; ``starts`` (n_events + 1,) holds the
first row of each event and the total row count at the end, as
:func:`dvp.kernels.stereo.group_events` returns.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _weighted_mean(starts, values, weights, sigma, valid, mean, mean_sigma, n_used):
    for e in range(starts.shape[0] - 1):
        sw = 0.0
        swv = 0.0
        sw2s2 = 0.0
        n = 0
        for i in range(starts[e], starts[e + 1]):
            if not valid[i]:
                continue
            w = weights[i]
            # a telescope with zero or undefined weight adds nothing (ctapipe skips them too)
            if not (w > 0.0) or not np.isfinite(values[i]):
                continue
            sw += w
            swv += w * values[i]
            sw2s2 += w * w * sigma[i] * sigma[i]
            n += 1
        n_used[e] = n
        if n == 0:
            mean[e] = np.nan
            mean_sigma[e] = np.nan
        else:
            mean[e] = swv / sw
            mean_sigma[e] = np.sqrt(sw2s2) / sw


def weighted_mean(starts, values, weights, sigma, valid):
    """Weighted mean per event of the valid rows, and its propagated uncertainty.

    Parameters
    ----------
    starts : ndarray, shape (n_events + 1,), int64
        Row of each event's first telescope, then the number of rows.
    values : ndarray, shape (n_rows,), float64
        Per-telescope predictions (log10 energy, gamma probability).
    weights : ndarray, shape (n_rows,), float64
        Combination weights; rows with a weight that is not > 0 are left out.
    sigma : ndarray, shape (n_rows,), float64
        Per-telescope 1-sigma uncertainty of ``values`` (zeros if unknown).
    valid : ndarray, shape (n_rows,), bool
        Rows that may enter the mean.

    Returns
    -------
    mean, mean_sigma : ndarray, shape (n_events,), float64
        ``Σ w v / Σ w`` and ``sqrt(Σ w² σ²) / Σ w`` (NaN for events with no usable row).
    n_used : ndarray, shape (n_events,), int64
        Rows that entered each mean.
    """
    starts = np.ascontiguousarray(starts, np.int64)
    n = starts[-1] if len(starts) else 0
    if starts.ndim != 1 or len(starts) < 1 or starts[0] != 0 or np.any(np.diff(starts) < 0):
        raise ValueError("starts must be a non-decreasing (n_events + 1,) array starting at 0")
    arrays = []
    for name, a, dt in (("values", values, np.float64), ("weights", weights, np.float64),
                        ("sigma", sigma, np.float64), ("valid", valid, np.bool_)):
        a = np.ascontiguousarray(a, dt)
        if a.shape != (n,):
            raise ValueError(f"{name} has shape {a.shape}, expected ({n},)")
        arrays.append(a)
    n_ev = len(starts) - 1
    mean, mean_sigma = np.empty(n_ev), np.empty(n_ev)
    n_used = np.empty(n_ev, np.int64)
    _weighted_mean(starts, *arrays, mean, mean_sigma, n_used)
    return mean, mean_sigma, n_used
