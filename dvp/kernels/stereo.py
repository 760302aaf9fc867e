"""Stereo shower-geometry reconstruction (ctapipe 0.28's ``HillasReconstructor``), batched.

Telescope events are grouped into array events by a sorted key (:func:`group_events`),
then one numba loop runs ctapipe's algorithm per event over the group's rows:

1. per telescope, the Hillas axis as a plane through the telescope: the image centroid
   and a second point ``0.1 · camera radius`` along ``psi`` are taken from the telescope
   frame (around that telescope's pointing) to horizontal unit vectors; the plane normal
   is their cross product; the weight is ``intensity · length / width``;
2. direction: the intersection lines of every pair of planes (``cross(n_a, n_b)``, turned
   upward), averaged with weights ``w_a · w_b`` and normalised; its uncertainty is the
   mean angle between that average and the pair intersections;
3. core: the axis angle re-measured in a camera frame around the array pointing
   ("corrected psi"), then the point nearest to all lines through the telescopes (in the
   tilted ground frame of the array pointing) along those angles, projected to ground;
4. height of shower maximum: the point nearest to all lines from the telescopes towards
   their image centroids (ground frame), z coordinate (relative to the array);
5. per telescope, the impact distance of the reconstructed axis.

Invalid events (fewer than two telescopes passing the quality query, a NaN or zero width,
or a degenerate geometry: planes parallel to within 1e-9 rad, or core lines whose
pairwise sin^2 sum is below 1e-12 per telescope) get NaN results,
``n_tels_used = 0`` and no telescope marked as used. ctapipe raises or returns NaN with
``is_valid=True`` for the degenerate cases; dvp never crashes and marks them invalid.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .frames import _DEG, _RAD, _horizontal_vec_to_offset, _offset_to_horizontal_vec, _tilted_matrix, _wrap_az_deg

#: per-event float outputs of :func:`hillas_reconstruct`, in order
EVENT_KEYS = ("alt_deg", "az_deg", "ang_uncert_deg", "core_x_m", "core_y_m", "core_tilted_x_m",
              "core_tilted_y_m", "h_max_rel_m", "average_intensity_pe")
(_ALT, _AZ, _UNC, _CX, _CY, _TX, _TY, _HMAX, _AVGI) = range(len(EVENT_KEYS))
# degenerate-geometry thresholds (see the module docstring): far below any real event
_PARALLEL_SIN = 1e-9
_PARALLEL_DET = 1e-12


def group_events(obs_id, event_id, tel_id):
    """Sort telescope events by (obs_id, event_id, tel_id) and find the array-event groups.

    Parameters
    ----------
    obs_id, event_id, tel_id : array_like of int, shape (n_rows,)

    Returns
    -------
    order : ndarray of int64, shape (n_rows,)
        Row permutation that sorts by the keys (tel_id ascending within an event).
    starts : ndarray of int64, shape (n_events + 1,)
        Rows ``order[starts[e]:starts[e + 1]]`` belong to array event ``e``.
    """
    obs = np.asarray(obs_id, np.int64)
    ev = np.asarray(event_id, np.int64)
    tel = np.asarray(tel_id, np.int64)
    if not (obs.shape == ev.shape == tel.shape) or obs.ndim != 1:
        raise ValueError("obs_id, event_id and tel_id must be 1-D arrays of one length")
    order = np.lexsort((tel, ev, obs)).astype(np.int64)
    so, se = obs[order], ev[order]
    # a new event starts wherever either key changes; one vectorised pass, no event loop
    new = np.ones(len(order), bool)
    new[1:] = (so[1:] != so[:-1]) | (se[1:] != se[:-1])
    starts = np.append(np.flatnonzero(new), len(order)).astype(np.int64)
    return order, starts


@njit(cache=True)
def _solve3(a, b):
    """``inv(a) @ b`` for a 3x3 ``a`` by the adjugate (as numpy's inv, without LAPACK);
    NaNs when ``a`` is singular."""
    c00 = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
    c01 = a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2]
    c02 = a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]
    det = a[0, 0] * c00 + a[0, 1] * c01 + a[0, 2] * c02
    out = np.empty(3)
    if det == 0.0 or not np.isfinite(det):
        out[:] = np.nan
        return out
    inv = np.empty((3, 3))
    inv[0, 0] = c00 / det
    inv[1, 0] = c01 / det
    inv[2, 0] = c02 / det
    inv[0, 1] = (a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2]) / det
    inv[1, 1] = (a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]) / det
    inv[2, 1] = (a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1]) / det
    inv[0, 2] = (a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]) / det
    inv[1, 2] = (a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]) / det
    inv[2, 2] = (a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]) / det
    for i in range(3):
        out[i] = inv[i, 0] * b[0] + inv[i, 1] * b[1] + inv[i, 2] * b[2]
    return out


@njit(cache=True)
def _max_event_size(starts):
    """Largest number of telescope rows of one event (sizes the per-event scratch)."""
    max_n = 0
    for e in range(starts.shape[0] - 1):
        max_n = max(max_n, starts[e + 1] - starts[e])
    return max_n


@njit(cache=True)
def _start_event(e, starts, use, width, rows, ev_out, n_used_out, valid_out, impact_out, used_out):
    """Mark event ``e`` invalid, collect its usable rows into ``rows``; return their count,
    or 0 when ctapipe gives up (TooFewTelescopes, or InvalidWidth: a NaN or zero width)."""
    r0, r1 = starts[e], starts[e + 1]
    ev_out[e, :] = np.nan
    n_used_out[e] = 0
    valid_out[e] = False
    for r in range(r0, r1):
        impact_out[r] = np.nan
        used_out[r] = False
    k = 0
    bad_width = False
    for r in range(r0, r1):
        if use[r]:
            rows[k] = r
            k += 1
            bad_width |= not (width[r] != 0.0 and np.isfinite(width[r]))
    return 0 if k < 2 or bad_width else k


@njit(cache=True)
def _hillas_reconstruct(starts, lon, lat, psi, intensity, length, width, cam_radius, tel_alt, tel_az, pos, use,
                        array_alt, array_az, ev_out, n_used_out, valid_out, impact_out, used_out):
    n_events = starts.shape[0] - 1
    max_n = _max_event_size(starts)
    # scratch for the used telescopes of one event, allocated once
    cog = np.empty((max_n, 3))
    nrm = np.empty((max_n, 3))
    cpsi = np.empty(max_n)
    w = np.empty(max_n)
    rows = np.empty(max_n, np.int64)
    s3 = np.empty((3, 3))
    c3 = np.empty(3)
    for e in range(n_events):
        r0, r1 = starts[e], starts[e + 1]
        k = _start_event(e, starts, use, width, rows, ev_out, n_used_out, valid_out, impact_out, used_out)
        if k < 2:
            continue
        aalt, aaz = array_alt[e] * _DEG, array_az[e] * _DEG
        sum_int = 0.0
        for j in range(k):
            r = rows[j]
            talt, taz = tel_alt[r] * _DEG, tel_az[r] * _DEG
            p = psi[r] * _DEG
            step = 0.1 * cam_radius[r]
            cx, cy, cz = _offset_to_horizontal_vec(lon[r] * _DEG, lat[r] * _DEG, talt, taz)
            px, py, pz = _offset_to_horizontal_vec((lon[r] + step * np.cos(p)) * _DEG,
                                                   (lat[r] + step * np.sin(p)) * _DEG, talt, taz)
            # astropy's AltAz cartesian is left-handed in azimuth: y -> -y gives x north, y west
            cog[j, 0], cog[j, 1], cog[j, 2] = cx, -cy, cz
            nrm[j, 0] = (-cy) * pz - cz * (-py)
            nrm[j, 1] = cz * px - cx * pz
            nrm[j, 2] = cx * (-py) - (-cy) * px
            # corrected psi: the axis angle seen in a camera frame around the array pointing
            # (x = fov_lat, y = fov_lon; the focal length cancels in the ratio)
            lo_c, la_c = _horizontal_vec_to_offset(cx, cy, cz, aalt, aaz)
            lo_p, la_p = _horizontal_vec_to_offset(px, py, pz, aalt, aaz)
            cpsi[j] = np.arctan((lo_c - lo_p) / (la_c - la_p))
            w[j] = intensity[r] * length[r] / width[r]
            sum_int += intensity[r]

        # direction: weighted mean of the pairwise plane intersections
        ax = ay = az_ = wsum = scale = 0.0
        for a in range(k):
            na = np.sqrt(nrm[a, 0] ** 2 + nrm[a, 1] ** 2 + nrm[a, 2] ** 2)
            for b in range(a + 1, k):
                x = nrm[a, 1] * nrm[b, 2] - nrm[a, 2] * nrm[b, 1]
                y = nrm[a, 2] * nrm[b, 0] - nrm[a, 0] * nrm[b, 2]
                z = nrm[a, 0] * nrm[b, 1] - nrm[a, 1] * nrm[b, 0]
                s = -1.0 if z < 0 else 1.0  # the upward of the two opposite intersections
                ww = w[a] * w[b]
                ax += ww * s * x
                ay += ww * s * y
                az_ += ww * s * z
                wsum += ww
                scale += ww * na * np.sqrt(nrm[b, 0] ** 2 + nrm[b, 1] ** 2 + nrm[b, 2] ** 2)
        norm = np.sqrt(ax * ax + ay * ay + az_ * az_)
        # all planes parallel (to rounding: sines of the plane angles below 1e-9) -> no direction
        if not (norm > _PARALLEL_SIN * scale and np.isfinite(norm)):
            continue
        ax, ay, az_ = ax / wsum, ay / wsum, az_ / wsum
        norm = np.sqrt(ax * ax + ay * ay + az_ * az_)
        dx, dy, dz = ax / norm, ay / norm, az_ / norm
        unc = 0.0
        n_pairs = 0
        for a in range(k):
            for b in range(a + 1, k):
                x = nrm[a, 1] * nrm[b, 2] - nrm[a, 2] * nrm[b, 1]
                y = nrm[a, 2] * nrm[b, 0] - nrm[a, 0] * nrm[b, 2]
                z = nrm[a, 0] * nrm[b, 1] - nrm[a, 1] * nrm[b, 0]
                s = -1.0 if z < 0 else 1.0
                cosang = s * (dx * x + dy * y + dz * z) / np.sqrt(x * x + y * y + z * z)
                unc += np.arccos(min(1.0, max(-1.0, cosang)))
                n_pairs += 1
        unc = unc / n_pairs * _RAD

        # core: nearest point to the lines (tilted frame, z direction dropped)
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _tilted_matrix(aalt, aaz)
        sxx = sxy = syy = bx = by = 0.0
        for j in range(k):
            r = rows[j]
            tx = m00 * pos[r, 0] + m01 * pos[r, 1] + m02 * pos[r, 2]
            ty = m10 * pos[r, 0] + m11 * pos[r, 1] + m12 * pos[r, 2]
            ux, uy = np.cos(cpsi[j]), np.sin(cpsi[j])
            axx, axy, ayy = ux * ux - 1.0, ux * uy, uy * uy - 1.0
            sxx += axx
            sxy += axy
            syy += ayy
            bx += axx * tx + axy * ty
            by += axy * tx + ayy * ty
        det = sxx * syy - sxy * sxy
        # all core lines parallel: det is the sum of sin^2 of the pairwise line angles, so
        # below 1e-12 per telescope the "intersection" is rounding noise megametres away
        if not (det > _PARALLEL_DET * k and np.isfinite(det)):
            continue
        core_tx = (syy * bx - sxy * by) / det
        core_ty = (sxx * by - sxy * bx) / det
        # tilted (x, y, 0) -> ground, then along the tilted normal down to z = 0
        gx = m00 * core_tx + m10 * core_ty
        gy = m01 * core_tx + m11 * core_ty
        gz = m02 * core_tx + m12 * core_ty
        core_x = gx - m20 * gz / m22
        core_y = gy - m21 * gz / m22

        # h_max: nearest point to the lines from each telescope towards its image centroid
        s3[:, :] = 0.0
        c3[:] = 0.0
        for j in range(k):
            r = rows[j]
            for i1 in range(3):
                for i2 in range(3):
                    v = cog[j, i1] * cog[j, i2] - (1.0 if i1 == i2 else 0.0)
                    s3[i1, i2] += v
                    c3[i1] += v * pos[r, i2]
        h_rel = _solve3(s3, c3)[2]

        if not (np.isfinite(core_x) and np.isfinite(core_y) and np.isfinite(dx)):
            continue
        ev_out[e, _ALT] = np.arctan2(dz, np.sqrt(dx * dx + dy * dy)) * _RAD
        ev_out[e, _AZ] = _wrap_az_deg(-np.arctan2(dy, dx) * _RAD)
        ev_out[e, _UNC] = unc
        ev_out[e, _CX] = core_x
        ev_out[e, _CY] = core_y
        ev_out[e, _TX] = core_tx
        ev_out[e, _TY] = core_ty
        ev_out[e, _HMAX] = h_rel
        ev_out[e, _AVGI] = sum_int / k
        n_used_out[e] = k
        valid_out[e] = True
        for j in range(k):
            used_out[rows[j]] = True
        # impact distance |(tel - core) x d| of every telescope of the event
        for r in range(r0, r1):
            qx, qy, qz = pos[r, 0] - core_x, pos[r, 1] - core_y, pos[r, 2]
            cx_ = qy * dz - qz * dy
            cy_ = qz * dx - qx * dz
            cz_ = qx * dy - qy * dx
            impact_out[r] = np.sqrt(cx_ * cx_ + cy_ * cy_ + cz_ * cz_)


def _f64(name, a, n):
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    return a


def _checked_inputs(starts, named_columns, tel_pos_m, use, array_alt_deg, array_az_deg):
    """Shared input checks and output buffers of the stereo reconstructors.

    Returns ``starts`` (int64), the per-telescope float64 columns, positions ``(n, 3)``,
    ``use`` (bool), the array pointing per event and the output buffers
    ``(event values (n_events, len(EVENT_KEYS)), n_tels_used, is_valid, impact, used)``.
    """
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if starts.ndim != 1 or len(starts) < 1 or starts[0] != 0 or np.any(np.diff(starts) < 0):
        raise ValueError("starts must be a non-decreasing 1-D array beginning at 0")
    n, n_ev = int(starts[-1]), len(starts) - 1
    cols = [_f64(nm, a, n) for nm, a in named_columns]
    pos = np.ascontiguousarray(tel_pos_m, dtype=np.float64)
    if pos.shape != (n, 3):
        raise ValueError(f"tel_pos_m must have shape ({n}, 3), got {pos.shape}")
    use = np.ascontiguousarray(use, dtype=np.bool_)
    if use.shape != (n,):
        raise ValueError(f"use must have shape ({n},), got {use.shape}")
    aalt, aaz = _f64("array_alt_deg", array_alt_deg, n_ev), _f64("array_az_deg", array_az_deg, n_ev)
    ev = np.empty((n_ev, len(EVENT_KEYS)))
    n_used = np.empty(n_ev, np.int16)
    valid = np.empty(n_ev, np.bool_)
    impact = np.empty(n)
    used = np.empty(n, np.bool_)
    return starts, cols, pos, use, aalt, aaz, (ev, n_used, valid, impact, used)


def hillas_reconstruct(starts, fov_lon_deg, fov_lat_deg, psi_deg, intensity_pe, length_deg, width_deg,
                       cam_radius_deg, pointing_alt_deg, pointing_az_deg, tel_pos_m, use, array_alt_deg,
                       array_az_deg):
    """ctapipe's ``HillasReconstructor`` for every array event of a grouped batch.

    Parameters
    ----------
    starts : ndarray of int64, shape (n_events + 1,)
        Event boundaries into the rows (from :func:`group_events`, rows already in that order).
    fov_lon_deg, fov_lat_deg, psi_deg, intensity_pe, length_deg, width_deg : ndarray, shape (n_rows,)
        Hillas parameters in the telescope frame (deg, p.e.).
    cam_radius_deg : ndarray, shape (n_rows,)
        Camera radius in the telescope frame, deg (sets the second point on the axis).
    pointing_alt_deg, pointing_az_deg : ndarray, shape (n_rows,)
        Telescope pointing, deg.
    tel_pos_m : ndarray, shape (n_rows, 3)
        Telescope position in the ground frame, m.
    use : ndarray of bool, shape (n_rows,)
        Telescope events that passed the stereo quality query.
    array_alt_deg, array_az_deg : ndarray, shape (n_events,)
        Array pointing (defines the tilted frame and the corrected psi), deg.

    Returns
    -------
    dict
        The :data:`EVENT_KEYS` (each float64 ``(n_events,)``; ``h_max_rel_m`` is relative to
        the array height), ``n_tels_used`` (int16), ``is_valid`` (bool) per event, and per
        row ``impact_distance_m`` (float64, NaN for invalid events) and ``used`` (bool).
    """
    starts, cols, pos, use, aalt, aaz, (ev, n_used, valid, impact, used) = _checked_inputs(
        starts, (("fov_lon_deg", fov_lon_deg), ("fov_lat_deg", fov_lat_deg), ("psi_deg", psi_deg),
                 ("intensity_pe", intensity_pe), ("length_deg", length_deg), ("width_deg", width_deg),
                 ("cam_radius_deg", cam_radius_deg), ("pointing_alt_deg", pointing_alt_deg),
                 ("pointing_az_deg", pointing_az_deg)), tel_pos_m, use, array_alt_deg, array_az_deg)
    _hillas_reconstruct(starts, *cols, pos, use, aalt, aaz, ev, n_used, valid, impact, used)
    out = {k: np.ascontiguousarray(ev[:, i]) for i, k in enumerate(EVENT_KEYS)}
    out.update(n_tels_used=n_used, is_valid=valid, impact_distance_m=impact, used=used)
    return out


# -- HillasIntersection ---------------------------------------------------------------

#: ctapipe's ``FOV_ANGULAR_DISTANCE_LIMIT_RAD``: a direction further than 45 deg in either
#: nominal coordinate is INVALID (ctapipe returns early to avoid a SkyCoord error)
_FOV_LIMIT_RAD = 45.0 * _DEG
#: ctapipe's ``H_MAX_UPPER_LIMIT_M`` (above sea level): a higher h_max becomes NaN, the
#: event stays valid
_H_MAX_LIMIT_M = 100_000.0


@njit(cache=True)
def _intersect_lines(xp1, yp1, phi1, xp2, yp2, phi2):
    """Crossing point of the lines through (xp, yp) at angles phi (ctapipe's
    ``HillasIntersection.intersect_lines``, from read_hess); inf/NaN when parallel."""
    s1, c1 = np.sin(phi1), np.cos(phi1)
    s2, c2 = np.sin(phi2), np.cos(phi2)
    a1, b1, cc1 = s1, -c1, yp1 * c1 - xp1 * s1
    a2, b2, cc2 = s2, -c2, yp2 * c2 - xp2 * s2
    det_ab = a1 * b2 - a2 * b1
    det_bc = b1 * cc2 - b2 * cc1
    det_ca = cc1 * a2 - cc2 * a1
    return det_bc / det_ab, det_ca / det_ab


@njit(cache=True)
def _hillas_intersection(starts, lon, lat, psi, intensity, width, tel_alt, tel_az, pos, use, array_alt, array_az,
                         site_height, ev_out, n_used_out, valid_out, impact_out, used_out):
    n_events = starts.shape[0] - 1
    max_n = _max_event_size(starts)
    max_pairs = max(1, max_n * (max_n - 1) // 2)
    # scratch for the used telescopes and their pairs of one event, allocated once
    nlon = np.empty(max_n)
    nlat = np.empty(max_n)
    tx = np.empty(max_n)
    ty = np.empty(max_n)
    rows = np.empty(max_n, np.int64)
    sx = np.empty(max_pairs)
    sy = np.empty(max_pairs)
    cx = np.empty(max_pairs)
    cy = np.empty(max_pairs)
    pw = np.empty(max_pairs)
    for e in range(n_events):
        r0, r1 = starts[e], starts[e + 1]
        k = _start_event(e, starts, use, width, rows, ev_out, n_used_out, valid_out, impact_out, used_out)
        if k < 2:
            continue
        aalt, aaz = array_alt[e] * _DEG, array_az[e] * _DEG
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _tilted_matrix(aalt, aaz)
        sum_int = 0.0
        for j in range(k):
            r = rows[j]
            # image centroid: telescope frame -> horizontal -> nominal frame of the array pointing
            vx, vy, vz = _offset_to_horizontal_vec(lon[r] * _DEG, lat[r] * _DEG, tel_alt[r] * _DEG, tel_az[r] * _DEG)
            nlon[j], nlat[j] = _horizontal_vec_to_offset(vx, vy, vz, aalt, aaz)
            tx[j] = m00 * pos[r, 0] + m01 * pos[r, 1] + m02 * pos[r, 2]
            ty[j] = m10 * pos[r, 0] + m11 * pos[r, 1] + m12 * pos[r, 2]
            sum_int += intensity[r]

        # pairwise crossings of the image axes (nominal frame) and of the lines through the
        # telescopes along psi (tilted frame, x and y swapped as ctapipe does); ctapipe keeps
        # psi as measured in each telescope's frame, so the axis angle is not re-projected
        n_p = 0
        wsum = 0.0
        for a in range(k):
            ra = rows[a]
            pa_ = psi[ra] * _DEG
            for b in range(a + 1, k):
                rb = rows[b]
                pb = psi[rb] * _DEG
                ia, ib = intensity[ra], intensity[rb]
                # "Konrad" weight times the sine of the crossing angle
                ww = (ia * ib) / (ia + ib) * np.abs(np.sin(pa_ - pb))
                if ww == 0.0:
                    # parallel axes: ctapipe multiplies their infinite crossing by the zero
                    # weight and the whole average becomes NaN; the pair carries no
                    # information, so dvp leaves it out
                    continue
                sx[n_p], sy[n_p] = _intersect_lines(nlon[a], nlat[a], pa_, nlon[b], nlat[b], pb)
                cy[n_p], cx[n_p] = _intersect_lines(ty[a], tx[a], pa_, ty[b], tx[b], pb)
                pw[n_p] = ww
                wsum += ww
                n_p += 1
        if n_p == 0 or not (wsum > 0.0 and np.isfinite(wsum)):
            continue  # every pair parallel: ctapipe divides by a zero weight sum
        src_x = src_y = core_tx = core_ty = 0.0
        for p in range(n_p):
            src_x += pw[p] * sx[p]
            src_y += pw[p] * sy[p]
            core_tx += pw[p] * cx[p]
            core_ty += pw[p] * cy[p]
        src_x, src_y, core_tx, core_ty = src_x / wsum, src_y / wsum, core_tx / wsum, core_ty / wsum
        var_x = var_y = 0.0
        for p in range(n_p):
            var_x += pw[p] * (sx[p] - src_x) ** 2
            var_y += pw[p] * (sy[p] - src_y) ** 2
        err = np.sqrt(np.sqrt(var_x / wsum) ** 2 + np.sqrt(var_y / wsum) ** 2)
        if not (np.isfinite(src_x) and np.isfinite(src_y) and np.isfinite(core_tx) and np.isfinite(core_ty)):
            continue
        if np.abs(src_y) > _FOV_LIMIT_RAD or np.abs(src_x) > _FOV_LIMIT_RAD:
            continue  # ctapipe: _far_outside_fov -> INVALID

        # direction: nominal -> horizontal
        vx, vy, vz = _offset_to_horizontal_vec(src_x, src_y, aalt, aaz)
        # core: tilted (x, y, 0) -> ground, then along the tilted normal down to z = 0
        gx = m00 * core_tx + m10 * core_ty
        gy = m01 * core_tx + m11 * core_ty
        gz = m02 * core_tx + m12 * core_ty
        core_x = gx - m20 * gz / m22
        core_y = gy - m21 * gz / m22
        # h_max: per telescope impact / angular displacement (small angles), intensity-
        # weighted, from the tilted frame to vertical by cos(zenith of the array pointing)
        hsum = 0.0
        for j in range(k):
            r = rows[j]
            disp = np.sqrt((nlon[j] - src_x) ** 2 + (nlat[j] - src_y) ** 2)
            imp = np.sqrt((tx[j] - core_tx) ** 2 + (ty[j] - core_ty) ** 2)
            hsum += (imp / disp) * intensity[r]
        h = (hsum / sum_int) * np.cos(np.pi / 2 - aalt)
        h_rel = h if h + site_height <= _H_MAX_LIMIT_M else np.nan  # NaN (a NaN h too) stays NaN

        ev_out[e, _ALT] = np.arctan2(vz, np.sqrt(vx * vx + vy * vy)) * _RAD
        ev_out[e, _AZ] = _wrap_az_deg(np.arctan2(vy, vx) * _RAD)
        ev_out[e, _UNC] = err * _RAD
        ev_out[e, _CX] = core_x
        ev_out[e, _CY] = core_y
        ev_out[e, _TX] = core_tx
        ev_out[e, _TY] = core_ty
        ev_out[e, _HMAX] = h_rel
        ev_out[e, _AVGI] = sum_int / k
        n_used_out[e] = k
        valid_out[e] = True
        for j in range(k):
            used_out[rows[j]] = True
        # impact distance |(tel - core) x d|, d right-handed (x north, y west, z up)
        dx, dy, dz = vx, -vy, vz
        for r in range(r0, r1):
            qx, qy, qz = pos[r, 0] - core_x, pos[r, 1] - core_y, pos[r, 2]
            c1 = qy * dz - qz * dy
            c2 = qz * dx - qx * dz
            c3 = qx * dy - qy * dx
            impact_out[r] = np.sqrt(c1 * c1 + c2 * c2 + c3 * c3)


def hillas_intersection(starts, fov_lon_deg, fov_lat_deg, psi_deg, intensity_pe, width_deg, pointing_alt_deg,
                        pointing_az_deg, tel_pos_m, use, array_alt_deg, array_az_deg, site_height_m=0.0):
    """ctapipe's ``HillasIntersection`` (weighting "Konrad") for every array event of a grouped batch.

    Per array event: the image centroids go to the nominal frame of the array pointing;
    every pair of image axes (through the centroid at ``psi``) crosses at a candidate
    source position, weighted by ``I_a I_b / (I_a + I_b) · |sin(psi_a - psi_b)|``; the
    direction is the weighted mean, its uncertainty the weighted spread. The core is the
    same construction for the lines through the telescopes (tilted frame) at ``psi``;
    ``h_max`` the intensity-weighted ``impact / displacement`` times ``cos(zenith)``.

    Parameters
    ----------
    starts : ndarray of int64, shape (n_events + 1,)
        Event boundaries into the rows (from :func:`group_events`, rows already in that order).
    fov_lon_deg, fov_lat_deg, psi_deg, intensity_pe, width_deg : ndarray, shape (n_rows,)
        Hillas parameters in the telescope frame (deg, p.e.; the width is only checked).
    pointing_alt_deg, pointing_az_deg : ndarray, shape (n_rows,)
        Telescope pointing, deg.
    tel_pos_m : ndarray, shape (n_rows, 3)
        Telescope position in the ground frame, m.
    use : ndarray of bool, shape (n_rows,)
        Telescope events that passed the stereo quality query.
    array_alt_deg, array_az_deg : ndarray, shape (n_events,)
        Array pointing (nominal and tilted frames), deg.
    site_height_m : float
        Height of the array reference above sea level: an ``h_max`` above 100 km (sea
        level) becomes NaN, as in ctapipe.

    Returns
    -------
    dict
        As :func:`hillas_reconstruct`: the :data:`EVENT_KEYS` (``ang_uncert_deg`` is
        ctapipe's ``alt_uncert`` = ``az_uncert``, the spread of the crossing points;
        ``h_max_rel_m`` relative to the array height), ``n_tels_used``, ``is_valid``,
        ``impact_distance_m`` and ``used``. Events with fewer than two usable telescopes,
        a NaN or zero width, only parallel axes, or a direction more than 45 deg from the
        array pointing are invalid.
    """
    starts, cols, pos, use, aalt, aaz, (ev, n_used, valid, impact, used) = _checked_inputs(
        starts, (("fov_lon_deg", fov_lon_deg), ("fov_lat_deg", fov_lat_deg), ("psi_deg", psi_deg),
                 ("intensity_pe", intensity_pe), ("width_deg", width_deg),
                 ("pointing_alt_deg", pointing_alt_deg), ("pointing_az_deg", pointing_az_deg)),
        tel_pos_m, use, array_alt_deg, array_az_deg)
    _hillas_intersection(starts, *cols, pos, use, aalt, aaz, float(site_height_m), ev, n_used, valid, impact, used)
    out = {k: np.ascontiguousarray(ev[:, i]) for i, k in enumerate(EVENT_KEYS)}
    out.update(n_tels_used=n_used, is_valid=valid, impact_distance_m=impact, used=used)
    return out
