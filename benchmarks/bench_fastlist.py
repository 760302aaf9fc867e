"""Reading fixed_size_list columns (R1 waveforms): pyarrow vs dvp.io.fastlist.

Usage: python benchmarks/bench_fastlist.py [--rows 2000] [--pixels 1855] [--samples 40]
                                           [--row-group 56] [--repeat 3]

Writes ROWS rows of LSTCam-sized noise waveforms, next to the two other per-pixel lists
R1 -> DL1 reads (``selected_gain_channel``: int8, ``time_shift_ns``: float32, PIXELS
each) and two scalar columns, in ROW_GROUP-row row groups with dvp's R1 writer options
(list columns UNCOMPRESSED / PLAIN / no dictionary / no statistics, scalars zstd), then
reads every row group with pyarrow (``ParquetFile.read_row_group``) and with
:func:`dvp.io.fastlist.read_row_group`, single-threaded (``pa.set_cpu_count(1)``), file
in the page cache. Prints the best of REPEAT passes in microseconds per row; the
``overhead`` line is the 3-list-column fast read minus one plain ``preadv`` of the same
column chunks (the copy itself), i.e. what page parsing and level checks cost.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


LIST_COLUMNS = ("waveform", "selected_gain_channel", "time_shift_ns")


def write_file(path: Path, rows: int, n_pixels: int, n_samples: int, row_group: int) -> None:
    from dvp.io.parquet import parquet_options

    rng = np.random.default_rng(1)
    list_size = n_pixels * n_samples
    schema = pa.schema([("event_id", pa.int64()), ("tel_id", pa.int16()),
                        ("waveform", pa.list_(pa.float32(), list_size)),
                        ("selected_gain_channel", pa.list_(pa.int8(), n_pixels)),
                        ("time_shift_ns", pa.list_(pa.float32(), n_pixels))])
    opts = parquet_options(schema)
    with pq.ParquetWriter(path, schema, **opts) as w:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            wf = (rng.standard_normal(n * list_size, dtype=np.float32) * 5 + 400).astype(np.float32)
            gain = (rng.random(n * n_pixels) < 0.05).astype(np.int8)
            shift = rng.uniform(-2, 2, n * n_pixels).astype(np.float32)
            t = pa.table({"event_id": pa.array(np.arange(start, start + n)),
                          "tel_id": pa.array(np.ones(n, np.int16)),
                          "waveform": pa.FixedSizeListArray.from_arrays(pa.array(wf), list_size),
                          "selected_gain_channel": pa.FixedSizeListArray.from_arrays(pa.array(gain), n_pixels),
                          "time_shift_ns": pa.FixedSizeListArray.from_arrays(pa.array(shift), n_pixels)},
                         schema=schema)
            w.write_table(t, row_group_size=n)


def raw_reader(path: Path, md, columns):
    """One ``preadv`` per column chunk into a fresh array: the floor of any reader."""
    import os

    names = [md.schema.column(j).path.split(".")[0] for j in range(md.num_columns)]
    js = [names.index(c) for c in columns]

    def read(i):
        fd = os.open(path, os.O_RDONLY)
        try:
            for j in js:
                cc = md.row_group(i).column(j)
                os.preadv(fd, [np.empty(cc.total_compressed_size, np.uint8)], cc.data_page_offset)
        finally:
            os.close(fd)
    return read


def best_pass(fn, n_groups: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n_groups):
            fn(i)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--pixels", type=int, default=1855)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--row-group", type=int, default=56)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from dvp.io.fastlist import read_fixed_size_list, read_row_group

    pa.set_cpu_count(1)
    list_size = args.pixels * args.samples
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wf.parquet"
        write_file(path, args.rows, args.pixels, args.samples, args.row_group)
        pf = pq.ParquetFile(path)
        md = pf.metadata
        n_groups = md.num_row_groups
        wf_col = pf.schema_arrow.names.index("waveform")
        cols = ["event_id", "tel_id", "waveform"]
        lists = list(LIST_COLUMNS)
        for c in (cols, lists):
            assert read_row_group(pf, path, 0, c, fast_columns=lists).equals(pf.read_row_group(0, columns=c))
        for c in lists:
            assert read_fixed_size_list(path, md, 0, c) is not None, f"fast path not taken for {c}"
        wf_chunk = md.row_group(0).column(wf_col).total_compressed_size
        mb = wf_chunk / md.row_group(0).num_rows / 1e6
        print(f"{args.rows} rows x {list_size} float32 ({mb:.3f} MB/row), {n_groups} row groups "
              f"of {args.row_group}, {wf_chunk / 2**20:.1f} MiB "
              f"and {_count_pages(path, md, wf_col)} pages per waveform chunk")
        raw = raw_reader(path, md, lists)
        cases = [
            ("pyarrow read_row_group(waveform)", lambda i: pf.read_row_group(i, columns=["waveform"])),
            ("fastlist read_row_group(waveform)", lambda i: read_row_group(pf, path, i, ["waveform"])),
            ("pyarrow read_row_group(3 columns)", lambda i: pf.read_row_group(i, columns=cols)),
            ("fastlist read_row_group(3 columns)", lambda i: read_row_group(pf, path, i, cols)),
            ("fastlist read_fixed_size_list (numpy)",
             lambda i: read_fixed_size_list(path, md, i, "waveform")),
            ("pyarrow read_row_group(3 list columns)", lambda i: pf.read_row_group(i, columns=lists)),
            ("fastlist read_row_group(3 list columns)",
             lambda i: read_row_group(pf, path, i, lists, fast_columns=lists)),
            ("raw preadv of the 3 list column chunks", raw),
        ]
        times = {}
        for name, fn in cases:
            fn(0)  # warm up (imports, page cache)
            dt = times[name] = best_pass(fn, n_groups, args.repeat)
            print(f"{name:40s} {dt / args.rows * 1e6:8.1f} us/row  "
                  f"({args.rows * mb / dt / 1e3:5.2f} GB/s of waveforms)")
        over = times["fastlist read_row_group(3 list columns)"] - times["raw preadv of the 3 list column chunks"]
        print(f"{'overhead (3 list columns - raw preadv)':40s} {over / args.rows * 1e6:8.1f} us/row")


def _count_pages(path, md, j) -> int:
    """Page count of column ``j`` in row group 0 (walks the headers, for the report)."""
    import os

    from dvp.io.fastlist import _read_struct
    cc = md.row_group(0).column(j)
    pos, end, n = cc.data_page_offset, cc.data_page_offset + cc.total_compressed_size, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while pos < end:
            hdr, hlen = _read_struct(os.pread(fd, 4096, pos), 0, 4096)
            pos += hlen + hdr[3]
            n += 1
    finally:
        os.close(fd)
    return n


if __name__ == "__main__":
    main()
