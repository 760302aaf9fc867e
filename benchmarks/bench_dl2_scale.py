"""dl1-to-dl2 and apply-models at scale: peak memory for 1× and 10× the input, 1 vs N workers.

Usage: python benchmarks/bench_dl2_scale.py [--product ml-data/gamma-dl2] [--models DIR]
       [--copies 10] [--workers 2] [--dir SCRATCH]

The input is a DL2 product of toy gammas (``make ml-data``; it holds dl1/, trigger/ and
simulation/ too, so dl1-to-dl2 runs on it as well). ``--copies`` copies of it with
obs_ids shifted by 1000 each are made, and merged (``dvp merge``, 64 MiB row groups) into
one product ten times the size. Then, each in a fresh process with one worker (VmHWM =
peak RSS), on the product, on the ten copies as ten inputs, and on the merged product:

- ``dl1_to_dl2``;
- ``apply_models`` (energy + particle model sets: ``--models``, else an energy model is
  trained here with 100 rounds);

and, on the 10× product, both commands with 1 and with N local workers (wall time,
outputs compared table by table).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_SNIPPET = r"""
import json, sys, time
import pyarrow as pa
pa.set_cpu_count(1); pa.set_io_thread_count(1)
what, src, out, workers = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if what == "dl1-to-dl2":
    from dvp.runner import dl1_to_dl2
    s = dl1_to_dl2(src, out, workers=workers)
    n = s.n_tel_events["dl1"]
else:
    from dvp.runner_ml import apply_models
    s = apply_models(src, json.loads(sys.argv[5]), out, workers=workers)
    n = s.n_tel_events["dl2_telescopes"]
wall = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"tel_events": n, "tasks": s.n_tasks, "wall_s": wall, "rss_mib": int(hwm.split()[1]) / 1024}))
"""


def shifted_copy(src: Path, dst: Path, shift: int) -> None:
    """``src`` with every obs_id + ``shift``, row groups kept as they are."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.parquet"))
    for f in sorted(src.rglob("*.parquet")):
        out = dst / f.relative_to(src)
        pf = pq.ParquetFile(f)
        if "obs_id" not in pf.schema_arrow.names or f.parent.name == "instrument" or "instrument" in f.parts:
            shutil.copy(f, out)
            continue
        with pq.ParquetWriter(out, pf.schema_arrow, compression="zstd") as w:
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i)
                j = t.schema.get_field_index("obs_id")
                t = t.set_column(j, t.schema.field(j), pc.add(t.column(j), pa.scalar(shift, t.schema.field(j).type)))
                w.write_table(t, row_group_size=max(t.num_rows, 1))


def run(what: str, src: Path, out: Path, workers: int, models=None) -> dict:
    args = [sys.executable, "-c", RUN_SNIPPET, what, json.dumps([str(s) for s in src]), str(out), str(workers)]
    if models is not None:
        args.append(json.dumps([str(m) for m in models]))
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"{what} failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def content(product: Path) -> dict:
    """Per Parquet file: sha256 of its table as Arrow IPC (metadata left out), one file
    in memory at a time. The task plan does not depend on the executor, so equal
    products have the same files."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq
    out = {}
    for f in sorted(product.rglob("*.parquet")):
        t = pq.read_table(f).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out[str(f.relative_to(product))] = hashlib.sha256(sink.getvalue()).hexdigest()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--product", type=Path, default=ROOT / "ml-data" / "gamma-dl2")
    ap.add_argument("--models", type=Path, nargs="*", default=None)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.product / "dl2").is_dir():
        raise SystemExit(f"{args.product}: not a DL2 product (make ml-data)")
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="dvp-bench-dl2-"))
    tmp.mkdir(parents=True, exist_ok=True)
    from dvp.merge import merge
    models = args.models
    if not models:
        from dvp.config import load_config
        from dvp.runner_ml import train
        models = [tmp / "energy"]
        if not models[0].exists():
            train("energy", [args.product], output=models[0], config=load_config(overrides=["ml.max_rounds=100"]))
    big = tmp / f"x{args.copies}"
    copies = [tmp / f"copy{k}" for k in range(args.copies)]
    for k, c in enumerate(copies):
        if not c.exists():
            shifted_copy(args.product, c, 1000 * k)
    if not big.exists():
        t0 = time.perf_counter()
        merge(copies, big)
        print(f"merged {args.copies} shifted copies into {big} in {time.perf_counter() - t0:.1f} s")
    rows = []
    for what in ("dl1-to-dl2", "apply-models"):
        for label, src in (("1×", [args.product]), (f"{args.copies} inputs", copies), (f"{args.copies}×", [big])):
            out = tmp / f"out-{what}-{label}"
            shutil.rmtree(out, ignore_errors=True)
            r = run(what, src, out, 1, models if what == "apply-models" else None)
            rows.append((what, label, r))
            print(f"{what:13s} {label:>9s} one worker: {r['tel_events']:>10,} tel events, {r['tasks']:>3} tasks, "
                  f"{r['wall_s']:7.1f} s, {r['tel_events'] / r['wall_s']:>9,.0f} tel ev/s, peak RSS {r['rss_mib']:6.0f} MiB",
                  flush=True)
            if label == f"{args.copies}×":
                one = out
                out_n = tmp / f"out-{what}-{label}-j{args.workers}"
                shutil.rmtree(out_n, ignore_errors=True)
                rn = run(what, src, out_n, args.workers, models if what == "apply-models" else None)
                same = content(one) == content(out_n)
                print(f"{what:13s} {label:>9s} {args.workers} workers: {rn['wall_s']:7.1f} s "
                      f"({r['wall_s'] / rn['wall_s']:.2f}× one worker), main-process peak RSS {rn['rss_mib']:.0f} MiB, "
                      f"outputs identical: {same}", flush=True)
                shutil.rmtree(out_n)
            shutil.rmtree(out)
    if not args.dir:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
