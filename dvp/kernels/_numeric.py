"""Numeric helpers shared by the kernels: numpy's pairwise summation.

ctapipe sums images and waveforms with numpy (``ndarray.sum``, ``np.mean``, ``np.average``),
and numpy adds floating-point values with pairwise summation (``@TYPE@_pairwise_sum`` in
numpy's ``loops_utils.h.src``), not left to right. The functions here replay numpy's blocking
and operation order exactly, in the dtype of the input, so float32 sums and everything
derived from them match ctapipe bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: numpy's pairwise-summation leaf size: blocks of up to this many values are summed with
#: 8 accumulators; longer ranges are halved
_PW_BLOCKSIZE = 128


@njit(cache=True)
def _pairwise_block(a, start, n):
    """numpy's pairwise-sum leaf: ``a[start:start + n]`` for 1 <= n <= 128, in ``a``'s dtype.

    Fewer than 8 values are added left to right (numpy starts from -0.0, which for n >= 1
    is the same as starting from ``a[start]``); otherwise 8 interleaved accumulators,
    combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the remainder.
    """
    if n < 8:
        res = a[start]
        for i in range(start + 1, start + n):
            res += a[i]
        return res
    r0 = a[start]
    r1 = a[start + 1]
    r2 = a[start + 2]
    r3 = a[start + 3]
    r4 = a[start + 4]
    r5 = a[start + 5]
    r6 = a[start + 6]
    r7 = a[start + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        j = start + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum(a, start, n, short_from_zero=False):
    """numpy's pairwise sum of ``a[start:start + n]`` in ``a``'s dtype (1-D ``a``, any n >= 0).

    Parameters
    ----------
    a : ndarray
        1-D float array (float32 sums stay float32, as in numpy).
    start, n : int
        First index and number of values.
    short_from_zero : bool, optional
        Sums of fewer than 8 values start from +0.0 instead of numpy's -0.0 (this only
        changes the sign of an all -0.0 sum). Ranges of 8 or more values are unaffected.

    Returns
    -------
    scalar of ``a``'s dtype
        ``0.0`` for n == 0. Ranges longer than 128 are split at ``n // 2`` rounded down to a
        multiple of 8, exactly like numpy, so the result is bit-identical to numpy's
        ``@TYPE@_pairwise_sum``. ``np.add.reduce`` adds this to its identity 0: see
        `_add_reduce`.

    Notes
    -----
    The recursion is unrolled on an explicit stack: numba cannot cache self-recursive
    functions reliably (numba issue #6061). Its depth is below log2(n / 64) + 1, so 64 levels
    cover any array that fits in memory.
    """
    if n <= _PW_BLOCKSIZE:
        if n <= 0:
            return np.float32(0.0)  # unified with a's dtype by numba
        res = _pairwise_block(a, start, n)
        if short_from_zero and n < 8 and res == 0:
            res = abs(res)  # +0.0 + res: the same sum started from +0.0
        return res
    st_start = np.empty(64, np.int64)
    st_n = np.empty(64, np.int64)
    st_phase = np.empty(64, np.int64)
    vals = np.empty(64, a.dtype)
    nv = 0
    st_start[0] = start
    st_n[0] = n
    st_phase[0] = 0
    sp = 1
    while sp > 0:
        s = st_start[sp - 1]
        m = st_n[sp - 1]
        if m <= _PW_BLOCKSIZE:
            sp -= 1
            vals[nv] = _pairwise_block(a, s, m)
            nv += 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        ph = st_phase[sp - 1]
        if ph == 0:
            st_phase[sp - 1] = 1
            st_start[sp] = s
            st_n[sp] = n2
        elif ph == 1:
            st_phase[sp - 1] = 2
            st_start[sp] = s + n2
            st_n[sp] = m - n2
        else:
            sp -= 1
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            continue
        st_phase[sp] = 0
        sp += 1
    return vals[0]


@njit(cache=True)
def _add_reduce(a, start, n):
    """``np.add.reduce(a[start:start + n])`` (= ``ndarray.sum``) for a 1-D float ``a``:
    numpy adds the pairwise sum to the identity 0.0 (so an all -0.0 sum is +0.0)."""
    s = _pairwise_sum(a, start, n)
    if s == 0:
        s = abs(s)  # 0.0 + s, in s's dtype
    return s
