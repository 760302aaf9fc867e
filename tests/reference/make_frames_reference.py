"""Golden coordinate-frame transforms from ctapipe 0.28 / astropy, for tests/test_frames.py.

Run with a Python that has ctapipe 0.28 (never imported by dvp or its tests):

    /work/venv-ctapipe/bin/python tests/reference/make_frames_reference.py

Writes tests/reference/kernels/frames.npz: random inputs and ctapipe's outputs for
camera ↔ telescope, telescope ↔ AltAz, AltAz ↔ nominal, ground ↔ tilted ground and
project_to_ground, all angles in degrees, lengths in metres.
"""
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, SkyCoord
from ctapipe.coordinates import (CameraFrame, GroundFrame, NominalFrame, TelescopeFrame, TiltedGroundFrame,
                                 project_to_ground)

rng = np.random.default_rng(20260101)
n = 500
out = {}
p_alt = rng.uniform(5, 89.9, n)
p_az = rng.uniform(-30, 390, n)  # also azimuths outside [0, 360)
out.update(pointing_alt_deg=p_alt, pointing_az_deg=p_az)
pointing = SkyCoord(alt=p_alt * u.deg, az=p_az * u.deg, frame=AltAz())

# camera -> telescope, with and without rotation
x, y = rng.normal(0, 0.6, n), rng.normal(0, 0.6, n)
f = rng.uniform(2, 30, n)
out.update(cam_x_m=x, cam_y_m=y, focal_length_m=f)
for rot in (0.0, 10.0):
    cam = CameraFrame(focal_length=f * u.m, rotation=rot * u.deg, telescope_pointing=pointing)
    c = SkyCoord(x=x * u.m, y=y * u.m, frame=cam).transform_to(TelescopeFrame(telescope_pointing=pointing))
    out[f"cam_rot{int(rot)}_fov_lon_deg"] = c.fov_lon.to_value(u.deg)
    out[f"cam_rot{int(rot)}_fov_lat_deg"] = c.fov_lat.to_value(u.deg)
    back = c.transform_to(cam)
    out[f"tel_rot{int(rot)}_x_m"] = back.x.to_value(u.m)
    out[f"tel_rot{int(rot)}_y_m"] = back.y.to_value(u.m)

# telescope -> altaz (offsets up to 10 deg) and altaz -> telescope
lon, lat = rng.uniform(-10, 10, n), rng.uniform(-10, 10, n)
out.update(fov_lon_deg=lon, fov_lat_deg=lat)
tel = SkyCoord(fov_lon=lon * u.deg, fov_lat=lat * u.deg, frame=TelescopeFrame(telescope_pointing=pointing))
aa = tel.transform_to(AltAz())
out.update(tel_alt_deg=aa.alt.to_value(u.deg), tel_az_deg=aa.az.to_value(u.deg))
alt, az = rng.uniform(0, 90, n), rng.uniform(0, 360, n)
out.update(alt_deg=alt, az_deg=az)
back = SkyCoord(alt=alt * u.deg, az=az * u.deg, frame=AltAz()).transform_to(TelescopeFrame(telescope_pointing=pointing))
out.update(altaz_fov_lon_deg=back.fov_lon.to_value(u.deg), altaz_fov_lat_deg=back.fov_lat.to_value(u.deg))

# nominal frame about another origin: telescope -> nominal
o_alt, o_az = p_alt + rng.uniform(-3, 3, n).clip(-p_alt + 1, 89.95 - p_alt), p_az + rng.uniform(-3, 3, n)
out.update(origin_alt_deg=o_alt, origin_az_deg=o_az)
nom = tel.transform_to(NominalFrame(origin=SkyCoord(alt=o_alt * u.deg, az=o_az * u.deg, frame=AltAz())))
out.update(nominal_fov_lon_deg=nom.fov_lon.to_value(u.deg), nominal_fov_lat_deg=nom.fov_lat.to_value(u.deg))

# ground <-> tilted ground, projection
gx, gy, gz = rng.uniform(-2000, 2000, n), rng.uniform(-2000, 2000, n), rng.uniform(-50, 50, n)
out.update(ground_x_m=gx, ground_y_m=gy, ground_z_m=gz)
tilted_frame = TiltedGroundFrame(pointing_direction=pointing)
t = SkyCoord(x=gx * u.m, y=gy * u.m, z=gz * u.m, frame=GroundFrame()).transform_to(tilted_frame)
out.update(tilted_x_m=t.x.to_value(u.m), tilted_y_m=t.y.to_value(u.m), tilted_z_m=t.z.to_value(u.m))
g = SkyCoord(x=gx * u.m, y=gy * u.m, z=gz * u.m, frame=tilted_frame).transform_to(GroundFrame())
out.update(untilted_x_m=g.x.to_value(u.m), untilted_y_m=g.y.to_value(u.m), untilted_z_m=g.z.to_value(u.m))
proj = project_to_ground(SkyCoord(x=gx * u.m, y=gy * u.m, z=0 * u.m, frame=tilted_frame))
out.update(projected_x_m=proj.x.to_value(u.m), projected_y_m=proj.y.to_value(u.m))

dest = Path(__file__).parent / "kernels" / "frames.npz"
np.savez_compressed(dest, **out)
print("wrote", dest, len(out), "arrays")
