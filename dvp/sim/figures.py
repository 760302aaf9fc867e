"""Figure set of the toy Monte Carlo: DL1 parameter distributions it produces.

Three PNGs (matplotlib, Agg backend), each with six panels (width, length, number of
islands, intensity, concentration of the c.o.g. pixels, timing slope), normalised
histograms of telescope events passing the image quality query and ``intensity > 50 p.e.``
(samples of fewer than :data:`MIN_HISTOGRAM` events are drawn as one tick per event):

- ``gamma_vs_proton_dl1.png``: toy gammas vs toy protons (all telescope types);
- ``lstcam_toy_vs_simtel_dl1.png``: LST telescope events of toy gammas simulated with
  the run parameters (energy range, spectral index, viewcone, scatter radius, reuse) of
  the shared sim_telarray gamma file, vs that file through ``dvp simtel-to-r1`` and
  ``dvp r1-to-dl1`` (it holds only 2 LST telescope events, none above the intensity
  cut: the figure shows the toy's side; the file is too small for a comparison);
- ``lstcam_muons_toy_vs_simtel_dl1.png``: toy muons on the instrument of the shared
  ``lst_muons`` file, with its run parameters, vs its 30 sim_telarray muon rings.

Usage: ``python -m dvp.sim.figures OUT_DIR [--n-showers N] [--seed S]`` (``make sim-figures``).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from .. import schemas as S

#: (column, axis label, log-scale x)
PARAMETERS = (
    (S.HILLAS_WIDTH, "hillas width (deg)", False),
    (S.HILLAS_LENGTH, "hillas length (deg)", False),
    ("morphology_n_islands", "number of islands", False),
    (S.HILLAS_INTENSITY, "intensity (p.e.)", True),
    ("concentration_cog", "concentration (c.o.g.)", False),
    ("timing_slope_ns_per_deg", "timing slope (ns/deg)", False),
)
MIN_INTENSITY_PE = 50.0
MIN_HISTOGRAM = 40
REAL_GAMMA_FILE = "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst"
REAL_MUON_FILE = "lst_muons.simtel.zst"


def load_dl1(product, tel_type_prefix: str | None = None):
    """Valid telescope events with intensity > MIN_INTENSITY_PE of a DL1 product (polars)."""
    import polars as pl

    d = pl.read_parquet(Path(product) / "dl1" / "**" / "*.parquet", hive_partitioning=True,
                        columns=[S.TEL_TYPE, S.IS_VALID] + [p[0] for p in PARAMETERS])
    d = d.filter(pl.col(S.IS_VALID) & (pl.col(S.HILLAS_INTENSITY) > MIN_INTENSITY_PE))
    if tel_type_prefix:
        d = d.filter(pl.col(S.TEL_TYPE).str.starts_with(tel_type_prefix))
    return d


def compare(samples: dict, path, title: str) -> Path:
    """Write a 2×3 panel PNG overlaying normalised histograms of ``samples`` (label → polars frame)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (col, label, log) in zip(axes.ravel(), PARAMETERS):
        values = {k: np.asarray(d[col].to_numpy(), np.float64) for k, d in samples.items()}
        values = {k: v[np.isfinite(v)] for k, v in values.items()}
        pooled = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
        if col == "morphology_n_islands":
            bins = np.arange(-0.5, max(6, pooled.max()) + 1.5)
        elif log:
            bins = np.geomspace(MIN_INTENSITY_PE, max(pooled.max(), 2 * MIN_INTENSITY_PE), 30)
            ax.set_xscale("log")
        else:
            lo, hi = np.percentile(pooled, [1, 99])
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        for i, (k, v) in enumerate(values.items()):
            color = f"C{i}"
            if len(v) >= MIN_HISTOGRAM:
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.5, color=color, label=f"{k} ({len(v)})")
            else:   # too few for a histogram: one tick per event along the bottom
                ax.plot(v, np.zeros(len(v)), "|", ms=25, mew=2, color=color, label=f"{k} ({len(v)} events)")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def make_figure_set(out_dir, *, n_showers: int = 2000, seed: int = 0, simtel=None, work_dir=None) -> list[Path]:
    """Simulate (DL1 level), convert the sim_telarray files, and write the three PNGs.

    ``n_showers`` per particle (× reuse 5); ``simtel`` defaults to the shared gamma file
    (whose layout the toy uses as well). Returns the written paths.
    """
    import polars as pl

    from ..runner import DEFAULT_LAYOUT, r1_to_dl1, simtel_to_r1, simulate

    simtel = Path(simtel) if simtel is not None else DEFAULT_LAYOUT.parent / REAL_GAMMA_FILE
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        common = dict(layout=simtel, reuse=5, seed=seed, level="dl1")
        simulate("gamma", n_showers, tmp / "gamma", energy_range=(0.03, 30.0), scatter_radius_m=500.0, **common)
        simulate("proton", n_showers, tmp / "proton", energy_range=(0.1, 100.0), scatter_radius_m=500.0,
                 viewcone_deg=4.0, **dict(common, seed=seed + 1))
        written = [compare({"toy gamma": load_dl1(tmp / "gamma"), "toy proton": load_dl1(tmp / "proton")},
                           out_dir / "gamma_vs_proton_dl1.png",
                           f"dvp simulate: gammas (0.03-30 TeV, point-like) vs protons (0.1-100 TeV, diffuse 4°), "
                           f"intensity > {MIN_INTENSITY_PE:g} p.e.")]
        simtel_to_r1([simtel], tmp / "real_r1")
        r1_to_dl1([tmp / "real_r1"], tmp / "real_dl1")
        def like(product_r1):
            """Run parameters of a converted sim_telarray file as ``simulate`` arguments."""
            run = pl.read_parquet(product_r1 / "simulation" / "runs.parquet").row(0, named=True)
            return dict(energy_range=(run["energy_min_tev"], min(run["energy_max_tev"], 100.0)),
                        spectral_index=run["spectral_index"], viewcone_deg=min(run["max_viewcone_deg"], 20.0),
                        scatter_radius_m=run["max_scatter_m"], reuse=int(min(max(run["shower_reuse"], 1), 100)))
        simulate("gamma", n_showers, tmp / "like_real", **dict(common, seed=seed + 2, **like(tmp / "real_r1")))
        written.append(compare({"toy gamma": load_dl1(tmp / "like_real", "LST"),
                                "sim_telarray gamma": load_dl1(tmp / "real_dl1", "LST")},
                               out_dir / "lstcam_toy_vs_simtel_dl1.png",
                               f"LST events: dvp simulate vs {simtel.name[:40]}… (same run parameters), "
                               f"intensity > {MIN_INTENSITY_PE:g} p.e."))
        muon_file = DEFAULT_LAYOUT.parent / REAL_MUON_FILE
        simtel_to_r1([muon_file], tmp / "muon_r1")
        r1_to_dl1([tmp / "muon_r1"], tmp / "muon_dl1")
        mu = like(tmp / "muon_r1")
        del mu["scatter_radius_m"]   # toy muons hit within 1.2 mirror radii (sim_telarray: 9.6 m)
        simulate("muon", max(n_showers // 5, 20), tmp / "toy_muons",
                 **dict(common, layout=muon_file, seed=seed + 3, **dict(mu, reuse=1)))
        written.append(compare({"toy muons": load_dl1(tmp / "toy_muons", "LST"),
                                "sim_telarray muons": load_dl1(tmp / "muon_dl1", "LST")},
                               out_dir / "lstcam_muons_toy_vs_simtel_dl1.png",
                               f"LSTCam muon rings: dvp simulate vs {REAL_MUON_FILE} (same instrument and run "
                               f"parameters), intensity > {MIN_INTENSITY_PE:g} p.e."))
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n-showers", type=int, default=2000, help="showers per particle (× reuse 5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for p in make_figure_set(args.out_dir, n_showers=args.n_showers, seed=args.seed):
        print(p)


if __name__ == "__main__":
    main()
