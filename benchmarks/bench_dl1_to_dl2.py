"""DL1 → DL2 stereo geometry throughput and memory: dvp vs ctapipe 0.28 on the same events, one run, one core.

Usage: python benchmarks/bench_dl1_to_dl2.py [--events N] [--ctapipe-events M] [--method M]
       [--ctapipe-python PATH] [--memory] [--memory-events K]

The array events of FILE (default: the Prod5 run202 mini file, 6 array events with 3-7
telescopes, all telescope types) are taken to DL1 once with ``dvp simtel-to-r1`` +
``dvp r1-to-dl1``; their DL1 rows (and trigger and shower rows) are then replicated with
new event ids into a DL1 product of N array events. Then:

- dvp in memory: the ``dl1_to_dl2`` stage on the DL1 columns it needs, already in memory;
- dvp end to end: ``dvp.runner.dl1_to_dl2`` from the DL1 Parquet product to a DL2 Parquet
  product (read, group, reconstruct, join true values, validate, write);
- ctapipe: ``ShowerProcessor(subarray)`` (default: ``HillasReconstructor``; ``--method``
  sets ``reconstructor_types``) on the same file's events, after ``CameraCalibrator`` +
  ``ImageProcessor`` ran once per event (not timed), repeated to M array events in a
  subprocess of a Python with ctapipe 0.28 (``--ctapipe-python``, default ../venv-ctapipe
  or $CTAPIPE_PYTHON).

Everything runs on one core (numba kernels are single-threaded; Arrow's thread pools are
limited to one thread). ``--memory`` measures the peak RSS (VmHWM) of the end-to-end run
in fresh subprocesses for K and 10 K array events.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMTEL = ROOT.parent / "shared" / "data" / "simtel"
DEFAULT_FILE = SIMTEL / "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"

CTAPIPE_SNIPPET = r"""
import sys, time, json, warnings
warnings.filterwarnings("ignore")
from ctapipe.io import EventSource
from ctapipe.calib import CameraCalibrator
from ctapipe.image import ImageProcessor
from ctapipe.reco import ShowerProcessor
f, n_target, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
events = []
with EventSource(f, focal_length_choice="EQUIVALENT") as src:
    sub = src.subarray
    calib, proc = CameraCalibrator(subarray=sub), ImageProcessor(subarray=sub)
    for ev in src:
        calib(ev); proc(ev); events.append(ev)
shower = ShowerProcessor(subarray=sub, reconstructor_types=[method])
for e in events:  # warm-up (numba, astropy caches)
    shower(e)
n = 0
t0 = time.perf_counter()
while n < n_target:
    for e in events:
        shower(e); n += 1
dt = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": dt, "n_file": len(events)}))
"""

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across
# fork+exec, so a child would report this script's own peak
MEMORY_SNIPPET = r"""
import sys, pyarrow as pa
pa.set_cpu_count(1); pa.set_io_thread_count(1)
from dvp.runner import dl1_to_dl2
dl1_to_dl2([sys.argv[1]], sys.argv[2])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(int(hwm.split()[1]) / 1024)
"""


def make_source(simtel: Path, workdir: Path) -> Path:
    """The file taken to DL1 (parameters only) by dvp, once."""
    from dvp.runner import r1_to_dl1, simtel_to_r1

    r1, dl1 = workdir / "r1", workdir / "dl1-source"
    if not dl1.exists():
        simtel_to_r1([simtel], r1)
        r1_to_dl1([r1], dl1)
    return dl1


def make_replicated(source: Path, n_events: int, workdir: Path) -> Path:
    """A DL1 product of ``n_events`` array events: the source's events repeated with new ids.

    Rows stay in event order within each file, as dvp writes them; the trigger and shower
    tables are replicated alongside so that pointing and true values join as usual.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import dvp.schemas as S
    from dvp.io.parquet import ROW_GROUP_BYTES, PartitionedWriter, TableWriter
    from dvp.runner import CARRY_ROW_GROUP_BYTES

    out = workdir / f"dl1-{n_events}"
    if out.exists():
        return out
    trigger = pq.read_table(source / "trigger" / "part-00000.parquet")
    keys = sorted(set(zip(trigger.column(S.OBS_ID).to_pylist(), trigger.column(S.EVENT_ID).to_pylist())))
    index = {k: i for i, k in enumerate(keys)}
    n_src = len(keys)
    reps = -(-n_events // n_src)

    def replicate(t: pa.Table, max_events: int) -> pa.Table:
        """``t`` repeated ``reps`` times, event ids ``rep * n_src + index + 1``, first ``max_events`` events."""
        idx = np.array([index.get(k, -1) for k in zip(t.column(S.OBS_ID).to_pylist(), t.column(S.EVENT_ID).to_pylist())])
        keep = idx >= 0
        t, idx = t.filter(pa.array(keep)), idx[keep]
        order = np.argsort(idx, kind="stable")
        t, idx = t.take(pa.array(order)), idx[order]
        parts = []
        for rep in range(reps):
            ids = rep * n_src + idx + 1
            sel = ids <= max_events
            if not sel.any():
                break
            p = t.filter(pa.array(sel))
            p = p.set_column(p.schema.get_field_index(S.EVENT_ID), S.EVENT_ID, pa.array(ids[sel].astype(np.int64)))
            parts.append(p.set_column(p.schema.get_field_index(S.OBS_ID), S.OBS_ID,
                                      pa.array(np.ones(p.num_rows, np.int32))))
        return pa.concat_tables(parts)

    shutil.copytree(source / "instrument", out / "instrument")
    def write_rows(t, path, schema_name):
        # in 4 MiB row groups, as dvp's runners write (and carry) these tables: a task then
        # reads the row groups of its event range, not the whole table
        w = TableWriter(path, schema_name, min_row_group_bytes=CARRY_ROW_GROUP_BYTES)
        for b in t.to_batches(max_chunksize=65536):
            w.write(pa.Table.from_batches([b]))
        w.close()

    write_rows(replicate(trigger, n_events), out / "trigger" / "part-00000.parquet", S.R1_TRIGGER)
    (out / "simulation").mkdir()
    for f in (source / "simulation").glob("*.parquet"):
        if f.name == "showers.parquet":
            write_rows(replicate(pq.read_table(f), n_events), out / "simulation" / f.name, S.SIM_SHOWER)
        else:
            shutil.copy(f, out / "simulation" / f.name)
    writer = PartitionedWriter(out / "dl1", S.DL1_EVENTS, min_row_group_bytes=ROW_GROUP_BYTES)
    chunk = 20_000  # array events per replicated slice: bounded memory while writing 10 N
    for d in sorted((source / "dl1").iterdir()):
        tel_type = d.name.split("=", 1)[1]
        base = pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in sorted(d.glob("*.parquet"))])
        bidx = np.array([index[k] for k in zip(base.column(S.OBS_ID).to_pylist(), base.column(S.EVENT_ID).to_pylist())])
        base = base.take(pa.array(np.argsort(bidx, kind="stable")))
        bidx = np.sort(bidx)
        for lo in range(0, n_events, chunk):
            hi = min(lo + chunk, n_events)
            ev = np.arange(lo, hi)  # 0-based new event index
            src_ev = ev % n_src
            counts = np.bincount(bidx, minlength=n_src)[src_ev]
            starts = np.searchsorted(bidx, src_ev)
            rows = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            p = base.take(pa.array(rows))
            p = p.set_column(p.schema.get_field_index(S.EVENT_ID), S.EVENT_ID,
                             pa.array(np.repeat(ev + 1, counts).astype(np.int64)))
            p = p.set_column(p.schema.get_field_index(S.OBS_ID), S.OBS_ID, pa.array(np.ones(p.num_rows, np.int32)))
            writer.write(tel_type, p)
    writer.close()
    return out


def time_dvp(product: Path, workdir: Path, method: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import dvp.schemas as S
    from dvp.config import load_config
    from dvp.instrument.subarray import SubarrayDescription
    from dvp.runner import dl1_to_dl2
    from dvp.stages.dl1_to_dl2 import dl1_to_dl2 as stage
    from dvp.stages.dl1_to_dl2 import required_columns

    config = load_config(overrides=[f'dl1_to_dl2.method="{method}"'])
    cfg = config.dl1_to_dl2
    sub = SubarrayDescription.read(product)
    cols = list(required_columns(cfg))
    dl1 = pa.concat_tables([pq.read_table(f, columns=cols).replace_schema_metadata(None)
                            for f in sorted((product / "dl1").rglob("*.parquet"))])
    trigger = pq.read_table(product / "trigger" / "part-00000.parquet")
    showers = pq.read_table(product / "simulation" / "showers.parquet")
    stage(dl1.slice(0, 1000), sub, cfg, array_pointing=trigger, showers=showers)  # warm-up: numba cache load
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        events, _ = stage(dl1, sub, cfg, array_pointing=trigger, showers=showers)
        best = min(best, time.perf_counter() - t0)
    n_ev, n_tel = events.num_rows, dl1.num_rows
    n_valid = int(events.column(S.RECO_IS_VALID).to_numpy().sum())
    del dl1, events
    out = workdir / "dl2-out"
    t0 = time.perf_counter()
    dl1_to_dl2([product], out, config, overwrite=True)
    e2e = time.perf_counter() - t0
    return {"n": n_ev, "n_tel": n_tel, "n_valid": n_valid, "in_memory_s": best, "end_to_end_s": e2e}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--events", type=int, default=100_000, help="replicated array events for dvp")
    ap.add_argument("--ctapipe-events", type=int, default=300, help="array events for ctapipe")
    ap.add_argument("--method", default="HillasReconstructor", choices=["HillasReconstructor", "HillasIntersection"])
    ap.add_argument("--ctapipe-python", default=os.environ.get("CTAPIPE_PYTHON", str(ROOT.parent / "venv-ctapipe" / "bin" / "python")))
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS for K and 10 K array events")
    ap.add_argument("--memory-events", type=int, default=100_000, help="K for --memory")
    args = ap.parse_args(argv)

    import pyarrow as pa
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = make_source(args.file, work)
        product = make_replicated(source, args.events, work)
        d = time_dvp(product, work, args.method)
        rate_mem, rate_e2e = d["n"] / d["in_memory_s"], d["n"] / d["end_to_end_s"]
        print(f"events: {args.file.name}, {d['n']:,} array events ({d['n_tel']:,} telescope events, "
              f"{d['n_valid']:,} valid), method {args.method}")
        print(f"dvp in memory  : {rate_mem:12,.0f} array events/s  ({1e6 / rate_mem:.2f} us/event)")
        print(f"dvp end to end : {rate_e2e:12,.0f} array events/s  (DL1 Parquet -> DL2 Parquet)")
        if Path(args.ctapipe_python).exists():
            r = subprocess.run([args.ctapipe_python, "-c", CTAPIPE_SNIPPET, str(args.file), str(args.ctapipe_events),
                                args.method], capture_output=True, text=True,
                               env=dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1"))
            if r.returncode:
                print("ctapipe failed:", r.stderr[-2000:])
            else:
                ct = json.loads(r.stdout.strip().splitlines()[-1])
                rate = ct["n"] / ct["seconds"]
                print(f"ctapipe 0.28   : {rate:12,.0f} array events/s  (ShowerProcessor/{args.method}, "
                      f"{ct['n']} events = the file's {ct['n_file']} repeated)")
                print(f"ratio dvp/ctapipe: in memory {rate_mem / rate:,.0f}x, end to end {rate_e2e / rate:,.0f}x")
        else:
            print(f"ctapipe not found at {args.ctapipe_python}; set --ctapipe-python or $CTAPIPE_PYTHON")
        if args.memory:
            for n in (args.memory_events, 10 * args.memory_events):
                p = make_replicated(source, n, work)
                r = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, str(p), str(work / f"mem-{n}")],
                                   capture_output=True, text=True)
                if r.returncode:
                    print("memory run failed:", r.stderr[-2000:])
                    continue
                print(f"peak RSS end to end, {n:9,d} array events: {float(r.stdout.strip().splitlines()[-1]):7.0f} MiB")
                shutil.rmtree(p)


if __name__ == "__main__":
    main()
