"""LightGBM models per telescope type: training with grouped K-fold cross-validation,
and the model set on disk.

A *model set* is one directory per model kind (energy or particle)::

    MODELS/
      model_set.json          kind, features (in order), derived definitions, quality
                              query, combination weights, per-type cross-validation
                              scores and best iterations, feature importances (gain,
                              splits), the per-telescope energy error table and
                              training log10 E range, training data
                              with provenance, config, dvp and LightGBM versions
      <tel_type>.lgb.txt      LightGBM's own text model file, one per telescope type
      cv_predictions.parquet  every training telescope event's out-of-fold prediction
                              (schema ml.cv_predictions; dvp train --no-cv-predictions
                              leaves it out)

Energy models regress log10(true energy / TeV), their predictions clipped to the
training range; particle models classify gamma (1) against background (0), with the
classes weighted to equal total weight. Models with linear leaves (the energy default)
also record, per leaf, the range of outputs it gave its training rows
(``leaf_output_bounds``, ``[ml.<kind>] linear_leaf_clip``), and apply-models bounds every
leaf's output to it: a leaf's plane would otherwise extrapolate without limit on events
unlike the training gammas.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DvpError
from .features import FeatureSpec
from .metrics import bias_resolution, roc_auc
from .split import group_folds, group_validation

MODEL_SET_FILE = "model_set.json"
CV_PREDICTIONS_FILE = "cv_predictions.parquet"
KINDS = ("energy", "particle")
SIGMA_BINS = 10   # intensity bins of the per-telescope energy error table


def _lgb():
    try:
        import lightgbm
    except ImportError as e:  # a dependency, but give the one-line answer if it is broken
        raise DvpError(f"LightGBM cannot be imported ({e}); pip install lightgbm") from None
    return lightgbm


def lightgbm_params(kind: str, ml) -> dict:
    """LightGBM parameters of a training: ``[ml.lightgbm]`` with ``[ml.<kind>.lightgbm]``
    over it key by key, the kind's objective and metric, the seed."""
    p = ml.lightgbm_for(kind)
    p.update(objective="regression" if kind == "energy" else "binary",
             metric="l2" if kind == "energy" else "binary_logloss",
             seed=int(ml.seed), deterministic=True, verbosity=-1, feature_pre_filter=False)
    return p


def class_weights(label: np.ndarray) -> np.ndarray:
    """Weights giving signal and background equal total weight (mean weight 1)."""
    label = np.asarray(label, bool)
    n, n_sig = len(label), int(label.sum())
    if n_sig == 0 or n_sig == n:
        raise DvpError("a particle model needs both signal and background telescope events")
    return np.where(label, n / (2.0 * n_sig), n / (2.0 * (n - n_sig)))


@dataclass
class FitResult:
    """A trained model of one telescope type and what its training measured."""

    booster: object
    info: dict = field(default_factory=dict)
    oof: np.ndarray | None = None   # out-of-fold predictions (log10 E or probability)


def _train_one(lgb, params, X, y, w, train, valid, max_rounds, esr, names="auto"):
    """A booster of ``max_rounds`` trees on the ``train`` rows, ended early after ``esr``
    rounds without improvement on the ``valid`` rows (``esr`` 0: no early stopping)."""
    dtrain = lgb.Dataset(X[train], y[train], weight=w[train], feature_name=names, free_raw_data=True)
    if not esr:
        return lgb.train(params, dtrain, num_boost_round=max_rounds)
    dvalid = lgb.Dataset(X[valid], y[valid], weight=w[valid], reference=dtrain)
    return lgb.train(params, dtrain, num_boost_round=max_rounds, valid_sets=[dvalid],
                     callbacks=[lgb.early_stopping(esr, verbose=False)])


@dataclass(frozen=True)
class _FitTask:
    """One LightGBM fit: fold ``k`` of the cross-validation (``test`` rows predicted), or
    the final model (``k = -1``)."""

    k: int
    params: dict
    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray | None
    max_rounds: int
    esr: int
    names: object
    leaf_clip: float | None = None


def _run_fit_task(t: _FitTask):
    """``(booster, predictions of the test rows or None, leaf bounds or None)``; runs in a
    worker process. Linear leaves with ``leaf_clip`` set get bounds from the rows the
    booster trained on (:func:`leaf_bounds`), and the test rows are predicted with them,
    as apply-models will."""
    b = _train_one(_lgb(), t.params, t.X, t.y, t.w, t.train, t.valid, t.max_rounds, t.esr, t.names)
    bounds = None
    if t.leaf_clip is not None and t.params.get("linear_tree"):
        forest, bounds = leaf_bounds(b, t.X[t.train], t.leaf_clip)
        pred = forest.predict(t.X[t.test]) if t.test is not None else None
    else:
        pred = b.predict(t.X[t.test], num_iteration=b.best_iteration) if t.test is not None else None
    return b, pred, bounds


def leaf_bounds(booster, X: np.ndarray, quantile: float):
    """``(forest, bounds)``: the booster flattened (best iteration) with its linear
    leaves bounded to the outputs they give the rows ``X`` (n, n_features), less the
    ``quantile`` fraction at each end (:meth:`dvp.kernels.forest.Forest.leaf_output_bounds`);
    ``bounds`` is the metadata record ``{"quantile", "low", "high"}`` (None: no bound)."""
    from ..kernels.forest import flatten_lightgbm
    forest = flatten_lightgbm(booster)
    low, high = forest.leaf_output_bounds(X, quantile)
    forest.set_leaf_bounds(low, high)
    return forest, {"quantile": float(quantile), "low": [float(v) if np.isfinite(v) else None for v in low],
                    "high": [float(v) if np.isfinite(v) else None for v in high]}


@dataclass
class FitPlan:
    """The K + 1 fits of one model (:func:`plan_fit`), to run on any executor and then
    reduce with :func:`finish_fit`."""

    kind: str
    y: np.ndarray
    hold: np.ndarray
    tasks: list
    ml: object
    log10_intensity: np.ndarray | None
    folds: np.ndarray | None = None   # (n,) fold of each row: the fold model that predicts it


def early_stopping_holdout(kind: str, obs_id, event_id, ml) -> np.ndarray:
    """``(n,)`` bool: the array events held out for ``kind``'s early stopping
    (``ml.validation_fraction`` of them), none when its ``early_stopping_rounds`` is 0:
    every fit then trains on all its rows."""
    if ml.early_stopping_rounds_for(kind):
        return group_validation(obs_id, event_id, ml.validation_fraction, ml.seed)
    return np.zeros(len(obs_id), bool)


def plan_fit(kind: str, X: np.ndarray, y: np.ndarray, obs_id, event_id, ml, *, log10_intensity=None,
             feature_names=None) -> FitPlan:
    """The cross-validation fits and the final fit of :func:`fit` as independent tasks
    (any executor gives the same trees: LightGBM runs with deterministic=true)."""
    n = len(y)
    if n < 2 * ml.n_folds:
        raise DvpError(f"only {n} usable telescope events: too few to train with {ml.n_folds} folds")
    params = lightgbm_params(kind, ml)
    names = list(feature_names) if feature_names is not None else "auto"
    w = class_weights(y) if kind == "particle" else np.ones(n)
    folds = group_folds(obs_id, event_id, ml.n_folds, ml.seed)
    rounds, esr = ml.max_rounds_for(kind), ml.early_stopping_rounds_for(kind)
    hold = early_stopping_holdout(kind, obs_id, event_id, ml)
    clip = ml.model(kind).linear_leaf_clip
    tasks = []
    for k in range(ml.n_folds):
        test = folds == k
        if test.any() and not test.all():
            tasks.append(_FitTask(k, params, X, y, w, ~test & ~hold, ~test & hold, test, rounds, esr, names, clip))
    tasks.append(_FitTask(-1, params, X, y, w, ~hold, hold, None, rounds, esr, names, clip))
    return FitPlan(kind, y, hold, tasks, ml, log10_intensity, folds)


def finish_fit(plan: FitPlan, results: dict) -> FitResult:
    """The model and cross-validation record from the results of a plan's tasks
    (``{task.k: (booster, test predictions, leaf bounds)}``)."""
    kind, y, hold, ml = plan.kind, plan.y, plan.hold, plan.ml
    max_rounds = ml.max_rounds_for(kind)
    n = len(y)
    oof = np.full(n, np.nan)
    scores, iters = [], []
    for t in plan.tasks[:-1]:
        b, pred, _ = results[t.k]
        if kind == "energy":   # as apply-models predicts (ModelSet.predict)
            pred = np.clip(pred, *_target_range(y[~t.test]))
        oof[t.test] = pred
        iters.append(int(b.best_iteration or max_rounds))
        scores.append(_scores(kind, pred, y[t.test]))
    booster, _, bounds = results[-1]
    info = {
        "n_train": int((~hold).sum()), "n_early_stopping": int(hold.sum()), "n_events": int(n),
        "best_iteration": int(booster.best_iteration or max_rounds),
        "cv": {"folds": scores, "fold_best_iterations": iters,
               **{f"{key}_mean": float(np.mean([s[key] for s in scores])) for key in scores[0]},
               **{f"{key}_std": float(np.std([s[key] for s in scores])) for key in scores[0]}},
        "cv_overall": _scores(kind, oof, y),
    }
    # per feature, over the trees kept (LightGBM's importances): what the model uses, e.g.
    # to choose a smaller feature set (configs/ml-fast.toml took the 8 / 12 with most gain)
    names = booster.feature_name()
    info["feature_importance"] = {
        how: dict(zip(names, booster.feature_importance(how, iteration=info["best_iteration"]).tolist()))
        for how in ("gain", "split")}
    if bounds is not None:
        info["leaf_output_bounds"] = bounds
    if kind == "energy":
        info["log10_energy_range"] = _target_range(y)
        lx = plan.log10_intensity
        info["sigma_table"] = sigma_table(oof - y, lx if lx is not None else np.zeros(n))
    return FitResult(booster, info, oof)


def _target_range(y) -> list:
    """[min, max] of the training targets: energy predictions are clipped to it."""
    return [float(np.min(y)), float(np.max(y))]


def fit_error(err) -> DvpError:
    return err if isinstance(err, DvpError) else DvpError(f"LightGBM training failed: {type(err).__name__}: {err}")


def fit(kind: str, X: np.ndarray, y: np.ndarray, obs_id, event_id, ml, *, log10_intensity=None,
        feature_names=None, progress=None, workers: int | None = 1, scheduler: str | None = None) -> FitResult:
    """Cross-validate and train one model.

    Parameters
    ----------
    kind : {"energy", "particle"}
    X : ndarray, shape (n, n_features), float32
    y : ndarray, shape (n,)
        log10(true energy / TeV) for energy; 1 (gamma) / 0 (background) for particle.
    obs_id, event_id : ndarray, shape (n,)
        Array-event keys: all telescopes of an event share a fold (no leakage).
    ml : MLConfig
        Folds, seed, and the kind's rounds, early stopping and LightGBM parameters
        (``[ml]`` and ``[ml.lightgbm]`` with ``[ml.<kind>]`` over them).
    log10_intensity : ndarray, shape (n,), optional
        For energy models: bins of the per-telescope error table.
    workers, scheduler
        Where the K + 1 fits run (:func:`dvp.executor.run_tasks`); the trees do not
        depend on it.

    Returns
    -------
    FitResult
        The final model (trained on every event outside the early-stopping hold-out)
        and ``info``: per-fold scores, their mean and standard deviation, best
        iterations, the error table (energy).
    """
    from ..executor import run_tasks
    plan = plan_fit(kind, X, y, obs_id, event_id, ml, log10_intensity=log10_intensity, feature_names=feature_names)
    results = {}
    for i, res, err in run_tasks(_run_fit_task, plan.tasks, workers=workers, scheduler=scheduler):
        if err is not None:
            raise fit_error(err)
        results[plan.tasks[i].k] = res
        if progress:
            progress(len(results))
    return finish_fit(plan, results)


def _scores(kind, pred, y) -> dict:
    ok = np.isfinite(pred)
    pred, y = pred[ok], y[ok]
    if kind == "energy":
        bias, res = bias_resolution(10.0 ** pred, 10.0 ** y)
        return {"rmse_log10": float(np.sqrt(np.mean((pred - y) ** 2))), "bias": bias, "resolution": res}
    return {"auc": roc_auc(pred, y), "accuracy": float(np.mean((pred > 0.5) == (y > 0.5)))}


def sigma_table(residual_log10, log10_intensity, n_bins: int = SIGMA_BINS) -> dict:
    """Per-telescope energy error (half the 16–84 % spread of log10 residuals) in
    quantile bins of log10 intensity: the inverse-variance combination weights."""
    r = np.asarray(residual_log10, np.float64)
    x = np.asarray(log10_intensity, np.float64)
    ok = np.isfinite(r) & np.isfinite(x)
    r, x = r[ok], x[ok]
    if len(r) < 2 * n_bins:
        s = float(0.5 * np.subtract(*np.quantile(r, [0.84, 0.16]))) if len(r) > 1 else 0.3
        return {"log10_intensity": [0.0], "sigma_log10": [max(s, 1e-3)]}
    edges = np.quantile(x, np.linspace(0, 1, n_bins + 1))
    centres, sig = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (x >= lo) & (x <= hi)
        if m.sum() < 2:
            continue
        q16, q84 = np.quantile(r[m], [0.16, 0.84])
        centres.append(float(np.median(x[m])))
        sig.append(max(float(0.5 * (q84 - q16)), 1e-3))
    return {"log10_intensity": centres, "sigma_log10": sig}


class ModelFiles(Mapping):
    """A loaded model set's models: telescope type → ``lightgbm.Booster``, each made from
    its model file's text on first access. Applying models needs only the text (the
    forest kernel reads it), and importing LightGBM takes about a second in every
    process, so ``apply-models`` and its workers never do."""

    def __init__(self, texts: dict):
        self._texts = dict(texts)
        self._boosters: dict = {}

    def text(self, tel_type: str) -> str:
        """The model file's text."""
        return self._texts[tel_type]

    def __getitem__(self, tel_type: str):
        if tel_type not in self._boosters:
            self._boosters[tel_type] = _lgb().Booster(model_str=self._texts[tel_type])
        return self._boosters[tel_type]

    def __contains__(self, tel_type) -> bool:   # Mapping's default would build the Booster
        return tel_type in self._texts

    def __iter__(self):
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


def _read_model_file(path: Path) -> tuple[str, list]:
    """A LightGBM text model file's contents and feature names, checked for what a
    truncated or foreign file lacks (LightGBM's own parser is not used: see
    :class:`ModelFiles`)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DvpError(f"{path}: cannot load LightGBM model ({type(e).__name__}: {e})") from None
    head = text.split("\nTree=", 1)[0].splitlines()
    keys = dict(line.split("=", 1) for line in head[1:] if "=" in line)
    n_trees, n_sizes = text.count("\nTree="), len(keys.get("tree_sizes", "").split())
    if not head or head[0].strip() != "tree":
        problem = "not a LightGBM text model"
    elif "feature_names" not in keys:
        problem = "no feature_names"
    elif "tree_sizes" in keys and n_trees != n_sizes:   # LightGBM >= 2.1 lists every tree's size
        problem = f"{n_trees} trees where its header lists {n_sizes}: truncated or edited"
    elif "\nend of trees" not in text:
        problem = "truncated: no 'end of trees'"
    else:
        return text, keys["feature_names"].split()
    raise DvpError(f"{path}: cannot load LightGBM model ({problem})")


@dataclass
class ModelSet:
    """The models of one kind for every telescope type they were trained for."""

    kind: str
    spec: FeatureSpec
    weights: str
    boosters: Mapping   # tel_type -> lightgbm.Booster (ModelFiles when loaded)
    meta: dict
    path: Path | None = None

    def predict(self, tel_type: str, X: np.ndarray) -> np.ndarray:
        """log10(E / TeV) (energy) or gamma probability (particle), shape (n,), for rows
        of finite features: numba's walk of the flattened trees, constant or linear leaves
        (:mod:`dvp.kernels.forest`), equal to LightGBM's own prediction (bit for bit for
        energy; 1 ulp for the sigmoid) except where linear leaves are bounded. A model the
        kernel cannot evaluate is a one-line :class:`DvpError`.

        Linear leaves are bounded to their training outputs (``leaf_output_bounds`` in
        the metadata), and energies are clipped to the range of log10 E the model was
        trained on (``log10_energy_range``); model sets without them are not. Unbounded,
        linear leaves extrapolate on events unlike the training gammas (protons), up to
        10^60 TeV on toy MC."""
        if not len(X):
            return np.empty(0)
        out = self.forest(tel_type).predict(X)
        limits = self.meta["telescope_types"][tel_type].get("log10_energy_range") if self.kind == "energy" else None
        return np.clip(out, *limits, out=out) if limits else out

    def forest(self, tel_type: str):
        """The flattened :class:`dvp.kernels.forest.Forest` of ``tel_type`` that
        :meth:`predict` evaluates, its linear leaves bounded as the metadata says; built
        once per model set and type."""
        forests = self.__dict__.setdefault("_forests", {})
        if tel_type not in forests:
            from ..kernels.forest import flatten_lightgbm
            info = self.meta["telescope_types"][tel_type]
            try:
                forest = flatten_lightgbm(self.model_text(tel_type))
                bounds = info.get("leaf_output_bounds")
                if bounds:   # null (no bound) reads as NaN: unbounded on that side
                    forest.set_leaf_bounds(bounds["low"], bounds["high"])
            except (ValueError, TypeError, KeyError) as e:
                where = self.path / info["file"] if self.path else tel_type
                raise DvpError(f"{where}: cannot evaluate this LightGBM model with its metadata ({e})") from None
            forests[tel_type] = forest
        return forests[tel_type]

    def model_text(self, tel_type: str) -> str:
        """LightGBM's text model of ``tel_type`` (its best iteration), without importing
        LightGBM for a loaded model set."""
        b = self.boosters
        return b.text(tel_type) if isinstance(b, ModelFiles) else b[tel_type].model_to_string()

    def sigma_log10(self, tel_type: str, log10_intensity: np.ndarray) -> np.ndarray:
        """Per-telescope log10-energy error from the cross-validation table."""
        t = self.meta["telescope_types"][tel_type].get("sigma_table")
        if not t:
            return np.zeros(len(log10_intensity))
        return np.interp(log10_intensity, t["log10_intensity"], t["sigma_log10"])

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for tel_type, b in self.boosters.items():
            b.save_model(str(directory / self.meta["telescope_types"][tel_type]["file"]),
                         num_iteration=self.meta["telescope_types"][tel_type]["best_iteration"])
        (directory / MODEL_SET_FILE).write_text(json.dumps(self.meta, indent=1, default=_json_default))

    @classmethod
    def load(cls, directory) -> "ModelSet":
        """Read a model set; features recorded in the metadata must be exactly the model
        files' features (names and order), else a one-line :class:`DvpError`."""
        from ..config import QualityQuery
        directory = Path(directory)
        f = directory / MODEL_SET_FILE
        if not f.is_file():
            raise DvpError(f"{directory}: not a dvp model set (no {MODEL_SET_FILE}; made by dvp train)")
        try:
            meta = json.loads(f.read_text())
            kind, features = meta["kind"], list(meta["features"])
            derived = [tuple(d) for d in meta["derived"]]
            quality = QualityQuery(tuple(tuple(c) for c in meta["quality"]), str(f), "ml",
                                   tuple(n for n, _ in derived))
            types = meta["telescope_types"]
        except (ValueError, KeyError, TypeError) as e:
            raise DvpError(f"{f}: unreadable model metadata ({type(e).__name__}: {e})") from None
        if kind not in KINDS:
            raise DvpError(f"{f}: unknown model kind {kind!r}")
        texts = {}
        for tel_type, info in types.items():
            mf = directory / info["file"]
            texts[tel_type], names = _read_model_file(mf)
            if names != features:
                diff = next((i for i, (a, c) in enumerate(zip(names, features)) if a != c), min(len(names), len(features)))
                raise DvpError(f"{mf}: model features differ from {MODEL_SET_FILE} at position {diff} "
                               f"({names[diff] if diff < len(names) else 'none'!r} vs "
                               f"{features[diff] if diff < len(features) else 'none'!r}); retrain or fix the metadata")
        boosters = ModelFiles(texts)
        spec = FeatureSpec(features, derived, quality)
        return cls(kind, spec, meta.get("weights", "none"), boosters, meta, directory)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        v = float(o)
        return None if math.isnan(v) else v
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
