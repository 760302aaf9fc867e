"""Match rows of two tables by their (obs_id, event_id[, tel_id]) keys, both sorted.

dvp's tables come sorted by their keys (every writer sorts them), so the row of ``b``
holding each key of ``a`` is one merge pass: 1-2 ms for 100,000 rows, where a polars
join on two or three key columns takes 15-35 ms (session 21). Unsorted input is
reported, not mishandled: the caller then joins.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _increasing(k0, k1, k2, strictly):
    """Whether the keys ``(k0[i], k1[i], k2[i])`` increase (``strictly``: no two equal)."""
    for i in range(1, k0.shape[0]):
        p0, p1, p2, c0, c1, c2 = k0[i - 1], k1[i - 1], k2[i - 1], k0[i], k1[i], k2[i]
        if p0 > c0 or (p0 == c0 and (p1 > c1 or (p1 == c1 and (p2 > c2 or (p2 == c2 and strictly))))):
            return False
    return True


@njit(cache=True)
def _match_sorted(a0, a1, a2, b0, b1, b2, out):
    """``out[i]``: the row of ``b`` whose key is ``a``'s row ``i``, -1 if none. False (and
    ``out`` unfinished) unless ``a``'s keys increase and ``b``'s strictly increase."""
    if not (_increasing(a0, a1, a2, False) and _increasing(b0, b1, b2, True)):
        return False
    nb = b0.shape[0]
    j = 0
    for i in range(a0.shape[0]):
        x0, x1, x2 = a0[i], a1[i], a2[i]
        # comparisons written out: through a helper function this loop ran 50x slower
        while j < nb:
            y0 = b0[j]
            if y0 < x0 or (y0 == x0 and (b1[j] < x1 or (b1[j] == x1 and b2[j] < x2))):
                j += 1
            else:
                break
        out[i] = j if j < nb and b0[j] == x0 and b1[j] == x1 and b2[j] == x2 else -1
    return True


def match_sorted_keys(a: tuple, b: tuple) -> np.ndarray | None:
    """Row of ``b`` holding each key of ``a``.

    Parameters
    ----------
    a, b : tuple of 2 or 3 integer ndarrays
        Key columns (obs_id, event_id[, tel_id]) of shapes (n_a,) and (n_b,), in
        lexicographic order: ``a``'s increasing (telescope events against their array
        events), ``b``'s strictly increasing.

    Returns
    -------
    ndarray of int64, shape (n_a,), or None
        ``rows[i]`` is the row of ``b`` equal to row ``i`` of ``a``, -1 where ``b`` has no
        such key; None if a table is out of order (or ``b`` has a key twice).
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
