"""`dvp r1-to-dl1`: the product it writes, its config handling and its bad-input behaviour."""
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dvp.schemas as S
from dvp.config import load_config
from dvp.errors import DvpError
from dvp.instrument.subarray import SubarrayDescription
from dvp.runner import r1_to_dl1
from dvp.stages.r1_to_dl1 import prepare_camera
from dvp.stages.r1_to_dl1 import r1_to_dl1 as stage

from .conftest import run_cli

PROD6 = "gamma_prod6_tel_event_header_v4"


def _r1_file(product, prefix=""):
    return next(f for f in sorted((product / "r1").rglob("*.parquet")) if prefix in str(f))


def _dl1(path):
    return pa.concat_tables([pq.read_table(f).replace_schema_metadata(None)
                             for f in sorted((path / "dl1").rglob("*.parquet"))])


def test_contract_stage_output_matches_schema(r1_products):
    """Every camera type of every shared file: the stage's table is exactly the DL1 schema."""
    n = 0
    for name, product in r1_products.items():
        files = sorted((product / "r1").rglob("*.parquet"))
        if not files:
            continue
        sub = SubarrayDescription.read(product)
        for f in files:
            tel_type = f.parent.name.split("=", 1)[1]
            setup = prepare_camera(sub, tel_type, load_config().r1_to_dl1)
            r1 = pq.ParquetFile(f).read_row_group(0)
            for images in (False, True):
                out = stage(r1, setup, write_images=images)
                S.check_file_schema(out.schema, S.DL1_EVENTS, f"{name}/{tel_type}")
                assert out.num_rows == r1.num_rows
                assert (S.IMAGE in out.column_names) == images
            n += 1
    assert n >= 10


def test_cli_writes_standalone_product_that_opens_without_dvp(r1_products, tmp_path):
    out = tmp_path / "dl1"
    res = run_cli("r1-to-dl1", r1_products[PROD6], "-o", out, "-q")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dl1", "instrument", "provenance.json", "simulation", "trigger"]
    for f in (out / "dl1").rglob("*.parquet"):
        S.check_file_schema(pq.read_schema(f), S.DL1_EVENTS, str(f))
        assert S.IMAGE not in pq.read_schema(f).names  # images only on request
    query = (
        "import sys, polars as pl, duckdb\n"
        "root = sys.argv[1]\n"
        "p = pl.scan_parquet(root + '/dl1/**/*.parquet', hive_partitioning=True)"
        ".filter(pl.col('is_valid')).group_by('tel_type').agg(pl.len(), pl.col('hillas_intensity_pe').mean()).collect()\n"
        "d = duckdb.sql(f\"select tel_type, count(*) from read_parquet('{root}/dl1/**/*.parquet', hive_partitioning=true) "
        "group by 1 order by 1\").fetchall()\n"
        "print(p.height, d, 'dvp' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", query, str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "('LST_LST_LSTcam', 3)" in res.stdout and "('MST_MST_NectarCam', 4)" in res.stdout
    assert res.stdout.strip().endswith("False")


def _split_copy(src, dst, row_group_size):
    """A copy of the R1 product ``src`` whose R1 file has row groups of ``row_group_size`` events."""
    shutil.copytree(src, dst)
    f = _r1_file(dst)
    t = pq.read_table(f)
    with pq.ParquetWriter(f, t.schema) as w:
        w.write_table(t, row_group_size=row_group_size)
    return dst


def test_results_do_not_depend_on_batching(r1_products, tmp_path):
    """Same events in one row group or in row groups of 1: identical parameters (timing included)."""
    src = r1_products["lst_muons"]
    split = _split_copy(src, tmp_path / "split", 1)
    a, b = tmp_path / "a", tmp_path / "b"
    r1_to_dl1([src], a)
    r1_to_dl1([split], b)
    ta, tb = _dl1(a), _dl1(b)
    assert ta.num_rows == 30
    assert ta.equals(tb)


def test_set_override_changes_cleaning(r1_products, tmp_path):
    out = tmp_path / "hi"
    res = run_cli("r1-to-dl1", r1_products["lst_muons"], "-o", out, "-q",
                  "--set", "r1_to_dl1.cleaner.LST*.picture_threshold_pe=100000")
    assert res.returncode == 0, res.stderr
    t = _dl1(out)
    assert not any(t.column("is_valid").to_pylist())
    assert np.isnan(t.column("hillas_intensity_pe").to_numpy()).all()
    assert set(t.column("morphology_n_islands").to_pylist()) == {-1}


def _assert_one_line_failure(res, *fragments):
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dvp: error:"), err
    for frag in fragments:
        assert frag in err, err


def _no_output(tmp_path, out):
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_missing_column_is_one_line_error(r1_products, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(r1_products["lst_muons"], bad)
    f = _r1_file(bad)
    pq.write_table(pq.read_table(f).drop([S.TIME_SHIFT]), f)
    out = tmp_path / "out"
    _assert_one_line_failure(run_cli("r1-to-dl1", bad, "-o", out), str(f), "missing column 'time_shift_ns'")
    _no_output(tmp_path, out)


def test_wrong_column_type_is_one_line_error(r1_products, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(r1_products["lst_muons"], bad)
    f = _r1_file(bad)
    t = pq.read_table(f)
    i = t.schema.get_field_index(S.POINTING_ALT)
    pq.write_table(t.set_column(i, S.POINTING_ALT, pa.array(["high"] * t.num_rows)), f)
    out = tmp_path / "out"
    _assert_one_line_failure(run_cli("r1-to-dl1", bad, "-o", out), str(f), "'pointing_alt_deg' has type string")
    _no_output(tmp_path, out)


def test_corrupt_parquet_is_one_line_error(r1_products, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(r1_products["lst_muons"], bad)
    f = _r1_file(bad)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    _assert_one_line_failure(run_cli("r1-to-dl1", bad, "-o", out), str(f), "corrupt")
    _no_output(tmp_path, out)


def test_not_a_product_is_one_line_error(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    _assert_one_line_failure(run_cli("r1-to-dl1", tmp_path / "empty", "-o", out), "not a dvp product directory")
    _no_output(tmp_path, out)


@pytest.mark.parametrize("text, fragment", [
    ('[r1_to_dl1.cleaner."LST*"]\npicture_treshold_pe = 8.0\n', "unknown key 'picture_treshold_pe'"),
    ('[r1_to_dl1.cleaner."LST[Cam"]\npicture_threshold_pe = 8.0\n', "bad telescope-type pattern"),
])
def test_bad_config_is_one_line_error(r1_products, tmp_path, text, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    _assert_one_line_failure(run_cli("r1-to-dl1", r1_products["lst_muons"], "-o", out, "--config", cfg),
                             str(cfg), fragment)
    _no_output(tmp_path, out)


def test_failed_overwrite_keeps_existing_output(r1_products, tmp_path):
    out = tmp_path / "out"
    r1_to_dl1([r1_products["lst_muons"]], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad"
    shutil.copytree(r1_products["lst_muons"], bad)
    f = _r1_file(bad)
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DvpError):
        r1_to_dl1([bad], out, overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_provenance_records_config_and_counts(r1_products, tmp_path):
    import json
    out = tmp_path / "out"
    r1_to_dl1([r1_products[PROD6]], out)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == "r1-to-dl1"
    assert prov["config"]["r1_to_dl1"]["cleaner"]["*"]["name"] == "TailcutsImageCleaner"
    assert prov["counts"]["telescope_events_in"] == 7
    assert prov["inputs"][0]["kind"] == "product" and len(prov["inputs"][0]["provenance_sha256"]) == 64


def test_per_telescope_correction_paths_agree_bit_for_bit(r1_products, monkeypatch):
    """A batch mixing readout variants: one kernel call + per-event factors == one call per variant."""
    import dvp.stages.r1_to_dl1 as stage_mod

    product = r1_products[PROD6]
    f = _r1_file(product, "LST")
    r1 = pq.read_table(f)
    setup = prepare_camera(SubarrayDescription.read(product), f.parent.name.split("=", 1)[1], load_config().r1_to_dl1)
    variants = {setup.readout_of_tel[t] for t in r1.column("tel_id").to_pylist()}
    assert len(variants) == 2
    fast = stage_mod.calibrate(r1, setup)
    monkeypatch.setattr(stage_mod, "_per_event_correction_possible", lambda s: False)
    slow = stage_mod.calibrate(r1, setup)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


def _blocks(table, block_rows):
    """The table's waveforms as a WaveformStream of ``block_rows``-row blocks from one reused buffer."""
    from dvp.stages.r1_to_dl1 import WaveformStream
    size = table.schema.field(S.WAVEFORM).type.list_size
    values = table.column(S.WAVEFORM).combine_chunks().flatten().to_numpy().reshape(-1, size)
    buf = np.empty((block_rows, size), np.float32)

    def feed(consume):
        for a in range(0, len(values), block_rows):
            k = len(values[a:a + block_rows])
            buf[:k] = values[a:a + block_rows]
            consume(a, buf[:k])
            buf[:] = np.nan   # the buffer is reused: nothing may keep a view of it
    return WaveformStream(size, feed)


@pytest.mark.parametrize("per_event_correction", [True, False])
def test_streamed_waveforms_give_the_same_dl1(r1_products, monkeypatch, per_event_correction):
    """Waveforms handed over in blocks (as the runner streams them from the file) give the
    batch's DL1 bit for bit, on a batch mixing readout variants, by either correction path;
    a stream that skips or misses rows is an error."""
    import dvp.stages.r1_to_dl1 as stage_mod
    from dvp.stages.r1_to_dl1 import WaveformStream

    monkeypatch.setattr(stage_mod, "_per_event_correction_possible",
                        stage_mod._per_event_correction_possible if per_event_correction else lambda s: False)
    product = r1_products[PROD6]
    f = _r1_file(product, "LST")
    r1 = pq.read_table(f)
    setup = prepare_camera(SubarrayDescription.read(product), f.parent.name.split("=", 1)[1], load_config().r1_to_dl1)
    assert len({setup.readout_of_tel[t] for t in r1.column("tel_id").to_pylist()}) == 2
    ref = stage(r1, setup, write_images=True)
    meta = r1.drop_columns([S.WAVEFORM])
    for block_rows in (1, 2, 5, r1.num_rows + 3):
        got = stage(meta, setup, write_images=True, waveforms=_blocks(r1, block_rows))
        assert got.equals(ref), block_rows
    full = _blocks(r1, 2)
    with pytest.raises(ValueError, match="rows of waveforms"):
        stage(meta, setup, waveforms=WaveformStream(full.list_size, lambda c: full.feed(lambda a, b: a + len(b) < r1.num_rows and c(a, b))))
    with pytest.raises(ValueError, match="does not follow"):
        stage(meta, setup, waveforms=WaveformStream(full.list_size, lambda c: full.feed(lambda a, b: c(a + 2, b))))


def test_several_products_from_a_list_file(r1_products, tmp_path):
    a = tmp_path / "a"
    shutil.copytree(r1_products["lst_muons"], a)
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"# two runs of the same array\n{r1_products['lst_muons']}\n\n{a}\n")
    out = tmp_path / "out"
    summary = r1_to_dl1([f"@{lst}"], out)
    assert summary.n_inputs == 2 and sum(summary.n_tel_events.values()) == 60
    assert pq.read_table(out / "simulation" / "runs.parquet").num_rows == 2


def test_products_of_different_arrays_are_refused(r1_products, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DvpError, match="instrument differs"):
        r1_to_dl1([r1_products["lst_muons"], r1_products[PROD6]], out)
    assert not out.exists()


@pytest.mark.parametrize("name", ["n_hv_disabled", "lst_muons"])
def test_r1_reader_equals_pyarrow(r1_products, tmp_path, name):
    """Fast lists, skipped all-False hv_disabled and block-read scalars give pyarrow's table,
    for single row groups and for batches of several."""
    from dvp.runner import _all_false, _batches, _R1Reader
    from dvp.stages.r1_to_dl1 import R1_INPUT_COLUMNS

    src = _r1_file(r1_products[name])
    f = tmp_path / "many_groups.parquet"
    from dvp.io.parquet import parquet_options
    t = pq.read_table(src)
    pq.write_table(t, f, row_group_size=3, **parquet_options(t.schema))  # several blocks of row groups
    pf = pq.ParquetFile(f)
    reader = _R1Reader(pf, f, R1_INPUT_COLUMNS, block=2)
    skipped = 0
    for i in range(pf.num_row_groups):
        ours = reader.read(i)
        ref = pf.read_row_group(i, columns=list(R1_INPUT_COLUMNS))
        assert ours.replace_schema_metadata(None).equals(ref.replace_schema_metadata(None)), i
        skipped += _all_false(pf.metadata.row_group(i), S.HV_DISABLED)
    has_hv = any(any(x) for x in t.column(S.HV_DISABLED).to_pylist())
    assert (skipped == 0) == has_hv and pf.num_row_groups == -(-t.num_rows // 3)
    rg_bytes = pf.metadata.row_group(0).total_byte_size
    for batch_bytes in (1, 2 * rg_bytes, 5 * rg_bytes, 1 << 40):
        reader = _R1Reader(pf, f, R1_INPUT_COLUMNS, block=2)
        held = []
        for a, b in _batches(pf.metadata, 1, pf.num_row_groups, batch_bytes):
            ours = reader.read(a, b)
            held.append(ours)   # batches still held keep their values (the reader's buffers are not reused)
            ref = pf.read_row_groups(list(range(a, b)), columns=list(R1_INPUT_COLUMNS))
            assert ours.replace_schema_metadata(None).equals(ref.replace_schema_metadata(None)), (a, b)
            assert all(c.num_chunks == 1 for c in ours.columns)
            _check_streamed(reader, a, b, ref)
        for (a, b), ours in zip(_batches(pf.metadata, 1, pf.num_row_groups, batch_bytes), held):
            ref = pf.read_row_groups(list(range(a, b)), columns=list(R1_INPUT_COLUMNS))
            assert ours.replace_schema_metadata(None).equals(ref.replace_schema_metadata(None)), (a, b)
    # waveforms compressed (not the fast layout): streamed through pyarrow, same values
    g = tmp_path / "zstd.parquet"
    pq.write_table(t, g, row_group_size=3, compression="zstd")
    pg = pq.ParquetFile(g)
    reader = _R1Reader(pg, g, R1_INPUT_COLUMNS, block=2)
    for a, b in _batches(pg.metadata, 0, pg.num_row_groups, 2 * rg_bytes):
        _check_streamed(reader, a, b, pg.read_row_groups(list(range(a, b)), columns=list(R1_INPUT_COLUMNS)),
                        in_blocks=False)


def _check_streamed(reader, a, b, ref, in_blocks=True):
    """``read_streamed``: pyarrow's table without the waveforms, and a stream of them that
    covers every row once, in order, with pyarrow's values: in blocks of ``R1_BLOCK_BYTES``,
    or (``in_blocks=False``, a layout the fast reader leaves to pyarrow) in one block."""
    import dvp.runner as R
    table, stream = reader.read_streamed(a, b)
    want = ref.drop_columns([S.WAVEFORM])
    assert table.replace_schema_metadata(None).equals(want.replace_schema_metadata(None)), (a, b)
    wf = ref.column(S.WAVEFORM).combine_chunks()
    values = wf.flatten().to_numpy().reshape(len(wf), -1)
    assert stream.list_size == values.shape[1]
    for block_bytes in (1, 2 * values[0].nbytes, 1 << 40):
        got = []
        orig = R.R1_BLOCK_BYTES
        R.R1_BLOCK_BYTES = block_bytes
        try:
            table, stream = reader.read_streamed(a, b)
        finally:
            R.R1_BLOCK_BYTES = orig
        stream.feed(lambda first, block: got.append((first, block.copy())))
        assert [f for f, _ in got] == [sum(len(x) for _, x in got[:k]) for k in range(len(got))]
        block_rows = max(1, block_bytes // values[0].nbytes) if in_blocks else len(values)
        assert max(len(x) for _, x in got) == min(len(values), block_rows)
        np.testing.assert_array_equal(np.concatenate([x for _, x in got]).view(np.uint32), values.view(np.uint32))


def test_batches_cover_the_range():
    """``_batches``: consecutive, covering, each at least ``batch_bytes`` but the last."""
    from dvp.runner import _batches

    class RG:
        def __init__(self, n):
            self.total_byte_size = n

    class MD:
        def __init__(self, sizes):
            self.sizes = sizes

        def row_group(self, i):
            return RG(self.sizes[i])

    md = MD([5, 1, 1, 7, 2, 2, 2, 9])
    assert list(_batches(md, 0, 8, 4)) == [(0, 1), (1, 4), (4, 6), (6, 8)]
    assert list(_batches(md, 2, 7, 100)) == [(2, 7)]
    assert list(_batches(md, 0, 3, 1)) == [(0, 1), (1, 2), (2, 3)]
    assert list(_batches(md, 3, 3, 1)) == []


@pytest.mark.parametrize("column", [S.POINTING_ALT, S.WAVEFORM])
def test_corrupt_row_group_in_a_batch_is_named(r1_products, tmp_path, monkeypatch, column):
    """A damaged row group inside a batch of several: the error names that row group (also
    when it is in the waveforms, read as a stream after the rows before it were processed)."""
    import dvp.runner as R
    from dvp.io.parquet import parquet_options

    bad = tmp_path / "bad"
    shutil.copytree(r1_products["lst_muons"], bad)
    f = _r1_file(bad)
    t = pq.read_table(f)
    pq.write_table(t, f, row_group_size=max(1, t.num_rows // 4), **parquet_options(t.schema))
    md = pq.ParquetFile(f).metadata
    k = md.num_row_groups - 1
    cc = next(md.row_group(k).column(j) for j in range(md.num_columns)
              if md.row_group(k).column(j).path_in_schema.startswith(column))
    data = bytearray(f.read_bytes())
    start = cc.data_page_offset
    data[start:start + cc.total_compressed_size] = b"\xff" * cc.total_compressed_size
    f.write_bytes(bytes(data))
    monkeypatch.setattr(R, "R1_BATCH_BYTES", 1 << 40)   # the whole file in one batch
    with pytest.raises(DvpError) as e:
        r1_to_dl1([bad], tmp_path / "out")
    assert f"corrupt row group {k} " in str(e.value) and str(f) in str(e.value), str(e.value)


def test_tasks_of_one_file_share_its_reader(r1_products, tmp_path, monkeypatch):
    """Tasks of the same R1 file reuse one reader (footer and read buffers: opening a big
    file's footer per task fragmented the heap, RSS grew with every task); a rewritten file
    gets a new one, the run leaves none behind, and the output equals one task's."""
    import os

    import dvp.runner as R
    src = r1_products["lst_muons"]
    split = _split_copy(src, tmp_path / "split", 3)   # 10 row groups
    f = _r1_file(split)
    opened = []
    real = R._R1Reader
    monkeypatch.setattr(R, "_R1Reader", lambda pf, path, cols: opened.append(path) or real(pf, path, cols))
    r1_to_dl1([split], tmp_path / "many", task_row_groups=2)   # 5 tasks over one file
    assert len(opened) == 1 and R._READERS == {}
    r1_to_dl1([src], tmp_path / "one")
    assert _dl1(tmp_path / "many").equals(_dl1(tmp_path / "one"))
    first = R._task_reader(f)
    assert R._task_reader(f) is first
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # the file changed: not the same reader
    assert R._task_reader(f) is not first
    R._READERS.clear()
