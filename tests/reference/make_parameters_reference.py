"""Golden reference for dvp's image-parameter kernels, computed with ctapipe 0.28.

Run with the ctapipe venv (never imported by the test suite)::

    /work/venv-ctapipe/bin/python tests/reference/make_parameters_reference.py

Builds ctapipe's LSTCam geometry in the TelescopeFrame (equivalent focal length 28 m) from
``instrument/calib_events.camera_LSTCam.parquet``, makes seeded realistic images (noise +
elliptical Gaussian showers with a time gradient, some with several blobs, outliers or
truncated at the camera edge) cleaned with ``tailcuts_clean`` 10/5 with 2 picture
neighbours, plus hand-made degenerate masks, and stores the inputs and every ctapipe
parameter output in ``kernels/parameters.npz``.

Every ctapipe function is called directly per image exactly as ``ImageProcessor`` calls it
(``geom[mask], image[mask]`` for Hillas, concentration, timing and statistics, the full
geometry + mask for leakage and morphology), whether or not the image passes the
ImageProcessor's quality query; a call that raises is stored as NaN. ``quality`` stores the
query's verdict (``image.sum() > 0`` and more than one pixel).

Timing: ``timing_parameters`` draws its LTS starting pairs from the module RNG
``ctapipe.fitting.FIT_RNG``; before each call the RNG state is copied and the five pairs it
will draw are recorded in ``timing_pairs`` (-1 where no pair is drawn), so that dvp can
replay them.

Images and peak times are stored only inside the cleaning mask (zero elsewhere; the test
fills the rest with noise) to keep the file small.
"""
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
from numba import njit

warnings.filterwarnings("ignore")

import ctapipe.fitting as fitting  # noqa: E402
from ctapipe.coordinates import CameraFrame, TelescopeFrame  # noqa: E402
from ctapipe.image import (  # noqa: E402
    concentration_parameters,
    descriptive_statistics,
    hillas_parameters,
    leakage_parameters,
    morphology_parameters,
    number_of_islands,
    tailcuts_clean,
    timing_parameters,
)
from ctapipe.instrument import CameraGeometry  # noqa: E402

HERE = Path(__file__).parent
OUT = HERE / "kernels" / "parameters.npz"
FOCAL_LENGTH = 28.0 * u.m
N_SAMPLES_LTS = 5

HILLAS = ["intensity", "fov_lon", "fov_lat", "r", "phi", "length", "length_uncertainty", "width",
          "width_uncertainty", "psi", "psi_uncertainty", "transverse_cog_uncertainty", "skewness", "kurtosis"]
LEAKAGE = ["pixels_width_1", "pixels_width_2", "intensity_width_1", "intensity_width_2"]
CONCENTRATION = ["cog", "core", "pixel"]
TIMING = ["slope", "intercept", "deviation"]
MORPHOLOGY = ["n_pixels", "n_islands", "n_small_islands", "n_medium_islands", "n_large_islands"]
STATISTICS = ["max", "min", "mean", "std", "skewness", "kurtosis"]


def value(q, unit=None):
    if unit is not None and hasattr(q, "unit"):
        return float(q.to_value(unit))
    return float(getattr(q, "value", q))


def lstcam_telescope_frame():
    t = pq.read_table(HERE / "instrument" / "calib_events.camera_LSTCam.parquet")
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    n = t.num_rows
    geom = CameraGeometry(
        name="LSTCam", pix_id=np.arange(n),
        pix_x=t["pix_x_m"].to_numpy() * u.m, pix_y=t["pix_y_m"].to_numpy() * u.m,
        pix_area=t["pix_area_m2"].to_numpy() * u.m**2, pix_type=meta["pix_type"],
        pix_rotation=float(meta["pix_rotation_deg"]) * u.deg,
        cam_rotation=float(meta["cam_rotation_deg"]) * u.deg,
        frame=CameraFrame(focal_length=FOCAL_LENGTH),
    )
    nb = geom.neighbor_matrix_sparse.tocsr()
    stored = t["neighbors"].to_pylist()
    assert all(sorted(nb.indices[nb.indptr[i]:nb.indptr[i + 1]].tolist()) == stored[i] for i in range(n))
    return geom.transform_to(TelescopeFrame())


def shower(rng, geom, x, y, length, width, psi, intensity, skew=0.0):
    """Expected p.e. of an elliptical Gaussian (longer tail on one side if skew > 0)."""
    px = geom.pix_x.to_value(u.deg)
    py = geom.pix_y.to_value(u.deg)
    area = geom.pix_area.to_value(u.deg**2)
    c, s = np.cos(psi), np.sin(psi)
    lon = (px - x) * c + (py - y) * s
    tra = -(px - x) * s + (py - y) * c
    ln = np.where(lon > 0, length * (1 + skew), length * (1 - 0.5 * skew))
    dens = np.exp(-0.5 * (lon / ln) ** 2 - 0.5 * (tra / width) ** 2) / (2 * np.pi * length * width)
    return intensity * dens * area, lon


def realistic_event(rng, geom):
    n = geom.n_pixels
    expected = np.zeros(n)
    time = np.zeros(n)
    kind = rng.choice(["single", "single", "single", "edge", "multi", "bright"])
    n_blobs = rng.integers(2, 4) if kind == "multi" else 1
    for _ in range(n_blobs):
        r_max = 2.1 if kind == "edge" else 1.4
        r0 = rng.uniform(1.7, r_max) if kind == "edge" else rng.uniform(0, r_max)
        phi0 = rng.uniform(-np.pi, np.pi)
        x0, y0 = r0 * np.cos(phi0), r0 * np.sin(phi0)
        length = rng.uniform(0.12, 0.6)
        width = rng.uniform(0.04, 0.5 * length)
        psi = rng.uniform(-np.pi, np.pi)
        intensity = 10 ** rng.uniform(2.3, 3.8 if kind != "bright" else 4.4)
        mu, lon = shower(rng, geom, x0, y0, length, width, psi, intensity, skew=rng.uniform(-0.5, 0.8))
        slope = rng.uniform(-15, 15)  # ns / deg
        t_blob = rng.uniform(10, 25) + slope * lon
        time = np.where(mu > expected, t_blob, time)
        expected += mu
    image = rng.poisson(expected) + rng.normal(0, 2.5, n)
    pe = np.maximum(expected, 0.1)
    time = np.where(expected > 1, time + rng.normal(0, 0.3 + 2.0 / np.sqrt(pe), n), rng.uniform(0, 40, n))
    if rng.uniform() < 0.3:  # afterpulse-like outliers in time
        idx = rng.choice(n, 40, replace=False)
        time[idx] += rng.normal(0, 8, 40)
    return image.astype(np.float32), time.astype(np.float32)


@njit
def draw_pairs(rng, n, k):
    out = np.empty((k, 2), np.int64)
    for i in range(k):
        out[i] = fitting.choose_two_without_replacement(rng, n)
    return out


def parameterize(geom, image, peak_time, mask):
    """ctapipe's per-image calls, NaN where a call raises."""
    out = {}
    g_sel = geom[mask]
    img_sel = image[mask]
    try:
        h = hillas_parameters(geom=g_sel, image=img_sel)
        for k in HILLAS:
            unit = u.deg if k not in ("intensity", "skewness", "kurtosis") else None
            out["hillas_" + k] = value(getattr(h, k), unit)
    except Exception:
        h = None
        out.update({"hillas_" + k: np.nan for k in HILLAS})
    try:
        lk = leakage_parameters(geom=geom, image=image, cleaning_mask=mask)
        out.update({"leakage_" + k: float(getattr(lk, k)) for k in LEAKAGE})
    except Exception:
        out.update({"leakage_" + k: np.nan for k in LEAKAGE})
    try:
        c = concentration_parameters(geom=g_sel, image=img_sel, hillas_parameters=h)
        out.update({"concentration_" + k: float(getattr(c, k)) for k in CONCENTRATION})
    except Exception:
        out.update({"concentration_" + k: np.nan for k in CONCENTRATION})
    m = morphology_parameters(geom=geom, image_mask=mask)
    out.update({"morphology_" + k: float(getattr(m, k)) for k in MORPHOLOGY})
    for prefix, vals in (("intensity_", img_sel), ("peak_time_", peak_time[mask])):
        try:
            s = descriptive_statistics(vals)
            out.update({prefix + k: float(getattr(s, k)) for k in STATISTICS})
        except Exception:
            out.update({prefix + k: np.nan for k in STATISTICS})

    pairs = np.full((N_SAMPLES_LTS, 2), -1, np.int64)
    try:
        if h is None:
            raise ValueError("no hillas")
        # replay the draws timing_parameters will make from the module RNG
        if h.length.value != 0 and (img_sel >= 0).all():
            copy = np.random.Generator(np.random.PCG64())
            copy.bit_generator.state = fitting.FIT_RNG.bit_generator.state
            n_finite = int(np.isfinite(peak_time[mask]).sum())
            if n_finite >= 2:
                pairs = draw_pairs(copy, n_finite, N_SAMPLES_LTS)
        t = timing_parameters(geom=g_sel, image=img_sel, peak_time=peak_time[mask], hillas_parameters=h)
        out.update({"timing_" + k: value(getattr(t, k), 1 / u.deg if k == "slope" else None) for k in TIMING})
    except Exception:
        out.update({"timing_" + k: np.nan for k in TIMING})
    out["timing_pairs"] = pairs
    return out


def main():
    geom = lstcam_telescope_frame()
    n_pix = geom.n_pixels
    px = geom.pix_x.to_value(u.deg)
    py = geom.pix_y.to_value(u.deg)
    rng = np.random.default_rng(20240607)

    images, times, masks = [], [], []
    while len(images) < 100:
        image, peak_time = realistic_event(rng, geom)
        mask = tailcuts_clean(geom, image, picture_thresh=10, boundary_thresh=5,
                              min_number_picture_neighbors=2)
        if mask.sum() < 3:
            continue
        images.append(image), times.append(peak_time), masks.append(mask)

    # degenerate masks (values chosen by hand)
    def add(pixels, values, t=None):
        mask = np.zeros(n_pix, bool)
        mask[pixels] = True
        image = np.zeros(n_pix, np.float32)
        image[pixels] = values
        peak_time = np.zeros(n_pix, np.float32)
        peak_time[pixels] = t if t is not None else np.linspace(10, 20, len(pixels))
        images.append(image), times.append(peak_time), masks.append(mask)

    nb = geom.neighbor_matrix_sparse.tocsr()
    add([], [])                                             # empty mask
    add([100], [50.0])                                      # single pixel
    add([0, 1], [30.0, 12.0])                               # two neighbours
    add([0, 1, 2], [30.0, 12.0, 20.0], [5.0, 9.0, 4.0])     # three pixels (LTS subset of 2)
    row = np.flatnonzero(np.abs(py - py[0]) < 1e-9)          # pixels on the row through pixel 0
    row = row[np.argsort(np.abs(px[row]))][:7]
    add(row, np.linspace(15, 45, len(row)))                 # all pixels on one line
    diag = [0]                                              # a line along a hexagonal row direction
    step = nb.indices[nb.indptr[0]]
    d = np.array([px[step] - px[0], py[step] - py[0]])
    for _ in range(5):
        cand = np.array([j for j in range(n_pix)
                         if np.hypot(px[j] - px[diag[-1]] - d[0], py[j] - py[diag[-1]] - d[1]) < 1e-3])
        diag.append(int(cand[0]))
    add(diag, [20.0, 40.0, 33.0, 18.0, 25.0, 11.0])
    add([5, 6, 7, 8], [0.0, 0.0, 0.0, 0.0])                 # size zero
    add([5, 6, 7], [20.0, -3.0, 15.0])                      # negative pixel: numpy's cov refuses
    add([10, 11, 12, 13, 14], [7.0, 7.0, 7.0, 7.0, 7.0], [3.0, 3.0, 3.0, 3.0, 3.0])  # flat
    add(list(range(20, 60)), np.linspace(6, 30, 40), np.r_[np.linspace(0, 10, 34), [40, 41, 2, 3, -5, 30]])

    images = np.array(images)
    times = np.array(times)
    masks = np.array(masks)
    n_ev = len(images)

    labels = np.zeros((n_ev, n_pix), np.int16)
    n_islands = np.zeros(n_ev, np.int32)
    rows = []
    for i in range(n_ev):
        n_islands[i], labels[i] = number_of_islands(geom, masks[i])
        rows.append(parameterize(geom, images[i], times[i], masks[i]))
    quality = np.array([(images[i][masks[i]].sum() > 0) and masks[i].sum() > 1 for i in range(n_ev)])

    data = dict(
        pix_x=px, pix_y=py,
        pix_area=geom.pix_area.to_value(u.deg**2),
        pixel_width=geom.pixel_width.to_value(u.deg),
        border_1=np.packbits(geom.get_border_pixel_mask(1)),
        border_2=np.packbits(geom.get_border_pixel_mask(2)),
        n_pixels=np.int64(n_pix),
        mask=np.packbits(masks, axis=1),
        image=np.where(masks, images, 0).astype(np.float32),
        peak_time=np.where(masks, times, 0).astype(np.float32),
        labels=labels, n_islands=n_islands, quality=quality,
    )
    for key in rows[0]:
        data["ref_" + key] = np.array([r[key] for r in rows])
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **data)
    print(f"{OUT}: {n_ev} images, {OUT.stat().st_size / 1024:.0f} KiB, "
          f"mask sizes {np.percentile(masks.sum(1), [0, 10, 50, 90, 100])}, "
          f"n_islands max {n_islands.max()}, quality {quality.sum()}")


if __name__ == "__main__":
    main()
