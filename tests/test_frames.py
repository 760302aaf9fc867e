"""Coordinate-frame kernels against ctapipe 0.28 / astropy (tests/reference/kernels/frames.npz)."""
from pathlib import Path

import numpy as np
import pytest

from dvp.kernels import frames as F

REF = np.load(Path(__file__).parent / "reference" / "kernels" / "frames.npz")
TOL_DEG = 1e-9
TOL_M = 1e-9


def _angle_diff(a, b):
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize("rot", [0, 10])
def test_camera_telescope_roundtrip_matches_ctapipe(rot):
    lon, lat = F.camera_to_telescope(REF["cam_x_m"], REF["cam_y_m"], REF["focal_length_m"], float(rot))
    assert np.max(np.abs(lon - REF[f"cam_rot{rot}_fov_lon_deg"])) < TOL_DEG
    assert np.max(np.abs(lat - REF[f"cam_rot{rot}_fov_lat_deg"])) < TOL_DEG
    x, y = F.telescope_to_camera(lon, lat, REF["focal_length_m"], float(rot))
    np.testing.assert_allclose(x, REF[f"tel_rot{rot}_x_m"], rtol=0, atol=TOL_M)
    np.testing.assert_allclose(y, REF[f"tel_rot{rot}_y_m"], rtol=0, atol=TOL_M)


def test_telescope_to_altaz_matches_ctapipe():
    alt, az = F.telescope_to_altaz(REF["fov_lon_deg"], REF["fov_lat_deg"], REF["pointing_alt_deg"],
                                   REF["pointing_az_deg"])
    assert np.max(np.abs(alt - REF["tel_alt_deg"])) < TOL_DEG
    assert np.max(_angle_diff(az, REF["tel_az_deg"])) < TOL_DEG
    assert (az >= 0).all() and (az < 360).all()


def test_altaz_to_telescope_matches_ctapipe():
    lon, lat = F.altaz_to_telescope(REF["alt_deg"], REF["az_deg"], REF["pointing_alt_deg"], REF["pointing_az_deg"])
    assert np.max(_angle_diff(lon, REF["altaz_fov_lon_deg"])) < TOL_DEG
    assert np.max(np.abs(lat - REF["altaz_fov_lat_deg"])) < TOL_DEG
    assert (lon >= -180).all() and (lon < 180).all()


def test_telescope_altaz_roundtrip():
    alt, az = F.telescope_to_altaz(REF["fov_lon_deg"], REF["fov_lat_deg"], REF["pointing_alt_deg"],
                                   REF["pointing_az_deg"])
    lon, lat = F.altaz_to_telescope(alt, az, REF["pointing_alt_deg"], REF["pointing_az_deg"])
    assert np.max(np.abs(lon - REF["fov_lon_deg"])) < TOL_DEG
    assert np.max(np.abs(lat - REF["fov_lat_deg"])) < TOL_DEG


def test_nominal_frame_matches_ctapipe():
    lon, lat = F.telescope_to_nominal(REF["fov_lon_deg"], REF["fov_lat_deg"], REF["pointing_alt_deg"],
                                      REF["pointing_az_deg"], REF["origin_alt_deg"], REF["origin_az_deg"])
    assert np.max(_angle_diff(lon, REF["nominal_fov_lon_deg"])) < TOL_DEG
    assert np.max(np.abs(lat - REF["nominal_fov_lat_deg"])) < TOL_DEG


def test_tilted_ground_matches_ctapipe():
    args = (REF["ground_x_m"], REF["ground_y_m"], REF["ground_z_m"])
    p = (REF["pointing_alt_deg"], REF["pointing_az_deg"])
    for got, key in zip(F.ground_to_tilted(*args, *p), ("tilted_x_m", "tilted_y_m", "tilted_z_m")):
        np.testing.assert_allclose(got, REF[key], rtol=0, atol=1e-8)
    for got, key in zip(F.tilted_to_ground(*args, *p), ("untilted_x_m", "untilted_y_m", "untilted_z_m")):
        np.testing.assert_allclose(got, REF[key], rtol=0, atol=1e-8)
    x, y = F.project_to_ground(REF["ground_x_m"], REF["ground_y_m"], 0.0, *p)
    np.testing.assert_allclose(x, REF["projected_x_m"], rtol=1e-12, atol=1e-8)
    np.testing.assert_allclose(y, REF["projected_y_m"], rtol=1e-12, atol=1e-8)


def test_tilted_roundtrip_and_projection_lies_on_pointing_line():
    rng = np.random.default_rng(1)
    x, y, z = rng.normal(0, 500, (3, 50))
    alt, az = rng.uniform(20, 90, 50), rng.uniform(0, 360, 50)
    back = F.tilted_to_ground(*F.ground_to_tilted(x, y, z, alt, az), alt, az)
    np.testing.assert_allclose(back, (x, y, z), atol=1e-9)
    # a projected point differs from the tilted point's ground position along the pointing
    gx, gy, gz = F.tilted_to_ground(x, y, 0.0, alt, az)
    px, py = F.project_to_ground(x, y, 0.0, alt, az)
    d = np.stack([gx - px, gy - py, gz], axis=1)
    cross = np.cross(d, F.altaz_to_cartesian(alt, az))
    assert np.max(np.linalg.norm(cross, axis=1)) < 1e-7


def test_cartesian_altaz_helpers():
    v = F.altaz_to_cartesian([90.0, 0.0, 0.0, 30.0], [0.0, 0.0, 90.0, 200.0])
    np.testing.assert_allclose(v[0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(v[1], [1, 0, 0], atol=1e-15)  # north is +x
    np.testing.assert_allclose(v[2], [0, -1, 0], atol=1e-15)  # east is -y (y points west)
    alt, az = F.cartesian_to_altaz(v[3])
    assert abs(alt - 30.0) < 1e-12 and abs(az - 200.0) < 1e-12


def test_pointing_at_origin_is_frame_centre_and_scalars_broadcast():
    lon, lat = F.altaz_to_telescope([70.0, 71.0], [10.0, 10.0], 70.0, 10.0)
    assert abs(lon[0]) < 1e-12 and abs(lat[0]) < 1e-12
    assert abs(lat[1] - 1.0) < 1e-12 and abs(lon[1]) < 1e-12  # fov_lat follows altitude
    alt, az = F.telescope_to_altaz(1.0, 0.0, 0.0, 0.0)  # fov_lon follows azimuth
    assert alt.shape == () and abs(alt) < 1e-12 and abs(az - 1.0) < 1e-12


def test_jitted_bodies_equal_python():
    n = 20
    rng = np.random.default_rng(3)
    lon, lat, pa, pz = rng.uniform(-5, 5, n), rng.uniform(-5, 5, n), rng.uniform(10, 80, n), rng.uniform(0, 360, n)
    a1, z1 = np.empty(n), np.empty(n)
    a2, z2 = np.empty(n), np.empty(n)
    F._offset_to_horizontal(lon, lat, pa, pz, a1, z1)
    F._offset_to_horizontal.py_func(lon, lat, pa, pz, a2, z2)
    np.testing.assert_allclose(a1, a2, atol=1e-12)
    np.testing.assert_allclose(z1, z2, atol=1e-12)
