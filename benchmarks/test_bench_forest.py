"""pytest-benchmark: the leaf bounds of a linear-leaf LightGBM energy model, the part of
``dvp train`` that runs after LightGBM, and the forest kernel's predictions, about half
of ``dvp apply-models``' time (run: make bench). They report; they assert nothing about
time.

The bounds model is the size of the fast preset's (configs/ml-fast.toml) energy model per
telescope type: 36,000 training rows, 8 features, 10 linear trees of up to 63 leaves. The
prediction models have dvp's default parameters (depth 8, up to 63 leaves; 150 linear
trees for energy, 250 constant ones for gammaness) and 36,000 rows of the same kind.
"""
import numpy as np
import pytest

from dvp.kernels.forest import flatten_lightgbm


@pytest.fixture(scope="module")
def linear_model():
    import lightgbm as lgb
    rng = np.random.default_rng(0)
    X = rng.normal(size=(36_000, 8)).astype(np.float32)
    y = X[:, 0] + 0.3 * X[:, 1] ** 2 + rng.normal(scale=0.1, size=len(X))
    p = dict(objective="regression", linear_tree=True, learning_rate=0.5, max_bin=31, num_leaves=63, max_depth=8,
             min_data_in_leaf=20, lambda_l2=1.0, verbosity=-1, num_threads=1, deterministic=True, seed=0)
    return lgb.train(p, lgb.Dataset(X, y, params=p), num_boost_round=10), X


def test_flatten_lightgbm_linear(benchmark, linear_model):
    b, _ = linear_model
    f = benchmark(flatten_lightgbm, b)
    assert f.linear and f.n_trees == 10


def test_leaf_output_bounds(benchmark, linear_model):
    b, X = linear_model
    f = flatten_lightgbm(b)
    low, high = benchmark(f.leaf_output_bounds, X, 0.01)
    assert np.all(low <= high)


def _data(n=36_000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = X[:, 0] + 0.3 * X[:, 1] ** 2 + np.sin(2 * X[:, 2]) * X[:, 3] + rng.normal(scale=0.1, size=n)
    return X, y


@pytest.fixture(scope="module", params=["energy", "particle"])
def default_sized_forest(request):
    import lightgbm as lgb

    from dvp.config import load_config
    from dvp.ml.model import lightgbm_params
    kind = request.param
    X, y = _data()
    if kind == "particle":
        y = (y > 0.5).astype(float)
    p = lightgbm_params(kind, load_config(None).ml)   # dvp's defaults: depth 8, linear leaves for energy
    b = lgb.train(p, lgb.Dataset(X, y, params=p), num_boost_round=150 if kind == "energy" else 250)
    f = flatten_lightgbm(b)
    if f.linear:
        f.set_leaf_bounds(*f.leaf_output_bounds(X, 0.01))
    return f, np.ascontiguousarray(_data(seed=1)[0], np.float64)   # rows it did not train on


def test_predict_default_sized(benchmark, default_sized_forest):
    f, X = default_sized_forest
    out = benchmark(f.predict, X)
    assert out.shape == (len(X),) and np.isfinite(out).all()
