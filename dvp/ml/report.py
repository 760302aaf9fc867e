"""Energy resolution and gamma/hadron separation of DL2 products with models applied, and
of a model set's cross-validation.

``python -m dvp.ml.report DL2_DIR...`` prints, per bin of true energy, the energy bias and
resolution of the gammas (pyirf's definitions) and the ROC AUC of gammaness (gammas
against everything else) per bin of reconstructed energy, per array event.

``python -m dvp.ml.report MODELS...`` (model-set directories of ``dvp train``) prints the
same per telescope type and telescope event, from the out-of-fold predictions of the
training (``cv_predictions.parquet``): energy per bin of true energy, AUC per bin of the
reconstructed energy the classifier read (true energy if it read none); then each
feature's share of the models' split gain.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from .. import schemas as S
from ..errors import DvpError, InputError
from .metrics import bias_resolution, roc_auc

EDGES_TEV = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def summarize(products, edges=EDGES_TEV) -> pl.DataFrame:
    """One row per energy bin: gamma events, bias, resolution, events for the AUC, AUC."""
    cols = [S.OBS_ID, S.EVENT_ID, S.TRUE_ENERGY, S.PARTICLE, S.RECO_ENERGY, S.RECO_ENERGY_IS_VALID]
    frames = []
    for p in products:
        files = sorted((Path(p) / "dl2").glob("*.parquet"))
        if not files:
            raise InputError(p, "not a DL2 product or model set (no dl2/*.parquet, no model_set.json)")
        names = pl.read_parquet_schema(files[0])
        frames.append(pl.read_parquet(files, columns=[c for c in (*cols, S.GAMMANESS, S.GAMMANESS_IS_VALID)
                                                      if c in names]))
    ev = pl.concat(frames, how="diagonal_relaxed")
    if S.RECO_ENERGY not in ev.columns:
        raise DvpError(f"{', '.join(map(str, products))}: no reco_energy_tev (run dvp apply-models first)")
    ev = ev.filter(pl.col(S.RECO_ENERGY_IS_VALID))
    gam = ev.filter(pl.col(S.PARTICLE) == "gamma")
    et, er = gam[S.TRUE_ENERGY].to_numpy(), gam[S.RECO_ENERGY].to_numpy()
    has_g = S.GAMMANESS in ev.columns
    if has_g:
        ev = ev.filter(pl.col(S.GAMMANESS_IS_VALID))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (et >= lo) & (et < hi)
        bias, res = bias_resolution(er[m], et[m])
        row = {"energy_tev": f"{lo:g}-{hi:g}", "gammas": int(m.sum()), "bias": bias, "resolution": res}
        if has_g:
            sel = ev.filter((pl.col(S.RECO_ENERGY) >= lo) & (pl.col(S.RECO_ENERGY) < hi))
            row["events_auc"] = sel.height
            row["auc"] = roc_auc(sel[S.GAMMANESS].to_numpy(), (sel[S.PARTICLE] == "gamma").to_numpy())
        rows.append(row)
    bias, res = bias_resolution(er, et)
    total = {"energy_tev": "all", "gammas": len(et), "bias": bias, "resolution": res}
    if has_g:
        total["events_auc"] = ev.height
        total["auc"] = roc_auc(ev[S.GAMMANESS].to_numpy(), (ev[S.PARTICLE] == "gamma").to_numpy())
    rows.append(total)
    return pl.DataFrame(rows)


def summarize_cv(model_set, edges=EDGES_TEV) -> pl.DataFrame:
    """One row per telescope type and energy bin (and "all") of a model set's
    cross-validation predictions: energy models ``events``, ``bias``, ``resolution`` of
    the signal telescope events per bin of true energy; particle models ``events`` and
    ``auc`` (signal against background) per bin of reconstructed energy (true energy if
    the classifier read none)."""
    from .model import CV_PREDICTIONS_FILE
    f = Path(model_set) / CV_PREDICTIONS_FILE
    if not f.is_file():
        raise InputError(f, "no cross-validation predictions (trained with --no-cv-predictions, or by an older dvp)")
    cv = pl.read_parquet(f)
    energy = S.TEL_RECO_ENERGY in cv.columns
    binned_by = S.TRUE_ENERGY if energy or S.RECO_ENERGY not in cv.columns else S.RECO_ENERGY
    bin_column = "true_energy_bin_tev" if binned_by == S.TRUE_ENERGY else "reco_energy_bin_tev"
    rows = []
    for tel_type in sorted(cv[S.TEL_TYPE].unique()):
        t = cv.filter(pl.col(S.TEL_TYPE) == tel_type)
        if energy:
            t = t.filter(pl.col(S.IS_SIGNAL))
        bins = [(f"{lo:g}-{hi:g}", (pl.col(binned_by) >= lo) & (pl.col(binned_by) < hi))
                for lo, hi in zip(edges[:-1], edges[1:])] if binned_by in t.columns else []
        for name, cond in [*bins, ("all", pl.lit(True))]:
            sel = t.filter(cond)
            row = {"tel_type": tel_type, bin_column: name, "events": sel.height}
            if energy:
                row["bias"], row["resolution"] = bias_resolution(sel[S.TEL_RECO_ENERGY].to_numpy(),
                                                                 sel[S.TRUE_ENERGY].to_numpy())
            else:
                row["auc"] = roc_auc(sel[S.TEL_GAMMANESS].to_numpy(), sel[S.IS_SIGNAL].to_numpy())
            rows.append(row)
    return pl.DataFrame(rows)


def feature_importance(model_set) -> pl.DataFrame:
    """Each feature's share of the total split gain per telescope type (LightGBM's gain
    importance over the trees kept, from ``model_set.json``), most important first (by
    the mean over types). With linear leaves (the energy default) this is the gain of
    the splits only: a feature the leaves' planes use, as they use intensity, can rank
    low."""
    import json

    from .model import MODEL_SET_FILE
    meta = json.loads((Path(model_set) / MODEL_SET_FILE).read_text())
    shares = {}
    for tel_type, info in sorted(meta["telescope_types"].items()):
        gain = info.get("feature_importance", {}).get("gain")
        if gain:
            total = sum(gain.values()) or 1.0
            shares[tel_type] = [gain.get(f, 0.0) / total for f in meta["features"]]
    if not shares:
        return pl.DataFrame()
    table = pl.DataFrame({"feature": meta["features"], **shares})
    return table.sort(pl.mean_horizontal(list(shares)), descending=True)


def plot(curves: dict, path) -> Path:
    """Draw report tables as a PNG: resolution and bias per energy bin for the tables
    that have them, ROC AUC for those that have it; one curve per ``{label: table}``
    (tables of :func:`summarize`, or of :func:`summarize_cv` for one telescope type
    without its ``tel_type`` column: the first column names the bin, "lo-hi" in TeV)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(c, name) for c, name in (("resolution", "energy resolution (68 %)"), ("bias", "energy bias (median)"),
                                         ("auc", "ROC AUC")) if any(c in t.columns for t in curves.values())]
    if not panels:
        raise DvpError(f"{path}: nothing to plot (no energy or gammaness in the inputs)")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for label, t in curves.items():
        t = t.filter(pl.col(t.columns[0]) != "all")      # the first column names the energy bin
        edges = [tuple(float(v) for v in b.split("-")) for b in t[t.columns[0]]]
        centres = np.array([np.sqrt(lo * hi) for lo, hi in edges])
        for ax, (c, _) in zip(axes[0], panels):
            if c in t.columns:
                y = t[c].to_numpy().astype(float)
                ok = np.isfinite(y)
                ax.plot(centres[ok], y[ok], "o-", label=label)
    for ax, (c, name) in zip(axes[0], panels):
        ax.set_xscale("log")
        ax.set_xlabel("reconstructed energy (TeV)" if c == "auc" else "true energy (TeV)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    """The command line: 0, or 1 after a one-line error on standard error."""
    try:
        return _main(argv)
    except DvpError as e:
        print(f"python -m dvp.ml.report: error: {e}", file=sys.stderr)
        return 1


def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m dvp.ml.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="DL2 product directories with models applied, or model-set directories")
    ap.add_argument("--plot", metavar="PNG", help="also draw the tables into this PNG file")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    from .model import MODEL_SET_FILE
    model_sets = [a for a in args.inputs if (Path(a) / MODEL_SET_FILE).is_file()]
    products = [a for a in args.inputs if a not in model_sets]
    curves = {}
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, float_precision=3, fmt_str_lengths=48):
        for m in model_sets:
            print(f"{m}: cross-validation, telescope events")
            table = summarize_cv(m)
            print(table)
            importance = feature_importance(m)
            if importance.height:
                print(f"{m}: share of the split gain per feature")
                print(importance)
            for tel_type in table[S.TEL_TYPE].unique(maintain_order=True):
                curves[f"{Path(m).name}: {tel_type} (cross-validation)"] = (
                    table.filter(pl.col(S.TEL_TYPE) == tel_type).drop(S.TEL_TYPE))
        if products:
            table = summarize(products)
            print(table)
            curves["array events" if not model_sets else "DL2 array events"] = table
    if args.plot:
        print(f"figure: {plot(curves, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
