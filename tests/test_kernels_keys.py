"""Matching rows by sorted (obs_id, event_id[, tel_id]) keys: hand-worked, jit vs .py_func, unsorted input."""
import numpy as np
import pytest

from dvp.kernels.keys import _match_sorted, match_sorted_keys


def test_hand_worked_match():
    a = (np.array([1, 1, 1, 2, 3]), np.array([5, 5, 7, 1, 0]), np.array([1, 4, 2, 2, 1], np.int16))
    b = (np.array([1, 1, 1, 2, 2], np.int32), np.array([5, 6, 7, 1, 1]), np.array([4, 1, 2, 1, 2], np.int16))
    np.testing.assert_array_equal(match_sorted_keys(a, b), [-1, 0, 2, 4, -1])
    # two key columns: array events
    events = (np.array([1, 1, 2, 2]), np.array([5, 7, 1, 3]))
    np.testing.assert_array_equal(match_sorted_keys((np.array([1, 1, 1, 2, 3]), np.array([5, 6, 7, 1, 0])), events),
                                  [0, -1, 1, 2, -1])
    assert len(match_sorted_keys((np.zeros(0, int), np.zeros(0, int)), events)) == 0


def test_unsorted_or_duplicate_keys_are_reported():
    a = (np.array([1, 1]), np.array([5, 5]))
    np.testing.assert_array_equal(match_sorted_keys(a, (np.array([1, 2]), np.array([5, 1]))), [0, 0])  # a: repeats
    assert match_sorted_keys((np.array([1, 2]), np.array([5, 5])), a) is None             # b: a key twice
    assert match_sorted_keys((np.array([1]), np.array([5])), (np.array([2, 1]), np.array([0, 0]))) is None
    assert match_sorted_keys((np.array([2, 1]), np.array([0, 0])), (np.array([1]), np.array([5]))) is None
    with pytest.raises(ValueError, match="2 or 3"):
        match_sorted_keys((np.array([1]),), (np.array([1]),))
    with pytest.raises(ValueError, match="integer"):
        match_sorted_keys((np.array([1.0]), np.array([1])), (np.array([1]), np.array([1])))


def test_jit_matches_python_and_a_join():
    rng = np.random.default_rng(5)
    keys = np.unique(rng.integers(0, 40, (400, 3)), axis=0)        # sorted, unique rows
    a = np.repeat(keys, rng.integers(0, 3, len(keys)), axis=0)     # some twice, some not at all
    b = keys[rng.random(len(keys)) < 0.6]
    cols = [np.ascontiguousarray(k[:, i], np.int64) for k in (a, b) for i in range(3)]
    out, ref = np.empty(len(a), np.int64), np.empty(len(a), np.int64)
    assert _match_sorted(*cols, out) and _match_sorted.py_func(*cols, ref)
    np.testing.assert_array_equal(out, ref)
    where = {tuple(k): j for j, k in enumerate(b)}
    np.testing.assert_array_equal(out, [where.get(tuple(k), -1) for k in a])


def test_apply_rows_of_falls_back_to_a_join():
    from dvp.runner_ml import _rows_of
    table = [np.array([1, 1, 2], np.int32), np.array([5, 7, 1])]
    np.testing.assert_array_equal(_rows_of((np.array([1, 2, 3]), np.array([7, 1, 0])), table), [1, 2, -1])   # merge
    unsorted = (np.array([2, 1, 1, 3], np.int32), np.array([1, 5, 7, 0]))
    np.testing.assert_array_equal(_rows_of(unsorted, table), [2, 0, 1, -1])                               # join
    np.testing.assert_array_equal(_rows_of(unsorted, [table[0][::-1].copy(), table[1][::-1].copy()]), [0, 2, 1, -1])
