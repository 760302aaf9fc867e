"""Typed, frozen configuration loaded from TOML or YAML, with per-telescope-type values.

A config file has one section per stage. For R1 → DL1::

    [r1_to_dl1]
    focal_length_choice = "equivalent"

    [r1_to_dl1.extractor."*"]            # every telescope type
    name = "NeighborPeakWindowSum"
    window_width = 7

    [r1_to_dl1.cleaner."*"]
    name = "TailcutsImageCleaner"
    picture_threshold_pe = 10.0

    [r1_to_dl1.cleaner."LST*"]           # later patterns override earlier ones
    picture_threshold_pe = 8.5

Patterns are shell-style globs on the telescope type (``LST_LST_LSTCam``,
``MST_MST_NectarCam``, ...), as in ctapipe's ``TelescopeParameter`` ``("type", "LST*",
value)`` entries: for a given type every matching pattern is applied in file order.
Component parameters use ctapipe's trait names; a component's defaults are ctapipe
0.28's, so an empty config reproduces ctapipe with no config.

Single values can be overridden with ``section.key=value`` strings (the CLI's ``--set``),
e.g. ``r1_to_dl1.cleaner.LST*.picture_threshold_pe=8``; values are parsed as TOML.
"""
from __future__ import annotations

import ast
import copy
import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import yaml

from .errors import DvpError
from .kernels.clean import CLEANERS
from .kernels.extract import EXTRACTORS


class ConfigError(DvpError):
    """A config file or override that cannot be used; the message names it and the key."""


_PATTERN_RE = re.compile(r"^[A-Za-z0-9_*?\[\]!.+-]+$")

FOCAL_LENGTH_CHOICES = ("equivalent", "effective")
INVALID_PIXEL_HANDLERS = ("NeighborAverage", "none")


def check_pattern(pattern: str, where: str) -> str:
    """Validate a telescope-type glob; returns it unchanged."""
    if not isinstance(pattern, str) or not pattern or not _PATTERN_RE.match(pattern):
        raise ConfigError(f"{where}: bad telescope-type pattern {pattern!r} "
                          "(use letters, digits, _ - . and the glob characters * ? [ ])")
    depth = 0
    for ch in pattern:
        depth += ch == "["
        depth -= ch == "]"
        if depth not in (0, 1):
            break
    if depth != 0:
        raise ConfigError(f"{where}: bad telescope-type pattern {pattern!r} (unbalanced brackets)")
    return pattern


@dataclass(frozen=True)
class PerTypeComponent:
    """A component (extractor or cleaner) chosen and configured per telescope type.

    ``rules`` is a tuple of ``(pattern, {key: value})`` applied in order; the key
    ``name`` picks the component, the others are its parameters.
    """

    kind: str
    registry_name: str
    rules: tuple = ()
    source: str = "config"

    def resolve(self, tel_type: str) -> tuple[str, dict]:
        """The component name and its full parameter dict for ``tel_type``."""
        registry = _REGISTRIES[self.registry_name]
        merged: dict = {}
        for pattern, values in self.rules:
            if fnmatch.fnmatchcase(tel_type, pattern):
                if "name" in values and values["name"] != merged.get("name"):
                    # a different component: parameters of the previous one no longer apply
                    merged = {}
                merged.update(values)
        name = merged.pop("name")
        params = dict(registry[name])
        for key, value in merged.items():
            if key not in registry[name]:
                raise ConfigError(f"{self.source}: {self.kind} {name} for {tel_type} has no parameter {key!r} "
                                  f"(known: {', '.join(registry[name])})")
            params[key] = _coerce(value, registry[name][key], f"{self.source}: {self.kind}.{key}")
        return name, params

    def is_set(self, tel_type: str, key: str) -> bool:
        """Whether a rule matching ``tel_type`` sets ``key`` (rather than the default)."""
        return any(key in values for pattern, values in self.rules if fnmatch.fnmatchcase(tel_type, pattern))

    def check(self) -> None:
        """Fail early on unknown components or keys (independent of telescope types)."""
        registry = _REGISTRIES[self.registry_name]
        current = None
        for pattern, values in self.rules:
            where = f"{self.source}: {self.kind}.{pattern}"
            name = values.get("name", current)
            if name is None:
                raise ConfigError(f"{where}: no component name before this pattern (set name = ...)")
            if name not in registry:
                raise ConfigError(f"{where}: unknown {self.kind} {name!r} (known: {', '.join(registry)})")
            for key, value in values.items():
                if key == "name":
                    continue
                if key not in registry[name]:
                    raise ConfigError(f"{where}: unknown key {key!r} for {name} "
                                      f"(known: {', '.join(registry[name])})")
                _coerce(value, registry[name][key], f"{where}.{key}")
            if pattern == "*" or current is None:
                current = name

    def to_dict(self) -> dict:
        return {p: dict(v) for p, v in self.rules}


_REGISTRIES = {"extractor": EXTRACTORS, "cleaner": CLEANERS}


def _coerce(value, default, where):
    """Check ``value`` against the type of ``default`` (bool, int, float, str, None)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


# -- image quality query ------------------------------------------------------------

# names an image-quality expression may use; each is an (n_events,) array computed from
# the cleaned pixels. ctapipe's spellings are accepted as aliases.
QUALITY_VARIABLES = {
    "size": "sum of the cleaned charge (p.e.)",
    "n_pixels": "number of cleaned pixels",
    "n_nonzero": "number of cleaned pixels with non-zero charge",
    "max_pe": "brightest cleaned pixel (p.e.)",
}
_QUALITY_ALIASES = {"image.sum()": "size", "image.size": "n_pixels",
                    "np.count_nonzero(image)": "n_nonzero", "image.max()": "max_pe"}


def _dl1_quality_variables() -> dict:
    """Names a stereo quality criterion may use: every numeric DL1 parameter column."""
    from . import schemas as S
    return {c: "DL1 parameter column" for g in S.DL1_PARAMETER_GROUPS.values() for c in g.values()}


# ctapipe's StereoQualityQuery spelling ``parameters.hillas.intensity`` (optionally ``.value``)
_CTAPIPE_PARAMETER_RE = re.compile(r"parameters\.(\w+)\.(\w+)(?:\.value)?")


def _dl1_alias(match) -> str:
    from . import schemas as S
    group, key = match.group(1), match.group(2)
    return S.DL1_PARAMETER_GROUPS.get(group, {}).get(key, match.group(0))


def _ml_variables() -> dict:
    """Names an ML feature or criterion may use: DL1 parameters and the DL2 columns of a
    telescope event's row and of its array event."""
    from . import schemas as S
    out = _dl1_quality_variables()
    out.update({c: "DL2 column" for c in ML_DL2_COLUMNS})
    out[S.IS_VALID] = "DL1 image passed the image quality query"
    return out


def _quality_variables(kind: str) -> dict:
    if kind == "ml":
        return _ml_variables()
    return _dl1_quality_variables() if kind == "dl1" else QUALITY_VARIABLES


#: functions an expression may call (derived ML features, quality criteria)
EXPRESSION_FUNCTIONS = {"log10": np.log10, "log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs,
                        "cos": np.cos, "sin": np.sin, "tan": np.tan, "arctan2": np.arctan2,
                        "deg2rad": np.deg2rad, "rad2deg": np.rad2deg, "minimum": np.minimum,
                        "maximum": np.maximum, "isfinite": np.isfinite}


def _parse_quality(expr: str, where: str, kind: str = "image", variables: Mapping | None = None) -> ast.Expression:
    text = expr
    if kind in ("dl1", "ml"):
        text = _CTAPIPE_PARAMETER_RE.sub(_dl1_alias, text)
    else:
        for alias, name in _QUALITY_ALIASES.items():
            text = text.replace(alias, name)
    variables = _quality_variables(kind) if variables is None else variables
    return parse_expression(text, where, variables, what="quality criterion", original=expr)


def parse_expression(text: str, where: str, variables: Mapping, *, what: str = "expression",
                     original: str | None = None) -> ast.Expression:
    """Parse a safe arithmetic/boolean expression over ``variables`` (names) and
    :data:`EXPRESSION_FUNCTIONS`; anything else (attributes, strings, other calls) is a
    :class:`ConfigError` naming ``where``."""
    expr = text if original is None else original
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"{where}: cannot parse {what} {expr!r} ({e.msg})") from None
    allowed = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant,
               ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow,
               ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.BitAnd, ast.BitOr, ast.Call)
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ConfigError(f"{where}: {what} {expr!r} uses unsupported syntax "
                              f"({type(node).__name__}); use arithmetic and comparisons of column names")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in EXPRESSION_FUNCTIONS or node.keywords:
                raise ConfigError(f"{where}: {what} {expr!r}: only the functions "
                                  f"{', '.join(EXPRESSION_FUNCTIONS)} may be called")
        elif isinstance(node, ast.Name) and id(node) not in calls and node.id not in variables:
            known = ", ".join(list(variables)[:12]) + (", ..." if len(variables) > 12 else "")
            raise ConfigError(f"{where}: {what} {expr!r} uses unknown name {node.id!r} (known: {known})")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ConfigError(f"{where}: {what} {expr!r}: only numbers are allowed as constants")
    return tree


def expression_names(tree: ast.Expression) -> set:
    """Variable names an expression reads (function names excluded)."""
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def evaluate_expression(tree: ast.Expression, env: Mapping):
    """Value of a parsed expression with numpy arrays from ``env``."""
    return _eval_node(tree, env)


def _eval_node(node, env):
    if isinstance(node, ast.Expression):
        return _eval_node(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _eval_node(node.operand, env)
        return np.logical_not(v) if isinstance(node.op, ast.Not) else -v
    if isinstance(node, ast.BoolOp):
        vals = [_eval_node(v, env) for v in node.values]
        f = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = vals[0]
        for v in vals[1:]:
            out = f(out, v)
        return out
    if isinstance(node, ast.Call):
        return EXPRESSION_FUNCTIONS[node.func.id](*[_eval_node(a, env) for a in node.args])
    if isinstance(node, ast.BinOp):
        a, b = _eval_node(node.left, env), _eval_node(node.right, env)
        ops = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
               ast.Pow: np.power, ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or}
        return ops[type(node.op)](a, b)
    if isinstance(node, ast.Compare):
        ops = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
               ast.Eq: np.equal, ast.NotEq: np.not_equal}
        left = _eval_node(node.left, env)
        out = True
        for op, comp in zip(node.ops, node.comparators):
            right = _eval_node(comp, env)
            out = np.logical_and(out, ops[type(op)](left, right))
            left = right
        return out
    raise AssertionError(type(node))


@dataclass(frozen=True)
class QualityQuery:
    """Named boolean criteria over per-image summary variables (ctapipe's QualityQuery)."""

    criteria: tuple = ()  # ((name, expression), ...)
    source: str = "config"
    #: "image": per-image summary variables (QUALITY_VARIABLES); "dl1": DL1 parameter
    #: columns, with ctapipe's ``parameters.<group>.<field>`` spelling accepted
    kind: str = "image"
    #: further names the criteria may use (derived ML features)
    extra_names: tuple = ()

    def __post_init__(self):
        for item in self.criteria:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
                raise ConfigError(f"{self.source}: quality criteria must be [name, expression] pairs, got {item!r}")
            _parse_quality(item[1], f"{self.source}: {item[0]}", self.kind, self._variables())

    def _variables(self):
        v = dict(_quality_variables(self.kind))
        v.update({n: "derived" for n in self.extra_names})
        return v

    def names(self) -> tuple:
        """Variable names the criteria read (sorted)."""
        return tuple(sorted(set().union(*[expression_names(t) for t in self._trees()])))

    def evaluate(self, variables: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """``(n,)`` bool: True where every criterion holds."""
        ok = np.ones(n, bool)
        for (name, expr), tree in zip(self.criteria, self._trees()):
            ok &= np.broadcast_to(np.asarray(_eval_node(tree, variables), bool), (n,))
        return ok

    def _trees(self):
        trees = self.__dict__.get("_parsed")
        if trees is None:
            v = self._variables()
            trees = tuple(_parse_quality(expr, name, self.kind, v) for name, expr in self.criteria)
            object.__setattr__(self, "_parsed", trees)  # frozen dataclass: cache the parse once
        return trees


# -- stage configs --------------------------------------------------------------------

CTAPIPE_IMAGE_QUALITY = (("size_greater_0", "image.sum() > 0"), ("at_least_2_pixels", "image.size > 1"))


@dataclass(frozen=True)
class R1ToDL1Config:
    """Configuration of ``dvp r1-to-dl1`` (defaults: ctapipe 0.28 with no config)."""

    extractor: PerTypeComponent = field(default_factory=lambda: PerTypeComponent(
        "extractor", "extractor", (("*", MappingProxyType({"name": "NeighborPeakWindowSum"})),)))
    cleaner: PerTypeComponent = field(default_factory=lambda: PerTypeComponent(
        "cleaner", "cleaner", (("*", MappingProxyType({"name": "TailcutsImageCleaner"})),)))
    image_quality: QualityQuery = field(default_factory=lambda: QualityQuery(CTAPIPE_IMAGE_QUALITY))
    focal_length_choice: str = "equivalent"
    apply_peak_time_shift: bool = True
    invalid_pixel_handler: str = "NeighborAverage"
    timing_seed: int = 0
    write_images: bool = False

    def to_dict(self) -> dict:
        return {"extractor": self.extractor.to_dict(), "cleaner": self.cleaner.to_dict(),
                "image_quality": {"criteria": [list(c) for c in self.image_quality.criteria]},
                "focal_length_choice": self.focal_length_choice,
                "apply_peak_time_shift": self.apply_peak_time_shift,
                "invalid_pixel_handler": self.invalid_pixel_handler, "timing_seed": self.timing_seed,
                "write_images": self.write_images}


# ctapipe 0.28's StereoQualityQuery defaults, in DL1 column names
CTAPIPE_STEREO_QUALITY = (("> 50 phe", "hillas_intensity_pe > 50"), ("Positive width", "hillas_width_deg > 0"),
                          ("> 3 pixels", "morphology_n_pixels > 3"))
DL2_METHODS = ("HillasReconstructor", "HillasIntersection")


@dataclass(frozen=True)
class DL1ToDL2Config:
    """Configuration of ``dvp dl1-to-dl2`` (defaults: ctapipe 0.28's ShowerProcessor).

    ``[dl1_to_dl2] method = "HillasReconstructor"`` (or ``"HillasIntersection"``, ctapipe's
    other geometry reconstructor with its default "Konrad" weighting) and
    ``[dl1_to_dl2.quality] criteria = [["name", "expression"], ...]`` over DL1 parameter
    columns (ctapipe's ``parameters.hillas.intensity`` spelling is accepted too).
    ``focal_length_choice`` picks the focal length that converts the camera radius to
    degrees (it only sets the length of the axis segment, so results do not depend on it
    beyond rounding).
    """

    method: str = "HillasReconstructor"
    quality: QualityQuery = field(default_factory=lambda: QualityQuery(CTAPIPE_STEREO_QUALITY, "defaults", "dl1"))
    focal_length_choice: str = "equivalent"

    def to_dict(self) -> dict:
        return {"method": self.method, "quality": {"criteria": [list(c) for c in self.quality.criteria]},
                "focal_length_choice": self.focal_length_choice}


# -- energy and particle models (dvp train, dvp apply-models) --------------------------

#: DL2 columns a telescope event's features may use besides its DL1 parameters
ML_DL2_COLUMNS = ("reco_impact_distance_m", "reco_used", "reco_h_max_m", "n_tels_used", "reco_is_valid",
                  "reco_average_intensity_pe", "reco_alt_uncert_deg", "reco_energy_tev")
DEFAULT_DERIVED = (
    ("log10_intensity", "log10(hillas_intensity_pe)"),
    ("width_length_ratio", "hillas_width_deg / hillas_length_deg"),
    ("abs_timing_slope_ns_per_deg", "abs(timing_slope_ns_per_deg)"),
    ("log10_impact_distance", "log10(reco_impact_distance_m)"),
    ("log10_reco_energy", "log10(reco_energy_tev)"),
)
ENERGY_FEATURES = (
    "log10_intensity", "hillas_length_deg", "hillas_width_deg", "width_length_ratio", "hillas_skewness",
    "hillas_kurtosis", "hillas_r_deg", "concentration_cog", "concentration_core", "concentration_pixel",
    "leakage_intensity_width_1", "leakage_intensity_width_2", "leakage_pixels_width_1",
    "abs_timing_slope_ns_per_deg", "timing_deviation_ns", "morphology_n_pixels", "morphology_n_islands",
    "intensity_max_pe", "intensity_std_pe", "peak_time_std_ns",
    "reco_impact_distance_m", "reco_h_max_m", "n_tels_used",
)
PARTICLE_FEATURES = ENERGY_FEATURES + ("log10_reco_energy", "morphology_n_small_islands", "intensity_skewness",
                                       "intensity_kurtosis", "peak_time_skewness")
#: combination of per-telescope predictions into one per array event (ctapipe's
#: StereoMeanCombiner), the default first. Gammaness by intensity, not unweighted as
#: ctapipe's default: on the toy MC of benchmarks/RESULTS.md ("Gammaness combination")
#: it gave dvp's classifier a higher AUC in every energy bin of all three data splits
COMBINE_WEIGHTS = {"energy": ("inverse_variance", "intensity", "aspect_weighted_intensity", "none"),
                   "particle": ("intensity", "none", "aspect_weighted_intensity")}
ML_QUALITY = (("valid_image", "is_valid"), ("valid_geometry", "reco_is_valid"),
              ("positive_intensity", "hillas_intensity_pe > 0"))
#: LightGBM parameters (https://lightgbm.readthedocs.io/en/stable/Parameters.html) of both
#: model kinds, ``[ml.lightgbm]``; the objective is set by the model kind, the seed by
#: ``ml.seed``. max_depth 8 keeps the same accuracy as unlimited depth on toy MC but
#: halves the depth each prediction walks (benchmarks/RESULTS.md); one thread by default
#: because OpenMP threads competing with other processes on a busy node slowed training
#: tenfold in our measurements. Learning rate 0.05 with 50 rounds of patience
#: (``ml.early_stopping_rounds``): at 0.1 linear trees sometimes stopped after 17-44
#: trees on a spiky validation loss, and the classifier lost AUC at 30-300 GeV.
LIGHTGBM_DEFAULTS = {"learning_rate": 0.05, "num_leaves": 63, "max_depth": 8, "min_data_in_leaf": 50, "max_bin": 127,
                     "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
                     "num_threads": 1}
#: per kind, ``[ml.<kind>.lightgbm]``: over ``[ml.lightgbm]`` key by key. Energy: linear
#: leaves (constant + coefficients times the leaf's branch features) fit the sparse
#: high-energy tail that constant leaves under-fit (3-10 TeV resolution
#: 0.04 instead of 0.08 on toy MC, equal or better in every bin; benchmarks/RESULTS.md),
#: for about twice the training time. The classifier keeps constant leaves (linear ones
#: cost it time and AUC at the lowest energies) but samples half the features per tree,
#: as a RandomForest does per split: ROC AUC at 30-300 GeV at least the RandomForest's
#: averaged over three data splits (0.1-0.3 TeV: 0.9985 vs 0.9975 with 90 % of the
#: features at learning rate 0.1), for 1.7x the training time.
KIND_LIGHTGBM_DEFAULTS = {"energy": {"linear_tree": True}, "particle": {"feature_fraction": 0.5}}
#: ``[ml.<kind>] linear_leaf_clip``: each linear leaf's output is bounded to the range of
#: outputs it gives its training rows, less this fraction at each end (``false``: not
#: bounded, LightGBM's predictions). A leaf's plane otherwise extrapolates without limit
#: on events unlike the training gammas: on toy MC protons 49 % of array events got
#: E_reco > 5 TeV unbounded. 0.03 (0.01 until session 22) puts 8-11 % of test protons
#: there on three data splits (0.01: 12-17 %; lstchain's RandomForest 8-11 %) with the
#: gamma resolution still at least the RandomForest's in every bin (benchmarks/RESULTS.md,
#: "Leaf bounds at 3 %").
LINEAR_LEAF_CLIP_DEFAULT = 0.03
_LIGHTGBM_FORBIDDEN = {"objective", "seed", "metric", "verbose", "verbosity", "deterministic"}
_MODEL_KEYS = ("features", "weights", "quality", "lightgbm", "max_rounds", "early_stopping_rounds",
               "max_telescope_events", "linear_leaf_clip")


@dataclass(frozen=True)
class ModelConfig:
    """One model kind: its features (in order), its training/apply quality query, how
    telescope predictions are combined per array event, and its training settings over
    the ``[ml]`` ones: LightGBM parameters replacing ``[ml.lightgbm]``'s key by key,
    boosting rounds, early stopping and the cap on training telescope events per type
    (None: ``[ml]``'s), and the quantile bounding linear leaves
    (:data:`LINEAR_LEAF_CLIP_DEFAULT`; None: unbounded)."""

    kind: str
    features: tuple
    weights: str
    quality: QualityQuery
    lightgbm: Mapping = field(default_factory=lambda: MappingProxyType({}))
    max_rounds: int | None = None
    early_stopping_rounds: int | None = None
    max_telescope_events: int | None = None
    linear_leaf_clip: float | None = LINEAR_LEAF_CLIP_DEFAULT

    def to_dict(self) -> dict:
        out = {"features": list(self.features), "weights": self.weights,
               "quality": {"criteria": [list(c) for c in self.quality.criteria]}, "lightgbm": dict(self.lightgbm),
               "linear_leaf_clip": False if self.linear_leaf_clip is None else self.linear_leaf_clip}
        for key in ("max_rounds", "early_stopping_rounds", "max_telescope_events"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _default_model(kind):
    names = tuple(n for n, _ in DEFAULT_DERIVED)
    return ModelConfig(kind, ENERGY_FEATURES if kind == "energy" else PARTICLE_FEATURES,
                       COMBINE_WEIGHTS[kind][0], QualityQuery(ML_QUALITY, "defaults", "ml", names),
                       MappingProxyType(dict(KIND_LIGHTGBM_DEFAULTS[kind])))


@dataclass(frozen=True)
class MLConfig:
    """Configuration of ``dvp train`` and ``dvp apply-models``::

        [ml]
        n_folds = 5                 # K-fold cross-validation, grouped by array event
        seed = 0
        max_rounds = 1000           # boosting rounds, ended by early stopping
        early_stopping_rounds = 50  # 0: none (no held-out events; every fit grows max_rounds)
        validation_fraction = 0.1   # of the training events, for early stopping
        max_telescope_events = 0    # per telescope type, 0 = all (a seeded sample otherwise)

        [ml.derived]                # name = expression over columns and earlier names
        log10_intensity = "log10(hillas_intensity_pe)"

        [ml.lightgbm]               # any LightGBM parameter (main names, not aliases)
        learning_rate = 0.05

        [ml.energy]                 # and [ml.particle]
        features = ["log10_intensity", "hillas_width_deg", ...]
        weights = "inverse_variance"    # intensity, aspect_weighted_intensity, none
        early_stopping_rounds = 30  # and max_rounds, max_telescope_events: this kind's, over [ml]'s
        linear_leaf_clip = 0.03     # bound linear leaves to their training outputs (false: don't)
        [ml.energy.lightgbm]        # this kind's LightGBM parameters over [ml.lightgbm], key by key
        linear_tree = true
        [ml.energy.quality]
        criteria = [["valid_image", "is_valid"], ...]

    The defaults set ``linear_tree`` (energy) and ``feature_fraction`` (particle) in
    ``[ml.<kind>.lightgbm]`` (:data:`KIND_LIGHTGBM_DEFAULTS`), so those two keys in
    ``[ml.lightgbm]`` reach the other model only.
    """

    n_folds: int = 5
    seed: int = 0
    max_rounds: int = 1000
    early_stopping_rounds: int = 50
    validation_fraction: float = 0.1
    max_telescope_events: int = 0
    derived: tuple = DEFAULT_DERIVED
    lightgbm: Mapping = field(default_factory=lambda: MappingProxyType(dict(LIGHTGBM_DEFAULTS)))
    energy: ModelConfig = field(default_factory=lambda: _default_model("energy"))
    particle: ModelConfig = field(default_factory=lambda: _default_model("particle"))

    def model(self, kind: str) -> ModelConfig:
        return {"energy": self.energy, "particle": self.particle}[kind]

    def lightgbm_for(self, kind: str) -> dict:
        """The LightGBM parameters of ``kind``: ``[ml.lightgbm]`` with ``[ml.<kind>.lightgbm]`` over it."""
        return {**self.lightgbm, **self.model(kind).lightgbm}

    def max_rounds_for(self, kind: str) -> int:
        m = self.model(kind).max_rounds
        return self.max_rounds if m is None else m

    def early_stopping_rounds_for(self, kind: str) -> int:
        m = self.model(kind).early_stopping_rounds
        return self.early_stopping_rounds if m is None else m

    def max_telescope_events_for(self, kind: str) -> int:
        """Training telescope events per type, a sample of whole array events (0: all)."""
        m = self.model(kind).max_telescope_events
        return self.max_telescope_events if m is None else m

    def to_dict(self) -> dict:
        return {"n_folds": self.n_folds, "seed": self.seed, "max_rounds": self.max_rounds,
                "early_stopping_rounds": self.early_stopping_rounds,
                "validation_fraction": self.validation_fraction,
                "max_telescope_events": self.max_telescope_events,
                "derived": dict(self.derived), "lightgbm": dict(self.lightgbm),
                "energy": self.energy.to_dict(), "particle": self.particle.to_dict()}


_ML_SCALARS = {"n_folds": int, "seed": int, "max_rounds": int, "early_stopping_rounds": int,
               "validation_fraction": float, "max_telescope_events": int}


def _lightgbm_table(value, where: str) -> dict:
    """A ``[ml.lightgbm]``-like table: LightGBM parameters, none of those dvp sets."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table of LightGBM parameters")
    bad = sorted(set(value) & _LIGHTGBM_FORBIDDEN)
    if bad:
        raise ConfigError(f"{where}.{bad[0]}: set by dvp (objective from the model kind, seed from ml.seed)")
    return dict(value)


def _ml(raw: Mapping, source: str) -> MLConfig:
    base = MLConfig()
    kwargs: dict[str, Any] = {}
    derived = dict(base.derived)
    variables = dict(_ml_variables())
    if "derived" in raw:
        if not isinstance(raw["derived"], Mapping):
            raise ConfigError(f"{source}: ml.derived must be a table of name = \"expression\"")
        for name, expr in raw["derived"].items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in variables:
                raise ConfigError(f"{source}: ml.derived.{name}: a derived feature needs a new identifier name")
            if not isinstance(expr, str):
                raise ConfigError(f"{source}: ml.derived.{name}: expected an expression string, got {expr!r}")
            derived[name] = expr
    names = tuple(derived)
    for i, (name, expr) in enumerate(derived.items()):  # each may use columns and earlier names
        parse_expression(expr, f"{source}: ml.derived.{name}", {**variables, **dict.fromkeys(names[:i])})
    kwargs["derived"] = tuple(derived.items())
    known_features = set(variables) | set(names)
    for key, value in raw.items():
        where = f"{source}: ml.{key}"
        if key == "derived":
            continue
        if key in _ML_SCALARS:
            typ = _ML_SCALARS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float) if typ is float else int):
                raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
            kwargs[key] = typ(value)
        elif key == "lightgbm":
            kwargs[key] = MappingProxyType({**LIGHTGBM_DEFAULTS, **_lightgbm_table(value, where)})
        elif key in ("energy", "particle"):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: expected a table ({', '.join(_MODEL_KEYS)})")
            unknown = [k for k in value if k not in _MODEL_KEYS]
            if unknown:
                raise ConfigError(f"{source}: unknown key 'ml.{key}.{unknown[0]}' (known: {', '.join(_MODEL_KEYS)})")
            m = _default_model(key)
            feats = value.get("features", m.features)
            if not isinstance(feats, (list, tuple)) or not feats or not all(isinstance(f, str) for f in feats):
                raise ConfigError(f"{where}.features: expected a non-empty list of names")
            unknown = [f for f in feats if f not in known_features]
            if unknown:
                raise ConfigError(f"{where}.features: unknown feature {unknown[0]!r} (a DL1 parameter, "
                                  f"a DL2 column or a name from ml.derived)")
            if len(set(feats)) != len(feats):
                raise ConfigError(f"{where}.features: a feature is listed twice")
            w = value.get("weights", m.weights)
            if w not in COMBINE_WEIGHTS[key]:
                raise ConfigError(f"{where}.weights: must be one of {', '.join(COMBINE_WEIGHTS[key])}, got {w!r}")
            q = m.quality
            if "quality" in value:
                qv = value["quality"]
                if not isinstance(qv, Mapping) or set(qv) - {"criteria"} or not isinstance(qv.get("criteria", []), list):
                    raise ConfigError(f"{where}.quality: expected a table with a 'criteria' list of [name, expression]")
                q = QualityQuery(tuple(tuple(c) if isinstance(c, list) else c for c in qv.get("criteria", [])),
                                 source, "ml", names)
            else:
                q = QualityQuery(q.criteria, q.source, "ml", names)
            lgbm = {**m.lightgbm, **_lightgbm_table(value.get("lightgbm", {}), f"{where}.lightgbm")}
            counts = {}   # this kind's integer settings (None: [ml]'s), each with its least value
            for ck, least, note in (("max_rounds", 1, ""), ("early_stopping_rounds", 0, ""),
                                    ("max_telescope_events", 0, " (0: all)")):
                cv = value.get(ck, getattr(m, ck))
                if cv is not None and (isinstance(cv, bool) or not isinstance(cv, int) or cv < least):
                    raise ConfigError(f"{where}.{ck}: expected a {'positive' if least else 'non-negative'} "
                                      f"int{note}, got {cv!r}")
                counts[ck] = cv
            clip = value.get("linear_leaf_clip", m.linear_leaf_clip)
            if clip is False:
                clip = None
            elif clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                                       or not 0.0 <= clip < 0.5):
                raise ConfigError(f"{where}.linear_leaf_clip: expected false or a fraction in [0, 0.5), got {clip!r}")
            kwargs[key] = ModelConfig(key, tuple(feats), w, q, MappingProxyType(lgbm), **counts,
                                      linear_leaf_clip=None if clip is None else float(clip))
        else:
            known = ", ".join(["derived", "lightgbm", "energy", "particle", *_ML_SCALARS])
            raise ConfigError(f"{source}: unknown key 'ml.{key}' (known: {known})")
    cfg = MLConfig(**{**base.__dict__, **kwargs})
    if cfg.n_folds < 2:
        raise ConfigError(f"{source}: ml.n_folds must be at least 2, got {cfg.n_folds}")
    if not 0.0 < cfg.validation_fraction < 0.5:
        raise ConfigError(f"{source}: ml.validation_fraction must be in (0, 0.5), got {cfg.validation_fraction}")
    if cfg.max_rounds < 1 or cfg.early_stopping_rounds < 0 or cfg.max_telescope_events < 0:
        raise ConfigError(f"{source}: ml.max_rounds must be positive, ml.early_stopping_rounds and "
                          f"ml.max_telescope_events non-negative")
    for kind in ("energy", "particle"):   # derived names referenced by features must exist
        m = cfg.model(kind)
        missing = [f for f in m.features if f not in variables and f not in dict(cfg.derived)]
        if missing:
            raise ConfigError(f"{source}: ml.{kind}.features: unknown feature {missing[0]!r}")
    return cfg


@dataclass(frozen=True)
class Config:
    """All stage configurations."""

    r1_to_dl1: R1ToDL1Config = field(default_factory=R1ToDL1Config)
    dl1_to_dl2: DL1ToDL2Config = field(default_factory=DL1ToDL2Config)
    ml: MLConfig = field(default_factory=MLConfig)
    source: str = "defaults"

    def to_dict(self) -> dict:
        return {"r1_to_dl1": self.r1_to_dl1.to_dict(), "dl1_to_dl2": self.dl1_to_dl2.to_dict(),
                "ml": self.ml.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


_R1_SCALARS = {"focal_length_choice": str, "apply_peak_time_shift": bool, "invalid_pixel_handler": str,
               "timing_seed": int, "write_images": bool}


def _component(kind: str, raw, source: str, defaults: PerTypeComponent) -> PerTypeComponent:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: r1_to_dl1.{kind} must be a table of telescope-type patterns, got {raw!r}")
    rules = list(defaults.rules)
    for pattern, values in raw.items():
        check_pattern(pattern, f"{source}: r1_to_dl1.{kind}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: r1_to_dl1.{kind}.{pattern} must be a table of parameters, got {values!r}")
        rules.append((pattern, MappingProxyType(dict(values))))
    comp = PerTypeComponent(kind, kind, tuple(rules), source)
    comp.check()
    return comp


def _r1_to_dl1(raw: Mapping, source: str) -> R1ToDL1Config:
    base = R1ToDL1Config()
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{source}: r1_to_dl1.{key}"
        if key in ("extractor", "cleaner"):
            kwargs[key] = _component(key, value, source, getattr(base, key))
        elif key == "image_quality":
            if not isinstance(value, Mapping) or set(value) - {"criteria"}:
                raise ConfigError(f"{where}: expected a table with 'criteria' only")
            crit = value.get("criteria", [])
            if not isinstance(crit, list):
                raise ConfigError(f"{where}.criteria: expected a list of [name, expression]")
            kwargs[key] = QualityQuery(tuple(tuple(c) if isinstance(c, list) else c for c in crit), source)
        elif key in _R1_SCALARS:
            typ = _R1_SCALARS[key]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
            kwargs[key] = value
        else:
            known = ", ".join(["extractor", "cleaner", "image_quality", *_R1_SCALARS])
            raise ConfigError(f"{source}: unknown key 'r1_to_dl1.{key}' (known: {known})")
    cfg = R1ToDL1Config(**{**base.__dict__, **kwargs})
    if cfg.focal_length_choice not in FOCAL_LENGTH_CHOICES:
        raise ConfigError(f"{source}: r1_to_dl1.focal_length_choice must be one of {FOCAL_LENGTH_CHOICES}, "
                          f"got {cfg.focal_length_choice!r}")
    if cfg.invalid_pixel_handler not in INVALID_PIXEL_HANDLERS:
        raise ConfigError(f"{source}: r1_to_dl1.invalid_pixel_handler must be one of {INVALID_PIXEL_HANDLERS}, "
                          f"got {cfg.invalid_pixel_handler!r}")
    return cfg


def _dl1_to_dl2(raw: Mapping, source: str) -> DL1ToDL2Config:
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{source}: dl1_to_dl2.{key}"
        if key == "quality":
            if not isinstance(value, Mapping) or set(value) - {"criteria"}:
                raise ConfigError(f"{where}: expected a table with 'criteria' only")
            crit = value.get("criteria", [])
            if not isinstance(crit, list):
                raise ConfigError(f"{where}.criteria: expected a list of [name, expression]")
            kwargs[key] = QualityQuery(tuple(tuple(c) if isinstance(c, list) else c for c in crit), source, "dl1")
        elif key == "method":
            if value not in DL2_METHODS:
                raise ConfigError(f"{where}: unknown method {value!r} (known: {', '.join(DL2_METHODS)})")
            kwargs[key] = value
        elif key == "focal_length_choice":
            if value not in FOCAL_LENGTH_CHOICES:
                raise ConfigError(f"{where}: must be one of {FOCAL_LENGTH_CHOICES}, got {value!r}")
            kwargs[key] = value
        else:
            raise ConfigError(f"{source}: unknown key 'dl1_to_dl2.{key}' (known: method, quality, focal_length_choice)")
    return DL1ToDL2Config(**{**DL1ToDL2Config().__dict__, **kwargs})


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'TOML'} "
                          f"({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a table/mapping at the top level")
    return data


def _split_key(key: str) -> list[str]:
    # patterns may be quoted: r1_to_dl1.cleaner."LST*".picture_threshold_pe
    parts = re.findall(r'"[^"]*"|[^.]+', key)
    return [p.strip('"') for p in parts]


def apply_override(data: dict, override: str) -> dict:
    """Apply one ``dotted.key=value`` override (value parsed as TOML) to raw config data."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. r1_to_dl1.cleaner.LST*.picture_threshold_pe=8")
    key, raw_value = override.split("=", 1)
    parts = _split_key(key.strip())
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {override!r}: key must be dotted, e.g. r1_to_dl1.focal_length_choice")
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {override!r}: {p!r} is not a table")
        node = nxt
    node[parts[-1]] = value
    return data


def load_config(path=None, overrides=()) -> Config:
    """Load a config file (TOML or YAML; None for defaults) and apply ``--set`` overrides.

    Raises
    ------
    ConfigError
        One line naming the file (or the override) and the offending key or value.
    """
    data = _read_file(Path(path)) if path is not None else {}
    data = copy.deepcopy(data)
    source = str(path) if path is not None else "defaults"
    for o in overrides:
        apply_override(data, o)
        source = f"{source} (with --set)" if "--set" not in source else source
    return config_from_data(data, source)


def config_from_data(data: Mapping, source: str = "config") -> Config:
    """A :class:`Config` from raw (file-shaped) data, e.g. ``Config.to_dict()`` output
    shipped to a worker process: ``config_from_data(c.to_dict())`` resolves like ``c``."""
    data = copy.deepcopy(dict(data))
    known = {"r1_to_dl1", "dl1_to_dl2", "ml"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key {sorted(unknown)[0]!r} (known sections: {', '.join(sorted(known))})")
    for section in known:
        if not isinstance(data.get(section, {}), Mapping):
            raise ConfigError(f"{source}: {section} must be a table")
    return Config(r1_to_dl1=_r1_to_dl1(data.get("r1_to_dl1", {}), source),
                  dl1_to_dl2=_dl1_to_dl2(data.get("dl1_to_dl2", {}), source),
                  ml=_ml(data.get("ml", {}), source), source=source)
