"""Runs ``dvp train`` and ``dvp apply-models``: product directories in, a model set or a
DL2 product directory out, atomically, with provenance (see :mod:`dvp.runner`)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import schemas as S
from .errors import DvpError, InputError
from .io.parquet import ProductWriter, write_table
from .provenance import input_record, now, start_record
from .runner import APPLY_TASK_ROWS, _carried_files, expand_products


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
          command="train", workers: int | None = 1, scheduler: str | None = None,
          cv_predictions: bool = True) -> TrainSummary:
    """Train one LightGBM model per telescope type and write a model set to ``output``.

    ``kind`` "energy": regression of log10(true energy) on the ``signal`` products;
    "particle": gamma (``signal``) against ``background`` classification. The inputs are
    DL2 product directories (``dvp dl1-to-dl2``, or ``dvp apply-models`` output when the
    features include the reconstructed energy). Only the columns the features, the
    quality query and the targets need are read. With ``cv_predictions`` the model set
    also holds every training telescope event's out-of-fold prediction
    (``cv_predictions.parquet``, schema ``ml.cv_predictions``), as ctapipe's ``--cv-output``.
    """
    from .config import Config
    from .ml.dataset import telescope_types
    from .ml.features import FeatureSpec
    from .ml.model import CV_PREDICTIONS_FILE, KINDS, ModelSet, _run_fit_task, finish_fit, fit_error, plan_fit
    from .ml.split import group_sample

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
    if kind == "energy" or (cv_predictions and all(_has_column(p, "dl2", S.TRUE_ENERGY) for p in (*sig, *bkg))):
        extra.append(S.TRUE_ENERGY)
    if cv_predictions and S.RECO_ENERGY in spec.columns:
        extra.append(S.RECO_ENERGY)
    types = sorted({t for p in (*sig, *bkg) for t in telescope_types(p)})
    prov = start_record(command, [*sig, *bkg], config.to_dict())
    summary = TrainSummary(output=Path(output), kind=kind)
    meta_types = {}
    boosters = {}
    if progress:
        progress(0, len(types) * (ml.n_folds + 1))
    plans, keep, cv_rows = {}, {}, {}
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
        usable = group_sample(cols[S.OBS_ID], cols[S.EVENT_ID], usable, ml.max_telescope_events_for(kind), ml.seed)
        n_use = int(usable.sum())
        summary.n_tel_events[tel_type] = n_use
        if n_use < 4 * ml.n_folds or (kind == "particle" and len(set(y[usable].tolist())) < 2):
            if progress:
                progress(ml.n_folds + 1)
            continue   # too few to train: this type gets no model (its predictions stay invalid)
        plans[tel_type] = plan_fit(kind, X[usable], y[usable], cols[S.OBS_ID][usable], cols[S.EVENT_ID][usable], ml,
                                   log10_intensity=np.log10(cols[S.HILLAS_INTENSITY][usable]),
                                   feature_names=spec.features)
        particles = {}
        for role in (1, 0):
            m = usable & (cols["role"] == role)
            if m.any():
                vals, counts = np.unique(cols[S.PARTICLE][m].astype(str), return_counts=True)
                particles["signal" if role else "background"] = dict(zip(vals.tolist(), counts.tolist()))
        keep[tel_type] = (particles, int(len(y)))
        if cv_predictions:
            cv_rows[tel_type] = {c: cols[c][usable] for c in ("role", *extra)}
    # every type's K + 1 fits in one task list: one pool (or Dask session) for the run
    from .executor import run_tasks
    todo = [(tel_type, t) for tel_type, plan in plans.items() for t in plan.tasks]
    results: dict = {tel_type: {} for tel_type in plans}
    for i, res, err in run_tasks(_run_fit_task, [t for _, t in todo], workers=workers, scheduler=scheduler):
        if err is not None:
            raise fit_error(err)
        tel_type, t = todo[i]
        results[tel_type][t.k] = res
        if progress:
            progress(1)
    cv_tables = []
    for tel_type, plan in plans.items():
        res = finish_fit(plan, results[tel_type])
        if cv_predictions:
            cv_tables.append(_cv_table(kind, tel_type, cv_rows.pop(tel_type), res.oof, plan.folds))
        boosters[tel_type] = res.booster
        particles, n_available = keep[tel_type]
        meta_types[tel_type] = {"file": f"{tel_type}.lgb.txt", **res.info, "particles": particles,
                                "n_available": n_available}
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
        if cv_tables:
            write_table(pa.concat_tables(cv_tables), pw.path(CV_PREDICTIONS_FILE), S.CV_PREDICTIONS,
                        provenance=meta["provenance"])
        pw.commit()
    summary.seconds = time.perf_counter() - t0
    return summary


def _has_column(product, table: str, column: str) -> bool:
    """Whether ``product``'s ``table``/ Parquet files have ``column`` (their first file's schema)."""
    files = sorted((Path(product) / table).glob("*.parquet"))
    return bool(files) and column in pq.read_schema(files[0]).names


def _cv_table(kind, tel_type, rows, oof, folds) -> pa.Table:
    """One telescope type's rows of ``cv_predictions.parquet``: the training rows' keys,
    truth, out-of-fold predictions ``oof`` and each row's fold."""
    n = len(oof)
    data = {S.OBS_ID: rows[S.OBS_ID], S.EVENT_ID: rows[S.EVENT_ID], S.TEL_ID: rows[S.TEL_ID],
            S.TEL_TYPE: pa.array([tel_type] * n, pa.string()), S.CV_FOLD: folds.astype(np.int8),
            S.IS_SIGNAL: rows["role"] == 1, S.PARTICLE: pa.array(rows[S.PARTICLE].astype(str), pa.string()),
            S.HILLAS_INTENSITY: rows[S.HILLAS_INTENSITY]}
    for c in (S.TRUE_ENERGY, S.RECO_ENERGY):
        if c in rows:
            data[c] = rows[c]
    if kind == "energy":
        data[S.TEL_RECO_ENERGY] = 10 ** oof
    else:
        data[S.TEL_GAMMANESS] = oof
    return pa.table(data)


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


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, NaN (False for booleans) where ``rows`` is -1 (no such row)."""
    missing = rows < 0
    if not missing.any():
        return values[rows]
    if values.dtype == np.bool_:
        return np.where(missing, False, values[np.where(missing, 0, rows)])
    out = values[np.where(missing, 0, rows)].astype(np.float64)
    out[missing] = np.nan
    return out


def _rows_of(keys: tuple, table_keys: list) -> np.ndarray:
    """Row of the table with key columns ``table_keys`` holding each key of ``keys``, -1 if
    none: a merge of the sorted keys, or a join where either side is not sorted."""
    from .kernels.keys import match_sorted_keys
    rows = match_sorted_keys(tuple(keys), tuple(table_keys))
    if rows is not None:
        return rows
    names = [f"k{i}" for i in range(len(keys))]
    left = pl.DataFrame(dict(zip(names, keys)))
    right = pl.DataFrame(dict(zip(names, table_keys))).with_row_index("_row").unique(names, keep="first")
    joined = left.join(right, on=names, how="left", maintain_order="left")
    return joined["_row"].cast(pl.Int64).fill_null(-1).to_numpy()


def _apply(models, weights, ev: pa.Table, tel: pa.Table, tel_types, load, progress=None):
    """Add the model columns to the dl2 rows ``ev`` and dl2_telescopes rows ``tel`` of a
    set of whole array events. ``load(tel_type, dl1_columns)`` gives that type's telescope
    events (keys and DL1 parameters) as a polars frame."""
    from .ml.dataset import columns_as_numpy, split_columns
    from .ml.features import WEIGHT_COLUMNS
    from .stages.dl2_models import combine_events, predict_telescopes, telescope_columns

    keys2, keys3 = [S.OBS_ID, S.EVENT_ID], [S.OBS_ID, S.EVENT_ID, S.TEL_ID]

    def event_columns(ev):   # the dl2 columns a model may read
        return [c for c in ev.column_names if c in (*keys2, *S.column_names(S.DL2_EVENTS, optional=True))
                and not isinstance(ev.schema.field(c).type, pa.ListType)]

    # every model's (DL1 parameters, dl2_telescopes columns); the columns earlier models add
    # are dl2 ones, so what each model reads is known before the first runs
    have = set(event_columns(ev))
    needs = [split_columns(sorted({*m.spec.columns, *WEIGHT_COLUMNS} - have))[:2] for m in models]
    union_dl1 = sorted({c for d, _ in needs for c in d})
    union_tel = sorted({c for _, t in needs for c in t})
    # each telescope event's row numbers in ``tel`` and ``ev``: every model then takes its
    # dl2_telescopes and dl2 columns, and puts its predictions back, by row number. Row
    # order within a type does not matter: combine_events sorts each event's telescopes
    tel_values = columns_as_numpy(pl.from_arrow(tel.select(union_tel))) if union_tel else {}
    tel_keys = [tel.column(c).to_numpy() for c in keys3]
    ev_keys = [ev.column(c).to_numpy() for c in keys2]
    frames = {}
    for tel_type in tel_types:
        d = load(tel_type, union_dl1)
        cols = columns_as_numpy(d)
        tel_row = _rows_of(tuple(cols[c] for c in keys3), tel_keys)
        ev_row = _rows_of(tuple(cols[c] for c in keys2), ev_keys)
        cols.update({c: _take(v, tel_row) for c, v in tel_values.items()})
        frames[tel_type] = (d.height, cols, tel_row, ev_row)
    for model, (dl1_cols, tel_cols) in zip(models, needs):
        value_col, uncert_col, valid_col, n_col, tel_value, tel_valid = S.MODEL_COLUMNS[model.kind]
        drop = [c for c in (value_col, uncert_col, valid_col, n_col) if c and c in ev.column_names]
        ev = ev.drop_columns(drop)
        tel = tel.drop_columns([c for c in (tel_value, tel_valid) if c in tel.column_names])
        ev_cols = [c for c in event_columns(ev) if c in model.spec.columns and c not in keys2]   # checked up front
        ev_values = columns_as_numpy(pl.from_arrow(ev.select(ev_cols))) if ev_cols else {}
        preds, tel_rows = [], []
        for tel_type in tel_types:
            n, cols, tel_row, ev_row = frames[tel_type]
            columns = {c: cols[c] for c in (*keys3, *dl1_cols, *tel_cols)}
            columns.update({c: _take(v, ev_row) for c, v in ev_values.items()})
            preds.append(predict_telescopes(model, tel_type, columns, n, weights.get(model.kind)))
            tel_rows.append(tel_row)
            if progress:
                progress(n)
        t = {tel_value: np.full(tel.num_rows, np.nan), tel_valid: np.zeros(tel.num_rows, bool)}
        e = {c: np.full(ev.num_rows, np.nan) for c in (value_col, uncert_col) if c}
        e.update({valid_col: np.zeros(ev.num_rows, bool), n_col: np.zeros(ev.num_rows, np.int16)})
        if preds and sum(x.num_rows for x in preds):   # else the columns still exist: every part has one schema
            P = pa.concat_tables(preds)
            rows = np.concatenate(tel_rows)
            found = rows >= 0
            for c, v in telescope_columns(model.kind, P).items():
                t[c][rows[found]] = v[found]
            combined = combine_events(model.kind, P)
            rows = _rows_of((combined.column(S.OBS_ID).to_numpy(), combined.column(S.EVENT_ID).to_numpy()), ev_keys)
            found = rows >= 0
            for c in e:
                e[c][rows[found]] = combined.column(c).to_numpy(zero_copy_only=False)[found]
        for c, v in t.items():
            tel = tel.append_column(c, pa.array(v))
        for c, v in e.items():
            ev = ev.append_column(c, pa.array(v))
    return ev, tel


@dataclass(frozen=True)
class ApplyTask:
    """One apply-models work unit: the array events of one product with keys in ``[lo, hi)``."""

    product: str
    name: str
    lo: list | None
    hi: list | None
    dl1: tuple              # ((tel_type, (file, ...)), ...)
    dl2: tuple              # the product's dl2/ files
    dl2_telescopes: tuple   # its dl2_telescopes/ files
    models: tuple           # model-set directories, in application order
    weights: str            # JSON {kind: combination weights}
    staging: str
    provenance: str         # JSON


_MODEL_SETS: dict = {}


def _model_sets(directories: tuple) -> list:
    """The model sets of a task, loaded once per worker process."""
    if directories not in _MODEL_SETS:
        from .ml.model import ModelSet
        _MODEL_SETS[directories] = [ModelSet.load(Path(d)) for d in directories]
    return _MODEL_SETS[directories]


def run_apply_task(task: ApplyTask) -> dict:
    """Apply the models to one key range: ``<staging>/dl2/<name>.parquet`` and
    ``dl2_telescopes/<name>.parquet`` (renamed when complete), then the task record."""
    from .io.keyrange import key_from_json, read_key_range_concat
    from .ml.dataset import TEL_KEYS
    from .runner import _inject_fault, _write_dl2_parts, _write_json_atomic

    _inject_fault(task.name)
    models = _model_sets(task.models)
    weights = json.loads(task.weights)
    lo, hi = key_from_json(task.lo), key_from_json(task.hi)
    ev = S.validate(read_key_range_concat(task.dl2, None, lo, hi), S.DL2_EVENTS, source=f"{task.product}/dl2")
    tel = S.validate(read_key_range_concat(task.dl2_telescopes, None, lo, hi), S.DL2_TELESCOPE_EVENTS,
                     source=f"{task.product}/dl2_telescopes")
    dl1_files = dict(task.dl1)

    def load(tel_type, dl1_cols):
        return pl.from_arrow(read_key_range_concat(dl1_files[tel_type], [*TEL_KEYS, *dl1_cols], lo, hi))

    ev, tel = _apply(models, weights, ev, tel, sorted(dl1_files), load)
    staging = Path(task.staging)
    parts = _write_dl2_parts(task.name, staging, task.provenance, ev, tel)
    valid = {m.kind: int(np.sum(ev.column(S.MODEL_COLUMNS[m.kind][2]).to_numpy(zero_copy_only=False)))
             for m in models}
    record = {"task": task.name, "input": task.product, "key_range": [task.lo, task.hi], "rows_in": tel.num_rows,
              "array_events": ev.num_rows, "valid": valid, "parts": parts}
    _write_json_atomic(staging / "tasks" / f"{task.name}.json", record)
    return record


def _check_model_inputs(product: Path, sets, dl1_files) -> None:
    """Every column the models read exists in ``product`` (or is made by an earlier
    model): else a one-line error before any work."""
    from .ml.dataset import split_columns
    from .ml.features import WEIGHT_COLUMNS
    from .runner import _open_checked

    def names(files):   # the columns every file has (opening each checks it is readable)
        out = None
        for f in files:
            n = set(_open_checked(f, S.DL1_EVENTS, ()).schema_arrow.names)
            out = n if out is None else out & n
        return out or set()

    ev_files = sorted((product / "dl2").glob("*.parquet"))
    tel_files = sorted((product / "dl2_telescopes").glob("*.parquet"))
    for d, files in (("dl2", ev_files), ("dl2_telescopes", tel_files)):
        if not files:
            raise InputError(product / d, "no Parquet file")
    have_dl1, have_tel, have_ev = names(dl1_files), names(tel_files), names(ev_files)
    for m in sets:
        dl1_cols, tel_cols, ev_cols = split_columns(sorted({*m.spec.columns, *WEIGHT_COLUMNS}))
        for cols, have, files in ((dl1_cols, have_dl1, dl1_files), (tel_cols, have_tel, tel_files),
                                  (ev_cols, have_ev, ev_files)):
            missing = [c for c in cols if c not in have]
            if missing:
                hint = " (apply an energy model first: dvp apply-models)" if missing[0] == S.RECO_ENERGY else ""
                where = next(f for f in files if missing[0] not in pq.read_schema(f).names)
                raise InputError(where, f"missing column {missing[0]!r}{hint}")
        have_ev |= {c for c in S.MODEL_COLUMNS[m.kind][:4] if c}


def apply_models(inputs, models, output, *, weights=None, overwrite=False, progress=None,
                 command="apply-models", workers: int | None = 1, scheduler: str | None = None,
                 skip_failed: bool = False, task_rows: int = APPLY_TASK_ROWS):
    """Reconstruct energy and/or gammaness of DL2 products with trained model sets.

    Per input product: every telescope event gets its prediction (``dl2_telescopes``:
    ``tel_reco_energy_tev``, ``tel_gammaness`` and validity), then each array event the
    weighted mean of its valid telescopes (``dl2``: ``reco_energy_tev`` and its
    uncertainty, ``gammaness``, validity, telescopes used). ``weights`` maps a kind to
    the combination weights, overriding the model set's. Everything else (instrument,
    simulation, trigger, DL1 parameters) is carried over.

    The work runs as tasks over (obs_id, event_id) ranges of about ``task_rows``
    telescope events per product, as :func:`dvp.runner.dl1_to_dl2` does (same executors,
    staging, resume and ``skip_failed``): memory is bounded by ``task_rows``, and the
    output is the same for any task size and executor.
    """
    from .config import COMBINE_WEIGHTS
    from .instrument.subarray import SubarrayDescription
    from .io.keyrange import key_json, paths, plan_key_ranges
    from .runner import (RunSummary, _fingerprint, _level_files, _prepare_staging,
                         _run_resumable, finish_dl2_staging)

    weights = dict(weights or {})
    for kind, w in weights.items():
        if w not in COMBINE_WEIGHTS[kind]:
            raise DvpError(f"--{'energy' if kind == 'energy' else 'gammaness'}-weights: must be one of "
                           f"{', '.join(COMBINE_WEIGHTS[kind])}, got {w!r}")
    if int(task_rows) != task_rows or task_rows < 1:
        raise DvpError(f"task size must be a positive integer, got {task_rows!r}")
    sets = load_model_sets(models)
    if not sets:
        raise DvpError("no --models given")
    products = expand_products(inputs, "dl2")
    if not products:
        raise DvpError("no input product directories given")
    t0 = time.perf_counter()
    subarray = SubarrayDescription.read(products[0])
    work = []
    for p in products:
        if p != products[0] and SubarrayDescription.read(p).fingerprint() != subarray.fingerprint():
            raise InputError(p, f"instrument differs from {products[0]}; process different arrays separately")
        if not (p / "dl1").is_dir():
            raise InputError(p, "product has no dl1/ parameters (rerun dvp dl1-to-dl2 with this dvp)")
        dl1 = _level_files(p, "dl1")
        _check_model_inputs(p, sets, [f for _, f in dl1])
        work.append((p, dl1))
    carried = _carried_files(products)
    config = {"models": [{"path": str(m.path.resolve()), "kind": m.kind,
                          "model_set_sha256": input_record(m.path / "model_set.json")["sha256"],
                          "weights": weights.get(m.kind, m.weights)} for m in sets]}
    prov = start_record(command, products, config)
    summary = RunSummary(output=Path(output), n_inputs=len(products))
    model_dirs = tuple(str(m.path.resolve()) for m in sets)
    weights_json = json.dumps(weights, sort_keys=True)
    fingerprint = _fingerprint(command, [r for r in prov["inputs"]], config, weights_json, int(task_rows))
    staging = _prepare_staging(output, fingerprint, overwrite, summary)
    prov_json = json.dumps(prov, default=str)
    planned, n_rows = [], 0
    for k, (p, dl1) in enumerate(work):
        by_type: dict = {}
        for tel_type, f in dl1:
            by_type.setdefault(tel_type, []).append(f)
        dl1_t = tuple((t, paths(fs)) for t, fs in sorted(by_type.items()))
        tel_files = sorted((p / "dl2_telescopes").glob("*.parquet"))
        n_rows += sum(pq.ParquetFile(f).metadata.num_rows for f in tel_files)
        for i, (lo, hi) in enumerate(plan_key_ranges([f for _, f in dl1], int(task_rows))):
            planned.append(ApplyTask(str(p.resolve()), f"part-{k:06d}-{i:06d}", key_json(lo), key_json(hi), dl1_t,
                                     paths(sorted((p / "dl2").glob("*.parquet"))), paths(tel_files), model_dirs,
                                     weights_json, str(staging), prov_json))
    recs = _run_resumable("apply-models", run_apply_task, planned, staging, summary, workers=workers,
                          scheduler=scheduler, skip_failed=skip_failed, progress=progress, total=n_rows,
                          scale=len(sets), describe=lambda t: f"{t.product} events {t.lo or 'start'}-{t.hi or 'end'}")
    n_tel = sum(r["rows_in"] for r in recs)
    summary.n_array_events = sum(r["array_events"] for r in recs)
    summary.n_tel_events = {"dl2_telescopes": n_tel}
    finish_dl2_staging(staging, output, subarray, carried, products, prov, summary, t0, recs,
                       {"telescope_events": n_tel, "array_events": summary.n_array_events,
                        "valid_predictions": {m.kind: sum(r["valid"].get(m.kind, 0) for r in recs) for m in sets}},
                       executor={"workers": workers, "scheduler": scheduler})
    return summary
