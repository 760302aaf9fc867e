"""`dvp dl1-to-dl2`: the product it writes, config handling and bad input."""
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dvp.schemas as S
from dvp.config import ConfigError, load_config
from dvp.errors import InputError
from dvp.instrument.subarray import SubarrayDescription
from dvp.runner import dl1_to_dl2
from dvp.stages.dl1_to_dl2 import dl1_to_dl2 as stage
from dvp.stages.dl1_to_dl2 import required_columns

from .conftest import run_cli

RUN202 = "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini"


def test_product_layout_schemas_and_true_values(dl2_products):
    out = dl2_products[RUN202]
    assert sorted(p.name for p in out.iterdir()) == ["dl2", "dl2_telescopes", "instrument", "provenance.json",
                                                     "simulation", "trigger"]
    ev_schema = pq.read_schema(out / "dl2" / "part-00000.parquet")
    S.check_file_schema(ev_schema, S.DL2_EVENTS, "dl2")
    S.check_file_schema(pq.read_schema(out / "dl2_telescopes" / "part-00000.parquet"), S.DL2_TELESCOPE_EVENTS, "t")
    ev = pq.read_table(out / "dl2" / "part-00000.parquet")
    assert S.TRUE_ENERGY in ev.column_names and not ev.column(S.TRUE_ENERGY).null_count
    assert set(ev.column(S.PARTICLE).to_pylist()) == {"proton"}
    tel = pq.read_table(out / "dl2_telescopes" / "part-00000.parquet")
    n_used = ev.column(S.N_TELS_USED).to_numpy()
    assert [len(x) for x in ev.column(S.RECO_TELESCOPES).to_pylist()] == n_used.tolist()
    assert tel.column(S.RECO_USED).to_numpy().sum() == n_used.sum()
    impact = tel.column(S.RECO_IMPACT_DISTANCE).to_numpy()
    assert np.isfinite(impact[tel.column(S.RECO_USED).to_numpy()]).all()


def test_stage_is_order_independent_and_quality_configurable(dl1_products):
    product = dl1_products[RUN202]
    cfg = load_config().dl1_to_dl2
    cols = list(required_columns(cfg))
    dl1 = pa.concat_tables([pq.read_table(f, columns=cols).replace_schema_metadata(None)
                            for f in sorted((product / "dl1").rglob("*.parquet"))])
    sub = SubarrayDescription.read(product)
    a, ta = stage(dl1, sub, cfg)
    rev = dl1.take(np.arange(dl1.num_rows)[::-1].copy())
    b, tb = stage(rev, sub, cfg)
    for x, y in ((a, b), (ta, tb)):  # NaN-aware: invalid events have NaN geometry
        assert x.column_names == y.column_names
        for c in x.column_names:
            assert x.column(c).to_pylist() == y.column(c).to_pylist() or np.array_equal(
                x.column(c).to_numpy(), y.column(c).to_numpy(), equal_nan=True), c
    strict = load_config(overrides=['dl1_to_dl2.quality.criteria=[["bright", "parameters.hillas.intensity > 1e9"]]'])
    c, _ = stage(dl1, sub, strict.dl1_to_dl2)
    assert not c.column(S.RECO_IS_VALID).to_numpy().any()
    assert a.column(S.RECO_IS_VALID).to_numpy().any()


def test_bad_config_values():
    with pytest.raises(ConfigError, match="unknown name 'nope'"):
        load_config(overrides=['dl1_to_dl2.quality.criteria=[["x", "nope > 1"]]'])
    with pytest.raises(ConfigError, match="unknown method"):
        load_config(overrides=['dl1_to_dl2.method="Magic"'])
    with pytest.raises(ConfigError, match="unknown key 'dl1_to_dl2.foo'"):
        load_config(overrides=['dl1_to_dl2.foo=1'])


def test_missing_column_is_one_line_error_naming_file_and_column(dl1_products, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(dl1_products[RUN202], bad)
    f = sorted((bad / "dl1").rglob("*.parquet"))[0]
    t = pq.read_table(f)
    pq.write_table(t.drop_columns([S.HILLAS_PSI]), f)
    with pytest.raises(InputError, match=f"{f}: missing column 'hillas_psi_deg'"):
        dl1_to_dl2([bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    res = run_cli("dl1-to-dl2", bad, "-o", tmp_path / "out2", "-q")
    assert res.returncode == 1 and "hillas_psi_deg" in res.stderr and res.stderr.count("\n") == 1
    with pytest.raises(InputError, match="missing column 'hillas_width_deg'"):
        stage(t.drop_columns([S.HILLAS_WIDTH]), SubarrayDescription.read(bad), source="x")


def test_cli_writes_product_readable_without_dvp(dl1_products, tmp_path):
    out = tmp_path / "dl2"
    res = run_cli("dl1-to-dl2", dl1_products[RUN202], "-o", out, "-q")
    assert res.returncode == 0, res.stderr
    import duckdb
    n = duckdb.sql(f"select count(*), sum(reco_is_valid::int) from read_parquet('{out}/dl2/*.parquet')").fetchall()[0]
    assert n == (6, 4)
