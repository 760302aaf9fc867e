"""Fold assignment grouped by array event, independent of row order and file layout.

Each (obs_id, event_id) is hashed (splitmix64 of the keys and the seed) to a uniform
number, so all telescopes of one array event land in the same fold, whatever order or
chunking the rows arrive in, and a seed fixes the split.
"""
from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def group_uniform(obs_id, event_id, seed: int, salt: int = 0) -> np.ndarray:
    """Uniform [0, 1) number per row, equal for rows of the same array event.

    Parameters
    ----------
    obs_id, event_id : array_like of int, shape (n,)
    seed, salt : int
        Different seeds or salts give independent numbers.
    """
    obs = np.asarray(obs_id, np.int64).astype(np.uint64)
    ev = np.asarray(event_id, np.int64).astype(np.uint64)
    if obs.shape != ev.shape:
        raise ValueError(f"obs_id {obs.shape} and event_id {ev.shape} differ in shape")
    with np.errstate(over="ignore"):
        key = np.uint64((int(seed) * 0x632BE59BD9B4E019 + int(salt) * 0x85EBCA77C2B2AE63) % 2**64)
        h = _splitmix64(_splitmix64(obs ^ key) ^ ev)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def group_folds(obs_id, event_id, n_folds: int, seed: int) -> np.ndarray:
    """Fold index in ``[0, n_folds)`` per row, shape (n,), int64; one fold per array event."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    return np.minimum((group_uniform(obs_id, event_id, seed, salt=1) * n_folds).astype(np.int64), n_folds - 1)


def group_validation(obs_id, event_id, fraction: float, seed: int) -> np.ndarray:
    """``(n,)`` bool: the array events (about ``fraction`` of them) held out for early stopping."""
    return group_uniform(obs_id, event_id, seed, salt=2) < fraction


def group_sample(obs_id, event_id, usable, n_max: int, seed: int) -> np.ndarray:
    """``(n,)`` bool: the ``usable`` rows of a seeded sample of whole array events holding
    about ``n_max`` of them (all ``usable`` rows when ``n_max`` is 0 or not fewer).

    The sample keeps the array events whose :func:`group_uniform` number (salt 3) is below
    a quantile, so no array event is split and the K-fold grouping stays leak-free.
    """
    usable = np.asarray(usable, bool)
    n_use = int(usable.sum())
    if not n_max or n_use <= n_max:
        return usable.copy()
    u = group_uniform(obs_id, event_id, seed, salt=3)
    return usable & (u <= np.quantile(u[usable], n_max / n_use))
