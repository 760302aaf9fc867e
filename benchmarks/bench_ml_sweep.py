"""LightGBM settings for the energy model: training time, prediction speed, resolution.

Usage: python benchmarks/bench_ml_sweep.py --gamma G_DL2   (``make ml-data`` makes it)

Per telescope type, on the same split as bench_ml.py (2/3 of the gamma array events to
train, 1/3 to test), one thread: ctapipe's ExtraTrees (10 trees, depth 10) as the
reference, then LightGBM with dvp's energy parameters (``[ml.lightgbm]`` with
``[ml.energy.lightgbm]`` over it) changed as each row says: leaf type, learning rates,
depth limits, leaf counts, early-stopping patience, and energy-flattening weights.
Prints seconds to train, trees, dvp forest-kernel prediction speed and the
per-telescope resolution in three true-energy bins (predictions clipped to the
training range, as dvp does).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ml import S, FeatureSpec, _lgb, group_uniform, group_validation, load, load_config  # noqa: E402

from dvp.kernels.forest import flatten_lightgbm  # noqa: E402
from dvp.ml.metrics import bias_resolution  # noqa: E402

CONSTANT = dict(linear_tree=False, learning_rate=0.1)
#: (LightGBM parameters over dvp's energy ones, early-stopping rounds; None: dvp's)
GRID = [
    (dict(), None),                                                   # dvp's default: linear, lr 0.05, patience 50
    (dict(learning_rate=0.1), 20),
    (dict(learning_rate=0.1), 50),
    (dict(CONSTANT, max_depth=-1), 20),
    (dict(CONSTANT), 20),                                             # dvp's default before linear leaves
    (dict(CONSTANT, learning_rate=0.2), 20),
    (dict(CONSTANT, learning_rate=0.3, num_leaves=31, max_depth=-1, min_data_in_leaf=20, max_bin=63,
          bagging_fraction=0.5), 20),
    (dict(CONSTANT, learning_rate=0.5, num_leaves=63, max_depth=-1, min_data_in_leaf=10, max_bin=63,
          bagging_fraction=0.5), 20),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", required=True, type=Path)
    args = ap.parse_args()
    from sklearn.ensemble import ExtraTreesRegressor
    ml = load_config(None, []).ml
    espec = FeatureSpec.from_config(ml.energy, ml.derived)
    lgb = _lgb()
    for t, c in sorted(load(args.gamma, ml, 1).items()):
        n = len(c[S.OBS_ID])
        X, u = espec.matrix(espec.environment(c), n)
        y = np.log10(c[S.TRUE_ENERGY])
        part = (group_uniform(c[S.OBS_ID], c[S.EVENT_ID], 0, 9) * 3).astype(int)
        tr, te = u & (part != 2), u & (part == 2)
        hold = group_validation(c[S.OBS_ID][tr], c[S.EVENT_ID][tr], 0.1, 0)
        Xt, yt = X[tr], y[tr]

        def score(pred):
            et, er = 10 ** y[te], 10 ** pred
            bins = [bias_resolution(er[(et >= lo) & (et < hi)], et[(et >= lo) & (et < hi)])[1]
                    for lo, hi in [(0.03, 0.3), (0.3, 3), (3, 100)]]
            return " ".join(f"{b:.3f}" for b in bins) + f" | all {bias_resolution(er, et)[1]:.3f}"

        print(f"\n{t}: {tr.sum():,} training / {te.sum():,} test telescope events; "
              "resolution per telescope in 0.03-0.3 / 0.3-3 / 3-100 TeV | all")
        t0 = time.perf_counter()
        et_ = ExtraTreesRegressor(n_estimators=10, max_depth=10, n_jobs=1, random_state=0).fit(np.nan_to_num(Xt), yt)
        print(f"  ExtraTrees(10, depth 10)  train {time.perf_counter() - t0:5.2f} s              "
              f"{score(et_.predict(np.nan_to_num(X[te])))}")
        h, edges = np.histogram(yt, bins=20)
        flat = 1.0 / np.maximum(h[np.clip(np.digitize(yt, edges) - 1, 0, len(h) - 1)], 1)
        for g, esr in GRID:
            esr = ml.early_stopping_rounds_for("energy") if esr is None else esr
            for wname, w in (("", None), (" flat-E weights", np.sqrt(flat / flat.mean()))):
                p = dict(ml.lightgbm_for("energy"), **g, objective="regression", metric="l2", seed=0,
                         deterministic=True, verbosity=-1, num_threads=1, feature_pre_filter=False)
                t0 = time.perf_counter()
                d = lgb.Dataset(Xt[~hold], yt[~hold], weight=None if w is None else w[~hold])
                dv = lgb.Dataset(Xt[hold], yt[hold], weight=None if w is None else w[hold], reference=d)
                b = lgb.train(p, d, ml.max_rounds_for("energy"), valid_sets=[dv],
                              callbacks=[lgb.early_stopping(esr, verbose=False)])
                dt = time.perf_counter() - t0
                f = flatten_lightgbm(b)
                Xs = np.ascontiguousarray(X[te])
                f.predict(Xs[:8])
                t1 = time.perf_counter()
                f.predict(Xs)
                speed = len(Xs) / (time.perf_counter() - t1)
                label = ", ".join(f"{k}={v}" for k, v in {**g, "esr": esr}.items())
                if not g and esr == ml.early_stopping_rounds_for("energy"):
                    label = "dvp's default (" + ", ".join(f"{k}={v}" for k, v in ml.model("energy").lightgbm.items()) \
                        + f", esr={esr})"
                pred = np.clip(f.predict(Xs), yt.min(), yt.max())
                print(f"  {label + wname:95s} train {dt:5.2f} s, {b.num_trees():4d} trees, {speed:9,.0f} ev/s  "
                      f"{score(pred)}", flush=True)


if __name__ == "__main__":
    main()
