"""Reading a fixed_size_list<float32> waveform column: pyarrow vs dvp.io.fastlist.

Usage: python benchmarks/bench_fastlist.py [--rows 2000] [--pixels 1855] [--samples 40]
                                           [--row-group 56] [--repeat 3]

Writes ROWS rows of LSTCam-sized noise waveforms (plus two scalar columns) in
ROW_GROUP-row row groups, waveform column UNCOMPRESSED / PLAIN / no dictionary
(scalars zstd), then reads every row group with pyarrow
(``ParquetFile.read_row_group``) and with :func:`dvp.io.fastlist.read_row_group`,
single-threaded (``pa.set_cpu_count(1)``), file in the page cache. Prints the best
of REPEAT passes in microseconds per row.
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


def write_file(path: Path, rows: int, list_size: int, row_group: int) -> None:
    rng = np.random.default_rng(1)
    schema = pa.schema([("event_id", pa.int64()), ("tel_id", pa.int16()),
                        ("waveform", pa.list_(pa.float32(), list_size))])
    opts = dict(compression={"event_id": "zstd", "tel_id": "zstd", "waveform": "none"},
                use_dictionary=False, write_statistics=True)
    with pq.ParquetWriter(path, schema, **opts) as w:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            wf = (rng.standard_normal(n * list_size, dtype=np.float32) * 5 + 400).astype(np.float32)
            t = pa.table({"event_id": pa.array(np.arange(start, start + n)),
                          "tel_id": pa.array(np.ones(n, np.int16)),
                          "waveform": pa.FixedSizeListArray.from_arrays(pa.array(wf), list_size)},
                         schema=schema)
            w.write_table(t, row_group_size=n)


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
        write_file(path, args.rows, list_size, args.row_group)
        pf = pq.ParquetFile(path)
        md = pf.metadata
        n_groups = md.num_row_groups
        cols = ["event_id", "tel_id", "waveform"]
        assert read_row_group(pf, path, 0, cols).equals(pf.read_row_group(0, columns=cols))
        assert read_fixed_size_list(path, md, 0, "waveform") is not None, "fast path not taken"
        mb = md.row_group(0).column(2).total_compressed_size / md.row_group(0).num_rows / 1e6
        print(f"{args.rows} rows x {list_size} float32 ({mb:.3f} MB/row), {n_groups} row groups "
              f"of {args.row_group}, {md.row_group(0).column(2).total_compressed_size / 2**20:.1f} MiB "
              f"and {_count_pages(path, md, 2)} pages per waveform chunk")
        cases = [
            ("pyarrow read_row_group(waveform)", lambda i: pf.read_row_group(i, columns=["waveform"])),
            ("fastlist read_row_group(waveform)", lambda i: read_row_group(pf, path, i, ["waveform"])),
            ("pyarrow read_row_group(3 columns)", lambda i: pf.read_row_group(i, columns=cols)),
            ("fastlist read_row_group(3 columns)", lambda i: read_row_group(pf, path, i, cols)),
            ("fastlist read_fixed_size_list (numpy)",
             lambda i: read_fixed_size_list(path, md, i, "waveform")),
        ]
        for name, fn in cases:
            fn(0)  # warm up (imports, page cache)
            dt = best_pass(fn, n_groups, args.repeat)
            print(f"{name:40s} {dt / args.rows * 1e6:8.1f} us/row  "
                  f"({args.rows * mb / dt / 1e3:5.2f} GB/s)")


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
