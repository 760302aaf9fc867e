"""Runs commands: file sets in, product directory out, atomically, with provenance.

The runner owns all I/O, batching and progress; stages and kernels stay pure.
"""
from __future__ import annotations

import glob
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from . import schemas as S
from .errors import DvpError, InputError
from .io.parquet import ROW_GROUP_BYTES, PartitionedWriter, ProductWriter, write_table
from .provenance import now, start_record

SIMTEL_SUFFIXES = (".simtel", ".simtel.gz", ".simtel.zst", ".gz", ".zst")


def expand_inputs(inputs, suffixes=SIMTEL_SUFFIXES) -> list[Path]:
    """Paths, globs, directories (searched for ``suffixes``) and ``@list.txt`` files → sorted paths."""
    out = []
    for item in inputs:
        item = str(item)
        if item.startswith("@"):
            lst = Path(item[1:])
            if not lst.is_file():
                raise InputError(lst, "list file does not exist")
            out.extend(expand_inputs([ln.strip() for ln in lst.read_text().splitlines()
                                      if ln.strip() and not ln.startswith("#")], suffixes))
        elif any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item, recursive=True))
            if not hits:
                raise InputError(item, "glob matches no file")
            out.extend(Path(h) for h in hits)
        elif Path(item).is_dir():
            hits = sorted(p for p in Path(item).rglob("*") if p.is_file() and p.name.endswith(suffixes))
            if not hits:
                raise InputError(item, f"directory holds no input file ({', '.join(suffixes)})")
            out.extend(hits)
        else:
            out.append(Path(item))
    return out


@dataclass
class RunSummary:
    output: Path
    n_inputs: int = 0
    n_tel_events: dict = field(default_factory=dict)
    n_array_events: int = 0
    n_showers: int = 0
    seconds: float = 0.0
    input_bytes: int = 0
    warnings: list = field(default_factory=list)


def _concat(tables, schema_name):
    tables = [t for t in tables if t is not None]
    if not tables:
        return S.schema(schema_name).empty_table()
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="none")


def simtel_to_r1(inputs, output, *, overwrite=False, batch_bytes=ROW_GROUP_BYTES, allow_truncated=False,
                 focal_length_choice="equivalent", progress=None) -> RunSummary:
    """Convert sim_telarray files into one R1 product directory.

    All inputs must share one instrument description. Any bad input aborts the run with
    a one-line :class:`InputError` before anything is committed.
    """
    from .io.simtel import GAIN_THRESHOLD_ADC, SimtelR1Reader, check_simtel_file

    paths = expand_inputs(inputs)
    if not paths:
        raise DvpError("no input files given")
    t0 = time.perf_counter()
    config = {"batch_bytes": batch_bytes, "allow_truncated": allow_truncated,
              "focal_length_choice": focal_length_choice, "gain_threshold_adc": GAIN_THRESHOLD_ADC}
    summary = RunSummary(output=Path(output), n_inputs=len(paths))
    for p in paths:  # fail fast, before any work, on the cheap checks
        check_simtel_file(p)
    prov = start_record("simtel-to-r1", paths, config)
    with ProductWriter(output, overwrite=overwrite) as pw:
        r1 = PartitionedWriter(pw.path("r1"), S.R1_EVENTS, provenance=prov)
        runs, showers, triggers, dists = [], [], [], []
        subarray = None
        try:
            for path in paths:
                reader = SimtelR1Reader(path, batch_bytes=batch_bytes, allow_truncated=allow_truncated,
                                        focal_length_choice=focal_length_choice)
                try:
                    if subarray is None:
                        subarray = reader.subarray
                    elif subarray.fingerprint() != reader.subarray.fingerprint():
                        raise InputError(path, f"instrument differs from {paths[0]}; "
                                               "convert files of different arrays separately")
                    for tel_type, batch in reader.batches():
                        r1.write(tel_type, batch)
                        if progress:
                            progress(batch.num_rows)
                    if reader.truncated:
                        summary.warnings.append(f"{path}: truncated; kept {reader.n_tel_events} telescope events")
                    runs.append(reader.run_table())
                    showers.append(reader.shower_table())
                    triggers.append(reader.trigger_table())
                    dists.append(reader.distribution_table())
                finally:
                    reader.close()
                summary.input_bytes += path.stat().st_size
        finally:
            r1.close()
        subarray.write(pw.tmp, lambda t, p, n: write_table(t, p, n, prov))
        write_table(_concat(runs, S.SIM_RUN), pw.path("simulation", "runs.parquet"), S.SIM_RUN, prov)
        sh = _concat(showers, S.SIM_SHOWER)
        write_table(sh, pw.path("simulation", "showers.parquet"), S.SIM_SHOWER, prov)
        write_table(_concat(dists, S.SIM_SHOWER_DISTRIBUTION), pw.path("simulation", "shower_distribution.parquet"),
                    S.SIM_SHOWER_DISTRIBUTION, prov)
        tr = _concat(triggers, S.R1_TRIGGER)
        write_table(tr, pw.path("trigger", "part-00000.parquet"), S.R1_TRIGGER, prov)
        summary.n_tel_events = dict(r1.rows)
        summary.n_array_events = tr.num_rows
        summary.n_showers = sh.num_rows
        summary.seconds = time.perf_counter() - t0
        record = dict(prov, stop=now(), seconds=round(summary.seconds, 3), warnings=summary.warnings,
                      counts={"array_events_out": summary.n_array_events, "showers_out": summary.n_showers,
                              "telescope_events_out": summary.n_tel_events},
                      levels=["instrument", "simulation", "r1"])
        pw.path("provenance.json").write_text(json.dumps(record, indent=1, default=str))
        pw.commit()
    return summary
