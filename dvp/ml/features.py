"""Features, derived features and quality queries evaluated on column arrays.

A model's inputs are named columns of the telescope event (DL1 parameters, the DL2
impact distance) and of its array event (DL2 geometry, reconstructed energy), plus
*derived* features: named expressions over those columns and earlier derived names,
defined in config (``[ml.derived]``). All values are evaluated with numpy; a row whose
features are not all finite, or that fails the quality query, gets no prediction.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..config import ModelConfig, evaluate_expression, expression_names, parse_expression
from ..errors import DvpError

#: columns the combination weights read (besides the model's own inputs)
WEIGHT_COLUMNS = ("hillas_intensity_pe", "hillas_length_deg", "hillas_width_deg")


class FeatureSpec:
    """What a model reads: its ordered features, the derived definitions they need, and
    its quality query.

    Parameters
    ----------
    features : sequence of str
        Feature names in model order.
    derived : sequence of (name, expression)
        All derived definitions available (only those needed are kept, in order).
    quality : QualityQuery
    """

    def __init__(self, features, derived, quality):
        self.features = tuple(features)
        self.quality = quality
        all_derived = dict(derived)
        needed, stack = set(), [*self.features, *quality.names()]
        trees = {}
        while stack:
            name = stack.pop()
            if name in all_derived and name not in needed:
                needed.add(name)
                trees[name] = parse_expression(all_derived[name], f"derived feature {name}",
                                               _Anything())
                stack.extend(expression_names(trees[name]))
        self.derived = tuple((n, all_derived[n]) for n in all_derived if n in needed)
        self._trees = {n: trees[n] for n, _ in self.derived}
        base = set()
        for n in (*self.features, *quality.names()):
            if n not in all_derived:
                base.add(n)
        for t in self._trees.values():
            base |= {n for n in expression_names(t) if n not in all_derived}
        self.columns = tuple(sorted(base))

    @classmethod
    def from_config(cls, model: ModelConfig, derived) -> "FeatureSpec":
        return cls(model.features, derived, model.quality)

    def environment(self, columns: Mapping[str, np.ndarray]) -> dict:
        """Base columns plus the derived features, as float64/bool numpy arrays."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise DvpError(f"feature input column {missing[0]!r} is missing")
        env = {c: np.asarray(columns[c]) for c in self.columns}
        with np.errstate(all="ignore"):
            for name, _ in self.derived:
                env[name] = np.asarray(evaluate_expression(self._trees[name], env), np.float64)
        return env

    def matrix(self, env: Mapping[str, np.ndarray], n: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """``(X, usable)``: X (n, n_features) in model order; usable (n,) bool where the
        quality query holds and every feature is finite."""
        X = np.empty((n, len(self.features)), dtype)
        for j, f in enumerate(self.features):
            X[:, j] = np.broadcast_to(np.asarray(env[f], np.float64), (n,))
        with np.errstate(all="ignore"):
            usable = self.quality.evaluate(env, n) & np.isfinite(X).all(axis=1)
        return X, usable


class _Anything(dict):
    """Variable table that accepts every name (derived definitions were checked when the
    config was loaded; here they only need parsing)."""

    def __contains__(self, key):
        return True
