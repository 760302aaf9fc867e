"""Match rows of two tables by their (obs_id, event_id[, tel_id]) keys, both sorted.

dvp's tables come sorted by their keys (every writer sorts them), so the row of ``b``
holding each key of ``a`` is one merge pass: 1-2 ms for 100,000 rows, where a polars
join on two or three key columns takes 15-35 ms (session 21). Unsorted input is
reported, not mishandled: the caller then joins.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def _cmp(a0, a1, a2, i, b0, b1, b2, j):
    """-1, 0 or 1 as key ``a[i]`` is below, equal to or above key ``b[j]``."""
    if a0[i] != b0[j]:
        return -1 if a0[i] < b0[j] else 1
    if a1[i] != b1[j]:
        return -1 if a1[i] < b1[j] else 1
    if a2[i] != b2[j]:
        return -1 if a2[i] < b2[j] else 1
    return 0


@njit(cache=True)
def _match_sorted(a0, a1, a2, b0, b1, b2, out):
    """``out[i]``: the row of ``b`` whose key is ``a``'s row ``i``, -1 if none. False (and
    ``out`` unfinished) unless both key sequences are strictly increasing."""
    na, nb = a0.shape[0], b0.shape[0]
    for i in range(1, na):
        if _cmp(a0, a1, a2, i - 1, a0, a1, a2, i) >= 0:
            return False
    for j in range(1, nb):
        if _cmp(b0, b1, b2, j - 1, b0, b1, b2, j) >= 0:
            return False
    j = 0
    for i in range(na):
        while j < nb and _cmp(a0, a1, a2, i, b0, b1, b2, j) > 0:
            j += 1
        out[i] = j if j < nb and _cmp(a0, a1, a2, i, b0, b1, b2, j) == 0 else -1
    return True


def match_sorted_keys(a: tuple, b: tuple) -> np.ndarray | None:
    """Row of ``b`` holding each key of ``a``.

    Parameters
    ----------
    a, b : tuple of 2 or 3 integer ndarrays
        Key columns (obs_id, event_id[, tel_id]) of shapes (n_a,) and (n_b,), each table's
        keys strictly increasing in lexicographic order.

    Returns
    -------
    ndarray of int64, shape (n_a,), or None
        ``rows[i]`` is the row of ``b`` equal to row ``i`` of ``a``, -1 where ``b`` has no
        such key; None if either table is not strictly increasing (duplicate or unsorted keys).
    """
    if len(a) != len(b) or len(a) not in (2, 3):
        raise ValueError(f"need 2 or 3 key columns on both sides, got {len(a)} and {len(b)}")
    cols = []
    for side in (a, b):
        side = [np.ascontiguousarray(c) for c in side]
        if any(c.ndim != 1 or c.shape != side[0].shape or c.dtype.kind not in "iu" for c in side):
            raise ValueError("key columns must be 1-d integer arrays of one length per table")
        if len(side) == 2:
            side.append(np.zeros(len(side[0]), np.int8))
        cols.append([c.astype(np.int64, copy=False) for c in side])
    out = np.empty(len(cols[0][0]), np.int64)
    return out if _match_sorted(*cols[0], *cols[1], out) else None
