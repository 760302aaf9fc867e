"""Throughput of the toy Monte Carlo (dvp simulate), numba warmed up first.

Usage: python benchmarks/bench_simulate.py [--n-showers N]

Prints showers/s for showers that trigger nothing (cores far outside the array: only
geometry and the expected-image pre-check run) and triggered LST telescope events/s
(bright gammas near the array centre: expected images, Poisson, waveforms, Parquet).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvp.runner import simulate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-showers", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulate("gamma", 20, Path(tmp) / "warm", reuse=2, scatter_radius_m=200.0)   # compile numba kernels
        # non-triggering: 10-30 GeV gammas scattered far from the telescopes
        t0 = time.perf_counter()
        s = simulate("gamma", args.n_showers, Path(tmp) / "dark", energy_range=(0.01, 0.03), reuse=10,
                     scatter_radius_m=5000.0)
        dt = time.perf_counter() - t0
        print(f"non-triggering: {s.n_showers} showers ({s.n_array_events} triggered) in {dt:.2f} s "
              f"= {s.n_showers / dt:,.0f} showers/s")
        t0 = time.perf_counter()
        s = simulate("gamma", max(args.n_showers // 20, 10), Path(tmp) / "bright", energy_range=(1.0, 10.0),
                     reuse=5, scatter_radius_m=100.0)
        dt = time.perf_counter() - t0
        n_lst = sum(n for t, n in s.n_tel_events.items() if t.startswith("LST"))
        n_all = sum(s.n_tel_events.values())
        print(f"triggered: {n_lst} LST telescope events ({n_all} in all) in {dt:.2f} s "
              f"= {n_lst / dt:,.1f} LST tel events/s ({n_all / dt:,.1f} tel events/s)")


if __name__ == "__main__":
    main()
