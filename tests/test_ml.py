"""Energy and particle models: split, combination, training, model files, apply-models."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from dvp import schemas as S
from dvp.cli import app
from dvp.config import LINEAR_LEAF_CLIP_DEFAULT, load_config
from dvp.errors import DvpError
from dvp.kernels.combine import _weighted_mean, weighted_mean
from dvp.ml import model as M
from dvp.ml.metrics import bias_resolution, roc_auc
from dvp.ml.split import group_folds, group_sample, group_uniform, group_validation
from dvp.stages.dl2_models import VALID, VALUE, WEIGHT, combination_weights, combine_events

# -- split ------------------------------------------------------------------------------


def test_group_folds_keep_events_together_and_ignore_row_order():
    rng = np.random.default_rng(3)
    obs = rng.integers(1, 4, 20000)
    ev = rng.integers(0, 3000, 20000)
    f = group_folds(obs, ev, 5, seed=7)
    # every row of one array event has the same fold
    df = pl.DataFrame({"o": obs, "e": ev, "f": f})
    assert df.group_by("o", "e").agg(pl.col("f").n_unique()).get_column("f").max() == 1
    # a permutation of the rows permutes the folds (no dependence on order or chunking)
    perm = rng.permutation(len(obs))
    assert np.array_equal(group_folds(obs[perm], ev[perm], 5, seed=7), f[perm])
    # folds are balanced (by events) and the seed changes the split
    n_events = df.unique(["o", "e"]).height
    sizes = df.unique(["o", "e"]).group_by("f").len().get_column("len").to_numpy()
    assert len(sizes) == 5 and np.all(np.abs(sizes / n_events - 0.2) < 0.03)
    assert not np.array_equal(group_folds(obs, ev, 5, seed=8), f)
    # the early-stopping hold-out is also whole events, independent of the folds
    v = group_validation(obs, ev, 0.1, seed=7)
    assert abs(v.mean() - 0.1) < 0.02
    assert pl.DataFrame({"o": obs, "e": ev, "v": v}).group_by("o", "e").agg(pl.col("v").n_unique())["v"].max() == 1
    u1, u2 = group_uniform(obs, ev, 7, 1), group_uniform(obs, ev, 7, 2)
    assert abs(np.corrcoef(u1, u2)[0, 1]) < 0.05


def test_group_sample_takes_whole_events_up_to_the_cap():
    rng = np.random.default_rng(5)
    obs = rng.integers(1, 3, 6000)
    ev = rng.integers(0, 1500, 6000)
    usable = rng.random(6000) < 0.9
    n_use = int(usable.sum())
    keep = group_sample(obs, ev, usable, 2000, seed=1)
    assert not (keep & ~usable).any()
    # whole array events: an event's usable rows are all kept or all dropped
    df = pl.DataFrame({"o": obs, "e": ev, "k": keep}).filter(pl.Series(usable))
    assert df.group_by("o", "e").agg(pl.col("k").n_unique())["k"].max() == 1
    # about the cap: off by less than the largest array event
    most = int(df.group_by("o", "e").len()["len"].max())
    assert abs(int(keep.sum()) - 2000) < most
    # seeded, order-independent, and a no-op when the cap does not bite
    perm = rng.permutation(6000)
    assert np.array_equal(group_sample(obs[perm], ev[perm], usable[perm], 2000, seed=1), keep[perm])
    assert not np.array_equal(group_sample(obs, ev, usable, 2000, seed=2), keep)
    for cap in (0, n_use, n_use + 1):
        assert np.array_equal(group_sample(obs, ev, usable, cap, seed=1), usable)


def test_training_never_sees_the_test_fold(monkeypatch):
    """Every cross-validation training (and its early-stopping set) excludes all
    telescopes of the test fold's array events."""
    rng = np.random.default_rng(0)
    n = 3000
    obs = np.ones(n, np.int64)
    ev = rng.integers(0, 600, n)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = X[:, 0] + 0.1 * rng.normal(size=n)
    calls = []
    real = M._train_one

    def spy(lgb, params, X_, y_, w, train, valid, *a):
        calls.append((train.copy(), valid.copy()))
        return real(lgb, params, X_, y_, w, train, valid, *a)

    monkeypatch.setattr(M, "_train_one", spy)
    ml = load_config(None, ["ml.max_rounds=30", "ml.n_folds=4"]).ml
    res = M.fit("energy", X, y, obs, ev, ml, log10_intensity=np.zeros(n))
    folds = group_folds(obs, ev, 4, ml.seed)
    assert len(calls) == 5   # 4 folds + the final model
    for k, (train, valid) in enumerate(calls[:4]):
        test_events = set(ev[folds == k])
        assert test_events and not test_events & set(ev[train | valid])
        assert not set(ev[train]) & set(ev[valid])   # early stopping on other events than training
    assert np.isfinite(res.oof).all()
    assert res.info["cv"]["rmse_log10_mean"] < 0.5 * np.std(y)


# -- combination --------------------------------------------------------------------------


def _pred_table(obs, ev, tel, value, valid, weight):
    return pa.table({S.OBS_ID: pa.array(obs, pa.int32()), S.EVENT_ID: pa.array(ev, pa.int64()),
                     S.TEL_ID: pa.array(tel, pa.int16()), VALUE: np.asarray(value, float),
                     VALID: np.asarray(valid, bool), WEIGHT: np.asarray(weight, float),
                     "sigma_log10": np.full(len(obs), 0.1)})


def test_combination_weights_do_what_their_names_say():
    cols = {S.HILLAS_INTENSITY: np.array([100.0, 300.0]), S.HILLAS_LENGTH: np.array([0.2, 0.1]),
            S.HILLAS_WIDTH: np.array([0.1, 0.1])}
    v = np.array([0.0, 1.0])   # two telescopes: log10 E = 0 and 1
    starts, ok = np.array([0, 2]), np.ones(2, bool)
    expected = {"none": 0.5, "intensity": 300 / 400,
                "aspect_weighted_intensity": 300 * 1.0 / (100 * 2.0 + 300 * 1.0),
                "inverse_variance": 25.0 / 125.0}   # sigmas 0.1, 0.2 -> weights 100, 25
    sigma = np.array([0.1, 0.2])
    for name, want in expected.items():
        w = combination_weights(name, cols, sigma)
        mean, mean_sigma, n = weighted_mean(starts, v, w, sigma, ok)
        assert mean[0] == pytest.approx(want, abs=1e-12), name
        assert n[0] == 2
    # inverse-variance: the combined error is 1/sqrt(sum 1/sigma^2)
    w = combination_weights("inverse_variance", cols, sigma)
    _, s, _ = weighted_mean(starts, v, w, sigma, ok)
    assert s[0] == pytest.approx(1 / np.sqrt(100 + 25))
    with pytest.raises(ValueError):
        combination_weights("median", cols, sigma)


def test_combine_events_skips_invalid_and_sorts():
    # event 5 has one invalid telescope, event 2 none valid, rows deliberately unsorted
    t = _pred_table([1, 1, 1, 1], [5, 2, 5, 5], [3, 1, 1, 2], [np.log10(2.0), np.nan, 0.0, 99.0],
                    [True, False, True, False], [1.0, 1.0, 1.0, 1.0])
    out = combine_events("energy", t)
    assert out.column(S.EVENT_ID).to_pylist() == [2, 5]
    e = out.column(S.RECO_ENERGY).to_numpy()
    assert np.isnan(e[0]) and e[1] == pytest.approx(np.sqrt(2.0))   # geometric mean of 1 and 2 TeV
    assert out.column(S.RECO_ENERGY_IS_VALID).to_pylist() == [False, True]
    assert out.column(S.RECO_ENERGY_N_TELS).to_pylist() == [0, 2]
    g = combine_events("particle", _pred_table([1, 1], [7, 7], [1, 2], [0.2, 0.6], [True, True], [1.0, 3.0]))
    assert g.column(S.GAMMANESS).to_numpy()[0] == pytest.approx(0.5)
    assert S.RECO_ENERGY_UNCERT not in g.column_names


def test_weighted_mean_jit_matches_python():
    rng = np.random.default_rng(1)
    n = 200
    starts = np.concatenate([[0], np.sort(rng.choice(np.arange(1, n), 40, replace=False)), [n]]).astype(np.int64)
    args = (starts, rng.normal(size=n), rng.uniform(0, 2, n) * (rng.random(n) > 0.1), rng.uniform(0.05, 0.3, n),
            rng.random(n) > 0.2)
    outs = [[np.empty(41), np.empty(41), np.empty(41, np.int64)] for _ in range(2)]
    _weighted_mean(*args, *outs[0])
    _weighted_mean.py_func(*args, *outs[1])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        weighted_mean(starts, np.zeros(3), np.zeros(n), np.zeros(n), np.ones(n, bool))


# -- metrics ---------------------------------------------------------------------------------


def test_roc_auc_and_bias_resolution_hand_worked():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5)      # ties count half
    assert roc_auc([0.9, 0.1], [0, 1]) == 0.0
    assert np.isnan(roc_auc([0.2, 0.3], [1, 1]))
    bias, res = bias_resolution(np.full(101, 1.1) * np.linspace(0.9, 1.1, 101), np.ones(101))
    assert bias == pytest.approx(0.1, abs=1e-9)
    assert res == pytest.approx(0.5 * 1.1 * (np.quantile(np.linspace(0.9, 1.1, 101), 0.84)
                                             - np.quantile(np.linspace(0.9, 1.1, 101), 0.16)))


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("override,message", [
    ("ml.energy.features=[\"no_such_column\"]", "unknown feature 'no_such_column'"),
    ("ml.derived.x=\"open(1)\"", "may be called"),
    ("ml.derived.hillas_width_deg=\"1\"", "new identifier"),
    ("ml.lightgbm.objective=\"huber\"", "set by dvp"),
    ("ml.energy.weights=\"median\"", "must be one of"),
    ("ml.particle.weights=\"inverse_variance\"", "must be one of"),
    ("ml.n_folds=1", "at least 2"),
    ("ml.trees=3", "unknown key 'ml.trees'"),
    ("ml.energy.trees=3", "unknown key 'ml.energy.trees'"),
    ("ml.particle.lightgbm.seed=3", "ml.particle.lightgbm.seed: set by dvp"),
    ("ml.energy.lightgbm=3", "ml.energy.lightgbm: expected a table"),
    ("ml.particle.early_stopping_rounds=-1", "ml.particle.early_stopping_rounds: expected a non-negative int"),
    ("ml.particle.max_rounds=0", "ml.particle.max_rounds: expected a positive int"),
    ("ml.early_stopping_rounds=-1", "ml.early_stopping_rounds and ml.max_telescope_events non-negative"),
    ("ml.energy.max_telescope_events=-5", "ml.energy.max_telescope_events: expected a non-negative int"),
    ("ml.energy.max_telescope_events=1.5", "ml.energy.max_telescope_events: expected a non-negative int"),
    ("ml.energy.max_rounds=true", "ml.energy.max_rounds: expected a positive int"),
    ("ml.energy.linear_leaf_clip=0.5", "ml.energy.linear_leaf_clip: expected false or a fraction in [0, 0.5)"),
    ("ml.energy.linear_leaf_clip=true", "ml.energy.linear_leaf_clip: expected false"),
    ("ml.particle.linear_leaf_clip=-0.1", "ml.particle.linear_leaf_clip: expected false"),
])
def test_bad_ml_config(override, message):
    with pytest.raises(DvpError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_per_kind_lightgbm_parameters():
    """[ml.<kind>.lightgbm] replaces [ml.lightgbm] key by key for that kind only; the
    energy model defaults to linear trees, the classifier to half the features per tree,
    both at learning rate 0.05 with 50 rounds of patience."""
    ml = load_config().ml
    e, p = M.lightgbm_params("energy", ml), M.lightgbm_params("particle", ml)
    assert e["linear_tree"] is True and e["learning_rate"] == 0.05 and e["objective"] == "regression"
    assert e["feature_fraction"] == 0.9
    assert "linear_tree" not in p and p["feature_fraction"] == 0.5 and p["objective"] == "binary"
    drop = ("linear_tree", "feature_fraction", "objective", "metric")
    assert {k: v for k, v in e.items() if k not in drop} == {k: v for k, v in p.items() if k not in drop}
    assert (ml.early_stopping_rounds_for("energy"), ml.early_stopping_rounds_for("particle")) == (50, 50)
    assert ml.max_rounds_for("energy") == ml.max_rounds_for("particle") == 1000
    ml = load_config(None, ["ml.lightgbm.num_leaves=31", "ml.lightgbm.learning_rate=0.3",
                            "ml.energy.lightgbm.min_data_in_leaf=7", "ml.particle.lightgbm.linear_tree=true",
                            "ml.energy.lightgbm.learning_rate=0.04",
                            "ml.particle.early_stopping_rounds=9", "ml.energy.max_rounds=77",
                            "ml.early_stopping_rounds=5"]).ml
    e, p = M.lightgbm_params("energy", ml), M.lightgbm_params("particle", ml)
    assert e["num_leaves"] == p["num_leaves"] == 31                     # [ml.lightgbm] reaches both kinds
    assert e["learning_rate"] == 0.04 and p["learning_rate"] == 0.3     # ... unless the kind sets the key
    assert e["min_data_in_leaf"] == 7 and p["min_data_in_leaf"] == 50
    assert e["linear_tree"] is True and p["linear_tree"] is True
    assert (ml.early_stopping_rounds_for("energy"), ml.early_stopping_rounds_for("particle")) == (5, 9)
    assert (ml.max_rounds_for("energy"), ml.max_rounds_for("particle")) == (77, 1000)
    # the fits of a plan get the kind's parameters, rounds and patience
    rng = np.random.default_rng(0)
    X, obs, ev = rng.normal(size=(200, 2)).astype(np.float32), np.ones(200, np.int64), np.arange(200)
    for kind, y in (("energy", X[:, 0]), ("particle", (X[:, 0] > 0).astype(float))):
        plan = M.plan_fit(kind, X, y, obs, ev, ml)
        rounds = (ml.max_rounds_for(kind), ml.early_stopping_rounds_for(kind))
        assert {(t.max_rounds, t.esr) for t in plan.tasks} == {rounds}
        assert all(t.params == M.lightgbm_params(kind, ml) for t in plan.tasks)
        assert {t.leaf_clip for t in plan.tasks} == {ml.model(kind).linear_leaf_clip} == {LINEAR_LEAF_CLIP_DEFAULT}
    # early_stopping_rounds 0: no events held out, every fit grows max_rounds trees on all its rows
    ml = load_config(None, ["ml.energy.early_stopping_rounds=0", "ml.max_rounds=7", "ml.max_telescope_events=9",
                            "ml.particle.max_telescope_events=0"]).ml
    assert (ml.max_telescope_events_for("energy"), ml.max_telescope_events_for("particle")) == (9, 0)
    plan = M.plan_fit("energy", X, X[:, 0], obs, ev, ml)
    assert not plan.hold.any() and {t.esr for t in plan.tasks} == {0}
    final = [t for t in plan.tasks if t.k == -1][0]
    assert final.train.all() and not final.valid.any()
    assert all(np.array_equal(t.train, ~t.test) for t in plan.tasks if t.k >= 0)
    assert M._run_fit_task(final)[0].num_trees() == 7
    assert M.plan_fit("particle", X, (X[:, 0] > 0).astype(float), obs, ev, ml).hold.any()
    ml = load_config(None, ["ml.energy.linear_leaf_clip=false", "ml.particle.linear_leaf_clip=0"]).ml
    assert (ml.energy.linear_leaf_clip, ml.particle.linear_leaf_clip) == (None, 0.0)
    assert {t.leaf_clip for t in M.plan_fit("energy", X, X[:, 0], obs, ev, ml).tasks} == {None}


def test_ml_config_round_trip(tmp_path):
    import yaml

    from dvp.config import config_from_data
    overrides = ["ml.energy.lightgbm.num_leaves=15", "ml.particle.lightgbm.learning_rate=0.2",
                 "ml.particle.max_telescope_events=500",
                 "ml.particle.max_rounds=300", "ml.energy.early_stopping_rounds=40", "ml.lightgbm.max_bin=63",
                 "ml.energy.linear_leaf_clip=false", "ml.particle.linear_leaf_clip=0.05"]
    for cfg in (load_config(), load_config(None, overrides)):
        d = cfg.to_dict()
        again = config_from_data(d)
        assert again.to_dict() == d
        f = tmp_path / "c.yaml"
        f.write_text(yaml.safe_dump(d))
        from_file = load_config(f)
        assert from_file.to_dict() == d
        for kind in ("energy", "particle"):
            for c in (again, from_file):
                assert M.lightgbm_params(kind, c.ml) == M.lightgbm_params(kind, cfg.ml)
                assert c.ml.early_stopping_rounds_for(kind) == cfg.ml.early_stopping_rounds_for(kind)
                assert c.ml.max_rounds_for(kind) == cfg.ml.max_rounds_for(kind)
                assert c.ml.max_telescope_events_for(kind) == cfg.ml.max_telescope_events_for(kind)
                assert c.ml.model(kind).linear_leaf_clip == cfg.ml.model(kind).linear_leaf_clip
    d = load_config(None, overrides).to_dict()["ml"]
    assert d["energy"]["lightgbm"] == {"linear_tree": True, "num_leaves": 15}
    assert d["particle"]["lightgbm"] == {"feature_fraction": 0.5, "learning_rate": 0.2}
    assert d["particle"]["max_rounds"] == 300 and d["particle"]["max_telescope_events"] == 500
    assert "max_telescope_events" not in d["energy"]
    assert "early_stopping_rounds" not in d["particle"] and d["energy"]["early_stopping_rounds"] == 40


def test_derived_features_from_config():
    from dvp.ml.features import FeatureSpec
    ml = load_config(None, ['ml.derived.area_deg2="hillas_length_deg * hillas_width_deg"',
                            'ml.derived.log_area="log10(area_deg2)"',
                            'ml.energy.features=["log_area", "hillas_r_deg"]']).ml
    spec = FeatureSpec.from_config(ml.energy, ml.derived)
    assert spec.features == ("log_area", "hillas_r_deg")
    assert [n for n, _ in spec.derived] == ["area_deg2", "log_area"]
    assert "hillas_length_deg" in spec.columns and "log_area" not in spec.columns
    cols = {c: np.array([1.0, 2.0]) for c in spec.columns}
    cols["is_valid"] = np.array([True, False])
    cols["hillas_length_deg"] = np.array([0.5, 0.1])
    env = spec.environment(cols)
    X, usable = spec.matrix(env, 2)
    np.testing.assert_allclose(X[:, 0], np.log10([0.5 * 1.0, 0.1 * 2.0]), rtol=1e-6)
    assert usable.tolist() == [True, False]   # quality: is_valid


# -- end to end on simulated gammas and protons ----------------------------------------------


@pytest.fixture(scope="session")
def ml_products(tmp_path_factory, sim_dl2_gamma, sim_dl2_proton):
    return sim_dl2_gamma, sim_dl2_proton


def _run(*args):
    """Exit code and, for failures, the (stripped) error output."""
    res = CliRunner().invoke(app, list(map(str, args)), catch_exceptions=False)
    return res.exit_code, (res.stderr if res.exit_code else res.output).strip()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, ml_products):
    g, p = ml_products
    out = tmp_path_factory.mktemp("models")
    opts = ["--set", "ml.max_rounds=200", "-q"]
    code, msg = _run("train", "energy", "--signal", g, "-o", out / "energy", *opts)
    assert code == 0, msg
    code, msg = _run("apply-models", g, p, "-m", out / "energy", "-o", out / "gp_energy", "-q")
    assert code == 0, msg
    # separate gamma and proton products with the energy applied, for the classifier
    for src, name in ((g, "g_e"), (p, "p_e")):
        code, msg = _run("apply-models", src, "-m", out / "energy", "-o", out / name, "-q")
        assert code == 0, msg
    code, msg = _run("train", "particle", "--signal", out / "g_e", "--background", out / "p_e",
                     "-o", out / "particle", *opts)
    assert code == 0, msg
    code, msg = _run("apply-models", g, p, "-m", out / "energy", "-m", out / "particle", "-o", out / "both", "-q")
    assert code == 0, msg
    return out


def test_trained_models_beat_chance(trained):
    meta = json.loads((trained / "energy" / M.MODEL_SET_FILE).read_text())
    assert meta["kind"] == "energy" and meta["features"][0] == "log10_intensity"
    for info in meta["telescope_types"].values():
        cv = info["cv"]
        assert len(cv["folds"]) == 5
        # a constant predictor's rmse is the spread of log10(E) (≈ 0.4 dex here)
        assert cv["rmse_log10_mean"] < 0.25 and abs(cv["bias_mean"]) < 0.1
        assert info["sigma_table"]["sigma_log10"]
    pmeta = json.loads((trained / "particle" / M.MODEL_SET_FILE).read_text())
    for info in pmeta["telescope_types"].values():
        assert info["cv"]["auc_mean"] > 0.75, info["cv"]
        assert set(info["particles"]["signal"]) == {"gamma"} and set(info["particles"]["background"]) == {"proton"}
    ev = pl.read_parquet(trained / "both" / "dl2" / "*.parquet")
    ok = ev.filter(pl.col(S.RECO_ENERGY_IS_VALID))
    assert ok.height > 0.5 * ev.filter(pl.col(S.RECO_IS_VALID)).height
    # the energy model is a gamma model: protons get a gamma-equivalent energy, which
    # linear leaves extrapolate (so it is clipped to the training range)
    gam = ok.filter(pl.col(S.PARTICLE) == "gamma")
    r = np.corrcoef(np.log10(gam[S.RECO_ENERGY].to_numpy()), np.log10(gam[S.TRUE_ENERGY].to_numpy()))[0, 1]
    assert r > 0.95
    lo = min(info["log10_energy_range"][0] for info in meta["telescope_types"].values())
    hi = max(info["log10_energy_range"][1] for info in meta["telescope_types"].values())
    le = np.log10(ok[S.RECO_ENERGY].to_numpy())
    assert lo <= le.min() and le.max() <= hi + 1e-12
    gm = ev.filter(pl.col(S.GAMMANESS_IS_VALID))
    auc = roc_auc(gm[S.GAMMANESS].to_numpy(), (gm[S.PARTICLE] == "gamma").to_numpy())
    assert auc > 0.8
    assert ((ev[S.RECO_ENERGY_UNCERT] > 0) | ~ev[S.RECO_ENERGY_IS_VALID]).all()


def test_energy_models_are_linear_trees_evaluated_exactly(trained):
    """The default energy model has linear leaves, bounded to the outputs they gave their
    training rows (less 3 % at each end, the default); apply-models' kernel gives LightGBM's
    predictions bit for bit where no bound acts, and the bounded ones elsewhere, clipped
    to the training range."""
    from dvp.kernels.forest import flatten_lightgbm
    ms = M.ModelSet.load(trained / "energy")
    assert ms.meta["lightgbm_params"]["linear_tree"] is True
    rng = np.random.default_rng(0)
    for tel_type, b in ms.boosters.items():
        assert "is_linear=1" in b.model_to_string()
        info = ms.meta["telescope_types"][tel_type]
        lo, hi = info["log10_energy_range"]
        bounds = info["leaf_output_bounds"]
        forest = flatten_lightgbm(b)
        assert bounds["quantile"] == LINEAR_LEAF_CLIP_DEFAULT
        assert len(bounds["low"]) == len(bounds["high"]) == forest.n_leaves
        low = np.array([-np.inf if v is None else v for v in bounds["low"]])
        high = np.array([np.inf if v is None else v for v in bounds["high"]])
        # every leaf was grown from training rows, so every leaf has both bounds
        assert (low <= high).all() and np.isfinite(low).all() and np.isfinite(high).all()
        # rows far outside the training sample: LightGBM's planes run away, the bounded leaves do not
        X = (rng.normal(size=(500, len(ms.spec.features))) * 1000).astype(np.float32)
        ref = b.predict(X)
        assert ((ref < lo) | (ref > hi)).any()
        got = ms.predict(tel_type, X)
        forest.set_leaf_bounds(low, high)
        np.testing.assert_array_equal(got, np.clip(forest.predict(X), lo, hi))
        assert np.abs(got - np.clip(ref, lo, hi)).max() > 0.1
        tree_leaves = [slice(forest.leaf_offset[t], forest.leaf_offset[t] + forest.n_internal[t] + 1)
                       for t in range(forest.n_trees)]
        span = (forest.init + sum(low[s].min() for s in tree_leaves), forest.init + sum(high[s].max() for s in tree_leaves))
        assert (forest.predict(X) >= span[0] - 1e-9).all() and (forest.predict(X) <= span[1] + 1e-9).all()
        # model sets without bounds (older ones) predict LightGBM's values, clipped to the range
        old = M.ModelSet(ms.kind, ms.spec, ms.weights, ms.boosters,
                         {**ms.meta, "telescope_types": {tel_type: {k: v for k, v in info.items()
                                                                    if k != "leaf_output_bounds"}}})
        np.testing.assert_array_equal(old.predict(tel_type, X), np.clip(ref, lo, hi))
    pms = M.ModelSet.load(trained / "particle")
    assert "linear_tree" not in pms.meta["lightgbm_params"]
    for b in pms.boosters.values():
        assert "is_linear=1" not in b.model_to_string()


def test_apply_output_is_a_complete_product(trained):
    out = trained / "both"
    assert sorted(p.name for p in out.iterdir()) == ["dl1", "dl2", "dl2_telescopes", "instrument",
                                                     "provenance.json", "simulation", "trigger"]
    S.check_file_schema(pa.parquet.read_schema(min((out / "dl2").glob("*.parquet"))), S.DL2_EVENTS, "dl2")
    tel = pl.read_parquet(out / "dl2_telescopes" / "*.parquet")
    ev = pl.read_parquet(out / "dl2" / "*.parquet")
    # the event value is the weighted mean of the valid telescope values (inverse variance
    # for energy, Hillas intensity for gammaness): recompute the gammaness from the
    # telescope column and the DL1 intensity
    inten = pl.read_parquet(out / "dl1" / "*" / "*.parquet", hive_partitioning=False,
                            columns=[S.OBS_ID, S.EVENT_ID, S.TEL_ID, S.HILLAS_INTENSITY])
    g = (tel.filter(pl.col(S.TEL_GAMMANESS_IS_VALID)).join(inten, on=[S.OBS_ID, S.EVENT_ID, S.TEL_ID])
         .group_by(S.OBS_ID, S.EVENT_ID)
         .agg(((pl.col(S.TEL_GAMMANESS) * pl.col(S.HILLAS_INTENSITY)).sum() / pl.col(S.HILLAS_INTENSITY).sum())
              .alias("g"), pl.len().alias("n")))
    j = ev.join(g, on=[S.OBS_ID, S.EVENT_ID], how="inner")
    assert j.height == ev.filter(pl.col(S.GAMMANESS_IS_VALID)).height > 0
    np.testing.assert_allclose(j[S.GAMMANESS].to_numpy(), j["g"].to_numpy(), rtol=1e-12)
    assert (j[S.GAMMANESS_N_TELS].cast(pl.Int64) == j["n"].cast(pl.Int64)).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert [m["kind"] for m in prov["config"]["models"]] == ["energy", "particle"]
    from dvp.info import summarize
    rec = summarize(out)["reconstruction"]
    assert rec["valid gammaness"] == ev.filter(pl.col(S.GAMMANESS_IS_VALID)).height
    assert rec["valid energy"] == ev.filter(pl.col(S.RECO_ENERGY_IS_VALID)).height
    import duckdb
    # invalid events have NaN gammaness: filter on the flag (DuckDB orders NaN above every
    # number, but skips row groups by min/max statistics, which leave NaN out)
    n = duckdb.sql(f"select count(*) from read_parquet('{out}/dl2/*.parquet') "
                   "where gammaness_is_valid and gammaness > 0.5").fetchall()[0][0]
    assert n == ev.filter(pl.col(S.GAMMANESS_IS_VALID) & (pl.col(S.GAMMANESS) > 0.5)).height > 0


def test_apply_tasks_give_the_same_product_on_any_executor(trained, ml_products, tmp_path):
    """apply-models cut into small key-range tasks, on two worker processes, writes the
    tables of the default run (one task per product), part files concatenated; so
    does a Dask LocalCluster; and the per-task records reach provenance.json."""
    from distributed import LocalCluster

    from dvp.runner_ml import apply_models

    from .conftest import product_tables
    g, p = ml_products
    want = product_tables(trained / "both", by_partition=True)
    models = [trained / "energy", trained / "particle"]
    s = apply_models([g, p], models, tmp_path / "pool", workers=2, task_rows=1)
    assert s.n_tasks > 2 and len(list((tmp_path / "pool" / "dl2").glob("*.parquet"))) == s.n_tasks
    assert product_tables(tmp_path / "pool", by_partition=True) == want
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        apply_models([g, p], models, tmp_path / "dask", scheduler=cluster.scheduler_address, task_rows=1)
    assert product_tables(tmp_path / "dask", by_partition=True) == want
    prov = json.loads((tmp_path / "dask" / "provenance.json").read_text())
    assert len(prov["tasks"]) == s.n_tasks and prov["counts"]["valid_predictions"]["particle"] > 0


def test_apply_on_rows_out_of_order(trained, ml_products, tmp_path):
    """Rows in reverse event order (DL1, dl2 and dl2_telescopes) take the join instead of
    the merge of sorted keys (dvp.kernels.keys) and give the same values, row for row
    once sorted by key: every table of the product."""
    import pyarrow.parquet as pq

    from dvp.runner_ml import apply_models

    from .conftest import product_tables
    g, _ = ml_products
    shuffled = tmp_path / "reversed"
    shutil.copytree(g, shuffled)
    for d in ("dl1", "dl2", "dl2_telescopes"):
        for f in (shuffled / d).rglob("*.parquet"):
            t = pq.read_table(f)
            pq.write_table(t.take(np.arange(t.num_rows)[::-1].copy()), f)
    models = [trained / "energy", trained / "particle"]
    outs = [apply_models([src], models, tmp_path / name).output for src, name in ((g, "a"), (shuffled, "b"))]
    a, b = (product_tables(o, by_partition=True, by_key=True) for o in outs)
    assert "dl2" in a and "dl2_telescopes" in a and a == b
    assert pl.read_parquet(outs[1] / "dl2" / "*.parquet")[S.GAMMANESS_IS_VALID].sum() > 0


def test_same_seed_same_models(trained, ml_products, tmp_path):
    g, _ = ml_products
    code, msg = _run("train", "energy", "--signal", g, "-o", tmp_path / "again", "--set", "ml.max_rounds=200", "-q")
    assert code == 0, msg
    for f in (trained / "energy").glob("*.lgb.txt"):
        assert (tmp_path / "again" / f.name).read_text() == f.read_text()


def test_mismatched_features_fail_cleanly(trained, ml_products, tmp_path):
    g, _ = ml_products
    bad = tmp_path / "bad"
    shutil.copytree(trained / "energy", bad)
    meta = json.loads((bad / M.MODEL_SET_FILE).read_text())
    meta["features"][0], meta["features"][1] = meta["features"][1], meta["features"][0]
    (bad / M.MODEL_SET_FILE).write_text(json.dumps(meta))
    code, msg = _run("apply-models", g, "-m", bad, "-o", tmp_path / "out")
    assert code == 1 and "model features differ" in msg and "\n" not in msg and msg.startswith("dvp: error:")
    assert not (tmp_path / "out").exists()
    # a particle model needs the reconstructed energy: without an energy model it is a one-line error
    code, msg = _run("apply-models", g, "-m", trained / "particle", "-o", tmp_path / "out2")
    assert code == 1 and "reco_energy_tev" in msg and "apply an energy model first" in msg
    assert not (tmp_path / "out2").exists()
    (tmp_path / "empty").mkdir()
    code, msg = _run("apply-models", g, "-m", tmp_path / "empty", "-o", tmp_path / "out3")
    assert code == 1 and "not a dvp model set" in msg
    code, msg = _run("train", "particle", "--signal", g, "-o", tmp_path / "m")
    assert code == 1 and "--background" in msg


def test_broken_model_files_fail_cleanly_at_load(trained, ml_products, tmp_path):
    """Model files are checked when the set is loaded, without LightGBM's parser: a
    truncated or foreign file is a one-line error naming it, before any output."""
    g, _ = ml_products
    for name, damage in [("truncated", lambda t: t[: len(t) // 2]),
                         ("no_end", lambda t: t.split("end of trees")[0]),
                         ("foreign", lambda t: "not a model\n" + t)]:
        bad = tmp_path / name
        shutil.copytree(trained / "energy", bad)
        f = min(bad.glob("*.lgb.txt"))
        f.write_text(damage(f.read_text()))
        code, msg = _run("apply-models", g, "-m", bad, "-o", tmp_path / f"out_{name}")
        assert code == 1 and "\n" not in msg and str(f) in msg and "cannot load LightGBM model" in msg, msg
        assert not (tmp_path / f"out_{name}").exists()


def test_applying_models_does_not_import_lightgbm(trained, ml_products):
    """A loaded model set predicts from its model files' text (the forest kernel reads
    LightGBM's text format), so apply-models and its workers skip LightGBM's import
    (with scikit-learn and SciPy, about a second per process); asking for a booster
    still gives LightGBM's, predicting the same."""
    code = f"""
import sys, numpy as np
from dvp.ml.model import ModelSet
ms = ModelSet.load({str(trained / "energy")!r})
X = np.random.default_rng(0).normal(size=(100, len(ms.spec.features)))
preds = {{t: ms.predict(t, X) for t in ms.boosters}}
assert 'lightgbm' not in sys.modules, 'imported'
b = next(iter(ms.boosters.values()))
assert 'lightgbm' in sys.modules and type(b).__name__ == 'Booster'
print('ok')
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    ms = M.ModelSet.load(trained / "particle")
    X = np.random.default_rng(1).normal(size=(200, len(ms.spec.features)))
    for tel_type, b in ms.boosters.items():
        np.testing.assert_allclose(ms.predict(tel_type, X), b.predict(X), rtol=0, atol=1e-15)


def test_folds_in_parallel_give_the_same_models():
    """The K + 1 fits run as tasks: two worker processes give the same trees and
    out-of-fold predictions as one process."""
    rng = np.random.default_rng(4)
    n = 2000
    obs, ev = np.ones(n, np.int64), rng.integers(0, 500, n)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = X[:, 0] - X[:, 1] ** 2 + 0.1 * rng.normal(size=n)
    ml = load_config(None, ["ml.max_rounds=40"]).ml
    a = M.fit("energy", X, y, obs, ev, ml, log10_intensity=np.zeros(n), workers=1)
    b = M.fit("energy", X, y, obs, ev, ml, log10_intensity=np.zeros(n), workers=2)
    assert a.booster.model_to_string() == b.booster.model_to_string()
    np.testing.assert_array_equal(a.oof, b.oof)
    assert a.info["cv"] == b.info["cv"]


def test_fast_preset_grows_a_fixed_number_of_trees(trained, ml_products, tmp_path):
    """configs/ml-fast.toml trains its own feature subsets with a fixed number of trees
    and no early-stopping hold-out; the particle cap samples whole array events."""
    from pathlib import Path
    preset = Path(__file__).resolve().parent.parent / "configs" / "ml-fast.toml"
    ml, default = load_config(preset).ml, load_config().ml
    assert set(ml.energy.features) < set(default.energy.features)
    assert set(ml.particle.features) < set(default.particle.features)
    assert ml.early_stopping_rounds_for("energy") == ml.early_stopping_rounds_for("particle") == 0
    g, _ = ml_products
    code, msg = _run("train", "energy", "--signal", g, "-o", tmp_path / "energy", "--config", preset, "-q")
    assert code == 0, msg
    meta = json.loads((tmp_path / "energy" / M.MODEL_SET_FILE).read_text())
    assert meta["features"] == list(ml.energy.features)
    for tel_type, info in meta["telescope_types"].items():
        assert info["n_early_stopping"] == 0 and info["n_train"] == info["n_events"]
        model = (tmp_path / "energy" / info["file"]).read_text()
        assert model.count("\nTree=") == ml.max_rounds_for("energy") == info["best_iteration"]
        assert info["cv"]["rmse_log10_mean"] < 0.3          # a constant predictor: ≈ 0.4 dex
    # the particle cap, set below the sample: fewer telescope events, whole array events
    full = json.loads((trained / "particle" / M.MODEL_SET_FILE).read_text())["telescope_types"]
    cap = min(info["n_events"] for info in full.values()) // 2
    code, msg = _run("train", "particle", "--signal", trained / "g_e", "--background", trained / "p_e",
                     "-o", tmp_path / "particle", "--config", preset,
                     "--set", f"ml.particle.max_telescope_events={cap}", "--no-cv-predictions", "-q")
    assert code == 0, msg
    assert (tmp_path / "energy" / M.CV_PREDICTIONS_FILE).is_file()
    assert not (tmp_path / "particle" / M.CV_PREDICTIONS_FILE).exists()     # --no-cv-predictions
    pmeta = json.loads((tmp_path / "particle" / M.MODEL_SET_FILE).read_text())
    for tel_type, info in pmeta["telescope_types"].items():
        assert 0.5 * cap < info["n_events"] < 1.5 * cap < full[tel_type]["n_events"]
        assert info["cv"]["auc_mean"] > 0.7, info["cv"]


def test_cv_predictions_are_the_out_of_fold_predictions(trained, capsys, tmp_path):
    """cv_predictions.parquet (ctapipe's --cv-output): one row per training telescope
    event, its array event's fold, the truth, and the prediction of the fold model that did
    not see it; the scores recomputed from the file are model_set.json's."""
    import pyarrow.parquet as pq

    from dvp.ml.report import main as report, summarize_cv
    for kind, value in (("energy", S.TEL_RECO_ENERGY), ("particle", S.TEL_GAMMANESS)):
        f = trained / kind / M.CV_PREDICTIONS_FILE
        S.check_file_schema(pq.read_schema(f), S.CV_PREDICTIONS, str(f))
        cv = pl.read_parquet(f)
        meta = json.loads((trained / kind / M.MODEL_SET_FILE).read_text())
        assert value in cv.columns and S.TRUE_ENERGY in cv.columns
        assert (S.RECO_ENERGY in cv.columns) == (kind == "particle")    # the classifier reads it
        # no array event in two folds, whatever its telescopes' types
        assert cv.group_by(S.OBS_ID, S.EVENT_ID).agg(pl.col(S.CV_FOLD).n_unique())[S.CV_FOLD].max() == 1
        assert cv.unique([S.OBS_ID, S.EVENT_ID, S.TEL_ID]).height == cv.height
        for tel_type, info in meta["telescope_types"].items():
            t = cv.filter(pl.col(S.TEL_TYPE) == tel_type)
            assert t.height == info["n_events"] and set(t[S.CV_FOLD].unique()) == set(range(5))
            pred, truth = t[value].to_numpy(), t[S.TRUE_ENERGY].to_numpy()
            if kind == "energy":
                assert t[S.IS_SIGNAL].all() and (t[S.PARTICLE] == "gamma").all()
                r = np.log10(pred) - np.log10(truth)
                np.testing.assert_allclose(np.sqrt(np.mean(r ** 2)), info["cv_overall"]["rmse_log10"], rtol=1e-12)
                lo, hi = info["log10_energy_range"]
                assert lo - 1e-12 <= np.log10(pred).min() and np.log10(pred).max() <= hi + 1e-12
            else:
                assert set(t.filter(~pl.col(S.IS_SIGNAL))[S.PARTICLE].unique()) == {"proton"}
                assert roc_auc(pred, t[S.IS_SIGNAL].to_numpy()) == pytest.approx(info["cv_overall"]["auc"], abs=1e-12)
            # out of fold: not what the final model, which saw these events, predicts
            ms = M.ModelSet.load(trained / kind)
            X, ok = ms.spec.matrix(ms.spec.environment(_cv_features(trained, kind, t)), t.height)
            final = ms.predict(tel_type, X[ok])
            got = np.log10(pred[ok]) if kind == "energy" else pred[ok]
            assert ok.all() and np.abs(final - got).mean() > 1e-3
        table = summarize_cv(trained / kind)
        summed = table.filter(pl.col(table.columns[1]) == "all")["events"].sum()
        assert summed == (cv.height if kind == "particle" else cv.filter(pl.col(S.IS_SIGNAL)).height)
    report([*(str(trained / d) for d in ("energy", "particle", "both")), "--plot", str(tmp_path / "r.png")])
    out = capsys.readouterr().out
    assert out.count("cross-validation") == 2 and "resolution" in out and "auc" in out
    assert out.count("share of the split gain") == 2
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cv_features(trained, kind, rows):
    """The feature columns of ``rows`` (cv_predictions rows) from the training products."""
    from dvp.ml.dataset import columns_as_numpy, load_telescope_events
    ms = M.ModelSet.load(trained / kind)
    tel_type = rows[S.TEL_TYPE][0]
    srcs = [trained / "g_e", trained / "p_e"] if kind == "particle" else [trained / "g_e"]
    df = pl.concat([load_telescope_events(p, tel_type, sorted(ms.spec.columns)) for p in srcs], how="vertical_relaxed")
    df = rows.select(S.OBS_ID, S.EVENT_ID, S.TEL_ID).join(df, on=[S.OBS_ID, S.EVENT_ID, S.TEL_ID], how="left",
                                                           maintain_order="left")
    return columns_as_numpy(df)


def test_feature_importances_count_the_model_files_splits(trained):
    """model_set.json's split importance is each feature's number of splits in the saved
    trees (parsed from LightGBM's text file); the report's gain shares sum to 1."""
    from dvp.ml.report import feature_importance
    for kind in ("energy", "particle"):
        meta = json.loads((trained / kind / M.MODEL_SET_FILE).read_text())
        for info in meta["telescope_types"].values():
            counts = np.zeros(len(meta["features"]), np.int64)
            for line in (trained / kind / info["file"]).read_text().splitlines():
                if line.startswith("split_feature=") and line != "split_feature=":
                    np.add.at(counts, np.array(line.split("=")[1].split(), np.int64), 1)
            imp = info["feature_importance"]
            assert list(imp["split"]) == list(imp["gain"]) == meta["features"]
            assert list(imp["split"].values()) == counts.tolist() and counts.sum() > 0
            assert all(g >= 0 for g in imp["gain"].values())
            assert all((g > 0) == (c > 0) for g, c in zip(imp["gain"].values(), counts))
        table = feature_importance(trained / kind)
        assert table["feature"].to_list()[0] in meta["features"]
        np.testing.assert_allclose(table.drop("feature").sum().to_numpy(), 1.0)


def test_report_bad_inputs_are_one_line_errors(trained, ml_products, tmp_path):
    """python -m dvp.ml.report on something it cannot read: exit 1 and one line naming
    the path and the problem, no traceback; the library functions raise DvpError."""
    from dvp.ml.report import summarize, summarize_cv
    g, _ = ml_products
    no_cv = tmp_path / "no_cv"
    shutil.copytree(trained / "energy", no_cv)
    (no_cv / M.CV_PREDICTIONS_FILE).unlink()
    cases = [([str(tmp_path / "missing")], "not a DL2 product or model set"),
             ([str(no_cv)], "no cross-validation predictions"),
             ([str(g)], "no reco_energy_tev")]
    for args, problem in cases:
        res = subprocess.run([sys.executable, "-m", "dvp.ml.report", *args], capture_output=True, text=True)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1, res.stderr
        assert problem in lines[0] and args[0] in lines[0] and res.stdout.count("\n") <= 1
    with pytest.raises(DvpError, match="no cross-validation predictions"):
        summarize_cv(no_cv)
    with pytest.raises(DvpError, match="not a DL2 product"):
        summarize([tmp_path / "missing"])
