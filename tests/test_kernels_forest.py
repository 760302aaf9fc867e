"""Forest kernel: hand-worked trees, LightGBM agreement, jitted vs .py_func."""
import numpy as np
import pytest

from dvp.kernels.forest import (COMPLETE_MAX_DEPTH, MISSING_NAN, MISSING_ZERO, Forest, _plain_rows, _raw_score,
                                _raw_score_complete, _raw_score_complete_linear, _raw_score_linear,
                                _rank_from_both_ends, _raw_score_missing, _leaf_bounds, flatten_lightgbm)


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
    # the complete layout (tree 1 is a lone leaf: depth 0) and its kernel
    feature, threshold, _, node_offset, leaf_offset, _, leaf_value = f.complete_layout()
    assert list(node_offset) == [0, 3] and list(leaf_offset) == [0, 4]
    assert list(leaf_value) == [10.0, 20.0, 30.0, 30.0, 0.5]     # leaf 30 sits one level up: repeated
    args = (feature, threshold, node_offset, f.depth, leaf_offset, leaf_value, 0.0)
    _raw_score_complete(X, *args, a)
    _raw_score_complete.py_func(X, *args, b)
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


@pytest.mark.parametrize("objective,linear", [("regression", False), ("binary", False), ("regression", True)])
def test_random_forest_mode_equals_lightgbm(objective, linear):
    # boosting = rf: LightGBM averages the trees (each holding the initial score); the
    # kernel sums them in the same order and divides, as LightGBM does
    import lightgbm as lgb
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 5))
    X[rng.random(X.shape) < 0.02] = np.nan   # the per-row kernel averages too
    y = np.nan_to_num(X[:, 0]) * 2 + np.sin(3 * np.nan_to_num(X[:, 1])) + 0.1 * rng.normal(size=3000) + 5.0
    if objective == "binary":
        y = (y > 5.5).astype(float)
    params = dict(objective=objective, boosting="rf", bagging_fraction=0.632, bagging_freq=1, feature_fraction=0.6,
                  num_leaves=63, linear_tree=linear, verbosity=-1, seed=0, deterministic=True, num_threads=1)
    b = lgb.train(params, lgb.Dataset(X, y), 12)
    f = flatten_lightgbm(b)
    assert f.average and f.n_trees == 12
    Xt = rng.normal(size=(2001, 5))
    Xt[rng.random(Xt.shape) < 0.02] = np.nan
    ref = b.predict(Xt)
    if objective == "regression":
        np.testing.assert_array_equal(f.predict(Xt), ref)
        assert abs(np.mean(ref) - 5.0) < 0.5   # the mean of the trees, not their sum (12 x 5)
    else:
        np.testing.assert_allclose(f.predict(Xt), ref, rtol=1e-14)


def test_single_leaf_trees():
    import lightgbm as lgb
    X = np.zeros((50, 2))
    y = np.full(50, 3.0)
    b = lgb.train(dict(objective="regression", verbosity=-1, min_data_in_leaf=5), lgb.Dataset(X, y), 3)
    f = flatten_lightgbm(b)
    np.testing.assert_array_equal(f.predict(np.ones((4, 2))), b.predict(np.ones((4, 2))))


# -- linear leaves (linear_tree = true) and LightGBM's missing values ----------------------

# Two trees over (x0, x1), written as LightGBM's text model (verified against LightGBM):
# tree 0: x0 <= 1 (NaN-missing split, NaN goes right) ? (x1 <= 0.5 ? leaf 0 : leaf 1) : leaf 2
#         leaf 0 = 0.5 + 2 x0 - x1, leaf 1 = -1 + 0.25 x1, leaf 2 = 4; leaf values 1, 2, 3
# tree 1: x1 <= -1 (Zero-missing split with 0/NaN going left, or an ordinary split)
#         ? leaf 0 = 0 + 1 x0 : leaf 1 = 1 + 3 x0; leaf values 10, 20
_LINEAR_MODEL = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=1
objective=regression
feature_names=a b
feature_infos=[-10:10] [-10:10]

Tree=0
num_leaves=3
num_cat=0
split_feature=0 1
split_gain=1 1
threshold=1 0.5
decision_type=8 2
left_child=1 -1
right_child=-3 -2
leaf_value=1 2 3
leaf_weight=1 1 1
leaf_count=1 1 1
internal_value=0 0
internal_weight=1 1
internal_count=3 2
is_linear=1
leaf_const=0.5 -1 4
num_features=2 1 0
leaf_features=0 1  1   
leaf_coeff=2 -1  0.25   
shrinkage=1


Tree=1
num_leaves=2
num_cat=0
split_feature=1
split_gain=1
threshold=-1
decision_type=DECISION
left_child=-1
right_child=-2
leaf_value=10 20
leaf_weight=1 1
leaf_count=1 1
internal_value=0
internal_weight=1
internal_count=2
is_linear=1
leaf_const=0 1
num_features=1 1
leaf_features=0  0  
leaf_coeff=1  3  
shrinkage=1


end of trees

pandas_categorical:null
"""
_NAN = np.nan
_ROWS = np.array([[0.5, 0.2], [_NAN, 0.2], [0.5, _NAN], [0.5, 0.0], [0.5, -2.0], [2.0, 0.7], [0.5, 1e-36],
                  [_NAN, _NAN], [0.5, 0.7], [0.0, 2e-35], [0.5, -0.0]])


def _expected(zero_split):
    t0 = [0.5 + 2 * 0.5 + -1 * 0.2, 4.0, 1.0, 0.5 + 2 * 0.5 + -1 * 0.0, 0.5 + 2 * 0.5 + -1 * -2.0, 4.0,
          0.5 + 2 * 0.5 + -1 * 0.0,   # 1e-36 is read as 0
          4.0,                          # NaN x0: default (right) child; leaf 2 has no NaN feature
          -1 + 0.25 * 0.7, 0.5 + 2 * 0.0 + -1 * 2e-35, 0.5 + 2 * 0.5 + -1 * 0.0]
    left, right = 0 + 1 * 0.5, 1 + 3 * 0.5   # tree 1 with x0 = 0.5
    if zero_split:   # 0, -0, 1e-36 and NaN x1 go left
        t1 = [right, 20.0, left, left, left, 1 + 3 * 2.0, left, 10.0, right, 1 + 3 * 0.0, left]
    else:            # NaN x1 is read as 0 (> -1): right
        t1 = [right, 20.0, right, right, left, 1 + 3 * 2.0, right, 20.0, right, 1 + 3 * 0.0, right]
    # leaf 0 of tree 0 with NaN x1 outputs its leaf value (1); leaf 1 of tree 1 with NaN x0 its value (20)
    return np.array(t0) + np.array(t1)


def _tiny_linear(zero_split):
    nodes = 5 + 3
    return Forest(feature=[0, 1, 0, 0, 0, 1, 0, 0], threshold=[1.0, 0.5] + [np.inf] * 3 + [-1.0] + [np.inf] * 2,
                  child=[1, 4, 2, 3, 2, 2, 3, 3, 4, 4, 1, 2, 1, 1, 2, 2], node_offset=[0, 5], depth=[2, 1],
                  n_internal=[2, 1], leaf_value=[1.0, 2.0, 3.0, 10.0, 20.0], leaf_offset=[0, 3], n_features=2,
                  missing=[MISSING_NAN, 0, 0, 0, 0, MISSING_ZERO if zero_split else 0, 0, 0],
                  default_left=[False] + [True] * (nodes - 1),
                  leaf_const=[0.5, -1.0, 4.0, 0.0, 1.0], leaf_features=[[0, 1], [1], [], [0], [0]],
                  leaf_coeff=[[2.0, -1.0], [0.25], [], [1.0], [3.0]])


@pytest.mark.parametrize("zero_split", [False, True])
def test_hand_worked_linear_forest(zero_split):
    import lightgbm as lgb
    want = np.tile(_expected(zero_split), 2)              # 22 rows: two blocks of 8 and a tail
    X = np.tile(_ROWS, (2, 1))
    f = _tiny_linear(zero_split)
    assert f.linear and f.zero_splits == zero_split
    np.testing.assert_array_equal(f.predict(X), want)
    # the same trees as a LightGBM model: LightGBM agrees, and so does the flattened model
    b = lgb.Booster(model_str=_LINEAR_MODEL.replace("DECISION", "6" if zero_split else "2"))
    np.testing.assert_array_equal(b.predict(X), want)
    g = flatten_lightgbm(b)
    for name in ("feature", "threshold", "child", "missing", "default_left", "leaf_value", "leaf_const", "coef_ptr",
                 "coef_feature", "coef_value"):
        np.testing.assert_array_equal(getattr(g, name), getattr(f, name), err_msg=name)
    np.testing.assert_array_equal(g.predict(X), want)
    # rows of ordinary values only: the fast linear kernel
    plain = ~np.isnan(_ROWS).any(axis=1) & (np.abs(_ROWS) > 1e-35).all(axis=1)
    np.testing.assert_array_equal(f.predict(_ROWS[plain]), _expected(zero_split)[plain])


# training rows of _tiny_linear(False) and, per leaf, the outputs they give (worked by hand):
# leaf 0 = 0.5 + 2 x0 - x1, leaf 1 = -1 + 0.25 x1, leaf 2 = 4, leaf 3 = x0, leaf 4 = 1 + 3 x0
_TRAIN = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.4], [0.0, 1.0], [0.0, 3.0], [0.5, -2.0]])
#               leaf 0: 0.5, 2.5, 1.1, -, -, 3.5   leaf 1: -0.75, -0.25   leaf 3: 0.5   leaf 4: 1, 4, 2.5, 1, 1


@pytest.mark.parametrize("quantile,low,high", [
    (0.0, [0.5, -0.75, -np.inf, 0.5, 1.0], [3.5, -0.25, np.inf, 0.5, 4.0]),
    # floor(0.34 (k - 1)): rank 1 from either end for leaf 0 (k = 4) and leaf 4 (k = 5), 0 for the others
    (0.34, [1.1, -0.75, -np.inf, 0.5, 1.0], [2.5, -0.25, np.inf, 0.5, 2.5])])
def test_hand_worked_leaf_bounds(quantile, low, high):
    f = _tiny_linear(False)
    lo, hi = f.leaf_output_bounds(_TRAIN, quantile)
    np.testing.assert_allclose(lo, low, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hi, high, rtol=0, atol=1e-15)
    unbounded = f.predict(_TRAIN)
    f.set_leaf_bounds(lo, hi)
    if quantile == 0.0:   # the training rows themselves are never clipped
        np.testing.assert_array_equal(f.predict(_TRAIN), unbounded)
    rows = np.array([[-5.0, 0.0],     # leaf 0: -9.5 -> low; leaf 4: -14 -> low (1)
                     [0.0, 100.0],    # leaf 1: 24 -> high (-0.25); leaf 4: 1
                     [0.5, -3.0],     # leaf 0: 4.5 -> high; leaf 3: 0.5
                     [20.0, 0.0],     # leaf 2: 4 (no bound); leaf 4: 61 -> high
                     [np.nan, 0.2]])  # leaf 2: 4; leaf 4 with NaN x0: its leaf value 20, never bounded
    want = [low[0] + low[4], high[1] + 1.0, high[0] + 0.5, 4.0 + high[4], 4.0 + 20.0]
    for X in (rows, np.tile(rows, (4, 1))):   # per-row kernel (NaN) and blocks of 8 plus the per-row rest
        np.testing.assert_array_equal(f.predict(X)[:5], want)
    np.testing.assert_array_equal(f.predict(rows[:4]), want[:4])   # the fast linear kernel alone


def test_leaf_bounds_keep_the_sign_of_a_zero_output():
    """Blocks of 8 rows evaluate leaves padded with zero terms, which can turn a zero
    output's sign; the bounds are still the exact sum's, bit for bit. Leaf 0 of the first
    tree: -0.0 + 1 * x0 + 0 * x0 (padding to the second tree's two terms) is -0.0 for x0 = -0.0,
    where LightGBM's sum, reading x0 as +0.0, is +0.0."""
    f = Forest(feature=[0, 0, 0, 0], threshold=[0.5, np.inf, np.inf, np.inf],
               child=[1, 2, 1, 1, 2, 2, 0, 0], node_offset=[0, 3], depth=None, n_internal=[1, 0],
               leaf_value=[0.0, 0.0, 0.0], leaf_offset=[0, 2], n_features=2, leaf_const=[-0.0, 2.0, 0.0],
               leaf_features=[[0], [0], [0, 1]], leaf_coeff=[[1.0], [1.0], [1.0, 1.0]])
    assert f.coef_width == 2
    X = np.zeros((19, 2))                   # two blocks of 8 and a per-row tail of 3
    X[:, 0] = -0.0
    X[::2, 1] = 1.0
    lo, hi = f.leaf_output_bounds(X)
    for v in (lo[0], hi[0]):
        assert v == 0.0 and not np.signbit(v)
    np.testing.assert_array_equal([lo[2], hi[2]], [0.0, 1.0])
    assert np.isinf(lo[1]) and np.isinf(hi[1])   # no row reaches leaf 1 (x0 > 0.5)


@pytest.mark.parametrize("order", ["random", "ascending", "descending", "ties"])
@pytest.mark.parametrize("k", [1, 2, 7, 101, 2000])
def test_rank_from_both_ends_is_the_sorted_rank(order, k):
    """The one-pass selection of the leaf bounds gives np.sort's values at ``rank`` and
    ``k - 1 - rank`` for every rank the bounds use (0 ... (k - 1) / 2), whatever the
    order of the values (a sorted leaf makes every value enter one heap), jitted and not."""
    rng = np.random.default_rng(k)
    v = {"random": rng.normal(size=k), "ascending": np.sort(rng.normal(size=k)),
         "descending": -np.sort(rng.normal(size=k)), "ties": rng.integers(0, 3, k).astype(float)}[order]
    want = np.sort(v)
    ranks = sorted({0, 1, k // 100, k // 3, (k - 1) // 2} & set(range((k - 1) // 2 + 1)))
    for rank in ranks:
        for fn in (_rank_from_both_ends, _rank_from_both_ends.py_func):
            assert fn(v, rank) == (want[rank], want[k - 1 - rank])


def test_forest_from_compressed_coefficients():
    """A linear forest built from coef_ptr, coef_feature, coef_value is the one built from
    per-leaf lists; a pointer that does not index the coefficients, or both forms at
    once, is refused."""
    f = _tiny_linear(False)
    layout = (f.feature, f.threshold, f.child, f.node_offset, f.depth, f.n_internal, f.leaf_value, f.leaf_offset,
              f.n_features)
    g = Forest(*layout, leaf_const=f.leaf_const, coef_ptr=f.coef_ptr, coef_feature=f.coef_feature,
               coef_value=f.coef_value)
    np.testing.assert_array_equal(g.predict(_TRAIN), f.predict(_TRAIN))
    for bad in (f.coef_ptr[:-1], f.coef_ptr + 1, f.coef_ptr[::-1]):
        with pytest.raises(ValueError, match="coef_ptr does not index"):
            Forest(*layout, leaf_const=f.leaf_const, coef_ptr=bad, coef_feature=f.coef_feature,
                   coef_value=f.coef_value)
    with pytest.raises(ValueError, match="or leaf_features"):
        Forest(*layout, leaf_const=f.leaf_const, coef_ptr=f.coef_ptr, coef_feature=f.coef_feature,
               coef_value=f.coef_value, leaf_features=[[0]] * 5, leaf_coeff=[[1.0]] * 5)


def test_leaf_bounds_checks():
    f = _tiny_linear(False)
    with pytest.raises(ValueError, match="shapes"):
        f.set_leaf_bounds(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="above"):
        f.set_leaf_bounds(np.ones(5), np.zeros(5))
    with pytest.raises(ValueError, match="quantile"):
        f.leaf_output_bounds(_TRAIN, 0.5)
    with pytest.raises(ValueError, match="constant leaves"):
        _tiny().set_leaf_bounds(np.zeros(4), np.ones(4))
    f.set_leaf_bounds(np.full(5, np.nan), np.full(5, np.inf))   # NaN: no bound
    np.testing.assert_array_equal(f.leaf_low, np.full(5, -np.inf))


def test_leaf_bounds_on_a_lightgbm_linear_model():
    """Bounds from the training rows leave LightGBM's predictions on them bit-identical,
    and keep every prediction within the sum of the leaves' ranges however far the rows go."""
    import lightgbm as lgb
    rng = np.random.default_rng(5)
    X, y = _lgb_data(rng, 3000, 0.0)
    b = lgb.train({"objective": "regression", "linear_tree": True, "num_leaves": 8, "verbosity": -1,
                   "deterministic": True, "num_threads": 1, "seed": 1}, lgb.Dataset(X, y), num_boost_round=20)
    f = flatten_lightgbm(b)
    lo, hi = f.leaf_output_bounds(X)
    f.set_leaf_bounds(lo, hi)
    np.testing.assert_array_equal(f.predict(X), b.predict(X))
    far = X[:200] * 50.0
    assert np.abs(b.predict(far) - f.predict(far)).max() > 1.0   # LightGBM's planes do run away
    per_tree_lo = [lo[f.leaf_offset[t]:f.leaf_offset[t] + f.n_internal[t] + 1].min() for t in range(f.n_trees)]
    per_tree_hi = [hi[f.leaf_offset[t]:f.leaf_offset[t] + f.n_internal[t] + 1].max() for t in range(f.n_trees)]
    p = f.predict(far)
    assert (p >= f.init + sum(per_tree_lo) - 1e-9).all() and (p <= f.init + sum(per_tree_hi) + 1e-9).all()


def test_tiny_values_are_read_as_zero_in_linear_leaves():
    """LightGBM's predict reads |x| <= 1e-35 (as float32) as 0: visible with a coefficient of 1e30."""
    import lightgbm as lgb
    b = lgb.Booster(model_str=_LINEAR_MODEL.replace("DECISION", "2").replace("leaf_coeff=1  3", "leaf_coeff=1e30  3"))
    X = np.array([[1e-36, -2.0], [-1e-36, -2.0], [1e-35, -2.0], [np.float32(1e-35), -2.0], [2e-35, -2.0]] * 3)
    tree0 = 0.5 + 2 * X[:, 0] + -1 * -2.0
    want = tree0 + np.where(np.abs(X[:, 0]) <= float(np.float32(1e-35)), 0.0, 1e30 * X[:, 0])
    assert want[4] - tree0[4] == pytest.approx(2e-5)   # 2e-35 is not small enough
    np.testing.assert_array_equal(b.predict(X), want)
    np.testing.assert_array_equal(flatten_lightgbm(b).predict(X), want)


def test_linear_kernels_jit_match_python():
    f = _tiny_linear(False)
    rng = np.random.default_rng(2)
    X = rng.uniform(-3, 3, (43, 2))
    common = (f.feature, f.threshold, f.child, f.node_offset)
    lo, hi = np.array([0.0, -1.0, -np.inf, -2.0, 0.5]), np.array([1.5, np.inf, np.inf, 2.0, 3.0])
    linear = (f.leaf_const, f.coef_ptr, f.coef_feature, f.coef_value, lo, hi, 0.25)
    padded = (f.leaf_const, f.coef_pad_feature, f.coef_pad_value, f.coef_width, lo, hi, 0.25)
    outs = np.empty((4, 43))
    _raw_score_linear(X, *common, f.depth, f.n_internal, f.leaf_offset, *padded, outs[0])
    _raw_score_linear.py_func(X, *common, f.depth, f.n_internal, f.leaf_offset, *padded, outs[1])
    X[::3, 0] = np.nan
    X[1::5, 1] = 0.0
    X[2::7, 1] = -1e-37
    g = _tiny_linear(True)
    args = (g.feature, g.threshold, g.child, g.missing, g.default_left, g.node_offset, g.n_internal, g.leaf_value,
            g.leaf_offset, *linear)
    _raw_score_missing(X, *args, outs[2])
    _raw_score_missing.py_func(X, *args, outs[3])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[2], outs[3])
    assert np.isfinite(outs).all()
    plain = np.empty(43, bool)
    _plain_rows(X, plain)
    bounds = [np.full((2, 5), np.nan), np.full((2, 5), np.nan)]
    for k, fn in enumerate((_leaf_bounds, _leaf_bounds.py_func)):
        # f: no Zero split, so plain rows may take the branch-free walks (8 in lockstep or one)
        fn(X, plain, f.feature, f.threshold, f.child, f.missing, f.default_left, f.node_offset, f.depth, f.n_internal,
           f.leaf_value, f.leaf_offset, *linear[:4], f.coef_pad_feature, f.coef_pad_value, f.coef_width,
           np.full(5, -np.inf), np.full(5, np.inf), 0.2, bounds[k][0], bounds[k][1])
    np.testing.assert_array_equal(bounds[0], bounds[1])
    assert np.isfinite(bounds[0]).sum() >= 8   # rows reach at least four of the five leaves
    a, b = np.empty(43, bool), np.empty(43, bool)
    _plain_rows(X, a)
    _plain_rows.py_func(X, b)
    np.testing.assert_array_equal(a, b)
    assert (~a).sum() == len(set(range(0, 43, 3)) | set(range(2, 43, 7)))   # NaN and 1e-37; 0.0 is plain


def _lgb_data(rng, n, nan_fraction):
    X = rng.normal(size=(n, 5))
    X[:, 3] = np.round(X[:, 3])           # ties on thresholds, many exact zeros
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + X[:, 2] * (X[:, 3] > 0) + 0.1 * rng.normal(size=n)
    X[rng.random(X.shape) < nan_fraction] = np.nan
    return X, y


@pytest.mark.parametrize("linear,train_nan,zero_as_missing", [
    (True, 0.05, False), (True, 0.0, False), (False, 0.05, False), (False, 0.0, True), (False, 0.05, True)])
def test_equals_lightgbm_with_missing_values(linear, train_nan, zero_as_missing):
    """Bit for bit, NaN, zeros, -0.0, 1e-35-small and infinite values included (LightGBM
    refuses zero_as_missing with linear trees)."""
    import lightgbm as lgb
    rng = np.random.default_rng(3)
    X, y = _lgb_data(rng, 2000, train_nan)
    params = dict(objective="regression", linear_tree=linear, zero_as_missing=zero_as_missing, num_leaves=15,
                  learning_rate=0.2, min_data_in_leaf=10, verbosity=-1, seed=0, deterministic=True, num_threads=1)
    b = lgb.train(params, lgb.Dataset(X, y), 30)
    f = flatten_lightgbm(b)
    assert f.linear == linear and (f.zero_splits or not zero_as_missing)
    if linear:
        assert len(f.coef_value) > 0
    Xt, _ = _lgb_data(rng, 1500, 0.03)
    Xt[rng.random(Xt.shape) < 0.01] = 0.0
    Xt[rng.random(Xt.shape) < 0.01] = -0.0
    Xt[rng.random(Xt.shape) < 0.01] = 3e-36
    Xt[rng.random(Xt.shape) < 0.005] = np.inf
    Xt[rng.random(Xt.shape) < 0.005] = -np.inf
    for Z in (Xt, Xt.astype(np.float32), np.ascontiguousarray(Xt[np.isfinite(Xt).all(axis=1)])):
        np.testing.assert_array_equal(f.predict(Z), b.predict(Z))


def test_linear_trees_in_a_model_file_are_not_ignored():
    """The old kernel summed leaf values of linear trees: wrong by up to the whole target range."""
    import lightgbm as lgb
    rng = np.random.default_rng(4)
    X, y = _lgb_data(rng, 3000, 0.0)
    params = dict(objective="regression", linear_tree=True, verbosity=-1, num_threads=1, seed=0)
    b = lgb.train(params, lgb.Dataset(X, y), 20)
    b = lgb.Booster(model_str=b.model_to_string())
    f = flatten_lightgbm(b)
    np.testing.assert_array_equal(f.predict(X), b.predict(X))
    np.testing.assert_array_equal(f.predict(X.astype(np.float32)), b.predict(X.astype(np.float32)))
    const = Forest(f.feature, f.threshold, f.child, f.node_offset, f.depth, f.n_internal, f.leaf_value,
                   f.leaf_offset, 5)
    assert np.max(np.abs(const.predict(X) - b.predict(X))) > 0.1


@pytest.mark.parametrize("params,message", [
    (dict(objective="regression", reg_sqrt=True), "reg_sqrt"),
    (dict(objective="multiclass", num_class=3), "objective"),
    (dict(objective="poisson"), "objective"),
    (dict(objective="binary", sigmoid=2.0), "sigmoid"),
    (dict(objective="regression", categorical=True), "categorical"),
])
def test_unsupported_models_raise(params, message):
    import lightgbm as lgb
    rng = np.random.default_rng(5)
    X = rng.integers(0, 6, (600, 3)).astype(float)
    y = X[:, 0] + (X[:, 1] == 2) + rng.random(600)
    params = dict(params, verbosity=-1, num_threads=1, min_data_in_leaf=5, min_data_per_group=5, cat_smooth=1)
    cat = params.pop("categorical", False)
    if params["objective"] == "binary":
        y = (y > y.mean()).astype(float)
    elif params["objective"] == "multiclass":
        y = np.minimum(X[:, 0] // 2, 2)
    b = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[1] if cat else "auto"), 5)
    with pytest.raises(ValueError, match=message):
        flatten_lightgbm(b)


def test_bad_forest_arrays_raise():
    f = _tiny_linear(False)
    base = dict(threshold=f.threshold, child=f.child, node_offset=f.node_offset, depth=f.depth,
                n_internal=f.n_internal, leaf_value=f.leaf_value, leaf_offset=f.leaf_offset, n_features=2)
    with pytest.raises(ValueError, match="feature index"):
        Forest(feature=[0, 2, 0, 0, 0, 1, 0, 0], **base)
    with pytest.raises(ValueError, match="leaf feature index"):
        Forest(feature=f.feature, **base, leaf_const=f.leaf_const, leaf_features=[[0, 5], [1], [], [0], [0]],
               leaf_coeff=[[2.0, -1.0], [0.25], [], [1.0], [3.0]])
    with pytest.raises(ValueError, match="inconsistent"):
        Forest(feature=f.feature, **{**base, "child": np.where(f.child == 4, 5, f.child)})
    # the unsigned, unchecked walks need trees: leaves that loop to themselves, no node
    # reached twice, and enough steps to reach every leaf
    leaf_out = f.child.astype(np.int64).copy()
    leaf_out[2 * 2] = 3                                  # leaf node 2 of tree 0 points to leaf 3
    shared = f.child.astype(np.int64).copy()
    shared[2 * 1] = 3                                    # node 1's left child is node 0's right child too
    cycle = f.child.astype(np.int64).copy()
    cycle[2 * 1 + 1] = 0                                 # node 1's right child is the root
    for child, message in ((leaf_out, "inconsistent"), (shared, "reached twice"), (cycle, "reached twice")):
        with pytest.raises(ValueError, match=message):
            Forest(feature=f.feature, **{**base, "child": child})
    with pytest.raises(ValueError, match="depth is below"):
        Forest(feature=f.feature, **{**base, "depth": [1, 1]})
    with pytest.raises(ValueError, match="inconsistent"):
        Forest(feature=f.feature, **{**base, "node_offset": [1, 5]})


def test_depth_is_found_and_may_exceed():
    f = _tiny()
    g = Forest(f.feature, f.threshold, f.child, f.node_offset, None, f.n_internal, f.leaf_value, f.leaf_offset, 2)
    np.testing.assert_array_equal(g.depth, [2, 0])
    deep = Forest(f.feature, f.threshold, f.child, f.node_offset, [5, 3], f.n_internal, f.leaf_value, f.leaf_offset, 2)
    X = np.random.default_rng(4).uniform(-2, 8, (29, 2))
    np.testing.assert_array_equal(deep.predict(X), g.predict(X))   # extra steps stay on the leaves


def test_padded_linear_coefficients():
    f = _tiny_linear(False)
    assert f.coef_width == 2
    np.testing.assert_array_equal(f.coef_pad_feature, [0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(f.coef_pad_value, [2.0, -1.0, 0.25, 0, 0, 0, 1.0, 0, 3.0, 0])
    assert f.coef_pad_feature.dtype == np.uint32 and f.feature.dtype == np.uint32 and f.child.dtype == np.uint32
    # infinite values take the per-row kernel: a padding zero times inf would be NaN
    import lightgbm as lgb
    X = np.array([[0.5, np.inf], [np.inf, 0.2], [-np.inf, -2.0], [0.5, 0.2]] * 3)
    b = lgb.Booster(model_str=_LINEAR_MODEL.replace("DECISION", "2"))
    np.testing.assert_array_equal(f.predict(X), b.predict(X))
    assert np.isinf(f.predict(X)[:3]).all()


def test_float32_thresholds_split_float32_rows_as_float64_ones():
    from dvp.kernels.forest import _round_down_float32
    rng = np.random.default_rng(6)
    t = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, 2000),
                        [1e300, -1e300, 0.0, 1e-46, -1e-46],
                        rng.normal(size=500).astype(np.float32).astype(np.float64)])   # exactly representable too
    t32 = _round_down_float32(t)
    assert t32.dtype == np.float32 and np.all(t32.astype(np.float64) <= t)
    with np.errstate(over="ignore"):
        near = t.astype(np.float32)                    # each threshold's float32 neighbours, below and above
    for x in (near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf)),
              rng.normal(size=len(t)).astype(np.float32)):
        finite = np.isfinite(x)
        np.testing.assert_array_equal((x > t)[finite], (x > t32)[finite])


@pytest.mark.parametrize("linear", [False, True])
def test_complete_layout_gives_the_child_array_kernels_results(linear):
    """The complete-layout kernels (trees up to COMPLETE_MAX_DEPTH deep, 16 rows at a time)
    give the child-array kernels' raw scores bit for bit: any depth, leaves above the
    bottom level, float32 and float64 rows, rows beyond the last block of 16; deeper
    forests keep the child arrays."""
    import lightgbm as lgb
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 6))
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + np.abs(X[:, 2]) + 0.1 * rng.normal(size=4000)
    Xt = rng.normal(size=(1000 * 16 + 7, 6))
    for max_depth, num_leaves in ((1, 2), (3, 8), (6, 40), (COMPLETE_MAX_DEPTH, 80), (-1, 200)):
        params = dict(objective="regression", num_leaves=num_leaves, max_depth=max_depth, learning_rate=0.2,
                      min_data_in_leaf=3, linear_tree=linear, verbosity=-1, seed=0, deterministic=True, num_threads=1)
        f = flatten_lightgbm(lgb.train(params, lgb.Dataset(X, y), 30))
        if linear:
            f.set_leaf_bounds(*f.leaf_output_bounds(X, 0.02))
        deep = f.depth.max() > COMPLETE_MAX_DEPTH
        assert (f.complete_layout() is None) == deep and deep == (max_depth == -1)
        if deep:
            continue
        leaf_index = f.complete_layout()[5]
        # a leaf above a tree's bottom level fills several bottom positions
        assert f.depth.max() == max_depth and (len(np.unique(leaf_index)) < len(leaf_index)) == (max_depth >= 6)
        for rows in (Xt, Xt.astype(np.float32)):
            got, ref = np.empty(len(rows)), np.empty(len(rows))
            f._raw_fast(rows, got)
            complete, f._complete = f._complete, False      # the child-array kernels
            f._raw_fast(rows, ref)
            f._complete = complete
            np.testing.assert_array_equal(got, ref)
        if linear:   # jitted vs Python on a few rows (a block of 16 and a tail)
            feature, threshold, _, node_offset, leaf_offset, leaf_index, _ = f.complete_layout()
            args = (feature, threshold, node_offset, f.depth, leaf_offset, leaf_index, f.leaf_const,
                    f.coef_pad_feature, f.coef_pad_value, f.coef_width, f.leaf_low, f.leaf_high, f.init)
            a, b = np.empty(21), np.empty(21)
            _raw_score_complete_linear(Xt[:21], *args, a)
            _raw_score_complete_linear.py_func(Xt[:21], *args, b)
            np.testing.assert_array_equal(a, b)
