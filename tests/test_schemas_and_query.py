"""Schemas: metadata, validation, every written file conforms; outputs open without dvp."""
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dvp import schemas as S
from dvp.errors import SchemaError

# product-directory path (relative) -> schema
LAYOUT = {
    "instrument/subarray.parquet": S.SUBARRAY,
    "instrument/optics.parquet": S.OPTICS,
    "simulation/runs.parquet": S.SIM_RUN,
    "simulation/showers.parquet": S.SIM_SHOWER,
    "simulation/shower_distribution.parquet": S.SIM_SHOWER_DISTRIBUTION,
    "trigger/part-00000.parquet": S.R1_TRIGGER,
}


def schema_for(rel: str) -> str:
    if rel in LAYOUT:
        return LAYOUT[rel]
    if rel.startswith("instrument/cameras/"):
        return S.CAMERA_GEOMETRY
    if rel.startswith("instrument/readout/"):
        return S.CAMERA_READOUT
    if rel.startswith("r1/tel_type="):
        return S.R1_EVENTS
    if rel.startswith("dl1/tel_type="):
        return S.DL1_EVENTS
    raise AssertionError(f"unexpected file in product directory: {rel}")


def test_every_schema_field_has_unit_and_description():
    names = S.available()
    assert {S.SUBARRAY, S.OPTICS, S.CAMERA_GEOMETRY, S.CAMERA_READOUT, S.SIM_RUN, S.SIM_SHOWER,
            S.R1_EVENTS, S.R1_TRIGGER, S.DL1_EVENTS} <= set(names)
    for name in names:
        cols = S.column_names(name, optional=True)
        sch = S.schema(name, {f: 7 for f in cols}, include=cols)
        assert sch.metadata[S.META_SCHEMA_VERSION] == S.SCHEMA_VERSION.encode()
        for f in sch:
            assert b"unit" in f.metadata and f.metadata[b"description"], (name, f.name)
            # the longest matching suffix decides (timing_slope_ns_per_deg is ns/deg)
            for suffix, unit in (("_ns_per_deg", "ns/deg"), ("_m2", "m2"), ("_m", "m"), ("_deg", "deg"),
                                 ("_tev", "TeV"), ("_ns", "ns"), ("_pe", "pe")):
                if f.name.endswith(suffix):
                    assert f.metadata[b"unit"].decode() == unit, (name, f.name)
                    break


def test_validate_rejects_missing_extra_and_wrong_types():
    good = pa.table({"tel_id": pa.array([1], pa.int16()), "tel_type": ["LST_LST_LSTCam"], "optics_name": ["LST"],
                     "camera_name": ["LSTCam"], "readout_name": ["LSTCam"], "pos_x_m": [0.0], "pos_y_m": [0.0], "pos_z_m": [0.0],
                     "tel_index": pa.array([0], pa.int32())})
    out = S.validate(good, S.SUBARRAY)
    assert out.schema.field("pos_x_m").metadata[b"unit"] == b"m"
    with pytest.raises(SchemaError, match="missing columns.*pos_z_m"):
        S.validate(good.drop(["pos_z_m"]), S.SUBARRAY)
    with pytest.raises(SchemaError, match="unexpected.*bogus"):
        S.validate(good.append_column("bogus", pa.array([1])), S.SUBARRAY)
    with pytest.raises(SchemaError, match="pos_x_m"):
        S.validate(good.set_column(good.schema.get_field_index("pos_x_m"), "pos_x_m", pa.array(["north"])), S.SUBARRAY)


def test_every_written_file_conforms(r1_products):
    n = 0
    for name, root in r1_products.items():
        for f in sorted(root.rglob("*.parquet")):
            rel = f.relative_to(root).as_posix()
            sch = pq.read_schema(f)
            S.check_file_schema(sch, schema_for(rel), str(f))
            assert S.META_PROVENANCE in sch.metadata
            n += 1
        prov = json.loads((root / "provenance.json").read_text())
        assert len(prov["inputs"][0]["sha256"]) == 64 and prov["versions"]["dvp"]
    assert n > 50


QUERY = r"""
import sys, polars as pl, duckdb
root = sys.argv[1]
scalars = pl.scan_parquet(root + "/r1/**/*.parquet", hive_partitioning=True).select(
    "tel_type", "obs_id", "event_id", "tel_id").collect()
lst = pl.scan_parquet(root + "/r1/tel_type=LST_LST_LSTcam/*.parquet").select(
    pl.col("waveform").arr.max().alias("m")).collect()
con = duckdb.connect()
d = con.sql(f"select tel_type, count(*) n, max(len(waveform)) w from read_parquet('{root}/r1/**/*.parquet', "
            "hive_partitioning=true) group by 1 order by 1").fetchall()
sh = con.sql(f"select count(*), sum(triggered::int) from '{root}/simulation/showers.parquet'").fetchall()[0]
print(scalars.height, lst.height, d, sh, "dvp" in sys.modules)
"""


def test_outputs_open_in_polars_and_duckdb_without_dvp(r1_products):
    root = r1_products["gamma_prod6_tel_event_header_v4"]
    res = subprocess.run([sys.executable, "-c", QUERY, str(root)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == ["7", "3"]
    assert "('LST_LST_LSTcam', 3, 74200)" in res.stdout and "('MST_MST_NectarCam', 4, 111300)" in res.stdout
    assert res.stdout.strip().endswith("False")
