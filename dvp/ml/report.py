"""Energy resolution and gamma/hadron separation of DL2 products with models applied.

``python -m dvp.ml.report DL2_DIR...`` prints, per bin of true energy, the energy bias and
resolution of the gammas (pyirf's definitions) and the ROC AUC of gammaness (gammas
against everything else) per bin of reconstructed energy.
"""
from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from .. import schemas as S
from .metrics import bias_resolution, roc_auc

EDGES_TEV = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def summarize(products, edges=EDGES_TEV) -> pl.DataFrame:
    """One row per energy bin: gamma events, bias, resolution, events for the AUC, AUC."""
    cols = [S.OBS_ID, S.EVENT_ID, S.TRUE_ENERGY, S.PARTICLE, S.RECO_ENERGY, S.RECO_ENERGY_IS_VALID]
    frames = []
    for p in products:
        files = sorted((Path(p) / "dl2").glob("*.parquet"))
        names = pl.read_parquet_schema(files[0])
        frames.append(pl.read_parquet(files, columns=[c for c in (*cols, S.GAMMANESS, S.GAMMANESS_IS_VALID)
                                                      if c in names]))
    ev = pl.concat(frames, how="diagonal_relaxed")
    if S.RECO_ENERGY not in ev.columns:
        raise SystemExit("no reco_energy_tev in the inputs: run dvp apply-models first")
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m dvp.ml.report DL2_DIR...")
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, float_precision=3):
        print(summarize(argv))
    return 0


if __name__ == "__main__":
    main()
