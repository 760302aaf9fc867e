"""What RandomForest accuracy costs LightGBM: training time against accuracy over a grid of settings.

Usage::

    python benchmarks/bench_ml_frontier.py --gamma G_DL2 [--proton P_DL2] [--kind energy|particle] [--seed 0]
        [--repeats 3] [--bootstrap 200] [--figure PNG] [--quick]

G_DL2 / P_DL2 are DL2 products of simulated gammas and protons (``make ml-data`` makes
the ones in benchmarks/RESULTS.md). The issue asks dvp to train at least 5× faster than
ctapipe's ExtraTrees (10 trees, depth 10) *and* be at least as accurate as lstchain's
RandomForest. Both energy models alone, or both classifiers alone, must then fit in a
fifth of ExtraTrees' time for all four models (energy and particle, both telescope
types), whatever the other two take. This script measures whether any LightGBM setting
of one kind (``--kind``) does.

Split as ``bench_ml.py`` (same seed, same hash): gamma array events one third each for
energy training, classifier training and test, protons half each for classifier training
and test. ExtraTrees and the RandomForest (lstchain's settings) train on dvp's default
features, every LightGBM setting on its own (a dvp config: the defaults or
``configs/ml-fast.toml`` with ``--set`` overrides, so that each row can be reproduced with
``dvp train KIND --config ... --set ...``) as ``bench_ml.dvp_fit`` times ``dvp train``'s
final model: the fit, then the leaf bounds of linear leaves. All on one thread; each
fit's time is the median of ``--repeats``, the RandomForest fitted once. ExtraTrees'
models of both kinds are timed for the budget line: ExtraTrees' time for all four models
/ 5. Every classifier, the baselines' included, reads the energy of dvp's default energy
model, and the test events are binned by it, so the comparison isolates the classifier.

Per setting it prints the time of both models of the kind and, per energy bin of the
test array events (telescope predictions combined by intensity-weighted means, as
bench_ml), the energy resolution of the gammas (per true energy) or the ROC AUC of gammas
against protons (per reconstructed energy), and the bins where it is less accurate than
the RandomForest beyond the central 95 % of a paired bootstrap of the test events. The
figure (``ml_frontier.png`` / ``ml_frontier_particle.png`` in benchmarks/figures) plots
each setting's time against its worst bin (resolution / the RandomForest's, or the
RandomForest's AUC less its own), with the budget and the RandomForest's level as lines:
the target is the lower left corner.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ml import (E_EDGES, FAST_CONFIG, _warm_up, class_weights, combine, dvp_fit, load, sk_fit,  # noqa: E402
                      split_parts)

from dvp import schemas as S  # noqa: E402
from dvp.config import load_config  # noqa: E402
from dvp.kernels.stereo import group_events  # noqa: E402
from dvp.ml.features import FeatureSpec  # noqa: E402
from dvp.ml.metrics import bias_resolution, roc_auc  # noqa: E402
from dvp.ml.split import group_sample  # noqa: E402

BINS = list(zip(E_EDGES[:-2], E_EDGES[1:-1]))   # 0.03 ... 10 TeV: the bins with test events
#: per model kind: the per-bin figure of merit, and +1 where a larger value is worse (resolution) or -1 (AUC)
METRIC = {"energy": ("resolution", 1), "particle": ("ROC AUC", -1)}


def overrides(kind: str, rounds: int, learning_rate: float, leaves: int, n_rows: int,
              linear: bool | None = None) -> list[str]:
    """``--set`` overrides of one grid setting: ``rounds`` trees at ``learning_rate`` with no
    early stopping, ``leaves`` per tree, ``n_rows`` telescope events per type (0: all) and,
    unless None, linear or constant leaves."""
    sets = [f"ml.{kind}.max_rounds={rounds}", f"ml.{kind}.early_stopping_rounds=0",
            f"ml.{kind}.lightgbm.learning_rate={learning_rate}", f"ml.{kind}.lightgbm.num_leaves={leaves}",
            f"ml.{kind}.max_telescope_events={n_rows}"]
    if linear is not None:
        sets.append(f"ml.{kind}.lightgbm.linear_tree={'true' if linear else 'false'}")
    return sets


def settings(kind: str, quick: bool) -> list[tuple[str, Path | None, list[str]]]:
    """``(label, config file or None for the defaults, --set overrides)`` of every
    LightGBM setting of ``kind``: the defaults, the fast preset, and a grid over the
    preset's features (8 energy / 12 particle) or the defaults' (23 / 28), leaf type
    (energy only; the classifier keeps constant leaves), leaves per tree, rounds at a
    learning rate that scales with them, and training rows (all, or about 18,000 / 12,000
    per type for energy, 20,000 / 12,000 for the classifier)."""
    out = [("defaults (early stopping)", None, []), ("fast preset", FAST_CONFIG, [])]
    first = (10, 0.5) if kind == "energy" else (16, 0.5)
    rounds = (first, (30, 0.3), (60, 0.15)) if quick else (first, (20, 0.4), (30, 0.3), (60, 0.15), (100, 0.1))
    rows = (0, 12000) if quick else (0, 18000 if kind == "energy" else 20000, 12000)
    grid = itertools.product((FAST_CONFIG, None), (True, False) if kind == "energy" else (False,),
                             (15, 63) if quick else (15, 31, 63), rounds, rows)
    n_features = {"energy": (8, 23), "particle": (12, 28)}[kind]
    for cfg, linear, leaves, (n, lr), n_rows in grid:
        sets = overrides(kind, n, lr, leaves, n_rows, linear)
        label = (f"{n_features[cfg is None]} features, {'linear' if linear else 'constant'}, {leaves} leaves, "
                 f"{n} x {lr}, {'all rows' if not n_rows else f'{n_rows:,} rows'}")
        out.append((label, cfg, sets))
    return out


def main(argv=None, grid=settings, add_columns=None):
    """Run the comparison on the command line ``argv``. ``grid(kind, quick)`` gives the
    settings as :func:`settings` does, each optionally with a fourth element: features
    appended to the kind's (columns ``add_columns`` makes, or DL1/DL2 columns).
    ``add_columns(cols, part)``, if given, adds columns to one telescope type's ``cols``
    in place after the split (``part`` as :func:`bench_ml.split_parts`), from training
    rows only; its time counts in the training time of every setting with extra features."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", required=True, type=Path)
    ap.add_argument("--proton", type=Path, default=None, help="proton DL2 product (default: the gamma product's "
                    "sibling proton-dl2): the classifier's background, and ExtraTrees' particle models for the budget")
    ap.add_argument("--kind", choices=("energy", "particle"), default="energy",
                    help="the models whose settings are varied (default energy); the classifiers all read the "
                    "energy of dvp's default energy model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="a smaller grid (50 energy / 26 particle settings "
                    "instead of 182 / 92)")
    ap.add_argument("--figure", type=Path, default=None,
                    help="default: benchmarks/figures/ml_frontier.png (energy), ml_frontier_particle.png")
    args = ap.parse_args(argv)
    kind = args.kind
    figure = args.figure or Path(__file__).parent / "figures" / (
        "ml_frontier.png" if kind == "energy" else "ml_frontier_particle.png")
    proton = args.proton or args.gamma.parent / "proton-dl2"
    ml = load_config(None, [f"ml.seed={args.seed}"]).ml
    configs, extra = [], set()
    for label, cfg, sets, *more in grid(kind, args.quick):
        mlc = load_config(cfg, [f"ml.seed={args.seed}", *sets]).ml
        if more and more[0]:   # features the config cannot name (made by add_columns): appended here
            model = mlc.model(kind)
            mlc = dataclasses.replace(mlc, **{kind: dataclasses.replace(model, features=model.features + tuple(more[0]))})
            extra.add(label)
        configs.append((label, mlc))
    t0 = time.perf_counter()
    mls = [ml] + [mlc for _, mlc in configs[:2]]
    gam, pro = load(args.gamma, mls, 1), load(proton, mls, 0)
    print(f"loaded features in {time.perf_counter() - t0:.1f} s; {len(configs)} {kind} settings, split seed "
          f"{args.seed}, one thread, medians of {args.repeats} fits")
    _warm_up(1)
    espec, pspec = (FeatureSpec.from_config(m, ml.derived) for m in (ml.energy, ml.particle))
    pred = {name: [] for name in ["ctapipe ET", "lstchain RF"] + [label for label, _ in configs]}
    seconds = dict.fromkeys(pred, 0.0)
    et_seconds = {"energy": 0.0, "particle": 0.0}
    keys = []
    for t in sorted(set(gam) & set(pro)):
        cols = {k: np.concatenate([gam[t][k], pro[t][k]]) for k in gam[t] if k in pro[t]}
        n = len(cols[S.OBS_ID])
        part, obs2 = split_parts(cols, args.seed)
        prep = 0.0
        if add_columns is not None:
            t1 = time.perf_counter()
            add_columns(cols, part)
            prep = time.perf_counter() - t1
        gamma = cols["label"] == 1
        # dvp's default energy model: the classifiers' energy feature and the events' reconstructed energy
        Xe, ue = espec.matrix(espec.environment(cols), n)
        ye = np.log10(cols[S.TRUE_ENERGY])
        tr_e = ue & gamma & (part == 0)
        energy = dvp_fit("energy", Xe[tr_e], ye[tr_e], obs2[tr_e], cols[S.EVENT_ID][tr_e], ml, 1)[0]
        le = np.full(n, np.nan)
        le[ue] = energy(Xe[ue])
        cols[S.RECO_ENERGY] = 10 ** le
        Xp, up = pspec.matrix(pspec.environment(cols), n)
        yp = cols["label"].astype(float)
        tr_p = up & (part == 1)
        baseline = {"energy": (Xe, ye, tr_e, None), "particle": (Xp, yp, tr_p, class_weights(yp[tr_p]))}
        et_fits = {}
        for k, (X, y, tr, w) in baseline.items():   # ExtraTrees of both kinds, for the budget
            et_fits[k] = [sk_fit(k, "ctapipe", np.nan_to_num(X[tr]), y[tr], w, 1, args.seed)
                          for _ in range(args.repeats)]
            et_seconds[k] += float(np.median([f[1] for f in et_fits[k]]))
        X, y, tr, w = baseline[kind]
        te = (ue & gamma if kind == "energy" else up) & (part == 2)
        keys.append((obs2[te], cols[S.EVENT_ID][te], cols[S.TEL_ID][te], cols["label"][te], cols[S.TRUE_ENERGY][te],
                     le[te], cols[S.HILLAS_INTENSITY][te]))
        rf = sk_fit(kind, "lstchain", np.nan_to_num(X[tr]), y[tr], w, 1, args.seed)   # minutes: fitted once
        for name, fits in (("ctapipe ET", et_fits[kind]), ("lstchain RF", [rf])):
            pred[name].append(fits[-1][0](X[te]))
            seconds[name] += float(np.median([f[1] for f in fits]))
        for label, mlc in configs:
            fs = FeatureSpec.from_config(mlc.model(kind), mlc.derived)
            Xc, okc = fs.matrix(fs.environment(cols), n)
            assert not (te & ~okc).any(), f"{label}: must predict every test row"
            trc = group_sample(obs2, cols[S.EVENT_ID], tr & okc, mlc.max_telescope_events_for(kind), args.seed)
            fits = [dvp_fit(kind, Xc[trc], y[trc], obs2[trc], cols[S.EVENT_ID][trc], mlc, 1)
                    for _ in range(args.repeats)]
            pred[label].append(fits[-1][0](Xc[te]))
            seconds[label] += float(np.median([f[1] for f in fits])) + (prep if label in extra else 0.0)
        print(f"{t}: {tr.sum():,} training / {te.sum():,} test telescope events"
              + (f"; added columns in {prep:.3f} s" if add_columns is not None else ""), flush=True)
    obs, ev, tel, label, etrue, le, inten = (np.concatenate(v) for v in zip(*keys))
    # one row per test array event, the same events for every setting
    order, starts = group_events(obs, ev, tel)   # the events in combine's order
    first = order[starts[:-1]]
    truth = {"label": label[first], "etrue": etrue[first], "ereco": 10 ** combine(obs, ev, tel, le, inten)[2]}
    events = {name: combine(obs, ev, tel, np.concatenate(p), inten)[2] for name, p in pred.items()}
    if kind == "energy":
        events = {name: 10 ** v for name, v in events.items()}
    score = {name: _score(kind, v, truth) for name, v in events.items()}
    budget = (et_seconds["energy"] + et_seconds["particle"]) / 5
    worse = _bootstrap(kind, events, truth, "lstchain RF", args.bootstrap, args.seed) if args.bootstrap else {}
    ref = score["lstchain RF"]
    what, sign = METRIC[kind]
    print(f"\nExtraTrees: energy models {et_seconds['energy']:.3f} s, particle models {et_seconds['particle']:.3f} s; "
          f"budget for 5x faster than ExtraTrees (all four models / 5): {budget:.3f} s")
    print(f"\n{what} per {'true' if kind == 'energy' else 'reconstructed'}-energy bin (test array events)\n")
    print(f"| setting | {kind} models s | " + " | ".join(f"{lo:g}–{hi:g} TeV" for lo, hi in BINS) +
          f" | worst bin: {_worst_label(kind)} | less accurate than the RF (95 %) |")
    print("| --- | --- |" + " --- |" * len(BINS) + " --- | --- |")
    for name in sorted(pred, key=lambda k: seconds[k]):
        flag = ", ".join(f"{lo:g}–{hi:g}" for (lo, hi), w in zip(BINS, worse.get(name, [])) if w) or \
            ("none" if name in worse else "")
        print(f"| {name} | {seconds[name]:.3f} | " + " | ".join(f"{r:.{4 if sign > 0 else 5}f}" for r in score[name])
              + f" | {_worst(kind, score[name], ref):.{3 if sign > 0 else 5}f} | {flag} |")
    fit = [k for k in pred if k in worse and not any(worse[k]) and k != "lstchain RF"]
    fastest = min(fit, key=lambda k: seconds[k]) if fit else None
    if worse:   # significance needs the bootstrap
        print(f"\nsettings within the budget ({budget:.3f} s) and nowhere significantly less accurate than the "
              f"RandomForest: {', '.join(k for k in fit if seconds[k] <= budget) or 'none'}")
    if fastest:
        print(f"fastest setting nowhere significantly less accurate than the RandomForest: {fastest}, "
              f"{seconds[fastest]:.3f} s for the {kind} models alone ({seconds[fastest] / budget:.1f}x the budget "
              f"for all four; ExtraTrees' {kind} models {et_seconds[kind]:.3f} s)")
    _plot(figure, kind, seconds, {k: _worst(kind, v, ref) for k, v in score.items()}, worse, budget, args.seed)


def _score(kind, value, truth):
    """Per bin of :data:`BINS`, shape (bins,): energy, ``value`` the events' reconstructed
    energy (TeV): half the 16–84 % width of E_reco / E_true − 1 of the gammas per bin of
    true energy; particle, ``value`` their gammaness: the ROC AUC of gammas against
    protons per bin of the default energy model's reconstructed energy."""
    if kind == "energy":
        et = truth["etrue"]
        return np.array([bias_resolution(value[(et >= lo) & (et < hi)], et[(et >= lo) & (et < hi)])[1]
                         for lo, hi in BINS])
    er = truth["ereco"]
    return np.array([roc_auc(value[(er >= lo) & (er < hi)], truth["label"][(er >= lo) & (er < hi)])
                     for lo, hi in BINS])


def _worst(kind, score, ref):
    """The worst bin against the RandomForest: resolution / the RF's (energy; 1 is level),
    or the RF's AUC less the setting's (particle; 0 is level, positive is worse)."""
    return float(np.max(score / ref)) if kind == "energy" else float(np.max(ref - score))


def _worst_label(kind):
    return "resolution / RF's" if kind == "energy" else "RF's AUC − AUC"


def _bootstrap(kind, events, truth, reference, n_boot, seed):
    """``{setting: (bins,) bool}``: the bins where a setting is less accurate than the
    reference beyond the central 95 % of ``n_boot`` paired resamplings of the test events."""
    rng = np.random.default_rng(seed)
    sign = METRIC[kind][1]
    n = len(truth["label"])
    diffs = {k: np.empty((n_boot, len(BINS))) for k in events}
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        sample = {k: v[idx] for k, v in truth.items()}
        ref = _score(kind, events[reference][idx], sample)
        for k, v in events.items():
            diffs[k][b] = sign * (_score(kind, v[idx], sample) - ref)
    return {k: np.percentile(d, 2.5, axis=0) > 0 for k, d in diffs.items()}


def _plot(path, kind, seconds, worst, worse, budget, seed):
    """Each setting's training time against its worst bin (:func:`_worst`), with the
    budget and the RandomForest's level as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    # worse than this is drawn on the top edge: twice the RF's resolution, or an AUC 0.1 below it
    level, top = (1.0, 2.0) if kind == "energy" else (0.0, 0.1)
    for name in seconds:
        x, y = seconds[name], min(worst[name], top)
        if name in ("ctapipe ET", "lstchain RF"):
            ax.plot(x, y, "s", ms=9, color="k" if name == "lstchain RF" else "tab:red", zorder=5)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
            continue
        bad = bool(np.any(worse.get(name, [True])))
        marker = "x" if bad else "o"
        colour = "tab:grey" if bad else "tab:blue"
        if name in ("fast preset", "defaults (early stopping)"):
            colour = "tab:green"
            ax.annotate(f"dvp {name}", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=9)
        ax.plot(x, y, marker, ms=6, color=colour)
    ax.axvline(budget, color="tab:red", ls="--", lw=1)
    span = top - level
    ax.text(budget * 0.97, 0.72, "ExtraTrees (all four models) / 5", transform=ax.get_xaxis_transform(),
            fontsize=8, ha="right", va="center", rotation=90, color="tab:red")
    ax.axhline(level, color="k", ls=":", lw=1)
    if kind == "energy":
        ax.set_ylim(level - 0.05 * span, top + 0.02 * span)
    else:   # AUC deficits span 1e-5 ... 0.1: logarithmic above 1e-4, linear through 0
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_ylim(-1e-4, top * 1.3)
    ax.set_xscale("log")
    ax.set_xlabel(f"training time of both {kind} models, one thread (s)")
    ax.set_ylabel(f"worst bin, 0.03–10 TeV: {_worst_label(kind)} (above {top:g}: at {top:g})")
    marks = "o: nowhere significantly worse than the RF, x: worse" if worse else "no bootstrap: all x"
    ax.set_title(f"LightGBM {kind} settings ({marks}), split {seed}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
