"""Small per-pixel passes of the DL1 chain: per-telescope charge correction, peak-time
shift and the summary variables of cleaned images, fused so a batch is read once."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _correct_and_shift(image, peak_time, gain, row_variant, corr, time_shift, do_corr, do_shift):
    n_ev, n_pix = image.shape
    for ev in range(n_ev):
        v = row_variant[ev]
        for p in range(n_pix):
            if do_corr:
                # what the extractors compute: float32(float64(window sum) * correction)
                image[ev, p] = np.float32(np.float64(image[ev, p]) * corr[v, gain[ev, p]])
            if do_shift:
                peak_time[ev, p] = peak_time[ev, p] - time_shift[ev, p]


def correct_and_shift(image, peak_time, gain, row_variant=None, corr=None, time_shift=None):
    """In place: ``image *= corr[row_variant, gain]`` and ``peak_time -= time_shift``.

    Parameters
    ----------
    image, peak_time : ndarray, shape (n_events, n_pixels), float32
        Charge (p.e.) and peak time (ns); modified in place.
    gain : ndarray, shape (n_events, n_pixels), int8
        Selected gain channel per pixel.
    row_variant : ndarray, shape (n_events,), int, optional
        Row of ``corr`` for each event (the telescope's readout variant).
    corr : ndarray, shape (n_variants, n_channels), float64, optional
        Integration correction; None skips the correction.
    time_shift : ndarray, shape (n_events, n_pixels), float32, optional
        Per-pixel time offset (ns); None skips the shift.
    """
    n_ev, n_pix = image.shape
    if image.dtype != np.float32 or peak_time.dtype != np.float32 or peak_time.shape != image.shape:
        raise ValueError(f"image and peak_time must be float32 {(n_ev, n_pix)}")
    if gain.shape != image.shape:
        raise ValueError(f"gain has shape {gain.shape}, expected {image.shape}")
    do_corr, do_shift = corr is not None, time_shift is not None
    if do_corr:
        corr = np.ascontiguousarray(corr, np.float64)
        row_variant = np.ascontiguousarray(row_variant, np.int64)
        if corr.ndim != 2 or row_variant.shape != (n_ev,):
            raise ValueError("corr must be (n_variants, n_channels) and row_variant (n_events,)")
        if n_ev and (row_variant.min() < 0 or row_variant.max() >= corr.shape[0]):
            raise ValueError("row_variant out of range")
        if n_ev and (gain.min() < 0 or gain.max() >= corr.shape[1]):
            raise ValueError("gain channel out of range of corr")
    else:
        corr, row_variant = np.ones((1, 1)), np.zeros(n_ev, np.int64)
    if do_shift:
        time_shift = np.ascontiguousarray(time_shift, np.float32)
        if time_shift.shape != image.shape:
            raise ValueError(f"time_shift has shape {time_shift.shape}, expected {image.shape}")
    else:
        time_shift = np.zeros((1, 1), np.float32)
    _correct_and_shift(image, peak_time, np.ascontiguousarray(gain), row_variant, corr, time_shift,
                       do_corr, do_shift)
    return image, peak_time


@njit(cache=True)
def _image_summary(image, mask, size, n_pixels, n_nonzero, max_pe):
    n_ev, n_pix = image.shape
    for ev in range(n_ev):
        s = 0.0
        k = 0
        nz = 0
        m = -np.inf
        for p in range(n_pix):
            if mask[ev, p]:
                v = image[ev, p]
                s += v
                k += 1
                nz += v != 0
                if v > m:
                    m = v
        size[ev] = s
        n_pixels[ev] = k
        n_nonzero[ev] = nz
        max_pe[ev] = m if k else np.nan


def image_summary(image, mask) -> dict:
    """Per-event variables of the cleaned image for the image quality query.

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32, p.e.
    mask : ndarray, shape (n_events, n_pixels), bool

    Returns
    -------
    dict with ``size`` (float64, p.e.; summed in float64, so only the comparison with
    thresholds, not the sum itself, is meant to match ctapipe's float32 ``image.sum()``),
    ``n_pixels``, ``n_nonzero`` (int64) and ``max_pe`` (float64, NaN if no pixel),
    each of shape (n_events,).
    """
    if image.shape != mask.shape or mask.dtype != np.bool_:
        raise ValueError(f"image {image.shape} and bool mask {mask.shape} {mask.dtype} must match")
    n = image.shape[0]
    out = {"size": np.empty(n), "n_pixels": np.empty(n, np.int64), "n_nonzero": np.empty(n, np.int64),
           "max_pe": np.empty(n)}
    _image_summary(np.ascontiguousarray(image), np.ascontiguousarray(mask), out["size"], out["n_pixels"],
                   out["n_nonzero"], out["max_pe"])
    return out
