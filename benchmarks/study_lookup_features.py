"""Do lookup-table features buy LightGBM RandomForest accuracy within the 5× budget?

Usage::

    python benchmarks/study_lookup_features.py --gamma G_DL2 [--kind energy|particle] [--seed 0]
        [--repeats 3] [--bootstrap 200] [--figure PNG]

The flow, split, timing and verdicts are ``bench_ml_frontier.py``'s (same arguments); only
the settings differ. The features are the classic stereo-IACT ones of H.E.S.S. (Aharonian
et al. 2006, A&A 457, 899) and VERITAS, built per telescope type from lookup tables in
bins of log10 image intensity (0.2 dex, 1–6) and log10 reconstructed impact distance
(0.2 dex, 1–1,600 m), filled from the energy-training gammas only (``part == 0``, never the
classifier's training events or the test events):

- ``lut_log10_energy``: the bin's median log10 true energy (the lookup-table energy
  estimate of one telescope);
- ``scaled_width`` / ``scaled_length``: (width − the bin's median) / half its 16–84 %
  width, the per-telescope terms of the mean reduced scaled width / length;
- ``log10_impact``: log10 of the impact distance (a linear leaf's plane is not invariant
  to the transform, a split is).

Bins with fewer than 5 gammas take a plane fitted to all of them. The tables' time counts
in the training time of every setting that uses them (tens of ms per telescope type in
numpy). Energy: the fast preset's 8 features, alone or with ``lut_log10_energy`` and / or
``log10_impact``, on 31 or 63 linear leaves, 10 × 0.5, 20 × 0.4 or 30 × 0.3 rounds ×
learning rate, all rows or 12,000 per type. Particle: the preset's 12 features, alone, with
the scaled width and length, or with those and ``lut_log10_energy``; 15 or 31 leaves,
16 × 0.5 or 30 × 0.3, 20,000 or 12,000 rows per type.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ml_frontier as frontier  # noqa: E402
from bench_ml import FAST_CONFIG  # noqa: E402

from dvp import schemas as S  # noqa: E402

LOG_INTENSITY_EDGES = np.linspace(1.0, 6.0, 26)
LOG_IMPACT_EDGES = np.linspace(0.0, 3.2, 17)
MIN_COUNT = 5


def _bin(log_intensity, log_impact):
    """Flat (log I, log R) bin index per row, shape (n,); rows outside go to the edge bins."""
    i = np.clip(np.digitize(log_intensity, LOG_INTENSITY_EDGES) - 1, 0, len(LOG_INTENSITY_EDGES) - 2)
    r = np.clip(np.digitize(log_impact, LOG_IMPACT_EDGES) - 1, 0, len(LOG_IMPACT_EDGES) - 2)
    return i * (len(LOG_IMPACT_EDGES) - 1) + r


def lookup_table(log_intensity, log_impact, value):
    """``(median, half 16–84 % width)`` of ``value`` per bin, each (n_bins,); bins with
    fewer than :data:`MIN_COUNT` rows take a plane in (log I, log R) fitted to all rows and
    the scatter about it."""
    n_bins = (len(LOG_INTENSITY_EDGES) - 1) * (len(LOG_IMPACT_EDGES) - 1)
    design = np.c_[np.ones_like(log_intensity), log_intensity, log_impact]
    coef = np.linalg.lstsq(design, value, rcond=None)[0]
    ci = 0.5 * (LOG_INTENSITY_EDGES[:-1] + LOG_INTENSITY_EDGES[1:])
    cr = 0.5 * (LOG_IMPACT_EDGES[:-1] + LOG_IMPACT_EDGES[1:])
    gi, gr = np.meshgrid(ci, cr, indexing="ij")
    median = (coef[0] + coef[1] * gi + coef[2] * gr).ravel()
    spread = np.full(n_bins, np.std(value - design @ coef))
    k = _bin(log_intensity, log_impact)
    order = np.lexsort((value, k))   # by bin, then value: each bin's quantiles by rank
    count = np.bincount(k, minlength=n_bins)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    full = count >= MIN_COUNT
    ranked = value[order]

    def quantile(q):   # linear interpolation between ranks, as np.percentile's default
        pos = start[full] + q * (count[full] - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, start[full] + count[full] - 1)
        return ranked[lo] + (pos - lo) * (ranked[hi] - ranked[lo])

    median[full] = quantile(0.5)
    spread[full] = np.maximum(0.5 * (quantile(0.84) - quantile(0.16)), 1e-6)
    return median, spread


#: the lookup-table features each model kind's settings use (only those are built and timed)
FEATURES = {"energy": ("lut_log10_energy", "log10_impact"),
            "particle": ("scaled_width", "scaled_length", "lut_log10_energy")}


def add_lookup_columns(cols, part, kind):
    """Add the lookup-table features of ``kind`` (:data:`FEATURES`) to one telescope type's
    ``cols`` (in place), the tables filled from the energy-training gammas."""
    log_i = np.log10(np.maximum(cols[S.HILLAS_INTENSITY], 1e-3))
    log_r = np.log10(np.maximum(cols["reco_impact_distance_m"], 1.0))
    # the energy-training gammas with a Hillas image (finite width) and an impact distance
    train = ((cols["label"] == 1) & (part == 0) & np.isfinite(log_i) & np.isfinite(log_r)
             & np.isfinite(cols["hillas_width_deg"]))
    k = _bin(log_i, log_r)
    # no bin for a row without intensity or impact: NaN, which the feature matrix marks unusable
    nan = np.where(np.isfinite(log_i) & np.isfinite(log_r), 0.0, np.nan)
    for name in FEATURES[kind]:
        if name == "log10_impact":
            cols[name] = log_r
        elif name == "lut_log10_energy":
            energy, _ = lookup_table(log_i[train], log_r[train], np.log10(cols[S.TRUE_ENERGY][train]))
            cols[name] = energy[k] + nan
        else:   # scaled_width / scaled_length
            v = cols["hillas_width_deg" if name == "scaled_width" else "hillas_length_deg"]
            median, spread = lookup_table(log_i[train], log_r[train], v[train])
            cols[name] = (v - median[k]) / spread[k] + nan


def grid(kind, quick):
    """``bench_ml_frontier.main``'s settings: ``(label, config, --set overrides, extra features)``."""
    out = [("fast preset", FAST_CONFIG, [], ())]
    if kind == "energy":
        extras = ((), ("lut_log10_energy",), ("log10_impact",), ("lut_log10_energy", "log10_impact"))
        shapes = [(leaves, n, lr) for leaves in (31, 63) for n, lr in ((10, 0.5), (20, 0.4), (30, 0.3))]
        rows, base = (0, 12000), 8
    else:
        extras = ((), ("scaled_width", "scaled_length"), ("scaled_width", "scaled_length", "lut_log10_energy"))
        shapes = [(leaves, n, lr) for leaves in (15, 31) for n, lr in ((16, 0.5), (30, 0.3))]
        rows, base = (20000, 12000), 12
    for extra in extras:
        for leaves, n, lr in shapes:
            for n_rows in rows:
                sets = frontier.overrides(kind, n, lr, leaves, n_rows)
                label = (f"{base} features{''.join(' + ' + e for e in extra)}, {leaves} leaves, {n} x {lr}, "
                         f"{f'{n_rows:,} rows' if n_rows else 'all rows'}")
                out.append((label, FAST_CONFIG, sets, extra))
    return out


if __name__ == "__main__":
    argv = sys.argv[1:]
    kind = argv[argv.index("--kind") + 1] if "--kind" in argv else "energy"
    if "--figure" not in argv:
        argv += ["--figure", str(Path(__file__).parent / "figures" / f"lookup_features_{kind}.png")]
    frontier.main(argv, grid=grid, add_columns=functools.partial(add_lookup_columns, kind=kind))
