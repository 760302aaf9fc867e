"""Angular and core resolution of dvp's HillasReconstructor on simulated gammas (toy MC).

Usage: python benchmarks/bench_gamma_resolution.py [--n-showers N] [--seed S] [--figure PATH]

Simulates point-like gammas on the CTAO-North alpha layout with ``dvp simulate`` (the toy
Monte Carlo, see dvp/sim), runs ``r1-to-dl1`` and ``dl1-to-dl2`` with the default config
(ctapipe's), and prints, per true-energy bin and per multiplicity, the 68 % containment of
the angle between reconstructed and true direction and of the core distance, the median
offset in alt and az (bias), and writes a two-panel figure. The numbers describe the toy
simulation, not the real instrument.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def angular_separation_deg(alt1, az1, alt2, az2):
    a1, z1, a2, z2 = map(np.deg2rad, (alt1, az1, alt2, az2))
    c = np.sin(a1) * np.sin(a2) + np.cos(a1) * np.cos(a2) * np.cos(z1 - z2)
    return np.rad2deg(np.arccos(np.clip(c, -1.0, 1.0)))


def q68(x):
    return float(np.quantile(x, 0.68)) if len(x) else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-showers", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--figure", type=Path, default=ROOT / "benchmarks" / "figures" / "gamma_resolution.png")
    args = ap.parse_args(argv)

    from dvp.runner import dl1_to_dl2, r1_to_dl1, simulate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate(particle="gamma", n_showers=args.n_showers, output=tmp / "r1", seed=args.seed)
        r1_to_dl1([tmp / "r1"], tmp / "dl1")
        dl1_to_dl2([tmp / "dl1"], tmp / "dl2")
        t = pq.read_table(next((tmp / "dl2" / "dl2").glob("*.parquet")))
    valid = t.column("reco_is_valid").to_numpy(zero_copy_only=False)
    col = lambda c: t.column(c).to_numpy(zero_copy_only=False)[valid]
    sep = angular_separation_deg(col("reco_alt_deg"), col("reco_az_deg"), col("true_alt_deg"), col("true_az_deg"))
    core = np.hypot(col("reco_core_x_m") - col("true_core_x_m"), col("reco_core_y_m") - col("true_core_y_m"))
    energy, mult = col("true_energy_tev"), col("n_tels_used")
    d_alt = col("reco_alt_deg") - col("true_alt_deg")
    d_az = ((col("reco_az_deg") - col("true_az_deg") + 180) % 360 - 180) * np.cos(np.deg2rad(col("true_alt_deg")))
    print(f"{t.num_rows} triggered array events, {valid.sum()} valid reconstructions "
          f"({args.n_showers} showers, seed {args.seed})")
    print(f"all: 68% angular {q68(sep):.3f} deg, 68% core {q68(core):.1f} m, "
          f"median d_alt {np.median(d_alt):+.4f} deg, median d_az*cos(alt) {np.median(d_az):+.4f} deg")
    edges = np.geomspace(0.03, 10.0, 6)
    print("\n| true energy (TeV) | events | 68% angular (deg) | 68% core (m) | median d_alt (deg) | median d_az·cos alt (deg) |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (energy >= lo) & (energy < hi)
        rows.append((np.sqrt(lo * hi), q68(sep[m]), q68(core[m])))
        print(f"| {lo:.2f}–{hi:.2f} | {m.sum()} | {q68(sep[m]):.3f} | {q68(core[m]):.1f} | "
              f"{np.median(d_alt[m]) if m.any() else float('nan'):+.4f} | "
              f"{np.median(d_az[m]) if m.any() else float('nan'):+.4f} |")
    print("\n| telescopes used | events | 68% angular (deg) | 68% core (m) |")
    print("| --- | --- | --- | --- |")
    mrows = []
    for lo, hi, label in ((2, 2, "2"), (3, 4, "3–4"), (5, 8, "5–8"), (9, 999, "≥ 9")):
        m = (mult >= lo) & (mult <= hi)
        mrows.append((label, q68(sep[m]), q68(core[m])))
        print(f"| {label} | {m.sum()} | {q68(sep[m]):.3f} | {q68(core[m]):.1f} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    e, ang, cor = np.array(rows).T
    a1.plot(e, ang, "o-", label="68 % angular (deg)")
    a1.set_xscale("log")
    a1.set_xlabel("true energy (TeV)")
    a1.set_ylabel("68 % containment angle (deg)")
    a1.set_title("dvp HillasReconstructor, toy gammas")
    a1b = a1.twinx()
    a1b.plot(e, cor, "s--", color="C1", label="68 % core (m)")
    a1b.set_ylabel("68 % core distance (m)")
    a2.bar([r[0] for r in mrows], [r[1] for r in mrows])
    a2.set_xlabel("telescopes used")
    a2.set_ylabel("68 % containment angle (deg)")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=100)
    print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
