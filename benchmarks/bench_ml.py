"""dvp's LightGBM models against ctapipe's and lstchain's scikit-learn choices, same data, one run.

Usage::

    python benchmarks/bench_ml.py --gamma G_DL2 --proton P_DL2 [--figures DIR] [--threads 1] [--seed 0]
        [--repeats 5] [--speed-rounds 20] [--bootstrap 300]
        [--energy-weights intensity|none|aspect_weighted_intensity]
        [--gammaness-weights intensity|none|aspect_weighted_intensity]
        [--baseline-gammaness-weights intensity|none|aspect_weighted_intensity]

G_DL2 / P_DL2 are DL2 product directories (``dvp dl1-to-dl2`` output) of simulated
gammas and protons; ``make ml-data`` makes the ones in benchmarks/RESULTS.md.

Split (by array event, splitmix64 hash, so no shower is in two parts): gammas 1/3 energy
training, 1/3 classifier training, 1/3 test; protons 1/2 classifier training, 1/2 test.
Per telescope type, on exactly the same rows and features (dvp's default feature list;
dvp fast: its subset):

- **dvp**: LightGBM with dvp's configured parameters (``dvp.config``, ``--config`` /
  ``--set`` as for ``dvp train``; by default energy: linear trees, learning rate 0.05,
  early stopping after 50 rounds, leaves bounded to their training outputs; particle:
  constant leaves, learning rate 0.05, half the features per tree, early stopping after 50
  rounds), early stopping on 10 % of the training events, energies clipped to the
  training range as ``dvp apply-models`` does;
- **dvp fast**: the same flow with ``configs/ml-fast.toml`` (``--fast-config``): its own
  features (a subset of the defaults), a fixed 20 / 16 trees with no early-stopping
  hold-out, 12,000 energy and 20,000 classifier events per type; its classifier reads
  its own energy;
- **ctapipe**: scikit-learn ExtraTrees, 10 trees, max depth 10 (ctapipe's example config);
- **lstchain**: scikit-learn RandomForest as lstchain's standard config (energy: 150 trees,
  depth 50, min_samples_leaf 2; particle: 100 trees, depth 100, min_samples_leaf 2,
  max_features sqrt).

All models train on one thread (``--threads``). Every model but the RandomForest (minutes)
is fitted ``--repeats`` times in a row and timed by the median of its fits; the totals
of each repeat and the ExtraTrees / dvp fast ratio of each are printed too. Those
repeats run one model after the other, over a minute apart, so a shared machine that slows
down meanwhile moves the ratio: ``--speed-rounds`` then times dvp fast against
ExtraTrees interleaved, each round fitting all four models of both in alternating
(ABBA) order, and prints the median and range of the per-round ratio. Telescope
predictions are combined per array event the same way for every method: the mean of
log10 E and of gammaness, by default both weighted by Hillas intensity
(``--energy-weights``, ``--gammaness-weights``: ``none`` gives the unweighted mean,
ctapipe ``StereoMeanCombiner``'s default, ``aspect_weighted_intensity`` intensity × length
/ width; intensity is dvp's default for gammaness; ``--baseline-gammaness-weights none``
combines the two baselines' gammaness unweighted instead, as ctapipe does by default, and
dvp's by ``--gammaness-weights``: each framework's default combination). dvp is also
shown with its default inverse-variance energy weights. The classifier's
reconstructed-energy feature comes from dvp's energy model for every method but dvp
fast, so the classifier comparison isolates the classifier; AUC is binned by each
method's own reconstructed energy (the events column counts dvp's bins). Prints
per-energy-bin energy bias and resolution, ROC AUC, training times, dvp's prediction
speed and how many proton telescope events dvp's energy model puts outside the gamma
training range.

Statistical uncertainty: a paired bootstrap (``--bootstrap`` resamplings of the test array
events, every method on the same resampled events) gives, per bin, the central 95 %
interval of the difference in resolution and in AUC between dvp and each baseline (dvp
against the RandomForest and ExtraTrees, dvp fast against ExtraTrees); a bin where dvp is
less accurate is called significant when that interval excludes zero.

Figure (``--figures``, default benchmarks/figures): ``ml_comparison.png``, resolution and
bias per true-energy bin and 1 − ROC AUC per reconstructed-energy bin (log scale, so that
differences near AUC = 1 show), with the bootstrap's central 95 % per method as error
bars, and the training time of each method against a fifth of ExtraTrees'.

It also times LightGBM's fixed cost per model, outside dvp's timing: constructing the
training ``Dataset`` (binning every value) before any tree is grown, against a fifth of
ExtraTrees' time, the most a model may take to be 5× faster to train.
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvp import schemas as S  # noqa: E402
from dvp.config import load_config  # noqa: E402
from dvp.kernels.combine import weighted_mean  # noqa: E402
from dvp.kernels.forest import flatten_lightgbm  # noqa: E402
from dvp.kernels.stereo import group_events  # noqa: E402
from dvp.ml.dataset import columns_as_numpy, load_telescope_events, telescope_types  # noqa: E402
from dvp.ml.features import FeatureSpec  # noqa: E402
from dvp.ml.metrics import bias_resolution, roc_auc  # noqa: E402
from dvp.ml.model import (_lgb, _train_one, class_weights, early_stopping_holdout, leaf_bounds,  # noqa: E402
                          lightgbm_params, sigma_table)
from dvp.ml.split import group_sample, group_uniform  # noqa: E402
from dvp.stages.dl2_models import combination_weights  # noqa: E402

E_EDGES = np.array([0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0])
METHODS = ("dvp", "dvp fast", "ctapipe", "lstchain")
FAST_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ml-fast.toml"
#: added to the protons' obs_id: the gamma and proton runs number their obs_ids alike
PROTON_OBS_OFFSET = 1_000_000


def load(product, mls, label):
    """Per telescope type: the feature inputs of every config in ``mls`` + targets."""
    need = {S.TRUE_ENERGY, S.HILLAS_INTENSITY}
    for ml in mls:
        for m in (ml.energy, ml.particle):
            need |= {c for c in FeatureSpec.from_config(m, ml.derived).columns if c != S.RECO_ENERGY}
    cols_needed = sorted(need)
    out = {}
    for t in telescope_types(product):
        df = load_telescope_events(product, t, cols_needed)
        c = columns_as_numpy(df)
        c["label"] = np.full(df.height, label)
        out[t] = c
    return out


def split_parts(cols, seed):
    """``(part, obs_id)`` per row of ``cols`` (gammas and protons, ``cols["label"]`` 1 / 0):
    0 / 1 / 2 = energy training / classifier training / test, a third of the gamma array
    events each and half of the proton ones in 1 and 2; and the obs_ids of both in one
    space (the gamma and proton runs number theirs alike)."""
    obs2 = cols[S.OBS_ID] + PROTON_OBS_OFFSET * (1 - cols["label"])
    u = group_uniform(obs2, cols[S.EVENT_ID], seed, salt=9)
    return np.where(cols["label"] == 1, np.minimum((u * 3).astype(int), 2), 1 + (u >= 0.5)), obs2


def models(kind, threads, seed):
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
    if kind == "energy":
        return {"ctapipe": ExtraTreesRegressor(n_estimators=10, max_depth=10, n_jobs=threads, random_state=seed),
                "lstchain": RandomForestRegressor(n_estimators=150, max_depth=50, min_samples_leaf=2, max_features=1.0,
                                                  n_jobs=threads, random_state=seed)}
    return {"ctapipe": ExtraTreesClassifier(n_estimators=10, max_depth=10, n_jobs=threads, random_state=seed),
            "lstchain": RandomForestClassifier(n_estimators=100, max_depth=100, min_samples_leaf=2, max_features="sqrt",
                                               n_jobs=threads, random_state=seed)}


def repeated(fit, repeats):
    """Call ``fit()`` (returning ``(predict, seconds, model)``) ``repeats`` times:
    ``(predict, median seconds, model, all seconds)`` of the last call (fits are seeded
    and deterministic, so every call gives the same model)."""
    times = []
    for _ in range(max(1, repeats)):
        fn, dt, model = fit()
        times.append(dt)
    return fn, float(np.median(times)), model, times


def dvp_fit(kind, X, y, obs, ev, ml, threads):
    """``(predict function, seconds to train, booster)`` of one dvp model as ``dvp train``'s
    final model: early stopping on held-out array events (none if the config turns it
    off), then, for linear leaves, the leaf bounds; energies clipped to the training range
    as apply-models does."""
    lgb = _lgb()
    params = dict(lightgbm_params(kind, ml), num_threads=threads)
    w = class_weights(y) if kind == "particle" else np.ones(len(y))
    hold = early_stopping_holdout(kind, obs, ev, ml)
    t0 = time.perf_counter()
    b = _train_one(lgb, params, X, y, w, ~hold, hold, ml.max_rounds_for(kind), ml.early_stopping_rounds_for(kind))
    clip = ml.model(kind).linear_leaf_clip
    forest = None
    if clip is not None and params.get("linear_tree"):   # part of dvp train: the leaf bounds
        forest, _ = leaf_bounds(b, X[~hold], clip)
    dt = time.perf_counter() - t0
    if kind == "energy":   # bounded leaves, clipped to the training range: as ModelSet.predict
        lo, hi = float(y.min()), float(y.max())
        if forest is not None:
            return (lambda Z, f=forest: np.clip(f.predict(Z), lo, hi)), dt, b
        return (lambda Z, b=b: np.clip(b.predict(Z, num_threads=threads), lo, hi)), dt, b
    return (lambda Z, b=b: b.predict(Z, num_threads=threads)), dt, b


def train_all(kind, X, y, obs, ev, ml, threads, repeats):
    """{method: (predict function, median seconds to train, model, every fit's seconds)}
    on the same rows (the RandomForest fitted once, the others ``repeats`` times),
    {"dataset dvp" / "dataset coarse": seconds to construct LightGBM's training Dataset}
    and {"fit ctapipe": the ExtraTrees fit itself, for the interleaved timing}."""
    lgb = _lgb()
    params = dict(lightgbm_params(kind, ml), num_threads=threads)
    w = class_weights(y) if kind == "particle" else np.ones(len(y))
    hold = early_stopping_holdout(kind, obs, ev, ml)
    # LightGBM's fixed cost, not counted in dvp's time: the Dataset with dvp's parameters
    # and with a binning already too coarse for RandomForest accuracy (15 bins found from
    # 1,000 sampled rows; RESULTS.md)
    coarse = dict(max_bin=15, bin_construct_sample_cnt=1000, enable_bundle=False, num_threads=threads,
                  verbosity=-1, feature_pre_filter=False)
    out = {f"dataset {k}": min(_timed(lambda: lgb.Dataset(X[~hold], y[~hold], weight=w[~hold], params=p).construct())
                               for _ in range(3)) for k, p in (("dvp", params), ("coarse", coarse))}
    out["dvp"] = repeated(lambda: dvp_fit(kind, X, y, obs, ev, ml, threads), repeats)
    Xs = np.nan_to_num(X)
    for name in ("ctapipe", "lstchain"):   # the RandomForest takes minutes: fitted once
        out[f"fit {name}"] = partial(sk_fit, kind, name, Xs, y, w, threads, ml.seed)
        out[name] = repeated(out[f"fit {name}"], repeats if name == "ctapipe" else 1)
    return out


def sk_fit(kind, name, Xs, y, w, threads, seed):
    """``(predict function, seconds to train, model)`` of the scikit-learn baseline ``name``
    (:func:`models`) on ``Xs`` (NaN already read as 0; the predict function does that to
    its rows), weighted by ``w`` (particle)."""
    m = models(kind, threads, seed)[name]
    t0 = time.perf_counter()
    if kind == "particle":
        m.fit(Xs, y, sample_weight=w)
        fn = (lambda Z, m=m: m.predict_proba(np.nan_to_num(Z))[:, 1])
    else:
        m.fit(Xs, y)
        fn = (lambda Z, m=m: m.predict(np.nan_to_num(Z)))
    return fn, time.perf_counter() - t0, m


def interleaved_ratio(pairs, rounds):
    """ExtraTrees / dvp fast training time measured ``rounds`` times, each round fitting
    every model of both once (``pairs``: per model, the dvp fast fit and the ExtraTrees
    fit, each returning ``(predict, seconds, model)``), in ABBA order so that a machine
    slowing down or speeding up during the run weighs on both alike. Returns the per-round
    totals ``(dvp fast seconds, ExtraTrees seconds)``."""
    out = []
    for r in range(rounds):
        tot = [0.0, 0.0]
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            for pair in pairs:
                tot[i] += pair[i]()[1]
        out.append(tuple(tot))
    return np.array(out)


def combine(obs, ev, tel, value, weight):
    order, starts = group_events(obs, ev, tel)
    mean, _, n = weighted_mean(starts, value[order], weight[order], np.zeros(len(value)), np.isfinite(value[order]))
    first = order[starts[:-1]]
    return obs[first], ev[first], mean, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", required=True, type=Path)
    ap.add_argument("--proton", required=True, type=Path)
    ap.add_argument("--figures", type=Path, default=Path(__file__).parent / "figures")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, default=None, help="dvp config file (its [ml] section)")
    ap.add_argument("--set", action="append", default=[], help="dvp config override, e.g. "
                    "ml.energy.lightgbm.linear_tree=false (repeatable)")
    ap.add_argument("--repeats", type=int, default=5, help="fits of each model but the RandomForest "
                    "(default 5); training times are their medians")
    ap.add_argument("--speed-rounds", type=int, default=20, help="rounds of the interleaved timing of dvp fast "
                    "against ExtraTrees (default 20; 0: none): each round fits all four models of both, in "
                    "alternating order; the ratio of each round is printed")
    ap.add_argument("--bootstrap", type=int, default=300, help="paired bootstrap resamplings of the test "
                    "events for the uncertainty of each difference to the baselines (default 300; 0: none)")
    for kind in ("energy", "gammaness"):
        ap.add_argument(f"--{kind}-weights", choices=("intensity", "none", "aspect_weighted_intensity"),
                        default="intensity", help=f"weights of every method's per-event mean of {kind} (default "
                        "intensity; none: unweighted, ctapipe StereoMeanCombiner's default; "
                        "aspect_weighted_intensity: intensity x length / width, as dvp apply-models)")
    ap.add_argument("--baseline-gammaness-weights", choices=("intensity", "none", "aspect_weighted_intensity"),
                    default=None, help="weights of ExtraTrees' and the RandomForest's per-event gammaness mean "
                    "instead of --gammaness-weights (e.g. none with the default intensity: each framework's "
                    "default combination)")
    ap.add_argument("--fast-config", type=Path, default=FAST_CONFIG,
                    help="config of the 'dvp fast' column (default: configs/ml-fast.toml)")
    args = ap.parse_args()
    ml = load_config(args.config, [*args.set, f"ml.seed={args.seed}"]).ml
    ml_f = load_config(args.fast_config, [f"ml.seed={args.seed}"]).ml
    print("dvp LightGBM parameters: energy " + ", ".join(
        f"{k}={v}" for k, v in sorted(ml.lightgbm_for("energy").items())) +
        f", early_stopping_rounds={ml.early_stopping_rounds_for('energy')}; particle " + ", ".join(
        f"{k}={v}" for k, v in sorted(ml.lightgbm_for("particle").items())) +
        f", early_stopping_rounds={ml.early_stopping_rounds_for('particle')}")
    print(f"per-event combination, every method: mean of log10 E weighted by {args.energy_weights}, "
          f"of gammaness by {args.gammaness_weights}")
    espec = FeatureSpec.from_config(ml.energy, ml.derived)
    pspec = FeatureSpec.from_config(ml.particle, ml.derived)
    fespec = FeatureSpec.from_config(ml_f.energy, ml_f.derived)
    fpspec = FeatureSpec.from_config(ml_f.particle, ml_f.derived)
    t0 = time.perf_counter()
    gam, pro = load(args.gamma, (ml, ml_f), 1), load(args.proton, (ml, ml_f), 0)
    print(f"loaded features in {time.perf_counter() - t0:.1f} s")
    _warm_up(args.threads)
    types = sorted(set(gam) & set(pro))
    # (obs, ev, tel, label, log10E_pred, gammaness, intensity, part, sigma, aspect-weighted intensity)
    per_tel = {m: [] for m in METHODS}
    timings, floors, fast_rows, fit_times, speed_pairs = [], [], [], [], []
    for t in types:
        g, p = gam[t], pro[t]
        cols = {k: np.concatenate([g[k], p[k]]) for k in g if k in p}
        n = len(cols[S.OBS_ID])
        part, obs2 = split_parts(cols, args.seed)
        env = espec.environment(cols)
        Xe, ue = espec.matrix(env, n)
        ye = np.log10(cols[S.TRUE_ENERGY])
        tr = ue & (part == 0) & (cols["label"] == 1)
        reg = train_all("energy", Xe[tr], ye[tr], cols[S.OBS_ID][tr], cols[S.EVENT_ID][tr], ml, args.threads,
                        args.repeats)
        # dvp's per-telescope error table from its energy-training residuals (for inverse variance)
        log_int = np.log10(cols[S.HILLAS_INTENSITY])
        # classifier features: dvp's energy for every method, then the same matrix
        le = np.full(n, np.nan)
        le[ue] = reg["dvp"][0](Xe[ue])
        cols[S.RECO_ENERGY] = 10 ** le
        Xp, up = pspec.matrix(pspec.environment(cols), n)
        trp = up & (part == 1)
        yp = cols["label"].astype(float)
        clf = train_all("particle", Xp[trp], yp[trp], obs2[trp], cols[S.EVENT_ID][trp], ml, args.threads,
                        args.repeats)
        # dvp fast: the same flow with its own config, features and training-event cap;
        # its classifier reads its own energy. Its features are a subset of the defaults,
        # so it predicts every row the others do
        fcols = dict(cols)
        Xef, uef = fespec.matrix(fespec.environment(fcols), n)
        trf = group_sample(obs2, cols[S.EVENT_ID], tr & uef, ml_f.max_telescope_events_for("energy"), args.seed)
        fit_fast = {"energy": partial(dvp_fit, "energy", Xef[trf], ye[trf], obs2[trf], cols[S.EVENT_ID][trf], ml_f,
                                      args.threads)}
        reg["dvp fast"] = repeated(fit_fast["energy"], args.repeats)
        lef = np.full(n, np.nan)
        lef[uef] = reg["dvp fast"][0](Xef[uef])
        fcols[S.RECO_ENERGY] = 10 ** lef
        Xpf, upf = fpspec.matrix(fpspec.environment(fcols), n)
        trpf = group_sample(obs2, cols[S.EVENT_ID], trp & upf, ml_f.max_telescope_events_for("particle"), args.seed)
        fit_fast["particle"] = partial(dvp_fit, "particle", Xpf[trpf], yp[trpf], obs2[trpf], cols[S.EVENT_ID][trpf],
                                       ml_f, args.threads)
        clf["dvp fast"] = repeated(fit_fast["particle"], args.repeats)
        assert not (ue & ~uef).any() and not (up & ~upf).any(), "dvp fast must predict every row the others do"
        # the same fits again, for the interleaved timing
        speed_pairs += [(fit_fast["energy"], reg["fit ctapipe"]), (fit_fast["particle"], clf["fit ctapipe"])]
        table = None
        for m in METHODS:
            e_pred = np.full(n, np.nan)
            e_pred[ue] = reg[m][0](Xef[ue] if m == "dvp fast" else Xe[ue])
            g_pred = np.full(n, np.nan)
            g_pred[up] = clf[m][0](Xpf[up] if m == "dvp fast" else Xp[up])
            if m == "dvp":
                table = sigma_table(e_pred[tr] - ye[tr], log_int[tr])
            per_tel[m].append((obs2, cols[S.EVENT_ID], cols[S.TEL_ID],
                               cols["label"], e_pred, g_pred, cols[S.HILLAS_INTENSITY], part,
                               np.interp(log_int, table["log10_intensity"], table["sigma_log10"]),
                               combination_weights("aspect_weighted_intensity", cols)))
        # the gamma energy model on protons: linear leaves extrapolate unless bounded
        b_e, b_p = reg["dvp"][2], clf["dvp"][2]
        pr = ue & (cols["label"] == 0)
        raw = b_e.predict(Xe[pr], num_threads=args.threads)
        lo, hi = ye[tr].min(), ye[tr].max()
        dvp_pr = reg["dvp"][0](Xe[pr])
        print(f"{t}: energy model on {pr.sum():,} proton telescope events: unbounded leaves (LightGBM) "
              f"{np.mean(raw > hi):.1%} above the gamma training range (log10 E <= {hi:.2f}; max {raw.max():.2f}), "
              f"{np.mean(raw < lo):.2%} below; dvp {np.mean(dvp_pr >= hi):.1%} at its top, reco-true correlation "
              f"{np.corrcoef(dvp_pr, ye[pr])[0, 1]:.2f} (unbounded {np.corrcoef(np.clip(raw, lo, hi), ye[pr])[0, 1]:.2f})")
        # prediction speed of dvp's LightGBM on one thread (telescope events / s)
        f_e, f_p = flatten_lightgbm(b_e), flatten_lightgbm(b_p)
        Xbig = np.ascontiguousarray(np.tile(Xe[ue], (max(1, 200_000 // max(ue.sum(), 1)), 1)))
        best = min(_timed(lambda: f_e.predict(Xbig)) for _ in range(3))
        Xbigp = np.ascontiguousarray(np.tile(Xp[up], (max(1, 200_000 // max(up.sum(), 1)), 1)))
        bestp = min(_timed(lambda: f_p.predict(Xbigp)) for _ in range(3))
        lgb_best = min(_timed(lambda: b_e.predict(Xbig, num_threads=1)) for _ in range(2))
        print(f"{t}: energy prediction {len(Xbig) / best:,.0f} tel ev/s (dvp forest kernel) vs "
              f"{len(Xbig) / lgb_best:,.0f} (LightGBM predict, one thread)")
        timings.append((t, tr.sum(), trp.sum(), {m: reg[m][1] for m in METHODS}, {m: clf[m][1] for m in METHODS},
                        len(Xbig) / best, len(Xbigp) / bestp, b_e.num_trees(), b_p.num_trees()))
        fit_times += [{m: d[m][3] for m in METHODS} for d in (reg, clf)]
        fast_rows.append((t, int(trf.sum()), int(trpf.sum()), reg["dvp fast"][2].num_trees(),
                          clf["dvp fast"][2].num_trees()))
        floors.append((t, "energy", Xe.shape[1], reg["dataset dvp"], reg["dataset coarse"], reg["ctapipe"][1]))
        floors.append((t, "particle", Xp.shape[1], clf["dataset dvp"], clf["dataset coarse"], clf["ctapipe"][1]))
    print("\n## training (one thread) and prediction speed\n")
    print("| telescope type | energy rows | dvp s | dvp fast s | ctapipe ET s | lstchain RF s | particle rows | dvp s "
          "| dvp fast s | ctapipe ET s | lstchain RF s | dvp trees (E/P) | dvp predict tel ev/s, one core (E/P) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t, ne, np_, te, tp, se, sp, nte, ntp in timings:
        print(f"| {t} | {ne:,} | {te['dvp']:.2f} | {te['dvp fast']:.3f} | {te['ctapipe']:.2f} | {te['lstchain']:.2f} "
              f"| {np_:,} | {tp['dvp']:.2f} | {tp['dvp fast']:.3f} | {tp['ctapipe']:.2f} | {tp['lstchain']:.2f} "
              f"| {nte}/{ntp} | {se:,.0f} / {sp:,.0f} |")
    tot = {k: sum(x[3][k] + x[4][k] for x in timings) for k in METHODS}
    print(f"\ntotal training time: dvp {tot['dvp']:.2f} s, dvp fast {tot['dvp fast']:.3f} s, ctapipe ExtraTrees "
          f"{tot['ctapipe']:.2f} s ({tot['ctapipe'] / tot['dvp']:.2f}x dvp, {tot['ctapipe'] / tot['dvp fast']:.1f}x "
          f"dvp fast), lstchain RandomForest {tot['lstchain']:.1f} s ({tot['lstchain'] / tot['dvp']:.1f}x dvp)")
    per_rep = {m: np.sum([f[m] for f in fit_times], axis=0) for m in ("dvp", "dvp fast", "ctapipe")}
    print(f"training times are medians of {args.repeats} fits of each model (the RandomForest: one fit); "
          "total per repeat: " + ", ".join(f"{m} {v.min():.3f}-{v.max():.3f} s" for m, v in per_rep.items()) +
          "; ExtraTrees / dvp fast per repeat: " +
          ", ".join(f"{r:.2f}" for r in per_rep["ctapipe"] / per_rep["dvp fast"]))
    if args.speed_rounds:
        rt = interleaved_ratio(speed_pairs, args.speed_rounds)
        ratio = rt[:, 1] / rt[:, 0]
        print(f"interleaved timing, {args.speed_rounds} rounds of all four models of both (ABBA order): dvp fast "
              f"median {np.median(rt[:, 0]):.3f} s, ExtraTrees median {np.median(rt[:, 1]):.3f} s; ExtraTrees / dvp "
              f"fast per round: median {np.median(ratio):.2f}, range {ratio.min():.2f}-{ratio.max():.2f}, below 5 in "
              f"{int(np.sum(ratio < 5))} of {len(ratio)}")
    print("dvp fast (" + str(args.fast_config) + "): training rows (E/P) and trees (E/P) per type: " + "; ".join(
        f"{t} {ne:,}/{np_:,}, {a}/{b}" for t, ne, np_, a, b in fast_rows))
    print("\n## LightGBM's fixed cost: constructing the training Dataset, before any tree\n")
    print("| telescope type | model | features | Dataset s, dvp's parameters | Dataset s, 15 bins from 1,000 rows "
          "| ctapipe ET s | ET s / 5 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for t, kind, nf, ds, dl, et in floors:
        print(f"| {t} | {kind} | {nf} | {ds:.3f} | {dl:.3f} | {et:.3f} | {et / 5:.3f} |")
    ftot = [sum(f[i] for f in floors) for i in (3, 4, 5)]
    print(f"| **total** | | | **{ftot[0]:.3f}** | **{ftot[1]:.3f}** | **{ftot[2]:.3f}** | **{ftot[2] / 5:.3f}** |")
    results = {}
    for m in METHODS:
        cat = [np.concatenate([x[i] for x in per_tel[m]]) for i in range(10)]
        obs, ev, tel, label, le, gp, inten, part, sig, aspect = cat
        test = part == 2
        weights = {"intensity": inten[test], "none": np.ones(int(test.sum())),
                   "aspect_weighted_intensity": aspect[test]}
        baseline = m in ("ctapipe", "lstchain") and args.baseline_gammaness_weights
        w_e = weights[args.energy_weights]
        w_g = weights[args.baseline_gammaness_weights if baseline else args.gammaness_weights]
        o, e, le_ev, n_e = combine(obs[test], ev[test], tel[test], le[test], w_e)
        _, _, g_ev, _ = combine(obs[test], ev[test], tel[test], gp[test], w_g)
        results[m] = (o, e, le_ev, g_ev)
        if m == "dvp":
            _, _, le_iv, _ = combine(obs[test], ev[test], tel[test], le[test], 1 / sig[test] ** 2)
            results["dvp (inverse variance)"] = (o, e, le_iv, g_ev)
    # true energy and particle per test event
    truth = pl.concat([
        pl.read_parquet(args.gamma / "dl2" / "*.parquet", columns=[S.OBS_ID, S.EVENT_ID, S.TRUE_ENERGY])
        .with_columns(label=pl.lit(1)),
        pl.read_parquet(args.proton / "dl2" / "*.parquet", columns=[S.OBS_ID, S.EVENT_ID, S.TRUE_ENERGY])
        .with_columns(label=pl.lit(0), obs_id=pl.col(S.OBS_ID) + PROTON_OBS_OFFSET)])
    # one row per test array event, the same events in the same order for every method
    o, e = results["dvp"][0], results["dvp"][1]
    assert all(np.array_equal(r[0], o) and np.array_equal(r[1], e) for r in results.values())
    ev_df = (pl.DataFrame({S.OBS_ID: o, S.EVENT_ID: e, "row": np.arange(len(o))})
             .join(truth, on=[S.OBS_ID, S.EVENT_ID], how="left").sort("row"))
    label = ev_df["label"].fill_null(-1).to_numpy()
    etrue = ev_df[S.TRUE_ENERGY].fill_null(np.nan).to_numpy()
    rows_e, rows_a, rows_p = {}, {}, {}
    for m, (_, _, le_ev, g_ev) in results.items():
        rows_e[m], rows_a[m] = event_metrics(le_ev, g_ev, label, etrue)
        pm = (label == 0) & np.isfinite(le_ev)
        lp, lt = le_ev[pm], np.log10(etrue[pm])
        rows_p[m] = (int(pm.sum()), float(np.mean(lp > np.log10(5.0))), float(np.corrcoef(lp, lt)[0, 1]))
    labels = [f"{lo:g}–{hi:g}" for lo, hi in zip(E_EDGES[:-1], E_EDGES[1:])] + ["all"]
    print("\n## energy resolution / bias per true-energy bin (test gammas, array events)\n")
    names = list(results)
    print("| true E (TeV) | events | " + " | ".join(f"{m} res / bias" for m in names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    for i, lab in enumerate(labels):
        print(f"| {lab} | {rows_e['dvp'][i][2]:,} | " + " | ".join(
            f"{rows_e[m][i][1]:.3f} / {rows_e[m][i][0]:+.3f}" for m in names) + " |")
    print("\n## the gamma energy models on test protons (array events)\n")
    print("| method | protons | E_reco > 5 TeV | corr(log E_reco, log E_true) |")
    print("| --- | --- | --- | --- |")
    for m, (n_p, f5, corr) in rows_p.items():
        print(f"| {m} | {n_p:,} | {f5:.1%} | {corr:.2f} |")
    print("\n## ROC AUC per reconstructed-energy bin (test gammas vs protons, array events)\n")
    names_a = [m for m in names if m != "dvp (inverse variance)"]
    print("| reco E (TeV) | events | " + " | ".join(names_a) + " |")
    print("| --- | --- |" + " --- |" * len(names_a))
    for i, lab in enumerate(labels):
        print(f"| {lab} | {rows_a['dvp'][i][1]:,} | " + " | ".join(f"{rows_a[m][i][0]:.4f}" for m in names_a) + " |")
    print("\n## dvp fast against ctapipe's ExtraTrees (bins where dvp fast is less accurate)\n")
    worse = [f"energy {lab} TeV: resolution {rows_e['dvp fast'][i][1]:.4f} vs {rows_e['ctapipe'][i][1]:.4f}"
             for i, lab in enumerate(labels) if rows_e["dvp fast"][i][1] > rows_e["ctapipe"][i][1]]
    worse += [f"AUC {lab} TeV: {rows_a['dvp fast'][i][0]:.6f} vs {rows_a['ctapipe'][i][0]:.6f}"
              for i, lab in enumerate(labels) if rows_a["dvp fast"][i][0] < rows_a["ctapipe"][i][0]]
    print(f"training {tot['ctapipe'] / tot['dvp fast']:.2f}x faster; " + ("; ".join(worse) or "none"))
    boot = _bootstrap(results, label, etrue, rows_e, rows_a, labels, args.bootstrap, args.seed) \
        if args.bootstrap else None
    _plot(args.figures, rows_e, rows_a, boot, tot)


def event_metrics(le, g, label, etrue):
    """Per true-energy bin and over all (last row): ``(bias, resolution, gammas)`` of the
    test gammas; per bin of the events' own reconstructed energy and over all: ``(ROC AUC,
    events)``. ``le`` log10 reconstructed energy, ``g`` gammaness, ``label`` 1 gamma /
    0 proton / -1 unknown, ``etrue`` true energy (TeV); one entry per array event."""
    gm = (label == 1) & np.isfinite(le)
    et, er = etrue[gm], 10 ** le[gm]
    rows_e = []
    for lo, hi in [*zip(E_EDGES[:-1], E_EDGES[1:]), (0.0, np.inf)]:
        sel = (et >= lo) & (et < hi)
        rows_e.append(bias_resolution(er[sel], et[sel]) + (int(sel.sum()),))
    ok = (label >= 0) & np.isfinite(g) & np.isfinite(le)
    gs, ls, ereco = g[ok], label[ok], 10 ** le[ok]
    rows_a = []
    for lo, hi in [*zip(E_EDGES[:-1], E_EDGES[1:]), (0.0, np.inf)]:
        sel = (ereco >= lo) & (ereco < hi)
        rows_a.append((roc_auc(gs[sel], ls[sel]), int(sel.sum())))
    return rows_e, rows_a


#: (dvp model, baseline) pairs whose differences the bootstrap measures
PAIRS = (("dvp", "lstchain"), ("dvp", "ctapipe"), ("dvp fast", "ctapipe"))


def _bootstrap(results, label, etrue, rows_e, rows_a, labels, n_boot, seed):
    """Paired bootstrap of the test array events (every method on the same resampled
    events): per bin, the difference to each baseline of the resolution and the AUC,
    with its central 95 % interval; a deficit is called significant when the interval
    excludes zero. Returns every method's resampled resolutions and AUCs, ``{method:
    (n_boot, bins + 1)}`` each, for the figure's error bars."""
    rng = np.random.default_rng(seed)
    methods = list(results)
    res = {m: np.empty((n_boot, len(labels))) for m in methods}
    auc = {m: np.empty((n_boot, len(labels))) for m in methods}
    n = len(label)
    t0 = time.perf_counter()
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        for m in methods:
            re, ra = event_metrics(results[m][2][idx], results[m][3][idx], label[idx], etrue[idx])
            res[m][b] = [r[1] for r in re]
            auc[m][b] = [r[0] for r in ra]
    print(f"\n## paired bootstrap: difference to the baselines per bin, central 95 % interval of {n_boot} "
          f"resamplings of the test array events ({time.perf_counter() - t0:.0f} s)\n")
    print("Resolution (dvp − baseline; negative: dvp more accurate) and ROC AUC (dvp − baseline; positive: dvp "
          "more accurate).\n")
    # per metric, pair and bin with events: the point difference (dvp − baseline) and its interval
    metrics = (("resolution", "resolution", res, rows_e, 1, ".4f"), ("ROC AUC", "AUC", auc, rows_a, 0, ".5f"))
    bins = {what: [i for i in range(len(labels)) if point["dvp"][i][-1]] for what, _, _, point, _, _ in metrics}
    diff = {(what, a, b, i): (point[a][i][col] - point[b][i][col],
                              *np.nanpercentile(boot[a][:, i] - boot[b][:, i], [2.5, 97.5]))
            for what, _, boot, point, col, _ in metrics for a, b in PAIRS for i in bins[what]}
    head = " | ".join(f"{a} − {'ET' if b == 'ctapipe' else 'RF'}" for a, b in PAIRS)
    for what, _, _, _, _, fmt in metrics:
        print(f"| {what}, E (TeV) | " + head + " |")
        print("| --- |" + " --- |" * len(PAIRS))
        for i in bins[what]:
            print(f"| {labels[i]} | " + " | ".join(
                "{:+{f}} [{:+{f}}, {:+{f}}]".format(*diff[what, a, b, i], f=fmt) for a, b in PAIRS) + " |")
        print()
    for a, b in PAIRS:
        worse, signif = [], []
        for what, short, *_ in metrics:
            sign = 1 if what == "resolution" else -1     # a larger resolution, a smaller AUC: less accurate
            for i in bins[what]:
                d, lo, hi = (sign * v for v in diff[what, a, b, i])
                if d > 0:
                    worse.append(f"{short} {labels[i]}")
                    if min(lo, hi) > 0:
                        signif.append(f"{short} {labels[i]}")
        print(f"{a} less accurate than {b}: in {', '.join(worse) or 'no bin'}; beyond the 95 % interval: "
              f"{', '.join(signif) or 'none'}")
    return res, auc


def _warm_up(threads):
    """Compile the numba kernels dvp train uses (cached on disk after a first run) outside the timings."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    b = _lgb().train({"objective": "regression", "linear_tree": True, "verbosity": -1, "num_threads": threads},
                     _lgb().Dataset(X, X[:, 0]), num_boost_round=3)
    leaf_bounds(b, X, 0.01)
    leaf_bounds(b, X.astype(np.float32), 0.01)


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _plot(directory, rows_e, rows_a, boot=None, train_s=None):
    """``ml_comparison.png``: resolution, bias and 1 − ROC AUC per energy bin (error bars:
    central 95 % of the bootstrap resamplings, where there are any) and the total
    training time of each method, against a fifth of ExtraTrees'."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    directory.mkdir(parents=True, exist_ok=True)
    centres = np.sqrt(E_EDGES[:-1] * E_EDGES[1:])
    nb = len(centres)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    colours = dict(zip(rows_e, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    # methods side by side within a bin, so that their error bars do not hide each other
    shift = {m: 10 ** (0.012 * (k - (len(rows_e) - 1) / 2)) for k, m in enumerate(rows_e)}

    def draw(ax, m, y, samples):
        ok = np.isfinite(y)
        err = None
        if samples is not None:
            lo, hi = np.nanpercentile(samples[:, :nb][:, ok], [2.5, 97.5], axis=0)
            err = np.vstack([np.clip(y[ok] - lo, 0, None), np.clip(hi - y[ok], 0, None)])
        ax.errorbar(centres[ok] * shift[m], y[ok], yerr=err, fmt="o-", ms=4, capsize=2, color=colours[m], label=m)

    for m in rows_e:
        draw(axes[0], m, np.array([r[1] for r in rows_e[m][:nb]]), boot[0][m] if boot else None)
        draw(axes[1], m, np.array([r[0] for r in rows_e[m][:nb]]), None)
    floor = 1e-6      # 1 − AUC of a perfect separation, drawn at the axis' floor
    for m in rows_a:
        if m == "dvp (inverse variance)":     # dvp's gammaness, only binned by another energy
            continue
        y = np.maximum(1 - np.array([r[0] for r in rows_a[m][:nb]]), floor)
        draw(axes[2], m, y, np.maximum(1 - boot[1][m], floor) if boot else None)
    axes[2].set_yscale("log")
    titles = ("energy resolution (68 %), lower is better", "energy bias (median)",
              "1 − ROC AUC, lower is better (1e-6: perfect)")
    for ax, yl in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("reconstructed energy (TeV)" if ax is axes[2] else "true energy (TeV)")
        ax.set_title(yl, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if train_s:
        names = [m for m in ("dvp fast", "dvp", "ctapipe", "lstchain") if m in train_s]
        axes[3].barh(names, [train_s[m] for m in names], color=[colours.get(m, "grey") for m in names])
        for k, m in enumerate(names):
            axes[3].text(train_s[m] * 1.1, k, f"{train_s[m]:.2f} s", va="center", fontsize=8)
        axes[3].axvline(train_s["ctapipe"] / 5, color="k", ls="--", lw=1)
        axes[3].text(train_s["ctapipe"] / 5 * 1.05, len(names) - 0.6, "ExtraTrees / 5", fontsize=8)
        axes[3].set_xscale("log")
        axes[3].set_xlim(right=max(train_s.values()) * 6)
        axes[3].invert_yaxis()
        axes[3].set_title("training time, all four models, one thread (s)", fontsize=10)
        axes[3].grid(alpha=0.3, axis="x")
    else:
        axes[3].set_visible(False)
    fig.suptitle("dvp LightGBM (defaults and fast preset) vs ctapipe ExtraTrees vs lstchain RandomForest "
                 "(toy MC, same split)")
    fig.tight_layout()
    fig.savefig(directory / "ml_comparison.png", dpi=110)
    print(f"\nfigure: {directory / 'ml_comparison.png'}")


if __name__ == "__main__":
    main()
