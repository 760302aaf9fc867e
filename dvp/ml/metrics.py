"""Performance measures of energy and particle models (pyirf's definitions)."""
from __future__ import annotations

import numpy as np


def bias_resolution(reco, true):
    """Energy bias and resolution of ``reco`` vs ``true`` (same units), as pyirf's
    ``energy_bias_resolution``: relative error ``reco / true - 1``; bias is its median,
    resolution half the distance between its 16 % and 84 % quantiles. NaN if empty."""
    rel = np.asarray(reco, np.float64) / np.asarray(true, np.float64) - 1.0
    rel = rel[np.isfinite(rel)]
    if not len(rel):
        return np.nan, np.nan
    q16, q50, q84 = np.quantile(rel, [0.16, 0.5, 0.84])
    return float(q50), float(0.5 * (q84 - q16))


def roc_auc(score, label, weight=None) -> float:
    """Area under the ROC curve: probability that a random signal (label 1) row scores
    above a random background (label 0) row, ties counting one half. NaN if one class
    is missing. With ``weight``, rows count with their weights."""
    score = np.asarray(score, np.float64)
    label = np.asarray(label).astype(bool)
    w = np.ones(len(score)) if weight is None else np.asarray(weight, np.float64)
    ok = np.isfinite(score)
    score, label, w = score[ok], label[ok], w[ok]
    ws, wb = w[label].sum(), w[~label].sum()
    if ws <= 0 or wb <= 0:
        return np.nan
    order = np.argsort(score, kind="stable")
    s, lab, ww = score[order], label[order], w[order]
    # per distinct score: background weight below it, plus half the tied background
    uniq, start = np.unique(s, return_index=True)
    bkg_cum = np.concatenate([[0.0], np.cumsum(np.where(lab, 0.0, ww))])
    end = np.append(start[1:], len(s))
    bkg_below = bkg_cum[start]
    bkg_tied = bkg_cum[end] - bkg_cum[start]
    sig_in = np.add.reduceat(np.where(lab, ww, 0.0), start)
    return float(np.sum(sig_in * (bkg_below + 0.5 * bkg_tied)) / (ws * wb))


def binned(values_fn, energy, edges, *arrays):
    """Apply ``values_fn(*arrays[mask])`` per bin of ``energy`` (edges ascending); one
    result per bin (``values_fn`` gets the rows of the bin)."""
    energy = np.asarray(energy)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (energy >= lo) & (energy < hi)
        out.append(values_fn(*[np.asarray(a)[m] for a in arrays]))
    return out
