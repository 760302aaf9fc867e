"""Image cleaning and island kernels (dvp.kernels.clean, dvp.kernels.islands).

Three kinds of tests: hand-worked answers on tiny cameras (and ctapipe's own truth tables,
ported), the numba bodies against their pure-Python ``py_func``, and golden masks made by
ctapipe 0.28 on the real LSTCam (tests/reference/make_clean_reference.py).
"""
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dvp.kernels import clean as C
from dvp.kernels import islands as I
from dvp.kernels.clean import (
    CLEANERS,
    apply_time_average_cleaning,
    apply_time_delta_cleaning,
    bright_cleaning,
    clean,
    dilate,
    fact_image_cleaning,
    mars_cleaning_1st_pass,
    nsb_image_cleaning,
    tailcuts_clean,
    time_constrained_clean,
)
from dvp.kernels.islands import label_islands, largest_island_mask

REF = Path(__file__).parent / "reference"
F32 = np.float32


def csr(neighbors):
    indptr = np.zeros(len(neighbors) + 1, np.int32)
    indptr[1:] = np.cumsum([len(n) for n in neighbors])
    indices = np.array([i for n in neighbors for i in n], np.int32)
    return indptr, indices


# tiny cameras: a line of 3 (ctapipe's make_rectangular(3, 1)), a hexagon of 7 (centre 0,
# ring 1..6 in order around it) and a 3x3 square grid (pixel = 3 * row + col)
LINE3 = csr([[1], [0, 2], [1]])
HEX7 = csr([[1, 2, 3, 4, 5, 6]] + [[0, (i - 2) % 6 + 1, i % 6 + 1] for i in range(1, 7)])
SQ9 = csr([[q for q in (p - 3, p + 3, p - 1 if p % 3 else -1, p + 1 if p % 3 != 2 else -1) if 0 <= q < 9]
           for p in range(9)])


@pytest.fixture(scope="module")
def lst():
    """LSTCam pixel neighbours (CSR), as stored from ctapipe's geometry."""
    t = pq.read_table(REF / "instrument" / "calib_events.camera_LSTCam.parquet")
    nbs = t["neighbors"].to_pylist()
    indptr, indices = csr(nbs)
    return indptr, indices, nbs


def mask_of(n, pixels, n_events=None):
    m = np.zeros(n, bool)
    m[list(pixels)] = True
    return m[None] if n_events is None else np.repeat(m[None], n_events, 0)


# ---------------------------------------------------------------------------------------
# hand-worked and ported truth tables
# ---------------------------------------------------------------------------------------

P, B = 15, 7  # ctapipe's test values, thresholds 15 / 5


@pytest.mark.parametrize("kwargs, table", [
    (dict(keep_isolated_pixels=False), {(P, P, 0): [1, 1, 0], (P, 0, P): [0, 0, 0], (P, B, P): [1, 1, 1],
                                        (P, B, 0): [1, 1, 0], (B, B, 0): [0, 0, 0], (0, P, 0): [0, 0, 0]}),
    (dict(min_number_picture_neighbors=1), {(P, P, 0): [1, 1, 0], (P, 0, P): [0, 0, 0], (P, B, P): [0, 0, 0],
                                            (P, B, 0): [0, 0, 0], (B, B, 0): [0, 0, 0], (0, P, 0): [0, 0, 0],
                                            (P, P, P): [1, 1, 1]}),
    (dict(min_number_picture_neighbors=2), {(P, P, 0): [0, 0, 0], (P, 0, P): [0, 0, 0], (P, B, P): [0, 0, 0],
                                            (P, B, 0): [0, 0, 0], (B, B, 0): [0, 0, 0], (P, P, P): [1, 1, 1]}),
    (dict(keep_isolated_pixels=True), {(P, P, 0): [1, 1, 0], (P, 0, P): [1, 0, 1], (P, B, P): [1, 1, 1],
                                       (P, B, 0): [1, 1, 0], (0, P, 0): [0, 1, 0], (B, B, 0): [0, 0, 0]}),
])
def test_tailcuts_truth_tables(kwargs, table):
    images = np.array(list(table), F32)  # all cases as one batch
    mask = tailcuts_clean(images, *LINE3, picture_thresh=15, boundary_thresh=5, **kwargs)
    np.testing.assert_array_equal(mask, np.array(list(table.values()), bool))


def test_mars_truth_table():
    p, b1, b2 = 10, 7, 7
    table = {(p, p, p): [1, 1, 1], (p, p, 0): [1, 1, 0], (p, 0, p): [0, 0, 0], (0, p, 0): [0, 0, 0],
             (p, b1, p): [1, 1, 1], (p, b1, 0): [1, 1, 0], (b1, b1, 0): [0, 0, 0], (b1, b1, b1): [0, 0, 0],
             (0, b1, 0): [0, 0, 0], (b1, b2, 0): [0, 0, 0], (p, b1, b2): [1, 1, 1], (p, b2, b1): [1, 1, 1],
             (p, b1, b2 - 1): [1, 1, 0]}
    mask = mars_cleaning_1st_pass(np.array(list(table), F32), *LINE3, picture_thresh=10, boundary_thresh=7)
    np.testing.assert_array_equal(mask, np.array(list(table.values()), bool))


def test_mars_reaches_second_row_where_tailcuts_stops():
    # line 0-1-2: picture at 0, boundaries at 1 and 2; tailcuts keeps 0,1, MARS adds 2
    image = np.array([[10, 7, 7]], F32)
    assert tailcuts_clean(image, *LINE3, 10, 7).tolist() == [[True, True, False]]
    assert mars_cleaning_1st_pass(image, *LINE3, 10, 7).tolist() == [[True, True, True]]


def test_tailcuts_hexagon_min_neighbors():
    # centre 12 and ring pixel 4 (11) are above picture 10 and neighbours of each other;
    # ring 1 and 6 (6 p.e.) are boundary pixels next to the centre, ring 2 (3 p.e.) is not
    image = np.array([[12, 6, 3, 0, 11, 0, 6]], F32)
    assert np.flatnonzero(tailcuts_clean(image, *HEX7, 10, 5, False, 1)).tolist() == [0, 1, 4, 6]
    # each picture pixel has only one picture neighbour: nothing is in the picture
    assert not tailcuts_clean(image, *HEX7, 10, 5, False, 2).any()
    # keep_isolated_pixels ignores the neighbour requirement
    assert np.flatnonzero(tailcuts_clean(image, *HEX7, 10, 5, True, 2)).tolist() == [0, 1, 4, 6]


def test_tailcuts_simple_lstcam(lst):
    # ctapipe test_tailcuts_clean_simple
    indptr, indices, nbs = lst
    image = np.zeros((1, 1855), F32)
    some = nbs[40][:3]
    image[0, 40] = 5.0
    image[0, some] = 3.0
    image[0, 10] = 3.0
    mask = tailcuts_clean(image, indptr, indices, picture_thresh=4.5, boundary_thresh=2.5)
    assert set(np.flatnonzero(mask[0])) == set(some) | {40}


def test_dilate_rings_lstcam(lst):
    # ctapipe test_dilate: 1, 1 + 6, 1 + 6 + 12, 1 + 6 + 12 + 18 pixels
    indptr, indices, _ = lst
    mask = mask_of(1855, [100])
    assert [dilate(mask, indptr, indices, n).sum() for n in range(4)] == [1, 7, 19, 37]


def test_dilate_square_and_directed_graph():
    centre = mask_of(9, [4])
    assert np.flatnonzero(dilate(centre, *SQ9)).tolist() == [1, 3, 4, 5, 7]
    assert dilate(centre, *SQ9, n=2).all()
    assert np.flatnonzero(dilate(mask_of(9, [0]), *SQ9)).tolist() == [0, 1, 3]
    assert dilate(centre, *SQ9, n=0).tolist() == centre.tolist()
    # not symmetric: rows 0 and 2 list pixel 1, row 1 lists nobody. ctapipe adds pixel i
    # if any pixel of row i is in the mask
    directed = csr([[1], [], [1]])
    assert dilate(mask_of(3, [1]), *directed).tolist() == [[True, True, True]]
    assert dilate(mask_of(3, [0]), *directed).tolist() == [[True, False, False]]


def test_label_islands_by_hand():
    masks = np.array([[0, 1, 1, 0, 1, 1, 0],   # two arcs of the ring
                      [1, 1, 1, 0, 1, 1, 0],   # joined by the centre
                      [0, 0, 0, 0, 0, 0, 0],
                      [0, 0, 1, 0, 1, 1, 0]], bool)
    labels, n = label_islands(masks, *HEX7)
    assert n.tolist() == [2, 1, 0, 2]
    assert labels.tolist() == [[0, 1, 1, 0, 2, 2, 0], [1, 1, 1, 0, 1, 1, 0], [0] * 7, [0, 0, 1, 0, 2, 2, 0]]
    assert labels.dtype == np.int32 and n.dtype == np.int32
    largest = largest_island_mask(labels, n)
    # a tie goes to the lower label (np.argmax of the pixel counts)
    assert largest.tolist() == [[0, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 1, 1, 0], [0] * 7, [0, 0, 0, 0, 1, 1, 0]]
    # islands are numbered by their lowest pixel
    labels, n = label_islands(mask_of(9, [8, 0, 2, 6, 5]), *SQ9)
    assert n.tolist() == [3] and labels[0].tolist() == [1, 0, 2, 0, 0, 2, 3, 0, 2]


def test_time_delta_lstcam(lst):
    # ctapipe test_apply_time_delta_cleaning
    indptr, indices, nbs = lst
    t = np.zeros((1, 1855), F32)
    t[0, nbs[40]] = 32.0
    t[0, 40] = 30.0
    mask = t > 0
    assert (apply_time_delta_cleaning(mask, t, indptr, indices, 1, 5) == mask).all()
    noisy = nbs[40][0]
    t[0, noisy] += 10
    expected = mask.copy()
    expected[0, noisy] = False
    assert (apply_time_delta_cleaning(mask, t, indptr, indices, 1, 5) == expected).all()
    expected = mask.copy()
    expected[0, nbs[40]] = False
    assert (apply_time_delta_cleaning(mask, t, indptr, indices, 4, 5) == expected).all()
    mask[0, 156] = False
    t[0, noisy] -= 10
    expected = mask.copy()
    expected[0, [41, 157]] = False
    assert (apply_time_delta_cleaning(mask, t, indptr, indices, 3, 5) == expected).all()


def test_time_average_by_hand():
    # one island of 3: weights 100, 100, 400 -> mean time 1600 / 600 = 2.67 ns; pixels
    # 0 and 1 (below 2 * 8 p.e.) are 2.67 ns off (limit 2), pixel 2 is bright (limit 4)
    mask = np.ones((1, 3), bool)
    image = np.array([[10, 10, 20]], F32)
    t = np.array([[0, 0, 4]], F32)
    assert apply_time_average_cleaning(mask, image, t, *LINE3, 8.0, 2.0).tolist() == [[False, False, True]]
    # two islands: the brightest (pixel 2 alone) sets the mean time, 4 ns
    mask = np.array([[True, False, True]])
    image = np.array([[10, 0, 20]], F32)
    assert apply_time_average_cleaning(mask, image, t, *LINE3, 8.0, 2.0).tolist() == [[False, False, True]]
    assert apply_time_average_cleaning(mask, image, t, *LINE3, 8.0, 5.0).tolist() == [[True, False, True]]
    assert not apply_time_average_cleaning(~np.ones((1, 3), bool), image, t, *LINE3, 8.0, 5.0).any()
    # equally bright islands: the first (lowest label) sets the mean time (np.argmax)
    image = np.array([[20, 0, 20]], F32)
    assert apply_time_average_cleaning(mask, image, t, *LINE3, 8.0, 2.0).tolist() == [[True, False, False]]


def test_time_average_weights_zero_raises_like_numpy():
    # picture threshold 0 on an empty image: np.average's weights sum to 0 in ctapipe
    with pytest.raises(ZeroDivisionError):
        time_constrained_clean(np.zeros((1, 7), F32), np.zeros((1, 7), F32), *HEX7, picture_thresh=0.0)


def test_time_constrained_lstcam(lst):
    # ctapipe test_time_constrained_clean (5 cases), all as one batch
    indptr, indices, nbs = lst
    core = 100
    ring = nbs[core]
    boundary = np.setdiff1d(np.concatenate([nbs[r] for r in ring]), ring + [core])
    charge = np.zeros((5, 1855), F32)
    t = np.zeros((5, 1855), F32)
    charge[:, core], charge[:, ring], charge[:, boundary] = 15, 10, 6
    t[:, core], t[:, ring], t[:, boundary] = 18, 20, 21
    noisy = ring[0]
    t[3:, noisy] = 25
    charge[4, core], charge[4, ring] = 30, 20
    signal = charge[0] > 0
    noise_boundary = np.setdiff1d(nbs[noisy], np.concatenate([nbs[r] for r in ring[1:]]))
    expected = np.repeat(signal[None], 5, 0)
    expected[[1, 2], :] &= ~np.isin(np.arange(1855), boundary)
    expected[3, noisy] = False
    expected[3:, noise_boundary] = False

    def run(rows, **kw):
        args = dict(picture_thresh=8, boundary_thresh=4, time_limit_core=4.5, time_limit_boundary=1.5,
                    min_number_picture_neighbors=1) | kw
        return time_constrained_clean(charge[rows], t[rows], indptr, indices, **args)

    # 1: all signal; 4: the late core neighbour and its own boundary pixel go; 5: brighter,
    # so the core limit doubles and only that boundary pixel goes
    np.testing.assert_array_equal(run([0, 3, 4]), expected[[0, 3, 4]])
    # 2 and 3: no boundary pixel passes
    np.testing.assert_array_equal(run([1], min_number_picture_neighbors=3)[0], expected[1])
    np.testing.assert_array_equal(run([2], time_limit_boundary=0.5)[0], expected[2])


def test_fact_lstcam(lst):
    # ctapipe test_fact_image_cleaning
    indptr, indices, _ = lst
    values = np.zeros((1, 1855), F32)
    timing = np.zeros((1, 1855), F32)
    signal = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 37, 38, 111, 222]
    values[0, signal] = 5
    timing[0, signal] = 10
    values[0, [1, 2]] = 3
    values[0, 7] = 1
    timing[0, [5, 6, 13, 111]] = 20
    mask = fact_image_cleaning(values, timing, indptr, indices, picture_threshold=4, boundary_threshold=2,
                               min_number_neighbors=2, time_limit=5)
    assert np.flatnonzero(mask[0]).tolist() == [0, 1, 2, 3, 4, 8, 9]


def test_fact_by_hand():
    # 3x3 grid, centre row (3, 4, 5) above picture 4; dilation reaches every pixel, of
    # which 1, 3, 4, 5, 7 are above boundary 2. With min 0 FACT stops there.
    image = np.array([[0, 3, 0, 5, 5, 5, 0, 3, 0]], F32)
    t = np.array([[0, 10, 0, 10, 10, 10, 0, 16, 0]], F32)
    assert np.flatnonzero(fact_image_cleaning(image, t, *SQ9, 4, 2, 0, 5)).tolist() == [1, 3, 4, 5, 7]
    # with min 1: pixel 7 is 6 ns after its only selected neighbour 4 (limit 5) and goes;
    # 1, 3, 5 keep pixel 4 as time neighbour
    assert np.flatnonzero(fact_image_cleaning(image, t, *SQ9, 4, 2, 1, 5)).tolist() == [1, 3, 4, 5]


def test_bright_cleaning_ported():
    # ctapipe test_bright_cleaning
    image = np.zeros((1, 1855), F32)
    image[0, :3] = 100
    image[0, 10:20] = 60
    image[0, 50:65] = 30
    assert bright_cleaning(image, 90, 0.5, n_pixels=3).sum() == 3 + 10
    assert bright_cleaning(image, 110, 0.5, n_pixels=3).all()
    # the mean of no pixels is NaN in ctapipe: every pixel goes
    assert not bright_cleaning(image, 90, 0.5, n_pixels=0).any()
    # more brightest pixels than pixels: all of them; mean 40, cut 20
    small = np.array([[10, 30, 80]], F32)
    assert bright_cleaning(small, 1, 0.5, n_pixels=5).tolist() == [[False, True, True]]
    # n_pixels > 32 takes the sorting path: mean of the 40 brightest (1350 / 40 = 33.75),
    # cut 0.9 * 33.75 = 30.4 keeps the 100s and 60s
    assert bright_cleaning(image, 0, 0.9, n_pixels=40).sum() == 3 + 10
    assert bright_cleaning(image, 34, 0.9, n_pixels=40).all()


def test_nsb_lstcam(lst):
    # ctapipe test_nsb_image_cleaning
    indptr, indices, nbs = lst
    charge = np.zeros((1, 1855), F32)
    t = np.zeros((1, 1855), F32)
    charge[0, nbs[100]] = 29
    charge[0, 100] = 50
    charge[0, nbs[1100]] = 29
    charge[0, 1100] = 50
    args = dict(picture_thresh_min=45, boundary_thresh=20, keep_isolated_pixels=True, time_limit=None,
                bright_cleaning_n_pixels=3, bright_cleaning_fraction=0.9, bright_cleaning_threshold=None,
                largest_island_only=False, pedestal_factor=2, pedestal_std=None)

    def run(**kw):
        return nsb_image_cleaning(charge, t, indptr, indices, **(args | kw)).sum()

    assert run() == 2 * 7
    std = np.ones(1855)
    std[100] = 30
    assert run(pedestal_std=std) == 7
    std[1100] = 30
    assert run(pedestal_std=std) == 0
    t[0, nbs[100]] = 10
    assert run(time_limit=3) == 1 + 6 + 6
    assert run(bright_cleaning_threshold=40) == 2
    charge[0, nbs[1100]] = 0
    assert run(largest_island_only=True) == 7


def test_scalar_thresholds_compare_in_image_dtype():
    # numpy >= 2 compares a float32 image with a Python float in float32, with a
    # float64 array in float64: float32(7.1) passes 7.1 in the first case only
    image = np.array([[F32(7.1)]], F32)
    alone = (np.array([0, 0], np.int32), np.array([], np.int32))
    assert tailcuts_clean(image, *alone, 7.1, 7.1, True)[0, 0] == (image[0] >= 7.1)[0]
    assert tailcuts_clean(image, *alone, 7.1, 7.1, True)[0, 0]
    assert not tailcuts_clean(image, *alone, np.array([7.1]), 7.1, True)[0, 0]
    assert tailcuts_clean(image, *alone, np.array([7.1], F32), 7.1, True)[0, 0]
    # the time limit is rounded to float32 as well: a difference of float32(1.3) fails
    t = np.array([[0, F32(1.3), 0]], F32)
    mask = np.ones((1, 3), bool)
    assert apply_time_delta_cleaning(mask, t, *LINE3, 1, 1.3).tolist() == [[False, False, False]]
    assert apply_time_delta_cleaning(mask, t.astype(np.float64), *LINE3, 1, 1.3).all()


def test_threshold_arrays_per_pixel_and_per_event():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 12, (6, 9)).astype(F32)
    pic = rng.uniform(5, 9, (6, 9))
    bnd = rng.uniform(2, 5, 9)
    batch = tailcuts_clean(image, *SQ9, pic, bnd, False, 1)
    for e in range(6):
        np.testing.assert_array_equal(batch[e], tailcuts_clean(image[e:e + 1], *SQ9, pic[e], bnd, False, 1)[0])
    # a uniform array is the scalar
    np.testing.assert_array_equal(tailcuts_clean(image, *SQ9, np.full(9, 6.5), 3.25),
                                  tailcuts_clean(image, *SQ9, 6.5, 3.25))


def test_empty_images_and_batches():
    zeros = np.zeros((2, 7), F32)
    for name in CLEANERS:
        assert not clean(name, zeros, zeros, *HEX7).any(), name
    labels, n = label_islands(np.zeros((2, 7), bool), *HEX7)
    assert n.tolist() == [0, 0] and not labels.any()
    assert not largest_island_mask(labels, n).any()
    empty = np.zeros((0, 7), F32)
    assert clean("TimeConstrainedImageCleaner", empty, empty, *HEX7).shape == (0, 7)
    assert label_islands(np.zeros((0, 7), bool), *HEX7)[1].shape == (0,)


def test_float64_images_match_float32_when_exact():
    rng = np.random.default_rng(5)
    image = np.round(rng.uniform(0, 12, (20, 9)) * 4).astype(F32) / 4
    # (one cleaner: every float64 specialisation costs compile time, and they share code)
    np.testing.assert_array_equal(tailcuts_clean(image, *SQ9, 6.0, 3.0, False, 1),
                                  tailcuts_clean(image.astype(np.float64), *SQ9, 6.0, 3.0, False, 1))


def test_clean_options_order():
    # largest island first, then dilation: two islands on the 3x3 grid
    image = np.array([[10, 10, 0, 0, 0, 0, 0, 0, 10]], F32)
    mask = clean("TailcutsImageCleaner", image, None, *SQ9, min_picture_neighbors=0, boundary_threshold_pe=5.0,
                 keep_isolated_pixels=True)
    assert np.flatnonzero(mask).tolist() == [0, 1, 8]
    mask = clean("TailcutsImageCleaner", image, None, *SQ9, min_picture_neighbors=0, keep_isolated_pixels=True,
                 largest_island_only=True, n_dilations=1)
    assert np.flatnonzero(mask).tolist() == [0, 1, 2, 3, 4]


def test_clean_rejects_bad_names_params_and_arrays():
    img = np.zeros((1, 7), F32)
    with pytest.raises(ValueError, match="NoSuchCleaner"):
        clean("NoSuchCleaner", img, img, *HEX7)
    with pytest.raises(ValueError, match="time_limit_ns"):
        clean("TailcutsImageCleaner", img, img, *HEX7, time_limit_ns=3.0)
    for key, value in [("picture_threshold_pe", "10"), ("picture_threshold_pe", None),
                       ("min_picture_neighbors", 2.0), ("keep_isolated_pixels", 1), ("n_dilations", -1),
                       ("picture_threshold_pe", True)]:
        with pytest.raises(ValueError, match=key):
            clean("TailcutsImageCleaner", img, img, *HEX7, **{key: value})
    clean("NSBImageCleaner", img, img, *HEX7, time_limit=None, bright_cleaning_threshold=None)
    with pytest.raises(ValueError, match="peak_time"):
        clean("FACTImageCleaner", img, None, *HEX7)
    with pytest.raises(ValueError, match="peak_time"):
        clean("FACTImageCleaner", img, np.zeros((1, 6), F32), *HEX7)
    with pytest.raises(ValueError, match="image"):
        tailcuts_clean(img[0], *HEX7)
    with pytest.raises(ValueError, match="image"):
        tailcuts_clean(img.astype(np.int32), *HEX7)
    with pytest.raises(ValueError, match="neighbor_indptr"):
        tailcuts_clean(img, HEX7[0][:-1], HEX7[1])
    with pytest.raises(ValueError, match="neighbor_indices"):
        tailcuts_clean(img, HEX7[0], HEX7[1] + 5)
    with pytest.raises(ValueError, match="picture_thresh"):
        tailcuts_clean(img, *HEX7, picture_thresh=np.ones(6))
    with pytest.raises(ValueError, match="mask"):
        label_islands(img, *HEX7)
    with pytest.raises(ValueError, match="labels"):
        largest_island_mask(np.array([[0, 3]]), np.array([2]))


# ---------------------------------------------------------------------------------------
# numba bodies against pure Python
# ---------------------------------------------------------------------------------------


def _all_cleanings(image, t, indptr, indices, ped):
    out = {}
    for name in CLEANERS:
        out[name] = clean(name, image, t, indptr, indices, picture_threshold_pe=7.0, boundary_threshold_pe=3.5,
                          min_picture_neighbors=1, pedestal_std=ped if name == "NSBImageCleaner" else None)
    out["nsb_largest"] = clean("NSBImageCleaner", image, t, indptr, indices, largest_island_only=True,
                               bright_cleaning_threshold=20.0, bright_cleaning_fraction=0.2, n_dilations=2)
    out["mars_isolated"] = mars_cleaning_1st_pass(image, indptr, indices, 7.0, 3.5, True, 0)
    out["fact_0"] = fact_image_cleaning(image, t, indptr, indices, 6.0, 3.0, 0, 2.0)
    mask = out["TailcutsImageCleaner"]
    out["labels"], out["n_islands"] = label_islands(mask, indptr, indices)
    out["largest"] = largest_island_mask(out["labels"], out["n_islands"])
    out["dilate3"] = dilate(mask, indptr, indices, 3)
    out["dilate_directed"] = dilate(image[:, :3] > 1, *csr([[1], [], [1]]), 2)
    out["bright"] = bright_cleaning(image, 10.0, 0.3, 4)
    out["time_average"] = apply_time_average_cleaning(mask, image, t, indptr, indices, 7.0, 3.0)
    return out


def test_njit_bodies_match_py_func(lst, monkeypatch):
    indptr, indices, _ = lst
    ref = np.load(REF / "kernels" / "clean.npz")
    image, t = golden_inputs(ref)
    pick = [13, 16, 28, 46]  # showers (two bright) and a planted-ties event
    rng = np.random.default_rng(11)
    image = np.concatenate([image[pick], rng.normal(0, 3, (2, 1855)).astype(F32)])
    t = np.concatenate([t[pick], rng.uniform(0, 30, (2, 1855)).astype(F32)])
    ped = ref["pedestal_std"]
    jitted = _all_cleanings(image, t, indptr, indices, ped)
    # every njit function of both modules replaced by its Python original, so that the
    # bodies and all helpers they call run as plain Python
    n_patched = 0
    for mod in (C, I):
        for name, obj in list(vars(mod).items()):
            if hasattr(obj, "py_func"):
                monkeypatch.setattr(mod, name, obj.py_func)
                n_patched += 1
    assert n_patched >= 30 and not hasattr(C._tailcuts_cand, "py_func") and not hasattr(I._label_cand, "py_func")
    python = _all_cleanings(image, t, indptr, indices, ped)
    assert jitted["TailcutsImageCleaner"].sum() > 100 and jitted["n_islands"].max() > 1
    assert 0 < jitted["dilate_directed"].sum() < jitted["dilate_directed"].size
    for key in jitted:
        np.testing.assert_array_equal(jitted[key], python[key], err_msg=key)


def test_pairwise_sum_is_numpys():
    rng = np.random.default_rng(2)
    for n in [1, 2, 7, 8, 9, 100, 128, 129, 200, 1000, 1855, 5000]:
        a = (rng.normal(size=n) * 10 ** rng.uniform(-3, 3, n)).astype(F32)
        assert C._pairwise_sum(a, 0, n) == a.sum()
        # (float64 through py_func only, to spare a compilation)
        for arr in (a, a.astype(np.float64)):
            assert C._pairwise_sum.py_func(arr, 0, n) == arr.sum()
        w = a * a
        assert C._pairwise_sum(a * w, 0, n) / C._pairwise_sum(w, 0, n) == np.average(a, weights=w)


# ---------------------------------------------------------------------------------------
# golden ctapipe 0.28 references (LSTCam)
# ---------------------------------------------------------------------------------------


def golden_inputs(ref):
    image = (ref["image_q"] / F32(ref["image_scale"])).astype(F32)
    t = (ref["time_q"] / F32(ref["time_scale"])).astype(F32)
    image[ref["plant_ev"], ref["plant_pix"]] = ref["plant_val"]
    t[ref["plant_ev"], ref["plant_pix"]] = ref["plant_time"]
    return image, t


@pytest.fixture(scope="module")
def golden(lst):
    ref = np.load(REF / "kernels" / "clean.npz")
    image, t = golden_inputs(ref)
    unpack = lambda a: np.unpackbits(a, axis=-1, count=1855).astype(bool)  # noqa: E731
    masks = dict(zip(ref["mask_keys"].tolist(), unpack(ref["masks"])))
    return dict(ref=ref, image=image, time=t, masks=masks, unpack=unpack, runs=json.loads(str(ref["runs"])),
                indptr=lst[0], indices=lst[1])


def test_golden_has_content(golden):
    assert golden["image"].shape == (50, 1855)
    assert len(golden["masks"]) == len(golden["runs"]) == 17
    for key, mask in golden["masks"].items():
        assert 3 <= mask.any(axis=1).sum() < 50, key  # neither empty nor trivial


@pytest.mark.parametrize("key", sorted(json.loads(str(np.load(REF / "kernels" / "clean.npz")["runs"]))))
def test_golden_cleaners(golden, key):
    cls, traits, with_ped = golden["runs"][key]
    mask = clean(cls, golden["image"], golden["time"], golden["indptr"], golden["indices"],
                 pedestal_std=golden["ref"]["pedestal_std"] if with_ped else None, **traits)
    expected = golden["masks"][key]
    bad = np.flatnonzero((mask != expected).any(axis=1))
    assert bad.size == 0, f"{key}: events {bad.tolist()} differ"


def test_golden_trait_defaults():
    ref = np.load(REF / "kernels" / "clean.npz")
    for cls, traits in json.loads(str(ref["trait_defaults"])).items():
        dvp = CLEANERS[cls]
        for name, (value, typ) in traits.items():
            assert dvp[name] == value and type(dvp[name]).__name__ == typ, (cls, name)
        assert set(dvp) - set(traits) == {"largest_island_only", "n_dilations"} - set(traits)


@pytest.mark.parametrize("key", ["tailcuts_default", "tailcuts_c", "fact_a"])
def test_golden_islands(golden, key):
    ref = golden["ref"]
    labels, n = label_islands(golden["masks"][key], golden["indptr"], golden["indices"])
    np.testing.assert_array_equal(n, ref[f"n_islands_{key}"])
    np.testing.assert_array_equal(labels, ref[f"labels_{key}"])
    np.testing.assert_array_equal(largest_island_mask(labels, n), golden["unpack"](ref[f"largest_{key}"]))


def test_golden_dilate_and_options(golden):
    ref, unpack, ip, ix = golden["ref"], golden["unpack"], golden["indptr"], golden["indices"]
    m = golden["masks"]
    np.testing.assert_array_equal(dilate(m["tailcuts_c"], ip, ix), unpack(ref["dilate1"]))
    np.testing.assert_array_equal(dilate(m["tailcuts_c"], ip, ix, 2), unpack(ref["dilate2"]))
    np.testing.assert_array_equal(dilate(m["tailcuts_a"], ip, ix, 3), unpack(ref["dilate3"]))
    cls, traits, _ = golden["runs"]["tailcuts_c"]
    mask = clean(cls, golden["image"], None, ip, ix, largest_island_only=True, n_dilations=2, **traits)
    np.testing.assert_array_equal(mask, unpack(ref["largest_dilate2"]))


def test_golden_functions(golden):
    ref, unpack, ip, ix = golden["ref"], golden["unpack"], golden["indptr"], golden["indices"]
    image, t, m = golden["image"], golden["time"], golden["masks"]["tailcuts_c"]
    np.testing.assert_array_equal(bright_cleaning(image, 100.0, 0.2, 3), unpack(ref["func_bright_a"]))
    np.testing.assert_array_equal(bright_cleaning(image, 10.0, 0.5, 10), unpack(ref["func_bright_b"]))
    np.testing.assert_array_equal(apply_time_delta_cleaning(m, t, ip, ix, 2, 1.3), unpack(ref["func_time_delta"]))
    np.testing.assert_array_equal(apply_time_average_cleaning(m, image, t, ip, ix, 6.0, 2.9),
                                  unpack(ref["func_time_average"]))
