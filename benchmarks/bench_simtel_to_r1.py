"""End-to-end ingest throughput: dvp simtel-to-r1 vs ctapipe 0.28's EventSource, same files, one run.

Usage: python benchmarks/bench_simtel_to_r1.py [--ctapipe-python PATH] [--repeat N] [FILE...]

dvp is timed in-process (numba already compiled by a warm-up pass) from opening the
file to the last Parquet row group written; ctapipe is timed in a subprocess of a
Python with ctapipe 0.28 installed (``--ctapipe-python``, default ../venv-ctapipe or
$CTAPIPE_PYTHON), iterating ``EventSource(f, focal_length_choice="EQUIVALENT")`` so that
every R1 waveform is computed (ctapipe fills r1 in the source). Prints a table and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMTEL = ROOT.parent / "shared" / "data" / "simtel"
DEFAULT_FILES = ["run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst",
                 "lst_muons.simtel.zst", "gamma_prod6_tel_event_header_v4.simtel.zst",
                 "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst"]

CTAPIPE_SNIPPET = r"""
import sys, time, json, warnings
warnings.filterwarnings("ignore")
from ctapipe.io import EventSource
f, repeat = sys.argv[1], int(sys.argv[2])
best = None
for _ in range(repeat):
    t0 = time.perf_counter(); n = 0
    with EventSource(f, focal_length_choice="EQUIVALENT") as src:
        for ev in src:
            n += len(ev.r1.tel)
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(json.dumps({"n": n, "seconds": best}))
"""


def time_dvp(path: Path, repeat: int) -> tuple[int, float]:
    from dvp.runner import simtel_to_r1

    best, n = None, 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat + 1):  # first pass compiles/warms caches
            out = Path(tmp) / f"r{i}"
            t0 = time.perf_counter()
            s = simtel_to_r1([path], out)
            dt = time.perf_counter() - t0
            n = sum(s.n_tel_events.values())
            if i:
                best = dt if best is None else min(best, dt)
    return n, best


def time_ctapipe(python: str, path: Path, repeat: int):
    res = subprocess.run([python, "-c", CTAPIPE_SNIPPET, str(path), str(repeat)], capture_output=True, text=True)
    if res.returncode:
        return None
    d = json.loads(res.stdout.strip().splitlines()[-1])
    return d["n"], d["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ctapipe-python", default=os.environ.get("CTAPIPE_PYTHON", str(ROOT.parent / "venv-ctapipe" / "bin" / "python")))
    args = ap.parse_args()
    files = [Path(f) for f in args.files] or [SIMTEL / f for f in DEFAULT_FILES]
    have_ctapipe = Path(args.ctapipe_python).exists()
    if not have_ctapipe:
        print(f"(no ctapipe python at {args.ctapipe_python}: dvp only; see the docstring)")
    print(f"{'file':48s} {'MB':>6s} {'tel ev':>6s} {'dvp s':>7s} {'dvp ev/s':>9s} {'dvp MB/s':>8s} "
          f"{'cta s':>7s} {'cta ev/s':>9s} {'ratio':>6s}")
    tot = {"n": 0, "dvp": 0.0, "cta": 0.0, "mb": 0.0}
    for f in files:
        mb = f.stat().st_size / 1e6
        n, t = time_dvp(f, args.repeat)
        line = f"{f.name[:48]:48s} {mb:6.2f} {n:6d} {t:7.3f} {n / t:9.1f} {mb / t:8.2f}"
        c = time_ctapipe(args.ctapipe_python, f, args.repeat) if have_ctapipe else None
        if c:
            line += f" {c[1]:7.3f} {c[0] / c[1]:9.1f} {c[1] / t:6.2f}"
            tot["cta"] += c[1]
        tot["n"] += n
        tot["dvp"] += t
        tot["mb"] += mb
        print(line)
    line = f"{'TOTAL':48s} {tot['mb']:6.2f} {tot['n']:6d} {tot['dvp']:7.3f} {tot['n'] / tot['dvp']:9.1f} {tot['mb'] / tot['dvp']:8.2f}"
    if tot["cta"]:
        line += f" {tot['cta']:7.3f} {tot['n'] / tot['cta']:9.1f} {tot['cta'] / tot['dvp']:6.2f}"
    print(line)


if __name__ == "__main__":
    main()
