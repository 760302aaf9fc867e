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


def _quality_variables(kind: str) -> dict:
    return _dl1_quality_variables() if kind == "dl1" else QUALITY_VARIABLES


def _parse_quality(expr: str, where: str, kind: str = "image") -> ast.Expression:
    text = expr
    if kind == "dl1":
        text = _CTAPIPE_PARAMETER_RE.sub(_dl1_alias, text)
    else:
        for alias, name in _QUALITY_ALIASES.items():
            text = text.replace(alias, name)
    variables = _quality_variables(kind)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"{where}: cannot parse quality criterion {expr!r} ({e.msg})") from None
    allowed = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant,
               ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.Add, ast.Sub, ast.Mult, ast.Div,
               ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.BitAnd, ast.BitOr)
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ConfigError(f"{where}: quality criterion {expr!r} uses unsupported syntax "
                              f"({type(node).__name__}); use comparisons of {', '.join(variables)}")
        if isinstance(node, ast.Name) and node.id not in variables:
            raise ConfigError(f"{where}: quality criterion {expr!r} uses unknown name {node.id!r} "
                              f"(known: {', '.join(variables)})")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ConfigError(f"{where}: quality criterion {expr!r}: only numbers are allowed as constants")
    return tree


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
    if isinstance(node, ast.BinOp):
        a, b = _eval_node(node.left, env), _eval_node(node.right, env)
        ops = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
               ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or}
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

    def __post_init__(self):
        for item in self.criteria:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
                raise ConfigError(f"{self.source}: quality criteria must be [name, expression] pairs, got {item!r}")
            _parse_quality(item[1], f"{self.source}: {item[0]}", self.kind)

    def names(self) -> tuple:
        """Variable names the criteria read (sorted)."""
        return tuple(sorted({n.id for t in self._trees() for n in ast.walk(t) if isinstance(n, ast.Name)}))

    def evaluate(self, variables: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """``(n,)`` bool: True where every criterion holds."""
        ok = np.ones(n, bool)
        for (name, expr), tree in zip(self.criteria, self._trees()):
            ok &= np.broadcast_to(np.asarray(_eval_node(tree, variables), bool), (n,))
        return ok

    def _trees(self):
        trees = self.__dict__.get("_parsed")
        if trees is None:
            trees = tuple(_parse_quality(expr, name, self.kind) for name, expr in self.criteria)
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


@dataclass(frozen=True)
class Config:
    """All stage configurations."""

    r1_to_dl1: R1ToDL1Config = field(default_factory=R1ToDL1Config)
    dl1_to_dl2: DL1ToDL2Config = field(default_factory=DL1ToDL2Config)
    source: str = "defaults"

    def to_dict(self) -> dict:
        return {"r1_to_dl1": self.r1_to_dl1.to_dict(), "dl1_to_dl2": self.dl1_to_dl2.to_dict()}

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
    known = {"r1_to_dl1", "dl1_to_dl2"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key {sorted(unknown)[0]!r} (known sections: {', '.join(sorted(known))})")
    for section in known:
        if not isinstance(data.get(section, {}), Mapping):
            raise ConfigError(f"{source}: {section} must be a table")
    return Config(r1_to_dl1=_r1_to_dl1(data.get("r1_to_dl1", {}), source),
                  dl1_to_dl2=_dl1_to_dl2(data.get("dl1_to_dl2", {}), source), source=source)
