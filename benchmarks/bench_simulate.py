"""Throughput of the toy Monte Carlo (dvp simulate), numba warmed up first, one core.

Usage: python benchmarks/bench_simulate.py [--n-showers N] [--dl1-showers M]

Prints:

1. showers/s for showers that trigger nothing (10-30 GeV gammas with cores up to 5 km
   from the array: only geometry and the analytic pre-check run), in memory and through
   ``simulate()`` (which adds the fixed cost of reading the layout and writing tables);
2. triggered telescope events/s *in memory* (images, trigger, waveform synthesis, R1
   Arrow tables; no Parquet) for bright gammas near the array centre: the full array
   (4 LST + 9 MST NectarCam, 40 and 60 samples) and an LST-only subarray (LSTCam-sized
   events, 1855 pixels × 40 samples);
3. the Parquet writing of those R1 tables on its own (MB/s, telescope events/s);
4. ``simulate(level="dl1")`` with the default run parameters (0.03-10 TeV, E^-2,
   reuse 10, scatter 1000 m, point-like): shower uses/s and the extrapolation to
   1,000,000 showers × 10 uses.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvp import schemas as S  # noqa: E402
from dvp.io.parquet import PartitionedWriter  # noqa: E402
from dvp.runner import _sim_layout, simulate  # noqa: E402
from dvp.sim import camera as C  # noqa: E402
from dvp.sim.events import ToySimulation  # noqa: E402
from dvp.sim.showers import generate  # noqa: E402


def in_memory(subarray, p_alt, p_az, n_showers, *, energy_range, scatter_radius_m, reuse, seed=0,
              keep_bytes=0):
    """Simulate without writing: (the first ``keep_bytes`` of R1 batches (for the Parquet
    measurement; the rest is dropped at once, as a writer would: keeping GBs of batches
    alive makes the timing measure page faults), rows per type, seconds, showers × reuse)."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    showers = generate(rng, "gamma", n_showers, energy_range=energy_range, scatter_radius_m=scatter_radius_m,
                       reuse=reuse, pointing_alt_deg=p_alt, pointing_az_deg=p_az)
    comps = tuple(np.repeat(a, reuse, axis=0) for a in C.emission_components(rng, "gamma", n_showers))
    sim = ToySimulation(rng, subarray, showers, comps, "gamma", obs_id=1,
                        obs_height_m=float(subarray.reference_location["height_m"]),
                        pointing_alt_deg=p_alt, pointing_az_deg=p_az)
    kept, rows, size = [], {}, 0
    for tel_type, b in sim.run():
        rows[tel_type] = rows.get(tel_type, 0) + b.num_rows
        if size < keep_bytes:
            kept.append((tel_type, b))
            size += b.nbytes
    return kept, rows, time.perf_counter() - t0, len(showers)


def lst_only(subarray):
    keep = pc.starts_with(subarray.telescopes.column(S.TEL_TYPE), "LST")
    return dataclasses.replace(subarray, telescopes=subarray.telescopes.filter(keep))


def report_triggered(label, rows, dt):
    n_all = sum(rows.values())
    n_lst = sum(n for t, n in rows.items() if t.startswith("LST"))
    print(f"  {label}: {n_all} telescope events ({n_lst} LST) in {dt:.2f} s = {n_all / dt:,.0f} tel events/s "
          f"({n_lst / dt:,.0f} LST tel events/s of the total time)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-showers", type=int, default=20000, help="non-triggering showers (× reuse 10)")
    ap.add_argument("--bright-showers", type=int, default=400, help="bright showers (× reuse 5)")
    ap.add_argument("--dl1-showers", type=int, default=20000, help="default-parameter showers (× reuse 10) to DL1")
    args = ap.parse_args()
    _, sub, p_alt, p_az = _sim_layout(None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate("gamma", 20, tmp / "warm", reuse=2, scatter_radius_m=200.0)   # compile numba kernels
        simulate("gamma", 20, tmp / "warm1", reuse=2, scatter_radius_m=200.0, level="dl1")
        in_memory(lst_only(sub), p_alt, p_az, 5, energy_range=(1.0, 10.0), scatter_radius_m=100.0, reuse=2)

        print("1. non-triggering showers (10-30 GeV gammas, cores within 5 km, reuse 10)")
        _, _, dt, n = in_memory(sub, p_alt, p_az, args.n_showers, energy_range=(0.01, 0.03), scatter_radius_m=5000.0,
                             reuse=10)
        print(f"  in memory: {n} showers in {dt:.2f} s = {n / dt:,.0f} showers/s")
        t0 = time.perf_counter()
        s = simulate("gamma", args.n_showers, tmp / "dark", energy_range=(0.01, 0.03), reuse=10,
                     scatter_radius_m=5000.0)
        dt = time.perf_counter() - t0
        print(f"  simulate() to R1: {s.n_showers} showers ({s.n_array_events} triggered) in {dt:.2f} s "
              f"= {s.n_showers / dt:,.0f} showers/s")

        print("2. triggered telescope events in memory (1-10 TeV gammas, cores within 100 m, reuse 5)")
        bright = dict(energy_range=(1.0, 10.0), scatter_radius_m=100.0, reuse=5)
        _, rows, dt, _ = in_memory(sub, p_alt, p_az, args.bright_showers, **bright)
        report_triggered("full array (LST 40 + NectarCam 60 samples)", rows, dt)
        _, rows, dt, _ = in_memory(lst_only(sub), p_alt, p_az, args.bright_showers, **bright)
        report_triggered("LST-only subarray (LSTCam-sized events)", rows, dt)
        batches = in_memory(sub, p_alt, p_az, 100, keep_bytes=1 << 30, **bright)[0]
        lst_batches = in_memory(lst_only(sub), p_alt, p_az, 200, keep_bytes=1 << 30, **bright)[0]

        print("3. Parquet writing of (the first GB of) those R1 tables (waveforms uncompressed, as simulate "
              "writes them)")
        for label, bs in (("full array", batches), ("LST only", lst_batches)):
            t0 = time.perf_counter()
            w = PartitionedWriter(tmp / f"write-{label.replace(' ', '_')}", S.R1_EVENTS)
            for tel_type, b in bs:
                w.write(tel_type, b)
            w.close()
            dt = time.perf_counter() - t0
            n = sum(b.num_rows for _, b in bs)
            mb = sum(b.nbytes for _, b in bs) / 1e6
            print(f"  {label}: {n} tel events, {mb:,.0f} MB in {dt:.2f} s = {n / dt:,.0f} tel events/s, {mb / dt:,.0f} MB/s")

        print("4. default run parameters (0.03-10 TeV, E^-2, reuse 10, scatter 1000 m) to DL1")
        t0 = time.perf_counter()
        s = simulate("gamma", args.dl1_showers, tmp / "dl1", level="dl1")
        dt = time.perf_counter() - t0
        n_tel = sum(s.n_tel_events.values())
        print(f"  {s.n_showers} shower uses, {s.n_array_events} triggered, {n_tel} telescope events in {dt:.1f} s "
              f"= {s.n_showers / dt:,.0f} uses/s, {n_tel / dt:,.0f} tel events/s")
        print(f"  extrapolated: 1,000,000 showers × reuse 10 → {1e7 / (s.n_showers / dt) / 60:.1f} min on one core")


if __name__ == "__main__":
    main()
