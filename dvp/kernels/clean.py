"""Image cleaning: batch kernels reproducing ctapipe 0.28's ``ctapipe/image/cleaning.py``.

All functions take a batch of events of one camera type: images and peak times of shape
``(n_events, n_pixels)`` (p.e. and ns, float32 or float64) and pixel neighbours as CSR
(``neighbor_indptr`` (n_pixels + 1,), ``neighbor_indices``, int32), and return boolean
masks ``(n_events, n_pixels)`` of the pixels that survive.

Number semantics follow ctapipe running on numpy >= 2 with the Python-float values of its
configuration traits:

* A scalar threshold is compared in the image dtype (NEP 50: a Python float is "weak"),
  i.e. against ``float32(threshold)`` for float32 images. A per-pixel threshold array
  ``(n_pixels,)`` (or per event ``(n_events, n_pixels)``) is compared in
  ``np.result_type(image, threshold)``, as numpy does.
* Time differences between pixels are computed in the peak-time dtype and compared with
  the time limit rounded to that dtype, except in `apply_time_average_cleaning`, where
  ctapipe builds the per-pixel limits with ``np.where`` (float64) and compares in float64.
* The charge-squared weighted mean time of `apply_time_average_cleaning` is computed in
  float32 with numpy's pairwise summation, bit for bit.

The configurable ctapipe ImageCleaner classes are `CLEANERS` / `clean`. Every public
function has a private ``@njit(cache=True)`` batch body (``_tailcuts_clean`` etc.).
"""
from __future__ import annotations

import numbers

import numpy as np
from numba import njit

from ._numeric import _pairwise_sum
from .islands import (
    _gather,
    _gather_words,
    _label_cand,
    _label_islands,
    _largest_island_mask,
    _largest_label,
    _word_scratch,
    check_csr,
    check_mask,
    csr_u32,
)

__all__ = [
    "CLEANERS",
    "clean",
    "tailcuts_clean",
    "mars_cleaning_1st_pass",
    "fact_image_cleaning",
    "time_constrained_clean",
    "nsb_image_cleaning",
    "apply_time_delta_cleaning",
    "apply_time_average_cleaning",
    "bright_cleaning",
    "dilate",
]

# --------------------------------------------------------------------------------------
# single-event helpers
#
# They work on a list of candidate pixels (``cand[:n_c]``, increasing): every pixel that
# can survive, i.e. is above the picture or the boundary threshold. Outputs are written
# at candidates only, so an output row must be all False on entry; bool scratch rows
# (``inpic``, ``tc``, ...) must be all False on entry and are reset before returning.
# This keeps the cost proportional to the few % of pixels with signal. CSR arrays are
# the validated int32 arrays viewed as uint32 (unsigned indices spare numba's
# negative-index handling).
# --------------------------------------------------------------------------------------


@njit(cache=True)
def _flags(img, pic, bnd, ap, ab, any8):
    """ap = img >= pic, ab = img >= bnd (float64 thresholds per pixel), any8 = ap | ab
    as bytes for `_gather_words`; one plain loop that LLVM vectorises."""
    for p in range(img.shape[0]):
        v = np.float64(img[p])
        a = v >= pic[p]
        b = v >= bnd[p]
        ap[p] = a
        ab[p] = b
        any8[p] = a | b


@njit(cache=True)
def _reset(m, cand, n_c):
    for i in range(n_c):
        m[cand[i]] = False


@njit(cache=True)
def _count_filter(mask, cand, n_c, min_nb, indptr, indices, out):
    """out = mask & (number of mask neighbours >= min_nb), at candidates."""
    for i in range(n_c):
        p = cand[i]
        if mask[p]:
            cnt = 0
            for j in range(indptr[p], indptr[p + 1]):
                cnt += mask[indices[j]]
            out[p] = cnt >= min_nb


@njit(cache=True)
def _time_delta(mask, cand, n_c, t, min_nb, limit, indptr, indices, out):
    """``apply_time_delta_cleaning`` at candidates: keep mask pixels with >= min_nb mask
    neighbours closer than ``limit`` in time (``limit`` in the dtype of ``t``)."""
    for i in range(n_c):
        p = cand[i]
        if mask[p]:
            tp = t[p]
            cnt = 0
            for j in range(indptr[p], indptr[p + 1]):
                nb = indices[j]
                cnt += mask[nb] & (abs(tp - t[nb]) < limit)
            out[p] = cnt >= min_nb


@njit(cache=True)
def _tailcuts_cand(img, pic, bnd, keep_isolated, min_nb, indptr, indices, ap, ab, any8, any64, inpic, cand,
                   out):
    """ctapipe ``tailcuts_clean`` for one event; returns the number of candidates.

    Fills ``ap``/``ab`` (above picture / boundary, every pixel) and ``cand``;
    ``any8``/``any64`` from `_word_scratch`.
    """
    _flags(img, pic, bnd, ap, ab, any8)
    n_c = _gather_words(any8, any64, cand)
    # the neighbour requirement counts neighbours above the picture threshold (not
    # neighbours that themselves pass it) and is skipped with keep_isolated_pixels
    # (branch-free: whether a candidate is above the picture threshold is unpredictable)
    no_count = keep_isolated or min_nb == 0
    for i in range(n_c):
        p = cand[i]
        cnt = 0
        for j in range(indptr[p], indptr[p + 1]):
            cnt += ap[indices[j]]
        inpic[p] = ap[p] & (no_count | (cnt >= min_nb))
    for i in range(n_c):
        p = cand[i]
        has_pic = False
        has_bnd = False
        for j in range(indptr[p], indptr[p + 1]):
            nb = indices[j]
            has_pic |= inpic[nb]
            has_bnd |= ab[nb]
        out[p] = (ab[p] & has_pic) | (inpic[p] & (keep_isolated | has_bnd))
    _reset(inpic, cand, n_c)
    return n_c


@njit(cache=True)
def _time_average(mask, cand, n_c, img, t, pic2, limit, indptr, indices, labels, queue, bright, wbuf, awbuf,
                  out):
    """``apply_time_average_cleaning`` for one event (mask pixels must be candidates).

    ``pic2`` is the (rounded) ``2 * picture_thresh`` per pixel, ``limit`` the time limit
    as float64. ``labels`` (int32, n_pixels) must be all 0 and is reset. ``wbuf``/``awbuf``
    (n_pixels) are scratch in ``result_type(peak_time, image)``, the dtype numpy's
    ``np.average`` sums in.
    """
    k = _label_cand(mask, cand, n_c, indptr, indices, labels, queue)
    if k == 0:
        return
    # brightest island: float64 sums in pixel order (np.add.at); label 0 competes with
    # brightness 0, and np.argmax takes the first maximum (or the first NaN)
    for i in range(k + 1):
        bright[i] = 0.0
    for i in range(n_c):
        p = cand[i]
        if labels[p] > 0:
            bright[labels[p]] += np.float64(img[p])
    best = 0
    for i in range(k + 1):
        if np.isnan(bright[i]):
            best = i
            break
        if bright[i] > bright[best]:
            best = i
    n = 0
    if best > 0:
        for i in range(n_c):
            p = cand[i]
            if labels[p] == best:
                w = img[p] * img[p]  # image ** 2 in the image dtype
                wbuf[n] = w
                awbuf[n] = t[p] * w
                n += 1
    else:
        # only with non-positive island charges: ctapipe then averages over all
        # pixels outside the mask
        for p in range(img.shape[0]):
            if labels[p] == 0:
                w = img[p] * img[p]
                wbuf[n] = w
                awbuf[n] = t[p] * w
                n += 1
    if n == 0 or _pairwise_sum(wbuf, 0, n) == 0.0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    ave = _pairwise_sum(awbuf, 0, n) / _pairwise_sum(wbuf, 0, n)
    for i in range(n_c):
        p = cand[i]
        if mask[p]:
            d = np.float64(abs(t[p] - ave))
            lim = limit if np.float64(img[p]) < pic2[p] else limit * 2.0
            out[p] = d < lim
    for i in range(n_c):
        labels[cand[i]] = 0


@njit(cache=True)
def _bright_threshold(img, threshold, fraction, n_largest, top):
    """``bright_cleaning``'s cut for one event, in the image dtype.

    Returns (apply, cut): pixels below ``cut`` are removed if ``apply``. ``threshold`` and
    ``fraction`` have the image dtype (ctapipe's Python floats are weak scalars);
    ``top`` is scratch of length >= max(min(n_largest, n_pixels), 1).
    """
    n_pix = img.shape[0]
    n = min(n_largest, n_pix)
    if n <= 0:
        top[0] = np.nan  # np.mean([]): every comparison with it fails
    else:
        if n <= 32:
            # heapq.nlargest, kept sorted descending by insertion
            m = 0
            for p in range(n_pix):
                v = img[p]
                if m < n:
                    i = m
                    m += 1
                elif v > top[n - 1]:
                    i = n - 1
                else:
                    continue
                while i > 0 and top[i - 1] < v:
                    top[i] = top[i - 1]
                    i -= 1
                top[i] = v
        else:
            s = np.sort(img)
            for i in range(n):
                top[i] = s[n_pix - 1 - i]
        # np.mean: sum in the dtype (pairwise), divided by an np.intp count in float64
        total = _pairwise_sum(top, 0, n)
        top[0] = np.float64(total) / n  # storing rounds back to the image dtype
    mean = top[0]
    if mean < threshold:
        return False, mean
    return True, fraction * mean


@njit(cache=True)
def _is_symmetric(indptr, indices):
    n_pix = indptr.shape[0] - 1
    for p in range(n_pix):
        for j in range(indptr[p], indptr[p + 1]):
            q = indices[j]
            found = False
            for jj in range(indptr[q], indptr[q + 1]):
                if indices[jj] == p:
                    found = True
                    break
            if not found:
                return False
    return True


# --------------------------------------------------------------------------------------
# batch bodies: scratch is allocated once per batch, events loop inside; ``out`` must
# be all False on entry (np.zeros)
# --------------------------------------------------------------------------------------


@njit(cache=True)
def _tailcuts_clean(image, pic, bnd, keep_isolated, min_nb, indptr, indices, out):
    n_ev, n_pix = image.shape
    ap = np.empty(n_pix, np.bool_)
    ab = np.empty(n_pix, np.bool_)
    inpic = np.zeros(n_pix, np.bool_)
    cand = np.empty(n_pix, np.uint32)
    any8, any64 = _word_scratch(n_pix)
    pe = pic.shape[0] > 1
    be = bnd.shape[0] > 1
    for e in range(n_ev):
        _tailcuts_cand(image[e], pic[e if pe else 0], bnd[e if be else 0], keep_isolated, min_nb,
                       indptr, indices, ap, ab, any8, any64, inpic, cand, out[e])


@njit(cache=True)
def _mars_cleaning_1st_pass(image, pic, bnd, keep_isolated, min_nb, indptr, indices, out):
    n_ev, n_pix = image.shape
    ap = np.empty(n_pix, np.bool_)
    ab = np.empty(n_pix, np.bool_)
    inpic = np.zeros(n_pix, np.bool_)
    tc = np.zeros(n_pix, np.bool_)
    cand = np.empty(n_pix, np.uint32)
    any8, any64 = _word_scratch(n_pix)
    pe = pic.shape[0] > 1
    be = bnd.shape[0] > 1
    for e in range(n_ev):
        n_c = _tailcuts_cand(image[e], pic[e if pe else 0], bnd[e if be else 0], keep_isolated, min_nb,
                             indptr, indices, ap, ab, any8, any64, inpic, cand, tc)
        # the boundary step once more, from the tailcuts result (pixels above the
        # boundary threshold are all candidates)
        o = out[e]
        for i in range(n_c):
            p = cand[i]
            has_tc = False
            has_bnd = False
            for j in range(indptr[p], indptr[p + 1]):
                nb = indices[j]
                has_tc |= tc[nb]
                has_bnd |= ab[nb]
            o[p] = (ab[p] and has_tc) or (tc[p] and (keep_isolated or has_bnd))
        _reset(tc, cand, n_c)


@njit(cache=True)
def _fact_image_cleaning(image, peak_time, pic, bnd, min_nb, limit, indptr, indices, out):
    n_ev, n_pix = image.shape
    ap = np.empty(n_pix, np.bool_)
    ab = np.empty(n_pix, np.bool_)
    k1 = np.zeros(n_pix, np.bool_)
    k2 = np.zeros(n_pix, np.bool_)
    k3 = np.zeros(n_pix, np.bool_)
    k4 = np.zeros(n_pix, np.bool_)
    cand = np.empty(n_pix, np.uint32)
    any8, any64 = _word_scratch(n_pix)
    pe = pic.shape[0] > 1
    be = bnd.shape[0] > 1
    for e in range(n_ev):
        _flags(image[e], pic[e if pe else 0], bnd[e if be else 0], ap, ab, any8)
        n_c = _gather_words(any8, any64, cand)
        # steps 1-2: above picture with >= min_nb neighbours above picture
        _count_filter(ap, cand, n_c, min_nb, indptr, indices, k1)
        # step 3: dilate, then require the boundary threshold
        for i in range(n_c):
            p = cand[i]
            if ab[p]:
                sel = k1[p]
                for j in range(indptr[p], indptr[p + 1]):
                    sel |= k1[indices[j]]
                k2[p] = sel
        o = out[e]
        if min_nb <= 0:
            for i in range(n_c):
                o[cand[i]] = k2[cand[i]]
        else:
            # steps 4-6: time delta, neighbour count, time delta again
            t = peak_time[e]
            _time_delta(k2, cand, n_c, t, min_nb, limit, indptr, indices, k3)
            _count_filter(k3, cand, n_c, min_nb, indptr, indices, k4)
            _time_delta(k4, cand, n_c, t, min_nb, limit, indptr, indices, o)
        _reset(k1, cand, n_c)
        _reset(k2, cand, n_c)
        _reset(k3, cand, n_c)
        _reset(k4, cand, n_c)


@njit(cache=True)
def _time_constrained_clean(image, peak_time, pic, pic2, bnd, limit_core, limit_boundary, min_nb,
                            indptr, indices, wbuf, awbuf, out):
    n_ev, n_pix = image.shape
    ap = np.empty(n_pix, np.bool_)
    ab = np.empty(n_pix, np.bool_)
    inpic = np.zeros(n_pix, np.bool_)
    core = np.zeros(n_pix, np.bool_)
    cand = np.empty(n_pix, np.uint32)
    any8, any64 = _word_scratch(n_pix)
    labels = np.zeros(n_pix, np.int32)
    queue = np.empty(n_pix + 1, indices.dtype)
    bright = np.empty(n_pix + 1, np.float64)
    pe = pic.shape[0] > 1
    p2e = pic2.shape[0] > 1
    be = bnd.shape[0] > 1
    for e in range(n_ev):
        img = image[e]
        t = peak_time[e]
        _flags(img, pic[e if pe else 0], bnd[e if be else 0], ap, ab, any8)
        n_c = _gather_words(any8, any64, cand)
        _count_filter(ap, cand, n_c, min_nb, indptr, indices, inpic)
        _time_average(inpic, cand, n_c, img, t, pic2[e if p2e else 0], limit_core, indptr, indices,
                      labels, queue, bright, wbuf, awbuf, core)
        o = out[e]
        for i in range(n_c):
            p = cand[i]
            if core[p]:
                o[p] = True
            elif ab[p]:
                # boundary pixel: needs a core neighbour, and >= min_nb core neighbours
                # closer than limit_boundary in time
                has_core = False
                cnt = 0
                tp = t[p]
                for j in range(indptr[p], indptr[p + 1]):
                    nb = indices[j]
                    has_core |= core[nb]
                    cnt += core[nb] & (abs(tp - t[nb]) < limit_boundary)
                o[p] = has_core and cnt >= min_nb
        _reset(inpic, cand, n_c)
        _reset(core, cand, n_c)


@njit(cache=True)
def _nsb_image_cleaning(image, peak_time, pic, bnd, min_nb, keep_isolated, use_time, limit, time_nb,
                        use_bright, b_threshold, b_fraction, b_n, largest_only, indptr, indices, out):
    n_ev, n_pix = image.shape
    ap = np.empty(n_pix, np.bool_)
    ab = np.empty(n_pix, np.bool_)
    inpic = np.zeros(n_pix, np.bool_)
    tc = np.zeros(n_pix, np.bool_)
    td = np.zeros(n_pix, np.bool_)
    cand = np.empty(n_pix, np.uint32)
    any8, any64 = _word_scratch(n_pix)
    labels = np.zeros(n_pix, np.int32)
    queue = np.empty(n_pix + 1, indices.dtype)
    counts = np.empty(n_pix + 1, np.int64)
    top = np.empty(max(min(b_n, n_pix), 1), image.dtype)
    pe = pic.shape[0] > 1
    be = bnd.shape[0] > 1
    for e in range(n_ev):
        img = image[e]
        n_c = _tailcuts_cand(img, pic[e if pe else 0], bnd[e if be else 0], keep_isolated, min_nb,
                             indptr, indices, ap, ab, any8, any64, inpic, cand, tc)
        cur = tc
        if use_time:
            _time_delta(tc, cand, n_c, peak_time[e], time_nb, limit, indptr, indices, td)
            cur = td
        if use_bright:
            apply, cut = _bright_threshold(img, b_threshold, b_fraction, b_n, top)
            if apply:
                for i in range(n_c):
                    p = cand[i]
                    cur[p] = cur[p] and img[p] >= cut
        o = out[e]
        if largest_only:
            k = _label_cand(cur, cand, n_c, indptr, indices, labels, queue)
            best = _largest_label(labels, cand, n_c, k, counts)
            for i in range(n_c):
                p = cand[i]
                o[p] = best > 0 and labels[p] == best
                labels[p] = 0
        else:
            for i in range(n_c):
                o[cand[i]] = cur[cand[i]]
        _reset(tc, cand, n_c)
        _reset(td, cand, n_c)


@njit(cache=True)
def _apply_time_delta_cleaning(mask, peak_time, min_nb, limit, indptr, indices, out):
    cand = np.empty(mask.shape[1], np.uint32)
    any8, any64 = _word_scratch(mask.shape[1])
    for e in range(mask.shape[0]):
        n_c = _gather(mask[e], any8, any64, cand)
        _time_delta(mask[e], cand, n_c, peak_time[e], min_nb, limit, indptr, indices, out[e])


@njit(cache=True)
def _apply_time_average_cleaning(mask, image, peak_time, pic2, limit, indptr, indices, wbuf, awbuf, out):
    n_ev, n_pix = mask.shape
    cand = np.empty(n_pix, np.uint32)
    any8, any64 = _word_scratch(n_pix)
    labels = np.zeros(n_pix, np.int32)
    queue = np.empty(n_pix + 1, indices.dtype)
    bright = np.empty(n_pix + 1, np.float64)
    p2e = pic2.shape[0] > 1
    for e in range(n_ev):
        n_c = _gather(mask[e], any8, any64, cand)
        _time_average(mask[e], cand, n_c, image[e], peak_time[e], pic2[e if p2e else 0], limit, indptr, indices,
                      labels, queue, bright, wbuf, awbuf, out[e])


@njit(cache=True)
def _bright_cleaning(image, threshold, fraction, n_largest, out):
    """``out`` all False on entry, like the other bodies."""
    n_ev, n_pix = image.shape
    top = np.empty(max(min(n_largest, n_pix), 1), image.dtype)
    for e in range(n_ev):
        img = image[e]
        o = out[e]
        apply, cut = _bright_threshold(img, threshold, fraction, n_largest, top)
        if apply:
            for p in range(n_pix):
                o[p] = img[p] >= cut
        else:
            for p in range(n_pix):
                o[p] = True


@njit(cache=True)
def _dilate(mask, n, indptr, indices, out):
    """``n`` dilations. With a symmetric neighbour relation (every real camera) only the
    neighbours of the pixels added last are visited; otherwise ctapipe's row-wise
    definition is applied to every pixel."""
    n_ev, n_pix = mask.shape
    front = np.empty(n_pix, np.uint32)
    front2 = np.empty(n_pix, np.uint32)
    buf = np.empty(n_pix, np.bool_)
    any8, any64 = _word_scratch(n_pix)
    symmetric = _is_symmetric(indptr, indices)
    for e in range(n_ev):
        m = mask[e]
        o = out[e]
        for p in range(n_pix):
            o[p] = m[p]
        if n <= 0:
            continue
        if symmetric:
            nf = _gather(m, any8, any64, front)
            for _ in range(n):
                nn = 0
                for i in range(nf):
                    p = front[i]
                    for j in range(indptr[p], indptr[p + 1]):
                        nb = indices[j]
                        if not o[nb]:
                            o[nb] = True
                            front2[nn] = nb
                            nn += 1
                front, front2 = front2, front
                nf = nn
                if nf == 0:
                    break
        else:
            for _ in range(n):
                for p in range(n_pix):
                    buf[p] = o[p]
                for p in range(n_pix):
                    if not buf[p]:
                        sel = False
                        for j in range(indptr[p], indptr[p + 1]):
                            sel |= buf[indices[j]]
                        o[p] = sel


# --------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------


def _is_real_scalar(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_float2d(x, name, shape=None):
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be a float32 or float64 array of shape (n_events, n_pixels), "
                         f"got {x.dtype} {x.shape}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape}, expected {shape}")
    return np.ascontiguousarray(x)


def _threshold(value, image, name):
    """Threshold(s) as float64 ``(1 or n_events, n_pixels)``, rounded as numpy compares them.

    A scalar is rounded to the image dtype (ctapipe's thresholds are Python floats, which
    numpy >= 2 compares in the array's dtype); an array is taken in
    ``result_type(image, threshold)``.
    """
    n_ev, n_pix = image.shape
    if _is_real_scalar(value) or (isinstance(value, np.ndarray) and value.ndim == 0
                                  and value.dtype.kind in "iuf"):
        return np.full((1, n_pix), float(image.dtype.type(value)))
    arr = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    if arr is None or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a real number or an array of shape ({n_pix},) or "
                         f"({n_ev}, {n_pix}), got {value!r:.80}")
    if arr.shape == (n_pix,):
        arr = arr[None, :]
    elif arr.shape != (n_ev, n_pix):
        raise ValueError(f"{name} must have shape ({n_pix},) or ({n_ev}, {n_pix}), got {arr.shape}")
    dtype = np.result_type(image.dtype, arr.dtype)
    return np.ascontiguousarray(arr.astype(dtype).astype(np.float64))


def _real(value, name):
    if not _is_real_scalar(value):
        raise ValueError(f"{name} must be a real number, got {value!r:.80}")
    return float(value)


def _int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r:.80}")
    return int(value)


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r:.80}")
    return bool(value)


def _csr(neighbor_indptr, neighbor_indices, n_pixels):
    return csr_u32(*check_csr(neighbor_indptr, neighbor_indices, n_pixels))


def _prepare(image, neighbor_indptr, neighbor_indices, peak_time=None, need_time=False):
    image = _check_float2d(image, "image")
    indptr, indices = _csr(neighbor_indptr, neighbor_indices, image.shape[1])
    if need_time:
        if peak_time is None:
            raise ValueError("peak_time is required by this cleaning")
        peak_time = _check_float2d(peak_time, "peak_time", image.shape)
    return image, peak_time, indptr, indices


# --------------------------------------------------------------------------------------
# public functions (ctapipe names and defaults; geom replaced by CSR neighbours)
# --------------------------------------------------------------------------------------


def tailcuts_clean(image, neighbor_indptr, neighbor_indices, picture_thresh=7.0, boundary_thresh=5.0,
                   keep_isolated_pixels=False, min_number_picture_neighbors=0):
    """Two-threshold tail-cuts cleaning (ctapipe ``tailcuts_clean``).

    A pixel survives if it is above ``boundary_thresh`` with a neighbour in the picture, or
    in the picture with a neighbour above ``boundary_thresh`` (with ``keep_isolated_pixels``:
    every picture pixel survives). Picture pixels are those above ``picture_thresh`` that
    have at least ``min_number_picture_neighbors`` neighbours above ``picture_thresh``
    (not required with ``keep_isolated_pixels``).

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32 or float64
        Pixel charges (p.e.).
    neighbor_indptr, neighbor_indices : ndarray, int32
        Pixel neighbours as CSR.
    picture_thresh, boundary_thresh : float or ndarray, shape (n_pixels,) or (n_events, n_pixels)
        Thresholds (p.e.), ``>=``.
    keep_isolated_pixels : bool
    min_number_picture_neighbors : int

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
    """
    image, _, indptr, indices = _prepare(image, neighbor_indptr, neighbor_indices)
    pic = _threshold(picture_thresh, image, "picture_thresh")
    bnd = _threshold(boundary_thresh, image, "boundary_thresh")
    out = np.zeros(image.shape, np.bool_)
    _tailcuts_clean(image, pic, bnd, _bool(keep_isolated_pixels, "keep_isolated_pixels"),
                    _int(min_number_picture_neighbors, "min_number_picture_neighbors"), indptr, indices, out)
    return out


def mars_cleaning_1st_pass(image, neighbor_indptr, neighbor_indices, picture_thresh=7.0, boundary_thresh=5.0,
                           keep_isolated_pixels=False, min_number_picture_neighbors=0):
    """MARS-like three-level cleaning (ctapipe ``mars_cleaning_1st_pass``).

    `tailcuts_clean`, then the same boundary step once more starting from its result: pixels
    above ``boundary_thresh`` next to a surviving pixel are added; without
    ``keep_isolated_pixels`` surviving pixels need a neighbour above ``boundary_thresh``.

    Parameters and return value as `tailcuts_clean`.
    """
    image, _, indptr, indices = _prepare(image, neighbor_indptr, neighbor_indices)
    pic = _threshold(picture_thresh, image, "picture_thresh")
    bnd = _threshold(boundary_thresh, image, "boundary_thresh")
    out = np.zeros(image.shape, np.bool_)
    _mars_cleaning_1st_pass(image, pic, bnd, _bool(keep_isolated_pixels, "keep_isolated_pixels"),
                            _int(min_number_picture_neighbors, "min_number_picture_neighbors"),
                            indptr, indices, out)
    return out


def fact_image_cleaning(image, peak_time, neighbor_indptr, neighbor_indices, picture_threshold=4.0,
                        boundary_threshold=2.0, min_number_neighbors=2, time_limit=5.0):
    """FACT cleaning (ctapipe ``fact_image_cleaning``).

    1. pixels above ``picture_threshold``; 2. keep those with >= ``min_number_neighbors``
    such neighbours; 3. dilate and require ``boundary_threshold``; stop here if
    ``min_number_neighbors <= 0``; 4. `apply_time_delta_cleaning`; 5. keep pixels with
    >= ``min_number_neighbors`` surviving neighbours; 6. `apply_time_delta_cleaning`.

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32 or float64
        Pixel charges (p.e.).
    peak_time : ndarray, shape (n_events, n_pixels), float32 or float64
        Pixel peak times (ns).
    neighbor_indptr, neighbor_indices : ndarray, int32
        Pixel neighbours as CSR.
    picture_threshold, boundary_threshold : float or ndarray (n_pixels,) / (n_events, n_pixels)
    min_number_neighbors : int
    time_limit : float
        ns, strict ``<``.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
    """
    image, peak_time, indptr, indices = _prepare(image, neighbor_indptr, neighbor_indices, peak_time, True)
    pic = _threshold(picture_threshold, image, "picture_threshold")
    bnd = _threshold(boundary_threshold, image, "boundary_threshold")
    limit = peak_time.dtype.type(_real(time_limit, "time_limit"))
    out = np.zeros(image.shape, np.bool_)
    _fact_image_cleaning(image, peak_time, pic, bnd, _int(min_number_neighbors, "min_number_neighbors"),
                         limit, indptr, indices, out)
    return out


def _average_scratch(image, peak_time):
    dtype = np.result_type(peak_time.dtype, image.dtype)
    n_pix = image.shape[1]
    return np.empty(n_pix, dtype), np.empty(n_pix, dtype)


def time_constrained_clean(image, peak_time, neighbor_indptr, neighbor_indices, picture_thresh=7.0,
                           boundary_thresh=5.0, time_limit_core=4.5, time_limit_boundary=1.5,
                           min_number_picture_neighbors=1):
    """MAGIC-like time-constrained cleaning (ctapipe ``time_constrained_clean``).

    Core pixels: above ``picture_thresh`` with >= ``min_number_picture_neighbors``
    neighbours above it, then `apply_time_average_cleaning` (``time_limit_core``, doubled
    for pixels above ``2 * picture_thresh``). Boundary pixels: above ``boundary_thresh``,
    not core, with >= ``min_number_picture_neighbors`` core neighbours closer than
    ``time_limit_boundary`` in time (and at least one core neighbour).

    Parameters
    ----------
    image, peak_time : ndarray, shape (n_events, n_pixels), float32 or float64
        Pixel charges (p.e.) and peak times (ns).
    neighbor_indptr, neighbor_indices : ndarray, int32
        Pixel neighbours as CSR.
    picture_thresh, boundary_thresh : float or ndarray (n_pixels,) / (n_events, n_pixels)
    time_limit_core, time_limit_boundary : float
        ns.
    min_number_picture_neighbors : int

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool

    Raises
    ------
    ZeroDivisionError
        Where the core island's charge-squared weights sum to zero (ctapipe's
        ``np.average`` raises too); only possible with non-positive thresholds.
    """
    image, peak_time, indptr, indices = _prepare(image, neighbor_indptr, neighbor_indices, peak_time, True)
    pic = _threshold(picture_thresh, image, "picture_thresh")
    pic2 = _threshold(2 * np.asarray(picture_thresh) if not _is_real_scalar(picture_thresh)
                      else 2 * picture_thresh, image, "picture_thresh")
    bnd = _threshold(boundary_thresh, image, "boundary_thresh")
    limit_core = _real(time_limit_core, "time_limit_core")
    limit_boundary = peak_time.dtype.type(_real(time_limit_boundary, "time_limit_boundary"))
    wbuf, awbuf = _average_scratch(image, peak_time)
    out = np.zeros(image.shape, np.bool_)
    _time_constrained_clean(image, peak_time, pic, pic2, bnd, limit_core, limit_boundary,
                            _int(min_number_picture_neighbors, "min_number_picture_neighbors"),
                            indptr, indices, wbuf, awbuf, out)
    return out


def apply_time_delta_cleaning(mask, peak_time, neighbor_indptr, neighbor_indices, min_number_neighbors,
                              time_limit):
    """Remove mask pixels with fewer than ``min_number_neighbors`` mask neighbours whose
    peak time is closer than ``time_limit`` (ctapipe ``apply_time_delta_cleaning``).

    Parameters
    ----------
    mask : ndarray, shape (n_events, n_pixels), bool
    peak_time : ndarray, shape (n_events, n_pixels), float32 or float64
        ns.
    neighbor_indptr, neighbor_indices : ndarray, int32
    min_number_neighbors : int
    time_limit : float
        ns, strict ``<``, compared in the peak-time dtype.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
    """
    mask = check_mask(mask)
    peak_time = _check_float2d(peak_time, "peak_time", mask.shape)
    indptr, indices = _csr(neighbor_indptr, neighbor_indices, mask.shape[1])
    limit = peak_time.dtype.type(_real(time_limit, "time_limit"))
    out = np.zeros(mask.shape, np.bool_)
    _apply_time_delta_cleaning(mask, peak_time, _int(min_number_neighbors, "min_number_neighbors"), limit,
                               indptr, indices, out)
    return out


def apply_time_average_cleaning(mask, image, peak_time, neighbor_indptr, neighbor_indices, picture_thresh,
                                time_limit):
    """Keep mask pixels whose peak time is within ``time_limit`` of the charge²-weighted
    mean time of the brightest island (twice the limit for pixels above
    ``2 * picture_thresh``); ctapipe ``apply_time_average_cleaning``.

    Parameters
    ----------
    mask : ndarray, shape (n_events, n_pixels), bool
    image, peak_time : ndarray, shape (n_events, n_pixels), float32 or float64
        p.e. and ns.
    neighbor_indptr, neighbor_indices : ndarray, int32
    picture_thresh : float or ndarray (n_pixels,) / (n_events, n_pixels)
    time_limit : float
        ns, strict ``<``.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
    """
    mask = check_mask(mask)
    image = _check_float2d(image, "image", mask.shape)
    peak_time = _check_float2d(peak_time, "peak_time", mask.shape)
    indptr, indices = _csr(neighbor_indptr, neighbor_indices, mask.shape[1])
    pic2 = _threshold(2 * np.asarray(picture_thresh) if not _is_real_scalar(picture_thresh)
                      else 2 * picture_thresh, image, "picture_thresh")
    wbuf, awbuf = _average_scratch(image, peak_time)
    out = np.zeros(mask.shape, np.bool_)
    _apply_time_average_cleaning(mask, image, peak_time, pic2, _real(time_limit, "time_limit"), indptr, indices,
                                 wbuf, awbuf, out)
    return out


def bright_cleaning(image, threshold, fraction, n_pixels=3):
    """Remove pixels below ``fraction`` times the mean of the ``n_pixels`` brightest pixels,
    if that mean is at least ``threshold`` (ctapipe ``bright_cleaning``).

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32 or float64
        p.e.
    threshold : float
        p.e.
    fraction : float
    n_pixels : int
        ``<= 0`` removes every pixel (the mean of no pixels is NaN in ctapipe).

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
        All True for events whose brightest pixels are below ``threshold``.
    """
    image = _check_float2d(image, "image")
    t = image.dtype.type
    out = np.zeros(image.shape, np.bool_)
    _bright_cleaning(image, t(_real(threshold, "threshold")), t(_real(fraction, "fraction")),
                     _int(n_pixels, "n_pixels"), out)
    return out


def nsb_image_cleaning(image, peak_time, neighbor_indptr, neighbor_indices, picture_thresh_min=8.0,
                       boundary_thresh=4.0, min_number_picture_neighbors=2, keep_isolated_pixels=False,
                       time_limit=None, time_num_neighbors=1, bright_cleaning_n_pixels=3,
                       bright_cleaning_fraction=0.03, bright_cleaning_threshold=None, largest_island_only=False,
                       pedestal_factor=2.5, pedestal_std=None):
    """lstchain-like cleaning (ctapipe ``nsb_image_cleaning``).

    1. picture threshold ``max(pedestal_std * pedestal_factor, picture_thresh_min)`` per
    pixel if ``pedestal_std`` is given; 2. `tailcuts_clean`; 3. `apply_time_delta_cleaning`
    unless ``time_limit`` is None; 4. `bright_cleaning` unless ``bright_cleaning_threshold``
    is None; 5. the largest island if ``largest_island_only``.

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32 or float64
        p.e.
    peak_time : ndarray, shape (n_events, n_pixels), float32 or float64, or None
        ns; only needed with a ``time_limit``.
    neighbor_indptr, neighbor_indices : ndarray, int32
    pedestal_std : ndarray, shape (n_pixels,) or (n_events, n_pixels), or None
        Pedestal charge standard deviation (p.e.).
    other parameters
        As ctapipe.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
    """
    use_time = time_limit is not None
    image, peak_time, indptr, indices = _prepare(image, neighbor_indptr, neighbor_indices, peak_time, use_time)
    picture_thresh = picture_thresh_min
    if pedestal_std is not None:
        pedestal_std = np.asarray(pedestal_std)
        if pedestal_std.dtype.kind not in "iuf":
            raise ValueError(f"pedestal_std must be a real array, got {pedestal_std.dtype}")
        # ctapipe's expression, so that the dtype of the thresholds is numpy's
        picture_thresh = np.clip(pedestal_std * _real(pedestal_factor, "pedestal_factor"),
                                 _real(picture_thresh_min, "picture_thresh_min"), None)
    pic = _threshold(picture_thresh, image, "picture_thresh_min")
    bnd = _threshold(boundary_thresh, image, "boundary_thresh")
    if use_time:
        limit = peak_time.dtype.type(_real(time_limit, "time_limit"))
    else:
        peak_time = np.zeros((image.shape[0], 1), image.dtype)  # typed placeholder, unused
        limit = image.dtype.type(0)
    use_bright = bright_cleaning_threshold is not None
    t = image.dtype.type
    b_thr = t(_real(bright_cleaning_threshold, "bright_cleaning_threshold")) if use_bright else t(0)
    out = np.zeros(image.shape, np.bool_)
    _nsb_image_cleaning(image, peak_time, pic, bnd, _int(min_number_picture_neighbors, "min_number_picture_neighbors"),
                        _bool(keep_isolated_pixels, "keep_isolated_pixels"), use_time, limit,
                        _int(time_num_neighbors, "time_num_neighbors"), use_bright, b_thr,
                        t(_real(bright_cleaning_fraction, "bright_cleaning_fraction")),
                        _int(bright_cleaning_n_pixels, "bright_cleaning_n_pixels"),
                        _bool(largest_island_only, "largest_island_only"), indptr, indices, out)
    return out


def dilate(mask, neighbor_indptr, neighbor_indices, n=1):
    """Add ``n`` rows of neighbours to masks (ctapipe ``dilate`` applied ``n`` times).

    Parameters
    ----------
    mask : ndarray, shape (n_events, n_pixels), bool
    neighbor_indptr, neighbor_indices : ndarray, int32
    n : int
        Number of dilations; 0 returns a copy.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
    """
    mask = check_mask(mask)
    indptr, indices = _csr(neighbor_indptr, neighbor_indices, mask.shape[1])
    n = _int(n, "n")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.zeros(mask.shape, np.bool_)
    _dilate(mask, n, indptr, indices, out)
    return out


# --------------------------------------------------------------------------------------
# configurable cleaners (ctapipe ImageCleaner classes)
# --------------------------------------------------------------------------------------

_TAILCUTS_TRAITS = {
    "picture_threshold_pe": 10.0,
    "boundary_threshold_pe": 5.0,
    "min_picture_neighbors": 2,
    "keep_isolated_pixels": False,
}
_DVP_OPTIONS = {"largest_island_only": False, "n_dilations": 0}

#: ctapipe ImageCleaner class name -> {trait or dvp option: default}. The trait names and
#: defaults are ctapipe 0.28's. dvp adds ``largest_island_only`` (keep only the island with
#: most pixels) and ``n_dilations`` (rows of neighbours added), applied in this order
#: after the cleaner. For ``NSBImageCleaner`` ``largest_island_only`` is ctapipe's own trait
#: (its last step, so the same thing). ``MARSImageCleaner`` and ``FACTImageCleaner``
#: inherit ``keep_isolated_pixels`` but ignore it, as in ctapipe.
CLEANERS: dict[str, dict] = {
    "TailcutsImageCleaner": {**_TAILCUTS_TRAITS, **_DVP_OPTIONS},
    "MARSImageCleaner": {**_TAILCUTS_TRAITS, **_DVP_OPTIONS},
    "FACTImageCleaner": {**_TAILCUTS_TRAITS, "time_limit_ns": 5.0, **_DVP_OPTIONS},
    "TimeConstrainedImageCleaner": {**_TAILCUTS_TRAITS, "time_limit_core_ns": 4.5, "time_limit_boundary_ns": 1.5,
                                    **_DVP_OPTIONS},
    "NSBImageCleaner": {**_TAILCUTS_TRAITS, "time_limit": 2.0, "time_num_neighbors": 1,
                        "bright_cleaning_n_pixels": 3, "bright_cleaning_fraction": 0.03,
                        "bright_cleaning_threshold": 267.0, "pedestal_factor": 2.5, **_DVP_OPTIONS},
}

# value kind of every parameter: Float(TelescopeParameter), Int, Bool; "float?" allows None
_KINDS = {
    "picture_threshold_pe": "float", "boundary_threshold_pe": "float", "min_picture_neighbors": "int",
    "keep_isolated_pixels": "bool", "time_limit_ns": "float", "time_limit_core_ns": "float",
    "time_limit_boundary_ns": "float", "time_limit": "float?", "time_num_neighbors": "int",
    "bright_cleaning_n_pixels": "int", "bright_cleaning_fraction": "float", "bright_cleaning_threshold": "float?",
    "pedestal_factor": "float", "largest_island_only": "bool", "n_dilations": "int",
}


def _check_param(cleaner, key, value):
    kind = _KINDS[key]
    what = f"{cleaner}.{key}"
    if kind == "float?" and value is None:
        return None
    if kind in ("float", "float?"):
        return _real(value, what)
    if kind == "int":
        value = _int(value, what)
        if key == "n_dilations" and value < 0:
            raise ValueError(f"{what} must be >= 0, got {value}")
        return value
    return _bool(value, what)


def clean(name, image, peak_time, neighbor_indptr, neighbor_indices, *, pedestal_std=None, **params):
    """Run a ctapipe ImageCleaner by class name with its trait values.

    Parameters
    ----------
    name : str
        A key of `CLEANERS`.
    image : ndarray, shape (n_events, n_pixels), float32 or float64
        p.e.
    peak_time : ndarray, shape (n_events, n_pixels), float32 or float64, or None
        ns; not used by ``TailcutsImageCleaner`` and ``MARSImageCleaner``.
    neighbor_indptr, neighbor_indices : ndarray, int32
        Pixel neighbours as CSR.
    pedestal_std : ndarray, shape (n_pixels,) or (n_events, n_pixels), optional
        Pedestal charge std (p.e.), used by ``NSBImageCleaner`` only (ctapipe takes it from
        the monitoring container; the other cleaners ignore it).
    **params
        Trait values overriding the defaults in ``CLEANERS[name]``.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
        Cleaner result, then the largest island if ``largest_island_only``, then
        ``n_dilations`` dilations.

    Raises
    ------
    ValueError
        Unknown cleaner, unknown parameter or parameter of the wrong type.
    """
    if name not in CLEANERS:
        raise ValueError(f"unknown image cleaner {name!r}; known: {sorted(CLEANERS)}")
    defaults = CLEANERS[name]
    for key in params:
        if key not in defaults:
            raise ValueError(f"unknown parameter {key!r} for {name}; known: {sorted(defaults)}")
    cfg = {key: _check_param(name, key, params.get(key, default)) for key, default in defaults.items()}
    pic, bnd = cfg["picture_threshold_pe"], cfg["boundary_threshold_pe"]
    nb = cfg["min_picture_neighbors"]
    largest = cfg["largest_island_only"]
    if name == "TailcutsImageCleaner":
        mask = tailcuts_clean(image, neighbor_indptr, neighbor_indices, pic, bnd, cfg["keep_isolated_pixels"], nb)
    elif name == "MARSImageCleaner":
        mask = mars_cleaning_1st_pass(image, neighbor_indptr, neighbor_indices, pic, bnd, False, nb)
    elif name == "FACTImageCleaner":
        mask = fact_image_cleaning(image, peak_time, neighbor_indptr, neighbor_indices, pic, bnd, nb,
                                   cfg["time_limit_ns"])
    elif name == "TimeConstrainedImageCleaner":
        mask = time_constrained_clean(image, peak_time, neighbor_indptr, neighbor_indices, pic, bnd,
                                      cfg["time_limit_core_ns"], cfg["time_limit_boundary_ns"], nb)
    else:
        mask = nsb_image_cleaning(
            image, peak_time, neighbor_indptr, neighbor_indices, picture_thresh_min=pic, boundary_thresh=bnd,
            min_number_picture_neighbors=nb, keep_isolated_pixels=cfg["keep_isolated_pixels"],
            time_limit=cfg["time_limit"], time_num_neighbors=cfg["time_num_neighbors"],
            bright_cleaning_n_pixels=cfg["bright_cleaning_n_pixels"],
            bright_cleaning_fraction=cfg["bright_cleaning_fraction"],
            bright_cleaning_threshold=cfg["bright_cleaning_threshold"], largest_island_only=largest,
            pedestal_factor=cfg["pedestal_factor"], pedestal_std=pedestal_std)
        largest = False  # done inside, as ctapipe's last step
    indptr, indices = _csr(neighbor_indptr, neighbor_indices, mask.shape[1])
    if largest:
        labels = np.zeros(mask.shape, np.int32)
        n_islands = np.empty(mask.shape[0], np.int32)
        _label_islands(mask, indptr, indices, labels, n_islands)
        _largest_island_mask(labels, n_islands, mask)
    if cfg["n_dilations"] > 0:
        out = np.zeros(mask.shape, np.bool_)
        _dilate(mask, cfg["n_dilations"], indptr, indices, out)
        mask = out
    return mask
