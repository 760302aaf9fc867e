"""Telescope identification from sim_telarray metadata, or by pixel count and focal length.

The lookup table holds the well-known CTA (and a few non-CTA) telescopes by number of
pixels and equivalent focal length (rounded to 0.01 m), as ctapipe's guess does.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TelescopeGuess(NamedTuple):
    size_type: str
    optics_name: str
    camera_name: str
    n_mirrors: int
    reflector_shape: str


_SC, _DC, _H, _P = "SCHWARZSCHILD_COUDER", "DAVIES_COTTON", "HYBRID", "PARABOLIC"
# (n_pixels, focal length m, n_mirror_tiles or None) -> telescope
KNOWN_TELESCOPES = {
    (2048, 2.28, None): TelescopeGuess("SST", "GCT", "CHEC", 2, _SC),
    (2368, 2.15, None): TelescopeGuess("SST", "ASTRI", "ASTRICam", 2, _SC),
    (2048, 2.15, None): TelescopeGuess("SST", "ASTRI", "CHEC", 2, _SC),
    (1296, 5.60, None): TelescopeGuess("SST", "1M", "DigiCam", 1, _DC),
    (1764, 16.0, None): TelescopeGuess("MST", "MST", "FlashCam", 1, _H),
    (1855, 16.0, None): TelescopeGuess("MST", "MST", "NectarCam", 1, _H),
    (1855, 28.0, None): TelescopeGuess("LST", "LST", "LSTCam", 1, _P),
    (11328, 5.59, None): TelescopeGuess("MST", "SCT", "SCTCam", 1, _SC),
    (1039, 16.97, 964): TelescopeGuess("LST", "MAGIC-1", "MAGICCam", 1, _P),
    (1039, 16.97, 247): TelescopeGuess("LST", "MAGIC-2", "MAGICCam", 1, _P),
    (1039, 17.0, 964): TelescopeGuess("LST", "MAGIC-1", "MAGICCam", 1, _P),
    (1039, 17.0, 247): TelescopeGuess("LST", "MAGIC-2", "MAGICCam", 1, _P),
    (960, 15.0, None): TelescopeGuess("MST", "HESS-I", "HESS-I", 1, _DC),
    (2048, 36.0, None): TelescopeGuess("LST", "HESS-II", "HESS-II", 1, _P),
    (1440, 4.89, None): TelescopeGuess("SST", "FACT", "FACT", 1, _H),
}


def size_type_from_mirror_area(mirror_area_m2: float) -> str:
    """SST below 8 m dish diameter, MST below 16 m, LST above."""
    diameter = 2 * np.sqrt(mirror_area_m2 / np.pi)
    return "SST" if diameter < 8 else "MST" if diameter < 16 else "LST"


def guess_telescope(n_pixels: int, focal_length_m: float, n_mirror_tiles: int | None,
                    mirror_area_m2: float) -> TelescopeGuess:
    """Known telescope for this camera size and focal length, else an UNKNOWN description."""
    f = round(float(focal_length_m), 2)
    hit = KNOWN_TELESCOPES.get((n_pixels, f, n_mirror_tiles)) or KNOWN_TELESCOPES.get((n_pixels, f, None))
    if hit is not None:
        return hit
    return TelescopeGuess(size_type_from_mirror_area(mirror_area_m2), f"UNKNOWN-{mirror_area_m2:.0f}M2",
                          f"UNKNOWN-{n_pixels}PX", -1, "UNKNOWN")


def telescope_from_meta(meta: dict, mirror_area_m2: float) -> TelescopeGuess | None:
    """Telescope from sim_telarray's per-telescope METAPARAM block (prod6 and later)."""
    optics = meta.get(b"OPTICS_CONFIG_NAME")
    camera = meta.get(b"CAMERA_CONFIG_NAME")
    mirror_class = meta.get(b"MIRROR_CLASS")
    if optics is None or camera is None or mirror_class is None:
        return None
    mirror_class = int(mirror_class)
    shape = "UNKNOWN"
    if mirror_class == 2:
        shape = _SC
    elif mirror_class == 0:
        if int(meta.get(b"PARABOLIC_DISH", 0)) == 1:
            shape = _P
        else:
            shape = _DC
            if float(meta.get(b"DISH_SHAPE_Length", 0)) != float(meta.get(b"FOCAL_Length", 0)):
                shape = _H
    return TelescopeGuess(size_type_from_mirror_area(mirror_area_m2), optics.decode(), camera.decode(),
                          2 if mirror_class == 2 else 1, shape)
