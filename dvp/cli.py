"""The ``dvp`` command line: one thin function per command.

Every command turns :class:`dvp.errors.DvpError` into a one-line message on stderr
and exit code 1 (2 for usage errors, as typer does).
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import DvpError
from .io.parquet import ROW_GROUP_BYTES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="dvp: columnar Cherenkov-telescope data processing (R1 → DL1 → DL2 → DL3).")


def _one_line_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DvpError as e:
            typer.echo(f"dvp: error: {e}".replace("\n", " "), err=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            typer.echo("dvp: interrupted; no output was written", err=True)
            raise typer.Exit(130)
    return wrapper


@app.command("simtel-to-r1")
@_one_line_errors
def simtel_to_r1(
    inputs: List[str] = typer.Argument(..., help="sim_telarray files (.simtel, .gz, .zst), globs, directories or @list.txt"),
    output: Path = typer.Option(..., "--output", "-o", help="Product directory to create"),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists (only once the new one is complete)"),
    batch_mb: int = typer.Option(ROW_GROUP_BYTES // 2**20, help="Waveform MiB per Parquet row group (bounds memory; 16 ≈ 56 LSTCam events)"),
    allow_truncated: bool = typer.Option(False, help="Keep the events before the end of a truncated file instead of failing"),
    focal_length: str = typer.Option("equivalent", help="Focal length recorded for the camera frame: equivalent or effective"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary"),
):
    """Read sim_telarray files into an R1 product directory.

    Writes instrument/ (subarray, optics, camera geometries with neighbours, readout),
    simulation/ (run configuration, every simulated shower, shower histogram),
    trigger/ (one row per array event) and r1/tel_type=<type>/ (calibrated,
    gain-selected float32 waveforms, as ctapipe 0.28's SimTelEventSource makes them).
    """
    from .runner import simtel_to_r1 as run

    if focal_length not in ("equivalent", "effective"):
        raise DvpError(f"--focal-length must be 'equivalent' or 'effective', not {focal_length!r}")
    if quiet:
        summary = run(inputs, output, overwrite=overwrite, batch_bytes=batch_mb * 2**20,
                      allow_truncated=allow_truncated, focal_length_choice=focal_length)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]simtel-to-r1"), BarColumn(), TextColumn("{task.completed} tel events"),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=True) as prog:
        task = prog.add_task("r1", total=None, rate="")

        def advance(n):
            prog.advance(task, n)
            t = prog.tasks[0]
            if t.elapsed:
                prog.update(task, rate=f"{t.completed / t.elapsed:,.0f} ev/s")

        summary = run(inputs, output, overwrite=overwrite, batch_bytes=batch_mb * 2**20,
                      allow_truncated=allow_truncated, focal_length_choice=focal_length, progress=advance)
    n_tel = sum(summary.n_tel_events.values())
    console.print(f"wrote {summary.output}: {summary.n_inputs} input file(s), {summary.n_array_events} array events, "
                  f"{n_tel} telescope events {summary.n_tel_events or ''}, {summary.n_showers} simulated showers "
                  f"in {summary.seconds:.1f} s")
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


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


def main():
    app()


if __name__ == "__main__":
    main()
