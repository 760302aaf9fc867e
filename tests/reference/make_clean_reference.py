"""Golden reference for dvp.kernels.clean / dvp.kernels.islands from ctapipe 0.28.

Run with the ctapipe environment (once; the output is committed):

    /work/venv-ctapipe/bin/python tests/reference/make_clean_reference.py

Builds a ctapipe ``CameraGeometry`` for the real LSTCam from
``tests/reference/instrument/calib_events.camera_LSTCam.parquet`` (checking that ctapipe
computes the stored neighbours), makes seeded realistic images (noise, afterpulse-like
single pixels, a "star" cluster, 0-2 elliptical Gaussian showers with a time gradient)
plus a few events with values planted exactly at thresholds / time limits, and saves the
masks of every ImageCleaner (run through the real ctapipe classes and a SubarrayDescription,
default traits and non-default ones), ``number_of_islands``, ``largest_island``,
``dilate``, ``bright_cleaning``, ``apply_time_delta_cleaning`` and
``apply_time_average_cleaning`` to ``tests/reference/kernels/clean.npz``.

Storage (to stay small): images are on a 1/4 p.e. grid and times on a 1/8 ns grid
(stored as int16 counts; value = count / scale in float32),
then the planted pixels are overwritten with exact float32 values (``plant_*``). Times of
pixels below 1.5 p.e. are set to 0 before anything runs: no parameter set below lets such
a pixel into a mask, so their time never matters. Masks are bit-packed along pixels.
Neighbours are not stored: the test reads them from the same parquet file.
"""
import json
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
from astropy.coordinates import EarthLocation
from ctapipe.containers import CameraMonitoringContainer
from ctapipe.image import cleaning, morphology
from ctapipe.instrument import (
    CameraDescription,
    CameraGeometry,
    CameraReadout,
    OpticsDescription,
    PixelShape,
    SubarrayDescription,
    TelescopeDescription,
)

HERE = Path(__file__).parent
GEOM_FILE = HERE / "instrument" / "calib_events.camera_LSTCam.parquet"
OUT = HERE / "kernels" / "clean.npz"

N_REALISTIC = 44
N_TIE = 6
IMAGE_SCALE = 4  # images stored on a 1/4 p.e. grid
TIME_SCALE = 8  # times on a 1/8 ns grid


def load_geometry():
    t = pq.read_table(GEOM_FILE)
    md = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    n = t.num_rows
    geom = CameraGeometry(
        name="LSTCam",
        pix_id=np.arange(n),
        pix_x=t["pix_x_m"].to_numpy() * u.m,
        pix_y=t["pix_y_m"].to_numpy() * u.m,
        pix_area=t["pix_area_m2"].to_numpy() * u.m**2,
        pix_type=PixelShape(md["pix_type"]),
        pix_rotation=float(md["pix_rotation_deg"]) * u.deg,
        cam_rotation=float(md["cam_rotation_deg"]) * u.deg,
    )
    stored = t["neighbors"].to_pylist()
    m = geom.neighbor_matrix_sparse
    for i in range(n):
        assert sorted(m.indices[m.indptr[i]:m.indptr[i + 1]].tolist()) == sorted(stored[i]), i
    indptr = np.zeros(n + 1, np.int32)
    indptr[1:] = np.cumsum([len(s) for s in stored])
    indices = np.concatenate([np.asarray(s, np.int32) for s in stored])
    return geom, indptr, indices


def make_subarray(geom):
    readout = CameraReadout(
        name="LSTCam", sampling_rate=1 * u.GHz, reference_pulse_shape=np.ones((1, 10)),
        reference_pulse_sample_width=1 * u.ns, n_channels=1, n_pixels=geom.n_pixels, n_samples=40,
    )
    optics = OpticsDescription(
        name="LST", size_type="LST", n_mirrors=1, equivalent_focal_length=28 * u.m,
        effective_focal_length=29 * u.m, mirror_area=386 * u.m**2, n_mirror_tiles=198,
        reflector_shape="PARABOLIC",
    )
    tel = TelescopeDescription(name="LST", optics=optics,
                               camera=CameraDescription(name="LSTCam", geometry=geom, readout=readout))
    return SubarrayDescription(
        name="test", tel_positions={1: [0, 0, 0] * u.m}, tel_descriptions={1: tel},
        reference_location=EarthLocation(lon=-17 * u.deg, lat=28 * u.deg, height=2200 * u.m),
    )


def realistic_events(geom, rng, n_events):
    x = geom.pix_x.to_value(u.m)
    y = geom.pix_y.to_value(u.m)
    area = geom.pix_area.to_value(u.m**2)
    n = geom.n_pixels
    images = np.zeros((n_events, n), np.float64)
    times = np.zeros((n_events, n), np.float64)
    for e in range(n_events):
        nsb = rng.uniform(0.5, 3.0)
        img = rng.poisson(nsb, n) - nsb + rng.normal(0, 0.4, n)
        t = rng.uniform(0, 40, n)
        # afterpulse-like isolated bright pixels
        k = rng.integers(0, 6)
        ap = rng.choice(n, k, replace=False)
        img[ap] += rng.uniform(4, 25, k)
        if rng.uniform() < 0.3:  # a star: a small cluster of noisy pixels
            c = rng.integers(n)
            star = (x - x[c]) ** 2 + (y - y[c]) ** 2 < 0.06**2
            img[star] += rng.normal(0, 4, star.sum()) + rng.uniform(2, 8)
        signal = np.zeros(n)
        sig_t = np.zeros(n)
        for _ in range(rng.choice([0, 1, 1, 2])):
            intensity = np.exp(rng.uniform(np.log(80), np.log(30000)))
            cx, cy = rng.uniform(-0.8, 0.8, 2)
            width, length = rng.uniform(0.015, 0.06), rng.uniform(0.05, 0.25)
            psi = rng.uniform(0, np.pi)
            dx, dy = x - cx, y - cy
            lon = dx * np.cos(psi) + dy * np.sin(psi)
            lat = -dx * np.sin(psi) + dy * np.cos(psi)
            dens = np.exp(-0.5 * ((lon / length) ** 2 + (lat / width) ** 2)) / (2 * np.pi * width * length)
            q = rng.poisson(intensity * dens * area).astype(float)
            t_sh = rng.uniform(10, 25) + rng.uniform(-25, 25) * lon
            sig_t = np.where(q > signal, t_sh, sig_t)
            signal += q
        img += signal * rng.normal(1, 0.1, n).clip(0.5)
        has = signal > 0
        t[has] = sig_t[has] + rng.normal(0, 1, has.sum()) / np.sqrt(1 + signal[has] / 5)
        images[e] = img
        times[e] = t
    if n_events > 0:
        images[0] = 0.0  # an empty event
    if n_events > 1:
        images[1] = 0.0
        images[1, 1000] = 50.0  # a single bright pixel
    assert np.abs(images).max() * IMAGE_SCALE < 32000 and times.max() * TIME_SCALE < 32000
    qi = np.round(images * IMAGE_SCALE).astype(np.int16)
    qt = np.round(times * TIME_SCALE).astype(np.int16)
    qt[qi < 1.5 * IMAGE_SCALE] = 0  # below 1.5 p.e. the time never matters (see module docstring)
    return qi, qt


TIE_VALUES = np.array([7.1, 4.1, 10.0, 5.0, 6.0, 3.0, 8.0, 20.0, 2.0, 16.0], np.float32)
TIE_TIMES = np.array([0.0, 1.3, 2.3, 2.9, 5.0, 1.5, 2.0, 4.5, 0.5, 10.0], np.float32)


def tie_plants(geom, rng, first_event):
    """Clusters (pixel, ring of 6, ring of 12) with values/times exactly at thresholds."""
    m = geom.neighbor_matrix_sparse
    nbs = [m.indices[m.indptr[i]:m.indptr[i + 1]] for i in range(geom.n_pixels)]
    ev, pix, val, tim = [], [], [], []
    for e in range(first_event, first_event + N_TIE):
        for c in rng.choice(geom.n_pixels, 3, replace=False):
            ring = set(nbs[c])
            outer = set(np.concatenate([nbs[r] for r in ring])) - ring - {c}
            for p in [c, *sorted(ring), *sorted(outer)]:
                ev.append(e)
                pix.append(p)
                val.append(rng.choice(TIE_VALUES[:8] if p == c or p in ring else TIE_VALUES))
                tim.append(rng.choice(TIE_TIMES))
    ev, pix = np.array(ev, np.int32), np.array(pix, np.int32)
    _, first = np.unique(ev.astype(np.int64) * 100000 + pix, return_index=True)
    first = np.sort(first)
    return ev[first], pix[first], np.array(val, np.float32)[first], np.array(tim, np.float32)[first]


# (ImageCleaner class, trait overrides, whether the NSB monitoring pedestal std is given)
CLEANER_RUNS = {
    "tailcuts_default": ("TailcutsImageCleaner", {}, False),
    "tailcuts_a": ("TailcutsImageCleaner", dict(picture_threshold_pe=7.1, boundary_threshold_pe=4.1,
                                                min_picture_neighbors=1, keep_isolated_pixels=False), False),
    "tailcuts_b": ("TailcutsImageCleaner", dict(picture_threshold_pe=8.0, boundary_threshold_pe=4.1,
                                                min_picture_neighbors=3, keep_isolated_pixels=True), False),
    "tailcuts_c": ("TailcutsImageCleaner", dict(picture_threshold_pe=6.0, boundary_threshold_pe=3.0,
                                                min_picture_neighbors=0), False),
    "mars_default": ("MARSImageCleaner", {}, False),
    "mars_a": ("MARSImageCleaner", dict(picture_threshold_pe=7.1, boundary_threshold_pe=4.1,
                                        min_picture_neighbors=1, keep_isolated_pixels=True), False),
    "fact_default": ("FACTImageCleaner", {}, False),
    "fact_a": ("FACTImageCleaner", dict(picture_threshold_pe=6.0, boundary_threshold_pe=3.0,
                                        min_picture_neighbors=2, time_limit_ns=1.3), False),
    "fact_b": ("FACTImageCleaner", dict(picture_threshold_pe=7.1, boundary_threshold_pe=4.1,
                                        min_picture_neighbors=0, time_limit_ns=5.0), False),
    "fact_c": ("FACTImageCleaner", dict(picture_threshold_pe=4.1, boundary_threshold_pe=2.0,
                                        min_picture_neighbors=3, time_limit_ns=2.3), False),
    "timeconstrained_default": ("TimeConstrainedImageCleaner", {}, False),
    "timeconstrained_a": ("TimeConstrainedImageCleaner", dict(
        picture_threshold_pe=7.1, boundary_threshold_pe=4.1, min_picture_neighbors=1,
        time_limit_core_ns=2.9, time_limit_boundary_ns=1.3), False),
    "timeconstrained_b": ("TimeConstrainedImageCleaner", dict(
        picture_threshold_pe=6.0, boundary_threshold_pe=3.0, min_picture_neighbors=0,
        time_limit_core_ns=4.5, time_limit_boundary_ns=2.3), False),
    "nsb_default": ("NSBImageCleaner", {}, False),
    "nsb_a": ("NSBImageCleaner", dict(
        picture_threshold_pe=7.1, boundary_threshold_pe=4.1, min_picture_neighbors=1, time_limit=2.3,
        time_num_neighbors=2, bright_cleaning_n_pixels=5, bright_cleaning_fraction=0.1,
        bright_cleaning_threshold=50.0, largest_island_only=True, pedestal_factor=2.5), True),
    "nsb_b": ("NSBImageCleaner", dict(
        picture_threshold_pe=8.0, boundary_threshold_pe=4.0, min_picture_neighbors=2, keep_isolated_pixels=True,
        time_limit=None, bright_cleaning_threshold=None), False),
    "nsb_c": ("NSBImageCleaner", dict(
        picture_threshold_pe=6.0, boundary_threshold_pe=3.0, time_limit=5.0, time_num_neighbors=1,
        bright_cleaning_n_pixels=1, bright_cleaning_fraction=0.5, bright_cleaning_threshold=30.0), True),
}


def trait_defaults(subarray):
    """{class: {trait: [value for telescope 1, Python type name]}} of the default instances."""
    out = {}
    for name in ["TailcutsImageCleaner", "MARSImageCleaner", "FACTImageCleaner",
                 "TimeConstrainedImageCleaner", "NSBImageCleaner"]:
        cleaner = getattr(cleaning, name)(subarray=subarray)
        traits = cleaner.class_traits(config=True)
        out[name] = {}
        for k in sorted(traits):
            v = getattr(cleaner, k).tel[1]
            out[name][k] = [v, type(v).__name__]
    return out


def main():
    rng = np.random.default_rng(20240611)
    geom, indptr, indices = load_geometry()
    subarray = make_subarray(geom)
    n_ev = N_REALISTIC + N_TIE
    qi, qt = realistic_events(geom, rng, n_ev)
    # tie events: low noise background, planted clusters
    qi[N_REALISTIC:] = np.round(rng.normal(0, 0.8, (N_TIE, geom.n_pixels)) * IMAGE_SCALE)
    qt[N_REALISTIC:] = 0
    plant_ev, plant_pix, plant_val, plant_time = tie_plants(geom, rng, N_REALISTIC)
    image = (qi / np.float32(IMAGE_SCALE)).astype(np.float32)
    peak_time = (qt / np.float32(TIME_SCALE)).astype(np.float32)
    image[plant_ev, plant_pix] = plant_val
    peak_time[plant_ev, plant_pix] = plant_time
    # a per-pixel pedestal std (float32, as monitoring data) for NSBImageCleaner
    ped_std = rng.uniform(1.0, 2.5, geom.n_pixels)
    ped_std[rng.choice(geom.n_pixels, 40, replace=False)] = rng.uniform(3, 8, 40)
    ped_std = (np.round(ped_std * 16) / 16).astype(np.float32)
    ped_std[:6] = [2.84, 3.64, 2.96, 1.64, 4.0, 3.2]  # x 2.5 lands on / near the thresholds

    masks = {}
    for key, (cls_name, traits, with_ped) in CLEANER_RUNS.items():
        cleaner = getattr(cleaning, cls_name)(subarray=subarray, **traits)
        mon = None
        if with_ped:
            mon = CameraMonitoringContainer()
            mon.pixel_statistics.pedestal_image.std = ped_std
        masks[key] = np.array([cleaner(1, image[e], peak_time[e], monitoring=mon) for e in range(n_ev)])

    labels, n_islands, largest = {}, {}, {}
    for key in ["tailcuts_default", "tailcuts_c", "fact_a"]:
        res = [morphology.number_of_islands(geom, m) for m in masks[key]]
        n_islands[key] = np.array([r[0] for r in res], np.int32)
        labels[key] = np.array([r[1] for r in res], np.int16)
        largest[key] = np.array([morphology.largest_island(lab) for lab in labels[key]])
    dil1 = np.array([cleaning.dilate(geom, m) for m in masks["tailcuts_c"]])
    dil2 = np.array([cleaning.dilate(geom, m) for m in dil1])
    dil3 = np.array([cleaning.dilate(geom, cleaning.dilate(geom, cleaning.dilate(geom, m)))
                     for m in masks["tailcuts_a"]])
    # dvp's clean(..., largest_island_only=True, n_dilations=2) composition
    lid2 = np.array([cleaning.dilate(geom, cleaning.dilate(geom, m)) for m in largest["tailcuts_c"]])
    funcs = {
        "bright_a": np.array([cleaning.bright_cleaning(im, 100.0, 0.2, n_pixels=3) for im in image]),
        "bright_b": np.array([cleaning.bright_cleaning(im, 10.0, 0.5, n_pixels=10) for im in image]),
        "time_delta": np.array([cleaning.apply_time_delta_cleaning(geom, m, t, 2, 1.3)
                                for m, t in zip(masks["tailcuts_c"], peak_time)]),
        "time_average": np.array([cleaning.apply_time_average_cleaning(geom, m, im, t, 6.0, 2.9)
                                  for m, im, t in zip(masks["tailcuts_c"], image, peak_time)]),
    }
    mask_keys = sorted(masks)
    arrays = dict(
        image_q=qi, time_q=qt, plant_ev=plant_ev, plant_pix=plant_pix, plant_val=plant_val, plant_time=plant_time,
        image_scale=IMAGE_SCALE, time_scale=TIME_SCALE, pedestal_std=ped_std,
        runs=json.dumps({k: [c, t, w] for k, (c, t, w) in CLEANER_RUNS.items()}),
        trait_defaults=json.dumps(trait_defaults(subarray)),
        masks=np.packbits(np.stack([masks[k] for k in mask_keys]), axis=-1), mask_keys=np.array(mask_keys),
        dilate1=np.packbits(dil1, axis=-1), dilate2=np.packbits(dil2, axis=-1), dilate3=np.packbits(dil3, axis=-1),
        largest_dilate2=np.packbits(lid2, axis=-1),
    )
    for key in labels:
        arrays[f"labels_{key}"] = labels[key]
        arrays[f"n_islands_{key}"] = n_islands[key]
        arrays[f"largest_{key}"] = np.packbits(largest[key], axis=-1)
    for key, val in funcs.items():
        arrays[f"func_{key}"] = np.packbits(val, axis=-1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KiB)")
    for k in mask_keys:
        print(f"  {k:26s} pixels/event {masks[k].sum(axis=1).mean():7.1f}  empty events {(~masks[k].any(1)).sum()}")
    print("  islands", {k: np.bincount(v).tolist() for k, v in n_islands.items()})
    print("  max pixel", np.sort(image.max(axis=1))[-10:])


if __name__ == "__main__":
    main()
