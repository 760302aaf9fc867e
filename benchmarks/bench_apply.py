"""Prediction speed of ``dvp apply-models`` on one core, against the target of 200,000
telescope events per second per core.

Usage: python benchmarks/bench_apply.py --product ml-data/gamma-dl2 \
           --models ml-data/models/energy ml-data/models/particle [--repeats 5]

``make bench-apply`` trains the two model sets with dvp's defaults first if they are
missing. Everything runs on one core (one worker, Arrow on one thread). Three numbers:

1. **Kernel**: the numba forest kernel alone (``ModelSet.predict``: flattened trees, leaf
   bounds, clipping) on every usable telescope event of each type, per model; median of
   ``--repeats`` calls.
2. **apply-models, warm**: ``dvp.runner_ml.apply_models`` on the whole product with both
   model sets, in a process that has already run it once (numba's kernels loaded, model
   sets parsed); median of ``--repeats`` runs. Telescope events counted as the summary
   counts them: every row of ``dl2_telescopes``, usable or not.
3. **dvp apply-models, cold**: the command in a fresh process, ``-j 1``, wall time from
   before Python starts: interpreter, imports, numba's cache, reading, predicting,
   writing and provenance.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 200_000   # telescope events / s / core (the prediction target)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--product", type=Path, default=Path("ml-data/gamma-dl2"))
    ap.add_argument("--models", type=Path, nargs="+", default=[Path("ml-data/models/energy"),
                                                              Path("ml-data/models/particle")])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    from dvp.ml.dataset import columns_as_numpy, load_telescope_events, telescope_types
    from dvp.runner_ml import apply_models, load_model_sets

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="dvp-bench-apply-"))
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "applied"
    try:
        # 2. warm apply-models (first run loads numba's kernels and the model sets)
        summary = apply_models([args.product], args.models, out, overwrite=True, workers=1)
        n_tel = summary.n_tel_events["dl2_telescopes"]
        warm, warm_all = _median_time(lambda: apply_models([args.product], args.models, out, overwrite=True,
                                                           workers=1), args.repeats)

        # 1. the kernel alone, per model and type, on the applied product (it has the
        # reconstructed energy the particle model reads)
        sets = load_model_sets(args.models)
        rows = []
        for ms in sets:
            for tel_type in telescope_types(out):
                if tel_type not in ms.boosters:
                    continue
                df = load_telescope_events(out, tel_type, sorted(set(ms.spec.columns)))
                X, usable = ms.spec.matrix(ms.spec.environment(columns_as_numpy(df)), df.height)
                X = np.ascontiguousarray(X[usable])
                forest = ms.forest(tel_type)   # flattened here, outside the timing
                t, _ = _median_time(lambda: ms.predict(tel_type, X), args.repeats)
                rows.append((ms.kind, tel_type, len(X), forest.n_trees, "linear" if forest.linear else "constant",
                             len(X) / t))

        # 3. the command, cold, in a fresh process
        cmd = [sys.executable, "-m", "dvp.cli", "apply-models", str(args.product),
               *[x for m in args.models for x in ("-m", str(m))], "-o", str(scratch / "cold"), "-j", "1", "--overwrite"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        cold = time.perf_counter() - t0
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"product {args.product}: {n_tel:,} telescope events; models: "
          + ", ".join(f"{m.kind} {m.path}" for m in sets))
    print("\n1. forest kernel alone (usable telescope events, one core)\n")
    print("| model | telescope type | rows | trees | leaves | rows / s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, tel_type, n, trees, leaves, rate in rows:
        print(f"| {kind} | {tel_type} | {n:,} | {trees} | {leaves} | {rate:,.0f} |")
    print("\n2-3. apply-models with both model sets (every telescope event, one core)\n")
    print("| run | seconds | telescope events / s | target |")
    print("| --- | --- | --- | --- |")
    spread = f"{min(warm_all):.2f}-{max(warm_all):.2f}"
    for name, sec in ((f"warm, in process (median of {args.repeats}; range {spread} s)", warm),
                      ("cold, `dvp apply-models -j 1`, fresh process", cold)):
        rate = n_tel / sec
        print(f"| {name} | {sec:.2f} | {rate:,.0f} | {'met' if rate >= TARGET else 'below'} {TARGET:,} |")


if __name__ == "__main__":
    main()
