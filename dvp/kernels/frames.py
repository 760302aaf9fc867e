"""Coordinate frames of ctapipe 0.28 as batch kernels on flat arrays.

Every transformation ctapipe expresses with astropy frames, as element-wise numba loops:

- camera frame (``x_m``, ``y_m`` in the focal plane) ↔ telescope frame (``fov_lon``,
  ``fov_lat``), given the focal length: ctapipe's ``CameraFrame`` ↔ ``TelescopeFrame``
  is the small-angle map ``fov_lat = x / f``, ``fov_lon = y / f`` (radians), after an
  optional camera rotation;
- telescope frame ↔ horizontal (``alt``, ``az``) for any pointing: ctapipe's
  ``TelescopeFrame`` is astropy's ``SkyOffsetFrame`` of ``AltAz``, the rotation
  ``R_y(-alt_p) · R_z(az_p)`` of the unit vector;
- nominal frame: the same rotation about an arbitrary origin (ctapipe's ``NominalFrame``);
- ground ↔ tilted ground (ctapipe's ``TiltedGroundFrame`` for a pointing) and the
  projection of tilted-frame points onto the ground (``project_to_ground``);
- horizontal ↔ right-handed cartesian direction (x north, y west, z up), ctapipe's
  ``altaz_to_righthanded_cartesian``.

All angles are degrees; azimuths are returned in [0, 360), field-of-view longitudes in
[-180, 180) as astropy wraps them. Pointing arguments are scalars or arrays broadcast
against the coordinates. The ``_njit`` scalar helpers are shared with
:mod:`dvp.kernels.stereo` so both use one implementation of each rotation.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_DEG = np.pi / 180.0
_RAD = 180.0 / np.pi


# -- scalar helpers (inlined by numba into the loops here and in stereo.py) ----------

@njit(cache=True)
def _offset_matrix(origin_alt_rad, origin_az_rad):
    """Rows of ``R_y(-alt) · R_z(az)``: horizontal cartesian → offset-frame cartesian.

    astropy's ``rotation_matrix(angle, axis)`` is the passive rotation, so for the origin
    (alt, az) ``R_y(-alt) · R_z(az)`` maps the origin's unit vector to (1, 0, 0).
    """
    ca, sa = np.cos(origin_alt_rad), np.sin(origin_alt_rad)
    cz, sz = np.cos(origin_az_rad), np.sin(origin_az_rad)
    return (ca * cz, ca * sz, sa,
            -sz, cz, 0.0,
            -sa * cz, -sa * sz, ca)


@njit(cache=True)
def _offset_to_horizontal_vec(lon_rad, lat_rad, origin_alt_rad, origin_az_rad):
    """Unit vector of astropy's AltAz cartesian (x=cos alt cos az, y=cos alt sin az, z=sin alt)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = _offset_matrix(origin_alt_rad, origin_az_rad)
    cl = np.cos(lat_rad)
    tx, ty, tz = cl * np.cos(lon_rad), cl * np.sin(lon_rad), np.sin(lat_rad)
    # the inverse of a rotation is its transpose
    return (m00 * tx + m10 * ty + m20 * tz,
            m01 * tx + m11 * ty + m21 * tz,
            m02 * tx + m12 * ty + m22 * tz)


@njit(cache=True)
def _horizontal_vec_to_offset(vx, vy, vz, origin_alt_rad, origin_az_rad):
    """AltAz cartesian vector → (lon, lat) in radians of the offset frame, lon in [-pi, pi)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = _offset_matrix(origin_alt_rad, origin_az_rad)
    tx = m00 * vx + m01 * vy + m02 * vz
    ty = m10 * vx + m11 * vy + m12 * vz
    tz = m20 * vx + m21 * vy + m22 * vz
    return np.arctan2(ty, tx), np.arctan2(tz, np.sqrt(tx * tx + ty * ty))


@njit(cache=True)
def _wrap_lon_deg(lon):
    """[-180, 180) as astropy's ``Angle.wrap_at(180 deg)``."""
    if lon >= 180.0 or lon < -180.0:
        lon = (lon + 180.0) % 360.0 - 180.0
    return lon


@njit(cache=True)
def _wrap_az_deg(az):
    """[0, 360) as astropy's ``Longitude``."""
    if az < 0.0 or az >= 360.0:
        az = az % 360.0
        if az >= 360.0:  # -tiny % 360 rounds to 360
            az = 0.0
    return az


@njit(cache=True)
def _tilted_matrix(alt_rad, az_rad):
    """ctapipe's ``_get_shower_trans_matrix``: ground → tilted ground (rows)."""
    cos_z, sin_z = np.sin(alt_rad), np.cos(alt_rad)  # zenith angle = 90° - alt
    cos_az, sin_az = np.cos(az_rad), np.sin(az_rad)
    return (cos_z * cos_az, -cos_z * sin_az, -sin_z,
            sin_az, cos_az, 0.0,
            sin_z * cos_az, -sin_z * sin_az, cos_z)


# -- batch bodies ------------------------------------------------------------------

@njit(cache=True)
def _camera_to_telescope(x, y, focal, rot_deg, lon_out, lat_out):
    for i in range(x.shape[0]):
        r = rot_deg[i] * _DEG
        if r == 0.0:  # as ctapipe: no rotation arithmetic for unrotated cameras
            xr, yr = x[i], y[i]
        else:
            c, s = np.cos(r), np.sin(r)
            xr, yr = x[i] * c - y[i] * s, x[i] * s + y[i] * c
        lat_out[i] = xr / focal[i] * _RAD
        lon_out[i] = _wrap_lon_deg(yr / focal[i] * _RAD)


@njit(cache=True)
def _telescope_to_camera(lon, lat, focal, rot_deg, x_out, y_out):
    for i in range(lon.shape[0]):
        xp, yp = lat[i] * _DEG, lon[i] * _DEG
        r = -rot_deg[i] * _DEG
        if r == 0.0:
            xr, yr = xp, yp
        else:
            c, s = np.cos(r), np.sin(r)
            xr, yr = xp * c - yp * s, xp * s + yp * c
        x_out[i] = xr * focal[i]
        y_out[i] = yr * focal[i]


@njit(cache=True)
def _offset_to_horizontal(lon, lat, p_alt, p_az, alt_out, az_out):
    for i in range(lon.shape[0]):
        vx, vy, vz = _offset_to_horizontal_vec(lon[i] * _DEG, lat[i] * _DEG, p_alt[i] * _DEG, p_az[i] * _DEG)
        az_out[i] = _wrap_az_deg(np.arctan2(vy, vx) * _RAD)
        alt_out[i] = np.arctan2(vz, np.sqrt(vx * vx + vy * vy)) * _RAD


@njit(cache=True)
def _horizontal_to_offset(alt, az, p_alt, p_az, lon_out, lat_out):
    for i in range(alt.shape[0]):
        a, z = alt[i] * _DEG, az[i] * _DEG
        ca = np.cos(a)
        lo, la = _horizontal_vec_to_offset(ca * np.cos(z), ca * np.sin(z), np.sin(a), p_alt[i] * _DEG, p_az[i] * _DEG)
        lon_out[i] = _wrap_lon_deg(lo * _RAD)
        lat_out[i] = la * _RAD


@njit(cache=True)
def _ground_tilted(x, y, z, alt, az, inverse, xo, yo, zo):
    for i in range(x.shape[0]):
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _tilted_matrix(alt[i] * _DEG, az[i] * _DEG)
        if inverse:  # tilted → ground: the transpose
            m01, m02, m10, m12, m20, m21 = m10, m20, m01, m21, m02, m12
        xo[i] = m00 * x[i] + m01 * y[i] + m02 * z[i]
        yo[i] = m10 * x[i] + m11 * y[i] + m12 * z[i]
        zo[i] = m20 * x[i] + m21 * y[i] + m22 * z[i]


@njit(cache=True)
def _project_to_ground(tx, ty, tz, alt, az, xo, yo):
    for i in range(tx.shape[0]):
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _tilted_matrix(alt[i] * _DEG, az[i] * _DEG)
        gx = m00 * tx[i] + m10 * ty[i] + m20 * tz[i]
        gy = m01 * tx[i] + m11 * ty[i] + m21 * tz[i]
        gz = m02 * tx[i] + m12 * ty[i] + m22 * tz[i]
        # slide along the tilted frame's normal back to z = 0, as ctapipe's project_to_ground
        xo[i] = gx - m20 * gz / m22
        yo[i] = gy - m21 * gz / m22


# -- public wrappers ---------------------------------------------------------------

def _prepare(*arrays):
    """Broadcast scalars/arrays to one 1-D float64 shape; returns (arrays, output shape)."""
    arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    flat = [np.ascontiguousarray(np.broadcast_to(a, shape).reshape(-1)) for a in arrs]
    return flat, shape


def _outputs(k, shape):
    n = int(np.prod(shape, dtype=np.int64))
    return [np.empty(n, np.float64) for _ in range(k)]


def camera_to_telescope(x_m, y_m, focal_length_m, rotation_deg=0.0):
    """Camera frame → telescope frame (ctapipe's ``camera_to_telescope``).

    Parameters
    ----------
    x_m, y_m : array_like, shape (n,)
        Focal-plane position, m (x along the altitude direction, y along azimuth).
    focal_length_m : float or array_like, shape (n,)
        Focal length, m.
    rotation_deg : float or array_like, shape (n,)
        Camera rotation, deg.

    Returns
    -------
    fov_lon_deg, fov_lat_deg : ndarray, shape (n,)
        Telescope-frame longitude (wrapped to [-180, 180)) and latitude, deg.
    """
    (x, y, f, r), shape = _prepare(x_m, y_m, focal_length_m, rotation_deg)
    lon, lat = _outputs(2, shape)
    _camera_to_telescope(x, y, f, r, lon, lat)
    return lon.reshape(shape), lat.reshape(shape)


def telescope_to_camera(fov_lon_deg, fov_lat_deg, focal_length_m, rotation_deg=0.0):
    """Telescope frame → camera frame (ctapipe's ``telescope_to_camera``).

    Parameters
    ----------
    fov_lon_deg, fov_lat_deg : array_like, shape (n,)
        Telescope-frame coordinates, deg.
    focal_length_m : float or array_like, shape (n,)
        Focal length, m.
    rotation_deg : float or array_like, shape (n,)
        Camera rotation, deg.

    Returns
    -------
    x_m, y_m : ndarray, shape (n,)
        Focal-plane position, m.
    """
    (lon, lat, f, r), shape = _prepare(fov_lon_deg, fov_lat_deg, focal_length_m, rotation_deg)
    x, y = _outputs(2, shape)
    _telescope_to_camera(lon, lat, f, r, x, y)
    return x.reshape(shape), y.reshape(shape)


def telescope_to_altaz(fov_lon_deg, fov_lat_deg, pointing_alt_deg, pointing_az_deg):
    """Telescope frame (around a pointing) → horizontal coordinates.

    Parameters
    ----------
    fov_lon_deg, fov_lat_deg : array_like, shape (n,)
        Offsets in the telescope frame, deg.
    pointing_alt_deg, pointing_az_deg : float or array_like, shape (n,)
        Telescope pointing, deg.

    Returns
    -------
    alt_deg, az_deg : ndarray, shape (n,)
        Altitude and azimuth (in [0, 360)), deg.
    """
    (lon, lat, pa_, pz), shape = _prepare(fov_lon_deg, fov_lat_deg, pointing_alt_deg, pointing_az_deg)
    alt, az = _outputs(2, shape)
    _offset_to_horizontal(lon, lat, pa_, pz, alt, az)
    return alt.reshape(shape), az.reshape(shape)


def altaz_to_telescope(alt_deg, az_deg, pointing_alt_deg, pointing_az_deg):
    """Horizontal coordinates → telescope frame around a pointing.

    Parameters
    ----------
    alt_deg, az_deg : array_like, shape (n,)
        Horizontal coordinates, deg.
    pointing_alt_deg, pointing_az_deg : float or array_like, shape (n,)
        Telescope pointing, deg.

    Returns
    -------
    fov_lon_deg, fov_lat_deg : ndarray, shape (n,)
        Telescope-frame coordinates, deg (lon wrapped to [-180, 180)).
    """
    (alt, az, pa_, pz), shape = _prepare(alt_deg, az_deg, pointing_alt_deg, pointing_az_deg)
    lon, lat = _outputs(2, shape)
    _horizontal_to_offset(alt, az, pa_, pz, lon, lat)
    return lon.reshape(shape), lat.reshape(shape)


# ctapipe's NominalFrame is the same sky-offset construction about an arbitrary origin
nominal_to_altaz = telescope_to_altaz
altaz_to_nominal = altaz_to_telescope


def telescope_to_nominal(fov_lon_deg, fov_lat_deg, pointing_alt_deg, pointing_az_deg, origin_alt_deg,
                         origin_az_deg):
    """Telescope frame of one pointing → nominal frame about ``origin`` (via horizontal), deg."""
    alt, az = telescope_to_altaz(fov_lon_deg, fov_lat_deg, pointing_alt_deg, pointing_az_deg)
    return altaz_to_nominal(alt, az, origin_alt_deg, origin_az_deg)


def ground_to_tilted(x_m, y_m, z_m, pointing_alt_deg, pointing_az_deg):
    """Ground frame (x north, y west, z up) → tilted ground frame of a pointing.

    Parameters
    ----------
    x_m, y_m, z_m : array_like, shape (n,)
        Ground-frame positions, m.
    pointing_alt_deg, pointing_az_deg : float or array_like, shape (n,)
        Pointing that defines the tilted plane (its normal), deg.

    Returns
    -------
    x_m, y_m, z_m : ndarray, shape (n,)
        Tilted-frame positions, m.
    """
    (x, y, z, a, az), shape = _prepare(x_m, y_m, z_m, pointing_alt_deg, pointing_az_deg)
    xo, yo, zo = _outputs(3, shape)
    _ground_tilted(x, y, z, a, az, False, xo, yo, zo)
    return xo.reshape(shape), yo.reshape(shape), zo.reshape(shape)


def tilted_to_ground(x_m, y_m, z_m, pointing_alt_deg, pointing_az_deg):
    """Tilted ground frame of a pointing → ground frame (inverse of :func:`ground_to_tilted`), m."""
    (x, y, z, a, az), shape = _prepare(x_m, y_m, z_m, pointing_alt_deg, pointing_az_deg)
    xo, yo, zo = _outputs(3, shape)
    _ground_tilted(x, y, z, a, az, True, xo, yo, zo)
    return xo.reshape(shape), yo.reshape(shape), zo.reshape(shape)


def project_to_ground(x_m, y_m, z_m, pointing_alt_deg, pointing_az_deg):
    """Tilted-frame points → their ground (z = 0) projection along the pointing (ctapipe's
    ``project_to_ground``).

    Returns
    -------
    x_m, y_m : ndarray, shape (n,)
        Ground-frame position on the z = 0 plane, m.
    """
    (x, y, z, a, az), shape = _prepare(x_m, y_m, z_m, pointing_alt_deg, pointing_az_deg)
    xo, yo = _outputs(2, shape)
    _project_to_ground(x, y, z, a, az, xo, yo)
    return xo.reshape(shape), yo.reshape(shape)


def altaz_to_cartesian(alt_deg, az_deg):
    """Horizontal direction → right-handed unit vector (x north, y west, z up).

    Returns
    -------
    ndarray, shape (n, 3)
    """
    alt = np.deg2rad(np.asarray(alt_deg, np.float64))
    az = np.deg2rad(np.asarray(az_deg, np.float64))
    ca = np.cos(alt)
    # azimuth runs clockwise (north → east), so west is -sin(az)
    return np.stack([ca * np.cos(az), -ca * np.sin(az), np.sin(alt)], axis=-1)


def cartesian_to_altaz(vec):
    """Right-handed vector(s), shape (n, 3) → (alt_deg, az_deg in [0, 360))."""
    v = np.asarray(vec, np.float64)
    alt = np.rad2deg(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    az = np.rad2deg(np.arctan2(-v[..., 1], v[..., 0])) % 360.0
    return alt, np.where(az >= 360.0, 0.0, az)
