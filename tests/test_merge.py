"""dvp merge: many product directories into one with large row groups (issue 7)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dvp import schemas as S
from dvp.config import load_config
from dvp.errors import DvpError, InputError
from dvp.merge import merge
from dvp.runner import dl1_to_dl2, r1_to_dl1, simulate

from .conftest import run_cli

LST = "LST_LSTN-design_LSTN-design"


@pytest.fixture(scope="module")
def dl1_small(tmp_path_factory):
    """Four small toy-MC DL1 products (obs_id 1-4), as a batch job would leave them."""
    base = tmp_path_factory.mktemp("merge_dl1")
    out = []
    for i in range(1, 5):
        out.append(base / f"obs{i}")
        simulate("gamma", 40, out[-1], level="dl1", seed=i, obs_id=i, reuse=5)
    return out


@pytest.fixture(scope="module")
def r1_pair(tmp_path_factory):
    """Two toy-MC R1 products with different obs_id (what `dvp simulate` gives with two
    seeds; its CLI has no --obs-id, and two products with one obs_id share event ids)."""
    base = tmp_path_factory.mktemp("merge_r1")
    out = [base / "obs1", base / "obs2"]
    for i, p in enumerate(out, start=1):
        simulate("gamma", 60, p, seed=i, obs_id=i, reuse=5)
    return out


def _files(product, sub):
    """The Parquet files at ``product/sub`` (a file or a directory), in name order."""
    path = product / sub
    return [path] if path.is_file() else sorted(path.rglob("*.parquet"))


def _table(files) -> pa.Table:
    """The files' rows in order, without schema metadata (provenance differs)."""
    return pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in files])


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, NaN equal to NaN (``Table.equals`` has NaN != NaN)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns):
        x, y = x.combine_chunks(), y.combine_chunks()
        while pa.types.is_list(x.type) or pa.types.is_fixed_size_list(x.type):
            if not x.is_null().equals(y.is_null()) or not pc.list_value_length(x).equals(
                    pc.list_value_length(y)):
                return False
            x, y = x.flatten(), y.flatten()
        if pa.types.is_floating(x.type):
            if not np.array_equal(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=True):
                return False
        elif not x.equals(y):
            return False
    return True


def _rel_tables(product):
    """``{relative path of an output file: [files of product that merge into it]}``."""
    out = {}
    for f in sorted(product.rglob("*.parquet")):
        rel = f.relative_to(product)
        if rel.parts[0] == "instrument":
            continue
        key = str(rel.parent / "part-00000.parquet") if rel.parts[0] != "simulation" else str(rel)
        out.setdefault(key, []).append(f)
    return out


def test_merge_equals_concatenation(dl1_small, tmp_path):
    out = tmp_path / "merged"
    summary = merge(dl1_small, out)
    inputs = [_rel_tables(p) for p in dl1_small]
    merged = _rel_tables(out)
    assert set(merged) == set().union(*inputs)
    assert any(k.startswith("dl1/") for k in merged) and "trigger/part-00000.parquet" in merged
    for rel, files in merged.items():
        assert len(files) == 1
        want = _table([f for t in inputs for f in t.get(rel, [])])
        got = _table(files)
        assert _same(got, want), rel   # same rows, same (input, file) order
        pf = pq.ParquetFile(files[0])
        n_in = sum(pq.ParquetFile(f).metadata.num_row_groups for t in inputs for f in t.get(rel, []))
        assert pf.metadata.num_row_groups <= 1 and (pf.metadata.num_row_groups < n_in or n_in <= 1), rel
        S.check_file_schema(pf.schema_arrow, pf.schema_arrow.metadata[S.META_SCHEMA_NAME].decode(), str(rel))
        prov = json.loads(pf.schema_arrow.metadata[S.META_PROVENANCE])
        assert prov["command"] == "merge" and len(prov["inputs"]) == 4
    # keys unique and in event order (inputs given in obs_id order)
    trig = pq.read_table(out / "trigger" / "part-00000.parquet")
    keys = list(zip(trig.column(S.OBS_ID).to_pylist(), trig.column(S.EVENT_ID).to_pylist()))
    assert keys == sorted(set(keys))
    assert sorted({o for o, _ in keys}) == [1, 2, 3, 4]
    # provenance: inputs hashed, rows in == rows out per table
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == "merge"
    assert [i["path"] for i in prov["inputs"]] == [str(p.resolve()) for p in dl1_small]
    assert all(i["provenance_sha256"] for i in prov["inputs"])
    assert prov["counts"]["rows_in"] == prov["counts"]["rows_out"]
    assert prov["counts"]["rows_out"]["trigger/part-00000.parquet"] == len(keys) == summary.n_array_events
    assert sum(summary.n_tel_events.values()) == sum(
        pq.ParquetFile(f).metadata.num_rows for p in dl1_small for f in _files(p, "dl1"))
    assert summary.warnings == []
    # the instrument is the first input's
    from dvp.instrument.subarray import SubarrayDescription
    assert SubarrayDescription.read(out).fingerprint() == SubarrayDescription.read(dl1_small[0]).fingerprint()


def test_row_groups_reach_the_target(dl1_small, tmp_path):
    """Every row group but the last holds at least the target bytes, rows of several
    inputs share a row group, and there are fewer row groups than input files."""
    files = [f for p in dl1_small for f in (p / "dl1" / f"tel_type={LST}").glob("*.parquet")]
    total = sum(pq.read_table(f).nbytes for f in files)
    target = total // 3
    out = tmp_path / "merged"
    merge(dl1_small, out, row_group_bytes=target)
    pf = pq.ParquetFile(out / "dl1" / f"tel_type={LST}" / "part-00000.parquet")
    sizes = [pf.read_row_group(i).nbytes for i in range(pf.num_row_groups)]
    # sizes are counted on the batches as read, whose validity bitmaps a read-back lacks
    assert 1 < len(sizes) < len(files) and all(s >= 0.9 * target for s in sizes[:-1])


def test_polars_and_duckdb_read_the_merge(dl1_small, tmp_path):
    out = tmp_path / "merged"
    merge(dl1_small, out)
    n = sum(pq.ParquetFile(f).metadata.num_rows for p in dl1_small for f in _files(p, "dl1"))
    query = (
        "import sys, polars as pl, duckdb\n"
        "root = sys.argv[1]\n"
        "p = pl.scan_parquet(root + '/dl1/**/*.parquet', hive_partitioning=True).select(pl.len()).collect().item()\n"
        "d = duckdb.sql(f\"select count(distinct tel_type), count(*) from read_parquet('{root}/dl1/**/*.parquet', "
        "hive_partitioning=true)\").fetchall()[0]\n"
        "print(p, d[0], d[1], 'dvp' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", query, str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(n), "2", str(n), "False"]


def test_r1_merge_commutes_with_r1_to_dl1(r1_pair, tmp_path):
    """r1-to-dl1 of the merged R1 gives the DL1 rows of merging the DL1 of each; dl1-to-dl2
    of the merged DL1 (streamed: it is in event order) the merge of each one's DL2."""
    merged_r1 = tmp_path / "r1"
    merge(r1_pair, merged_r1)
    for f in _files(merged_r1, "r1"):   # R1 row groups stay near 16 MiB, not 64
        pf = pq.ParquetFile(f)
        assert all(pf.metadata.row_group(i).total_byte_size < 40 * 2**20 for i in range(pf.num_row_groups))
    a = tmp_path / "dl1_of_merge"
    r1_to_dl1([merged_r1], a)
    each = [tmp_path / f"dl1_{i}" for i in range(len(r1_pair))]
    for src, dst in zip(r1_pair, each):
        r1_to_dl1([src], dst)
    b = tmp_path / "merge_of_dl1"
    merge(each, b)
    parts = sorted(d.name for d in (a / "dl1").iterdir())
    assert parts == sorted(d.name for d in (b / "dl1").iterdir()) and len(parts) == 2
    # r1-to-dl1 may write several files a partition: compare the rows of each directory
    subdirs = [f"dl1/{part}" for part in parts] + ["trigger", "simulation/showers.parquet", "simulation/runs.parquet"]
    for sub in subdirs:
        assert _same(_table(_files(a, sub)), _table(_files(b, sub))), sub
    assert pq.read_table(_files(a, "dl1"), columns=[S.IS_VALID]).column(S.IS_VALID).to_numpy().sum() > 10
    # one step further: DL2 products merge too (dl2/, dl2_telescopes/, carried dl1/)
    dl2_each = [tmp_path / f"dl2_{i}" for i in range(len(each))]
    for src, dst in zip(each, dl2_each):
        dl1_to_dl2([src], dst)
    c, d = tmp_path / "dl2_of_merge", tmp_path / "merge_of_dl2"
    dl1_to_dl2([b], c)
    merge(dl2_each, d)
    for sub in subdirs + ["dl2", "dl2_telescopes"]:
        assert _same(_table(_files(c, sub)), _table(_files(d, sub))), sub


def test_inputs_in_reverse_obs_order_warn(dl1_small, tmp_path):
    summary = merge(dl1_small[::-1], tmp_path / "merged")
    assert len(summary.warnings) == 1 and "not in (obs_id, event_id) order" in summary.warnings[0]


def test_globs_and_list_files(dl1_small, tmp_path):
    lst = tmp_path / "inputs.txt"
    lst.write_text("# obs 1 and 2\n" + "\n".join(map(str, dl1_small[:2])) + "\n")
    s1 = merge([f"@{lst}"], tmp_path / "a")
    s2 = merge([str(dl1_small[0].parent / "obs*")], tmp_path / "b")
    assert s1.n_inputs == 2 and s2.n_inputs == 4


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_instrument_mismatch(dl1_small, tmp_path):
    other = _copy(dl1_small[1], tmp_path / "moved")
    f = other / "instrument" / "subarray.parquet"
    t = pq.read_table(f)
    x = t.column("pos_x_m").to_numpy().copy()
    x[0] += 1.0   # one telescope moved by 1 m: another array
    pq.write_table(t.set_column(t.schema.get_field_index("pos_x_m"), t.schema.field("pos_x_m"), pa.array(x)), f)
    with pytest.raises(InputError, match="instrument differs") as e:
        merge([dl1_small[0], other], tmp_path / "out")
    assert e.value.path == str(other)
    assert not (tmp_path / "out").exists()


def test_instrument_compared_by_fingerprint_when_tables_differ(dl1_small, tmp_path):
    """Instrument tables that differ in a way the description ignores (here: metadata of
    another dvp version) fail the quick comparison; the fingerprint then accepts them."""
    other = _copy(dl1_small[1], tmp_path / "other_version")
    f = other / "instrument" / "optics.parquet"
    t = pq.read_table(f)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, S.META_DVP_VERSION: b"0.0.1"}), f)
    summary = merge([dl1_small[0], other], tmp_path / "out")
    assert summary.n_inputs == 2


def test_levels_and_optional_columns_must_agree(dl1_small, r1_pair, tmp_path):
    with pytest.raises(InputError, match=r"levels differ .*has \['r1'\]; lacks \['dl1'\]"):
        merge([dl1_small[0], r1_pair[0]], tmp_path / "out")
    images = tmp_path / "images"
    simulate("gamma", 40, images, level="dl1", seed=9, obs_id=9, reuse=5,
             config=load_config(None, ["r1_to_dl1.write_images=true"]))
    with pytest.raises(InputError, match=r"columns differ .*has \['image', 'peak_time', 'image_mask'\]"):
        merge([dl1_small[0], images], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicate_input(dl1_small, tmp_path):
    with pytest.raises(InputError, match=r"duplicate events: \d+ \(obs_id, event_id\) keys in more than one "
                                         r"input, .*the same input twice\?\)"):
        merge([dl1_small[0], dl1_small[1], dl1_small[0]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["dl1", "simulation"])
def test_corrupt_input_leaves_no_output(dl1_small, tmp_path, where):
    bad = _copy(dl1_small[2], tmp_path / "bad")
    f = _files(bad, "dl1")[0] if where == "dl1" else bad / "simulation" / "showers.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])   # truncated: no footer
    with pytest.raises(InputError, match="corrupt or unreadable Parquet file") as e:
        merge([dl1_small[0], bad], tmp_path / "out")
    assert e.value.path == str(f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]   # no output, no temporary


def test_damaged_data_page_found_while_reading(dl1_small, tmp_path):
    """A file whose footer reads but whose first page header does not: the error comes
    mid-merge, the temporary output is removed and an existing output is kept."""
    keep = tmp_path / "out"
    merge(dl1_small[:1], keep)
    before = (keep / "provenance.json").read_text()
    bad = _copy(dl1_small[1], tmp_path / "bad")
    f = _files(bad, "dl1")[0]
    data = bytearray(f.read_bytes())
    data[4:64] = b"\xff" * 60   # the first column chunk's page header, after the magic
    f.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt or unreadable Parquet file") as e:
        merge([dl1_small[0], bad], keep, overwrite=True)
    assert e.value.path == str(f)
    assert (keep / "provenance.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out"]


def test_overwrite(dl1_small, tmp_path):
    out = tmp_path / "out"
    merge(dl1_small[:2], out)
    with pytest.raises(DvpError, match="output exists"):
        merge(dl1_small[2:], out)
    assert json.loads((out / "provenance.json").read_text())["inputs"][0]["path"] == str(dl1_small[0].resolve())
    merge(dl1_small[2:], out, overwrite=True)
    assert json.loads((out / "provenance.json").read_text())["inputs"][0]["path"] == str(dl1_small[2].resolve())


def test_bad_arguments(dl1_small, tmp_path):
    with pytest.raises(DvpError, match="no input product directories"):
        merge([], tmp_path / "out")
    with pytest.raises(InputError, match="not a dvp product directory"):
        merge([tmp_path], tmp_path / "out")
    with pytest.raises(DvpError, match="row_group_bytes must be a positive integer"):
        merge(dl1_small, tmp_path / "out", row_group_bytes=0)
    broken = _copy(dl1_small[1], tmp_path / "broken")
    (broken / "instrument" / "optics.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="unreadable instrument description"):
        merge([dl1_small[0], broken], tmp_path / "out")
    bare = tmp_path / "bare"
    shutil.copytree(dl1_small[0] / "instrument", bare / "instrument")
    with pytest.raises(InputError, match="holds no data to merge"):
        merge([bare], tmp_path / "out")
    stray = _copy(dl1_small[0], tmp_path / "stray")
    (stray / "dl3").mkdir()
    with pytest.raises(InputError, match="unknown level directory"):
        merge([stray], tmp_path / "out")


def test_cli(dl1_small, tmp_path):
    out = tmp_path / "out"
    res = run_cli("merge", *dl1_small[:2], "-o", out, "-q")
    assert res.returncode == 0, res.stderr
    assert (out / "provenance.json").is_file()
    res = run_cli("merge", dl1_small[2], dl1_small[2], "-o", tmp_path / "dup")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvp: error:") and "duplicate events" in lines[0]
    assert "the same input twice?" in lines[0] and not (tmp_path / "dup").exists()
    res = run_cli("merge", dl1_small[0], "-o", out)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"dvp: error: {out}: output exists (use --overwrite to replace it)"]
    res = run_cli("merge", *dl1_small[2:], "-o", out, "--overwrite", "--row-group-mb", "1")
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stderr and "inputs" in res.stderr and "MiB / s" in res.stderr
    assert np.array_equal(pq.read_table(out / "trigger" / "part-00000.parquet").column(S.OBS_ID).unique().to_numpy(),
                          [3, 4])
