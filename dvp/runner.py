"""Runs commands: file sets in, product directory out, atomically, with provenance.

The runner owns all I/O, batching and progress; stages and kernels stay pure.
"""
from __future__ import annotations

import glob
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schemas as S
from .errors import DvpError, InputError
from .io.parquet import ROW_GROUP_BYTES, UNCOMPRESSED_COLUMNS, is_product_dir, write_table
from .provenance import now, start_record

log = logging.getLogger("dvp")

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
    failures: list = field(default_factory=list)   # tasks that failed (with --skip-failed)
    n_tasks: int = 0
    n_resumed: int = 0                              # tasks completed by an earlier, interrupted run


def _concat(tables, schema_name):
    tables = [t for t in tables if t is not None]
    if not tables:
        return S.schema(schema_name).empty_table()
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="none")


# -- tasks in a staging directory (simtel-to-r1, r1-to-dl1, simulate) -----------------

class _StagedParts:
    """The part files one task writes, one per telescope type:
    ``<staging>/<level>/tel_type=<type>/<name>.parquet``. Each is written under a
    temporary name and renamed only by :meth:`commit`, which returns their rows, size and
    sha256: what the task record holds and a resumed run verifies (:func:`_verified`)."""

    def __init__(self, staging: Path, level: str, name: str, schema_name: str, provenance: dict,
                 min_row_group_bytes: int):
        self.staging, self.level, self.name = staging, level, name
        self.schema_name, self.provenance, self.min_row_group_bytes = schema_name, provenance, min_row_group_bytes
        self._writers: dict = {}
        self._paths: dict = {}

    def open(self, tel_type: str):
        """The writer of ``tel_type`` (created on first use; a part never written to is an
        empty table)."""
        return self._open(tel_type, self.staging / self.level / f"tel_type={tel_type}", self.schema_name)

    def open_table(self, level: str, schema_name: str):
        """The writer of an unpartitioned level (``<staging>/<level>/<name>.parquet``,
        e.g. ``dl2/``), recorded under the key ``level``."""
        return self._open(level, self.staging / level, schema_name)

    def _open(self, key: str, directory: Path, schema_name: str):
        import os

        from .io.parquet import TableWriter
        if key not in self._writers:
            out = directory / f"{self.name}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            self._paths[key] = (tmp, out)
            self._writers[key] = TableWriter(tmp, schema_name, self.provenance,
                                             min_row_group_bytes=self.min_row_group_bytes)
        return self._writers[key]

    def write(self, tel_type: str, table: pa.Table) -> None:
        self.open(tel_type).write(table)

    def commit(self) -> dict:
        """Close and rename every part; ``{key: {file, rows, bytes, sha256}}`` (key: the
        telescope type, or the level of :meth:`open_table`)."""
        import os

        from .provenance import sha256
        for w in self._writers.values():
            w.close()
        parts = {}
        for tel_type, (tmp, out) in self._paths.items():
            os.replace(tmp, out)
            parts[tel_type] = {"file": str(out.relative_to(self.staging)), "rows": self._writers[tel_type].rows,
                               "bytes": out.stat().st_size, "sha256": sha256(out)}
        return parts

    def abort(self) -> None:
        for tmp, _ in self._paths.values():
            tmp.unlink(missing_ok=True)


def _verified(staging: Path, name: str, tables=()) -> dict | None:
    """The record of a task completed by an earlier (interrupted) run if its part files
    are intact (size and sha256) and its small ``tables`` exist in ``tasks/<name>/``;
    None otherwise (the task is redone)."""
    from .provenance import sha256
    try:
        rec = json.loads((staging / "tasks" / f"{name}.json").read_text())
        for part in rec["parts"].values():
            f = staging / part["file"]
            if not (f.is_file() and f.stat().st_size == part["bytes"] and sha256(f) == part["sha256"]):
                return None
    except (OSError, ValueError, KeyError):
        return None
    own = staging / "tasks" / name
    return rec if all((own / f"{t}.parquet").is_file() for t in tables) else None


def _split_verified(planned, staging: Path, tables=()) -> tuple[list, dict]:
    """``(tasks to run, {name: record} of those an earlier run completed)``: a task
    counts as done only if :func:`_verified` trusts its record."""
    tasks, done = [], {}
    for t in planned:
        rec = _verified(staging, t.name, tables)
        if rec:
            done[t.name] = rec
        else:
            tasks.append(t)
    return tasks, done


def _run_staged(fn, tasks, done: dict, *, workers, scheduler, progress=None, advance=None) -> list:
    """Run ``tasks`` (:func:`dvp.executor.run_tasks`): each completed task's record goes
    into ``done`` under its name and advances ``progress`` by ``advance(record)``; the
    failed ones come back as ``[(task, error), ...]`` (the others still run)."""
    from .executor import run_tasks
    failures = []
    for i, rec, err in run_tasks(fn, tasks, workers=workers, scheduler=scheduler):
        if err is not None:
            failures.append((tasks[i], err))
            log.info("task %s failed: %s", tasks[i].name, err)
            continue
        done[rec["task"]] = rec
        log.debug("task %s done", rec["task"])
        if progress:
            progress(advance(rec))
    return failures


def _part_rows(records) -> dict:
    """Telescope events written per telescope type by the tasks of ``records``."""
    counts: dict = {}
    for r in records:
        for tel_type, part in r["parts"].items():
            counts[tel_type] = counts.get(tel_type, 0) + part["rows"]
    return counts


def _discard_if_empty(staging: Path, done) -> None:
    """After failures: a staging directory with no completed task has nothing to resume."""
    import shutil
    if not done:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class SimtelTask:
    """One simtel-to-r1 work unit: one sim_telarray file."""

    path: str
    name: str           # part name, ordered like the inputs
    staging: str
    batch_bytes: int
    allow_truncated: bool
    focal_length_choice: str
    provenance: str     # JSON


def run_simtel_task(task: SimtelTask) -> dict:
    """Convert one sim_telarray file: ``r1/tel_type=<type>/<name>.parquet`` in the staging
    directory (written under a temporary name, renamed when complete) and the file's
    small tables and instrument in ``tasks/<name>/``, then a checksummed task record."""
    import shutil

    from .io.simtel import SimtelR1Reader

    prov = json.loads(task.provenance)
    staging = Path(task.staging)
    own = staging / "tasks" / task.name
    shutil.rmtree(own, ignore_errors=True)     # leftovers of an interrupted attempt
    own.mkdir(parents=True)
    out = _StagedParts(staging, "r1", task.name, S.R1_EVENTS, prov, min_row_group_bytes=0)
    reader = SimtelR1Reader(task.path, batch_bytes=task.batch_bytes, allow_truncated=task.allow_truncated,
                            focal_length_choice=task.focal_length_choice)
    try:
        for tel_type, batch in reader.batches():
            out.write(tel_type, batch)
        parts = out.commit()
        for name, table, schema_name in (("runs", reader.run_table(), S.SIM_RUN),
                                         ("showers", reader.shower_table(), S.SIM_SHOWER),
                                         ("trigger", reader.trigger_table(), S.R1_TRIGGER),
                                         ("shower_distribution", reader.distribution_table(),
                                          S.SIM_SHOWER_DISTRIBUTION)):
            write_table(table, own / f"{name}.parquet", schema_name, prov)
        reader.subarray.write(own, lambda t, p, n: write_table(t, p, n, prov))
        fingerprint = reader.subarray.fingerprint()
        truncated = reader.truncated
        n_tel = reader.n_tel_events
    except BaseException:
        out.abort()
        raise
    finally:
        reader.close()
    record = {"task": task.name, "input": task.path, "instrument": fingerprint, "truncated": truncated,
              "telescope_events": n_tel, "parts": parts, "input_bytes": Path(task.path).stat().st_size,
              "rows_in": n_tel}
    _write_json_atomic(staging / "tasks" / f"{task.name}.json", record)
    return record


SIMTEL_TASK_TABLES = ("runs", "showers", "trigger", "shower_distribution")


def simtel_to_r1(inputs, output, *, overwrite=False, batch_bytes=ROW_GROUP_BYTES, allow_truncated=False,
                 focal_length_choice="equivalent", progress=None, workers: int | None = 1,
                 scheduler: str | None = None, skip_failed: bool = False) -> RunSummary:
    """Convert sim_telarray files into one R1 product directory, one task per file.

    Each file becomes ``r1/tel_type=<type>/part-<input>.parquet`` (row groups of
    ``batch_bytes`` of waveforms), whichever executor (``workers`` local processes or a
    Dask ``scheduler``) ran it; the simulation and trigger tables are concatenated in
    input order. All inputs must share one instrument description. As in
    :func:`r1_to_dl1`, the run is built in a staging directory that a re-run resumes; a
    bad file fails its task only: the run then ends with a one-line error (no output) or,
    with ``skip_failed``, writes the product without it.
    """
    from .instrument.subarray import SubarrayDescription
    from .io.simtel import GAIN_THRESHOLD_ADC, check_simtel_file

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
    staging = _prepare_staging(output, _fingerprint("simtel-to-r1", prov["inputs"], config), overwrite, summary)
    prov_json = json.dumps(prov, default=str)
    tasks, done = _split_verified([SimtelTask(str(p.resolve()), f"part-{k:06d}", str(staging), int(batch_bytes),
                                              bool(allow_truncated), focal_length_choice, prov_json)
                                   for k, p in enumerate(paths)], staging, SIMTEL_TASK_TABLES)
    summary.n_tasks, summary.n_resumed = len(paths), len(done)
    log.info("simtel-to-r1: %d files (%d done by an earlier run)", len(paths), len(done))
    failures = _run_staged(run_simtel_task, tasks, done, workers=workers, scheduler=scheduler, progress=progress,
                           advance=lambda r: r["rows_in"])
    summary.failures = [str(e) if isinstance(e, DvpError) else f"{t.path}: {type(e).__name__}: {e}"
                        for t, e in failures]
    if failures and (not skip_failed or not done):
        _discard_if_empty(staging, done)
        first = failures[0][1]
        if len(paths) == 1 and isinstance(first, DvpError):
            raise first
        msg = first if isinstance(first, DvpError) else f"{type(first).__name__}: {first}"
        raise DvpError(f"{len(failures)} of {len(paths)} input files failed, first: {msg}"
                       + (f"; the {len(done)} converted files are kept in {staging} and a re-run resumes them "
                          f"(or use --skip-failed to write the product without the failed ones)" if done else ""))
    recs = [done[n] for n in sorted(done)]
    first_rec = recs[0]
    for r in recs[1:]:
        if r["instrument"] != first_rec["instrument"]:
            raise InputError(r["input"], f"instrument differs from {first_rec['input']}; "
                                         "convert files of different arrays separately")
    subarray = SubarrayDescription.read(staging / "tasks" / first_rec["task"])
    subarray.write(staging, lambda t, p, n: write_table(t, p, n, prov))
    small = {}
    for name, schema_name in (("runs", S.SIM_RUN), ("showers", S.SIM_SHOWER), ("trigger", S.R1_TRIGGER),
                              ("shower_distribution", S.SIM_SHOWER_DISTRIBUTION)):
        small[name] = _concat([pq.read_table(staging / "tasks" / r["task"] / f"{name}.parquet") for r in recs],
                              schema_name)
    write_table(small["runs"], staging / "simulation" / "runs.parquet", S.SIM_RUN, prov)
    write_table(small["showers"], staging / "simulation" / "showers.parquet", S.SIM_SHOWER, prov)
    write_table(small["shower_distribution"], staging / "simulation" / "shower_distribution.parquet",
                S.SIM_SHOWER_DISTRIBUTION, prov)
    write_table(small["trigger"], staging / "trigger" / "part-00000.parquet", S.R1_TRIGGER, prov)
    counts = _part_rows(recs)
    for r in recs:
        if r["truncated"]:
            summary.warnings.append(f"{r['input']}: truncated; kept {r['telescope_events']} telescope events")
        summary.input_bytes += r["input_bytes"]
    summary.n_tel_events = counts
    summary.n_array_events = small["trigger"].num_rows
    summary.n_showers = small["showers"].num_rows
    summary.seconds = time.perf_counter() - t0
    record = dict(prov, stop=now(), seconds=round(summary.seconds, 3), warnings=summary.warnings,
                  counts={"array_events_out": summary.n_array_events, "showers_out": summary.n_showers,
                          "telescope_events_out": summary.n_tel_events},
                  tasks=[{"task": r["task"], "input": r["input"], "parts": r["parts"]} for r in recs],
                  failed=summary.failures, executor={"workers": workers, "scheduler": scheduler},
                  levels=["instrument", "simulation", "r1"])
    (staging / "provenance.json").write_text(json.dumps(record, indent=1, default=str))
    _commit_staging(staging, output)
    return summary


# -- R1 → DL1 ------------------------------------------------------------------------

PRODUCT_SIM_TABLES = (("runs.parquet", S.SIM_RUN), ("showers.parquet", S.SIM_SHOWER),
                      ("shower_distribution.parquet", S.SIM_SHOWER_DISTRIBUTION),
                      ("muons.parquet", "simulation.muon"))   # true rings of dvp simulate --particle muon


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


def _open_checked(path: Path, schema_name: str, columns) -> pq.ParquetFile:
    """Open a Parquet file and check that ``columns`` exist with the schema's types."""
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


# DL1 and carried tables are written in row groups of this size: parameters are ~600
# bytes a telescope event, so ~7,000 rows a row group, and a writer buffers at most this
CARRY_ROW_GROUP_BYTES = 4 * 2**20


def _carried_files(products) -> list[tuple[str, str, list]]:
    """(relative path, schema, input files) of the simulation and trigger tables to carry
    over; each file's footer is read now so that a corrupt one fails before any work."""
    out = []
    for rel, schema_name in [(f"simulation/{f}", s) for f, s in PRODUCT_SIM_TABLES] + [
            ("trigger/part-00000.parquet", S.R1_TRIGGER)]:
        files = [p / rel for p in products if (p / rel).is_file()]
        for f in files:
            try:
                pq.ParquetFile(f).metadata
            except (OSError, pa.ArrowException) as e:
                raise InputError(f, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
        if files:
            out.append((rel, schema_name, files))
    return out


def _link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``src`` (same file system: no time, no space; dvp never
    modifies a written file), else a byte copy."""
    import os
    import shutil
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _carry(carried, root: Path, provenance) -> dict:
    """Carry the simulation and trigger tables into the product being built in ``root``:
    a table from one input file that conforms to its schema is linked (or copied) as it
    is; tables of several inputs are concatenated batch by batch (memory bounded by a row
    group, whatever the number of showers). Returns rows per relative path."""
    from .io.parquet import TableWriter
    rows = {}
    for rel, schema_name, files in carried:
        if len(files) == 1:
            pf = pq.ParquetFile(files[0])
            try:
                S.check_file_schema(pf.schema_arrow, schema_name, str(files[0]))
                _link_or_copy(files[0], Path(root) / rel)
                rows[rel] = pf.metadata.num_rows
                continue
            except DvpError:
                pass   # an older or foreign layout: rewritten (validated) below
        w = TableWriter(Path(root) / rel, schema_name, provenance, min_row_group_bytes=CARRY_ROW_GROUP_BYTES)
        try:
            for f in files:
                try:
                    for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
                        w.write(pa.Table.from_batches([batch]))
                except (OSError, pa.ArrowException) as e:
                    raise InputError(f, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
        finally:
            w.close()
        rows[rel] = w.rows
    return rows


def _carry_dl1(products, root: Path, provenance=None) -> dict:
    """Copy the DL1 parameters of ``products`` into ``root/dl1/`` (one part file per
    input file and telescope type), so that a DL2 product carries the features of its
    telescope events. Files without per-pixel columns are linked (or copied) as they
    are; from files with images only the parameter columns are rewritten, batch by
    batch. Returns rows per telescope type."""
    from .io.parquet import TableWriter
    keep = S.column_names(S.DL1_EVENTS)
    rows: dict = {}
    counters: dict = {}
    for p in products:
        for tel_type, f in _level_files(p, "dl1"):
            k = counters.get(tel_type, 0)
            counters[tel_type] = k + 1
            dest = Path(root) / "dl1" / f"tel_type={tel_type}" / f"part-{k:05d}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                if [n for n in names if n != S.TEL_TYPE] == keep:
                    _link_or_copy(f, dest)
                else:
                    w = TableWriter(dest, S.DL1_EVENTS, provenance, min_row_group_bytes=CARRY_ROW_GROUP_BYTES)
                    for batch in pf.iter_batches(batch_size=65536, columns=keep):
                        w.write(pa.Table.from_batches([batch]))
                    w.close()
            except (OSError, pa.ArrowException) as e:
                raise InputError(f, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
            rows[tel_type] = rows.get(tel_type, 0) + pf.metadata.num_rows
    return rows


def _all_false(rg_meta, column: str) -> bool:
    """True if the row group's statistics prove a bool list column holds only False."""
    for j in range(rg_meta.num_columns):
        cc = rg_meta.column(j)
        if cc.path_in_schema.split(".", 1)[0] == column:
            st = cc.statistics
            return bool(st is not None and st.has_min_max and st.null_count == 0 and st.max is False)
    return False


class _R1Reader:
    """Batches of consecutive row groups of one R1 file with the columns the R1 → DL1 stage needs.

    - per-pixel list columns through :mod:`dvp.io.fastlist` (10x pyarrow's nested decoding),
      the row groups of a batch into one buffer;
    - the bool ``hv_disabled`` list (~10 us an event in pyarrow) not read at all when the
      row groups' statistics show no disabled pixel, the usual case;
    - scalar columns read for blocks of at least ``block`` row groups at once: pyarrow's
      cost is per column chunk, ~10 us an event for 56-event row groups. Memory stays
      bounded by the block (a few hundred kB).
    """

    def __init__(self, pf, path, columns, block: int = 32):
        self.pf, self.path, self.block = pf, path, block
        self.schema = schema = pf.schema_arrow
        self.columns = list(columns)
        self.lists = [c for c in self.columns if pa.types.is_fixed_size_list(schema.field(c).type)]
        self.scalars = [c for c in self.columns if c not in self.lists]
        self._block = None  # (first row group, last + 1, table, row offsets)
        from .io.fastlist import BufferPool
        self._pool = BufferPool()  # list columns reuse their buffers once a batch is dropped
        self._stream_buf = None     # the block buffer of read_streamed, reused

    def _scalars(self, start: int, stop: int) -> pa.Table:
        if self._block is None or not (self._block[0] <= start and stop <= self._block[1]):
            end = min(max(start + self.block, stop), self.pf.num_row_groups)
            try:
                table = self.pf.read_row_groups(list(range(start, end)), columns=self.scalars)
            except (OSError, pa.ArrowException):
                # a corrupt row group elsewhere in the block must not fail this batch
                end = stop
                table = self.pf.read_row_groups(list(range(start, end)), columns=self.scalars)
            md = self.pf.metadata
            offsets = np.cumsum([0] + [md.row_group(g).num_rows for g in range(start, end)])
            self._block = (start, end, table.combine_chunks(), offsets)
        first, _, table, offsets = self._block
        lo, hi = int(offsets[start - first]), int(offsets[stop - first])
        return table.slice(lo, hi - lo)

    def read(self, start: int, stop: int | None = None) -> pa.Table:
        """Row groups ``[start, stop)`` (default: row group ``start``) as one table."""
        return self._read(start, start + 1 if stop is None else stop, self.lists)

    def read_streamed(self, start: int, stop: int):
        """Row groups ``[start, stop)`` as (a table of every column but the waveforms, a
        :class:`~dvp.stages.r1_to_dl1.WaveformStream` of the waveforms).

        The stream reads the waveforms when fed, in blocks of about :data:`R1_BLOCK_BYTES`
        into one reused buffer (:func:`dvp.io.fastlist.stream_fixed_size_list`), or all at
        once through pyarrow if they are not stored in the simple layout. Its errors (a
        corrupt row group) are raised by ``feed``.
        """
        from .io.fastlist import stream_fixed_size_list
        from .stages.r1_to_dl1 import WaveformStream, table_waveforms

        column = S.WAVEFORM
        table = self._read(start, stop, [c for c in self.lists if c != column])
        list_size = self.schema.field(column).type.list_size
        row_bytes = list_size * self.schema.field(column).type.value_type.byte_width
        block_rows = max(1, R1_BLOCK_BYTES // max(row_bytes, 1))
        groups = range(start, stop)

        def feed(consume):
            fed, self._stream_buf = stream_fixed_size_list(self.path, self.pf.metadata, groups, column, block_rows,
                                                           consume, self._stream_buf)
            if not fed:  # not the simple layout: pyarrow decodes the column (same checks as a table's)
                table_waveforms(self.pf.read_row_groups(list(groups), columns=[column])).feed(consume)

        return table, WaveformStream(list_size, feed)

    def _read(self, start: int, stop: int, lists: list) -> pa.Table:
        from .io.fastlist import read_row_groups

        md = self.pf.metadata
        lists = list(lists)
        skip_hv = S.HV_DISABLED in lists and all(_all_false(md.row_group(g), S.HV_DISABLED)
                                                 for g in range(start, stop))
        if skip_hv:
            lists.remove(S.HV_DISABLED)
        listed = read_row_groups(self.pf, self.path, range(start, stop), lists, fast_columns=UNCOMPRESSED_COLUMNS,
                                 pool=self._pool)
        scalars = self._scalars(start, stop)
        if scalars.num_rows != listed.num_rows:
            raise InputError(self.path, f"row groups {start}-{stop - 1}: columns disagree on the number of rows")
        cols = {c: scalars.column(c) for c in self.scalars}
        cols.update({c: listed.column(c) for c in listed.column_names})
        if skip_hv:
            width = self.schema.field(S.HV_DISABLED).type.list_size
            n = listed.num_rows * width
            # all False: a zeroed bitmap, no numpy round trip
            values = pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bytes((n + 7) // 8))])
            cols[S.HV_DISABLED] = pa.FixedSizeListArray.from_arrays(values, width)
        return pa.table({c: cols[c] for c in self.columns if c in cols})


def _batches(md, start: int, stop: int, batch_bytes: int):
    """``[start, stop)`` cut into runs of consecutive row groups of about ``batch_bytes``
    (uncompressed), one row group at least: ``(first, last + 1)`` pairs."""
    a, size = start, 0
    for i in range(start, stop):
        size += md.row_group(i).total_byte_size
        if size >= batch_bytes:
            yield a, i + 1
            a, size = i + 1, 0
    if a < stop:
        yield a, stop


#: R1 row groups per task of r1-to-dl1 (~3,600 LSTCam events, ~1 GB of waveforms): the unit
#: of parallel work, retries and resumption. Fixed, so the output files do not depend on
#: the number of workers or the executor.
R1_TASK_ROW_GROUPS = 64
#: R1 bytes (uncompressed) per batch of the r1-to-dl1 stage within a task: consecutive row
#: groups are read into one batch of about this size. The stage's and the reader's fixed
#: costs are per call (~1 ms per call of either), so 16 MiB row groups (56 LSTCam events)
#: cost ~20 us an event more than batches of four of them; the batch bounds the memory of
#: a worker (benchmarks/RESULTS.md, "R1 → DL1").
R1_BATCH_BYTES = 64 * 2**20
#: R1 waveform bytes per block within a batch: the task streams the waveforms of a batch
#: from the file into one buffer of this size and extracts each block right away, while
#: it is in the CPU caches (reading the batch's 64 MiB first and extracting after costs
#: ~12 us an LSTCam event more: copies into and reads from main memory).
R1_BLOCK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class R1ToDL1Task:
    """One r1-to-dl1 work unit: row groups ``[rg_start, rg_stop)`` of one R1 file."""

    product: str       # the product whose instrument the camera setup is read from
    tel_type: str
    file: str
    name: str          # output part name, unique and ordered by (input, file, row group)
    rg_start: int
    rg_stop: int
    staging: str
    config: str        # Config.to_dict() as JSON (frozen config objects do not pickle)
    provenance: str    # JSON


_SETUPS: dict = {}


def _task_setup(product: str, tel_type: str, config_json: str):
    """The camera setup of a task, built once per worker process and kept."""
    key = (product, tel_type, config_json)
    if key not in _SETUPS:
        from .config import config_from_data
        from .instrument.subarray import SubarrayDescription
        from .stages.r1_to_dl1 import prepare_camera
        cfg = config_from_data(json.loads(config_json), "run config").r1_to_dl1
        _SETUPS[key] = prepare_camera(SubarrayDescription.read(Path(product)), tel_type, cfg)
    return _SETUPS[key]


#: R1 readers kept by a worker process for the next task of the same file (path, mtime,
#: size): a big file's footer is tens of MB of small allocations (30 MB for 1786 row
#: groups), and opening it again for every task left the C heap fragmented: a process's
#: resident memory grew with every task (845 MiB instead of ~330 for 100,000 events).
#: The reader's read buffers are kept too.
_READERS: dict = {}
_MAX_READERS = 2


def _task_reader(path: Path) -> "_R1Reader":
    from .stages.r1_to_dl1 import R1_INPUT_COLUMNS
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        reader = _READERS.get(key)
        if reader is None:
            reader = _R1Reader(pq.ParquetFile(path), path, R1_INPUT_COLUMNS)
            while len(_READERS) >= _MAX_READERS:
                _READERS.pop(next(iter(_READERS)))
            _READERS[key] = reader
    except (OSError, pa.ArrowException) as e:
        raise InputError(path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
    return reader


def run_r1_to_dl1_task(task: R1ToDL1Task) -> dict:
    """Process one task into ``<staging>/dl1/tel_type=<type>/<name>.parquet``.

    The part file is written under a temporary name and renamed when complete, then a
    task record (rows, size, sha256) is written the same way: a record exists only for a
    complete, checksummed part, which is what a resumed run trusts.
    """
    from .stages.r1_to_dl1 import r1_to_dl1 as stage

    _inject_fault(task.name)
    setup = _task_setup(task.product, task.tel_type, task.config)
    staging = Path(task.staging)
    path = Path(task.file)
    n_in = 0
    out = _StagedParts(staging, "dl1", task.name, S.DL1_EVENTS, json.loads(task.provenance),
                       min_row_group_bytes=CARRY_ROW_GROUP_BYTES)
    writer = out.open(task.tel_type)   # a task over no row group still leaves its (empty) part
    try:
        reader = _task_reader(path)
        pf = reader.pf
        for a, b in _batches(pf.metadata, task.rg_start, task.rg_stop, R1_BATCH_BYTES):
            try:
                batch, waveforms = reader.read_streamed(a, b)
                dl1 = stage(batch, setup, waveforms=waveforms)  # reads the waveforms
            except (OSError, pa.ArrowException) as e:
                raise InputError(path, f"corrupt row group {_first_bad(reader, a, b)} "
                                       f"({str(e).splitlines()[0]})") from None
            writer.write(dl1)
            n_in += batch.num_rows
            del batch, dl1   # before the next batch is read: one batch in memory at a time
        parts = out.commit()
    except BaseException:
        out.abort()
        raise
    record = {"task": task.name, "tel_type": task.tel_type, "input": task.file,
              "row_groups": [task.rg_start, task.rg_stop], "rows_in": n_in, "parts": parts}
    _write_json_atomic(staging / "tasks" / f"{task.name}.json", record)
    return record


def _first_bad(reader: _R1Reader, start: int, stop: int) -> str:
    """The first row group of ``[start, stop)`` that does not read on its own (for the
    error message of a failed batch)."""
    for i in range(start, stop):
        try:
            reader.read(i)
        except (OSError, pa.ArrowException, InputError):
            return str(i)
    return f"in {start}-{stop - 1}"


def _inject_fault(task_name: str) -> None:
    """Test hook: ``DVP_KILL_WORKER_ONCE=<marker file>`` makes the first task to start kill
    its own process with SIGKILL (as a killed or out-of-memory worker dies), once per
    marker; the executor must retry the task elsewhere."""
    import os
    import signal
    marker = os.environ.get("DVP_KILL_WORKER_ONCE")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, task_name.encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _write_json_atomic(path: Path, data) -> None:
    import os
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def staging_dir(output) -> Path:
    """Where a run builds ``output`` (kept after a failure or interruption, for resuming)."""
    out = Path(output)
    return out.parent / f".{out.name}.partial"


def _prepare_staging(output, fingerprint: str, overwrite: bool, summary) -> Path:
    """The staging directory of ``output``: resumed if an earlier run with the same
    inputs and config left one, otherwise new (a stale one is removed)."""
    import shutil
    out = Path(output)
    if out.exists() and not overwrite:
        raise DvpError(f"{out}: output exists (use --overwrite to replace it)")
    staging = staging_dir(out)
    run_file = staging / "run.json"
    if staging.exists():
        try:
            same = json.loads(run_file.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if same:
            summary.warnings.append(f"resuming the interrupted run in {staging}")
            return staging
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _write_json_atomic(run_file, {"fingerprint": fingerprint, "output": str(out.resolve())})
    return staging


def _commit_staging(staging: Path, output) -> None:
    """Move the completed staging directory to ``output`` (replacing an old one only now)."""
    import os
    import shutil
    import uuid
    out = Path(output)
    (staging / "run.json").unlink(missing_ok=True)
    shutil.rmtree(staging / "tasks", ignore_errors=True)
    for tmp in staging.rglob(".*.tmp-*"):   # half-written parts of workers killed mid-task
        tmp.unlink(missing_ok=True)
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, out)


def _fingerprint(*parts) -> str:
    import hashlib
    from . import __version__
    return hashlib.sha256(json.dumps([__version__, *parts], sort_keys=True, default=str).encode()).hexdigest()


def r1_to_dl1(inputs, output, config=None, *, overwrite=False, write_images=None, progress=None,
              command="r1-to-dl1", workers: int | None = 1, scheduler: str | None = None,
              skip_failed: bool = False, task_row_groups: int = R1_TASK_ROW_GROUPS) -> RunSummary:
    """Process R1 product directories into one DL1 product directory.

    The work is split into tasks of ``task_row_groups`` R1 row groups of one file; each
    writes ``dl1/tel_type=<type>/part-<input>-<file>-<row group>.parquet``, so the output
    is the same whichever executor ran it (``workers`` local processes, or a Dask
    ``scheduler``). The run is built in a staging directory next to ``output`` and
    renamed when complete; an interrupted or failed run leaves the completed,
    checksummed tasks there and a re-run with the same inputs and config resumes them.
    A task that fails (corrupt row group) does not stop the others: the run ends with
    :class:`DvpError` listing the failures (no output), or with ``skip_failed`` commits
    the product without them (recorded in provenance.json) and reports them in
    ``summary.failures``. The instrument, simulation and trigger tables are carried
    over. Memory per worker is bounded by one R1 row group.
    """
    from dataclasses import replace

    import shutil

    from .config import Config
    from .instrument.subarray import SubarrayDescription
    from .stages.r1_to_dl1 import R1_INPUT_COLUMNS, prepare_camera

    config = config or Config()
    cfg = config.r1_to_dl1
    if write_images is not None:
        cfg = replace(cfg, write_images=write_images)
        config = replace(config, r1_to_dl1=cfg)
    products = expand_products(inputs, "r1")
    if not products:
        raise DvpError("no input product directories given")
    if task_row_groups < 1:
        raise DvpError(f"task_row_groups must be positive, got {task_row_groups}")
    t0 = time.perf_counter()
    subarray = SubarrayDescription.read(products[0])
    work = []
    for k, p in enumerate(products):
        if p != products[0] and SubarrayDescription.read(p).fingerprint() != subarray.fingerprint():
            raise InputError(p, f"instrument differs from {products[0]}; process different arrays separately")
        for j, (tel_type, f) in enumerate(_level_files(p, "r1")):
            work.append((k, j, p, tel_type, _open_checked(f, S.R1_EVENTS, R1_INPUT_COLUMNS), f))
    for tel_type in sorted({w[3] for w in work}):  # resolve config per type before any output exists
        prepare_camera(subarray, tel_type, cfg)
    carried = _carried_files(products)
    summary = RunSummary(output=Path(output), n_inputs=len(products))
    prov = start_record(command, products, config.to_dict())
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    fingerprint = _fingerprint(command, [r for r in prov["inputs"]], config_json, task_row_groups)
    staging = _prepare_staging(output, fingerprint, overwrite, summary)
    planned, n_rows = [], 0
    prov_json = json.dumps(prov, default=str)
    for k, j, p, tel_type, pf, f in work:
        n_rg = pf.num_row_groups
        for a in range(0, max(n_rg, 1), task_row_groups):
            b = min(a + task_row_groups, n_rg)
            # every input has the first one's instrument (checked above): one camera setup
            # per worker process, whatever the number of inputs
            planned.append(R1ToDL1Task(str(products[0].resolve()), tel_type, str(f.resolve()),
                                       f"part-{k:06d}-{j:03d}-{a:06d}", a, b, str(staging), config_json, prov_json))
            n_rows += sum(pf.metadata.row_group(i).num_rows for i in range(a, b))
    # the inputs' footers (tens of MB for big files) are not needed while the tasks run
    work = pf = None
    recs = _run_resumable("r1-to-dl1", run_r1_to_dl1_task, planned, staging, summary, workers=workers,
                          scheduler=scheduler, skip_failed=skip_failed, progress=progress, total=n_rows,
                          describe=lambda t: f"{t.file} row groups {t.rg_start}-{t.rg_stop - 1}")
    _READERS.clear()   # tasks run in this process (workers=1) kept theirs
    subarray.write(staging, lambda t, p, n: write_table(t, p, n, prov))
    for sub in ("simulation", "trigger"):   # what an interrupted run carried is carried again
        shutil.rmtree(staging / sub, ignore_errors=True)
    rows = _carry(carried, staging, prov)
    summary.n_array_events = rows.get("trigger/part-00000.parquet", 0)
    counts = _part_rows(recs)
    summary.n_tel_events = counts
    summary.seconds = time.perf_counter() - t0
    tasks_out = []
    for r in recs:
        part = r["parts"][r["tel_type"]]
        tasks_out.append({"task": r["task"], "input": r["input"], "row_groups": r["row_groups"], "file": part["file"],
                          "rows_in": r["rows_in"], "rows_out": part["rows"], "sha256": part["sha256"]})
    record = dict(prov, stop=now(), seconds=round(summary.seconds, 3),
                  counts={"telescope_events_in": sum(r["rows_in"] for r in recs), "telescope_events_out": counts},
                  tasks=tasks_out,
                  failed=summary.failures, executor={"workers": workers, "scheduler": scheduler},
                  levels=["instrument", "simulation", "dl1"])
    (staging / "provenance.json").write_text(json.dumps(record, indent=1, default=str))
    _commit_staging(staging, output)
    return summary


# -- DL1 → DL2 ------------------------------------------------------------------------

#: telescope events per dl1-to-dl2 task (~100 bytes each read; the unit of parallel work,
#: of resumption and of memory)
DL2_TASK_ROWS = 1 << 18
#: telescope events per apply-models task (:func:`dvp.runner_ml.apply_models`; ~2 KiB
#: each at the peak of a task: features, joins, the prediction matrix)
APPLY_TASK_ROWS = 1 << 17


def _raise_failures(failures, n_tasks: int, done: dict, staging: Path, what: str = "tasks") -> None:
    """After failed tasks (without --skip-failed): one error naming the first failure;
    the completed tasks stay in ``staging`` for a re-run to resume."""
    first = failures[0][1]
    msg = first if isinstance(first, DvpError) else f"{type(first).__name__}: {first}"
    _discard_if_empty(staging, done)
    raise DvpError(f"{len(failures)} of {n_tasks} {what} failed, first: {msg}"
                   + (f"; the {len(done)} completed tasks are kept in {staging} and a re-run resumes them "
                      f"(or use --skip-failed to write the product without the failed ones)" if done else ""))


def _run_resumable(name: str, fn, planned, staging: Path, summary, *, workers, scheduler, skip_failed,
                   progress, total: int, describe, scale: int = 1) -> list:
    """Run the ``planned`` tasks of a run built in ``staging`` and return every task's
    record, in name order.

    A task that an interrupted earlier run completed (record and checksums verified) is
    taken as it is; the others run on ``workers`` / ``scheduler``. ``progress`` counts
    ``scale`` × each task's ``rows_in`` out of ``scale`` × ``total``. Failed tasks go into
    ``summary.failures`` as ``describe(task): error``; without ``skip_failed`` they end
    the run with one error (:func:`_raise_failures`).
    """
    tasks, done = _split_verified(planned, staging)
    if progress:
        progress(0, scale * total)
        progress(scale * sum(r["rows_in"] for r in done.values()))
    summary.n_tasks, summary.n_resumed = len(planned), len(done)
    log.info("%s: %d tasks (%d done by an earlier run), %s", name, len(planned), len(done),
             f"Dask scheduler {scheduler}" if scheduler else f"{workers or 'all'} local worker(s)")
    failures = _run_staged(fn, tasks, done, workers=workers, scheduler=scheduler,
                           progress=progress, advance=lambda r: scale * r["rows_in"])
    summary.failures = [f"{describe(t)}: {e}" for t, e in failures]
    if failures and not skip_failed:
        _raise_failures(failures, len(planned), done, staging)
    return [done[n] for n in sorted(done)]


def _write_dl2_parts(task_name: str, staging: Path, provenance_json: str, events: pa.Table,
                     telescopes: pa.Table) -> dict:
    """A DL2-level task's ``dl2/<name>.parquet`` and ``dl2_telescopes/<name>.parquet``,
    written under temporary names and renamed together; their part records."""
    out = _StagedParts(staging, "dl2", task_name, S.DL2_EVENTS, json.loads(provenance_json),
                       min_row_group_bytes=CARRY_ROW_GROUP_BYTES)
    try:
        out.open_table("dl2", S.DL2_EVENTS).write(events)
        out.open_table("dl2_telescopes", S.DL2_TELESCOPE_EVENTS).write(telescopes)
        return out.commit()
    except BaseException:
        out.abort()
        raise


@dataclass(frozen=True)
class DL2Task:
    """One dl1-to-dl2 work unit: the array events of one product with keys in ``[lo, hi)``."""

    product: str        # its instrument (every input has the first one's)
    files: tuple        # the product's DL1 files (every telescope type)
    lo: list | None     # (obs_id, event_id) bounds as JSON lists, None: unbounded
    hi: list | None
    name: str           # output part name, ordered by (input, range)
    source: str         # named in errors
    trigger: tuple      # the product's trigger file(s), for the array pointing
    showers: tuple      # its simulation/showers.parquet, for the true values
    staging: str
    config: str         # Config.to_dict() as JSON
    provenance: str     # JSON


_SUBARRAYS: dict = {}


def _subarray(product: str):
    """The instrument of a product, read once per worker process."""
    if product not in _SUBARRAYS:
        from .instrument.subarray import SubarrayDescription
        _SUBARRAYS[product] = SubarrayDescription.read(Path(product))
    return _SUBARRAYS[product]


def run_dl2_task(task: DL2Task) -> dict:
    """Reconstruct the events of one key range into ``<staging>/dl2/<name>.parquet`` and
    ``<staging>/dl2_telescopes/<name>.parquet`` (renamed when complete), then write the
    task record. Reads only the range's row groups and the needed columns."""
    import pyarrow.compute as pc

    from .config import config_from_data
    from .io.keyrange import key_from_json, read_key_range_concat
    from .stages.dl1_to_dl2 import dl1_to_dl2 as stage
    from .stages.dl1_to_dl2 import required_columns

    _inject_fault(task.name)
    cfg = config_from_data(json.loads(task.config), "run config").dl1_to_dl2
    lo, hi = key_from_json(task.lo), key_from_json(task.hi)
    dl1 = read_key_range_concat(task.files, required_columns(cfg), lo, hi)
    dl1 = dl1 if dl1 is not None else S.schema(S.DL1_EVENTS).empty_table().select(list(required_columns(cfg)))
    keys = [S.OBS_ID, S.EVENT_ID]
    # only the rows of these events: the shower table holds every simulated shower
    events = pc.unique(dl1.column(S.EVENT_ID).combine_chunks()) if dl1.num_rows else pa.array([], pa.int64())
    pointing = read_key_range_concat(task.trigger, [*keys, S.POINTING_ALT, S.POINTING_AZ], lo, hi, events)
    showers = None
    if task.showers:
        names = pq.read_schema(task.showers[0]).names
        showers = read_key_range_concat(task.showers, [*keys, *(c for c in S.DL2_TRUE_COLUMNS if c in names)],
                                        lo, hi, events)
    ev, tel = stage(dl1, _subarray(task.product), cfg, array_pointing=pointing, showers=showers, source=task.source)
    staging = Path(task.staging)
    parts = _write_dl2_parts(task.name, staging, task.provenance, ev, tel)
    record = {"task": task.name, "input": task.product, "key_range": [task.lo, task.hi], "rows_in": dl1.num_rows,
              "array_events": ev.num_rows, "valid": int(pc.sum(ev.column(S.RECO_IS_VALID)).as_py() or 0),
              "parts": parts}
    _write_json_atomic(staging / "tasks" / f"{task.name}.json", record)
    return record


def dl1_to_dl2(inputs, output, config=None, *, overwrite=False, progress=None, command="dl1-to-dl2",
               workers: int | None = 1, scheduler: str | None = None, skip_failed: bool = False,
               task_rows: int = DL2_TASK_ROWS) -> RunSummary:
    """Reconstruct the stereo geometry of DL1 product directories into one DL2 product directory.

    Writes ``dl2/part-<input>-<range>.parquet`` (one row per array event, true values
    joined for simulations) and ``dl2_telescopes/`` (one row per telescope event: impact
    distance, used flag), and carries instrument/, simulation/, trigger/ and the DL1
    parameters (``dl1/``, without images: the inputs of ``dvp train``) over.

    Each product is cut into ranges of (obs_id, event_id) of about ``task_rows``
    telescope events (at row-group starts, from the files' statistics), one task each:
    a task reads only its range's row groups and the columns the reconstruction needs
    (about 100 bytes per telescope event), and the trigger and shower rows of the same
    range, so memory is bounded by ``task_rows`` whatever the input size. Rows need not
    be in event order; files without key statistics make one task per product. Tasks
    run as in :func:`r1_to_dl1` (``workers``, Dask ``scheduler``, staging directory,
    resume, ``skip_failed``), and the concatenated outputs are the same for any
    ``task_rows`` and any executor.
    """
    from .config import Config
    from .instrument.subarray import SubarrayDescription
    from .io.keyrange import key_json, paths, plan_key_ranges
    from .stages.dl1_to_dl2 import required_columns

    if int(task_rows) != task_rows or task_rows < 1:
        raise DvpError(f"task size must be a positive integer, got {task_rows!r}")
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
        files = [f for _, f in _level_files(p, "dl1")]
        pfs = [_open_checked(f, S.DL1_EVENTS, columns) for f in files]
        work.append((p, files, sum(pf.metadata.num_rows for pf in pfs)))
    carried = _carried_files(products)
    summary = RunSummary(output=Path(output), n_inputs=len(products))
    prov = start_record(command, products, config.to_dict())
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    fingerprint = _fingerprint(command, [r for r in prov["inputs"]], config_json, int(task_rows))
    staging = _prepare_staging(output, fingerprint, overwrite, summary)
    prov_json = json.dumps(prov, default=str)
    planned, n_rows = [], 0
    for k, (p, files, rows) in enumerate(work):
        n_rows += rows
        trig = sorted((p / "trigger").glob("*.parquet"))
        show = [p / "simulation" / "showers.parquet"] if (p / "simulation" / "showers.parquet").is_file() else []
        for i, (lo, hi) in enumerate(plan_key_ranges(files, int(task_rows))):
            planned.append(DL2Task(str(products[0].resolve()), paths(files), key_json(lo), key_json(hi),
                                   f"part-{k:06d}-{i:06d}", str(p / "dl1"), paths(trig), paths(show), str(staging),
                                   config_json, prov_json))
    recs = _run_resumable("dl1-to-dl2", run_dl2_task, planned, staging, summary, workers=workers,
                          scheduler=scheduler, skip_failed=skip_failed, progress=progress, total=n_rows,
                          describe=lambda t: f"{t.source} events {t.lo or 'start'}-{t.hi or 'end'}")
    n_in = sum(r["rows_in"] for r in recs)
    summary.n_array_events = sum(r["array_events"] for r in recs)
    summary.n_tel_events = {"dl1": n_in}
    finish_dl2_staging(staging, output, subarray, carried, products, prov, summary, t0, recs,
                       {"telescope_events_in": n_in, "array_events_out": summary.n_array_events,
                        "valid_reconstructions": sum(r["valid"] for r in recs)},
                       executor={"workers": workers, "scheduler": scheduler})
    return summary


def finish_dl2_staging(staging: Path, output, subarray, carried, products, prov, summary, t0, recs, counts,
                       executor=None) -> None:
    """Complete a DL2-level product built by tasks in ``staging`` (dl1-to-dl2,
    apply-models): instrument, carried simulation/trigger tables, the DL1 parameters (the
    features of later models), provenance.json with the task list; then commit it."""
    import shutil
    subarray.write(staging, lambda t, p, n: write_table(t, p, n, prov))
    for sub in ("simulation", "trigger", "dl1"):   # what an interrupted run carried is carried again
        shutil.rmtree(staging / sub, ignore_errors=True)
    _carry(carried, staging, prov)
    _carry_dl1(products, staging, prov)
    summary.seconds = time.perf_counter() - t0
    tasks_out = [{"task": r["task"], "input": r["input"], "key_range": r["key_range"], "rows_in": r["rows_in"],
                  **{f"{lvl}_sha256": part["sha256"] for lvl, part in r["parts"].items()}} for r in recs]
    record = dict(prov, stop=now(), seconds=round(summary.seconds, 3), counts=counts, tasks=tasks_out,
                  failed=summary.failures, executor=executor or {},
                  levels=["instrument", "simulation", "dl1", "dl2"])
    (staging / "provenance.json").write_text(json.dumps(record, indent=1, default=str))
    _commit_staging(staging, output)


# -- toy simulation ----------------------------------------------------------------------

DEFAULT_LAYOUT = (Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "simtel"
                  / "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst")
SIM_PARTICLES = ("gamma", "electron", "proton", "muon")
SIM_LEVELS = ("r1", "dl1")
MAX_VIEWCONE_DEG = 20.0
#: energy range (TeV) when none is given: muons for calibration are mostly 10-100 GeV
DEFAULT_ENERGY_RANGE_TEV = {"muon": (0.01, 0.1)}
SHOWER_ENERGY_RANGE_TEV = (0.03, 10.0)


def _check_sim_params(particle, n_showers, energy_range, spectral_index, viewcone_deg, offset_deg,
                      scatter_radius_m, reuse, level="r1"):
    """One-line :class:`DvpError` for any bad simulation parameter (before any work)."""
    if particle not in SIM_PARTICLES:
        raise DvpError(f"--particle must be one of {', '.join(SIM_PARTICLES)}, not {particle!r}")
    if level not in SIM_LEVELS:
        raise DvpError(f"--level must be one of {', '.join(SIM_LEVELS)}, not {level!r}")
    if int(n_showers) < 1:
        raise DvpError(f"--n-showers must be ≥ 1, not {n_showers}")
    e_min, e_max = map(float, energy_range)
    if not (np.isfinite(e_min) and np.isfinite(e_max)) or e_min <= 0 or e_max <= 0:
        raise DvpError(f"--energy-range must be positive TeV, not {e_min} {e_max}")
    if e_min >= e_max:
        raise DvpError(f"--energy-range: min {e_min} must be below max {e_max}")
    if particle == "muon" and e_min <= 0.106e-3:
        raise DvpError(f"--energy-range: muon energies must exceed the muon mass (0.106 GeV), not {e_min} TeV")
    if not np.isfinite(spectral_index):
        raise DvpError(f"--spectral-index must be finite, not {spectral_index}")
    if not 0.0 <= viewcone_deg <= MAX_VIEWCONE_DEG:
        raise DvpError(f"--viewcone-deg must be in [0, {MAX_VIEWCONE_DEG:g}], not {viewcone_deg}")
    if not 0.0 <= offset_deg <= MAX_VIEWCONE_DEG:
        raise DvpError(f"--offset-deg must be in [0, {MAX_VIEWCONE_DEG:g}], not {offset_deg}")
    if not (np.isfinite(scatter_radius_m) and scatter_radius_m >= 0):
        raise DvpError(f"--scatter-radius-m must be ≥ 0, not {scatter_radius_m}")
    if not 1 <= int(reuse) <= 100:
        raise DvpError(f"--reuse must be in [1, 100] (event ids are shower × 100 + reuse), not {reuse}")


def _sim_layout(layout):
    """``(path, subarray, pointing_alt_deg, pointing_az_deg)`` from a sim_telarray file."""
    import warnings

    from eventio import SimTelFile

    from .io.simtel import build_subarray, check_simtel_file, clip_altitude

    layout = check_simtel_file(DEFAULT_LAYOUT if layout is None else layout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with SimTelFile(str(layout), skip_non_triggered=False, skip_calibration=True) as f:
                subarray = build_subarray(f)
                az, alt = f.header["direction"]
    except DvpError:
        raise
    except Exception as e:
        raise InputError(layout, f"cannot read the instrument ({type(e).__name__}: {e})") from None
    return layout, subarray, float(np.rad2deg(clip_altitude(float(alt)))), float(np.rad2deg(float(az)))


#: showers per simulate task (× reuse uses): the unit of parallel work and of resumption;
#: fixed, so the output does not depend on the number of workers
SIM_TASK_SHOWERS = 20_000


@dataclass(frozen=True)
class SimTask:
    """One block of showers ``[first, first + n)`` of a ``dvp simulate`` run."""

    name: str
    block: int
    first: int
    n: int
    staging: str
    params: str        # JSON: everything that defines the run
    provenance: str    # JSON


_SIM_CONTEXT: dict = {}


def _sim_context(params_json: str):
    """Per worker process: the instrument from the layout file and the DL1 camera setups."""
    if params_json not in _SIM_CONTEXT:
        p = json.loads(params_json)
        layout, subarray, p_alt, p_az = _sim_layout(p["layout"])
        setups = {}
        if p["level"] == "dl1":
            from .config import config_from_data
            from .stages.r1_to_dl1 import prepare_camera
            cfg = config_from_data(p["config"], "run config").r1_to_dl1
            setups = {t: prepare_camera(subarray, t, cfg) for t in subarray.tel_types()}
        _SIM_CONTEXT.clear()   # one run at a time per worker
        _SIM_CONTEXT[params_json] = (subarray, p_alt, p_az, setups)
    return _SIM_CONTEXT[params_json]


def run_sim_task(task: SimTask) -> dict:
    """Simulate one block of showers into the staging directory.

    Its random numbers come from ``SeedSequence([seed, block])``, so a block is the same
    whoever runs it; shower numbers and event ids continue those of earlier blocks.
    Telescope events go to ``<level>/tel_type=<type>/<name>.parquet`` (temporary name,
    renamed when complete); showers, trigger rows (and muon truth) to ``tasks/<name>/``.
    """
    from dataclasses import replace

    from .sim import camera as C
    from .sim.events import ToySimulation
    from .sim.showers import PARTICLE_IDS, generate
    from .stages.r1_to_dl1 import r1_to_dl1 as stage

    p = json.loads(task.params)
    prov = json.loads(task.provenance)
    subarray, p_alt, p_az, setups = _sim_context(task.params)
    staging = Path(task.staging)
    own = staging / "tasks" / task.name
    own.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(p["seed"]), int(task.block)]))
    kw = dict(energy_range=tuple(p["energy_range"]), spectral_index=p["spectral_index"],
              viewcone_deg=p["viewcone_deg"], offset_deg=p["offset_deg"], reuse=p["reuse"],
              pointing_alt_deg=p_alt, pointing_az_deg=p_az)
    det = dict(obs_id=p["obs_id"], obs_height_m=p["obs_height_m"], pointing_alt_deg=p_alt, pointing_az_deg=p_az)
    particle = p["particle"]
    if particle == "muon":
        from .sim.muons import SIM_MUON, MuonSimulation, generate_muons
        showers = generate_muons(rng, subarray, task.n, obs_height_m=p["obs_height_m"], **kw)
    else:
        showers = generate(rng, particle, task.n, scatter_radius_m=p["scatter_radius_m"], **kw)
    # continue the numbering of the earlier blocks (sim_telarray: event id = shower × 100 + use)
    showers = replace(showers, shower_num=showers.shower_num + task.first, event_id=showers.event_id + 100 * task.first)
    if particle == "muon":
        sim = MuonSimulation(rng, subarray, showers, **det)
    else:
        comps = C.emission_components(rng, particle, task.n)
        comps = tuple(np.repeat(a, p["reuse"], axis=0) for a in comps)   # reuse keeps the shower's structure
        sim = ToySimulation(rng, subarray, showers, comps, particle, **det)
    level = p["level"]
    out = _StagedParts(staging, level, task.name, S.DL1_EVENTS if level == "dl1" else S.R1_EVENTS, prov,
                       min_row_group_bytes=CARRY_ROW_GROUP_BYTES if level == "dl1" else 0)
    n_tel_in = 0
    try:
        for tel_type, batch in sim.run():
            n_tel_in += batch.num_rows
            out.write(tel_type, stage(batch, setups[tel_type]) if level == "dl1" else batch)
        parts = out.commit()
    except BaseException:
        out.abort()
        raise
    n = len(showers)
    nan = np.full(n, np.nan)
    obs_id = p["obs_id"]
    sh = pa.table({
        S.OBS_ID: np.full(n, obs_id, np.int32), S.EVENT_ID: showers.event_id.astype(np.int64),
        "shower_num": showers.shower_num.astype(np.int32), S.TRUE_ENERGY: showers.energy_tev,
        S.TRUE_ALT: showers.alt_deg, S.TRUE_AZ: showers.az_deg, S.TRUE_CORE_X: showers.core_x_m,
        S.TRUE_CORE_Y: showers.core_y_m,
        "true_h_first_int_m": nan if particle == "muon" else showers.h_first_int_m,
        S.TRUE_X_MAX: nan if particle == "muon" else showers.x_max_g_cm2,
        "true_starting_grammage_g_cm2": np.zeros(n),
        "true_shower_primary_id": np.full(n, PARTICLE_IDS[particle], np.int32),
        S.PARTICLE: pa.array([particle] * n, pa.string()), S.TRIGGERED: sim.triggered})
    write_table(S.validate(sh, S.SIM_SHOWER), own / "showers.parquet", S.SIM_SHOWER, prov)
    if particle == "muon":
        write_table(sim.truth_table(int(obs_id)), own / "muons.parquet", SIM_MUON, prov)
    ev = np.asarray(sim.trigger_rows[S.EVENT_ID], np.int64)   # in event order
    tels = sim.trigger_rows["tels_with_trigger"]
    tr = pa.table({
        S.OBS_ID: np.full(len(ev), obs_id, np.int32), S.EVENT_ID: ev,
        # a fixed, fake clock: 1 ms between simulated events
        "time_unix_ns": (1_767_225_600 * 10**9 + ev * 10**6).astype(np.int64),
        "event_type": pa.array(["subarray"] * len(ev), pa.string()),
        "tels_with_trigger": pa.array(tels, pa.list_(pa.int16())),
        "n_trigger_tels": np.array([len(t) for t in tels], np.int16),
        S.POINTING_ALT: np.full(len(ev), p_alt), S.POINTING_AZ: np.full(len(ev), p_az)})
    write_table(S.validate(tr, S.R1_TRIGGER), own / "trigger.parquet", S.R1_TRIGGER, prov)
    record = {"task": task.name, "showers": n, "array_events": len(ev), "candidates": int(sim.n_candidates),
              "telescope_events_in": n_tel_in, "rows_in": n, "parts": parts}
    _write_json_atomic(staging / "tasks" / f"{task.name}.json", record)
    return record


def simulate(particle, n_showers, output, *, layout=None, energy_range=None, spectral_index=-2.0,
             viewcone_deg=0.0, offset_deg=0.0, scatter_radius_m=1000.0, reuse=10, seed=0, obs_id=1,
             level="r1", config=None, overwrite=False, progress=None, workers: int | None = 1,
             scheduler: str | None = None, task_showers: int = SIM_TASK_SHOWERS) -> RunSummary:
    """Toy Monte Carlo (:mod:`dvp.sim`) into an R1 or DL1 product directory.

    ``level="r1"`` writes what simtel-to-r1 writes; ``level="dl1"`` runs the R1 → DL1
    stage (``config.r1_to_dl1``, :func:`dvp.stages.r1_to_dl1.r1_to_dl1`) on every
    simulated batch in memory and writes only ``dl1/``, as ``r1-to-dl1`` would from the
    R1 product (same rows and values). The instrument (and pointing, site height) come
    from the sim_telarray file ``layout``. Every simulated shower (or muon) is written to
    simulation/showers.parquet, triggered or not; muons also get simulation/muons.parquet
    (:mod:`dvp.sim.muons`, the true ring parameters). ``energy_range`` defaults to
    0.03-10 TeV (muons: 0.01-0.1 TeV); for muons ``scatter_radius_m`` is unused (impacts
    lie within 1.2 mirror radii of the telescope hit).

    The showers are simulated in blocks of ``task_showers`` (one task each, random numbers
    from ``SeedSequence([seed, block])``) on ``workers`` local processes or a Dask
    ``scheduler``: the same arguments and ``seed`` give bit-identical tables whichever
    executor runs them. The run is built in a staging directory that a re-run resumes,
    and the per-shower tables are streamed, so memory is bounded by a block.
    """
    from .io.parquet import TableWriter

    if energy_range is None:
        energy_range = DEFAULT_ENERGY_RANGE_TEV.get(particle, SHOWER_ENERGY_RANGE_TEV)
    _check_sim_params(particle, n_showers, energy_range, spectral_index, viewcone_deg, offset_deg,
                      scatter_radius_m, reuse, level)
    if isinstance(obs_id, bool) or not isinstance(obs_id, (int, np.integer)) or not 0 <= int(obs_id) < 2**31:
        raise DvpError(f"--obs-id must be an integer in [0, 2^31), got {obs_id!r}")
    if int(task_showers) < 1:
        raise DvpError(f"task_showers must be positive, got {task_showers}")
    layout, subarray, p_alt, p_az = _sim_layout(layout)
    obs_height = float(subarray.reference_location["height_m"])
    if level == "dl1":
        from .config import Config
        from .stages.r1_to_dl1 import prepare_camera

        config = config or Config()
        for tel_type in subarray.tel_types():   # config errors before any work or output
            prepare_camera(subarray, tel_type, config.r1_to_dl1)
    t0 = time.perf_counter()
    run_config = {"particle": particle, "n_showers": int(n_showers), "energy_range_tev": list(map(float, energy_range)),
                  "spectral_index": float(spectral_index), "viewcone_deg": float(viewcone_deg),
                  "offset_deg": float(offset_deg), "scatter_radius_m": float(scatter_radius_m), "reuse": int(reuse),
                  "seed": int(seed), "obs_id": int(obs_id), "level": level, "task_showers": int(task_showers)}
    if level == "dl1":
        run_config["config"] = config.to_dict()
    summary = RunSummary(output=Path(output), n_inputs=1)
    prov = start_record("simulate", [layout], run_config)
    params = {"particle": particle, "energy_range": list(map(float, energy_range)),
              "spectral_index": float(spectral_index), "viewcone_deg": float(viewcone_deg),
              "offset_deg": float(offset_deg), "scatter_radius_m": float(scatter_radius_m), "reuse": int(reuse),
              "seed": int(seed), "obs_id": int(obs_id), "level": level, "layout": str(layout.resolve()),
              "obs_height_m": obs_height, "config": config.to_dict() if level == "dl1" else None}
    params_json = json.dumps(params, sort_keys=True)
    staging = _prepare_staging(output, _fingerprint("simulate", prov["inputs"], params_json, int(n_showers),
                                                    int(task_showers)), overwrite, summary)
    prov_json = json.dumps(prov, default=str)
    small_tables = ("showers", "trigger", "muons") if particle == "muon" else ("showers", "trigger")
    tasks, done = _split_verified([SimTask(f"part-{k:06d}", k, first, min(int(task_showers), int(n_showers) - first),
                                           str(staging), params_json, prov_json)
                                   for k, first in enumerate(range(0, int(n_showers), int(task_showers)))],
                                  staging, small_tables)
    summary.n_tasks, summary.n_resumed = len(tasks) + len(done), len(done)
    if progress:
        progress(0, int(n_showers))
        progress(sum(r["showers"] for r in done.values()) // max(int(reuse), 1))
    failures = _run_staged(run_sim_task, tasks, done, workers=workers, scheduler=scheduler, progress=progress,
                           advance=lambda r: r["showers"] // max(int(reuse), 1))
    if failures:
        first = failures[0][1]
        _discard_if_empty(staging, done)
        raise first if isinstance(first, DvpError) else DvpError(f"simulate: {type(first).__name__}: {first}")
    recs = [done[n] for n in sorted(done)]
    subarray.write(staging, lambda t, p, n: write_table(t, p, n, prov))
    if particle == "muon":
        from .sim.muons import MAX_IMPACT_FACTOR, SIM_MUON
        mirror_radius = float(np.sqrt(max(o.mirror_area_m2 for o in subarray.optics.values()) / np.pi))
        max_scatter = MAX_IMPACT_FACTOR * mirror_radius
    else:
        max_scatter = float(scatter_radius_m)
    run = {S.OBS_ID: int(obs_id), "run_header_index": 0, "input_file": f"dvp simulate (layout {layout.name})",
           "n_showers": int(n_showers), "shower_reuse": int(reuse),
           "energy_min_tev": float(energy_range[0]), "energy_max_tev": float(energy_range[1]),
           "spectral_index": float(spectral_index), "min_alt_deg": p_alt, "max_alt_deg": p_alt,
           "min_az_deg": p_az, "max_az_deg": p_az, "diffuse": bool(viewcone_deg > 0),
           "min_viewcone_deg": 0.0, "max_viewcone_deg": float(viewcone_deg),
           "min_scatter_m": 0.0, "max_scatter_m": max_scatter, "core_pos_mode": 0,
           "obs_height_m": obs_height, "atmosphere": -1, "b_total_ut": np.nan, "b_inclination_deg": np.nan,
           "b_declination_deg": np.nan, "pointing_alt_deg": p_alt, "pointing_az_deg": p_az,
           "corsika_version": 0, "simtel_version": 0}
    write_table(S.validate(pa.Table.from_pylist([run]), S.SIM_RUN), staging / "simulation" / "runs.parquet",
                S.SIM_RUN, prov)
    # the per-shower tables are streamed block by block (memory bounded by a block)
    hist = _DistributionAccumulator(energy_range, max_scatter, subarray, particle == "muon")
    n_showers_out = n_events = 0
    streamed = [("simulation/showers.parquet", "showers", S.SIM_SHOWER),
                ("trigger/part-00000.parquet", "trigger", S.R1_TRIGGER)]
    if particle == "muon":
        streamed.append(("simulation/muons.parquet", "muons", SIM_MUON))
    for rel, name, schema_name in streamed:
        w = TableWriter(staging / rel, schema_name, prov, min_row_group_bytes=CARRY_ROW_GROUP_BYTES)
        for r in recs:
            t = pq.read_table(staging / "tasks" / r["task"] / f"{name}.parquet")
            w.write(t)
            if name == "showers":
                hist.add(t)
        w.close()
        if name == "showers":
            n_showers_out = w.rows
        elif name == "trigger":
            n_events = w.rows
    write_table(hist.table(int(obs_id)), staging / "simulation" / "shower_distribution.parquet",
                S.SIM_SHOWER_DISTRIBUTION, prov)
    counts_t = _part_rows(recs)
    summary.n_tel_events = counts_t
    summary.n_array_events = n_events
    summary.n_showers = n_showers_out
    summary.seconds = time.perf_counter() - t0
    counts = {"array_events_out": n_events, "showers_out": n_showers_out, "telescope_events_out": counts_t,
              "telescope_candidates": sum(r["candidates"] for r in recs)}
    if level == "dl1":
        counts["telescope_events_in"] = sum(r["telescope_events_in"] for r in recs)
    record = dict(prov, stop=now(), seconds=round(summary.seconds, 3), warnings=summary.warnings,
                  counts=counts, tasks=[{"task": r["task"], "parts": r["parts"]} for r in recs],
                  executor={"workers": workers, "scheduler": scheduler},
                  levels=["instrument", "simulation", level])
    (staging / "provenance.json").write_text(json.dumps(record, indent=1, default=str))
    _commit_staging(staging, output)
    return summary


class _DistributionAccumulator:
    """sim_telarray's histogram 6 for a toy run, filled block by block: every shower use
    in core distance (ground plane, 100 bins from 0 to the scatter radius; for muons, to
    the farthest telescope plus the impact range) × log10 energy (10 bins per decade over
    the simulated range), so effective areas can use the same code path as for
    sim_telarray files."""

    def __init__(self, energy_range, max_scatter_m, subarray, muon: bool):
        lo, hi = np.log10(float(energy_range[0])), np.log10(float(energy_range[1]))
        self.e_edges = np.linspace(lo, hi, max(1, int(np.ceil((hi - lo) * 10))) + 1)
        r_max = float(max_scatter_m)
        if muon:
            pos = subarray.positions()
            r_max += float(np.hypot(pos[:, 0], pos[:, 1]).max())
        self.r_edges = np.linspace(0.0, r_max, 101)
        self.h = np.zeros((100, len(self.e_edges) - 1))
        self.n = 0

    def add(self, showers: pa.Table) -> None:
        r = np.hypot(showers.column(S.TRUE_CORE_X).to_numpy(), showers.column(S.TRUE_CORE_Y).to_numpy())
        # a core on the outer edge belongs to the last bin, not outside it
        r = np.minimum(r, np.nextafter(self.r_edges[-1], 0.0))
        h, _, _ = np.histogram2d(r, np.log10(showers.column(S.TRUE_ENERGY).to_numpy()),
                                 bins=(self.r_edges, self.e_edges))
        self.h += h
        self.n += showers.num_rows

    def table(self, obs_id: int) -> pa.Table:
        return S.validate(pa.Table.from_pylist([{
            S.OBS_ID: obs_id, "hist_id": 6, "n_entries": int(self.n), "bins_core_dist_m": self.r_edges.tolist(),
            "bins_energy_tev": (10 ** self.e_edges).tolist(), "histogram": self.h.ravel().tolist()}]),
            S.SIM_SHOWER_DISTRIBUTION)
