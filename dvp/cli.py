"""The ``dvp`` command line: one thin function per command.

Every command turns :class:`dvp.errors.DvpError` into a one-line message on stderr
and exit code 1 (2 for usage errors, as typer does).
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from .errors import DvpError
from .io.parquet import ROW_GROUP_BYTES
from .runner import APPLY_TASK_ROWS, DL2_TASK_ROWS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="dvp: columnar Cherenkov-telescope data processing (R1 → DL1 → DL2 → DL3).")


@app.callback()
def _main(log_level: str = typer.Option("WARNING", "--log-level", help="Log messages to stderr from this level on: DEBUG (every task), INFO (run plan, each failed task as it fails), WARNING, ERROR; failures are always summarised at the end")):
    """dvp: columnar Cherenkov-telescope data processing (R1 → DL1 → DL2 → DL3)."""
    import logging
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        typer.echo(f"dvp: error: --log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dvp").setLevel(level)


def _one_line_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DvpError as e:
            typer.echo(f"dvp: error: {e}".replace("\n", " "), err=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            typer.echo("dvp: interrupted; no output was written (completed tasks, if any, are kept: rerun to resume)", err=True)
            raise typer.Exit(130)
    return wrapper


def _with_progress(label: str, quiet: bool, call, unit: str = "tel events"):
    """Run ``call(advance)`` under a rich progress bar (events, events/s, ETA) on stderr.

    ``advance(n, total=None)`` adds ``n`` events; a ``total`` sets the bar's length.
    Returns ``(result, console)``.
    """
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    if quiet:
        return call(None), console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed:,} " + unit),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task(label, total=None, rate="")

        def advance(n, total=None):
            if total is not None:
                prog.update(task, total=total)
            prog.advance(task, n)
            t = prog.tasks[0]
            if t.elapsed:
                prog.update(task, rate=f"{t.completed / t.elapsed:,.0f} ev/s" if unit == "tel events" else "")

        return call(advance), console


def _exit_on_failures(summary):
    """After a run with --skip-failed: name the failed tasks and exit 1."""
    if summary.failures:
        for f in summary.failures:
            typer.echo(f"dvp: failed: {f}", err=True)
        typer.echo(f"dvp: error: {len(summary.failures)} task(s) failed and were skipped (see provenance.json)", err=True)
        raise typer.Exit(1)


def _summary_table(console, summary, n_tel, extra=None):
    """The end-of-run table: inputs, tasks, telescope events per type, time and rate."""
    from rich.table import Table
    t = Table(title=f"wrote {summary.output}", show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("value", justify="right")
    t.add_row("inputs", f"{summary.n_inputs:,}")
    for k, v in (extra or {}).items():
        t.add_row(k, f"{v:,}")
    if summary.n_tasks:
        t.add_row("tasks", f"{summary.n_tasks:,}" + (f" ({summary.n_resumed:,} resumed)" if summary.n_resumed else ""))
    if summary.failures:
        t.add_row("failed tasks", f"[red]{len(summary.failures):,}[/red]")
    for tel_type, n in sorted(summary.n_tel_events.items()):
        t.add_row(f"telescope events {tel_type}", f"{n:,}")
    t.add_row("seconds", f"{summary.seconds:.1f}")
    t.add_row("telescope events / s", f"{n_tel / max(summary.seconds, 1e-9):,.0f}")
    console.print(t)


@app.command("simtel-to-r1")
@_one_line_errors
def simtel_to_r1(
    inputs: List[str] = typer.Argument(..., help="sim_telarray files (.simtel, .gz, .zst), globs, directories or @list.txt"),
    output: Path = typer.Option(..., "--output", "-o", help="Product directory to create"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    batch_mb: int = typer.Option(ROW_GROUP_BYTES // 2**20, help="Waveform MiB per Parquet row group (bounds memory; 16 ≈ 56 LSTCam events)"),
    allow_truncated: bool = typer.Option(False, help="Keep the events before the end of a truncated file instead of failing"),
    focal_length: str = typer.Option("equivalent", help="Focal length recorded for the camera frame: equivalent or effective"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local worker processes, one file each at a time (default: all cores); with --scheduler local, the Dask workers"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' to start a LocalCluster"),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Write the product without input files that fail (listed in provenance.json); exit code 1"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Read sim_telarray files into an R1 product directory.

    Writes instrument/ (subarray, optics, camera geometries with neighbours, readout),
    simulation/ (run configuration, every simulated shower, shower histogram),
    trigger/ (one row per array event) and r1/tel_type=<type>/ (calibrated,
    gain-selected float32 waveforms, as ctapipe 0.28's SimTelEventSource makes them),
    one part file per input file. Files are converted in parallel (local processes or
    Dask); an interrupted run resumes from the files already converted.
    """
    from .runner import simtel_to_r1 as run

    if focal_length not in ("equivalent", "effective"):
        raise DvpError(f"--focal-length must be 'equivalent' or 'effective', not {focal_length!r}")
    summary, console = _with_progress("simtel-to-r1", quiet, lambda advance: run(
        inputs, output, overwrite=overwrite, batch_bytes=batch_mb * 2**20, allow_truncated=allow_truncated,
        focal_length_choice=focal_length, progress=advance, workers=workers, scheduler=scheduler,
        skip_failed=skip_failed))
    n_tel = sum(summary.n_tel_events.values())
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    _summary_table(console, summary, n_tel, extra={"array events": summary.n_array_events,
                                                   "simulated showers": summary.n_showers})
    _exit_on_failures(summary)


@app.command("r1-to-dl1")
@_one_line_errors
def r1_to_dl1(
    inputs: List[str] = typer.Argument(..., help="R1 product directories (from simtel-to-r1 or simulate), globs or @list.txt"),
    output: Path = typer.Option(..., "--output", "-o", help="DL1 product directory to create"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config (see configs/); default: ctapipe 0.28's defaults"),
    set_: List[str] = typer.Option([], "--set", help="Override one config value, e.g. --set 'r1_to_dl1.cleaner.LST*.picture_threshold_pe=8' (repeatable)"),
    write_images: bool = typer.Option(False, "--write-images", help="Also store per-pixel image, peak time and cleaning mask"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local worker processes (default: all cores); with --scheduler local, the Dask workers"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the tasks on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' to start a LocalCluster"),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Write the product even if some tasks fail (corrupt inputs), listing them in provenance.json; exit code 1"),
    task_size: int = typer.Option(64, "--task-size", help="R1 row groups per task (~56 LSTCam events each): the unit of parallel work and of resumption"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Calibrate, clean and parameterise R1 images into a DL1 product directory.

    Extraction (default NeighborPeakWindowSum 7/3 with integration correction), peak-time
    shift, invalid-pixel interpolation, cleaning (default tailcuts 10/5, 2 neighbours),
    image quality query, then Hillas, leakage, concentration, timing, morphology and
    intensity/peak-time statistics in the telescope frame, as ctapipe 0.28's
    CameraCalibrator + ImageProcessor. Writes dl1/tel_type=<type>/ (one row per
    telescope event) and carries instrument/, simulation/ and trigger/ over.

    The work runs as tasks (--task-size row groups of one file) on local processes or a
    Dask cluster, with the same output either way. The run is built in .OUTPUT.partial/
    next to OUTPUT: after Ctrl-C, a killed job or a failed task, the same command resumes
    from the completed, checksummed tasks.
    """
    from .config import load_config
    from .runner import r1_to_dl1 as run

    cfg = load_config(config, set_)
    summary, console = _with_progress("r1-to-dl1", quiet, lambda advance: run(
        inputs, output, cfg, overwrite=overwrite, write_images=write_images or None, progress=advance,
        workers=workers, scheduler=scheduler, skip_failed=skip_failed, task_row_groups=task_size))
    n_tel = sum(summary.n_tel_events.values())
    for w in summary.warnings:
        console.print(f"[yellow]note:[/yellow] {w}")
    _summary_table(console, summary, n_tel)
    _exit_on_failures(summary)


@app.command("dl1-to-dl2")
@_one_line_errors
def dl1_to_dl2(
    inputs: List[str] = typer.Argument(..., help="DL1 product directories (from r1-to-dl1), globs or @list.txt"),
    output: Path = typer.Option(..., "--output", "-o", help="DL2 product directory to create"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config (see configs/); default: ctapipe 0.28's defaults"),
    set_: List[str] = typer.Option([], "--set", help="Override one config value, e.g. --set 'dl1_to_dl2.quality.criteria=[[\"bright\", \"hillas_intensity_pe > 100\"]]' (repeatable)"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local worker processes (default: all cores); with --scheduler local, the Dask workers"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the tasks on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' to start a LocalCluster"),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Write the product even if some tasks fail (corrupt inputs), listing them in provenance.json; exit code 1"),
    task_size: int = typer.Option(DL2_TASK_ROWS, "--task-size", help="Telescope events per task (a range of whole array events): the unit of parallel work, resumption and memory (~1 KiB each at peak)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Reconstruct the stereo shower geometry of DL1 events into a DL2 product directory.

    ctapipe 0.28's ShowerProcessor with HillasReconstructor: telescopes passing the stereo
    quality query (intensity > 50 p.e., width > 0, > 3 pixels) give direction, core,
    h_max and per-telescope impact distances. Writes dl2/ (one row per array event, true
    shower values for simulations) and dl2_telescopes/ (one row per telescope event), and
    carries instrument/, simulation/, trigger/ and the DL1 parameters (dl1/, no images:
    the features of dvp train / apply-models) over.

    The work runs as tasks (ranges of whole array events of --task-size telescope
    events, read from the files' row-group statistics) on local processes or a Dask
    cluster, with the same output either way; as r1-to-dl1, an interrupted or failed
    run resumes from .OUTPUT.partial/.
    """
    from .config import load_config
    from .runner import dl1_to_dl2 as run

    cfg = load_config(config, set_)
    summary, console = _with_progress("dl1-to-dl2", quiet, lambda advance: run(
        inputs, output, cfg, overwrite=overwrite, progress=advance, workers=workers, scheduler=scheduler,
        skip_failed=skip_failed, task_rows=task_size))
    for w in summary.warnings:
        console.print(f"[yellow]note:[/yellow] {w}")
    _summary_table(console, summary, sum(summary.n_tel_events.values()),
                   extra={"array events": summary.n_array_events})
    _exit_on_failures(summary)


@app.command()
@_one_line_errors
def train(
    kind: str = typer.Argument(..., help="energy (regression of log10 true energy) or particle (gamma/hadron)"),
    signal: List[str] = typer.Option(..., "--signal", help="DL2 product directories of gammas (dl1-to-dl2 or apply-models output), globs or @list.txt; repeatable"),
    background: List[str] = typer.Option([], "--background", help="DL2 product directories of background (protons, electrons) for particle models; repeatable"),
    output: Path = typer.Option(..., "--output", "-o", help="Model-set directory to create (model_set.json + one LightGBM file per telescope type)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config with an \\[ml] section (features, derived features, LightGBM parameters, folds, seed). "
                                                "configs/ml-fast.toml in dvp's source tree trains about 5x faster than ctapipe's ExtraTrees, "
                                                "less accurately than the defaults"),
    set_: List[str] = typer.Option([], "--set", help="Override one config value, e.g. --set ml.lightgbm.num_leaves=31 (repeatable)"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Processes running the cross-validation folds and the final fit (default: all cores); the trees do not depend on it"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the fits on a Dask cluster (address, or 'local')"),
    cv_predictions: bool = typer.Option(True, help="Also write cv_predictions.parquet: every training telescope event's out-of-fold prediction (python -m dvp.ml.report MODELS prints them per energy bin)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Train one LightGBM model per telescope type for energy or gamma/hadron separation.

    Features: DL1 image parameters, the telescope's impact distance and the event's
    h_max and multiplicity (and, for particle models, the reconstructed energy: apply an
    energy model first), plus derived features defined in config. K-fold cross-validation
    grouped by array event (no shower in both training and test), early stopping on a
    held-out 10 % of events, seeded. Writes LightGBM model files, model_set.json
    (features, cross-validation scores, training data and provenance) and, as ctapipe's
    --cv-output, cv_predictions.parquet (each training event's out-of-fold prediction).
    """
    from .config import load_config
    from .runner_ml import train as run

    cfg = load_config(config, set_)
    summary, console = _with_progress(f"train {kind}", quiet, lambda advance: run(
        kind, signal, background, output, cfg, overwrite=overwrite, progress=advance, workers=workers,
        scheduler=scheduler, cv_predictions=cv_predictions), unit="trainings")
    from rich.table import Table
    t = Table(title=f"wrote {summary.output} in {summary.seconds:.1f} s", header_style="bold")
    for c in ("telescope type", "telescope events", "cross-validation (mean of folds)"):
        t.add_column(c, justify="right" if c == "telescope events" else "left")
    for tel_type, n in summary.n_tel_events.items():
        cv = summary.cv.get(tel_type)
        t.add_row(tel_type, f"{n:,}", ", ".join(f"{k[:-5]} {v:.3f}" for k, v in cv.items()) if cv
                  else "no model (too few events)")
    console.print(t)
    if cv_predictions:
        console.print(f"per energy bin: python -m dvp.ml.report {summary.output} (its cv_predictions.parquet)")


@app.command("apply-models")
@_one_line_errors
def apply_models(
    inputs: List[str] = typer.Argument(..., help="DL2 product directories (dl1-to-dl2 output), globs or @list.txt"),
    models: List[Path] = typer.Option(..., "--models", "-m", help="Model-set directory from dvp train, or a directory holding several (energy and particle); repeatable"),
    output: Path = typer.Option(..., "--output", "-o", help="DL2 product directory to create"),
    energy_weights: Optional[str] = typer.Option(None, help="Combine telescope energies weighted by inverse_variance, intensity, aspect_weighted_intensity or none (default: the model set's)"),
    gammaness_weights: Optional[str] = typer.Option(None, help="Combine telescope gammaness weighted by intensity, none or aspect_weighted_intensity (default: the model set's)"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local worker processes (default: all cores); with --scheduler local, the Dask workers"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the tasks on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' to start a LocalCluster"),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Write the product even if some tasks fail (corrupt inputs), listing them in provenance.json; exit code 1"),
    task_size: int = typer.Option(APPLY_TASK_ROWS, "--task-size", help="Telescope events per task (a range of whole array events): the unit of parallel work, resumption and memory"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Predict energy and gammaness per telescope, then combine them per array event.

    Adds reco_energy_tev (10^ weighted mean of log10 energies), its uncertainty,
    gammaness (weighted mean probability), validity flags and telescope counts to dl2/,
    and each telescope's prediction to dl2_telescopes/, as ctapipe's EnergyRegressor /
    ParticleClassifier with StereoMeanCombiner. An energy model runs before a particle
    model, so the classifier can use the energy just reconstructed. Runs as tasks over
    ranges of whole array events, like dl1-to-dl2 (parallel, resumable).
    """
    from .runner_ml import apply_models as run

    weights = {k: v for k, v in (("energy", energy_weights), ("particle", gammaness_weights)) if v}
    summary, console = _with_progress("apply-models", quiet, lambda advance: run(
        inputs, models, output, weights=weights, overwrite=overwrite, progress=advance, workers=workers,
        scheduler=scheduler, skip_failed=skip_failed, task_rows=task_size))
    for w in summary.warnings:
        console.print(f"[yellow]note:[/yellow] {w}")
    _summary_table(console, summary, summary.n_tel_events.get("dl2_telescopes", 0),
                   extra={"array events": summary.n_array_events})
    _exit_on_failures(summary)


@app.command()
@_one_line_errors
def simulate(
    particle: str = typer.Option(..., "--particle", help="Primary: gamma, electron, proton or muon (single muons hitting one telescope)"),
    n_showers: int = typer.Option(..., "--n-showers", help="Showers (or muons) to simulate (each used --reuse times)"),
    output: Path = typer.Option(..., "--output", "-o", help="Product directory to create (R1, or DL1 with --level dl1)"),
    layout: Optional[Path] = typer.Option(None, "--layout", help="sim_telarray file whose instrument and pointing to use (default: the shared CTAO-North alpha test file)"),
    energy_range: Optional[Tuple[float, float]] = typer.Option(None, "--energy-range", help="MIN MAX true energy, TeV (default 0.03 10; muons 0.01 0.1)"),
    spectral_index: float = typer.Option(-2.0, "--spectral-index", help="Power-law index of dN/dE (e.g. -2)"),
    viewcone_deg: float = typer.Option(0.0, "--viewcone-deg", help="Diffuse within this cone around the pointing (0: point-like)"),
    offset_deg: float = typer.Option(0.0, "--offset-deg", help="Point-like source offset from the pointing (viewcone 0)"),
    scatter_radius_m: float = typer.Option(1000.0, "--scatter-radius-m", help="Cores uniform in a disk of this radius, m (unused for muons)"),
    reuse: int = typer.Option(10, "--reuse", help="Times each shower is used with a new core (1-100)"),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives identical tables"),
    obs_id: int = typer.Option(1, "--obs-id", help="Observation (run) id of the simulated events: give separate runs different ids so their products can be merged or reconstructed together"),
    level: str = typer.Option("r1", "--level", help="r1: waveforms (as simtel-to-r1); dl1: run r1-to-dl1 in memory and write only DL1"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="With --level dl1: TOML or YAML config of the R1 → DL1 stage (as r1-to-dl1)"),
    set_: List[str] = typer.Option([], "--set", help="With --level dl1: override one config value (repeatable), as r1-to-dl1"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local worker processes, one block of 20,000 showers each at a time (default: all cores); with --scheduler local, the Dask workers"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' to start a LocalCluster"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Toy air-shower Monte Carlo into an R1 (or DL1) product directory (layout of simtel-to-r1 / r1-to-dl1).

    Parametrised showers (Heitler X_max, exponential atmosphere), Gaussian emission
    regions projected through each telescope's optics, Poisson p.e., NSB, noise and the
    camera's reference pulse; ≥ 4 pixels ≥ 8 p.e. per telescope, ≥ 2 telescopes. Muons:
    rings after Vacanti et al. (1994), true ring parameters in simulation/muons.parquet.
    --level dl1 gives what `simulate --level r1` followed by `r1-to-dl1` gives.
    A toy for tests and sanity checks, not a replacement for CORSIKA/sim_telarray.
    """
    from .config import load_config
    from .runner import simulate as run

    if (config is not None or set_) and level != "dl1":
        raise DvpError("--config/--set configure the R1 → DL1 stage: use them with --level dl1")
    cfg = load_config(config, set_) if level == "dl1" else None
    summary, console = _with_progress("simulate", quiet, lambda advance: run(
        particle, n_showers, output, layout=layout, energy_range=energy_range, spectral_index=spectral_index,
        viewcone_deg=viewcone_deg, offset_deg=offset_deg, scatter_radius_m=scatter_radius_m, reuse=reuse,
        seed=seed, obs_id=obs_id, level=level, config=cfg, overwrite=overwrite, progress=advance,
        workers=workers, scheduler=scheduler), unit="showers")
    _summary_table(console, summary, sum(summary.n_tel_events.values()),
                   extra={"simulated showers × reuse": summary.n_showers, "triggered array events": summary.n_array_events})


@app.command()
@_one_line_errors
def info(path: Path = typer.Argument(..., help="A product directory or a sim_telarray file"),
         json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text")):
    """Summarise a product directory (levels, telescopes per type, events, showers, schema
    version, provenance) or a sim_telarray file."""
    import json

    from .info import render, summarize

    data = summarize(path)
    if json_out:
        typer.echo(json.dumps(data, indent=1, default=str))
    else:
        render(data, typer.echo)


@app.command()
@_one_line_errors
def merge(
    inputs: List[str] = typer.Argument(..., help="Product directories (any level), globs or @list.txt; give them in obs_id order to keep event order"),
    output: Path = typer.Option(..., "--output", "-o", help="Product directory to create"),
    row_group_mb: int = typer.Option(64, "--row-group-mb", help="Minimum MiB (in memory) per Parquet row group of every table but R1 waveforms"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Merge many small product directories into one with large row groups.

    All inputs must hold the same levels (r1/, dl1/, dl2/, dl2_telescopes/, trigger/,
    simulation/ tables), the same instrument, the same optional columns (DL1 images,
    DL2 model columns) and no event twice. Writes one part-00000.parquet per partition
    and table, rows in input order then file order (event order when the inputs are
    given in obs_id order, so that later tasks read narrow key ranges), instrument/ from the first
    input. R1 waveform row groups stay at ~16 MiB.
    """
    from .merge import merge as run

    if row_group_mb < 1:
        raise DvpError(f"--row-group-mb must be ≥ 1, not {row_group_mb}")
    summary, console = _with_progress("merge", quiet, lambda advance: run(
        inputs, output, overwrite=overwrite, row_group_bytes=row_group_mb * 2**20, progress=advance), unit="rows")
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    _summary_table(console, summary, sum(summary.n_tel_events.values()),
                   extra={"array events": summary.n_array_events, "MiB read": summary.input_bytes // 2**20,
                          "MiB / s": int(summary.input_bytes / 2**20 / max(summary.seconds, 1e-9))})


def _reflow(doc: str) -> str:
    """``doc`` with each paragraph's lines joined into one (paragraphs starting with
    ``\\b`` kept as they are). typer 0.29 (the tested version) keeps a docstring's single
    line breaks, so a terminal narrower than the source's 88 columns broke every line twice."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


for _info in app.registered_commands:
    _info.help = _reflow(_info.help or inspect.getdoc(_info.callback) or "")
del _info


def main():
    app()


if __name__ == "__main__":
    main()
