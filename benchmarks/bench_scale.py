"""r1-to-dl1 at scale: 1 vs N local workers, Dask LocalCluster, and per-input overhead.

Usage: python benchmarks/bench_scale.py [--showers N] [--tiny 1000] [--workers 2]

1. Scaling: an R1 product of toy gammas (``--showers`` bright showers × 10 uses) and
   ``--copies`` hard links of it (so that the work grows while the data stay in the page
   cache: on this VM the disk, not the CPU, limits larger sets), processed with one
   worker, N local processes and a Dask LocalCluster of N workers (start-up included);
   wall time, telescope events/s, and whether the outputs are identical.
2. Per-input overhead: ``--tiny`` copies (hard links) of a tiny R1 product (a few
   events each) processed in one run with one worker: seconds per input product
   beyond the event processing itself.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from dvp.runner import r1_to_dl1, simulate  # noqa: E402


def content(product):
    out = {}
    for f in sorted(Path(product).rglob("*.parquet")):
        t = pq.read_table(f).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out[str(f.relative_to(product))] = sink.getvalue().to_pybytes()
    return out


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--showers", type=int, default=60)
    ap.add_argument("--tiny", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copies", type=int, default=12,
                    help="hard-linked copies of the R1 product in the scaling runs (more work, same page cache)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="dvp-bench-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        r1 = tmp / "r1"
        if not r1.exists():
            simulate("gamma", args.showers, r1, energy_range=(1.0, 10.0), scatter_radius_m=150.0, reuse=10, seed=1)
        r1_to_dl1([r1], tmp / "warm", workers=1, task_row_groups=1000, overwrite=True)   # numba caches compiled
        inputs = [r1]
        for i in range(1, args.copies):
            c = tmp / f"r1-copy{i}"
            if not c.exists():
                shutil.copytree(r1, c, copy_function=os.link)
            inputs.append(c)
        n_rg = sum(pq.ParquetFile(f).num_row_groups for f in (r1 / "r1").rglob("*.parquet"))
        print(f"R1: {sum(f.stat().st_size for f in r1.rglob('*.parquet')) / 1e9:.2f} GB, {n_rg} row groups, "
              f"{len(inputs)} hard-linked copies in the scaling runs (read from the page cache)")
        ref = None
        print("\n| executor | wall s | tel events/s | speed-up | identical output |")
        print("| --- | --- | --- | --- | --- |")
        base = None
        runs = [("1 worker (in process)", dict(workers=1)), (f"{args.workers} local processes", dict(workers=args.workers)),
                (f"Dask LocalCluster, {args.workers} workers", dict(scheduler="local", workers=args.workers))]
        for label, kw in runs:
            out = tmp / f"out-{label.split()[0]}-{kw.get('scheduler', 'pool')}"
            shutil.rmtree(out, ignore_errors=True)
            s, dt = timed(lambda: r1_to_dl1(inputs, out, task_row_groups=8, **kw))
            n = sum(s.n_tel_events.values())
            c = content(out)
            ref = ref or c
            base = base or dt
            print(f"| {label} | {dt:.1f} | {n / dt:,.0f} | {base / dt:.2f}x | {c == ref} |")
        # per-input overhead: many tiny products
        tiny = tmp / "tiny"
        if not tiny.exists():
            simulate("gamma", 3, tiny, energy_range=(1.0, 10.0), scatter_radius_m=100.0, reuse=1, seed=2)
        copies = tmp / "copies"
        if not copies.exists():
            copies.mkdir()
            for i in range(args.tiny):
                shutil.copytree(tiny, copies / f"p{i:05d}", copy_function=os.link)
        one, dt1 = timed(lambda: r1_to_dl1([tiny], tmp / "tiny-one", workers=1, overwrite=True))
        many, dtn = timed(lambda: r1_to_dl1(sorted(copies.iterdir()), tmp / "tiny-many", workers=1, overwrite=True))
        per_events = sum(one.n_tel_events.values())
        print(f"\n{args.tiny} tiny inputs ({per_events} telescope events each) in one run, one worker: "
              f"{dtn:.1f} s = {1000 * dtn / args.tiny:.1f} ms per input (one input alone: {dt1 * 1000:.0f} ms, "
              f"of which most is the run's fixed start-up)")
    finally:
        if args.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
