"""Forest kernel: hand-worked trees, LightGBM agreement, jitted vs .py_func."""
import numpy as np
import pytest

from dvp.kernels.forest import Forest, _raw_score, flatten_lightgbm


def _tiny():
    # tree 0: x0 <= 1 ? (x1 <= 5 ? 10 : 20) : 30   -- internal nodes 0, 1; leaves 2, 3, 4
    # tree 1: a single leaf 0.5                     -- node 0 is the leaf
    feature = [0, 1, 0, 0, 0, 0]
    threshold = [1.0, 5.0, np.inf, np.inf, np.inf, np.inf]
    # children (left, right) per node; leaves loop to themselves
    child = [1, 4, 2, 3, 2, 2, 3, 3, 4, 4, 0, 0]
    return Forest(feature, threshold, child, node_offset=[0, 5], depth=[2, 0], n_internal=[2, 0],
                  leaf_value=[10.0, 20.0, 30.0, 0.5], leaf_offset=[0, 3], n_features=2)


def test_hand_worked_forest():
    f = _tiny()
    X = np.array([[0.0, 0.0], [1.0, 5.0], [1.0, 5.5], [1.5, -9.0], [-3.0, 100.0]] * 3)  # 15 rows: > one block
    np.testing.assert_array_equal(f.predict(X), np.tile([10.5, 10.5, 20.5, 30.5, 20.5], 3))
    with pytest.raises(ValueError, match="shape"):
        f.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="float32"):
        f.predict(np.zeros((3, 2), np.int64))


def test_jit_matches_python():
    f = _tiny()
    X = np.random.default_rng(0).uniform(-2, 8, (37, 2))
    a, b = np.empty(37), np.empty(37)
    args = (f.feature, f.threshold, f.child, f.node_offset, f.depth, f.n_internal, f.leaf_value, f.leaf_offset, 0.0)
    _raw_score(X, *args, a)
    _raw_score.py_func(X, *args, b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_equals_lightgbm(objective):
    import lightgbm as lgb
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    X[:, 3] = np.round(X[:, 3])          # ties on thresholds
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + (X[:, 3] > 0) + 0.1 * rng.normal(size=3000)
    if objective == "binary":
        y = (y > 0.5).astype(float)
    params = dict(objective=objective, num_leaves=31, max_depth=7, learning_rate=0.2, min_data_in_leaf=5,
                  verbosity=-1, seed=0, deterministic=True, num_threads=1)
    b = lgb.train(params, lgb.Dataset(X, y), 60)
    f = flatten_lightgbm(b)
    assert f.n_trees == b.num_trees()
    Xt = rng.normal(size=(2000, 6)).astype(np.float32)
    Xt[:, 3] = np.round(Xt[:, 3])
    ref = b.predict(Xt)
    if objective == "regression":
        np.testing.assert_array_equal(f.predict(Xt), ref)           # same trees, same summation order
    else:
        np.testing.assert_allclose(f.predict(Xt), ref, rtol=1e-14)  # sigmoid may differ in the last ulp
    np.testing.assert_array_equal(f.predict(Xt.astype(np.float64)), f.predict(Xt))


def test_single_leaf_trees():
    import lightgbm as lgb
    X = np.zeros((50, 2))
    y = np.full(50, 3.0)
    b = lgb.train(dict(objective="regression", verbosity=-1, min_data_in_leaf=5), lgb.Dataset(X, y), 3)
    f = flatten_lightgbm(b)
    np.testing.assert_array_equal(f.predict(np.ones((4, 2))), b.predict(np.ones((4, 2))))
