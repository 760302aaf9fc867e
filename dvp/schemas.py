"""Arrow schemas of every dvp table, loaded from the language-neutral files in ``schemas/``.

Each ``schemas/<level>.<table>.json`` lists fields with a type, a unit and a description.
:func:`schema` turns one into a :class:`pyarrow.Schema` whose fields carry ``unit`` and
``description`` metadata; :func:`validate` checks a table against it and stamps the
schema name, schema version and dvp version into the key-value metadata. Every writer
calls :func:`validate` (via :func:`dvp.io.parquet.write_table`).

Column names used in code are the constants below, never f-strings.
"""
from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path

import pyarrow as pa

from . import __version__
from .errors import SchemaError

SCHEMA_VERSION = "1.0.0"

# -- table names -------------------------------------------------------------------
SUBARRAY = "instrument.subarray"
OPTICS = "instrument.optics"
CAMERA_GEOMETRY = "instrument.camera_geometry"
CAMERA_READOUT = "instrument.camera_readout"
SIM_RUN = "simulation.run"
SIM_SHOWER = "simulation.shower"
SIM_SHOWER_DISTRIBUTION = "simulation.shower_distribution"
R1_EVENTS = "r1.telescope_events"
R1_TRIGGER = "r1.trigger"
DL1_EVENTS = "dl1.telescope_events"

# -- column names shared by code ---------------------------------------------------
OBS_ID = "obs_id"
EVENT_ID = "event_id"
TEL_ID = "tel_id"
TEL_TYPE = "tel_type"
CAMERA_NAME = "camera_name"
READOUT_NAME = "readout_name"
N_PIXELS = "n_pixels"
N_SAMPLES = "n_samples"
WAVEFORM = "waveform"
SELECTED_GAIN = "selected_gain_channel"
PIXEL_STATUS = "pixel_status"
HV_DISABLED = "hv_disabled"
TIME_SHIFT = "time_shift_ns"
TRUE_IMAGE = "true_image"
PIX_X = "pix_x_m"
PIX_Y = "pix_y_m"
PIX_AREA = "pix_area_m2"
NEIGHBORS = "neighbors"
TRIGGERED = "triggered"
POINTING_ALT = "pointing_alt_deg"
POINTING_AZ = "pointing_az_deg"
TRUE_IMAGE_SUM = "true_image_sum_pe"
TRUE_IMPACT = "true_impact_distance_m"

# -- DL1 ---------------------------------------------------------------------------
IS_VALID = "is_valid"
IMAGE_SUM = "image_sum_pe"
IMAGE = "image"
PEAK_TIME = "peak_time"
IMAGE_MASK = "image_mask"
DL1_IMAGE_COLUMNS = (IMAGE, PEAK_TIME, IMAGE_MASK)

# ctapipe parameter container -> {container field: dvp column}. The kernels return
# dicts keyed by ctapipe's field names; this is the one place they become columns.
HILLAS_COLUMNS = {
    "intensity": "hillas_intensity_pe", "skewness": "hillas_skewness", "kurtosis": "hillas_kurtosis",
    "fov_lon": "hillas_fov_lon_deg", "fov_lat": "hillas_fov_lat_deg", "r": "hillas_r_deg",
    "phi": "hillas_phi_deg", "length": "hillas_length_deg",
    "length_uncertainty": "hillas_length_uncertainty_deg", "width": "hillas_width_deg",
    "width_uncertainty": "hillas_width_uncertainty_deg", "psi": "hillas_psi_deg",
    "psi_uncertainty": "hillas_psi_uncertainty_deg",
    "transverse_cog_uncertainty": "hillas_transverse_cog_uncertainty_deg",
}
LEAKAGE_COLUMNS = {
    "pixels_width_1": "leakage_pixels_width_1", "pixels_width_2": "leakage_pixels_width_2",
    "intensity_width_1": "leakage_intensity_width_1", "intensity_width_2": "leakage_intensity_width_2",
}
CONCENTRATION_COLUMNS = {"cog": "concentration_cog", "core": "concentration_core",
                         "pixel": "concentration_pixel"}
TIMING_COLUMNS = {"intercept": "timing_intercept_ns", "deviation": "timing_deviation_ns",
                  "slope": "timing_slope_ns_per_deg"}
MORPHOLOGY_COLUMNS = {
    "n_pixels": "morphology_n_pixels", "n_islands": "morphology_n_islands",
    "n_small_islands": "morphology_n_small_islands", "n_medium_islands": "morphology_n_medium_islands",
    "n_large_islands": "morphology_n_large_islands",
}
INTENSITY_STATISTICS_COLUMNS = {
    "max": "intensity_max_pe", "min": "intensity_min_pe", "mean": "intensity_mean_pe",
    "std": "intensity_std_pe", "skewness": "intensity_skewness", "kurtosis": "intensity_kurtosis",
}
PEAK_TIME_STATISTICS_COLUMNS = {
    "max": "peak_time_max_ns", "min": "peak_time_min_ns", "mean": "peak_time_mean_ns",
    "std": "peak_time_std_ns", "skewness": "peak_time_skewness", "kurtosis": "peak_time_kurtosis",
}
DL1_PARAMETER_GROUPS = {
    "hillas": HILLAS_COLUMNS, "leakage": LEAKAGE_COLUMNS, "concentration": CONCENTRATION_COLUMNS,
    "timing": TIMING_COLUMNS, "morphology": MORPHOLOGY_COLUMNS,
    "intensity_statistics": INTENSITY_STATISTICS_COLUMNS, "peak_time_statistics": PEAK_TIME_STATISTICS_COLUMNS,
}

META_SCHEMA_NAME = b"dvp.schema_name"
META_SCHEMA_VERSION = b"dvp.schema_version"
META_DVP_VERSION = b"dvp.version"
META_PROVENANCE = b"dvp.provenance"

_SCALARS = {
    "bool": pa.bool_(), "int8": pa.int8(), "uint8": pa.uint8(), "int16": pa.int16(),
    "int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(),
    "float64": pa.float64(), "string": pa.string(),
}
_LIST_RE = re.compile(r"^(list|fixed_size_list)<(\w+)>$")


def _schema_dir():
    repo = Path(__file__).resolve().parent.parent / "schemas"
    if repo.is_dir():
        return repo
    return resources.files("dvp._schemas")


@functools.lru_cache(maxsize=None)
def spec(name: str) -> dict:
    """The parsed JSON description of table ``name`` (e.g. ``"r1.telescope_events"``)."""
    path = _schema_dir() / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"no schema named {name!r} in {_schema_dir()}") from None


def available() -> list[str]:
    """Names of all tables with a schema file."""
    return sorted(p.name[: -len(".json")] for p in _schema_dir().iterdir() if p.name.endswith(".json"))


def _arrow_type(type_str: str, list_size: int | None = None) -> pa.DataType:
    if type_str in _SCALARS:
        return _SCALARS[type_str]
    m = _LIST_RE.match(type_str)
    if not m or m.group(2) not in _SCALARS:
        raise SchemaError(f"unknown type {type_str!r} in schema")
    value = _SCALARS[m.group(2)]
    if m.group(1) == "list":
        return pa.list_(value)
    if list_size is None:
        raise SchemaError(f"fixed_size_list needs a size: {type_str}")
    return pa.list_(value, list_size)


def field(name: str, column: str, list_size: int | None = None) -> pa.Field:
    """The Arrow field of ``column`` in table ``name``; fixed-size lists need ``list_size``."""
    for f in spec(name)["fields"]:
        if f["name"] == column:
            return pa.field(column, _arrow_type(f["type"], list_size), metadata={
                "unit": f["unit"], "description": f["description"]})
    raise SchemaError(f"table {name} has no column {column!r}")


def schema(name: str, list_sizes: dict[str, int] | None = None, include=None) -> pa.Schema:
    """Arrow schema of table ``name``.

    Parameters
    ----------
    name : str
        Table name such as ``"r1.telescope_events"``.
    list_sizes : dict, optional
        Sizes of the ``fixed_size_list`` columns (they depend on the camera).
    include : iterable of str, optional
        Which optional columns (``"optional": true`` in the schema file) to include;
        by default none. Required columns are always included.
    """
    list_sizes = list_sizes or {}
    include = set(include or ())
    s = spec(name)
    fields = [field(name, f["name"], list_sizes.get(f["name"])) for f in s["fields"]
              if not f.get("optional") or f["name"] in include]
    return pa.schema(fields, metadata={
        META_SCHEMA_NAME: name.encode(), META_SCHEMA_VERSION: s["version"].encode(),
        META_DVP_VERSION: __version__.encode()})


_LAST_TARGET: dict = {}  # table name -> the last target schema validate() produced


@functools.lru_cache(maxsize=256)
def _cached_schema(name: str, sizes: tuple, include: tuple) -> pa.Schema:
    return schema(name, dict(sizes), include=include)


def column_names(name: str, optional: bool = False) -> list[str]:
    """Columns of table ``name``; optional ones only if ``optional``."""
    return [f["name"] for f in spec(name)["fields"] if optional or not f.get("optional")]


def validate(table: pa.Table, name: str, *, source: str = "table") -> pa.Table:
    """Check ``table`` against schema ``name`` and return it cast to the schema.

    Columns must be exactly the schema's (same order is restored); types must match,
    except that fixed-size lists take their size from the data. Field metadata and
    the schema-level metadata (name, versions) are attached.

    Raises
    ------
    SchemaError
        One line naming ``source``, the table and the offending column.
    """
    meta_in = table.schema.metadata or {}
    if meta_in.get(META_SCHEMA_NAME) == name.encode():
        # the output of an earlier validate (a stage's table on its way to the writer)
        prev = _LAST_TARGET.get(name)
        if prev is not None and table.schema.equals(prev.with_metadata(meta_in), check_metadata=True):
            return table
    s = spec(name)
    present = table.column_names  # a new list on every access: take it once
    present_set = set(present)
    fields = [f for f in s["fields"] if not f.get("optional") or f["name"] in present_set]
    expected = [f["name"] for f in fields]
    expected_set = set(expected)
    missing = [c for c in expected if c not in present_set]
    extra = [c for c in present if c not in expected_set]
    if missing or extra:
        raise SchemaError(f"{source}: table {name}: missing columns {missing}, unexpected {extra}")
    sizes = {}
    for f in fields:
        t = table.schema.field(f["name"]).type
        if f["type"].startswith("fixed_size_list"):
            if not pa.types.is_fixed_size_list(t):
                raise SchemaError(f"{source}: {name}.{f['name']} must be {f['type']}, got {t}")
            sizes[f["name"]] = t.list_size
    target = _cached_schema(name, tuple(sorted(sizes.items())), tuple(expected))
    meta = dict(table.schema.metadata or {})
    meta.update(target.metadata)
    _LAST_TARGET[name] = target
    if table.schema.names == target.names and table.schema.equals(target.with_metadata(table.schema.metadata),
                                                                   check_metadata=True):
        # already validated (e.g. a stage's output on its way to the writer): same fields,
        # types and field metadata; only the schema-level metadata may need stamping
        return table.replace_schema_metadata(meta)
    columns = []
    for tf in target:
        col = table.column(tf.name)
        if col.type != tf.type:
            try:
                col = col.cast(tf.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(f"{source}: {name}.{tf.name} has type {col.type}, expected {tf.type} ({e})") from None
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=target.with_metadata(meta))


def check_file_schema(file_schema: pa.Schema, name: str, source: str) -> None:
    """Verify a schema read from a file conforms to ``name`` (names, types, metadata)."""
    sizes = {f.name: f.type.list_size for f in file_schema if pa.types.is_fixed_size_list(f.type)}
    target = schema(name, sizes, include=file_schema.names)
    file_names = [f.name for f in file_schema if not f.name.startswith("__")]
    # a hive partition key may be stored in the file by other writers; dvp never does
    if [n for n in file_names if n in target.names or n != TEL_TYPE] != target.names:
        raise SchemaError(f"{source}: columns {file_names} differ from schema {name} {target.names}")
    for tf in target:
        ff = file_schema.field(tf.name)
        if ff.type != tf.type:
            raise SchemaError(f"{source}: {name}.{tf.name} has type {ff.type}, expected {tf.type}")
        if (ff.metadata or {}).get(b"unit") != tf.metadata[b"unit"]:
            raise SchemaError(f"{source}: {name}.{tf.name} lacks its unit metadata")
    meta = file_schema.metadata or {}
    if meta.get(META_SCHEMA_NAME) != name.encode():
        raise SchemaError(f"{source}: schema name metadata {meta.get(META_SCHEMA_NAME)!r} != {name!r}")
    if META_SCHEMA_VERSION not in meta:
        raise SchemaError(f"{source}: no {META_SCHEMA_VERSION.decode()} metadata")


# -- DL2 (dvp dl1-to-dl2) ----------------------------------------------------------
DL2_EVENTS = "dl2.events"
DL2_TELESCOPE_EVENTS = "dl2.telescope_events"
RECO_ALT = "reco_alt_deg"
RECO_AZ = "reco_az_deg"
RECO_ALT_UNCERT = "reco_alt_uncert_deg"
RECO_AZ_UNCERT = "reco_az_uncert_deg"
RECO_CORE_X = "reco_core_x_m"
RECO_CORE_Y = "reco_core_y_m"
RECO_CORE_TILTED_X = "reco_core_tilted_x_m"
RECO_CORE_TILTED_Y = "reco_core_tilted_y_m"
RECO_H_MAX = "reco_h_max_m"
RECO_AVERAGE_INTENSITY = "reco_average_intensity_pe"
N_TELS_USED = "n_tels_used"
RECO_TELESCOPES = "reco_telescopes"
RECO_IS_VALID = "reco_is_valid"
RECO_METHOD = "reco_method"
RECO_IMPACT_DISTANCE = "reco_impact_distance_m"
RECO_USED = "reco_used"
# true shower values joined from simulation/showers.parquet (simulation.shower columns)
TRUE_ENERGY = "true_energy_tev"
TRUE_ALT = "true_alt_deg"
TRUE_AZ = "true_az_deg"
TRUE_CORE_X = "true_core_x_m"
TRUE_CORE_Y = "true_core_y_m"
TRUE_X_MAX = "true_x_max_g_cm2"
PARTICLE = "particle"
DL2_TRUE_COLUMNS = (TRUE_ENERGY, TRUE_ALT, TRUE_AZ, TRUE_CORE_X, TRUE_CORE_Y, TRUE_X_MAX, PARTICLE)
# energy and particle models (dvp apply-models): optional dl2.events / dl2.telescope_events columns
RECO_ENERGY = "reco_energy_tev"
RECO_ENERGY_UNCERT = "reco_energy_uncert_tev"
RECO_ENERGY_IS_VALID = "reco_energy_is_valid"
RECO_ENERGY_N_TELS = "reco_energy_n_tels"
GAMMANESS = "gammaness"
GAMMANESS_IS_VALID = "gammaness_is_valid"
GAMMANESS_N_TELS = "gammaness_n_tels"
TEL_RECO_ENERGY = "tel_reco_energy_tev"
TEL_RECO_ENERGY_IS_VALID = "tel_reco_energy_is_valid"
TEL_GAMMANESS = "tel_gammaness"
TEL_GAMMANESS_IS_VALID = "tel_gammaness_is_valid"
#: per model kind: (event value, uncertainty or None, event valid, event n_tels, tel value, tel valid)
MODEL_COLUMNS = {
    "energy": (RECO_ENERGY, RECO_ENERGY_UNCERT, RECO_ENERGY_IS_VALID, RECO_ENERGY_N_TELS,
               TEL_RECO_ENERGY, TEL_RECO_ENERGY_IS_VALID),
    "particle": (GAMMANESS, None, GAMMANESS_IS_VALID, GAMMANESS_N_TELS, TEL_GAMMANESS, TEL_GAMMANESS_IS_VALID),
}
# dvp train's cross-validation predictions (cv_predictions.parquet in a model set)
CV_PREDICTIONS = "ml.cv_predictions"
CV_FOLD = "cv_fold"
IS_SIGNAL = "is_signal"
# DL1 columns the Hillas stereo reconstruction reads (besides the quality-query names)
HILLAS_FOV_LON = HILLAS_COLUMNS["fov_lon"]
HILLAS_FOV_LAT = HILLAS_COLUMNS["fov_lat"]
HILLAS_PSI = HILLAS_COLUMNS["psi"]
HILLAS_INTENSITY = HILLAS_COLUMNS["intensity"]
HILLAS_LENGTH = HILLAS_COLUMNS["length"]
HILLAS_WIDTH = HILLAS_COLUMNS["width"]
MORPHOLOGY_N_PIXELS = MORPHOLOGY_COLUMNS["n_pixels"]
