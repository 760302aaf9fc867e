"""Speed of ``dvp merge`` on many tiny DL1 products, against copying the same bytes.

Usage: python benchmarks/bench_merge.py [--showers 20000] [--n-products 100 1000]
                                        [--r1-showers 200] [--workdir DIR] [--repeat 3]

1. Simulates one DL1 product (``simulate(level="dl1")``, default run parameters, one
   obs_id) and splits it by event-id range into N tiny products, each a complete
   product directory as a batch job leaves it (instrument, simulation, trigger, dl1,
   provenance.json; every file stamped with its own provenance, as separate jobs would).
2. Times ``merge()`` of the N products (in process, best of ``--repeat``) and of the one
   unsplit product (the same rows: the cost of the rows themselves); the difference over
   N is the per-input overhead. Reports MB/s over all bytes of the input directories
   against ``cp -r`` of the same directories and ``cat`` of all their files into one
   (the disk-bandwidth reference; the files are in the page cache, as they are right
   after the jobs that wrote them), one ``dvp merge`` run through the CLI (process
   start and imports included), and ``dl1-to-dl2`` on the tiny products and on their
   merge (why one merges).
3. The same for two R1 products (``--r1-showers`` showers each): waveform bytes.

Timings on a shared 2-core VM vary by tens of percent between runs: best of N.
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvp import schemas as S  # noqa: E402
from dvp.instrument.subarray import SubarrayDescription  # noqa: E402
from dvp.io.parquet import write_table  # noqa: E402
from dvp.merge import merge  # noqa: E402
from dvp.runner import PRODUCT_SIM_TABLES, _level_files, dl1_to_dl2, simulate  # noqa: E402

MB = 1e6


def dir_bytes(paths) -> int:
    return sum(f.stat().st_size for p in paths for f in Path(p).rglob("*") if f.is_file())


def split(src: Path, base: Path, n: int) -> list[Path]:
    """Split an event-ordered product into ``n`` products by event-id range (showers that
    triggered nothing go with the range they fall in), each written as its own job."""
    prov0 = json.loads((src / "provenance.json").read_text())
    sub = SubarrayDescription.read(src)
    trig = pq.read_table(src / "trigger" / "part-00000.parquet")
    ev = trig.column(S.EVENT_ID).to_numpy()
    chunks = np.array_split(ev, n)
    lo = [-np.inf] + [float(c[0]) for c in chunks[1:]]
    hi = lo[1:] + [np.inf]
    dl1 = {t: pa.concat_tables([pq.read_table(f) for tt, f in _level_files(src, "dl1") if tt == t])
           for t in {tt for tt, _ in _level_files(src, "dl1")}}
    sims = {name: pq.read_table(src / "simulation" / name) for name, _ in PRODUCT_SIM_TABLES
            if (src / "simulation" / name).is_file()}
    sim_schema = dict(PRODUCT_SIM_TABLES)
    out = []
    for i in range(n):
        p = base / f"job{i:05d}"
        prov = dict(prov0, config=dict(prov0.get("config", {}), split=[i, n]))

        def put(table, rel, schema_name, p=p, prov=prov):
            write_table(table.replace_schema_metadata(None), p / rel, schema_name, prov)

        def rows(table, i=i):
            e = table.column(S.EVENT_ID)
            return table.filter(pc.and_(pc.greater_equal(e, lo[i]), pc.less(e, hi[i])))

        put(rows(trig), "trigger/part-00000.parquet", S.R1_TRIGGER)
        for tel_type, t in dl1.items():
            part = rows(t)
            if part.num_rows:   # as PartitionedWriter: no partition without rows
                put(part, f"dl1/tel_type={tel_type}/part-00000.parquet", S.DL1_EVENTS)
        for name, t in sims.items():
            put(rows(t) if name == "showers.parquet" else t, f"simulation/{name}", sim_schema[name])
        sub.write(p, lambda t, path, name, prov=prov: write_table(t, path, name, prov))
        (p / "provenance.json").write_text(json.dumps(prov, indent=1))
        out.append(p)
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def time_merge(inputs, out: Path, repeat: int):
    def run():
        shutil.rmtree(out, ignore_errors=True)
        return merge(inputs, out)
    return best_of(run, repeat)


def time_cp(inputs, dest: Path, repeat: int) -> float:
    def run():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        subprocess.run(["cp", "-r", *map(str, inputs), str(dest)], check=True)
    return best_of(run, repeat)[0]


def time_cat(inputs, dest: Path, repeat: int) -> float:
    files = [str(f) for p in inputs for f in sorted(Path(p).rglob("*")) if f.is_file()]

    def run():
        with open(dest, "wb") as fh:
            subprocess.run(["cat", *files], stdout=fh, check=True)
    t = best_of(run, repeat)[0]
    dest.unlink()
    return t


def row_groups(product: Path) -> dict:
    return {str(f.relative_to(product)): pq.ParquetFile(f).num_row_groups
            for f in sorted(product.rglob("*.parquet")) if "instrument" not in f.parts}


def compare(label, inputs, work: Path, repeat: int, baseline: float | None = None):
    size = dir_bytes(inputs)
    t_merge, summary = time_merge(inputs, work / "merged", repeat)
    t_cp = time_cp(inputs, work / "cp", repeat)
    t_cat = time_cat(inputs, work / "cat.bin", repeat)
    shutil.rmtree(work / "cp")
    n_files = sum(1 for p in inputs for f in Path(p).rglob("*") if f.is_file())
    print(f"\n{label}: {len(inputs)} product(s), {n_files} files, {size / MB:,.1f} MB "
          f"({summary.input_bytes / MB:,.1f} MB of merged tables, the rest instrument/ and provenance), "
          f"{sum(summary.n_tel_events.values()):,} telescope events, {summary.n_array_events:,} array events")
    print(f"  merge : {t_merge:7.3f} s  {size / MB / t_merge:8,.0f} MB/s  (output row groups: "
          f"{sorted(set(row_groups(work / 'merged').values()))})")
    print(f"  cp -r : {t_cp:7.3f} s  {size / MB / t_cp:8,.0f} MB/s")
    print(f"  cat   : {t_cat:7.3f} s  {size / MB / t_cat:8,.0f} MB/s")
    if baseline is not None and len(inputs) > 1:
        print(f"  per-input overhead over the unsplit merge: {(t_merge - baseline) / (len(inputs) - 1) * 1e3:.2f} ms "
              f"(merge {t_merge / t_cp:.1f}x the time of cp -r)")
    return t_merge


def time_cli(inputs, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    lst = out.parent / "inputs.txt"
    lst.write_text("\n".join(map(str, inputs)) + "\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvp.cli", "merge", f"@{lst}", "-o", str(out), "-q"], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--showers", type=int, default=20000, help="showers (x reuse 10) of the DL1 product to split")
    ap.add_argument("--n-products", type=int, nargs="+", default=[100, 1000], help="products to split it into")
    ap.add_argument("--r1-showers", type=int, default=200, help="showers of each of the two R1 products (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-downstream", dest="downstream", action="store_false",
                    help="skip timing dl1-to-dl2 on the tiny products and on their merge")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_merge_", dir=args.workdir))
    try:
        src = work / "dl1"
        t0 = time.perf_counter()
        simulate("gamma", args.showers, src, level="dl1", seed=1, obs_id=1)
        print(f"simulated {src} ({args.showers} showers x 10) in {time.perf_counter() - t0:.1f} s")
        merge([src], work / "warmup")   # imports
        baseline = compare("unsplit product", [src], work / "one", args.repeat)
        for n in args.n_products:
            t0 = time.perf_counter()
            inputs = split(src, work / f"split{n}", n)
            print(f"\nsplit into {n} products in {time.perf_counter() - t0:.1f} s")
            compare(f"{n} tiny DL1 products", inputs, work / f"m{n}", args.repeat, baseline)
            print(f"  dvp merge CLI (@list, -q; process start and imports included): "
                  f"{time_cli(inputs, work / f'm{n}' / 'cli'):.2f} s wall")
            if args.downstream:
                t_tiny = best_of(lambda: dl1_to_dl2(inputs, work / f"m{n}" / "dl2_tiny"), 1)[0]
                t_merged = best_of(lambda: dl1_to_dl2([work / f"m{n}" / "merged"], work / f"m{n}" / "dl2_merged"), 1)[0]
                print(f"  downstream: dl1-to-dl2 on the {n} products {t_tiny:.2f} s, on their merge {t_merged:.2f} s")
            shutil.rmtree(work / f"split{n}")
            shutil.rmtree(work / f"m{n}")
        if args.r1_showers:
            r1 = [work / "r1a", work / "r1b"]
            for i, p in enumerate(r1, start=1):
                simulate("gamma", args.r1_showers, p, seed=i, obs_id=i)
            merge(r1, work / "warmup_r1")   # the fastlist reader's numba functions
            compare(f"two R1 products ({args.r1_showers} showers each)", r1, work / "mr1", args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
