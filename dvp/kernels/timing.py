"""Timing parameters (peak time vs. longitudinal coordinate), batch kernel for ctapipe 0.28.

ctapipe's ``timing_parameters`` fits ``peak_time = slope * longi + intercept`` over the
cleaned pixels with ``lts_linear_regression(samples=5)``: a least-trimmed-squares fit that
starts from 5 random pairs of points and iterates C-steps (refit on the 85 % of points with
the smallest squared residuals, at most 20 times, until the residual sum of squares changes
by less than 1e-12) and keeps the start with the lowest residual sum of squares.

The C-steps here are ctapipe's: same sample size ``int64(0.85 * n)``, same stopping rule,
the 2x2 normal equations solved through the LU factorisation and inverse that LAPACK uses
(so the ``det < 2 eps`` test for degenerate fits decides alike), and the same treatment of
degenerate fits, including numba's ``argsort`` order of an all-NaN residual array. Several
shortcuts reach the same subsets, hence the same results up to float rounding (sums are
taken in another order): the k smallest residuals are found by selection, or by swapping the
few points that cross the kept/dropped boundary, instead of a full sort (only ties at the
cut, which ctapipe's unstable argsort breaks arbitrarily, can be resolved differently); a
C-step that reselects its own subset stops at once (ctapipe refits it, to the same numbers
up to rounding, and stops or keeps reselecting it); and a start that reaches a subset an earlier converged start went through
takes that start's outcome (see ``_lts``).

ctapipe draws the starting pairs from a module-level RNG, so its result for an image depends
on what was processed before. dvp's result must depend on the image alone: the starting
pairs are fixed fractions of the number of fitted points, drawn once from
``np.random.default_rng(seed)``. ``_timing_parameters_with_pairs`` accepts explicit
starting pairs, to replay ctapipe's draws in tests.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .hillas import _as_float32_image, _check_batch, _check_pixels, _mask_bytes, _masked_pixels
from .parameters import _hillas_columns

TIMING_KEYS = ("slope", "intercept", "deviation")

# ctapipe.fitting constants
_EPS_DET = 2 * np.finfo(np.float64).eps
RELATIVE_SAMPLE_SIZE = 0.85
MAX_ITERATIONS = 20
CONVERGENCE_EPS = 1e-12
DEFAULT_SAMPLES = 5


@njit(cache=True)
def _solve_normal_equations(a11, a12, a22, r0, r1):
    """beta = inv([[a11, a12], [a12, a22]]) @ [r0, r1] as numba's np.linalg det/inv compute it.

    LU with partial pivoting (getrf, pivot scaled by its reciprocal), ``det < 2 eps`` gives
    NaN as in ctapipe's ``linear_regression``, inverse via trtri + getri.
    """
    if abs(a12) > abs(a11):  # row interchange
        u11 = a12
        u12 = a22
        other = a11
        other_2 = a12
        swapped = True
    else:
        u11 = a11
        u12 = a12
        other = a12
        other_2 = a22
        swapped = False
    if u11 == 0.0:
        return np.nan, np.nan
    lower = other * (1.0 / u11)
    u22 = other_2 - lower * u12
    det = u11 * u22
    if swapped:
        det = -det
    if not det >= _EPS_DET:
        return np.nan, np.nan
    i11 = 1.0 / u11
    i22 = 1.0 / u22
    i12 = (i11 * u12) * -i22
    c00 = i11 - i12 * lower
    c10 = -(i22 * lower)
    if swapped:
        inv00, inv01, inv10, inv11 = i12, c00, i22, c10
    else:
        inv00, inv01, inv10, inv11 = c00, i12, c10, i22
    return inv00 * r0 + inv01 * r1, inv10 * r0 + inv11 * r1


@njit(cache=True)
def _kth_smallest(src, n, kk, buf_a, buf_b):
    """Value of rank ``kk`` (0-based) of ``src[:n]`` (left unchanged).

    Quickselect whose partitions are branch-free compactions into two buffers (values below
    the pivot stay in front of the current buffer, values above go to the other one, values
    equal to it are only counted): the side of the pivot a residual falls on is
    unpredictable, so a branching partition or a heap pays a misprediction per element.
    """
    cur = src
    other = buf_b
    length = n
    while length > 1:
        x0 = cur[0]
        x1 = cur[length >> 1]
        x2 = cur[length - 1]
        pivot = max(min(x0, x1), min(max(x0, x1), x2))  # median of three
        dst = buf_a if cur is src else cur
        n_lo = 0
        n_hi = 0
        for i in range(length):
            x = cur[i]
            dst[n_lo] = x
            other[n_hi] = x
            n_lo += x < pivot
            n_hi += x > pivot
        if kk < n_lo:
            cur = dst
            length = n_lo
        elif kk < length - n_hi:
            return pivot
        else:
            kk -= length - n_hi
            length = n_hi
            other, cur = dst, other
    return cur[0]


@njit(cache=True)
def _full_select(r2, n, k, m, buf_a, buf_b, excl, ex, expos):
    """Drop the m largest of ``r2[:n]`` (``excl`` must be all False on entry)."""
    cut = _kth_smallest(r2, n, k - 1, buf_a, buf_b)
    c = 0
    for j in range(n):
        ex[c] = j
        c += r2[j] > cut
    if c < m:  # ties at the cut (ctapipe's argsort orders them arbitrarily too)
        for j in range(n - 1, -1, -1):
            if r2[j] == cut:
                ex[c] = j
                c += 1
                if c == m:
                    break
    for i in range(m):
        j = ex[i]
        expos[j] = i
        excl[j] = True


@njit(cache=True)
def _residual_pass(x, y, n, b0, b1, excl, r2):
    """Squared residuals of all points under (b0, b1) into r2. Returns their sum over the
    fitted subset (points not in ``excl``), the largest inside and the smallest outside it."""
    # four interleaved accumulators: no serial dependency chain, same result for same subset
    e0 = 0.0
    e1 = 0.0
    e2 = 0.0
    e3 = 0.0
    max_in = -np.inf
    min_out = np.inf
    n4 = n - n % 4
    for j in range(0, n4, 4):
        r = y[j] - (x[j] * b0 + b1)
        v0 = r * r
        r = y[j + 1] - (x[j + 1] * b0 + b1)
        v1 = r * r
        r = y[j + 2] - (x[j + 2] * b0 + b1)
        v2 = r * r
        r = y[j + 3] - (x[j + 3] * b0 + b1)
        v3 = r * r
        r2[j] = v0
        r2[j + 1] = v1
        r2[j + 2] = v2
        r2[j + 3] = v3
        # selects, not branches: which points are dropped is unpredictable
        d0 = excl[j]
        d1 = excl[j + 1]
        d2 = excl[j + 2]
        d3 = excl[j + 3]
        e0 += 0.0 if d0 else v0
        e1 += 0.0 if d1 else v1
        e2 += 0.0 if d2 else v2
        e3 += 0.0 if d3 else v3
        max_in = max(max_in, max(max(-np.inf if d0 else v0, -np.inf if d1 else v1),
                                 max(-np.inf if d2 else v2, -np.inf if d3 else v3)))
        min_out = min(min_out, min(min(v0 if d0 else np.inf, v1 if d1 else np.inf),
                                   min(v2 if d2 else np.inf, v3 if d3 else np.inf)))
    for j in range(n4, n):
        r = y[j] - (x[j] * b0 + b1)
        v = r * r
        r2[j] = v
        d = excl[j]
        e0 += 0.0 if d else v
        max_in = max(max_in, -np.inf if d else v)
        min_out = min(min_out, v if d else np.inf)
    return (e0 + e1) + (e2 + e3), max_in, min_out


#: above this many boundary candidates a full selection is cheaper than sorting them
_MAX_CANDIDATES = 24


@njit(cache=True)
def _swap_candidates(r2, n, m, max_in, min_out, excl, ex, expos, hv, hi):
    """Update the dropped set in place when few points cross the kept/dropped boundary.

    Only kept points with r2 >= min_out and dropped points with r2 <= max_in can change
    sides; sorted by r2, the first (number of such kept points) of them are kept. Returns True
    (and changes nothing) when there are more than ``_MAX_CANDIDATES`` of them.
    """
    a = 0
    for j in range(n):  # branch-free compaction of the kept candidates
        v = r2[j]
        hv[a] = v
        hi[a] = j
        a += (not excl[j]) & (v >= min_out)
    if a > _MAX_CANDIDATES:
        return True
    c = a
    for i in range(m):
        j = ex[i]
        v = r2[j]
        hv[c] = v
        hi[c] = j
        c += v <= max_in
    if c > _MAX_CANDIDATES:
        return True
    for i in range(1, c):  # stable insertion sort by r2
        v = hv[i]
        jj = hi[i]
        t = i - 1
        while t >= 0 and hv[t] > v:
            hv[t + 1] = hv[t]
            hi[t + 1] = hi[t]
            t -= 1
        hv[t + 1] = v
        hi[t + 1] = jj
    # dropped points among the first a enter, kept points after a leave, pairwise
    leave = a
    for i in range(a):
        j = hi[i]
        if excl[j]:
            while excl[hi[leave]]:
                leave += 1
            out_j = hi[leave]
            leave += 1
            pos = expos[j]
            ex[pos] = out_j
            expos[out_j] = pos
            excl[out_j] = True
            excl[j] = False
    return False


@njit(cache=True)
def _lts(x, y, n, starts, max_iterations, eps, keys, excl, r2, work, hv, hi, ex, expos,
         memo_hash, memo_ex, memo_beta, memo_step, memo_final):
    """ctapipe's ``_lts_linear_regression`` for ``x[:n], y[:n]`` from the given starting pairs.

    A C-step keeps the k smallest squared residuals, i.e. drops the m = n - k largest (flags
    ``excl``, list ``ex``). After a fit only points whose residual crosses between the kept and
    the dropped set can change sides: the kept points above the smallest dropped residual and
    the dropped points below the largest kept one; if there are none the subset is unchanged
    (converged), else the few candidates are sorted (``_swap_candidates``). A full selection is
    needed for the first C-step of a start and when many points cross. The fit's sums are the
    totals minus the dropped points' sums.

    A C-step's outcome depends only on its subset, so once a start reaches a subset that an
    earlier converged start went through, the rest of its path is that start's path: the
    result is read from the memo (``memo_*``: per stored step the subset's hash (xor of
    ``keys``) and dropped list, fit slope / intercept / error, iteration index, and the index of
    its start's last step, negative if that start stopped at a fixed point rather than on the
    error criterion), with ctapipe's stopping rules (error change below eps, 20 iterations)
    applied as if the path had been recomputed.
    """
    k = np.int64(RELATIVE_SAMPLE_SIZE * n)
    m = n - k
    t_xx = 0.0
    t_x = 0.0
    t_y = 0.0
    t_xy = 0.0
    for j in range(n):
        xj = x[j]
        t_xx += xj * xj
        t_x += xj
        t_y += y[j]
        t_xy += xj * y[j]
    best_b0 = np.nan
    best_b1 = np.nan
    best_error = np.inf
    n_stored = 0  # memo entries of finished, converged starts
    for s in range(starts.shape[0]):
        i0 = starts[s, 0]
        i1 = starts[s, 1]
        x0 = x[i0]
        x1 = x[i1]
        y0 = y[i0]
        y1 = y[i1]
        b0, b1 = _solve_normal_equations(x0 * x0 + x1 * x1, x0 + x1, 2.0, x0 * y0 + x1 * y1, y0 + y1)
        if np.isnan(b0):
            continue  # error NaN: never the best
        e0 = y0 - (x0 * b0 + b1)
        e1 = y1 - (x1 * b0 + b1)
        error = e0 * e0 + e1 * e1
        for j in range(n):
            excl[j] = False
        max_in, min_out = 0.0, 0.0
        _residual_pass(x, y, n, b0, b1, excl, r2)
        have_prev = False
        first = n_stored
        n_steps = 0
        stop = 0  # 0: iterations exhausted or memo hit, 1: fixed point, 2: error criterion
        had_nan = False
        for it in range(max_iterations):
            if np.isnan(b0):
                # NaN residuals: ctapipe keeps the first k of numba's argsort of all NaN
                had_nan = True
                order = np.argsort(np.full(n, np.nan))
                if have_prev:
                    for i in range(m):
                        excl[ex[i]] = False
                for i in range(m):
                    j = order[k + i]
                    ex[i] = j
                    expos[j] = i
                    excl[j] = True
            else:
                full = not have_prev
                if have_prev:
                    if max_in <= min_out:
                        stop = 1
                        break  # subset unchanged: ctapipe's refit reproduces this fit
                    full = _swap_candidates(r2, n, m, max_in, min_out, excl, ex, expos, hv, hi)
                    if full:
                        for i in range(m):
                            excl[ex[i]] = False
                if full:
                    _full_select(r2, n, k, m, work, hv, excl, ex, expos)
            h = np.uint64(0)
            for i in range(m):
                h ^= keys[ex[i]]
            hit = -1
            for t in range(n_stored):
                if memo_hash[t] == h:
                    same = True
                    for i in range(m):
                        if not excl[memo_ex[t, i]]:
                            same = False
                            break
                    if same:
                        hit = t
                        break
            if hit >= 0:
                if abs(error - memo_beta[hit, 2]) < eps:
                    final = hit  # stops right after refitting this subset
                else:
                    last = abs(memo_final[hit]) - 1
                    to_go = memo_step[last] - memo_step[hit]
                    left = max_iterations - 1 - it
                    if to_go == 0 and memo_final[hit] > 0:
                        final = -1  # that start stopped here on its own error history: recompute
                    elif to_go <= left:
                        final = last
                    else:
                        final = hit + left
                if final >= 0:
                    b0 = memo_beta[final, 0]
                    b1 = memo_beta[final, 1]
                    error = memo_beta[final, 2]
                    break
            s_xx = t_xx
            s_x = t_x
            s_y = t_y
            s_xy = t_xy
            for i in range(m):
                j = ex[i]
                xj = x[j]
                s_xx -= xj * xj
                s_x -= xj
                s_y -= y[j]
                s_xy -= xj * y[j]
            b0, b1 = _solve_normal_equations(s_xx, s_x, np.float64(k), s_xy, s_y)
            last_error = error
            if np.isnan(b0):
                error = np.nan
            else:
                error, max_in, min_out = _residual_pass(x, y, n, b0, b1, excl, r2)
            t = first + n_steps
            memo_hash[t] = h
            for i in range(m):
                memo_ex[t, i] = ex[i]
            memo_beta[t, 0] = b0
            memo_beta[t, 1] = b1
            memo_beta[t, 2] = error
            memo_step[t] = it
            n_steps += 1
            have_prev = True
            if abs(last_error - error) < eps:
                stop = 2
                break
        if stop > 0 and not had_nan:
            # 1-based index of the last step; negative: fixed point (the path may be joined
            # at its last step), positive: error criterion (it may not)
            last = first + n_steps
            for t in range(first, last):
                memo_final[t] = -last if stop == 1 else last
            n_stored = last
        if error < best_error:
            best_error = error
            best_b0 = b0
            best_b1 = b1
    return best_b0, best_b1


@njit(cache=True)
def _timing(pix_x, pix_y, image, peak_time, mask_bytes, fov_lon, fov_lat, psi_deg, selected, pairs, explicit,
            fractions, max_iterations, eps, keys, idx, lon_all, t_all, xs, ys, r2, work, hv, excl, hi, ex, expos,
            memo_hash, memo_ex, memo_beta, memo_step, memo_final, starts, out):
    n_ev, n_pix = image.shape
    n_samples = starts.shape[0]
    for e in range(n_ev):
        for k in range(3):
            out[k, e] = np.nan
        # NaN fov_lon: ctapipe's hillas_parameters raised, timing is never computed
        if not selected[e] or not np.isfinite(fov_lon[e]):
            continue
        cx = fov_lon[e]
        cy = fov_lat[e]
        psi = np.deg2rad(psi_deg[e])
        cos_psi = np.cos(psi)
        sin_psi = np.sin(psi)
        m = _masked_pixels(mask_bytes, e * n_pix, n_pix, idx)
        n = 0
        negative = False
        for i in range(m):
            p = idx[i]
            if image[e, p] < 0:
                negative = True
            lon = (pix_x[p] - cx) * cos_psi + (pix_y[p] - cy) * sin_psi
            t = np.float64(peak_time[e, p])
            lon_all[i] = lon
            t_all[i] = t
            if np.isfinite(lon) and np.isfinite(t):
                xs[n] = lon
                ys[n] = t
                n += 1
        if negative or m == 0:
            continue  # ctapipe raises for negative pixels
        if n < 2:
            continue
        if explicit:
            for s in range(n_samples):
                i0 = pairs[e, s, 0]
                i1 = pairs[e, s, 1]
                if i0 < 0 or i0 >= n or i1 < 0 or i1 >= n or i0 == i1:
                    raise ValueError("LTS starting pair out of range")
                starts[s, 0] = i0
                starts[s, 1] = i1
        else:
            for s in range(n_samples):
                i0 = min(np.int64(fractions[s, 0] * n), n - 1)
                i1 = min(np.int64(fractions[s, 1] * (n - 1)), n - 2)
                if i1 >= i0:
                    i1 += 1
                starts[s, 0] = i0
                starts[s, 1] = i1
        b0, b1 = _lts(xs, ys, n, starts, max_iterations, eps, keys, excl, r2, work, hv, hi, ex, expos,
                      memo_hash, memo_ex, memo_beta, memo_step, memo_final)
        # ctapipe's rmse over all cleaned pixels (NaN if any peak time is not finite)
        acc = 0.0
        for i in range(m):
            d = lon_all[i] * b0 + b1 - t_all[i]
            acc += d * d
        out[0, e] = b0
        out[1, e] = b1
        out[2, e] = np.sqrt(acc / m)


def _run_timing(pix_x, pix_y, image, peak_time, mask, hillas, selected, samples, seed, pairs):
    name = "timing_parameters"
    n_pix, (pix_x, pix_y) = _check_pixels(name, pix_x=pix_x, pix_y=pix_y)
    image, mask, selected = _check_batch(name, image, mask, n_pix, selected)
    image = _as_float32_image(name, image)
    peak_time = np.asarray(peak_time)
    if peak_time.shape != image.shape or peak_time.dtype.kind != "f":
        raise ValueError(f"{name}: peak_time must be float {image.shape}, got {peak_time.dtype} {peak_time.shape}")
    n_ev = image.shape[0]
    fov_lon, fov_lat, psi = _hillas_columns(name, hillas, n_ev, ("fov_lon", "fov_lat", "psi"))
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"{name}: samples must be >= 1, got {samples}")
    if pairs is None:
        explicit = False
        pairs = np.zeros((1, samples, 2), np.int64)
        fractions = np.random.default_rng(seed).random((samples, 2))
    else:
        explicit = True
        pairs = np.ascontiguousarray(pairs, np.int64)
        if pairs.shape != (n_ev, samples, 2):
            raise ValueError(f"{name}: pairs must be ({n_ev}, {samples}, 2), got {pairs.shape}")
        fractions = np.zeros((samples, 2))
    out = np.empty((len(TIMING_KEYS), n_ev), np.float64)
    # scratch, allocated once per batch: per-pixel work arrays; candidate buffers (hv, hi)
    # also hold the dropped list appended after up to _MAX_CANDIDATES + n pixels
    f64 = np.empty((6, n_pix), np.float64)
    idx, ex, expos = np.empty((3, n_pix), np.int64)
    hv = np.empty(2 * n_pix + 8, np.float64)
    hi = np.empty(2 * n_pix + 8, np.int64)
    # memo, per stored C-step: subset hash, dropped list (m <= n // 6 + 2), slope / intercept /
    # error, iteration, last step of its start
    n_memo = samples * MAX_ITERATIONS
    memo = (np.empty(n_memo, np.uint64), np.empty((n_memo, n_pix // 6 + 2), np.int32), np.empty((n_memo, 3)),
            np.empty(n_memo, np.int64), np.empty(n_memo, np.int64))
    keys = np.random.default_rng(0x5EED).integers(0, 2**63, n_pix, dtype=np.int64).astype(np.uint64)
    _timing(pix_x, pix_y, image, np.ascontiguousarray(peak_time), _mask_bytes(mask), fov_lon, fov_lat, psi,
            selected, pairs, explicit, fractions, MAX_ITERATIONS, CONVERGENCE_EPS, keys, idx, *f64, hv,
            np.zeros(n_pix, np.bool_), hi, ex, expos, *memo, np.empty((samples, 2), np.int64), out)
    return dict(zip(TIMING_KEYS, out))


def timing_parameters(pix_x, pix_y, image, peak_time, mask, hillas, selected=None, samples=DEFAULT_SAMPLES,
                      seed=0):
    """Timing parameters of a batch of cleaned images (ctapipe 0.28 ``timing_parameters``).

    Parameters
    ----------
    pix_x, pix_y : ndarray, shape (n_pixels,), float64, deg
        Pixel positions in the telescope frame.
    image : ndarray, shape (n_events, n_pixels), float32, p.e.
        Only checked for negative cleaned pixels (ctapipe raises there; NaN here).
    peak_time : ndarray, shape (n_events, n_pixels), float32 or float64, ns
    mask : ndarray, shape (n_events, n_pixels), bool
    hillas : dict
        Output of ``dvp.kernels.hillas.hillas_parameters`` (uses fov_lon, fov_lat, psi).
    selected : ndarray, shape (n_events,), bool, optional
        Events with False are skipped (all outputs NaN).
    samples : int
        Number of LTS starting pairs (ctapipe: 5).
    seed : int
        Seed of the starting-pair fractions; the result for an image depends only on the
        image, ``samples`` and ``seed``, never on the rest of the batch.

    Returns
    -------
    dict of str -> ndarray, shape (n_events,), float64
        slope (ns/deg), intercept (ns) and deviation (ns, RMS residual over all cleaned
        pixels). NaN where fewer than 2 finite points, all starting fits are degenerate, the
        Hillas fit failed or its psi is NaN.
    """
    return _run_timing(pix_x, pix_y, image, peak_time, mask, hillas, selected, samples, seed, None)


def _timing_parameters_with_pairs(pix_x, pix_y, image, peak_time, mask, hillas, pairs, selected=None):
    """Like ``timing_parameters`` with explicit LTS starting pairs.

    ``pairs`` (n_events, samples, 2) int: indices into the image's cleaned pixels with finite
    longitudinal coordinate and peak time, in pixel order (what ctapipe's
    ``choose_two_without_replacement`` draws). Ignored for images with fewer than 2 points.
    """
    pairs = np.asarray(pairs)
    return _run_timing(pix_x, pix_y, image, peak_time, mask, hillas, selected, pairs.shape[1], 0, pairs)
