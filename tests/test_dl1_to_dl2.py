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
    ev_file, = (out / "dl2").glob("*.parquet")          # one task: one part
    tel_file, = (out / "dl2_telescopes").glob("*.parquet")
    assert ev_file.name == tel_file.name == "part-000000-000000.parquet"
    S.check_file_schema(pq.read_schema(ev_file), S.DL2_EVENTS, "dl2")
    S.check_file_schema(pq.read_schema(tel_file), S.DL2_TELESCOPE_EVENTS, "t")
    ev = pq.read_table(ev_file)
    assert S.TRUE_ENERGY in ev.column_names and not ev.column(S.TRUE_ENERGY).null_count
    assert set(ev.column(S.PARTICLE).to_pylist()) == {"proton"}
    tel = pq.read_table(tel_file)
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
    """The DL2 tables (every part file, in name order) as Arrow IPC bytes of one chunk
    each: equal bytes = equal values, NaNs included (``Table.equals`` takes NaN != NaN)."""
    out_bytes = []
    for d in ("dl2", "dl2_telescopes"):
        files = sorted((out / d).glob("*.parquet"))
        t = pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in files]).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out_bytes.append((t.num_rows, sink.getvalue().to_pybytes()))
    return out_bytes


def _small_row_groups(src, dst, reverse=False):
    """A copy of a DL1 product with row groups of 2 rows (optionally rows reversed)."""
    shutil.copytree(src, dst)
    for f in (dst / "dl1").rglob("*.parquet"):
        t = pq.read_table(f)
        if reverse:
            t = t.take(np.arange(t.num_rows)[::-1].copy())
        pq.write_table(t, f, row_group_size=2)
    return dst


def test_task_split_matches_one_task(dl1_products, tmp_path):
    """Any task size (one row group per task .. more than the input) gives the tables
    of the single-task run, value for value; so do rows in reverse event order."""
    product = _small_row_groups(dl1_products[RUN202], tmp_path / "small")
    whole = _dl2_tables(dl1_to_dl2([product], tmp_path / "whole", task_rows=10**9).output)
    n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (product / "dl1").rglob("*.parquet"))
    assert len(list((product / "dl1").iterdir())) >= 2  # several telescope types to merge
    assert whole[0][0] == 6 and whole[1][0] == n_rows
    for k in (1, 2, 3, 5, 7, n_rows):
        out = dl1_to_dl2([product], tmp_path / f"k{k}", task_rows=k).output
        if k == 1:
            assert len(list((out / "dl2").glob("*.parquet"))) >= 4
        assert _dl2_tables(out) == whole, k
    shuffled = _small_row_groups(dl1_products[RUN202], tmp_path / "shuffled", reverse=True)
    assert _dl2_tables(dl1_to_dl2([shuffled], tmp_path / "unordered", task_rows=3).output) == whole


def test_key_ranges_read_every_row_once_and_never_split_an_event(tmp_path):
    """plan_key_ranges + read_key_range over per-type files: every row in exactly one
    range, all rows of an array event in the same range, ranges in key order."""
    from dvp.io.keyrange import plan_key_ranges, read_key_range

    rng = np.random.default_rng(1)
    files = []
    for i, n_ev in enumerate((40, 25, 60)):
        ev = np.sort(rng.choice(80, n_ev, replace=False))
        ev = np.repeat(ev, rng.integers(1, 4, n_ev))  # several telescopes of one type per event
        obs = np.where(ev < 40, 1, 2).astype(np.int32)
        t = pa.table({S.OBS_ID: obs, S.EVENT_ID: ev.astype(np.int64), "row": np.arange(len(ev)) + 1000 * i})
        f = tmp_path / f"{i}.parquet"
        pq.write_table(t, f, row_group_size=7)
        files.append(f)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    for k in (1, 3, 50, 1000):
        ranges = plan_key_ranges(files, k)
        assert ranges[0][0] is None and ranges[-1][1] is None
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))   # contiguous
        chunks = [pa.concat_tables([read_key_range(f, [S.OBS_ID, S.EVENT_ID, "row"], lo, hi) for f in files])
                  for lo, hi in ranges]
        rows = np.concatenate([c.column("row").to_numpy() for c in chunks])
        assert len(rows) == total and len(np.unique(rows)) == total
        keys = [set(zip(c.column(S.OBS_ID).to_pylist(), c.column(S.EVENT_ID).to_pylist())) for c in chunks]
        for a, b in zip(keys, keys[1:]):
            assert max(a) < min(b)  # disjoint and increasing: no event split across ranges
        if k == 1:
            assert len(ranges) > 3
        if k == 1000:
            assert ranges == [(None, None)]
    # without statistics (or with row groups overlapping everywhere): one range
    f = tmp_path / "nostats.parquet"
    pq.write_table(pq.read_table(files[0]), f, write_statistics=False, row_group_size=7)
    assert plan_key_ranges([f, files[1]], 3) == [(None, None)]
    # rows in random order: every row group spans nearly all keys, so the ranges get
    # coarser until the tasks together read at most MAX_READ_AMPLIFICATION times the rows
    from dvp.io.keyrange import MAX_READ_AMPLIFICATION, row_group_bounds
    shuffled = tmp_path / "shuffled.parquet"
    t = pq.read_table(files[2])
    pq.write_table(t.take(rng.permutation(t.num_rows)), shuffled, row_group_size=7)
    ranges = plan_key_ranges([shuffled], 3)
    assert len(ranges) < t.num_rows // 3 // 4
    rgs = row_group_bounds(pq.ParquetFile(shuffled))
    read = sum(n for a, b in ranges for lo, hi, n in rgs if (a is None or hi >= a) and (b is None or lo < b))
    assert read <= MAX_READ_AMPLIFICATION * t.num_rows
    got = np.concatenate([read_key_range(shuffled, ["row"], a, b).column("row").to_numpy() for a, b in ranges])
    assert sorted(got) == sorted(t.column("row").to_numpy())
