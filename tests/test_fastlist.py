"""dvp.io.fastlist: the fast fixed_size_list reader must equal pyarrow or step aside."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dvp.io import fastlist as F
from dvp.io.fastlist import read_fixed_size_list, read_row_group, read_row_groups

from .conftest import SIMTEL

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
NUMERIC_TYPES = [pa.float32(), pa.float64()] + INT_TYPES


def _values(value_type: pa.DataType, n: int, seed: int = 0) -> np.ndarray:
    """Random values covering the type's full range (extremes included)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(value_type.to_pandas_dtype())
    if dt.kind == "f":
        v = (rng.standard_normal(n) * 1e3).astype(dt)
        ext = np.array([0.0, -0.0, np.finfo(dt).max, np.finfo(dt).min, np.finfo(dt).tiny, np.inf, -np.inf], dt)
    else:
        info = np.iinfo(dt)
        v = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        ext = np.array([info.min, info.max, 0, 1], dt)
    k = min(n, ext.size)
    v[:k] = ext[:k]
    return v


def _fsl(values, list_size: int, value_type=None) -> pa.FixedSizeListArray:
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=value_type)
    return pa.FixedSizeListArray.from_arrays(values, list_size)


def _table(n_rows: int, list_size: int, value_type=pa.float32(), seed: int = 0, **extra) -> pa.Table:
    cols = {"event_id": pa.array(np.arange(n_rows, dtype=np.int64)),
            "waveform": _fsl(_values(value_type, n_rows * list_size, seed), list_size, value_type),
            "energy": pa.array(np.linspace(0, 1, n_rows))}
    cols.update(extra)
    return pa.table(cols)


def _leaves(table: pa.Table) -> dict[str, list[str]]:
    """Top-level column -> its Parquet leaf paths (``waveform`` -> ``waveform.list.element``)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table.slice(0, 0), buf)
    md = pq.ParquetFile(pa.BufferReader(buf.getvalue())).metadata
    out = {}
    for j in range(md.num_columns):
        path = md.schema.column(j).path
        out.setdefault(path.split(".")[0], []).append(path)
    return out


def _write(path, table, **opts):
    """``pq.write_table`` with per-column options keyed by top-level names.

    pyarrow matches per-column options against leaf paths and silently ignores a list
    column's top-level name, so the names are expanded here.
    """
    opts.setdefault("compression", {name: "none" if name == "waveform" else "zstd" for name in table.column_names})
    opts.setdefault("use_dictionary", False)
    leaves = _leaves(table)
    for key in ("compression", "column_encoding", "use_dictionary", "write_statistics"):
        v = opts.get(key)
        if isinstance(v, dict):
            opts[key] = {leaf: val for name, val in v.items() for leaf in leaves[name]}
        elif isinstance(v, list):
            opts[key] = [leaf for name in v for leaf in leaves[name]]
    pq.write_table(table, path, **opts)
    return path


def _arrays_equal(a: pa.Array, b: pa.Array) -> bool:
    """``a.equals(b)``, except that NaN equals NaN (real R1 data holds NaN by design)."""
    if a.type != b.type or len(a) != len(b) or a.null_count != b.null_count:
        return False
    if a.equals(b):
        return True
    if a.null_count and not a.is_null().equals(b.is_null()):
        return False
    t = a.type
    if pa.types.is_floating(t):
        return np.array_equal(a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False), equal_nan=True)
    if pa.types.is_fixed_size_list(t):
        return _arrays_equal(a.flatten(), b.flatten())
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return a.value_lengths().equals(b.value_lengths()) and _arrays_equal(a.flatten(), b.flatten())
    if pa.types.is_struct(t):
        return all(_arrays_equal(a.field(k), b.field(k)) for k in range(t.num_fields))
    return False


def _tables_equal(got: pa.Table, ref: pa.Table) -> bool:
    """Same schema (metadata included), rows and values, NaN equal to NaN."""
    return (got.schema.equals(ref.schema, check_metadata=True) and got.num_rows == ref.num_rows
            and all(_arrays_equal(got.column(k).combine_chunks(), ref.column(k).combine_chunks())
                    for k in range(got.num_columns)))


def _check(path, fast_expected: dict[str, bool], columns=None):
    """Every row group: ``read_row_group`` equals pyarrow (metadata included); the fast path
    is taken exactly for the columns ``fast_expected`` marks True and then returns pyarrow's values."""
    pf = pq.ParquetFile(path)
    for i in range(pf.metadata.num_row_groups):
        ref = pf.read_row_group(i, columns=columns)
        got = read_row_group(pf, path, i, columns, fast_columns=tuple(fast_expected))
        assert _tables_equal(got, ref), (i, got.schema, ref.schema)
        assert got.column_names == ref.column_names
        for name, fast in fast_expected.items():
            arr = read_fixed_size_list(path, pf.metadata, i, name)
            if not fast:
                assert arr is None, name
                continue
            assert arr is not None, name
            col = ref.column(name).combine_chunks()
            assert arr.shape == (len(col), col.type.list_size)
            want = col.flatten().to_numpy(zero_copy_only=False).reshape(arr.shape)
            assert arr.dtype == want.dtype
            np.testing.assert_array_equal(arr.view(f"u{arr.itemsize}"), want.view(f"u{arr.itemsize}"))
            out = got.column(name)
            assert out.num_chunks == 1 and isinstance(out.chunk(0), pa.FixedSizeListArray)
            assert out.null_count == 0 and out.type == pf.schema_arrow.field(name).type
    _check_batches(pf, path, fast_expected, columns)
    return pf


def _check_batches(pf, path, fast_expected: dict[str, bool], columns=None):
    """``read_row_groups`` (all row groups; the last and the first, in that order; with and
    without a buffer pool) equals pyarrow's ``read_row_groups``, every column in one chunk;
    and :func:`stream_fixed_size_list` feeds the same values where it can."""
    n = pf.metadata.num_row_groups
    pool = F.BufferPool()
    for idx in [list(range(n)), [n - 1, 0], [n - 1, 0]]:
        ref = pf.read_row_groups(idx, columns=columns)
        for p in (None, pool):
            got = read_row_groups(pf, path, idx, columns, fast_columns=tuple(fast_expected), pool=p)
            assert _tables_equal(got, ref), (idx, got.schema, ref.schema)
            assert got.column_names == ref.column_names
            assert all(c.num_chunks == 1 for c in got.columns)
        for name, fast in fast_expected.items():
            _check_stream(pf, path, idx, name, fast)


def _check_stream(pf, path, idx, name: str, fast: bool):
    """``stream_fixed_size_list`` in blocks of 1, 3 and more rows than there are: every
    row once, in order, blocks of the asked size, pyarrow's values bit for bit; or False
    where the fast path steps aside for a row group (and where values are stored widened:
    8/16-bit integers)."""
    field = pf.schema_arrow.field(name) if name in pf.schema_arrow.names else None
    widened = field is not None and pa.types.is_fixed_size_list(field.type) and \
        pa.types.is_integer(field.type.value_type) and field.type.value_type.bit_width < 32
    # streamed exactly where every row group reads by the fast path (and is not stored widened)
    expect_fed = not widened and all(read_fixed_size_list(path, pf.metadata, i, name) is not None for i in idx)
    assert expect_fed or not fast or widened
    buf = None
    for block_rows in (1, 3, 10**6):
        blocks = []

        def consume(first, block):
            blocks.append((first, block.copy()))

        fed, buf = F.stream_fixed_size_list(path, pf.metadata, idx, name, block_rows, consume, buf)
        assert fed == expect_fed, (name, block_rows)
        if not fed:
            continue
        col = pf.read_row_groups(idx, columns=[name]).column(0).combine_chunks()
        want = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        firsts = [f for f, _ in blocks]
        sizes = [len(b) for _, b in blocks]
        assert firsts == [sum(sizes[:k]) for k in range(len(sizes))] and sum(sizes) == len(want)
        assert all(k == block_rows for k in sizes[:-1]) and all(0 < k <= block_rows for k in sizes)
        got = np.concatenate([b for _, b in blocks]) if blocks else want[:0]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


@pytest.fixture(params=["numba", "python"])
def levels(request, monkeypatch):
    """Run the reader with the compiled level check and with its pure-Python reference."""
    monkeypatch.setattr(F, "_check_levels", F._check_levels_nb if request.param == "numba" else F._check_levels_py)
    return request.param


@pytest.fixture(params=["cached", "uncached"])
def header_cache(request, monkeypatch):
    """Page headers decoded through the cache of decoded headers, or each one afresh."""
    monkeypatch.setattr(F, "_HEADERS", {})
    monkeypatch.setattr(F, "_HEADER_LENS", [])
    if request.param == "uncached":
        monkeypatch.setattr(F, "_MAX_CACHED_HEADER", -1)
    return request.param


# --------------------------------------------------------------------------------------
# Thrift compact protocol and level streams
# --------------------------------------------------------------------------------------

def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _zz(n: int) -> bytes:
    return _uvarint((n << 1) ^ (n >> 63))


def test_thrift_compact_struct():
    buf = (bytes([0x15]) + _zz(-3)               # field 1 i32 -3 (delta 1)
           + bytes([0x16]) + _zz(2**40 + 5)       # field 2 i64
           + bytes([0x18]) + _uvarint(3) + b"abc"  # field 3 binary
           + bytes([0x05]) + _zz(200) + _zz(7)    # field 200 i32 7 (long form id)
           + bytes([0x11, 0x12])                  # fields 201 true, 202 false
           + bytes([0x1C])                        # field 203: struct
           + bytes([0x19, 0x35]) + _zz(1) + _zz(-1) + _zz(2)  # field 1: list<i32>[3]
           + bytes([0x29, 0xF8]) + _uvarint(16) + b"".join(_uvarint(1) + b"x" for _ in range(16))
           + bytes([0x00])                        # end nested struct
           + bytes([0x17]) + np.float64(2.5).tobytes()  # field 204 double
           + bytes([0x1B]) + _uvarint(1) + bytes([0x55]) + _zz(1) + _zz(2)  # field 205 map<i32,i32>
           + bytes([0x13, 0xFF])                  # field 206 byte -1
           + bytes([0x00]))
    fields, pos = F._read_struct(buf, 0, len(buf))
    assert pos == len(buf)
    assert fields == {1: -3, 2: 2**40 + 5, 3: b"abc", 200: 7, 201: True, 202: False,
                      203: {1: [1, -1, 2], 3: [b"x"] * 16}, 204: 2.5, 205: {1: 2}, 206: -1}
    for cut in range(len(buf)):  # any truncation is detected, never misread
        with pytest.raises(F._Unsupported):
            F._read_struct(buf[:cut], 0, cut)
    deep = bytes([0x1C]) * 100 + bytes(100)
    with pytest.raises(F._Unsupported):
        F._read_struct(deep, 0, len(deep))
    with pytest.raises(F._Unsupported):  # type id 14/15 do not exist
        F._read_struct(bytes([0x1E, 0]), 0, 2)


def test_level_runs():
    # RLE run of 5 x 3 (bit width 2), then one bit-packed group 0..3,0..3 whose padding is dropped
    packed = sum(v << (2 * k) for k, v in enumerate([0, 1, 2, 3, 0, 1, 2, 3])).to_bytes(2, "little")
    buf = _uvarint(5 << 1) + bytes([3]) + _uvarint((1 << 1) | 1) + packed
    runs = list(F._runs(buf, 0, len(buf), 2, 11))
    assert runs == [(0, 5, 3, None), (5, 6, 3, 1)]  # bit-packed: (start, count, offset, groups)
    assert list(F._unpack_bits(buf, 3, 1, 2)[:6]) == [0, 1, 2, 3, 0, 1]
    with pytest.raises(F._Unsupported):  # stream shorter than the levels it must hold
        list(F._runs(buf, 0, len(buf), 2, 14))
    with pytest.raises(F._Unsupported):  # an RLE run overshooting the page
        list(F._runs(buf, 0, len(buf), 2, 4))


@pytest.mark.parametrize("small_run", [F._SMALL_RUN, 0], ids=["int", "numpy"])
def test_repetition_levels(monkeypatch, small_run):
    monkeypatch.setattr(F, "_SMALL_RUN", small_run)
    # repetition levels of 3 rows of 4: 0111 0111 0111
    rep = np.array([0, 1, 1, 1] * 3, np.uint8)
    stream = _uvarint((2 << 1) | 1) + np.packbits(np.r_[rep, [0] * 4], bitorder="little").tobytes()
    assert F._count_row_starts(stream, 0, len(stream), 12, 0, 4) == 3
    with pytest.raises(F._Unsupported):  # same levels read as lists of 3
        F._count_row_starts(stream, 0, len(stream), 12, 0, 3)
    with pytest.raises(F._Unsupported):  # a row split across pages must continue at the right place
        F._count_row_starts(stream, 0, len(stream), 12, 2, 4)
    for bad in ([0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1],   # an extra row start
                [0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1]):  # a missing one
        stream = _uvarint((2 << 1) | 1) + np.packbits(np.r_[bad, [0] * 4].astype(np.uint8),
                                                       bitorder="little").tobytes()
        with pytest.raises(F._Unsupported):
            F._count_row_starts(stream, 0, len(stream), 12, 0, 4)
    ones = _uvarint(3 << 1) + bytes([1])
    assert F._count_row_starts(ones, 0, len(ones), 3, 1, 4) == 0
    with pytest.raises(F._Unsupported):  # a run of 1s over a row start
        F._count_row_starts(ones, 0, len(ones), 3, 2, 4)


def _rle_hybrid(levels, bit_width: int, rng) -> bytes:
    """An RLE / bit-packed hybrid encoding of ``levels`` with randomly chosen run kinds."""
    out, i, levels = bytearray(), 0, list(levels)
    vbytes = (bit_width + 7) // 8
    while i < len(levels):
        if rng.random() < 0.5:  # RLE run of the current value
            j = i
            while j < len(levels) and levels[j] == levels[i] and j - i < rng.integers(1, 40):
                j += 1
            out += _uvarint((j - i) << 1) + int(levels[i]).to_bytes(vbytes, "little")
            i = j
        else:  # bit-packed groups (the last one padded with junk)
            groups = int(rng.integers(1, 6))
            vals = levels[i:i + 8 * groups]
            vals = vals + list(rng.integers(0, 1 << bit_width, 8 * groups - len(vals)))
            bits = np.array([(v >> k) & 1 for v in vals for k in range(bit_width)], np.uint8)
            out += _uvarint((groups << 1) | 1) + np.packbits(bits, bitorder="little").tobytes()
            i += 8 * groups
    return bytes(out)


def _both_levels(buf, rep, dfn, def_width, n, first, list_size, max_def):
    """Compiled and reference level checks: the same rows, or both refuse."""
    results = []
    for check in (F._check_levels_nb, F._check_levels_py):
        try:
            results.append(check(buf, rep, dfn, def_width, n, first, list_size, max_def))
        except F._Unsupported:
            results.append(None)
    assert results[0] == results[1], (results, bytes(buf).hex(), rep, dfn, def_width, n, first, list_size, max_def)
    return results[0]


@pytest.mark.parametrize("seed", range(40))
def test_levels_numba_equals_reference(seed):
    """Random valid and damaged level streams: numba and Python agree on every one."""
    rng = np.random.default_rng(seed)
    list_size = int(rng.choice([1, 2, 3, 7, 8, 9, 16, 37, 100]))
    max_def = int(rng.choice([1, 2, 3, 7]))
    def_width = max_def.bit_length()
    first = int(rng.integers(0, 3 * list_size))
    n = int(rng.integers(1, 400))
    rep_levels = [0 if (first + k) % list_size == 0 else 1 for k in range(n)]
    def_levels = [max_def] * n
    rep = _rle_hybrid(rep_levels, 1, rng)
    dfn = _rle_hybrid(def_levels, def_width, rng)
    buf = rep + dfn
    spans = ((0, len(rep)), (len(rep), len(buf)))
    want = sum(1 for v in rep_levels if v == 0)
    assert _both_levels(buf, *spans, def_width, n, first, list_size, max_def) == want
    _both_levels(buf, *spans, def_width, n - 1, first, list_size, max_def)  # a prefix (an RLE run may overshoot)
    for args in ((n + 1, first, list_size, max_def), (n, first + 1, list_size, max_def),
                 (n, first, list_size + 1, max_def), (n, first, list_size, max_def - 1)):
        _both_levels(buf, *spans, def_width, *args)
    for _ in range(300):  # damaged bytes, truncated streams
        d = bytearray(buf)
        for _ in range(int(rng.integers(1, 4))):
            d[int(rng.integers(len(d)))] ^= int(rng.integers(1, 256))
        _both_levels(d, *spans, def_width, n, first, list_size, max_def)
        cut = int(rng.integers(0, len(buf)))
        _both_levels(buf[:cut], (0, min(cut, len(rep))), (min(cut, len(rep)), cut), def_width, n, first,
                     list_size, max_def)
    for _ in range(100):  # random bytes
        d = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        k = int(rng.integers(0, len(d) + 1))
        _both_levels(d, (0, k), (k, len(d)), def_width, int(rng.integers(1, 200)), first, list_size, max_def)


def test_levels_numba_edge_cases():
    one = _uvarint(1 << 1) + bytes([0])  # a single row start
    ones = _uvarint(8 << 1) + bytes([1])
    dfn = _uvarint(9 << 1) + bytes([1])
    buf = one + ones + dfn
    spans = ((0, len(one) + len(ones)), (len(one) + len(ones), len(buf)))
    assert _both_levels(buf, *spans, 1, 9, 0, 9, 1) == 1
    assert _both_levels(buf, *spans, 1, 9, 0, 8, 1) is None  # row start missing at 8
    huge = bytes([0xFF] * 9 + [0x01]) + bytes(8)  # a 10-byte run header
    assert _both_levels(huge, (0, len(huge)), (0, 0), 1, 5, 0, 5, 1) is None
    zero_runs = _uvarint(0) + bytes([5]) + one  # an empty RLE run of any value is ignored
    assert _both_levels(zero_runs + dfn[:0] + _uvarint(1 << 1) + bytes([1]), (0, len(zero_runs)),
                        (len(zero_runs), len(zero_runs) + 2), 1, 1, 0, 4, 1) == 1
    with pytest.raises(F._Unsupported):  # out of the compiled integer range: refused, not wrapped
        F._check_levels_nb(buf, *spans, 1, 9, 2**62, 9, 1)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8, np.uint16])
def test_narrow(dtype):
    info = np.iinfo(dtype)
    src = np.array([info.min, info.max, 0, 1, info.max - 1], np.int32)
    dst = np.empty(src.size, dtype)
    assert F._narrow_nb(src, dst, info.min, info.max)
    np.testing.assert_array_equal(dst, src.astype(dtype))
    for bad in (int(info.min) - 1, int(info.max) + 1, -2**31, 2**31 - 1):
        s = src.copy()
        s[2] = bad
        assert not F._narrow_nb(s, dst, info.min, info.max)
    assert F._narrow_nb(src[:0], dst[:0], info.min, info.max)


def test_int8_out_of_range_on_disk(tmp_path):
    """An INT32 value outside the declared int8 range: refused (never wrapped)."""
    n = 8
    t = pa.table({"gains": _fsl(pa.array(np.arange(n * 5) % 2, pa.int8()), 5)})
    good = _write(tmp_path / "good.parquet", t, compression="none")
    pf = pq.ParquetFile(good)
    assert read_fixed_size_list(good, pf.metadata, 0, "gains") is not None
    _, _, lend = _page_spans(good, pf, 0)[0]
    data = bytearray(open(good, "rb").read())
    assert data[lend:lend + 4] == bytes(4)  # the first value, 0 as a little-endian INT32
    for patch in (b"\x80\x00", b"\x00\x01", b"\xff\xff"):  # 128, 256, 65535
        d = bytearray(data)
        d[lend:lend + 2] = patch
        bad = tmp_path / "bad.parquet"
        bad.write_bytes(d)
        assert read_fixed_size_list(bad, pf.metadata, 0, "gains") is None


def test_header_cache_reuse(tmp_path, header_cache):
    """Identical page headers (same size, no statistics) are decoded once, then reused."""
    t = _table(30, 200, pa.float32())
    path = _write(tmp_path / "t.parquet", t, data_page_size=2000, write_statistics=False, row_group_size=10)
    pf = _check(path, {"waveform": True})
    _check(path, {"waveform": True})
    if header_cache == "cached":
        assert 0 < len(F._HEADERS) < 3 * len(_page_spans(path, pf))
    else:
        assert not F._HEADERS


# --------------------------------------------------------------------------------------
# Fast path: types, list sizes, rows, pages, row groups
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value_type", NUMERIC_TYPES, ids=str)
@pytest.mark.parametrize("list_size", [1, 2, 7, 8, 9, 100, 1855])
@pytest.mark.parametrize("n_rows", [0, 1, 56])
def test_types_sizes_rows(tmp_path, value_type, list_size, n_rows):
    t = _table(n_rows, list_size, value_type, seed=list_size)
    # small pages and row groups: rows split across pages, several row groups
    path = _write(tmp_path / "t.parquet", t, data_page_size=700, row_group_size=20)
    _check(path, {"waveform": True, "event_id": False})
    _check(path, {"waveform": True}, columns=["energy", "waveform", "event_id"])


@pytest.mark.parametrize("small_run", [F._SMALL_RUN, 0], ids=["int", "numpy"])
def test_short_lists_many_rows(tmp_path, monkeypatch, levels, small_run):
    """Bit-packed repetition levels (lists of 3), checked by either branch (pyarrow's
    literal runs hold at most 512 levels, so only other writers reach the numpy one)."""
    monkeypatch.setattr(F, "_SMALL_RUN", small_run)
    path = _write(tmp_path / "t.parquet", _table(5000, 3, pa.uint16()), row_group_size=3000)
    _check(path, {"waveform": True})


@pytest.mark.parametrize("n_rows", [0, 1, 56])
def test_lstcam_size(tmp_path, n_rows):
    path = _write(tmp_path / "t.parquet", _table(n_rows, 1855 * 40), row_group_size=25)
    pf = _check(path, {"waveform": True})
    assert pf.metadata.num_row_groups == max(1, -(-n_rows // 25))


@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("page_size", [1, 100, 4096, 1 << 20])
@pytest.mark.parametrize("list_size,value_type", [(3, pa.uint16()), (100, pa.float64()),
                                                  (74200, pa.float32()), (1000, pa.int16())], ids=str)
def test_page_layouts(tmp_path, version, page_size, list_size, value_type):
    n_rows = 7 if list_size > 10000 else 56
    t = _table(n_rows, list_size, value_type)
    path = _write(tmp_path / "t.parquet", t, data_page_size=page_size, data_page_version=version,
                  write_batch_size=97, row_group_size=30)
    _check(path, {"waveform": True})


@pytest.mark.parametrize("opts", [dict(write_page_checksum=True), dict(write_page_index=True),
                                  dict(write_statistics=False), dict(write_statistics=["waveform"]),
                                  dict(column_encoding={"waveform": "PLAIN"})],
                         ids=["crc", "page-index", "no-stats", "stats", "explicit-plain"])
def test_writer_options(tmp_path, opts):
    """Optional header fields (CRC, statistics) and side structures do not disturb the fast path."""
    path = _write(tmp_path / "t.parquet", _table(40, 333, pa.float32()), data_page_size=3000, **opts)
    _check(path, {"waveform": True})


def test_nan_payloads_bit_exact(tmp_path):
    # quiet/negative/payload NaNs, signalling NaN, inf, -0.0, 1.5: copied bit for bit
    v = np.array([0x7FC00000, 0xFFC00000, 0x7FC00123, 0xFFFFFFFF, 0x7F800001, 0x7F800000, 0x80000000,
                  0x3FC00000], np.uint32)
    path = _write(tmp_path / "t.parquet", pa.table({"waveform": _fsl(v.view(np.float32), 4)}))
    arr = read_fixed_size_list(path, pq.ParquetFile(path).metadata, 0, "waveform")
    np.testing.assert_array_equal(arr.reshape(-1).view(np.uint32), v)


def test_per_column_codecs_and_column_selection(tmp_path):
    """Waveform uncompressed and other list columns zstd: fast for one, pyarrow for the others."""
    n = 56
    t = _table(n, 500, pa.float32(),
               gains=_fsl(np.arange(n * 7, dtype=np.int8) % 2, 7),
               image=_fsl(np.arange(n * 9, dtype=np.int32), 9),
               status=_fsl(np.arange(n * 5, dtype=np.uint8), 5))
    path = _write(tmp_path / "t.parquet", t, row_group_size=20,
                  compression={"event_id": "zstd", "waveform": "none", "energy": "snappy",
                               "gains": "none", "image": "zstd", "status": "gzip"})
    md = pq.ParquetFile(path).metadata
    assert [md.row_group(0).column(j).compression for j in range(md.num_columns)] == \
        ["ZSTD", "UNCOMPRESSED", "SNAPPY", "UNCOMPRESSED", "ZSTD", "GZIP"]
    fast = {"waveform": True, "gains": True, "image": False, "status": False}
    _check(path, fast)
    _check(path, fast, columns=["status", "waveform", "energy", "gains", "image"])
    pf = pq.ParquetFile(path)
    # pyarrow's selection rules: order kept, duplicates dropped, unknown names ignored
    for cols in (["waveform", "waveform", "event_id"], ["waveform", "nope"], [], ["waveform"]):
        assert read_row_group(pf, path, 1, cols).equals(pf.read_row_group(1, columns=cols), check_metadata=True)
    assert read_row_group(pf, path, 0, None, fast_columns=()).equals(pf.read_row_group(0))
    with pytest.raises(IndexError):
        read_fixed_size_list(path, pf.metadata, 3, "waveform")


def test_result_is_zero_copy_numpy(tmp_path):
    path = _write(tmp_path / "t.parquet", _table(5, 6, pa.float32()))
    pf = pq.ParquetFile(path)
    col = read_row_group(pf, path, 0, ["waveform"]).column("waveform").chunk(0)
    flat = col.flatten().to_numpy(zero_copy_only=True)
    assert flat.shape == (30,) and flat.dtype == np.float32


# --------------------------------------------------------------------------------------
# Fallbacks: pyarrow must answer, the fast path must say None
# --------------------------------------------------------------------------------------

def _fallback_case(tmp_path, name):
    n, size = 30, 50
    base = _values(pa.float32(), n * size)
    if name == "zstd":
        return _write(tmp_path / "f.parquet", _table(n, size), compression="zstd")
    if name == "snappy":
        return _write(tmp_path / "f.parquet", _table(n, size), compression="snappy")
    if name == "dictionary":
        t = _table(n, size, waveform=_fsl((np.arange(n * size) % 3).astype(np.float32), size))
        return _write(tmp_path / "f.parquet", t, use_dictionary=True)
    if name == "null-row":
        wf = pa.FixedSizeListArray.from_arrays(pa.array(base), size,
                                               mask=pa.array(np.arange(n) == 17))
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=wf))
    if name == "null-element":
        wf = _fsl(pa.array(base, mask=np.arange(n * size) == 333), size)
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=wf))
    if name == "bool":
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=_fsl(base > 0, size)))
    if name == "float16":
        half = np.clip(base, -6e4, 6e4).astype(np.float16)
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=_fsl(half, size)))
    if name == "byte-stream-split":
        return _write(tmp_path / "f.parquet", _table(n, size), column_encoding={"waveform": "BYTE_STREAM_SPLIT"})
    if name == "delta-binary-packed":
        t = _table(n, size, waveform=_fsl(np.arange(n * size, dtype=np.int32), size))
        return _write(tmp_path / "f.parquet", t, column_encoding={"waveform": "DELTA_BINARY_PACKED"})
    if name == "variable-list":
        wf = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * size), pa.array(base))
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=wf))
    if name == "no-arrow-schema":  # without ARROW:schema the column reads back as list<float>
        return _write(tmp_path / "f.parquet", _table(n, size), store_schema=False)
    if name == "nested-fixed-list":
        wf = pa.FixedSizeListArray.from_arrays(_fsl(base, 5), 10)
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=wf))
    if name == "struct":
        wf = pa.StructArray.from_arrays([_fsl(base, size)], ["list"])
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=wf))
    if name == "scalar":
        return _write(tmp_path / "f.parquet", _table(n, size, waveform=pa.array(base[:n])))
    if name == "non-compliant-names":  # list.item instead of list.element: still the simple layout
        return _write(tmp_path / "f.parquet", _table(n, size), use_compliant_nested_type=False)
    raise AssertionError(name)


FALLBACKS = ["zstd", "snappy", "dictionary", "null-row", "null-element", "bool", "float16",
             "byte-stream-split", "delta-binary-packed", "variable-list", "no-arrow-schema",
             "nested-fixed-list", "struct", "scalar"]


# what each case must look like on disk (pyarrow silently ignores options it cannot match)
LAYOUT = {
    "zstd": lambda cc: cc.compression == "ZSTD",
    "snappy": lambda cc: cc.compression == "SNAPPY",
    "dictionary": lambda cc: cc.dictionary_page_offset is not None,
    "byte-stream-split": lambda cc: "BYTE_STREAM_SPLIT" in cc.encodings,
    "delta-binary-packed": lambda cc: "DELTA_BINARY_PACKED" in cc.encodings,
    "bool": lambda cc: cc.physical_type == "BOOLEAN",
    "float16": lambda cc: cc.physical_type == "FIXED_LEN_BYTE_ARRAY",
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_fallback(tmp_path, name):
    path = _fallback_case(tmp_path, name)
    cc = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert cc.path_in_schema.startswith("waveform")
    assert LAYOUT.get(name, lambda cc: True)(cc), cc
    pf = _check(path, {"waveform": False, "event_id": False, "energy": False})
    _check(path, {"waveform": False}, columns=["energy", "waveform"])
    assert read_fixed_size_list(path, pf.metadata, 0, "missing") is None


def test_item_named_lists(tmp_path):
    """``use_compliant_nested_type=False`` names the leaf ``list.item``: the same simple layout."""
    path = _fallback_case(tmp_path, "non-compliant-names")
    pf = pq.ParquetFile(path)
    arr = read_fixed_size_list(path, pf.metadata, 0, "waveform")
    assert arr is not None  # same layout, only the leaf name differs
    _check(path, {"waveform": True})


# --------------------------------------------------------------------------------------
# Damaged files: never wrong data
# --------------------------------------------------------------------------------------

def _page_spans(path, pf, j=1):
    """(header start, header end, level streams end) of every page of column ``j``, row group 0."""
    cc = pf.metadata.row_group(0).column(j)
    data = open(path, "rb").read()
    pos, end, spans = cc.data_page_offset, cc.data_page_offset + cc.total_compressed_size, []
    while pos < end:
        hdr, body = F._read_struct(data, pos, len(data))
        if hdr[1] == 0:  # v1: <u32 len><rep levels><u32 len><def levels>
            rep_len = int.from_bytes(data[body:body + 4], "little")
            def_len = int.from_bytes(data[body + 4 + rep_len:body + 8 + rep_len], "little")
            levels = 8 + rep_len + def_len
        else:  # v2: lengths in the header
            levels = hdr[8][5] + hdr[8][6]
        spans.append((pos, body, body + levels))
        pos = body + hdr[3]
    return spans


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_corrupted_headers_and_levels(tmp_path, version, levels, header_cache):
    """Flip every bit pattern of every page header byte (and the level bytes): the fast
    path returns None or exactly the original values, never anything else."""
    t = _table(12, 37, pa.float32())
    good = _write(tmp_path / "good.parquet", t, data_page_size=500, write_batch_size=50,
                  data_page_version=version)
    pf = pq.ParquetFile(good)
    want = read_fixed_size_list(good, pf.metadata, 0, "waveform")
    assert want is not None
    spans = _page_spans(good, pf)
    assert len(spans) >= 3
    data = bytearray(open(good, "rb").read())
    bad = tmp_path / "bad.parquet"
    seen_none = 0
    for start, _, lend in spans[:2] + spans[-1:]:
        for k in range(start, lend):  # header, then level streams (and v1 their lengths)
            for mask in (0x01, 0x10, 0x80, 0xFF):
                d = bytearray(data)
                d[k] ^= mask
                bad.write_bytes(d)
                got = read_fixed_size_list(bad, pf.metadata, 0, "waveform")
                if got is None:
                    seen_none += 1
                else:
                    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (k, mask)
    assert seen_none > 100


def test_corrupted_file_via_read_row_group(tmp_path):
    """A damaged page header: read_row_group raises (pyarrow's error) or gives the right table."""
    t = _table(12, 37, pa.float32())
    good = _write(tmp_path / "good.parquet", t, data_page_size=500)
    pf = pq.ParquetFile(good)
    start, hend, _ = _page_spans(good, pf)[1]
    data = bytearray(open(good, "rb").read())
    data[start:hend] = b"\xff" * (hend - start)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data)
    assert read_fixed_size_list(bad, pf.metadata, 0, "waveform") is None
    try:
        got = read_row_group(pq.ParquetFile(bad), bad, 0, ["waveform"])
    except (OSError, pa.ArrowException):
        return
    assert got.equals(pq.ParquetFile(good).read_row_group(0, columns=["waveform"]))


def test_metadata_of_another_file(tmp_path):
    """Offsets are only trusted for the file the metadata came from (footer length checked)."""
    a = _write(tmp_path / "a.parquet", _table(20, 100, pa.float32(), seed=1))
    b = _write(tmp_path / "b.parquet", _table(21, 100, pa.float32(), seed=2))
    assert read_fixed_size_list(b, pq.ParquetFile(a).metadata, 0, "waveform") is None
    pf = pq.ParquetFile(a)
    assert read_row_group(pf, b, 0, ["waveform"]).equals(pf.read_row_group(0, columns=["waveform"]))


@pytest.mark.parametrize("check_footer", [True, False])
def test_truncated_file(tmp_path, monkeypatch, check_footer):
    """A file cut inside the column chunk: caught by the footer check, or else by the short read."""
    if not check_footer:
        monkeypatch.setattr(F, "_check_footer", lambda fd, md: None)
    good = _write(tmp_path / "good.parquet", _table(20, 100, pa.float32()))
    pf = pq.ParquetFile(good)
    cc = pf.metadata.row_group(0).column(1)
    bad = tmp_path / "bad.parquet"
    shutil.copy(good, bad)
    os.truncate(bad, cc.data_page_offset + cc.total_compressed_size // 2)
    assert read_fixed_size_list(bad, pf.metadata, 0, "waveform") is None
    with pytest.raises(FileNotFoundError):
        read_fixed_size_list(tmp_path / "missing.parquet", pf.metadata, 0, "waveform")


# --------------------------------------------------------------------------------------
# Real dvp R1 output
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def r1_product(tmp_path_factory):
    from dvp.runner import simtel_to_r1

    out = tmp_path_factory.mktemp("fastlist") / "lst_muons"
    simtel_to_r1([SIMTEL / "lst_muons.simtel.zst"], out)
    return out


def _list_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]


def test_dvp_r1_output(r1_product):
    """Every file and row group of a real product, all fixed-size-list columns offered to the fast path."""
    files = sorted(r1_product.rglob("*.parquet"))
    assert any("r1" in f.parts for f in files)
    for f in files:
        pf = pq.ParquetFile(f)
        lists = _list_columns(pf.schema_arrow)
        for i in range(pf.metadata.num_row_groups):
            got = read_row_group(pf, f, i, None, fast_columns=lists + ["obs_id"])
            assert _tables_equal(got, pf.read_row_group(i)), f
        if "waveform" in pf.schema_arrow.names:
            j = pf.schema_arrow.names.index("waveform")
            stored_plain = pf.metadata.row_group(0).column(j).compression == "UNCOMPRESSED"
            assert (read_fixed_size_list(f, pf.metadata, 0, "waveform") is not None) == stored_plain


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_dvp_r1_rewritten(r1_product, tmp_path, codec):
    """The real R1 table rewritten with the list columns ``codec``, small pages, several row groups."""
    src = next((r1_product / "r1").rglob("*.parquet"))
    t = pq.read_table(src)
    lists = _list_columns(t.schema)
    assert "waveform" in lists
    path = tmp_path / "r1.parquet"
    _write(path, t, compression={c: codec if c in lists else "zstd" for c in t.column_names},
           row_group_size=11, data_page_size=200_000)
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 3
    has_nulls = {c for c in lists if t.column(c).null_count or _has_null_values(t.column(c))}
    expect = {c: codec == "none" and c not in has_nulls and t.schema.field(c).type.value_type != pa.bool_()
              for c in lists}
    assert expect["waveform"] == (codec == "none")
    _check(path, expect)


def _has_null_values(col: pa.ChunkedArray) -> bool:
    return any(chunk.flatten().null_count for chunk in col.chunks)


# --------------------------------------------------------------------------------------
# Several row groups in one batch, buffer reuse
# --------------------------------------------------------------------------------------

def _fast_address(table: pa.Table, name: str) -> int:
    return table.column(name).chunk(0).values.buffers()[1].address


def test_read_row_groups_one_buffer(tmp_path):
    """The fast columns of several row groups land in one contiguous array (zero-copy into
    Arrow), 8-bit integers narrowed like a single row group's."""
    n, size = 40, 50
    gain = _fsl(_values(pa.int8(), n * size, seed=3), size, pa.int8())
    path = _write(tmp_path / "f.parquet", _table(n, size, gain=gain), row_group_size=7,
                  compression={"event_id": "zstd", "waveform": "none", "energy": "zstd", "gain": "none"})
    pf = _check(path, {"waveform": True, "gain": True, "event_id": False})
    got = read_row_groups(pf, path, [1, 2, 3], ["gain", "waveform"], fast_columns=("waveform", "gain"))
    flat = got.column("waveform").chunk(0).flatten().to_numpy(zero_copy_only=True)
    assert flat.size == 21 * size and flat.base is not None
    with pytest.raises(ValueError):
        read_row_groups(pf, path, [], ["waveform"])
    with pytest.raises(IndexError):
        read_row_groups(pf, path, [0, 99], ["waveform"])


@pytest.mark.parametrize("name", ["zstd", "null-row", "variable-list"])
def test_read_row_groups_fallback(tmp_path, name):
    """A layout the fast path does not take: pyarrow's batch, each column combined into one chunk."""
    path = _fallback_case(tmp_path, name)
    t = pq.read_table(path)
    _write(tmp_path / "g.parquet", t, row_group_size=9)
    _check_batches(pq.ParquetFile(tmp_path / "g.parquet"), tmp_path / "g.parquet", {"waveform": False})


def test_read_row_groups_mixed_layouts(tmp_path):
    """One row group not in the simple layout (a null list) sends the whole column of the
    batch to pyarrow: same values."""
    n, size = 30, 20
    base = _values(pa.float32(), n * size)
    wf = pa.FixedSizeListArray.from_arrays(pa.array(base), size, mask=pa.array(np.arange(n) == 25))
    path = _write(tmp_path / "f.parquet", _table(n, size, waveform=wf), row_group_size=10)
    pf = pq.ParquetFile(path)
    assert read_fixed_size_list(path, pf.metadata, 0, "waveform") is not None   # clean row group
    assert read_fixed_size_list(path, pf.metadata, 2, "waveform") is None       # the null row
    _check_batches(pf, path, {"waveform": False})


def test_buffer_pool_reuses_only_free_buffers(tmp_path):
    """A pool's buffer is refilled only after every table made from it is gone: a batch
    still held keeps its values."""
    n, size = 40, 50
    gain = _fsl(_values(pa.int8(), n * size, seed=1), size, pa.int8())
    path = _write(tmp_path / "f.parquet", _table(n, size, gain=gain), row_group_size=10,
                  compression={"event_id": "zstd", "waveform": "none", "energy": "zstd", "gain": "none"})
    pf = pq.ParquetFile(path)
    cols = ["waveform", "gain"]
    fast = ("waveform", "gain")
    pool = F.BufferPool()

    def ref(idx):
        return pf.read_row_groups(idx, columns=cols)

    a = read_row_groups(pf, path, [0, 1], cols, fast, pool=pool)
    b = read_row_groups(pf, path, [2, 3], cols, fast, pool=pool)   # ``a`` alive: new buffers
    assert _tables_equal(a, ref([0, 1])) and _tables_equal(b, ref([2, 3]))
    assert _fast_address(a, "waveform") != _fast_address(b, "waveform")
    addr = {c: _fast_address(b, c) for c in cols}
    del a, b
    c = read_row_groups(pf, path, [1, 2], cols, fast, pool=pool)   # nothing alive: reused
    assert {k: _fast_address(c, k) for k in cols} == addr
    assert _tables_equal(c, ref([1, 2]))
    view = c.column("waveform").chunk(0).flatten().to_numpy(zero_copy_only=True)   # a numpy view
    del c
    d = read_row_groups(pf, path, [3], cols, fast, pool=pool)      # the view holds the buffer
    assert _fast_address(d, "waveform") != addr["waveform"]
    np.testing.assert_array_equal(view, ref([1, 2]).column("waveform").combine_chunks().flatten().to_numpy())
    assert _tables_equal(d, ref([3]))


# --------------------------------------------------------------------------------------
# Streaming in blocks
# --------------------------------------------------------------------------------------

def test_stream_reuses_one_buffer_and_propagates_consumer_errors(tmp_path):
    """Blocks are views of one buffer (reused across calls when passed back); the consumer's
    own exceptions come out unchanged, even those the reader would treat as damage; a row
    group out of range is an IndexError before anything is fed."""
    path = _write(tmp_path / "f.parquet", _table(20, 30), row_group_size=6, data_page_size=100)
    pf = pq.ParquetFile(path)
    bases = set()

    def keep_base(first, block):
        bases.add(block.base.ctypes.data if block.base is not None else block.ctypes.data)

    fed, buf = F.stream_fixed_size_list(path, pf.metadata, range(4), "waveform", 4, keep_base)
    assert fed and buf is not None and buf.size == 4 * 30 and len(bases) == 1
    fed, buf2 = F.stream_fixed_size_list(path, pf.metadata, range(4), "waveform", 4, keep_base, buf)
    assert fed and buf2 is buf and len(bases) == 1

    class Stop(ValueError):
        pass

    def fail(first, block):
        if first >= 8:
            raise Stop("consumer")

    with pytest.raises(Stop, match="consumer"):
        F.stream_fixed_size_list(path, pf.metadata, range(4), "waveform", 4, fail)
    seen = []
    with pytest.raises(IndexError):
        F.stream_fixed_size_list(path, pf.metadata, [0, 9], "waveform", 4, lambda f, b: seen.append(f))
    assert seen == []
