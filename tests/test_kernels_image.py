import numpy as np
import pytest

from dvp.kernels.image import _correct_and_shift, _image_summary, correct_and_shift, image_summary


def test_correct_and_shift_hand_worked():
    image = np.array([[10.0, 20.0], [1.0, 2.0]], np.float32)
    peak = np.array([[5.0, 6.0], [7.0, 8.0]], np.float32)
    gain = np.array([[0, 1], [1, 0]], np.int8)
    corr = np.array([[1.5, 2.0], [0.5, 4.0]])
    correct_and_shift(image, peak, gain, np.array([1, 0]), corr, np.array([[1, 2], [3, 4]], np.float32))
    np.testing.assert_array_equal(image, [[5.0, 80.0], [2.0, 3.0]])
    np.testing.assert_array_equal(peak, [[4.0, 4.0], [4.0, 4.0]])


def test_correction_rounds_like_the_extractors():
    rng = np.random.default_rng(1)
    image = rng.normal(5, 3, (20, 50)).astype(np.float32)
    gain = rng.integers(0, 2, (20, 50)).astype(np.int8)
    corr = rng.uniform(0.9, 1.3, (3, 2))
    rows = rng.integers(0, 3, 20)
    expected = (image.astype(np.float64) * corr[rows[:, None], gain]).astype(np.float32)
    out, _ = correct_and_shift(image.copy(), np.zeros_like(image), gain, rows, corr)
    np.testing.assert_array_equal(out, expected)
    a, b = image.copy(), np.zeros_like(image)
    _correct_and_shift.py_func(a, b, gain, rows, corr, np.zeros((1, 1), np.float32), True, False)
    np.testing.assert_array_equal(a, expected)


def test_correct_and_shift_checks_inputs():
    img = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError):
        correct_and_shift(img, np.zeros((2, 3)), np.zeros((2, 3), np.int8))
    with pytest.raises(ValueError, match="out of range"):
        correct_and_shift(img, img.copy(), np.full((2, 3), 2, np.int8), np.zeros(2, int), np.ones((1, 2)))


def test_image_summary_hand_worked_and_py_func():
    image = np.array([[3.0, 0.0, -1.0, 7.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    mask = np.array([[True, True, True, False], [False, False, False, False]])
    s = image_summary(image, mask)
    np.testing.assert_array_equal(s["size"], [2.0, 0.0])
    np.testing.assert_array_equal(s["n_pixels"], [3, 0])
    np.testing.assert_array_equal(s["n_nonzero"], [2, 0])
    assert s["max_pe"][0] == 3.0 and np.isnan(s["max_pe"][1])
    out = [np.empty(2), np.empty(2, np.int64), np.empty(2, np.int64), np.empty(2)]
    _image_summary.py_func(image, mask, *out)
    np.testing.assert_array_equal(out[0], s["size"])
    np.testing.assert_array_equal(out[2], s["n_nonzero"])
