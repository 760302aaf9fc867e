"""Apply energy and particle models: per-telescope predictions, then one value per array
event (ctapipe's two-stage ``EnergyRegressor``/``ParticleClassifier`` + ``StereoMeanCombiner``).

Pure table functions: :func:`predict_telescopes` turns one telescope type's feature
columns into per-telescope predictions with their combination weights;
:func:`combine_events` reduces the predictions of all types to one row per array event.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .. import schemas as S
from ..kernels.combine import weighted_mean
from ..kernels.stereo import group_events

# internal per-telescope columns handed from predict_telescopes to combine_events
VALUE, VALID, WEIGHT, SIGMA = "value", "valid", "weight", "sigma_log10"


def combination_weights(name: str, columns, sigma_log10=None) -> np.ndarray:
    """Weights of the per-event mean (ctapipe's StereoMeanCombiner ``weights``).

    ``none`` 1; ``intensity`` the Hillas intensity (p.e.); ``aspect_weighted_intensity``
    intensity × length / width; ``inverse_variance`` 1 / σ² of the telescope's log10
    energy error (from the model's cross-validation, by intensity).
    """
    intensity = np.asarray(columns[S.HILLAS_INTENSITY], np.float64)
    if name == "none":
        return np.ones(len(intensity))
    if name == "intensity":
        return intensity
    if name == "aspect_weighted_intensity":
        with np.errstate(all="ignore"):
            return intensity * np.asarray(columns[S.HILLAS_LENGTH], np.float64) / np.asarray(columns[S.HILLAS_WIDTH], np.float64)
    if name == "inverse_variance":
        return 1.0 / np.square(sigma_log10)
    raise ValueError(f"unknown combination weights {name!r}")


def predict_telescopes(model, tel_type: str, columns, n: int, weights: str | None = None) -> pa.Table:
    """Predictions of ``model`` (a :class:`dvp.ml.model.ModelSet`) for ``n`` telescope
    events of ``tel_type``.

    Parameters
    ----------
    columns : mapping of str to ndarray (n,)
        The keys, the model's input columns and the weight columns.
    weights : str, optional
        Combination weights (default: the model set's).

    Returns
    -------
    pa.Table
        Keys, ``value`` (log10 E/TeV or gamma probability, NaN where not valid),
        ``valid``, ``weight`` and ``sigma_log10`` (energy error; 0 for particle models).
    """
    env = model.spec.environment(columns)
    X, usable = model.spec.matrix(env, n)
    value = np.full(n, np.nan)
    if tel_type in model.boosters and usable.any():
        value[usable] = model.predict(tel_type, X[usable])
    else:
        usable = np.zeros(n, bool)
    with np.errstate(all="ignore"):
        sigma = (model.sigma_log10(tel_type, np.log10(np.asarray(columns[S.HILLAS_INTENSITY], np.float64)))
                 if model.kind == "energy" and tel_type in model.boosters else np.zeros(n))
    w = combination_weights(weights or model.weights, columns, sigma)
    return pa.table({S.OBS_ID: pa.array(np.asarray(columns[S.OBS_ID], np.int32)),
                     S.EVENT_ID: pa.array(np.asarray(columns[S.EVENT_ID], np.int64)),
                     S.TEL_ID: pa.array(np.asarray(columns[S.TEL_ID], np.int16)),
                     VALUE: value, VALID: usable, WEIGHT: np.asarray(w, np.float64), SIGMA: sigma})


def telescope_columns(kind: str, predictions: pa.Table) -> dict:
    """The per-telescope output columns (``tel_reco_energy_tev``/``tel_gammaness`` and
    validity) of :func:`predict_telescopes`'s table, as arrays in its row order."""
    value = predictions.column(VALUE).to_numpy()
    valid = predictions.column(VALID).to_numpy(zero_copy_only=False)
    _, _, _, _, tel_value, tel_valid = S.MODEL_COLUMNS[kind]
    return {tel_value: 10.0 ** value if kind == "energy" else value, tel_valid: valid}


def combine_events(kind: str, predictions: pa.Table) -> pa.Table:
    """One row per array event: the weighted mean of its valid telescope predictions.

    Energy: mean of log10 E, ``reco_energy_tev = 10**mean``, uncertainty
    ``E · ln 10 · σ`` with σ the per-telescope errors propagated through the weights.
    Particle: mean gamma probability. Events with no valid telescope get NaN and
    ``*_is_valid = False``. Rows come out sorted by (obs_id, event_id).
    """
    obs = predictions.column(S.OBS_ID).to_numpy()
    ev = predictions.column(S.EVENT_ID).to_numpy()
    order, starts = group_events(obs, ev, predictions.column(S.TEL_ID).to_numpy())
    get = lambda c: np.asarray(predictions.column(c).to_numpy(zero_copy_only=False))[order]  # noqa: E731
    mean, sig, n_used = weighted_mean(starts, get(VALUE), get(WEIGHT), get(SIGMA), get(VALID))
    first = order[starts[:-1]]
    value_col, uncert_col, valid_col, n_col, _, _ = S.MODEL_COLUMNS[kind]
    cols = {S.OBS_ID: pa.array(obs[first].astype(np.int32)), S.EVENT_ID: pa.array(ev[first].astype(np.int64))}
    if kind == "energy":
        energy = 10.0 ** mean
        cols[value_col] = energy
        cols[uncert_col] = energy * np.log(10.0) * sig
    else:
        cols[value_col] = mean
    cols[valid_col] = n_used > 0
    cols[n_col] = n_used.astype(np.int16)
    return pa.table(cols)
