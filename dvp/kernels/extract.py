"""Image extraction: waveforms -> charge (p.e.) and peak time (ns), as ctapipe 0.28.

Batch kernels reproducing ``ctapipe/image/extractor.py`` (all extractors except the
FlashCam-specific one and the calibration-only ``VarianceExtractor``) and the invalid
pixel handler ``NeighborAverage`` of ``ctapipe/image/invalid_pixels.py``.

A batch is ``n_events`` gain-selected events of one camera:

* ``waveforms`` ``(n_events, n_pixels, n_samples)`` float32, p.e. per sample;
* ``selected_gain_channel`` ``(n_events, n_pixels)`` integer, 0 or 1;
* ``broken_pixels`` ``(n_events, n_pixels)`` bool (or ``(n_events, n_channels, n_pixels)``,
  ctapipe's full outlier mask, see `extract`);
* neighbours as CSR (``neighbor_indptr`` ``(n_pixels + 1,)``, ``neighbor_indices``).

Number semantics follow ctapipe bit for bit where ctapipe's own arithmetic is
deterministic: window sums and the time numerator/denominator are accumulated in float64
from the float32 samples, the peak time is rounded to float32 before and after the
division by the sampling rate (ctapipe stores into a float32 output and divides in place),
the neighbour-summed waveform of `neighbor_peak_window_sum` is accumulated in float32 in
CSR order (numba's array arithmetic in ``neighbor_average_maximum``), the global average
waveform is a sequential float32 sum (numpy's reduction over the pixel axis), baselines
use numpy's float32 pairwise summation, and the integration correction is applied as
``float32(float64(charge) * correction[gain])``. Peaks are the first maximum, or the
first NaN, as numpy/numba's ``argmax``.

The only place where bit-identity with a running ctapipe is impossible is the second
pass of `two_pass_window_sum`, which fits a line with ctapipe's randomised least trimmed
squares drawing from a process-global generator (``ctapipe.fitting.FIT_RNG``) whose
state depends on everything the process did before; here each event uses a fresh
``np.random.default_rng(0)`` (the state a fresh ctapipe process starts in).

Performance notes. A batch of LSTCam waveforms (297 kB per event) does not stay in
cache and the neighbour search reads rows in neighbour order, so every kernel prefetches
the next event's rows while it works on the current one (an LLVM prefetch intrinsic).
Peak searches find the first maximum as the largest ``float bits << 32 | (n - 1 - s)``
(valid when the maximum is positive, which the code checks; otherwise and for NaN it
falls back to the plain loop), which vectorises, and `neighbor_peak_window_sum` fuses
that with the neighbour sum so the sum is never stored. Per-pixel float64 window sums
are dependency chains; where one window serves all pixels, four pixels are interleaved.
Numba does not inline helpers that return tuples or slice arrays, so hot loops are
written out. TwoPassWindowSum runs its second pass per event from Python (fresh
generator per event) and is ~100x slower than the single-pass extractors.
"""
from __future__ import annotations

import fnmatch
import numbers
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._numeric import _pairwise_sum
from ._simd import N_SAMPLES as N_SAMPLES_40, neighbor_peak40, window_sums8
from .islands import check_csr

__all__ = [
    "EXTRACTORS",
    "TWO_PASS_CORE_THRESHOLD",
    "two_pass_core_threshold",
    "integration_correction",
    "sliding_window_correction",
    "extract",
    "full_waveform_sum",
    "fixed_window_sum",
    "global_peak_window_sum",
    "local_peak_window_sum",
    "sliding_window_max_sum",
    "neighbor_peak_window_sum",
    "baseline_subtracted_neighbor_peak_window_sum",
    "two_pass_window_sum",
    "subtract_baseline",
    "neighbor_average",
]

#: ctapipe 0.28 extractor class name -> {trait name: default value}
EXTRACTORS: dict[str, dict] = {
    "FullWaveformSum": {},
    "FixedWindowSum": {"peak_index": 0, "window_width": 7, "window_shift": 0,
                       "apply_integration_correction": True},
    "GlobalPeakWindowSum": {"window_width": 7, "window_shift": 3, "apply_integration_correction": True,
                            "pixel_fraction": 1.0},
    "LocalPeakWindowSum": {"window_width": 7, "window_shift": 3, "apply_integration_correction": True},
    "SlidingWindowMaxSum": {"window_width": 7, "apply_integration_correction": True},
    "NeighborPeakWindowSum": {"window_width": 7, "window_shift": 3, "local_weight": 0,
                              "apply_integration_correction": True},
    "BaselineSubtractedNeighborPeakWindowSum": {"window_width": 7, "window_shift": 3, "local_weight": 0,
                                                "apply_integration_correction": True,
                                                "baseline_start": 0, "baseline_end": 10},
    # core_threshold's ctapipe default depends on the telescope type: see TWO_PASS_CORE_THRESHOLD
    "TwoPassWindowSum": {"core_threshold": 6.0, "disable_second_pass": False,
                         "apply_integration_correction": True,
                         "invalid_pixel_handler_type": "NeighborAverage"},
}

#: ctapipe's TelescopeParameter default of TwoPassWindowSum.core_threshold: (pattern on the
#: telescope type string such as "LST_LST_LSTCam", value); later matches win.
TWO_PASS_CORE_THRESHOLD = (("*", 6.0), ("LST*", 6.0), ("MST*", 8.0), ("SST*", 4.0))

# TwoPassWindowSum's fixed windows (width, shift): 1st pass and 2nd pass default, 2nd pass
# window that would start before the readout, 2nd pass window that would end after it
_TP_WINDOW = (5, 2)
_TP_BEFORE = (5, 0)
_TP_AFTER = (6, 4)
_INVALID_PIXEL_HANDLERS = ("NeighborAverage", None)


def two_pass_core_threshold(tel_type: str) -> float:
    """ctapipe's default ``TwoPassWindowSum.core_threshold`` for a telescope type string."""
    value = None
    for pattern, v in TWO_PASS_CORE_THRESHOLD:
        if fnmatch.fnmatchcase(tel_type, pattern):
            value = v
    return value


# --------------------------------------------------------------------------------------
# low-level helpers


def _f32_bits(x):
    """Reinterpret a float32 as int32 (numba has no scalar bitcast: see the overload)."""
    return np.float32(x).view(np.int32)


def _f64_bits(x):
    """Reinterpret a float64 as int64."""
    return np.float64(x).view(np.int64)


def _prefetch(arr, row, col):
    """Hint the CPU to fetch the cache line of ``arr[row, col]``; a no-op in Python."""


@intrinsic
def _f32_bits_intrinsic(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _f64_bits_intrinsic(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _prefetch_intrinsic(typingctx, arr, row, col):
    if not isinstance(arr, types.Array) or arr.ndim != 2 or not isinstance(row, types.Integer) \
            or not isinstance(col, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        j = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i, j], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read, high temporal locality, data cache
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, row, col), codegen


@overload(_f32_bits)
def _f32_bits_overload(x):
    if x == types.float32:
        return lambda x: _f32_bits_intrinsic(x)


@overload(_f64_bits)
def _f64_bits_overload(x):
    if x == types.float64:
        return lambda x: _f64_bits_intrinsic(x)


@overload(_prefetch)
def _prefetch_overload(arr, row, col):
    if isinstance(arr, types.Array) and arr.ndim == 2:
        return lambda arr, row, col: _prefetch_intrinsic(arr, row, col)


@njit(cache=True)
def _argmax_first(a, n):
    """numba's ``np.argmax`` of ``a[:n]``: index of the first NaN, else of the first maximum."""
    best = a[0]
    if best != best:
        return 0
    idx = 0
    for i in range(1, n):
        v = a[i]
        if v != v:
            return i
        if v > best:
            best = v
            idx = i
    return idx


@njit(cache=True)
def _argmax_row(w, p, n):
    """`_argmax_first` of ``w[p, :n]`` (no view: numba views cost reference counting)."""
    best = w[p, 0]
    if best != best:
        return 0
    idx = 0
    for i in range(1, n):
        v = w[p, i]
        if v != v:
            return i
        if v > best:
            best = v
            idx = i
    return idx


@njit(inline="always")
def _accumulate(w, p, i, sm, num, den):
    """One sample of ctapipe's ``extract_around_peak``: the float64 sum, and the
    positive-weighted time sums of the peak time."""
    v = np.float64(w[p, i])
    # branch-free: the sign of noise samples is unpredictable
    pos = v if v > 0.0 else 0.0
    return sm + v, num + pos * i, den + pos


@njit(cache=True)
def _window(w, p, start, end, peak, rate):
    """ctapipe's ``extract_around_peak`` on ``w[p, start:end]`` (already clipped).

    Returns (sum, peak time in ns) as float32 with ctapipe's rounding.
    """
    s = 0.0
    num = 0.0
    den = 0.0
    for i in range(start, end):
        s, num, den = _accumulate(w, p, i, s, num, den)
    if den > 0.0:
        t = np.float32(num / den)
    else:
        t = np.float32(peak)
    return np.float32(s), np.float32(np.float64(t) / rate)


@njit(cache=True)
def _window_at(w, p, peak, width, shift, n_s, rate):
    start = peak - shift
    end = start + width
    if start < 0:
        start = 0
    if end > n_s:
        end = n_s
    return _window(w, p, start, end, peak, rate)


@njit(cache=True)
def _corrected(charge, correction, gain):
    # ctapipe: (charge * correction[selected_gain_channel]).astype(charge.dtype)
    return np.float32(np.float64(charge) * correction[gain])


# --------------------------------------------------------------------------------------
# njit bodies, one per extractor (loop over events inside)


@njit(cache=True)
def _prefetch_row(nxt, p, start, end):
    """Prefetch ``nxt[p, start:end]`` (64-byte lines of float32)."""
    for c in range(start, end, 16):
        _prefetch(nxt, p, c)
    if end > start:
        _prefetch(nxt, p, end - 1)


@njit(cache=True)
def _finish(charge, peak_time, ev, p, sm, num, den, peak, rate, correction, gain):
    # extract_around_peak's output rounding, then the integration correction
    if den > 0.0:
        t = np.float32(num / den)
    else:
        t = np.float32(peak)
    charge[ev, p] = np.float32(np.float64(np.float32(sm)) * correction[gain])
    peak_time[ev, p] = np.float32(np.float64(t) / rate)


@njit(cache=True)
def _same_window(w, nxt, prefetch, peak, width, shift, rate, sgc, correction, ev, charge, peak_time):
    """``extract_around_peak`` with one peak for all pixels of an event.

    Four pixels are interleaved: each pixel's float64 sums are sequential chains (to
    round as ctapipe does), and four independent chains keep the adder busy.
    """
    n_pix, n_s = w.shape
    start = max(peak - shift, 0)
    end = min(peak - shift + width, n_s)
    for p0 in range(0, n_pix, 4):
        p1 = min(p0 + 1, n_pix - 1)
        p2 = min(p0 + 2, n_pix - 1)
        p3 = min(p0 + 3, n_pix - 1)
        if prefetch:
            _prefetch_row(nxt, p0, start, end)
            _prefetch_row(nxt, p1, start, end)
            _prefetch_row(nxt, p2, start, end)
            _prefetch_row(nxt, p3, start, end)
        s0 = s1 = s2 = s3 = 0.0
        n0 = n1 = n2 = n3 = 0.0
        d0 = d1 = d2 = d3 = 0.0
        for i in range(start, end):
            v0 = np.float64(w[p0, i])
            v1 = np.float64(w[p1, i])
            v2 = np.float64(w[p2, i])
            v3 = np.float64(w[p3, i])
            s0 += v0
            s1 += v1
            s2 += v2
            s3 += v3
            # branch-free: the sign of noise samples is unpredictable
            x0 = v0 if v0 > 0.0 else 0.0
            x1 = v1 if v1 > 0.0 else 0.0
            x2 = v2 if v2 > 0.0 else 0.0
            x3 = v3 if v3 > 0.0 else 0.0
            n0 += x0 * i
            n1 += x1 * i
            n2 += x2 * i
            n3 += x3 * i
            d0 += x0
            d1 += x1
            d2 += x2
            d3 += x3
        _finish(charge, peak_time, ev, p0, s0, n0, d0, peak, rate, correction, sgc[ev, p0])
        _finish(charge, peak_time, ev, p1, s1, n1, d1, peak, rate, correction, sgc[ev, p1])
        _finish(charge, peak_time, ev, p2, s2, n2, d2, peak, rate, correction, sgc[ev, p2])
        _finish(charge, peak_time, ev, p3, s3, n3, d3, peak, rate, correction, sgc[ev, p3])


@njit(cache=True)
def _fixed_window_sum(wf, sgc, correction, rate, peak_index, width, shift, charge, peak_time):
    n_ev = wf.shape[0]
    for ev in range(n_ev):
        _same_window(wf[ev], wf[min(ev + 1, n_ev - 1)], ev + 1 < n_ev, peak_index, width, shift, rate, sgc,
                     correction, ev, charge, peak_time)


@njit(cache=True)
def _own_peaks(w, nxt, prefetch, peaks):
    """argmax of every pixel's own waveform (first maximum / first NaN, as numpy)."""
    n_pix, n_s = w.shape
    for p in range(n_pix):
        if prefetch:
            _prefetch_row(nxt, p, 0, n_s)
        # first maximum = largest bits << 32 | (n_s - 1 - s) when the maximum is > 0
        m = np.int64(-9223372036854775807 - 1)
        nan = False
        for s in range(n_s):
            v = w[p, s]
            nan |= v != v
            m = max(m, (np.int64(_f32_bits(v)) << 32) | (n_s - 1 - s))
        if not nan and (m >> 32) > 0:
            peaks[p] = n_s - 1 - (m & 0xFFFFFFFF)
        else:
            peaks[p] = _argmax_row(w, p, n_s)


@njit(cache=True)
def _local_peak_window_sum(wf, sgc, correction, rate, width, shift, charge, peak_time):
    n_ev, n_pix, n_s = wf.shape
    peaks = np.empty(n_pix, np.int64)
    for ev in range(n_ev):
        _own_peaks(wf[ev], wf[min(ev + 1, n_ev - 1)], ev + 1 < n_ev, peaks)
        _windows_at_peaks(wf[ev], peaks, width, shift, rate, sgc, correction, ev, charge, peak_time)


@njit(cache=True)
def _global_peak_window_sum(wf, sgc, correction, rate, width, shift, n_brightest, broken, charge,
                            peak_time):
    """``n_brightest`` < 0: average of all non-broken pixels (pixel_fraction == 1)."""
    n_ev, n_pix, n_s = wf.shape
    avg = np.empty(n_s, np.float32)
    maxval = np.empty(n_pix, np.float32)
    for ev in range(n_ev):
        w = wf[ev]
        nxt = wf[min(ev + 1, n_ev - 1)]
        avg[:] = 0.0
        if n_brightest < 0:
            # numpy's mean over the pixel axis: sequential float32 sum, then / count
            count = 0
            for p in range(n_pix):
                if ev + 1 < n_ev:
                    _prefetch_row(nxt, p, 0, n_s)
                if broken[ev, p]:
                    continue
                count += 1
                for s in range(n_s):
                    avg[s] += w[p, s]
        else:
            for p in range(n_pix):
                if broken[ev, p]:
                    maxval[p] = -np.inf
                else:
                    m = -np.inf
                    for s in range(n_s):
                        # np.max propagates NaN
                        v = w[p, s]
                        if v > m or v != v:
                            m = v
                            if v != v:
                                break
                    maxval[p] = m
            # heapq.nlargest of (value, index) tuples: by value then index, descending
            order = np.argsort(maxval, kind="mergesort")
            count = n_brightest
            for q in range(n_brightest):
                p = order[n_pix - 1 - q]
                for s in range(n_s):
                    avg[s] += w[p, s]
        if count == 0:
            peak = 0  # mean of nothing is NaN everywhere; argmax of NaNs is 0
        else:
            for s in range(n_s):
                avg[s] = np.float32(np.float64(avg[s]) / count)
            peak = _argmax_first(avg, n_s)
        _same_window(w, w, False, peak, width, shift, rate, sgc, correction, ev, charge, peak_time)


@njit(cache=True)
def _sliding_window_max_sum(wf, sgc, correction, rate, width, charge, peak_time):
    n_ev, n_pix, n_s = wf.shape
    n_sums = n_s - width + 1
    # float32 cumulative sums of 4 pixels at a time (as float64 values): the float32
    # additions of one pixel form a dependency chain, four chains overlap
    cwf = np.zeros((4, n_s + 1))
    sums = np.empty(n_sums)
    for ev in range(n_ev):
        w = wf[ev]
        nxt = wf[min(ev + 1, n_ev - 1)]
        for p0 in range(0, n_pix, 4):
            p1 = min(p0 + 1, n_pix - 1)
            p2 = min(p0 + 2, n_pix - 1)
            p3 = min(p0 + 3, n_pix - 1)
            if ev + 1 < n_ev:
                _prefetch_row(nxt, p0, 0, n_s)
                _prefetch_row(nxt, p1, 0, n_s)
                _prefetch_row(nxt, p2, 0, n_s)
                _prefetch_row(nxt, p3, 0, n_s)
            # ctapipe: float32 np.cumsum, then float64 differences of the cumulative sums
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for s in range(n_s):
                a0 += w[p0, s]
                a1 += w[p1, s]
                a2 += w[p2, s]
                a3 += w[p3, s]
                cwf[0, s + 1] = a0
                cwf[1, s + 1] = a1
                cwf[2, s + 1] = a2
                cwf[3, s + 1] = a3
            for q in range(min(4, n_pix - p0)):
                p = p0 + q
                m = np.int64(-9223372036854775807 - 1)
                nan = False
                for k in range(n_sums):
                    v = cwf[q, k + width] - cwf[q, k]
                    nan |= v != v
                    m = max(m, _f64_bits(v))
                # raw float64 bits order positive sums; else numpy's argmax semantics
                if nan or m <= 0:
                    for k in range(n_sums):
                        sums[k] = cwf[q, k + width] - cwf[q, k]
                    maxpos = _argmax_first(sums, n_sums)
                else:
                    maxpos = 0
                    while _f64_bits(cwf[q, maxpos + width] - cwf[q, maxpos]) != m:
                        maxpos += 1
                best = cwf[q, maxpos + width] - cwf[q, maxpos]
                num = 0.0
                den = 0.0
                for i in range(maxpos, maxpos + width):
                    v = np.float64(w[p, i])
                    pos = v if v > 0.0 else 0.0
                    num += pos * i
                    den += pos
                if den > 0.0:
                    t = np.float32(num / den)
                else:
                    t = np.float32(maxpos + 0.5 * width)
                charge[ev, p] = np.float32(np.float64(np.float32(best)) * correction[sgc[ev, p]])
                peak_time[ev, p] = np.float32(np.float64(t) / rate)


@njit(cache=True)
def _peaks40(w, nxt, prefetch, indptr, indices, flw, has_broken, near_broken, peaks):
    """`neighbor_peak40` for every pixel of a 40-sample event with 3 to 6 neighbours, none of
    them broken; -1 for the others and where the vector path steps aside (`_neighbor_peaks`
    takes those).

    (Looping over the pixels grouped by neighbour count, to spare the branch mispredicted at
    the camera edge, measured 1 us per LSTCam event slower: the pixel order keeps neighbours
    in cache.)
    """
    for p in range(w.shape[0]):
        if prefetch:
            # overlap the memory latency of the next event with this one (64-byte lines)
            _prefetch(nxt, p, 0)
            _prefetch(nxt, p, 16)
            _prefetch(nxt, p, 32)
        a = indptr[p]
        n_nb = indptr[p + 1] - a
        if has_broken and near_broken[p]:
            peaks[p] = -1
        elif n_nb == 6:
            peaks[p] = neighbor_peak40(w, p, indices, a, 6, flw)
        elif n_nb == 5:
            peaks[p] = neighbor_peak40(w, p, indices, a, 5, flw)
        elif n_nb == 4:
            peaks[p] = neighbor_peak40(w, p, indices, a, 4, flw)
        elif n_nb == 3:
            peaks[p] = neighbor_peak40(w, p, indices, a, 3, flw)
        else:
            peaks[p] = -1


@njit(cache=True)
def _neighbor_peaks(w, nxt, prefetch, indptr, indices, local_weight, broken, ev, has_broken,
                    near_broken, acc, slots, weights, peaks):
    """``neighbor_average_maximum`` for one event ``w`` (n_pix, n_s) into ``peaks``.

    With 40 samples, `_peaks40` (explicit vectors) takes every pixel with 3 to 6
    neighbours and no broken one first, and the loop below only those it leaves (-1).

    ctapipe sums ``w[p] * local_weight`` and then the non-broken neighbours in CSR order,
    in float32 (numba keeps float32 for a float32 array times an int), and takes the
    first maximum. Here the sum is fused with the argmax: the first maximum is the
    largest ``bits(v) << 32 | (n_s - 1 - s)``, so the loop has no stores and vectorises.
    Raw float bits order positive floats correctly; a maximum <= +0 (where negative
    floats and -0 are out of order) or a NaN sends the pixel to the plain path.

    There is one such loop per neighbour count 3..6 (hexagonal and square cameras).
    Pixels with a broken neighbour (``near_broken``, used if ``has_broken``) or another
    neighbour count <= 6 use six weighted slots:
    missing and broken neighbours add ``w * 0`` = +-0, which leaves every non-zero sum
    bit-identical (and NaN from ``inf * 0`` goes to the plain path).
    """
    n_pix, n_s = w.shape
    flw = np.float32(local_weight)
    imin = np.int64(-9223372036854775807 - 1)
    fast = n_s == N_SAMPLES_40
    if fast:
        _peaks40(w, nxt, prefetch, indptr, indices, flw, has_broken, near_broken, peaks)
    for p in range(n_pix):
        if fast:
            if peaks[p] >= 0:
                continue
        elif prefetch:
            # overlap the memory latency of the next event with this one (64-byte lines)
            for c in range(0, n_s, 16):
                _prefetch(nxt, p, c)
        a = indptr[p]
        n_nb = indptr[p + 1] - a
        weighted = n_nb < 3 or n_nb > 6 or (has_broken and near_broken[p])
        m = imin
        nan = True
        if weighted:
            if n_nb <= 6:
                for k in range(6):
                    if k < n_nb:
                        j = indices[a + k]
                        slots[k] = j
                        weights[k] = 0.0 if has_broken and broken[ev, j] else 1.0
                    else:
                        slots[k] = p
                        weights[k] = 0.0
                j1, j2, j3, j4, j5, j6 = slots[0], slots[1], slots[2], slots[3], slots[4], slots[5]
                c1, c2, c3, c4 = weights[0], weights[1], weights[2], weights[3]
                c5, c6 = weights[4], weights[5]
                nan = False
                for s in range(n_s):
                    v = (w[p, s] * flw + w[j1, s] * c1 + w[j2, s] * c2 + w[j3, s] * c3 + w[j4, s] * c4
                         + w[j5, s] * c5 + w[j6, s] * c6)
                    nan |= v != v
                    m = max(m, (np.int64(_f32_bits(v)) << 32) | (n_s - 1 - s))
        elif n_nb == 6:
            j1, j2, j3 = indices[a], indices[a + 1], indices[a + 2]
            j4, j5, j6 = indices[a + 3], indices[a + 4], indices[a + 5]
            nan = False
            for s in range(n_s):
                v = w[p, s] * flw + w[j1, s] + w[j2, s] + w[j3, s] + w[j4, s] + w[j5, s] + w[j6, s]
                nan |= v != v
                m = max(m, (np.int64(_f32_bits(v)) << 32) | (n_s - 1 - s))
        elif n_nb == 5:
            j1, j2, j3, j4, j5 = indices[a], indices[a + 1], indices[a + 2], indices[a + 3], indices[a + 4]
            nan = False
            for s in range(n_s):
                v = w[p, s] * flw + w[j1, s] + w[j2, s] + w[j3, s] + w[j4, s] + w[j5, s]
                nan |= v != v
                m = max(m, (np.int64(_f32_bits(v)) << 32) | (n_s - 1 - s))
        elif n_nb == 4:
            j1, j2, j3, j4 = indices[a], indices[a + 1], indices[a + 2], indices[a + 3]
            nan = False
            for s in range(n_s):
                v = w[p, s] * flw + w[j1, s] + w[j2, s] + w[j3, s] + w[j4, s]
                nan |= v != v
                m = max(m, (np.int64(_f32_bits(v)) << 32) | (n_s - 1 - s))
        else:
            j1, j2, j3 = indices[a], indices[a + 1], indices[a + 2]
            nan = False
            for s in range(n_s):
                v = w[p, s] * flw + w[j1, s] + w[j2, s] + w[j3, s]
                nan |= v != v
                m = max(m, (np.int64(_f32_bits(v)) << 32) | (n_s - 1 - s))
        if not nan and (m >> 32) > 0:
            peaks[p] = n_s - 1 - (m & 0xFFFFFFFF)
            continue
        # plain path: ctapipe's loop as written
        for s in range(n_s):
            acc[s] = w[p, s] * flw
        for k in range(a, a + n_nb):
            j = indices[k]
            if has_broken and broken[ev, j]:
                continue
            for s in range(n_s):
                acc[s] += w[j, s]
        peaks[p] = _argmax_first(acc, n_s)


@njit(cache=True)
def _transpose_csr(indptr, indices, n_pix):
    """Row pointer and indices of the transposed neighbour matrix (who has q as neighbour)."""
    tptr = np.zeros(n_pix + 1, np.int64)
    for k in range(len(indices)):
        tptr[indices[k] + 1] += 1
    for q in range(n_pix):
        tptr[q + 1] += tptr[q]
    fill = tptr[:-1].copy()
    tind = np.empty(len(indices), np.int64)
    for p in range(n_pix):
        for k in range(indptr[p], indptr[p + 1]):
            q = indices[k]
            tind[fill[q]] = p
            fill[q] += 1
    return tptr, tind


@njit(cache=True)
def _mark_near_broken(broken, ev, tptr, tind, near_broken):
    """near_broken[p]: some neighbour of p is broken in event ``ev``; returns whether any is."""
    near_broken[:] = False
    any_broken = False
    for q in range(broken.shape[1]):
        if broken[ev, q]:
            any_broken = True
            for k in range(tptr[q], tptr[q + 1]):
                near_broken[tind[k]] = True
    return any_broken


@njit(cache=True)
def _windows_at_peaks(w, peaks, width, shift, rate, sgc, correction, ev, charge, peak_time):
    """`_window_at` for every pixel of one event, written out: numba does not inline it here
    (calling `_window_at` per pixel measured 70 instead of 50 us per LSTCam event)."""
    n_pix, n_s = w.shape
    scalar_from = 0
    if width == 7:
        # the default width: eight pixels at a time in vectors (dvp.kernels._simd)
        gains, ch, pt = sgc[ev], charge[ev], peak_time[ev]
        for q in range(0, n_pix - 7, 8):
            window_sums8(w, peaks, q, shift, 7, rate, gains, correction, ch, pt)
        scalar_from = n_pix - n_pix % 8
    for p in range(scalar_from, n_pix):
        peak = peaks[p]
        start = peak - shift
        end = start + width
        if start < 0:
            start = 0
        if end > n_s:
            end = n_s
        sm = 0.0
        num = 0.0
        den = 0.0
        for i in range(start, end):
            sm, num, den = _accumulate(w, p, i, sm, num, den)
        if den > 0.0:
            t = np.float32(num / den)
        else:
            t = np.float32(peak)
        charge[ev, p] = np.float32(np.float64(np.float32(sm)) * correction[sgc[ev, p]])
        peak_time[ev, p] = np.float32(np.float64(t) / rate)


@njit(cache=True)
def _neighbor_peak_window_sum(wf, sgc, indptr, indices, correction, rate, width, shift, local_weight,
                              broken, charge, peak_time):
    """``broken`` has shape (n_events, n_pixels), or (0, n_pixels) for none."""
    n_ev, n_pix, n_s = wf.shape
    acc = np.empty(n_s, np.float32)
    slots = np.empty(6, np.int64)
    weights = np.empty(6, np.float32)
    peaks = np.empty(n_pix, np.int64)
    near_broken = np.zeros(n_pix, np.bool_)
    any_broken = broken.shape[0] > 0
    if any_broken:
        tptr, tind = _transpose_csr(indptr, indices, n_pix)
    else:
        tptr, tind = np.zeros(1, np.int64), np.zeros(0, np.int64)
    for ev in range(n_ev):
        has_broken = any_broken and _mark_near_broken(broken, ev, tptr, tind, near_broken)
        nxt = wf[min(ev + 1, n_ev - 1)]
        _neighbor_peaks(wf[ev], nxt, ev + 1 < n_ev, indptr, indices, local_weight, broken, ev,
                        has_broken, near_broken, acc, slots, weights, peaks)
        _windows_at_peaks(wf[ev], peaks, width, shift, rate, sgc, correction, ev, charge, peak_time)


@njit(cache=True)
def _subtract_baseline(w, start, stop, out):
    """ctapipe's ``subtract_baseline`` for one event: float32 pairwise mean, float32 difference."""
    n_pix, n_s = w.shape
    n = stop - start
    flat = w.reshape(-1)
    for p in range(n_pix):
        if n > 0:
            base = _pairwise_sum(flat, p * n_s + start, n, True) / np.float32(n)
        else:
            base = np.float32(np.nan)  # numpy: mean of an empty slice
        for s in range(n_s):
            out[p, s] = w[p, s] - base


@njit(cache=True)
def _baseline_subtracted_npws(wf, sgc, indptr, indices, correction, rate, width, shift, local_weight,
                              baseline_start, baseline_stop, broken, charge, peak_time):
    n_ev, n_pix, n_s = wf.shape
    acc = np.empty(n_s, np.float32)
    slots = np.empty(6, np.int64)
    weights = np.empty(6, np.float32)
    peaks = np.empty(n_pix, np.int64)
    near_broken = np.zeros(n_pix, np.bool_)
    corrected = np.empty((n_pix, n_s), np.float32)
    any_broken = broken.shape[0] > 0
    if any_broken:
        tptr, tind = _transpose_csr(indptr, indices, n_pix)
    else:
        tptr, tind = np.zeros(1, np.int64), np.zeros(0, np.int64)
    for ev in range(n_ev):
        has_broken = any_broken and _mark_near_broken(broken, ev, tptr, tind, near_broken)
        _subtract_baseline(wf[ev], baseline_start, baseline_stop, corrected)
        _neighbor_peaks(corrected, corrected, False, indptr, indices, local_weight, broken, ev,
                        has_broken, near_broken, acc, slots, weights, peaks)
        _windows_at_peaks(corrected, peaks, width, shift, rate, sgc, correction, ev, charge, peak_time)


@njit(cache=True)
def _neighbor_average(image, peak_time, mask, indptr, indices, out_image, out_time):
    """ctapipe ``NeighborAverage`` per event (sums in the input dtype, ascending neighbour order)."""
    n_ev, n_pix = image.shape
    isum = np.zeros(1, image.dtype)
    tsum = np.zeros(1, peak_time.dtype)
    for ev in range(n_ev):
        for p in range(n_pix):
            out_image[ev, p] = image[ev, p]
            out_time[ev, p] = peak_time[ev, p]
        for p in range(n_pix):
            if not mask[ev, p]:
                continue
            isum[0] = 0
            tsum[0] = 0
            count = 0
            for k in range(indptr[p], indptr[p + 1]):
                j = indices[k]
                if mask[ev, j]:
                    continue
                isum[0] += image[ev, j]
                tsum[0] += peak_time[ev, j]
                count += 1
            if count > 0:
                # np.divide(sum, int count): computed in float64, cast to the output dtype
                out_image[ev, p] = np.float64(isum[0]) / count
                out_time[ev, p] = np.float64(tsum[0]) / count
            else:
                out_image[ev, p] = 0
                out_time[ev, p] = 0


# --------------------------------------------------------------------------------------
# TwoPassWindowSum


@njit(cache=True)
def _two_pass_first(wf, rate, charge, peak_time):
    """1st pass: 3-sample sliding peak search (scipy convolve1d, float64 sums rounded to
    float32), 5-sample window around it; charge not corrected."""
    n_ev, n_pix, n_s = wf.shape
    for ev in range(n_ev):
        w = wf[ev]
        for p in range(n_pix):
            # np.argmax over the sums of samples 2 .. n_s - 3: first NaN, else first maximum;
            # scipy's symmetric correlate1d computes x[i] + (x[i-1] + x[i+1]) in float64
            peak = 2
            best = np.float32(np.float64(w[p, 2]) + (np.float64(w[p, 1]) + np.float64(w[p, 3])))
            if best == best:
                for i in range(3, n_s - 2):
                    v = np.float32(np.float64(w[p, i]) + (np.float64(w[p, i - 1]) + np.float64(w[p, i + 1])))
                    if v != v:
                        peak = i
                        break
                    if v > best:
                        best = v
                        peak = i
            c, t = _window_at(w, p, peak, _TP_WINDOW[0], _TP_WINDOW[1], n_s, rate)
            charge[ev, p] = c
            peak_time[ev, p] = t


@njit(cache=True)
def _tailcuts_min1(image, picture, boundary, indptr, indices, above_pic, in_pic, mask):
    """ctapipe ``tailcuts_clean`` with keep_isolated_pixels=False, min_number_picture_neighbors=1."""
    n_pix = image.shape[0]
    for p in range(n_pix):
        above_pic[p] = image[p] >= picture
    for p in range(n_pix):
        ok = False
        if above_pic[p]:
            for k in range(indptr[p], indptr[p + 1]):
                if above_pic[indices[k]]:
                    ok = True
                    break
        in_pic[p] = ok
    for p in range(n_pix):
        above_bnd = image[p] >= boundary
        pic_nb = False
        bnd_nb = False
        for k in range(indptr[p], indptr[p + 1]):
            j = indices[k]
            if in_pic[j]:
                pic_nb = True
            if image[j] >= boundary:
                bnd_nb = True
        mask[p] = (above_bnd and pic_nb) or (in_pic[p] and bnd_nb)


@njit(cache=True)
def _brightest_island(mask, image, indptr, indices, labels, stack, bright):
    """ctapipe ``number_of_islands`` + ``brightest_island`` (labels by first pixel index)."""
    n_pix = mask.shape[0]
    for p in range(n_pix):
        labels[p] = -1 if mask[p] else 0
    n_islands = 0
    for p in range(n_pix):
        if labels[p] != -1:
            continue
        n_islands += 1
        labels[p] = n_islands
        top = 0
        stack[top] = p
        top += 1
        while top > 0:
            top -= 1
            q = stack[top]
            for k in range(indptr[q], indptr[q + 1]):
                j = indices[k]
                if labels[j] == -1:
                    labels[j] = n_islands
                    stack[top] = j
                    top += 1
    if n_islands == 0:
        for p in range(n_pix):
            bright[p] = mask[p]
        return 0
    brightness = np.zeros(n_islands + 1)
    for p in range(n_pix):
        if labels[p] > 0:
            brightness[labels[p]] += image[p]
    best = 0
    for i in range(1, n_islands + 1):
        if brightness[i] > brightness[best]:
            best = i
    for p in range(n_pix):
        bright[p] = labels[p] == best
    return n_islands


@njit(cache=True)
def _linear_regression(X, y):
    # ctapipe.fitting.linear_regression
    mat = X.T @ X
    if np.linalg.det(mat) < 2 * np.finfo(np.float64).eps:
        return np.full(2, np.nan)
    return np.linalg.inv(mat) @ X.T @ y


@njit(cache=True)
def _rss(X, y, beta):
    r = y - (X[:, 0] * beta[0] + beta[1])
    return np.sum(r ** 2)


@njit(cache=True)
def _lts_linear_regression(x, y, rng, samples, relative_sample_size, max_iterations, eps):
    """ctapipe.fitting.lts_linear_regression: randomised least trimmed squares."""
    finite = np.isfinite(x) & np.isfinite(y)
    x = x[finite]
    y = y[finite]
    n = len(x)
    best_beta = np.full(2, np.nan)
    if n < 2:
        return best_beta
    X = np.empty((n, 2))
    X[:, 0] = x
    X[:, 1] = 1
    sample_size = np.int64(relative_sample_size * n)
    best_error = np.inf
    for _ in range(samples):
        sample = np.empty(2, dtype=np.int64)
        sample[0] = rng.integers(0, n)
        sample[1] = rng.integers(0, n - 1)
        if sample[1] >= sample[0]:
            sample[1] += 1
        beta = _linear_regression(X[sample], y[sample])
        if np.isnan(beta[0]):
            continue  # error is NaN: never the best
        error = _rss(X[sample], y[sample], beta)
        for _i in range(max_iterations):
            r = y - (X[:, 0] * beta[0] + beta[1])
            order = np.argsort(r ** 2)[:sample_size]
            beta = _linear_regression(X[order], y[order])
            last_error = error
            error = _rss(X[order], y[order], beta)
            if abs(last_error - error) < eps:
                break
        if error < best_error:
            best_error = error
            best_beta[:] = beta
    return best_beta


@njit(cache=True)
def _hillas_cog_psi(x, y, w):
    """cog and psi of ctapipe's hillas_parameters; psi is NaN when the length is 0."""
    n = len(w)
    size = _pairwise_sum(w, 0, n, True)
    cog_x = _pairwise_sum(x * w, 0, n, True) / size
    cog_y = _pairwise_sum(y * w, 0, n, True) / size
    dx = x - cog_x
    dy = y - cog_y
    # np.cov(dx, dy, aweights=w, ddof=0)
    mx = _pairwise_sum(dx * w, 0, n, True) / size
    my = _pairwise_sum(dy * w, 0, n, True) / size
    ex = dx - mx
    ey = dy - my
    f = 1.0 / size
    cxx = np.sum(ex * w * ex) * f
    cyy = np.sum(ey * w * ey) * f
    cxy = np.sum(ex * w * ey) * f
    # largest eigenvalue / its eigenvector of [[cxx, cxy], [cxy, cyy]]
    half_tr = 0.5 * (cxx + cyy)
    root = np.sqrt(0.25 * (cxx - cyy) ** 2 + cxy * cxy)
    lam = half_tr + root
    if abs(lam) <= np.finfo(np.float64).eps:
        return cog_x, cog_y, np.nan
    if cxy == 0.0:
        psi = 0.0 if cxx > cyy else np.pi / 2
    else:
        # arctan(vy / vx) of the major axis, in (-pi/2, pi/2)
        psi = np.arctan((lam - cxx) / cxy)
    return cog_x, cog_y, psi


@njit(cache=True)
def _two_pass_second(w, sgc, charge1, time1, corr1, corr_default, corr_before, corr_after, apply_corr,
                     handler_mask, use_handler, core_th, indptr, indices, pix_x, pix_y, rate, rng,
                     out_charge, out_time):
    """TwoPassWindowSum steps 2-7 for one event. Returns is_valid."""
    n_pix, n_s = w.shape
    # step 2: correct the 1st pass (float64, as numpy promotes) and interpolate broken pixels
    c1 = np.empty(n_pix)
    t1 = np.empty(n_pix, np.float32)
    for p in range(n_pix):
        c1[p] = np.float64(charge1[p]) * corr1[sgc[p]]
        t1[p] = time1[p]
    if use_handler:
        c1_in = c1.copy()
        t1_in = t1.copy()
        _neighbor_average(c1_in.reshape(1, n_pix), t1_in.reshape(1, n_pix), handler_mask.reshape(1, n_pix),
                          indptr, indices, c1.reshape(1, n_pix), t1.reshape(1, n_pix))

    above_pic = np.empty(n_pix, np.bool_)
    in_pic = np.empty(n_pix, np.bool_)
    clean = np.empty(n_pix, np.bool_)
    _tailcuts_min1(c1, core_th, core_th / 2, indptr, indices, above_pic, in_pic, clean)

    # step 3: brightest island
    labels = np.empty(n_pix, np.int64)
    stack = np.empty(n_pix, np.int64)
    bright = np.empty(n_pix, np.bool_)
    _brightest_island(clean, c1, indptr, indices, labels, stack, bright)

    for p in range(n_pix):
        out_charge[p] = np.float32(c1[p])
        out_time[p] = t1[p]

    # step 4: too small -> 1st pass
    n_bright = 0
    for p in range(n_pix):
        n_bright += bright[p]
    if n_bright < 3:
        return False
    bx = pix_x[bright]
    by = pix_y[bright]
    bq = c1[bright]
    if _pairwise_sum(bq, 0, n_bright, True) == 0.0:
        return False  # ctapipe raises HillasParameterizationError here
    cog_x, cog_y, psi = _hillas_cog_psi(bx, by, bq)

    # step 5: robust linear fit of time vs. longitudinal coordinate
    cos_psi = np.cos(psi)
    sin_psi = np.sin(psi)
    longi = (bx - cog_x) * cos_psi + (by - cog_y) * sin_psi
    bt = t1[bright].astype(np.float64)
    beta = _lts_linear_regression(longi, bt, rng, 5, 0.85, 20, 1e-12)
    if np.isnan(beta[0]):
        return False

    # step 6: re-integrate all but the main-island core pixels at the predicted time
    for p in range(n_pix):
        if bright[p] and not (c1[p] < core_th):
            continue
        lon = (pix_x[p] - cog_x) * cos_psi + (pix_y[p] - cog_y) * sin_psi
        predicted = np.int64(np.rint((beta[0] * lon + beta[1]) * rate))
        start = predicted - _TP_WINDOW[1]
        end = start + _TP_WINDOW[0]
        before = start < 0
        after = end > n_s - 1
        width = _TP_WINDOW[0]
        shift = _TP_WINDOW[1]
        corr = corr_default
        if before:
            width = _TP_BEFORE[0]
            shift = _TP_BEFORE[1]
            corr = corr_before
        if after:
            width = _TP_AFTER[0]
            shift = _TP_AFTER[1]
            corr = corr_after
        if predicted < 2:
            predicted = 0
        if predicted > n_s - 3:
            predicted = n_s - 1
        c, t = _window_at(w, p, predicted, width, shift, n_s, rate)
        if apply_corr:
            c = _corrected(c, corr, sgc[p])
        out_charge[p] = c
        out_time[p] = t
    return True


# --------------------------------------------------------------------------------------
# integration corrections (once per camera and window; plain numpy as ctapipe)


def integration_correction(reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz,
                           window_width, window_shift) -> np.ndarray:
    """ctapipe's ``integration_correction``: 1 / fraction of the unit pulse in the window.

    Parameters
    ----------
    reference_pulse_shape : ndarray, shape (n_channels, n_pulse_samples), float64
        Reference pulse shape per gain channel.
    reference_pulse_sample_width_ns : float
        Sampling interval of the reference pulse, ns.
    sampling_rate_ghz : float
        Sampling rate of the waveforms, GHz (ctapipe uses 1 / rate in ns as sample width).
    window_width, window_shift : int
        Integration window, samples.

    Returns
    -------
    correction : ndarray, shape (n_channels,), float64
    """
    pulses = np.asarray(reference_pulse_shape, dtype=np.float64)
    if pulses.ndim != 2:
        raise ValueError(f"reference_pulse_shape must be (n_channels, n_samples), got {pulses.shape}")
    sample_width_ns = 1.0 / float(sampling_rate_ghz)
    ref_width = float(reference_pulse_sample_width_ns)
    correction = np.ones(len(pulses), dtype=np.float64)
    for ichannel, pulse_shape in enumerate(pulses):
        pulse_max_sample = pulse_shape.size * ref_width
        pulse_shape_x = np.arange(0, pulse_max_sample, ref_width)
        sampled_edges = np.arange(0, pulse_max_sample, sample_width_ns)
        sampled_pulse, _ = np.histogram(pulse_shape_x, sampled_edges, weights=pulse_shape, density=True)
        n_samples = sampled_pulse.size
        start = sampled_pulse.argmax() - window_shift
        start = start if start >= 0 else 0
        end = start + window_width
        end = end if end < n_samples else n_samples
        if start >= end:
            continue
        integration = sampled_pulse[start:end] * sample_width_ns
        correction[ichannel] = 1.0 / np.sum(integration)
    return correction


def sliding_window_correction(reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz,
                              window_width) -> np.ndarray:
    """``SlidingWindowMaxSum._calculate_correction``: pulse integral / best window sum.

    Returns
    -------
    correction : ndarray, shape (n_channels,), float64
    """
    pulses = np.asarray(reference_pulse_shape, dtype=np.float64)
    if pulses.ndim != 2:
        raise ValueError(f"reference_pulse_shape must be (n_channels, n_samples), got {pulses.shape}")
    width_shape = int(round(window_width / float(sampling_rate_ghz) / float(reference_pulse_sample_width_ns)))
    if not 1 <= width_shape <= pulses.shape[1]:
        raise ValueError(f"SlidingWindowMaxSum: window_width={window_width} covers {width_shape} reference "
                         f"pulse samples, need 1..{pulses.shape[1]}")
    correction = np.ones(len(pulses), dtype=np.float64)
    for ichannel, pulse_shape in enumerate(pulses):
        cwf = np.concatenate((np.zeros(1), np.cumsum(pulse_shape)))
        sums = cwf[width_shape:] - cwf[:-width_shape]
        correction[ichannel] = np.sum(pulse_shape) / np.max(sums)
    return correction


@lru_cache(maxsize=256)
def _cached_correction(kind, pulse_bytes, pulse_shape, ref_width, rate, width, shift):
    pulses = np.frombuffer(pulse_bytes, dtype=np.float64).reshape(pulse_shape)
    if kind == "sliding":
        c = sliding_window_correction(pulses, ref_width, rate, width)
    else:
        c = integration_correction(pulses, ref_width, rate, width, shift)
    c.setflags(write=False)
    return c


def _correction(kind, reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz, width,
                shift=0):
    if reference_pulse_shape is None or reference_pulse_sample_width_ns is None:
        raise ValueError("the integration correction needs reference_pulse_shape and "
                         "reference_pulse_sample_width_ns")
    pulses = np.ascontiguousarray(reference_pulse_shape, dtype=np.float64)
    if pulses.ndim != 2:
        raise ValueError(f"reference_pulse_shape must be (n_channels, n_samples), got {pulses.shape}")
    return _cached_correction(kind, pulses.tobytes(), pulses.shape, float(reference_pulse_sample_width_ns),
                              float(sampling_rate_ghz), int(width), int(shift))


# --------------------------------------------------------------------------------------
# argument checks


def _check_waveforms(waveforms):
    if not isinstance(waveforms, np.ndarray) or waveforms.ndim != 3 or waveforms.dtype != np.float32:
        raise ValueError("waveforms must be a float32 array (n_events, n_pixels, n_samples), got "
                         f"{getattr(waveforms, 'dtype', type(waveforms))} {getattr(waveforms, 'shape', '')}")
    if waveforms.shape[2] < 1:
        raise ValueError("waveforms need at least one sample")
    return np.ascontiguousarray(waveforms)


def _check_gain(selected_gain_channel, shape, n_channels):
    n_ev, n_pix = shape[:2]
    if selected_gain_channel is None:
        return np.zeros((n_ev, n_pix), np.int8)
    g = np.asarray(selected_gain_channel)
    if g.shape != (n_ev, n_pix) or g.dtype.kind not in "iu":
        raise ValueError(f"selected_gain_channel must be an integer array {(n_ev, n_pix)}, got {g.dtype} {g.shape}")
    if g.size and (g.min() < 0 or g.max() >= n_channels):
        raise ValueError(f"selected_gain_channel must be in [0, {n_channels}), got values "
                         f"{g.min()}..{g.max()}")
    return np.ascontiguousarray(g, dtype=np.int8)


def _check_correction(correction):
    if correction is None:
        return np.ones(2, np.float64)  # no correction, gains 0 and 1 allowed
    c = np.ascontiguousarray(correction, dtype=np.float64)
    if c.ndim != 1 or c.size < 1:
        raise ValueError(f"correction must be (n_channels,), got {c.shape}")
    return c


def _check_rate(sampling_rate_ghz):
    rate = float(sampling_rate_ghz)
    if not rate > 0 or not np.isfinite(rate):
        raise ValueError(f"sampling_rate_ghz must be positive, got {sampling_rate_ghz}")
    return rate


def _check_csr(neighbor_indptr, neighbor_indices, n_pix):
    """`check_csr` for the extractors that need neighbours (they are optional arguments)."""
    if neighbor_indptr is None or neighbor_indices is None:
        raise ValueError("this extractor needs neighbor_indptr and neighbor_indices")
    return check_csr(neighbor_indptr, neighbor_indices, n_pix)


def _check_broken(broken_pixels, shape, empty_ok=True):
    """(n_ev, n_pix) bool or an empty (0, n_pix) array for none."""
    n_ev, n_pix = shape[:2]
    if broken_pixels is None:
        return np.zeros((0 if empty_ok else n_ev, n_pix), np.bool_)
    b = np.asarray(broken_pixels)
    if b.shape != (n_ev, n_pix) or b.dtype != np.bool_:
        raise ValueError(f"broken_pixels must be a bool array {(n_ev, n_pix)}, got {b.dtype} {b.shape}")
    return np.ascontiguousarray(b)


def _check_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


def _outputs(shape):
    return np.empty(shape[:2], np.float32), np.empty(shape[:2], np.float32)


# --------------------------------------------------------------------------------------
# public kernels


def full_waveform_sum(waveforms, sampling_rate_ghz):
    """ctapipe ``FullWaveformSum``: sum of all samples; no integration correction.

    Parameters
    ----------
    waveforms : ndarray, shape (n_events, n_pixels, n_samples), float32
    sampling_rate_ghz : float

    Returns
    -------
    charge : ndarray, shape (n_events, n_pixels), float32, p.e.
    peak_time : ndarray, shape (n_events, n_pixels), float32, ns
    """
    wf = _check_waveforms(waveforms)
    rate = _check_rate(sampling_rate_ghz)
    charge, peak_time = _outputs(wf.shape)
    _fixed_window_sum(wf, np.zeros(wf.shape[:2], np.int8), np.ones(1), rate, 0, wf.shape[2], 0, charge, peak_time)
    return charge, peak_time


def fixed_window_sum(waveforms, selected_gain_channel, correction, sampling_rate_ghz, peak_index=0,
                     window_width=7, window_shift=0):
    """ctapipe ``FixedWindowSum``: window ``[peak_index - window_shift, + window_width)``.

    Parameters
    ----------
    waveforms : ndarray, shape (n_events, n_pixels, n_samples), float32
    selected_gain_channel : ndarray, shape (n_events, n_pixels), int
    correction : ndarray, shape (n_channels,), float64, or None
        Integration correction per gain channel (`integration_correction`); None: none.
    sampling_rate_ghz : float
    peak_index, window_width, window_shift : int

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    """
    wf = _check_waveforms(waveforms)
    corr = _check_correction(correction)
    sgc = _check_gain(selected_gain_channel, wf.shape, len(corr))
    rate = _check_rate(sampling_rate_ghz)
    charge, peak_time = _outputs(wf.shape)
    _fixed_window_sum(wf, sgc, corr, rate, _check_int("peak_index", peak_index),
                      _check_int("window_width", window_width), _check_int("window_shift", window_shift),
                      charge, peak_time)
    return charge, peak_time


def global_peak_window_sum(waveforms, selected_gain_channel, correction, sampling_rate_ghz, window_width=7,
                           window_shift=3, pixel_fraction=1.0, broken_pixels=None):
    """ctapipe ``GlobalPeakWindowSum``: window around the peak of the camera-averaged waveform.

    The average excludes ``broken_pixels``; with ``pixel_fraction`` < 1 it is taken over the
    ``int(pixel_fraction * n_pixels)`` pixels with the highest maximum sample.

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    """
    wf = _check_waveforms(waveforms)
    corr = _check_correction(correction)
    sgc = _check_gain(selected_gain_channel, wf.shape, len(corr))
    rate = _check_rate(sampling_rate_ghz)
    broken = _check_broken(broken_pixels, wf.shape, empty_ok=False)
    if isinstance(pixel_fraction, (bool, np.bool_)) or not isinstance(pixel_fraction, numbers.Real):
        raise ValueError(f"pixel_fraction must be a float, got {pixel_fraction!r}")
    pixel_fraction = float(pixel_fraction)
    n_pix = wf.shape[1]
    if pixel_fraction == 1.0:
        n_brightest = -1
    else:
        n_brightest = int(pixel_fraction * n_pix)
        if not 0.0 < pixel_fraction < 1.0 or n_brightest < 1:
            raise ValueError(f"pixel_fraction must be in (0, 1] and select at least one of {n_pix} pixels, "
                             f"got {pixel_fraction}")
    charge, peak_time = _outputs(wf.shape)
    _global_peak_window_sum(wf, sgc, corr, rate, _check_int("window_width", window_width),
                            _check_int("window_shift", window_shift), n_brightest, broken, charge, peak_time)
    return charge, peak_time


def local_peak_window_sum(waveforms, selected_gain_channel, correction, sampling_rate_ghz, window_width=7,
                          window_shift=3):
    """ctapipe ``LocalPeakWindowSum``: window around each pixel's own maximum.

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    """
    wf = _check_waveforms(waveforms)
    corr = _check_correction(correction)
    sgc = _check_gain(selected_gain_channel, wf.shape, len(corr))
    rate = _check_rate(sampling_rate_ghz)
    charge, peak_time = _outputs(wf.shape)
    _local_peak_window_sum(wf, sgc, corr, rate, _check_int("window_width", window_width),
                           _check_int("window_shift", window_shift), charge, peak_time)
    return charge, peak_time


def sliding_window_max_sum(waveforms, selected_gain_channel, correction, sampling_rate_ghz, window_width=7):
    """ctapipe ``SlidingWindowMaxSum``: the ``window_width`` consecutive samples of largest sum.

    ``correction`` comes from `sliding_window_correction` (not `integration_correction`).
    The peak time falls back to the window centre when no sample in it is positive.

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    """
    wf = _check_waveforms(waveforms)
    corr = _check_correction(correction)
    sgc = _check_gain(selected_gain_channel, wf.shape, len(corr))
    rate = _check_rate(sampling_rate_ghz)
    width = _check_int("window_width", window_width)
    if not 1 <= width <= wf.shape[2]:
        raise ValueError(f"SlidingWindowMaxSum: window_width must be in [1, n_samples={wf.shape[2]}], got {width}")
    charge, peak_time = _outputs(wf.shape)
    _sliding_window_max_sum(wf, sgc, corr, rate, width, charge, peak_time)
    return charge, peak_time


def neighbor_peak_window_sum(waveforms, selected_gain_channel, neighbor_indptr, neighbor_indices, correction,
                             sampling_rate_ghz, window_width=7, window_shift=3, local_weight=0,
                             broken_pixels=None):
    """ctapipe ``NeighborPeakWindowSum``: window around the peak of the neighbour-summed waveform.

    The peak of pixel p is the argmax of ``local_weight * w[p] + sum of w[j]`` over its
    non-broken neighbours j (float32, CSR order, as ctapipe's ``neighbor_average_maximum``).

    Parameters
    ----------
    waveforms : ndarray, shape (n_events, n_pixels, n_samples), float32
    selected_gain_channel : ndarray, shape (n_events, n_pixels), int
    neighbor_indptr, neighbor_indices : ndarray, int
        Neighbours as CSR, ascending within a row (as ctapipe's neighbor_matrix_sparse).
    correction : ndarray, shape (n_channels,), float64, or None
    sampling_rate_ghz : float
    window_width, window_shift, local_weight : int
    broken_pixels : ndarray, shape (n_events, n_pixels), bool, optional
        Ignored as neighbours in the peak search (gain-selected outlier mask).

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    """
    wf = _check_waveforms(waveforms)
    corr = _check_correction(correction)
    sgc = _check_gain(selected_gain_channel, wf.shape, len(corr))
    rate = _check_rate(sampling_rate_ghz)
    indptr, indices = _check_csr(neighbor_indptr, neighbor_indices, wf.shape[1])
    broken = _check_broken(broken_pixels, wf.shape)
    charge, peak_time = _outputs(wf.shape)
    _neighbor_peak_window_sum(wf, sgc, indptr, indices, corr, rate, _check_int("window_width", window_width),
                              _check_int("window_shift", window_shift), _check_int("local_weight", local_weight),
                              broken, charge, peak_time)
    return charge, peak_time


def _baseline_range(n_s, baseline_start, baseline_end):
    # python slice semantics of waveforms[..., baseline_start:baseline_end]
    r = range(n_s)[_check_int("baseline_start", baseline_start):_check_int("baseline_end", baseline_end)]
    return (r.start, r.stop) if len(r) else (0, 0)


def subtract_baseline(waveforms, baseline_start, baseline_end):
    """ctapipe ``subtract_baseline``: waveforms minus their mean over ``[start:end]`` (float32).

    Returns
    -------
    ndarray, shape (n_events, n_pixels, n_samples), float32
    """
    wf = _check_waveforms(waveforms)
    start, stop = _baseline_range(wf.shape[2], baseline_start, baseline_end)
    out = np.empty_like(wf)
    for ev in range(wf.shape[0]):
        _subtract_baseline(wf[ev], start, stop, out[ev])
    return out


def baseline_subtracted_neighbor_peak_window_sum(waveforms, selected_gain_channel, neighbor_indptr,
                                                 neighbor_indices, correction, sampling_rate_ghz, window_width=7,
                                                 window_shift=3, local_weight=0, baseline_start=0, baseline_end=10,
                                                 broken_pixels=None):
    """ctapipe ``BaselineSubtractedNeighborPeakWindowSum``: `subtract_baseline`, then
    `neighbor_peak_window_sum` on the subtracted waveforms.

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    """
    wf = _check_waveforms(waveforms)
    corr = _check_correction(correction)
    sgc = _check_gain(selected_gain_channel, wf.shape, len(corr))
    rate = _check_rate(sampling_rate_ghz)
    indptr, indices = _check_csr(neighbor_indptr, neighbor_indices, wf.shape[1])
    broken = _check_broken(broken_pixels, wf.shape)
    start, stop = _baseline_range(wf.shape[2], baseline_start, baseline_end)
    charge, peak_time = _outputs(wf.shape)
    _baseline_subtracted_npws(wf, sgc, indptr, indices, corr, rate, _check_int("window_width", window_width),
                              _check_int("window_shift", window_shift), _check_int("local_weight", local_weight),
                              start, stop, broken, charge, peak_time)
    return charge, peak_time


def neighbor_average(image, peak_time, broken_pixels, neighbor_indptr, neighbor_indices):
    """ctapipe ``NeighborAverage``: replace broken pixels by the mean of their non-broken neighbours.

    Pixels without a non-broken neighbour become 0. Sums run in the input dtype in
    ascending neighbour order; the division is done in float64 and cast back, as numpy.

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32 or float64
    peak_time : ndarray, shape (n_events, n_pixels), float32 or float64
    broken_pixels : ndarray, shape (n_events, n_pixels), bool
    neighbor_indptr, neighbor_indices : ndarray, int (CSR)

    Returns
    -------
    image, peak_time : new arrays, same shapes and dtypes as the inputs
    """
    img = np.asarray(image)
    pt = np.asarray(peak_time)
    if img.ndim != 2 or img.dtype not in (np.float32, np.float64) or pt.shape != img.shape \
            or pt.dtype not in (np.float32, np.float64):
        raise ValueError(f"image and peak_time must be float arrays (n_events, n_pixels), got "
                         f"{img.dtype} {img.shape} / {pt.dtype} {pt.shape}")
    mask = _check_broken(broken_pixels, img.shape, empty_ok=False)
    indptr, indices = _check_csr(neighbor_indptr, neighbor_indices, img.shape[1])
    img = np.ascontiguousarray(img)
    pt = np.ascontiguousarray(pt)
    out_img = np.empty_like(img)
    out_pt = np.empty_like(pt)
    _neighbor_average(img, pt, mask, indptr, indices, out_img, out_pt)
    return out_img, out_pt


def two_pass_window_sum(waveforms, selected_gain_channel, neighbor_indptr, neighbor_indices, pix_x, pix_y,
                        reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz,
                        core_threshold=6.0, disable_second_pass=False, apply_integration_correction=True,
                        invalid_pixel_handler_type="NeighborAverage", broken_pixels=None):
    """ctapipe ``TwoPassWindowSum`` (CTA-MARS-like two-pass extraction).

    1st pass: 5-sample window around the highest 3-sample sum. Then (unless
    ``disable_second_pass``): corrected 1st-pass image, broken pixels interpolated
    (NeighborAverage), tail cuts (core_threshold, core_threshold / 2, at least one core
    neighbour), brightest island; with >= 3 pixels, Hillas axis and a least-trimmed-squares
    fit of time vs. longitudinal coordinate predict where every pixel outside the island
    core is integrated again (5 samples, moved inside the readout at its edges).

    Parameters
    ----------
    waveforms : ndarray, shape (n_events, n_pixels, n_samples), float32, n_samples >= 5
    selected_gain_channel : ndarray, shape (n_events, n_pixels), int
    neighbor_indptr, neighbor_indices : ndarray, int (CSR)
    pix_x, pix_y : ndarray, shape (n_pixels,), float64
        Pixel positions (m), as in ctapipe's camera geometry.
    reference_pulse_shape : ndarray, shape (n_channels, n_pulse_samples), float64
    reference_pulse_sample_width_ns, sampling_rate_ghz : float
    core_threshold : float
        Picture threshold, p.e. (ctapipe's default depends on the telescope type, see
        `two_pass_core_threshold`).
    disable_second_pass, apply_integration_correction : bool
    invalid_pixel_handler_type : "NeighborAverage" or None
    broken_pixels : ndarray, shape (n_events, n_pixels), bool, optional
        Pixels interpolated by the handler.

    Returns
    -------
    charge, peak_time : ndarray, shape (n_events, n_pixels), float32 (p.e., ns)
    is_valid : ndarray, shape (n_events,), bool
        False where ctapipe falls back to the 1st pass (fewer than 3 island pixels or no fit).
    """
    wf = _check_waveforms(waveforms)
    n_ev, n_pix, n_s = wf.shape
    if n_s < 5:
        raise ValueError(f"TwoPassWindowSum needs at least 5 samples, got {n_s}")
    rate = _check_rate(sampling_rate_ghz)
    pulses = np.ascontiguousarray(reference_pulse_shape, dtype=np.float64) \
        if reference_pulse_shape is not None else None
    if apply_integration_correction:
        corr1 = _correction("window", pulses, reference_pulse_sample_width_ns, rate, *_TP_WINDOW)
        corr_before = _correction("window", pulses, reference_pulse_sample_width_ns, rate, *_TP_BEFORE)
        corr_after = _correction("window", pulses, reference_pulse_sample_width_ns, rate, *_TP_AFTER)
        n_channels = len(corr1)
    else:
        n_channels = len(pulses) if pulses is not None and pulses.ndim == 2 else 2
        corr1 = corr_before = corr_after = np.ones(n_channels)
    sgc = _check_gain(selected_gain_channel, wf.shape, n_channels)
    if not isinstance(disable_second_pass, (bool, np.bool_)):
        raise ValueError(f"disable_second_pass must be a bool, got {disable_second_pass!r}")
    if not isinstance(apply_integration_correction, (bool, np.bool_)):
        raise ValueError(f"apply_integration_correction must be a bool, got {apply_integration_correction!r}")
    if invalid_pixel_handler_type not in _INVALID_PIXEL_HANDLERS:
        raise ValueError(f"invalid_pixel_handler_type must be one of {_INVALID_PIXEL_HANDLERS}, "
                         f"got {invalid_pixel_handler_type!r}")
    if isinstance(core_threshold, (bool, np.bool_)) or not isinstance(core_threshold, numbers.Real):
        raise ValueError(f"core_threshold must be a float, got {core_threshold!r}")

    charge1, time1 = _outputs(wf.shape)
    _two_pass_first(wf, rate, charge1, time1)
    if disable_second_pass:
        charge = np.empty_like(charge1)
        for ev in range(n_ev):
            charge[ev] = (charge1[ev] * corr1[sgc[ev]]).astype(np.float32)
        return charge, time1, np.ones(n_ev, np.bool_)

    indptr, indices = _check_csr(neighbor_indptr, neighbor_indices, n_pix)
    if pix_x is None or pix_y is None:
        raise ValueError("TwoPassWindowSum needs pix_x and pix_y")
    px = np.ascontiguousarray(pix_x, dtype=np.float64)
    py = np.ascontiguousarray(pix_y, dtype=np.float64)
    if px.shape != (n_pix,) or py.shape != (n_pix,):
        raise ValueError(f"pix_x and pix_y must have shape {(n_pix,)}, got {px.shape} / {py.shape}")
    broken = _check_broken(broken_pixels, wf.shape, empty_ok=False)
    use_handler = invalid_pixel_handler_type is not None

    charge, peak_time = _outputs(wf.shape)
    is_valid = np.empty(n_ev, np.bool_)
    for ev in range(n_ev):
        # fresh generator per event: see the module docstring
        rng = np.random.default_rng(0)
        is_valid[ev] = _two_pass_second(wf[ev], sgc[ev], charge1[ev], time1[ev], corr1, corr1, corr_before,
                                        corr_after, bool(apply_integration_correction), broken[ev], use_handler,
                                        float(core_threshold), indptr, indices, px, py, rate, rng,
                                        charge[ev], peak_time[ev])
    return charge, peak_time, is_valid


# --------------------------------------------------------------------------------------
# dispatch by ctapipe class name


def _validate_params(name, params):
    if name not in EXTRACTORS:
        raise ValueError(f"unknown image extractor {name!r}; known: {', '.join(EXTRACTORS)}")
    defaults = EXTRACTORS[name]
    out = dict(defaults)
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(f"{name} has no parameter {key!r}; known: {', '.join(defaults) or 'none'}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, (bool, np.bool_))
        elif isinstance(default, int):
            ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        elif isinstance(default, float):
            ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        else:  # invalid_pixel_handler_type
            ok = value in _INVALID_PIXEL_HANDLERS
        if not ok:
            raise ValueError(f"{name}.{key} has the wrong type or value: {value!r} "
                             f"(default {default!r})")
        out[key] = value
    return out


def _split_broken(broken_pixels, selected_gain_channel, shape):
    """Gain-selected mask for peak finding and ctapipe's channel-0 mask for NeighborAverage."""
    if broken_pixels is None:
        return None, None
    b = np.asarray(broken_pixels)
    if b.dtype != np.bool_:
        raise ValueError(f"broken_pixels must be bool, got {b.dtype}")
    if b.ndim == 3:
        n_ev, n_pix = shape[:2]
        if b.shape[0] != n_ev or b.shape[2] != n_pix:
            raise ValueError(f"broken_pixels must be (n_events, n_channels, n_pixels), got {b.shape}")
        g = _check_gain(selected_gain_channel, shape, b.shape[1]).astype(np.intp)
        selected = np.take_along_axis(b, g[:, None, :], axis=1)[:, 0, :]
        return selected, b[:, 0, :]
    return b, b


def extract(name, waveforms, selected_gain_channel, *, sampling_rate_ghz, neighbor_indptr, neighbor_indices,
            reference_pulse_shape, reference_pulse_sample_width_ns, broken_pixels=None, pix_x=None, pix_y=None,
            return_is_valid=False, **params):
    """Run the ctapipe image extractor ``name`` on a batch.

    Parameters
    ----------
    name : str
        ctapipe class name, a key of `EXTRACTORS`.
    waveforms : ndarray, shape (n_events, n_pixels, n_samples), float32
    selected_gain_channel : ndarray, shape (n_events, n_pixels), int8 (0 or 1)
    sampling_rate_ghz : float
    neighbor_indptr, neighbor_indices : ndarray, int (CSR); may be None for extractors
        that do not use neighbours.
    reference_pulse_shape : ndarray, shape (n_channels, n_pulse_samples), float64
    reference_pulse_sample_width_ns : float
    broken_pixels : ndarray, bool, optional
        ``(n_events, n_pixels)``: the mask used everywhere; or ``(n_events, n_channels,
        n_pixels)`` (ctapipe's outlier mask): the selected gain's mask for the peak
        search, and channel 0's for TwoPassWindowSum's NeighborAverage, as ctapipe does.
    pix_x, pix_y : ndarray, shape (n_pixels,), optional
        Pixel positions (m); needed by TwoPassWindowSum only.
    return_is_valid : bool
        Also return ``is_valid`` (n_events,) bool (False only where TwoPassWindowSum fell
        back to its 1st pass).
    **params
        ctapipe trait values of that extractor; defaults from ``EXTRACTORS[name]``.

    Returns
    -------
    charge : ndarray, shape (n_events, n_pixels), float32, p.e.
    peak_time : ndarray, shape (n_events, n_pixels), float32, ns
    """
    p = _validate_params(name, params)
    wf = _check_waveforms(waveforms)
    rate = _check_rate(sampling_rate_ghz)
    selected, channel0 = _split_broken(broken_pixels, selected_gain_channel, wf.shape)
    is_valid = None

    def corr(kind="window", width=None, shift=0):
        if not p["apply_integration_correction"]:
            return None
        return _correction(kind, reference_pulse_shape, reference_pulse_sample_width_ns, rate,
                           p["window_width"] if width is None else width, shift)

    if name == "FullWaveformSum":
        charge, peak_time = full_waveform_sum(wf, rate)
    elif name == "FixedWindowSum":
        charge, peak_time = fixed_window_sum(wf, selected_gain_channel, corr(shift=p["window_shift"]), rate,
                                             p["peak_index"], p["window_width"], p["window_shift"])
    elif name == "GlobalPeakWindowSum":
        charge, peak_time = global_peak_window_sum(wf, selected_gain_channel, corr(shift=p["window_shift"]), rate,
                                                   p["window_width"], p["window_shift"], p["pixel_fraction"],
                                                   selected)
    elif name == "LocalPeakWindowSum":
        charge, peak_time = local_peak_window_sum(wf, selected_gain_channel, corr(shift=p["window_shift"]), rate,
                                                  p["window_width"], p["window_shift"])
    elif name == "SlidingWindowMaxSum":
        charge, peak_time = sliding_window_max_sum(wf, selected_gain_channel, corr("sliding"), rate,
                                                   p["window_width"])
    elif name == "NeighborPeakWindowSum":
        charge, peak_time = neighbor_peak_window_sum(wf, selected_gain_channel, neighbor_indptr, neighbor_indices,
                                                     corr(shift=p["window_shift"]), rate, p["window_width"],
                                                     p["window_shift"], p["local_weight"], selected)
    elif name == "BaselineSubtractedNeighborPeakWindowSum":
        charge, peak_time = baseline_subtracted_neighbor_peak_window_sum(
            wf, selected_gain_channel, neighbor_indptr, neighbor_indices, corr(shift=p["window_shift"]), rate,
            p["window_width"], p["window_shift"], p["local_weight"], p["baseline_start"], p["baseline_end"],
            selected)
    else:  # TwoPassWindowSum
        charge, peak_time, is_valid = two_pass_window_sum(
            wf, selected_gain_channel, neighbor_indptr, neighbor_indices, pix_x, pix_y, reference_pulse_shape,
            reference_pulse_sample_width_ns, rate, p["core_threshold"], p["disable_second_pass"],
            p["apply_integration_correction"], p["invalid_pixel_handler_type"], channel0)
    if return_is_valid:
        if is_valid is None:
            is_valid = np.ones(wf.shape[0], np.bool_)
        return charge, peak_time, is_valid
    return charge, peak_time
