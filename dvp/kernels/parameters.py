"""Leakage, concentration, morphology and descriptive statistics of cleaned images.

Batch kernels reproducing ctapipe 0.28's ``leakage_parameters``, ``concentration_parameters``,
``morphology_parameters`` (island size classes) and ``descriptive_statistics`` as
``ImageProcessor`` calls them. ctapipe does several of these sums on the float32 image with
numpy's pairwise summation and float32 arithmetic; the kernels replay exactly that
(``_numeric._add_reduce``), so the results agree with ctapipe bit for bit where the inputs do.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._numeric import _add_reduce
from .hillas import _as_float32_image, _check_batch, _check_pixels, _mask_bytes, _masked_pixels

LEAKAGE_KEYS = ("pixels_width_1", "pixels_width_2", "intensity_width_1", "intensity_width_2")
CONCENTRATION_KEYS = ("cog", "core", "pixel")
MORPHOLOGY_KEYS = ("n_pixels", "n_islands", "n_small_islands", "n_medium_islands", "n_large_islands")
STATISTICS_KEYS = ("max", "min", "mean", "std", "skewness", "kurtosis")

#: ctapipe's island size classes: small <= 2 pixels < medium <= 50 pixels < large
SMALL_ISLAND_MAX = 2
MEDIUM_ISLAND_MAX = 50


@njit(cache=True)
def _ieee_div(num, den):
    """float64 num / den with IEEE semantics (numba's scalar division raises on zero)."""
    if den == 0.0:
        if num == 0.0 or num != num:
            return np.nan
        return np.copysign(np.inf, num) * np.copysign(1.0, den)
    return num / den


@njit(cache=True)
def _div_f32(num, den):
    """float32 num / den correctly rounded (float64 quotient of float32 values, rounded once more)."""
    return np.float32(_ieee_div(np.float64(num), np.float64(den)))


# ----------------------------------------------------------------------------- leakage
@njit(cache=True)
def _leakage(image, mask_bytes, border_1, border_2, selected, idx, buf, buf_1, buf_2, out):
    n_ev, n_pix = image.shape
    for e in range(n_ev):
        for k in range(4):
            out[k, e] = np.nan
        if not selected[e]:
            continue
        n = _masked_pixels(mask_bytes, e * n_pix, n_pix, idx)
        n1 = 0
        n2 = 0
        for i in range(n):
            p = idx[i]
            v = image[e, p]
            buf[i] = v
            if border_1[p]:
                buf_1[n1] = v
                n1 += 1
            if border_2[p]:
                buf_2[n2] = v
                n2 += 1
        if n == 0:
            continue  # ctapipe: ZeroDivisionError
        total = _add_reduce(buf, 0, n)
        out[0, e] = n1 / n
        out[1, e] = n2 / n
        out[2, e] = _div_f32(_add_reduce(buf_1, 0, n1), total)
        out[3, e] = _div_f32(_add_reduce(buf_2, 0, n2), total)


def leakage_parameters(image, mask, border_1, border_2, selected=None):
    """Leakage of a batch of cleaned images (ctapipe 0.28 ``leakage_parameters``).

    Parameters
    ----------
    image : ndarray, shape (n_events, n_pixels), float32, p.e.
    mask : ndarray, shape (n_events, n_pixels), bool
        Cleaning mask.
    border_1, border_2 : ndarray, shape (n_pixels,), bool
        Camera border pixels of width 1 and 2 (``geom.get_border_pixel_mask(1 / 2)``).
    selected : ndarray, shape (n_events,), bool, optional
        Events with False are skipped (all outputs NaN).

    Returns
    -------
    dict of str -> ndarray, shape (n_events,), float64
        pixels_width_1/2: fraction of the cleaned pixels in the border; intensity_width_1/2:
        fraction of the cleaned intensity there (float32 arithmetic, as in ctapipe; inf or NaN
        when the cleaned intensity is 0). All NaN for an empty mask (ctapipe raises).
    """
    border_1 = np.asarray(border_1)
    border_2 = np.asarray(border_2)
    n_pix = border_1.shape[0] if border_1.ndim == 1 else -1
    for key, b in (("border_1", border_1), ("border_2", border_2)):
        if b.ndim != 1 or b.dtype != np.bool_ or b.shape[0] != n_pix:
            raise ValueError(f"leakage_parameters: {key} must be bool (n_pixels,), got {b.dtype} {b.shape}")
    image, mask, selected = _check_batch("leakage_parameters", image, mask, n_pix, selected)
    image = _as_float32_image("leakage_parameters", image)
    out = np.empty((len(LEAKAGE_KEYS), image.shape[0]), np.float64)
    bufs = np.empty((3, n_pix), np.float32)
    _leakage(image, _mask_bytes(mask), np.ascontiguousarray(border_1), np.ascontiguousarray(border_2), selected,
             np.empty(n_pix, np.int64), bufs[0], bufs[1], bufs[2], out)
    return dict(zip(LEAKAGE_KEYS, out))


# ----------------------------------------------------------------------- concentration
@njit(cache=True)
def _concentration(pix_x, pix_y, pixel_width, image, mask_bytes, fov_lon, fov_lat, length, width, psi_deg,
                   intensity, selected, idx, buf_cog, buf_core, out):
    n_ev, n_pix = image.shape
    for e in range(n_ev):
        for k in range(3):
            out[k, e] = np.nan
        size = intensity[e]
        # NaN intensity: ctapipe's hillas_parameters raised, nothing downstream is computed
        if not selected[e] or not np.isfinite(size):
            continue
        x = fov_lon[e]
        y = fov_lat[e]
        h_len = length[e]
        h_wid = width[e]
        psi = np.deg2rad(psi_deg[e])
        cos_psi = np.cos(psi)
        sin_psi = np.sin(psi)
        len2 = h_len * h_len
        wid2 = h_wid * h_wid
        # ctapipe tests ``width != 0``: a NaN width still goes through (and selects nothing)
        use_core = h_wid != 0.0
        n_cog = 0
        n_core = 0
        n = _masked_pixels(mask_bytes, e * n_pix, n_pix, idx)
        brightest = np.float32(-np.inf)
        has_nan = False
        for i in range(n):
            p = idx[i]
            v = image[e, p]
            if v > brightest:
                brightest = v
            elif v != v:
                has_nan = True
            dx = pix_x[p] - x
            dy = pix_y[p] - y
            pw = pixel_width[p]
            if dx * dx + dy * dy < pw * pw:
                buf_cog[n_cog] = v
                n_cog += 1
            if use_core:
                lon = dx * cos_psi + dy * sin_psi
                tra = dx * -sin_psi + dy * cos_psi
                if lon * lon / len2 + tra * tra / wid2 <= 1.0:
                    buf_core[n_core] = v
                    n_core += 1
        if n == 0:
            continue
        if has_nan:
            brightest = np.float32(np.nan)
        out[0, e] = _ieee_div(np.float64(_add_reduce(buf_cog, 0, n_cog)), size)
        out[1, e] = _ieee_div(np.float64(_add_reduce(buf_core, 0, n_core)), size) if use_core else 0.0
        out[2, e] = _ieee_div(np.float64(brightest), size)


def concentration_parameters(pix_x, pix_y, pixel_width, image, mask, hillas, selected=None):
    """Concentration of a batch of cleaned images (ctapipe 0.28 ``concentration_parameters``).

    Parameters
    ----------
    pix_x, pix_y : ndarray, shape (n_pixels,), float64, deg
        Pixel positions in the telescope frame.
    pixel_width : ndarray, shape (n_pixels,), float64, deg
        ctapipe's ``geometry.pixel_width`` in the telescope frame.
    image : ndarray, shape (n_events, n_pixels), float32, p.e.
    mask : ndarray, shape (n_events, n_pixels), bool
    hillas : dict
        Output of ``dvp.kernels.hillas.hillas_parameters`` for the same batch (uses
        intensity, fov_lon, fov_lat, length, width, psi).
    selected : ndarray, shape (n_events,), bool, optional
        Events with False are skipped (all outputs NaN).

    Returns
    -------
    dict of str -> ndarray, shape (n_events,), float64
        cog: fraction of the intensity within one pixel width of the centre of gravity;
        core: inside the Hillas ellipse (0 when width is 0); pixel: in the brightest pixel.
        NaN where the Hillas intensity is NaN (ctapipe's hillas_parameters failed).
    """
    n_pix, (pix_x, pix_y, pixel_width) = _check_pixels(
        "concentration_parameters", pix_x=pix_x, pix_y=pix_y, pixel_width=pixel_width)
    image, mask, selected = _check_batch("concentration_parameters", image, mask, n_pix, selected)
    image = _as_float32_image("concentration_parameters", image)
    h = _hillas_columns("concentration_parameters", hillas, image.shape[0],
                        ("fov_lon", "fov_lat", "length", "width", "psi", "intensity"))
    out = np.empty((len(CONCENTRATION_KEYS), image.shape[0]), np.float64)
    bufs = np.empty((2, n_pix), np.float32)
    _concentration(pix_x, pix_y, pixel_width, image, _mask_bytes(mask), *h, selected, np.empty(n_pix, np.int64),
                   bufs[0], bufs[1], out)
    return dict(zip(CONCENTRATION_KEYS, out))


def _hillas_columns(name, hillas, n_ev, keys):
    cols = []
    for key in keys:
        if key not in hillas:
            raise ValueError(f"{name}: hillas dict lacks {key!r}")
        col = np.asarray(hillas[key])
        if col.shape != (n_ev,):
            raise ValueError(f"{name}: hillas[{key!r}] must be ({n_ev},), got {col.shape}")
        cols.append(np.ascontiguousarray(col, np.float64))
    return cols


# -------------------------------------------------------------------------- morphology
@njit(cache=True)
def _morphology(labels_flat, n_pix, n_islands, selected, counts, out):
    n_ev = n_islands.shape[0]
    n_words = n_pix // 2
    n_groups = n_words // 4
    n_labels = counts.shape[0]
    for e in range(n_ev):
        for k in range(5):
            out[k, e] = np.nan
        if not selected[e]:
            continue
        base = e * n_pix
        # most labels are 0: test 8 int32 labels (4 words) at once
        words = labels_flat[base:base + 2 * n_words].view(np.uint64)
        top = 0
        bad = False
        for g in range(n_groups + 1):
            if g < n_groups:
                w = 4 * g
                if (words[w] | words[w + 1] | words[w + 2] | words[w + 3]) == 0:
                    continue
                stop = base + 8 * g + 8
            else:
                stop = base + n_pix  # the tail after the last whole group
            for p in range(base + 8 * g, stop):
                lab = labels_flat[p]
                if lab != 0:
                    if lab < 0 or lab >= n_labels:
                        bad = True
                    else:
                        counts[lab] += 1
                        top = max(top, lab)
        if bad:
            raise ValueError("morphology_parameters: island labels must lie in [0, n_pixels]")
        n = 0
        small = 0
        medium = 0
        large = 0
        for lab in range(1, top + 1):
            size = counts[lab]
            counts[lab] = 0
            n += size
            if size == 0:
                continue  # non-consecutive labels: ctapipe drops empty islands too
            if size <= SMALL_ISLAND_MAX:
                small += 1
            elif size > MEDIUM_ISLAND_MAX:
                large += 1
            else:
                medium += 1
        out[0, e] = n
        out[1, e] = n_islands[e]
        out[2, e] = small
        out[3, e] = medium
        out[4, e] = large


def morphology_parameters(labels, n_islands, selected=None):
    """Island morphology of a batch of cleaned images (ctapipe 0.28 ``morphology_parameters``).

    Parameters
    ----------
    labels : ndarray, shape (n_events, n_pixels), int32
        Island label of each pixel: 0 outside the cleaning mask, islands 1..n_islands
        (``dvp.kernels.islands.label_islands``).
    n_islands : ndarray, shape (n_events,), int32
    selected : ndarray, shape (n_events,), bool, optional
        Events with False are skipped (all outputs NaN).

    Returns
    -------
    dict of str -> ndarray, shape (n_events,), float64
        n_pixels (pixels in the mask), n_islands, and the number of small (<= 2 pixels),
        medium (3..50) and large (> 50) islands.
    """
    labels = np.asarray(labels)
    n_islands = np.asarray(n_islands)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"morphology_parameters: labels must be integer (n_events, n_pixels), "
                         f"got {labels.dtype} {labels.shape}")
    n_ev, n_pix = labels.shape
    if n_islands.shape != (n_ev,) or n_islands.dtype.kind not in "iu":
        raise ValueError(f"morphology_parameters: n_islands must be integer ({n_ev},), "
                         f"got {n_islands.dtype} {n_islands.shape}")
    if selected is None:
        selected = np.ones(n_ev, np.bool_)
    selected = np.asarray(selected)
    if selected.shape != (n_ev,) or selected.dtype != np.bool_:
        raise ValueError(f"morphology_parameters: selected must be bool ({n_ev},), got {selected.dtype} {selected.shape}")
    out = np.empty((len(MORPHOLOGY_KEYS), n_ev), np.float64)
    _morphology(np.ascontiguousarray(labels, np.int32).reshape(-1), n_pix, np.ascontiguousarray(n_islands, np.int64),
                np.ascontiguousarray(selected), np.zeros(n_pix + 1, np.int64), out)
    return dict(zip(MORPHOLOGY_KEYS, out))


# -------------------------------------------------------------------------- statistics
@njit(cache=True)
def _statistics(values, mask_bytes, selected, idx, buf, out):
    n_ev, n_pix = values.shape
    for e in range(n_ev):
        for k in range(6):
            out[k, e] = np.nan
        if not selected[e]:
            continue
        n = _masked_pixels(mask_bytes, e * n_pix, n_pix, idx)
        for i in range(n):
            buf[i] = values[e, idx[i]]
        if n == 0:
            continue  # ctapipe: max of an empty array raises
        vmax = buf[0]
        vmin = buf[0]
        has_nan = False
        for i in range(n):
            v = buf[i]
            if v > vmax:
                vmax = v
            if v < vmin:
                vmin = v
            if v != v:
                has_nan = True
        if has_nan:
            vmax = np.float32(np.nan)
            vmin = np.float32(np.nan)
        # numpy: float32 mean and std (pairwise float32 sums, one float32 rounding per step)
        mean = _div_f32(_add_reduce(buf, 0, n), n)
        for i in range(n):
            d = buf[i] - mean
            buf[i] = d * d
        var = _div_f32(_add_reduce(buf, 0, n), n)
        std = np.float32(np.sqrt(np.float64(var)))
        # ctapipe's njit skewness/kurtosis: the optional std argument is typed float64 there,
        # so z = float32(x - mean) / float64(std) in float64, z**3 = (z*z)*z, z**4 = (z*z)*(z*z),
        # summed sequentially in float64
        std64 = np.float64(std)
        s3 = 0.0
        s4 = 0.0
        for i in range(n):
            z = _ieee_div(np.float64(values[e, idx[i]] - mean), std64)
            z2 = z * z
            s3 += z2 * z
            s4 += z2 * z2
        out[0, e] = vmax
        out[1, e] = vmin
        out[2, e] = mean
        out[3, e] = std
        out[4, e] = s3 / n
        out[5, e] = s4 / n - 3.0


def descriptive_statistics(values, mask, selected=None):
    """Statistics of the cleaned pixels' values (ctapipe 0.28 ``descriptive_statistics``).

    Parameters
    ----------
    values : ndarray, shape (n_events, n_pixels), float32
        Image (p.e.) or peak time (ns).
    mask : ndarray, shape (n_events, n_pixels), bool
    selected : ndarray, shape (n_events,), bool, optional
        Events with False are skipped (all outputs NaN).

    Returns
    -------
    dict of str -> ndarray, shape (n_events,), float64
        max, min, mean, std (population, ddof=0), skewness and kurtosis (Fisher, normal -> 0)
        with ctapipe's float32 arithmetic. NaN for an empty mask (ctapipe raises); skewness and
        kurtosis are NaN when std is 0.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"descriptive_statistics: values must be (n_events, n_pixels), got {values.shape}")
    values, mask, selected = _check_batch("descriptive_statistics", values, mask, values.shape[1], selected)
    if values.dtype != np.float32:
        raise ValueError(f"descriptive_statistics: values must be float32, got {values.dtype}")
    out = np.empty((len(STATISTICS_KEYS), values.shape[0]), np.float64)
    n_pix = values.shape[1]
    _statistics(np.ascontiguousarray(values), _mask_bytes(mask), selected, np.empty(n_pix, np.int64),
                np.empty(n_pix, np.float32), out)
    return dict(zip(STATISTICS_KEYS, out))


__all__ = ["leakage_parameters", "concentration_parameters", "morphology_parameters",
           "descriptive_statistics", "LEAKAGE_KEYS", "CONCENTRATION_KEYS", "MORPHOLOGY_KEYS",
           "STATISTICS_KEYS"]
