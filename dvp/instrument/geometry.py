"""Camera geometry: pixel positions, shapes, neighbours (CSR) and border pixels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# sim_telarray pixel_shape code -> (shape, pixel rotation in deg), as ctapipe reads it
SIMTEL_PIXEL_SHAPES = {0: ("circle", 0.0), 1: ("hexagon", 0.0), 2: ("square", 0.0), 3: ("hexagon", 30.0)}


def derotate(pix_x, pix_y, cam_rotation_deg):
    """Rotate pixel coordinates so that the camera rotation becomes zero.

    Parameters
    ----------
    pix_x, pix_y : ndarray, shape (n_pixels,)
        Pixel positions in m as stored by sim_telarray.
    cam_rotation_deg : float
        Camera rotation (ctapipe's sign convention: minus sim_telarray's ``cam_rot``).

    Returns
    -------
    x, y : ndarray, shape (n_pixels,)
    """
    psi = np.deg2rad(cam_rotation_deg)
    c, s = np.cos(psi), np.sin(psi)
    # ctapipe rotates by rotation_matrix_2d(psi).T; same arithmetic, same rounding
    rot = np.array([[c, -s], [s, c]])
    out = np.dot(rot.T, [np.asarray(pix_x, dtype=np.float64), np.asarray(pix_y, dtype=np.float64)])
    return out[0], out[1]


def compute_neighbors(pix_x, pix_y, pix_type: str, diagonal: bool = False):
    """Adjacent pixels by ctapipe's definition, as CSR arrays.

    Hexagonal and circular pixels: the up to 6 nearest pixels closer than 1.4 times the
    nearest-neighbour distance (L2). Square pixels: the up to 4 nearest closer than 1.5
    times the nearest distance in L1 norm (or 8 within 1.95 in L2 with ``diagonal``).

    Returns
    -------
    indptr : ndarray, shape (n_pixels + 1,), int32
    indices : ndarray, shape (n_neighbors_total,), int32, sorted within each row
    """
    n = len(pix_x)
    if n <= 1:
        return np.arange(n + 1, dtype=np.int32), np.zeros(n, dtype=np.int32)
    if pix_type in ("hexagon", "circle"):
        k, radius, norm = 6, 1.4, 2
    elif diagonal:
        k, radius, norm = 8, 1.95, 2
    else:
        k, radius, norm = 4, 1.5, 1
    from scipy.spatial import cKDTree   # here: importing scipy.spatial costs every dvp command 0.25 s

    points = np.column_stack([pix_x, pix_y])
    tree = cKDTree(points)
    dist, cand = tree.query(points, k=min(k + 1, n), p=norm)
    dist, cand = dist[:, 1:], cand[:, 1:]
    inside = dist < radius * dist.min(axis=1)[:, None]
    rows, col = np.nonzero(inside)
    nb = cand[rows, col]
    order = np.lexsort((nb, rows))
    rows, nb = rows[order], nb[order]
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr, dtype=np.int32), nb.astype(np.int32)


def border_mask(indptr, indices, width: int = 1):
    """Pixels within ``width`` pixels of the camera edge (ctapipe's definition).

    Width 1: pixels with fewer neighbours than the maximum. Width w: pixels with a
    neighbour in the width w-1 border.
    """
    n = len(indptr) - 1
    counts = np.bincount(indices, minlength=n)  # column sums, as ctapipe
    mask = counts < counts.max() if n else np.zeros(0, bool)
    for _ in range(width - 1):
        rows = np.repeat(np.arange(n), np.diff(indptr))
        new = np.zeros(n, bool)
        np.logical_or.at(new, rows, mask[indices])
        mask = new
    return mask


@dataclass(frozen=True, eq=False)
class CameraGeometry:
    """Pixel layout of one camera, already derotated (``cam_rotation_deg`` is 0 after).

    Arrays have shape ``(n_pixels,)``; positions in m, areas in m².
    """

    name: str
    pix_x: np.ndarray
    pix_y: np.ndarray
    pix_area: np.ndarray
    pix_type: str
    pix_rotation_deg: float
    cam_rotation_deg: float = 0.0
    neighbor_indptr: np.ndarray = field(default=None, repr=False)
    neighbor_indices: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        if self.neighbor_indptr is None:
            indptr, indices = compute_neighbors(self.pix_x, self.pix_y, self.pix_type)
            object.__setattr__(self, "neighbor_indptr", indptr)
            object.__setattr__(self, "neighbor_indices", indices)

    @property
    def n_pixels(self) -> int:
        return len(self.pix_x)

    def neighbors(self, pix: int) -> np.ndarray:
        return self.neighbor_indices[self.neighbor_indptr[pix]: self.neighbor_indptr[pix + 1]]

    def border(self, width: int = 1) -> np.ndarray:
        return border_mask(self.neighbor_indptr, self.neighbor_indices, width)

    @property
    def pixel_width(self) -> np.ndarray:
        """In-circle diameter (hexagon), edge (square) or diameter (circle), m."""
        if self.pix_type == "hexagon":
            return 2 * np.sqrt(self.pix_area / (2 * np.sqrt(3)))
        if self.pix_type == "square":
            return np.sqrt(self.pix_area)
        return 2 * np.sqrt(self.pix_area / np.pi)

    def telescope_frame(self, focal_length_m: float) -> "CameraGeometry":
        """This camera in ctapipe's ``TelescopeFrame``: positions and widths in deg, areas in deg².

        ctapipe assumes an equidistant mapping, ``fov_lon = y / f`` and ``fov_lat = x / f``
        (radians), so the returned ``pix_x`` is fov_lon and ``pix_y`` fov_lat; areas scale
        by ``(1 / f)²``. Neighbours are those of the camera frame.
        """
        if not np.isfinite(focal_length_m) or focal_length_m <= 0:
            raise ValueError(f"camera {self.name}: focal length must be positive, got {focal_length_m}")
        scale = np.rad2deg(1.0 / focal_length_m)
        return CameraGeometry(name=self.name, pix_x=np.rad2deg(self.pix_y / focal_length_m),
                              pix_y=np.rad2deg(self.pix_x / focal_length_m), pix_area=self.pix_area * scale**2,
                              pix_type=self.pix_type, pix_rotation_deg=self.pix_rotation_deg,
                              cam_rotation_deg=self.cam_rotation_deg, neighbor_indptr=self.neighbor_indptr,
                              neighbor_indices=self.neighbor_indices)

    @classmethod
    def from_simtel(cls, name, pixel_x, pixel_y, pixel_area, pixel_shape, cam_rot_rad):
        """Build from sim_telarray camera settings exactly as ctapipe 0.28 does."""
        pix_type, pix_rot = SIMTEL_PIXEL_SHAPES.get(int(pixel_shape), ("hexagon", 0.0))
        cam_rotation = -np.rad2deg(cam_rot_rad)
        x, y = derotate(pixel_x, pixel_y, cam_rotation)
        return cls(name=name, pix_x=x, pix_y=y, pix_area=np.asarray(pixel_area, np.float64),
                   pix_type=pix_type, pix_rotation_deg=float(pix_rot - cam_rotation))
