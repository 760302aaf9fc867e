"""`dvp dl1-to-dl2`: the product it writes, config handling and bad input."""
import shutil

import numpy as np
import pyarrow as pa
import polars as pl
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


def test_product_layout_schemas_and_true_values(dl2_products, dl1_products):
    out = dl2_products[RUN202]
    assert sorted(p.name for p in out.iterdir()) == ["dl1", "dl2", "dl2_telescopes", "instrument",
                                                     "provenance.json", "simulation", "trigger"]
    # the DL1 parameters travel with the product (the features of dvp train), rows unchanged
    types = sorted(d.name for d in (dl1_products[RUN202] / "dl1").iterdir())
    assert sorted(d.name for d in (out / "dl1").iterdir()) == types
    for t in types:
        dl1_in = pl.read_parquet(dl1_products[RUN202] / "dl1" / t / "*.parquet", columns=S.column_names(S.DL1_EVENTS))
        dl1_out = pl.read_parquet(out / "dl1" / t / "*.parquet")
        assert dl1_out.columns == S.column_names(S.DL1_EVENTS) and dl1_out.equals(dl1_in)
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


def _dl2_tables(out):
    """The DL2 tables as Arrow IPC bytes of one chunk each: equal bytes = equal values,
    NaNs included (``Table.equals`` takes NaN != NaN)."""
    out_bytes = []
    for d in ("dl2", "dl2_telescopes"):
        t = pq.read_table(out / d / "part-00000.parquet").replace_schema_metadata(None).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out_bytes.append((t.num_rows, sink.getvalue().to_pybytes()))
    return out_bytes


def test_chunked_runner_matches_whole_read(dl1_products, tmp_path):
    """Any chunk size (1 telescope event per file and step .. more than the input) gives
    the tables of the all-at-once run, value for value; so do unordered inputs."""
    product = dl1_products[RUN202]
    whole = _dl2_tables(dl1_to_dl2([product], tmp_path / "whole", chunk_rows=None).output)
    n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (product / "dl1").rglob("*.parquet"))
    assert len(list((product / "dl1").iterdir())) >= 2  # several telescope types to merge
    assert whole[0][0] == 6 and whole[1][0] == n_rows
    for k in (1, 2, 3, 5, 7, n_rows, 10 * n_rows):
        got = _dl2_tables(dl1_to_dl2([product], tmp_path / f"k{k}", chunk_rows=k).output)
        for a, b in zip(whole, got):
            assert a == b, k
    # rows in reverse event order in every file: detected, read whole, same result
    shuffled = tmp_path / "shuffled"
    shutil.copytree(product, shuffled)
    for f in (shuffled / "dl1").rglob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.take(np.arange(t.num_rows)[::-1].copy()), f)
    got = _dl2_tables(dl1_to_dl2([shuffled], tmp_path / "unordered", chunk_rows=1).output)
    for a, b in zip(whole, got):
        assert a == b


def test_event_chunks_are_complete_events_in_order(tmp_path):
    """The k-way merge over per-type files yields every row once, each array event whole
    in a single chunk, chunks in increasing key order."""
    from dvp.runner import _event_chunks

    rng = np.random.default_rng(1)
    files = []
    for i, n_ev in enumerate((40, 25, 60)):
        ev = np.sort(rng.choice(80, n_ev, replace=False))
        ev = np.repeat(ev, rng.integers(1, 4, n_ev))  # several telescopes of one type per event
        obs = np.where(ev < 40, 1, 2).astype(np.int32)
        t = pa.table({S.OBS_ID: obs, S.EVENT_ID: ev.astype(np.int64), "row": np.arange(len(ev)) + 1000 * i})
        f = tmp_path / f"{i}.parquet"
        pq.write_table(t, f, row_group_size=7)
        files.append((f, pq.ParquetFile(f)))
    total = sum(pf.metadata.num_rows for _, pf in files)
    for k in (1, 3, 50, 1000):
        chunks = list(_event_chunks(files, [S.OBS_ID, S.EVENT_ID, "row"], k))
        rows = np.concatenate([c.column("row").to_numpy() for c in chunks])
        assert len(rows) == total and len(np.unique(rows)) == total
        keys = [set(zip(c.column(S.OBS_ID).to_pylist(), c.column(S.EVENT_ID).to_pylist())) for c in chunks]
        for a, b in zip(keys, keys[1:]):
            assert max(a) < min(b)  # disjoint and increasing: no event split across chunks
        if k == 1:
            assert len(chunks) > 10
