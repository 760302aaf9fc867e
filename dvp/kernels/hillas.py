"""Hillas parameters of cleaned images, batch kernel reproducing ctapipe 0.28.

ctapipe's ``hillas_parameters(geom[mask], image[mask])`` is a weighted PCA of the pixel
positions plus MAGIC-style uncertainties; this module computes the same numbers for a batch
of images of one camera, in the telescope frame (pixel positions and all angles in degrees).

Differences from ctapipe's arithmetic are at the level of float64 rounding: the 2x2
eigen-problem is solved in closed form (``psi = atan2(2 c_xy, c_xx - c_yy) / 2``, the same
angle LAPACK's eigenvector gives) instead of ``np.linalg.eigh``, and sums are sequential
instead of numpy's pairwise sums. Images that are (to rounding) rotationally symmetric have
an ill-defined ``psi``; there the two implementations may disagree arbitrarily.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: output keys, ctapipe's HillasParametersContainer field names
HILLAS_KEYS = (
    "intensity", "fov_lon", "fov_lat", "r", "phi", "length", "length_uncertainty", "width",
    "width_uncertainty", "psi", "psi_uncertainty", "transverse_cog_uncertainty", "skewness", "kurtosis",
)
# ctapipe rounds eigenvalues with |value| <= float64 eps to exactly zero
_HILLAS_ATOL = np.finfo(np.float64).eps
_RAD2DEG = 180.0 / np.pi

(_INTENSITY, _FOV_LON, _FOV_LAT, _R, _PHI, _LENGTH, _LENGTH_UNC, _WIDTH, _WIDTH_UNC, _PSI, _PSI_UNC,
 _TRANS_UNC, _SKEWNESS, _KURTOSIS) = range(len(HILLAS_KEYS))


@njit(cache=True)
def _masked_pixels(mask_bytes, base, n_pix, idx):
    """Indices of the True pixels of one mask row into ``idx``; returns how many.

    ``mask_bytes`` is the flat (n_events * n_pixels) uint8 view of a bool mask and ``base`` the
    row's offset. Cleaning masks are sparse, so the row is read 8 pixels at a time and empty
    words are skipped.
    """
    n = 0
    n_words = n_pix // 8
    words = mask_bytes[base:base + 8 * n_words].view(np.uint64)
    for w in range(n_words):
        word = words[w]
        if word != 0:
            p0 = 8 * w
            for b in range(8):
                # branch-free: always write, advance only for a set byte
                idx[n] = p0 + b
                n += ((word >> np.uint64(8 * b)) & np.uint64(0xFF)) != 0
    for p in range(8 * n_words, n_pix):
        idx[n] = p
        n += mask_bytes[base + p] != 0
    return n


@njit(cache=True)
def _hillas(pix_x, pix_y, pix_area, image, mask_bytes, selected, idx, out):
    """Fill ``out[k, e]`` (k in HILLAS_KEYS order) for every event; ``idx`` is scratch (n_pix,)."""
    n_ev, n_pix = image.shape
    nan = np.nan
    for e in range(n_ev):
        for k in range(out.shape[0]):
            out[k, e] = nan
        if not selected[e]:
            continue

        # pass 1: masked pixels, size and centre of gravity
        n = _masked_pixels(mask_bytes, e * n_pix, n_pix, idx)
        size = 0.0
        sx = 0.0
        sy = 0.0
        negative = False
        for i in range(n):
            p = idx[i]
            w = np.float64(image[e, p])
            if w < 0.0:
                negative = True
            size += w
            sx += w * pix_x[p]
            sy += w * pix_y[p]
        # ctapipe raises for size == 0 and numpy's cov refuses negative weights: all NaN
        if n == 0 or size == 0.0 or negative or not np.isfinite(size):
            continue
        cog_x = sx / size
        cog_y = sy / size

        # pass 2: weighted covariance (np.cov with aweights, ddof=0)
        cxx = 0.0
        cyy = 0.0
        cxy = 0.0
        for i in range(n):
            p = idx[i]
            w = np.float64(image[e, p])
            dx = pix_x[p] - cog_x
            dy = pix_y[p] - cog_y
            cxx += w * dx * dx
            cyy += w * dy * dy
            cxy += w * dx * dy
        cxx /= size
        cyy /= size
        cxy /= size

        half_trace = 0.5 * (cxx + cyy)
        half_diff = 0.5 * (cxx - cyy)
        root = np.sqrt(half_diff * half_diff + cxy * cxy)
        eig_long = half_trace + root
        eig_short = half_trace - root
        if abs(eig_long) <= _HILLAS_ATOL:
            eig_long = 0.0
        if abs(eig_short) <= _HILLAS_ATOL:
            eig_short = 0.0
        length = np.sqrt(eig_long)
        width = np.sqrt(eig_short)

        out[_INTENSITY, e] = size
        out[_FOV_LON, e] = cog_x
        out[_FOV_LAT, e] = cog_y
        out[_R, e] = np.sqrt(cog_x * cog_x + cog_y * cog_y)
        out[_PHI, e] = np.arctan2(cog_y, cog_x) * _RAD2DEG
        out[_LENGTH, e] = length
        out[_WIDTH, e] = width
        if length == 0.0:
            # ctapipe: psi and everything derived from it is NaN (single pixel, point-like)
            continue

        # direction of the major axis as ctapipe's arctan(vy / vx) of the eigenvector:
        # in (-90, 90) deg, exactly 90 deg when the eigenvector is (0, 1)
        if cxy == 0.0:
            psi = 0.0 if cxx > cyy else 0.5 * np.pi
        else:
            psi = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
        cos_psi = np.cos(psi)
        sin_psi = np.sin(psi)
        cos_2psi = np.cos(2.0 * psi)
        a = (1.0 + cos_2psi) / 2.0
        b = (1.0 - cos_2psi) / 2.0
        c = np.sin(2.0 * psi)

        # pass 3: higher moments, least-squares psi / cog uncertainties, Hillas uncertainties
        m3 = 0.0
        m4 = 0.0
        s_ll = 0.0
        s_l = 0.0
        s_1 = 0.0
        s_lt = 0.0
        s_t = 0.0
        u_long = 0.0
        u_width = 0.0
        for i in range(n):
            p = idx[i]
            w = np.float64(image[e, p])
            dx = pix_x[p] - cog_x
            dy = pix_y[p] - cog_y
            lon = dx * cos_psi + dy * sin_psi
            tra = dx * -sin_psi + dy * cos_psi
            l2 = lon * lon
            m3 += w * (l2 * lon)
            m4 += w * (l2 * l2)
            ww = w / pix_area[p]
            s_ll += ww * l2
            s_l += ww * lon
            s_1 += ww
            s_lt += ww * lon * tra
            s_t += ww * tra
            ua = (dx * dx - cxx) / size
            ub = (dy * dy - cyy) / size
            uc = (dx * dy - cxy) / size
            t_long = a * ua + b * ub + c * uc
            t_width = b * ua + a * ub - c * uc
            u_long += t_long * t_long * w
            u_width += t_width * t_width * w

        # np.linalg.inv raises on an exactly singular normal matrix: ctapipe fails entirely
        det = s_ll * s_1 - s_l * s_l
        if det == 0.0 or not np.isfinite(det):
            for k in range(out.shape[0]):
                out[k, e] = nan
            continue
        inv_00 = s_1 / det
        inv_01 = -s_l / det
        inv_11 = s_ll / det
        p0 = inv_00 * s_lt + inv_01 * s_t
        tan_term = np.tan(width / length * np.pi / 2.0)
        psi_unc = np.sqrt(inv_00 + p0 * p0) * (1.0 + tan_term * tan_term)
        sin_p0 = np.sin(p0)

        out[_PSI, e] = psi * _RAD2DEG
        out[_SKEWNESS, e] = (m3 / size) / (length * length * length)
        out[_KURTOSIS, e] = (m4 / size) / (length * length * length * length)
        out[_PSI_UNC, e] = psi_unc * _RAD2DEG
        out[_TRANS_UNC, e] = np.sqrt(inv_11 * (1.0 + sin_p0 * sin_p0))
        out[_LENGTH_UNC, e] = np.sqrt(u_long) / (2.0 * length)
        if width != 0.0:
            out[_WIDTH_UNC, e] = np.sqrt(u_width) / (2.0 * width)


def _check_batch(name, image, mask, n_pix, selected):
    """Shared wrapper validation: returns contiguous image, mask and selected."""
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2 or image.shape[1] != n_pix:
        raise ValueError(f"{name}: image must be (n_events, {n_pix}), got {image.shape}")
    if mask.shape != image.shape or mask.dtype != np.bool_:
        raise ValueError(f"{name}: mask must be bool {image.shape}, got {mask.dtype} {mask.shape}")
    n_ev = image.shape[0]
    if selected is None:
        selected = np.ones(n_ev, np.bool_)
    else:
        selected = np.asarray(selected)
        if selected.shape != (n_ev,) or selected.dtype != np.bool_:
            raise ValueError(f"{name}: selected must be bool ({n_ev},), got {selected.dtype} {selected.shape}")
    return image, np.ascontiguousarray(mask), np.ascontiguousarray(selected)


def _mask_bytes(mask):
    """Flat uint8 view of a C-contiguous bool mask, as ``_masked_pixels`` reads it."""
    return mask.reshape(-1).view(np.uint8)


def _check_pixels(name, **arrays):
    """All per-pixel arrays must be 1-d of equal length; returns them as contiguous float64."""
    out = []
    n_pix = None
    for key, a in arrays.items():
        a = np.asarray(a)
        if a.ndim != 1 or a.dtype.kind != "f":
            raise ValueError(f"{name}: {key} must be a 1-d float array, got {a.dtype} {a.shape}")
        if n_pix is None:
            n_pix = a.shape[0]
        elif a.shape[0] != n_pix:
            raise ValueError(f"{name}: {key} has {a.shape[0]} pixels, expected {n_pix}")
        out.append(np.ascontiguousarray(a, np.float64))
    return n_pix, out


def _as_float32_image(name, image):
    if image.dtype != np.float32:
        raise ValueError(f"{name}: image must be float32, got {image.dtype}")
    return np.ascontiguousarray(image)


def hillas_parameters(pix_x, pix_y, image, mask, selected=None, *, pix_area=None):
    """Hillas parameters of a batch of cleaned images (ctapipe 0.28 ``hillas_parameters``).

    Only the pixels in ``mask`` are used, as ctapipe is called with ``geom[mask], image[mask]``.

    Parameters
    ----------
    pix_x, pix_y : ndarray, shape (n_pixels,), float64, deg
        Pixel positions in the telescope frame (fov_lon, fov_lat).
    image : ndarray, shape (n_events, n_pixels), float32, p.e.
        Converted to float64 internally, as ctapipe does.
    mask : ndarray, shape (n_events, n_pixels), bool
        Cleaning mask.
    selected : ndarray, shape (n_events,), bool, optional
        Events with False are skipped (all outputs NaN).
    pix_area : ndarray, shape (n_pixels,), float64, deg^2
        Pixel areas in the telescope frame; required (ctapipe weights the least-squares fit
        behind ``psi_uncertainty`` and ``transverse_cog_uncertainty`` by image / area).

    Returns
    -------
    dict of str -> ndarray, shape (n_events,), float64
        ``HILLAS_KEYS``: intensity (p.e.), fov_lon, fov_lat, r, phi, length,
        length_uncertainty, width, width_uncertainty, psi, psi_uncertainty,
        transverse_cog_uncertainty (deg), skewness, kurtosis. psi is in [-90, 90] deg.
        Where ctapipe raises (no pixel, size 0, a negative pixel, singular fit) all are NaN;
        for a point-like image (length 0) psi and everything derived from it is NaN, and
        width_uncertainty is NaN when width is 0, as in ctapipe.
    """
    if pix_area is None:
        raise ValueError("hillas_parameters: pix_area (n_pixels,) in deg^2 is required: ctapipe's "
                         "psi_uncertainty and transverse_cog_uncertainty weight pixels by image / area")
    n_pix, (pix_x, pix_y, pix_area) = _check_pixels("hillas_parameters", pix_x=pix_x, pix_y=pix_y,
                                                     pix_area=pix_area)
    image, mask, selected = _check_batch("hillas_parameters", image, mask, n_pix, selected)
    image = _as_float32_image("hillas_parameters", image)
    out = np.empty((len(HILLAS_KEYS), image.shape[0]), np.float64)
    _hillas(pix_x, pix_y, pix_area, image, _mask_bytes(mask), selected, np.empty(n_pix, np.int64), out)
    return dict(zip(HILLAS_KEYS, out))
