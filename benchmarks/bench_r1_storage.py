"""R1 Parquet storage choices, measured: codec, byte-stream-split, row-group size.

Usage: python benchmarks/bench_r1_storage.py [R1_PARQUET_FILE] [--copies N]

Replicates the real LSTCam waveforms of lst_muons (30 events) to N copies, writes them
with each option and reports file size relative to raw float32, write MB/s, and full
read MB/s (row group -> zero-copy (n_events, n_pixels, n_samples) numpy view).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--copies", type=int, default=20)
    args = ap.parse_args()
    from dvp.io.parquet import waveforms_view

    with tempfile.TemporaryDirectory() as tmp:
        if args.file is None:
            from dvp.runner import simtel_to_r1
            simtel_to_r1([ROOT.parent / "shared/data/simtel/lst_muons.simtel.zst"], Path(tmp) / "p")
            args.file = next((Path(tmp) / "p" / "r1").rglob("*.parquet"))
        base = pq.read_table(args.file)
        t = pa.concat_tables([base] * args.copies).combine_chunks()
        raw_mb = t.column("waveform").chunk(0).flatten().nbytes / 1e6
        floats = ["waveform", "true_image_sum_pe", "true_impact_distance_m", "pointing_alt_deg",
                  "pointing_az_deg", "trigger_time_ns"]
        options = [("none", None, False), ("snappy", None, False), ("lz4", None, False),
                   ("zstd", 1, False), ("zstd", 1, True), ("zstd", 3, True), ("zstd", 9, True), ("lz4", None, True)]
        print(f"{t.num_rows} LSTCam events, {raw_mb:.1f} MB raw float32 waveforms")
        print(f"{'codec':8s} {'lvl':>3s} {'bss':>3s} {'rg':>5s} {'size/raw':>8s} {'write MB/s':>10s} {'read MB/s':>9s}")
        for codec, level, bss in options:
            for rg in (64, 256):
                f = Path(tmp) / f"{codec}{level}{bss}{rg}.parquet"
                t0 = time.perf_counter()
                pq.write_table(t, f, compression=codec, compression_level=level, row_group_size=rg,
                               use_byte_stream_split=floats if bss else False, use_dictionary=False)
                tw = time.perf_counter() - t0
                t0 = time.perf_counter()
                pf = pq.ParquetFile(f)
                total = 0.0
                for i in range(pf.num_row_groups):
                    total += float(waveforms_view(pf.read_row_group(i, columns=["waveform", "n_pixels", "n_samples"]))[:, 0, 0].sum())
                tr = time.perf_counter() - t0
                print(f"{codec:8s} {str(level or ''):>3s} {'y' if bss else 'n':>3s} {rg:5d} "
                      f"{f.stat().st_size / 1e6 / raw_mb:8.3f} {raw_mb / tw:10.0f} {raw_mb / tr:9.0f}")


if __name__ == "__main__":
    main()
