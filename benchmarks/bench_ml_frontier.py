"""What RandomForest accuracy costs LightGBM: training time against energy resolution over a grid of settings.

Usage::

    python benchmarks/bench_ml_frontier.py --gamma G_DL2 [--seed 0] [--repeats 3] [--bootstrap 200]
        [--figure benchmarks/figures/ml_frontier.png] [--quick]

G_DL2 is a DL2 product of simulated gammas (``make ml-data`` makes the one in
benchmarks/RESULTS.md). The issue asks dvp to train at least 5× faster than ctapipe's
ExtraTrees (10 trees, depth 10) *and* be at least as accurate as lstchain's RandomForest.
The energy models alone must then fit in a fifth of ExtraTrees' time for all four models
(energy and particle, both telescope types), whatever the classifiers take. This script
measures whether any LightGBM setting does.

Split as ``bench_ml.py`` (same seed, same hash): the gamma array events' first third
trains, the last third tests. ExtraTrees and the RandomForest (lstchain's energy settings)
train on dvp's default features, every LightGBM setting on its own (a dvp config: the
defaults or ``configs/ml-fast.toml`` with ``--set`` overrides, so that each row can be
reproduced with ``dvp train energy --config ... --set ...``) as ``bench_ml.dvp_fit`` times
``dvp train``'s final model: the fit, then the leaf bounds of linear leaves. All on one
thread; each fit's time is the median of ``--repeats``, the RandomForest fitted once.
ExtraTrees' particle models (classifier rows as bench_ml, their energy feature from dvp's
defaults) are fitted only for their time: the budget line is ExtraTrees' time for all four
models / 5.

Per setting it prints the time of both energy models, the resolution of the test gammas
per true-energy bin (array events, telescope predictions combined by intensity-weighted
mean of log10 E, as bench_ml), and the bins where it is less accurate than the
RandomForest beyond the central 95 % of a paired bootstrap of the test events. The figure
plots each setting's time against its worst bin (resolution / the RandomForest's), with
the budget and the RandomForest's accuracy as lines: the target is the lower left corner.
"""
from __future__ import annotations

import argparse
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
from dvp.ml.features import FeatureSpec  # noqa: E402
from dvp.ml.metrics import bias_resolution  # noqa: E402
from dvp.ml.split import group_sample  # noqa: E402

BINS = list(zip(E_EDGES[:-2], E_EDGES[1:-1]))   # 0.03 ... 10 TeV: the bins with test gammas


def settings(quick: bool) -> list[tuple[str, Path | None, list[str]]]:
    """``(label, config file or None for the defaults, --set overrides)`` of every
    LightGBM setting: the defaults, the fast preset, and a grid over the preset's
    8 features or the defaults' 23, leaf type, leaves per tree, rounds at a learning rate
    that scales with them, and training rows (all, or about 18,000 / 12,000 per type)."""
    out = [("defaults (early stopping)", None, []), ("fast preset", FAST_CONFIG, [])]
    rounds = ((10, 0.5), (30, 0.3), (60, 0.15)) if quick else ((10, 0.5), (20, 0.4), (30, 0.3), (60, 0.15),
                                                                   (100, 0.1))
    grid = itertools.product((FAST_CONFIG, None), (True, False), (15, 63) if quick else (15, 31, 63), rounds,
                             (0, 12000) if quick else (0, 18000, 12000))
    for cfg, linear, leaves, (n, lr), rows in grid:
        sets = [f"ml.energy.max_rounds={n}", "ml.energy.early_stopping_rounds=0",
                f"ml.energy.lightgbm.learning_rate={lr}", f"ml.energy.lightgbm.num_leaves={leaves}",
                f"ml.energy.lightgbm.linear_tree={'true' if linear else 'false'}",
                f"ml.energy.max_telescope_events={rows}"]
        label = (f"{'8' if cfg else '23'} features, {'linear' if linear else 'constant'}, {leaves} leaves, "
                 f"{n} x {lr}, {'all rows' if not rows else f'{rows:,} rows'}")
        out.append((label, cfg, sets))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", required=True, type=Path)
    ap.add_argument("--proton", type=Path, default=None, help="proton DL2 product: ExtraTrees' particle models "
                    "are timed on it for the budget line (default: the gamma product's sibling proton-dl2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="a smaller grid (50 settings instead of 182)")
    ap.add_argument("--figure", type=Path, default=Path(__file__).parent / "figures" / "ml_frontier.png")
    args = ap.parse_args()
    proton = args.proton or args.gamma.parent / "proton-dl2"
    ml = load_config(None, [f"ml.seed={args.seed}"]).ml
    grid = settings(args.quick)
    configs = [(label, load_config(cfg, [f"ml.seed={args.seed}", *sets]).ml) for label, cfg, sets in grid]
    t0 = time.perf_counter()
    gam = load(args.gamma, [ml] + [mlc for _, mlc in configs[:2]], 1)
    pro = load(proton, [ml], 0)
    print(f"loaded features in {time.perf_counter() - t0:.1f} s; {len(configs)} settings, split seed {args.seed}, "
          f"one thread, medians of {args.repeats} fits")
    _warm_up(1)
    espec = FeatureSpec.from_config(ml.energy, ml.derived)
    pred = {name: [] for name in ["ctapipe ET", "lstchain RF"] + [label for label, _ in configs]}
    seconds = dict.fromkeys(pred, 0.0)
    et_particle = 0.0
    keys = []
    for t in sorted(set(gam) & set(pro)):
        c = gam[t]
        n = len(c[S.OBS_ID])
        part, _ = split_parts(c, args.seed)
        X, ok = espec.matrix(espec.environment(c), n)
        y = np.log10(c[S.TRUE_ENERGY])
        tr, te = ok & (part == 0), ok & (part == 2)
        keys.append((c[S.OBS_ID][te], c[S.EVENT_ID][te], c[S.TEL_ID][te], y[te], c[S.HILLAS_INTENSITY][te]))
        Xs = np.nan_to_num(X[tr])
        for name, sk in (("ctapipe ET", "ctapipe"), ("lstchain RF", "lstchain")):
            fits = [sk_fit("energy", sk, Xs, y[tr], None, 1, args.seed)
                    for _ in range(args.repeats if sk == "ctapipe" else 1)]
            pred[name].append(fits[-1][0](X[te]))
            seconds[name] += float(np.median([f[1] for f in fits]))
        for label, mlc in configs:
            fs = FeatureSpec.from_config(mlc.energy, mlc.derived)
            Xc, okc = fs.matrix(fs.environment(c), n)
            assert not (te & ~okc).any(), f"{label}: must predict every test row"
            trc = group_sample(c[S.OBS_ID], c[S.EVENT_ID], tr & okc, mlc.max_telescope_events_for("energy"), args.seed)
            fits = [dvp_fit("energy", Xc[trc], y[trc], c[S.OBS_ID][trc], c[S.EVENT_ID][trc], mlc, 1)
                    for _ in range(args.repeats)]
            pred[label].append(fits[-1][0](Xc[te]))
            seconds[label] += float(np.median([f[1] for f in fits]))
            if mlc is configs[0][1]:   # the defaults' energy: the classifier feature of ExtraTrees' particle fits
                et_particle += _et_particle_seconds(c, pro[t], fits[-1][0], ml, args.seed, args.repeats)
        print(f"{t}: {tr.sum():,} training / {te.sum():,} test telescope events", flush=True)
    obs, ev, tel, yt, inten = (np.concatenate(v) for v in zip(*keys))
    lt = combine(obs, ev, tel, yt, inten)[2]
    etrue = 10 ** lt
    events = {name: 10 ** combine(obs, ev, tel, np.concatenate(p), inten)[2] for name, p in pred.items()}
    res = {name: _resolutions(er, etrue) for name, er in events.items()}
    budget = (seconds["ctapipe ET"] + et_particle) / 5
    worse = _bootstrap(events, etrue, "lstchain RF", args.bootstrap, args.seed) if args.bootstrap else {}
    rf = res["lstchain RF"]
    print(f"\nExtraTrees: energy models {seconds['ctapipe ET']:.3f} s, particle models {et_particle:.3f} s; "
          f"budget for 5x faster than ExtraTrees (all four models / 5): {budget:.3f} s")
    print("\n| setting | energy models s | " + " | ".join(f"{lo:g}–{hi:g} TeV" for lo, hi in BINS) +
          " | worst bin / RF | less accurate than the RF (95 %) |")
    print("| --- | --- |" + " --- |" * len(BINS) + " --- | --- |")
    order = sorted(pred, key=lambda k: seconds[k])
    for name in order:
        ratio = np.max(res[name] / rf)
        flag = ", ".join(f"{lo:g}–{hi:g}" for (lo, hi), w in zip(BINS, worse.get(name, [])) if w) or \
            ("none" if name in worse else "")
        print(f"| {name} | {seconds[name]:.3f} | " + " | ".join(f"{r:.4f}" for r in res[name]) +
              f" | {ratio:.3f} | {flag} |")
    fit = [k for k in pred if k in worse and not any(worse[k]) and k != "lstchain RF"]
    fastest = min(fit, key=lambda k: seconds[k]) if fit else None
    if worse:   # significance needs the bootstrap
        print(f"\nsettings within the budget ({budget:.3f} s) and nowhere significantly less accurate than the "
              f"RandomForest: {', '.join(k for k in fit if seconds[k] <= budget) or 'none'}")
    if fastest:
        print(f"fastest setting nowhere significantly less accurate than the RandomForest: {fastest}, "
              f"{seconds[fastest]:.3f} s for the energy models alone ({seconds[fastest] / budget:.1f}x the budget "
              f"for all four; ExtraTrees' energy models {seconds['ctapipe ET']:.3f} s)")
    _plot(args.figure, seconds, res, rf, worse, budget, args.seed)


def _et_particle_seconds(g, p, energy, ml, seed, repeats):
    """Median seconds of ExtraTrees' particle fit on bench_ml's classifier rows of one
    telescope type (gamma and proton feature columns ``g``, ``p``), its reconstructed-energy
    feature from ``energy`` (log10 E of the default energy features' rows)."""
    cols = {k: np.concatenate([g[k], p[k]]) for k in g if k in p}
    n = len(cols[S.OBS_ID])
    part, _ = split_parts(cols, seed)
    espec, pspec = (FeatureSpec.from_config(m, ml.derived) for m in (ml.energy, ml.particle))
    Xe, ue = espec.matrix(espec.environment(cols), n)
    le = np.full(n, np.nan)
    le[ue] = energy(Xe[ue])
    cols[S.RECO_ENERGY] = 10 ** le
    Xp, up = pspec.matrix(pspec.environment(cols), n)
    tr = up & (part == 1)
    y = cols["label"][tr].astype(float)
    Xs = np.nan_to_num(Xp[tr])
    return float(np.median([sk_fit("particle", "ctapipe", Xs, y, class_weights(y), 1, seed)[1]
                            for _ in range(repeats)]))


def _resolutions(ereco, etrue):
    """Half the 16–84 % width of E_reco / E_true − 1 per bin of :data:`BINS`, shape (bins,)."""
    return np.array([bias_resolution(ereco[(etrue >= lo) & (etrue < hi)], etrue[(etrue >= lo) & (etrue < hi)])[1]
                     for lo, hi in BINS])


def _bootstrap(events, etrue, reference, n_boot, seed):
    """``{setting: (bins,) bool}``: the bins where a setting's resolution exceeds the
    reference's beyond the central 95 % of ``n_boot`` paired resamplings of the test events."""
    rng = np.random.default_rng(seed)
    n = len(etrue)
    diffs = {k: np.empty((n_boot, len(BINS))) for k in events}
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        ref = _resolutions(events[reference][idx], etrue[idx])
        for k, er in events.items():
            diffs[k][b] = _resolutions(er[idx], etrue[idx]) - ref
    return {k: np.percentile(d, 2.5, axis=0) > 0 for k, d in diffs.items()}


def _plot(path, seconds, res, rf, worse, budget, seed):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    top = 2.0   # settings worse than twice the RandomForest's resolution are drawn on the top edge
    for name in seconds:
        x, y = seconds[name], min(float(np.max(res[name] / rf)), top)
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
    ax.text(budget * 0.97, 0.75 * top + 0.25, "ExtraTrees (all four models) / 5", fontsize=8, ha="right",
            va="center", rotation=90, color="tab:red")
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set_ylim(0.95, top * 1.02)
    ax.set_xscale("log")
    ax.set_xlabel("training time of both energy models, one thread (s)")
    ax.set_ylabel(f"worst bin, 0.03–10 TeV: energy resolution / RandomForest's (above {top:g}: at {top:g})")
    marks = "o: nowhere significantly worse than the RF, x: worse" if worse else "no bootstrap: all x"
    ax.set_title(f"LightGBM settings ({marks}), split {seed}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
