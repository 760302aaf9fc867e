"""Runs ``dvp train`` and ``dvp apply-models``: product directories in, a model set or a
DL2 product directory out, atomically, with provenance (see :mod:`dvp.runner`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import schemas as S
from .errors import DvpError, InputError
from .io.parquet import ProductWriter, TableWriter
from .provenance import input_record, now, start_record
from .runner import _carried_files, expand_products, finish_dl2_product


@dataclass
class TrainSummary:
    output: Path
    kind: str
    n_tel_events: dict = field(default_factory=dict)   # usable telescope events per type
    cv: dict = field(default_factory=dict)              # per type: mean cross-validation scores
    seconds: float = 0.0


def _training_rows(spec, products, tel_type, extra, role):
    """Feature matrix, usable mask and the extra columns of one type over ``products``."""
    from .ml.dataset import columns_as_numpy, load_telescope_events, telescope_types
    frames = [load_telescope_events(p, tel_type, sorted({*spec.columns, *extra}))
              for p in products if tel_type in telescope_types(p)]
    if not frames:
        return None
    df = pl.concat(frames, how="vertical_relaxed")
    cols = columns_as_numpy(df)
    env = spec.environment(cols)
    X, usable = spec.matrix(env, df.height)
    cols["role"] = np.full(df.height, role)
    return X, usable, cols


def train(kind, signal, background=(), output=None, config=None, *, overwrite=False, progress=None,
          command="train", workers: int | None = 1, scheduler: str | None = None) -> TrainSummary:
    """Train one LightGBM model per telescope type and write a model set to ``output``.

    ``kind`` "energy": regression of log10(true energy) on the ``signal`` products;
    "particle": gamma (``signal``) against ``background`` classification. The inputs are
    DL2 product directories (``dvp dl1-to-dl2``, or ``dvp apply-models`` output when the
    features include the reconstructed energy). Only the columns the features, the
    quality query and the targets need are read.
    """
    from .config import Config
    from .ml.dataset import telescope_types
    from .ml.features import FeatureSpec
    from .ml.model import KINDS, ModelSet, fit
    from .ml.split import group_uniform

    if kind not in KINDS:
        raise DvpError(f"unknown model kind {kind!r} (choose energy or particle)")
    config = config or Config()
    ml = config.ml
    mcfg = ml.model(kind)
    sig = expand_products(signal, "dl2")
    bkg = expand_products(background or (), "dl2")
    if not sig:
        raise DvpError("no --signal product directories given")
    if kind == "particle" and not bkg:
        raise DvpError("a particle model needs --background product directories (e.g. simulated protons)")
    if kind == "energy" and bkg:
        raise DvpError("an energy model trains on --signal only (gammas); drop --background")
    t0 = time.perf_counter()
    spec = FeatureSpec.from_config(mcfg, ml.derived)
    extra = [S.OBS_ID, S.EVENT_ID, S.TEL_ID, S.HILLAS_INTENSITY, S.PARTICLE]
    if kind == "energy":
        extra.append(S.TRUE_ENERGY)
    types = sorted({t for p in (*sig, *bkg) for t in telescope_types(p)})
    prov = start_record(command, [*sig, *bkg], config.to_dict())
    summary = TrainSummary(output=Path(output), kind=kind)
    meta_types = {}
    boosters = {}
    if progress:
        progress(0, len(types) * (ml.n_folds + 1))
    for tel_type in types:
        parts = [r for r in (_training_rows(spec, sig, tel_type, extra, 1),
                             _training_rows(spec, bkg, tel_type, extra, 0) if bkg else None) if r is not None]
        X = np.concatenate([p[0] for p in parts])
        usable = np.concatenate([p[1] for p in parts])
        cols = {c: np.concatenate([p[2][c] for p in parts]) for c in ("role", *extra)}
        if kind == "energy":
            y = np.log10(cols[S.TRUE_ENERGY])
            usable &= np.isfinite(y)
        else:
            y = cols["role"].astype(np.float64)
        if ml.max_telescope_events and usable.sum() > ml.max_telescope_events:
            # a seeded sample of whole array events, so the group split stays leak-free
            u = group_uniform(cols[S.OBS_ID], cols[S.EVENT_ID], ml.seed, salt=3)
            cut = np.quantile(u[usable], ml.max_telescope_events / usable.sum())
            usable &= u <= cut
        n_use = int(usable.sum())
        if n_use < 4 * ml.n_folds or (kind == "particle" and len(set(y[usable].tolist())) < 2):
            summary.n_tel_events[tel_type] = n_use
            if progress:
                progress(ml.n_folds + 1)
            continue   # too few to train: this type gets no model (its predictions stay invalid)
        base = progress
        res = fit(kind, X[usable], y[usable], cols[S.OBS_ID][usable], cols[S.EVENT_ID][usable], ml,
                  log10_intensity=np.log10(cols[S.HILLAS_INTENSITY][usable]), feature_names=spec.features,
                  progress=(lambda k: base(1)) if base else None, workers=workers, scheduler=scheduler)
        boosters[tel_type] = res.booster
        particles = {}
        for role in (1, 0):
            m = usable & (cols["role"] == role)
            if m.any():
                vals, counts = np.unique(cols[S.PARTICLE][m].astype(str), return_counts=True)
                particles["signal" if role else "background"] = dict(zip(vals.tolist(), counts.tolist()))
        meta_types[tel_type] = {"file": f"{tel_type}.lgb.txt", **res.info, "particles": particles,
                                "n_available": int(len(y))}
        summary.n_tel_events[tel_type] = n_use
        summary.cv[tel_type] = {k: v for k, v in res.info["cv"].items() if k.endswith("_mean")}
    if not boosters:
        raise DvpError(f"no telescope type has enough usable telescope events to train "
                       f"({summary.n_tel_events}); check the inputs and the quality query")
    import lightgbm
    from .ml.model import lightgbm_params
    meta = {
        "kind": kind, "features": list(spec.features), "derived": [list(d) for d in spec.derived],
        "quality": [list(c) for c in mcfg.quality.criteria], "weights": mcfg.weights,
        "target": "log10(true_energy_tev)" if kind == "energy" else "gamma probability (signal = 1)",
        "lightgbm_params": lightgbm_params(kind, ml), "lightgbm_version": lightgbm.__version__,
        "telescope_types": meta_types,
        "training_data": {"signal": [input_record(p) for p in sig], "background": [input_record(p) for p in bkg]},
        "provenance": dict(prov, stop=now()),
    }
    ms = ModelSet(kind, spec, mcfg.weights, boosters, meta)
    with ProductWriter(output, overwrite=overwrite) as pw:
        ms.save(pw.tmp)
        pw.commit()
    summary.seconds = time.perf_counter() - t0
    return summary


# -- apply-models ------------------------------------------------------------------------

def load_model_sets(paths) -> list:
    """Model sets from directories (a model set, or a directory of model sets), energy
    first: the particle features may use the energy just reconstructed."""
    from .ml.model import MODEL_SET_FILE, ModelSet
    sets = []
    for item in paths:
        p = Path(item)
        if not p.exists():
            raise DvpError(f"{p}: model directory does not exist")
        if (p / MODEL_SET_FILE).is_file():
            sets.append(ModelSet.load(p))
        else:
            subs = sorted(d for d in p.iterdir() if (d / MODEL_SET_FILE).is_file()) if p.is_dir() else []
            if not subs:
                raise DvpError(f"{p}: not a dvp model set (no {MODEL_SET_FILE}; made by dvp train)")
            sets.extend(ModelSet.load(d) for d in subs)
    kinds = [m.kind for m in sets]
    if len(set(kinds)) != len(kinds):
        raise DvpError(f"two {sorted(k for k in kinds if kinds.count(k) > 1)[0]} model sets given; pass one per kind")
    return sorted(sets, key=lambda m: ("energy", "particle").index(m.kind))


def _aligned(keys: pl.DataFrame, values: pl.DataFrame, on) -> pl.DataFrame:
    """``values`` rows matched to ``keys`` rows (left join, order of ``keys`` kept)."""
    return keys.join(values, on=on, how="left", maintain_order="left")


def _apply_product(product, models, weights, ev: pa.Table, tel: pa.Table, progress=None):
    """Add the model columns to one product's dl2 (``ev``) and dl2_telescopes (``tel``)."""
    from .ml.dataset import columns_as_numpy, load_telescope_events, telescope_types
    from .ml.features import WEIGHT_COLUMNS
    from .stages.dl2_models import combine_events, predict_telescopes, telescope_columns

    keys2, keys3 = [S.OBS_ID, S.EVENT_ID], [S.OBS_ID, S.EVENT_ID, S.TEL_ID]
    for model in models:
        value_col, uncert_col, valid_col, n_col, tel_value, tel_valid = S.MODEL_COLUMNS[model.kind]
        drop = [c for c in (value_col, uncert_col, valid_col, n_col) if c and c in ev.column_names]
        ev = ev.drop_columns(drop)
        tel = tel.drop_columns([c for c in (tel_value, tel_valid) if c in tel.column_names])
        ev_pl = pl.from_arrow(ev.select([c for c in ev.column_names if c in (*keys2, *S.column_names(
            S.DL2_EVENTS, optional=True)) and not isinstance(ev.schema.field(c).type, pa.ListType)]))
        need = sorted({*model.spec.columns, *WEIGHT_COLUMNS} - set(ev_pl.columns))
        preds = []
        for tel_type in telescope_types(product):
            df = load_telescope_events(product, tel_type, need)
            df = df.join(ev_pl.select([c for c in ev_pl.columns if c in (*keys2, *model.spec.columns)]),
                         on=keys2, how="left", maintain_order="left")
            cols = columns_as_numpy(df)
            preds.append(predict_telescopes(model, tel_type, cols, df.height, weights.get(model.kind)))
            if progress:
                progress(df.height)
        P = pa.concat_tables(preds) if preds else None
        if P is None or not P.num_rows:
            continue
        tcols = telescope_columns(model.kind, P)
        tel_new = pl.DataFrame({**{k: P.column(k).to_numpy() for k in keys3}, **tcols})
        t = _aligned(pl.from_arrow(tel.select(keys3)), tel_new, keys3)
        tel = tel.append_column(tel_value, pa.array(t[tel_value].fill_null(np.nan).to_numpy()))
        tel = tel.append_column(tel_valid, pa.array(t[tel_valid].fill_null(False).to_numpy()))
        E = pl.from_arrow(combine_events(model.kind, P))
        e = _aligned(pl.from_arrow(ev.select(keys2)), E, keys2)
        for c in (value_col, uncert_col):
            if c:
                ev = ev.append_column(c, pa.array(e[c].fill_null(np.nan).to_numpy()))
        ev = ev.append_column(valid_col, pa.array(e[valid_col].fill_null(False).to_numpy()))
        ev = ev.append_column(n_col, pa.array(e[n_col].fill_null(0).to_numpy().astype(np.int16)))
    return ev, tel


def apply_models(inputs, models, output, *, weights=None, overwrite=False, progress=None,
                 command="apply-models"):
    """Reconstruct energy and/or gammaness of DL2 products with trained model sets.

    Per input product: every telescope event gets its prediction (``dl2_telescopes``:
    ``tel_reco_energy_tev``, ``tel_gammaness`` and validity), then each array event the
    weighted mean of its valid telescopes (``dl2``: ``reco_energy_tev`` and its
    uncertainty, ``gammaness``, validity, telescopes used). ``weights`` maps a kind to
    the combination weights, overriding the model set's. Everything else (instrument,
    simulation, trigger, DL1 parameters) is carried over.
    """
    from .config import COMBINE_WEIGHTS
    from .instrument.subarray import SubarrayDescription
    from .runner import RunSummary

    weights = dict(weights or {})
    for kind, w in weights.items():
        if w not in COMBINE_WEIGHTS[kind]:
            raise DvpError(f"--{'energy' if kind == 'energy' else 'gammaness'}-weights: must be one of "
                           f"{', '.join(COMBINE_WEIGHTS[kind])}, got {w!r}")
    sets = load_model_sets(models)
    if not sets:
        raise DvpError("no --models given")
    products = expand_products(inputs, "dl2")
    if not products:
        raise DvpError("no input product directories given")
    t0 = time.perf_counter()
    subarray = SubarrayDescription.read(products[0])
    for p in products:
        if p != products[0] and SubarrayDescription.read(p).fingerprint() != subarray.fingerprint():
            raise InputError(p, f"instrument differs from {products[0]}; process different arrays separately")
        if not (p / "dl1").is_dir():
            raise InputError(p, "product has no dl1/ parameters (rerun dvp dl1-to-dl2 with this dvp)")
    carried = _carried_files(products)
    config = {"models": [{"path": str(m.path.resolve()), "kind": m.kind,
                          "model_set_sha256": input_record(m.path / "model_set.json")["sha256"],
                          "weights": weights.get(m.kind, m.weights)} for m in sets]}
    prov = start_record(command, products, config)
    summary = RunSummary(output=Path(output), n_inputs=len(products))
    if progress:
        progress(0, len(sets) * sum(pq.ParquetFile(f).metadata.num_rows
                                    for p in products for f in (p / "dl2_telescopes").glob("*.parquet")))
    with ProductWriter(output, overwrite=overwrite) as pw:
        ev_out = TableWriter(pw.path("dl2", "part-00000.parquet"), S.DL2_EVENTS, prov)
        tel_out = TableWriter(pw.path("dl2_telescopes", "part-00000.parquet"), S.DL2_TELESCOPE_EVENTS, prov)
        n_tel = n_valid = 0
        for p in products:
            try:
                ev = pq.read_table(p / "dl2" / "part-00000.parquet")
                tel = pq.read_table(p / "dl2_telescopes" / "part-00000.parquet")
            except (OSError, pa.ArrowException) as e:
                raise InputError(p, f"corrupt or unreadable DL2 table ({str(e).splitlines()[0]})") from None
            ev = S.validate(ev, S.DL2_EVENTS, source=str(p / "dl2"))
            tel = S.validate(tel, S.DL2_TELESCOPE_EVENTS, source=str(p / "dl2_telescopes"))
            ev, tel = _apply_product(p, sets, weights, ev, tel, progress)
            ev_out.write(ev)
            tel_out.write(tel)
            n_tel += tel.num_rows
            for m in sets:
                n_valid += int(np.sum(ev.column(S.MODEL_COLUMNS[m.kind][2]).to_numpy(zero_copy_only=False)))
        ev_out.close()
        tel_out.close()
        summary.n_array_events = ev_out.rows
        summary.n_tel_events = {"dl2_telescopes": n_tel}
        finish_dl2_product(pw, subarray, carried, products, prov, summary, t0,
                           {"telescope_events": n_tel, "array_events": ev_out.rows, "valid_predictions": n_valid})
    return summary
