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
from .io.parquet import ROW_GROUP_BYTES, UNCOMPRESSED_COLUMNS, PartitionedWriter, ProductWriter, is_product_dir, write_table
from .provenance import now, start_record

SIMTEL_SUFFIXES = (".simtel", ".simtel.gz", ".simtel.zst", ".gz", ".zst")


def _list_file(path) -> list[str]:
    """Entries of an ``@list.txt`` file: one per line, blank lines and ``#`` comments skipped."""
    lst = Path(path)
    if not lst.is_file():
        raise InputError(lst, "list file does not exist")
    return [ln.strip() for ln in lst.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def expand_inputs(inputs, suffixes=SIMTEL_SUFFIXES) -> list[Path]:
    """Paths, globs, directories (searched for ``suffixes``) and ``@list.txt`` files → sorted paths."""
    out = []
    for item in inputs:
        item = str(item)
        if item.startswith("@"):
            out.extend(expand_inputs(_list_file(item[1:]), suffixes))
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


# -- R1 → DL1 ------------------------------------------------------------------------

PRODUCT_SIM_TABLES = (("runs.parquet", S.SIM_RUN), ("showers.parquet", S.SIM_SHOWER),
                      ("shower_distribution.parquet", S.SIM_SHOWER_DISTRIBUTION))


def expand_products(inputs, level: str) -> list[Path]:
    """Product directories (paths, globs, ``@list``) that hold ``level`` data."""
    out = []
    for item in inputs:
        item = str(item)
        if item.startswith("@"):
            out.extend(expand_products(_list_file(item[1:]), level))
            continue
        hits = sorted(glob.glob(item)) if any(ch in item for ch in "*?[") else [item]
        if not hits:
            raise InputError(item, "glob matches no product directory")
        for h in hits:
            p = Path(h)
            if not p.exists():
                raise InputError(p, "does not exist")
            if not is_product_dir(p):
                raise InputError(p, "not a dvp product directory (no instrument/subarray.parquet)")
            if not (p / level).is_dir():
                raise InputError(p, f"product directory has no {level}/ data")
            out.append(p)
    return out


def _level_files(product: Path, level: str) -> list[tuple[str, Path]]:
    """``(tel_type, file)`` for every Parquet file of a hive-partitioned level."""
    files = []
    for d in sorted((product / level).iterdir()):
        if not d.is_dir() or not d.name.startswith("tel_type="):
            raise InputError(d, f"unexpected entry in {level}/ (expected tel_type=<type>/ directories)")
        files.extend((d.name.split("=", 1)[1], f) for f in sorted(d.glob("*.parquet")))
    return files


def _open_checked(path: Path, schema_name: str, columns) -> "pq.ParquetFile":
    """Open a Parquet file and check that ``columns`` exist with the schema's types."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
        file_schema = pf.schema_arrow
    except (OSError, pa.ArrowException) as e:
        raise InputError(path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
    for col in columns:
        if col not in file_schema.names:
            raise InputError(path, f"missing column {col!r} (not a {schema_name} file, or written by an older dvp)")
        want = S.field(schema_name, col, 1).type
        got = file_schema.field(col).type
        same = (pa.types.is_fixed_size_list(want) and pa.types.is_fixed_size_list(got)
                and want.value_type == got.value_type) or want == got
        if not same:
            raise InputError(path, f"column {col!r} has type {got}, expected {want}")
    return pf


def _read_simulation(products) -> dict:
    import pyarrow.parquet as pq
    out = {}
    for fname, schema_name in PRODUCT_SIM_TABLES:
        tables = []
        for p in products:
            f = p / "simulation" / fname
            if f.is_file():
                try:
                    tables.append(pq.read_table(f))
                except (OSError, pa.ArrowException) as e:
                    raise InputError(f, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
        if tables:
            out[fname] = (_concat(tables, schema_name), schema_name)
    return out


def r1_to_dl1(inputs, output, config=None, *, overwrite=False, write_images=None, progress=None,
              command="r1-to-dl1") -> RunSummary:
    """Process R1 product directories into one DL1 product directory.

    The instrument, simulation and trigger tables are carried over; ``dl1/`` gets one
    ``tel_type=<type>/part-00000.parquet`` per telescope type, one row group per R1 row
    group, so memory is bounded by the R1 row-group size.
    """
    import pyarrow.parquet as pq

    from .config import Config
    from .instrument.subarray import SubarrayDescription
    from .io.fastlist import read_row_group
    from .stages.r1_to_dl1 import R1_INPUT_COLUMNS, prepare_camera
    from .stages.r1_to_dl1 import r1_to_dl1 as stage

    config = config or Config()
    cfg = config.r1_to_dl1
    if write_images is not None:
        from dataclasses import replace
        cfg = replace(cfg, write_images=write_images)
    products = expand_products(inputs, "r1")
    if not products:
        raise DvpError("no input product directories given")
    t0 = time.perf_counter()
    subarray = SubarrayDescription.read(products[0])
    work = []
    for p in products:
        if p != products[0] and SubarrayDescription.read(p).fingerprint() != subarray.fingerprint():
            raise InputError(p, f"instrument differs from {products[0]}; process different arrays separately")
        for tel_type, f in _level_files(p, "r1"):
            work.append((tel_type, _open_checked(f, S.R1_EVENTS, R1_INPUT_COLUMNS), f))
    setups = {}
    for tel_type, _, f in work:  # resolve config per type before any output exists
        if tel_type not in setups:
            setups[tel_type] = prepare_camera(subarray, tel_type, cfg)
    sim = _read_simulation(products)
    summary = RunSummary(output=Path(output), n_inputs=len(products))
    prov = start_record(command, products, config.to_dict())
    with ProductWriter(output, overwrite=overwrite) as pw:
        dl1 = PartitionedWriter(pw.path("dl1"), S.DL1_EVENTS, provenance=prov, min_row_group_bytes=ROW_GROUP_BYTES)
        n_in = 0
        if progress:
            progress(0, sum(pf.metadata.num_rows for _, pf, _ in work))
        try:
            for tel_type, pf, f in work:
                for i in range(pf.num_row_groups):
                    try:
                        # the waveform column through dvp's own page reader (~10x pyarrow's
                        # nested decoding); any other layout falls back to pyarrow
                        batch = read_row_group(pf, f, i, list(R1_INPUT_COLUMNS), fast_columns=UNCOMPRESSED_COLUMNS)
                    except (OSError, pa.ArrowException) as e:
                        raise InputError(f, f"corrupt row group {i} ({str(e).splitlines()[0]})") from None
                    out = stage(batch, setups[tel_type])
                    dl1.write(tel_type, out)
                    n_in += batch.num_rows
                    if progress:
                        progress(batch.num_rows)
        finally:
            dl1.close()
        subarray.write(pw.tmp, lambda t, p, n: write_table(t, p, n, prov))
        for fname, (table, schema_name) in sim.items():
            write_table(table, pw.path("simulation", fname), schema_name, prov)
        triggers = [pq.read_table(p / "trigger" / "part-00000.parquet") for p in products
                    if (p / "trigger" / "part-00000.parquet").is_file()]
        if triggers:
            tr = _concat(triggers, S.R1_TRIGGER)
            write_table(tr, pw.path("trigger", "part-00000.parquet"), S.R1_TRIGGER, prov)
            summary.n_array_events = tr.num_rows
        summary.n_tel_events = dict(dl1.rows)
        summary.seconds = time.perf_counter() - t0
        record = dict(prov, stop=now(), seconds=round(summary.seconds, 3),
                      counts={"telescope_events_in": n_in, "telescope_events_out": summary.n_tel_events},
                      levels=["instrument", "simulation", "dl1"])
        pw.path("provenance.json").write_text(json.dumps(record, indent=1, default=str))
        pw.commit()
    return summary


# -- DL1 → DL2 ------------------------------------------------------------------------

def dl1_to_dl2(inputs, output, config=None, *, overwrite=False, progress=None, command="dl1-to-dl2") -> RunSummary:
    """Reconstruct the stereo geometry of DL1 product directories into one DL2 product directory.

    Writes ``dl2/part-00000.parquet`` (one row per array event, true values joined for
    simulations) and ``dl2_telescopes/part-00000.parquet`` (one row per telescope event:
    impact distance, used flag), and carries instrument/, simulation/ and trigger/ over.
    Only the parameter columns the reconstruction needs are read, so memory is about
    100 bytes per telescope event.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .config import Config
    from .instrument.subarray import SubarrayDescription
    from .stages.dl1_to_dl2 import dl1_to_dl2 as stage
    from .stages.dl1_to_dl2 import required_columns

    config = config or Config()
    cfg = config.dl1_to_dl2
    products = expand_products(inputs, "dl1")
    if not products:
        raise DvpError("no input product directories given")
    t0 = time.perf_counter()
    subarray = SubarrayDescription.read(products[0])
    columns = list(required_columns(cfg))
    work = []
    for p in products:
        if p != products[0] and SubarrayDescription.read(p).fingerprint() != subarray.fingerprint():
            raise InputError(p, f"instrument differs from {products[0]}; process different arrays separately")
        files = _level_files(p, "dl1")
        work.append((p, [(f, _open_checked(f, S.DL1_EVENTS, columns)) for _, f in files]))
    sim = _read_simulation(products)
    showers = sim.get("showers.parquet", (None, None))[0]
    triggers = [pq.read_table(p / "trigger" / "part-00000.parquet") for p in products
                if (p / "trigger" / "part-00000.parquet").is_file()]
    trigger = _concat(triggers, S.R1_TRIGGER) if triggers else None
    summary = RunSummary(output=Path(output), n_inputs=len(products))
    prov = start_record(command, products, config.to_dict())
    events_out, tels_out = [], []
    n_in = 0
    if progress:
        progress(0, sum(pf.metadata.num_rows for _, files in work for _, pf in files))
    for p, files in work:
        parts = []
        for f, pf in files:
            try:
                parts.append(pf.read(columns=columns))
            except (OSError, pa.ArrowException) as e:
                raise InputError(f, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
        dl1 = _concat(parts, S.DL1_EVENTS) if parts else None
        if dl1 is None or dl1.num_rows == 0:
            continue
        ev, tel = stage(dl1, subarray, cfg, array_pointing=trigger, showers=showers, source=str(p / "dl1"))
        events_out.append(ev)
        tels_out.append(tel)
        n_in += dl1.num_rows
        if progress:
            progress(dl1.num_rows)
    events = _concat(events_out, S.DL2_EVENTS)
    tels = _concat(tels_out, S.DL2_TELESCOPE_EVENTS)
    with ProductWriter(output, overwrite=overwrite) as pw:
        write_table(events, pw.path("dl2", "part-00000.parquet"), S.DL2_EVENTS, prov)
        write_table(tels, pw.path("dl2_telescopes", "part-00000.parquet"), S.DL2_TELESCOPE_EVENTS, prov)
        subarray.write(pw.tmp, lambda t, p, n: write_table(t, p, n, prov))
        for fname, (table, schema_name) in sim.items():
            write_table(table, pw.path("simulation", fname), schema_name, prov)
        if trigger is not None:
            write_table(trigger, pw.path("trigger", "part-00000.parquet"), S.R1_TRIGGER, prov)
        summary.n_array_events = events.num_rows
        summary.n_tel_events = {"dl1": n_in}
        summary.seconds = time.perf_counter() - t0
        n_valid = int(pc.sum(events.column(S.RECO_IS_VALID)).as_py() or 0) if events.num_rows else 0
        record = dict(prov, stop=now(), seconds=round(summary.seconds, 3),
                      counts={"telescope_events_in": n_in, "array_events_out": events.num_rows,
                              "valid_reconstructions": n_valid},
                      levels=["instrument", "simulation", "dl2"])
        pw.path("provenance.json").write_text(json.dumps(record, indent=1, default=str))
        pw.commit()
    return summary
