"""``dvp merge``: compact many product directories into one, with large row groups.

Batch jobs leave many small product directories (one per input file or job); every
later command pays a fixed cost per file and per row group, so a merge into one file
per partition with row groups of tens of MiB makes them fast again. The merge is a
stream: each input file is read batch by batch and appended to one
:class:`~dvp.io.parquet.TableWriter` per output file, so memory is bounded by a row
group, whatever the number or size of the inputs; nothing is decoded beyond what a
Parquet round trip needs.

Row order
---------
Rows keep (input order, file order): the rows of the first input come first, and
within an input the files in name order (``part-00000``, ``part-00001``, ...). dvp
writes each product in (obs_id, event_id) order, so a merge of inputs given in obs_id
order is in event order too. That keeps each row group's key range narrow, which
:func:`dvp.runner.dl1_to_dl2` and ``apply-models`` need to cut the merged product into
tasks of whole array events (:mod:`dvp.io.keyrange`); row groups that mix inputs out of
order span wide key ranges, and the tasks then grow, up to a file read whole.
Globs expand in name order; a merge out of event order is reported as a warning.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schemas as S
from .errors import DvpError, InputError
from .io.keyrange import table_keys
from .io.parquet import ROW_GROUP_BYTES, UNCOMPRESSED_COLUMNS, ProductWriter, TableWriter, write_table
from .provenance import now, start_record
from .runner import PRODUCT_SIM_TABLES, RunSummary, _level_files, _open_checked, expand_products

#: default minimum row-group size (Arrow bytes in memory) of the merged tables other than
#: R1 waveforms: DL1 parameters are ~600 bytes a row, so ~100,000 rows a row group
MERGE_ROW_GROUP_BYTES = 64 * 2**20

# hive-partitioned levels (``<level>/tel_type=<type>/*.parquet``) and one-table levels
# (``<level>/*.parquet``), with the schema of their files
PARTITIONED_LEVELS = {"r1": S.R1_EVENTS, "dl1": S.DL1_EVENTS}
TABLE_LEVELS = {"trigger": S.R1_TRIGGER, "dl2": S.DL2_EVENTS, "dl2_telescopes": S.DL2_TELESCOPE_EVENTS}
SIM_TABLES = dict(PRODUCT_SIM_TABLES)
# written in this order: the big event tables first, so a bad input fails early
LEVEL_ORDER = ("r1", "dl1", "dl2", "dl2_telescopes", "trigger", "simulation")

# a batch read from an input holds about this fraction of the output row group, so that a
# row group overshoots its target by at most that much (R1 row groups stay near 16 MiB)
_BATCH_FRACTION = 4


@dataclass
class _Source:
    """What the merge needs to know of one input file. The file is not kept open (a
    merge of thousands of products would exhaust the open-file limit) and its footer
    not kept (with the writer's provenance, ~25 kB a file)."""
    path: Path
    schema: pa.Schema     # without schema-level metadata; one object per distinct layout
    product: int          # index of the input product
    rows: int
    group_bytes: list     # uncompressed Parquet bytes of each row group (sizes the reads)


@dataclass
class _Output:
    """One output file and the input files merged into it, in order."""
    rel: str              # path relative to the product root
    schema_name: str
    row_group_bytes: int
    sources: list = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(s.rows for s in self.sources)


def _open(path: Path, schema_name: str, product: int, layouts: dict) -> _Source:
    """Read an input file's footer and check it is a ``schema_name`` file.

    ``layouts`` maps the schemas seen so far (without the run-specific schema-level
    metadata) to one schema object each: with hundreds of inputs of one layout,
    :func:`dvp.schemas.check_file_schema` (~0.4 ms: it builds the schema) runs once
    per layout, and the sources share one schema.
    """
    pf = _open_checked(path, schema_name, ())
    try:
        schema = pf.schema_arrow
        meta = schema.metadata or {}
        bare = schema.remove_metadata()
        key = (schema_name, meta.get(S.META_SCHEMA_NAME), meta.get(S.META_SCHEMA_VERSION),
               bare.serialize().to_pybytes())
        if key not in layouts:
            S.check_file_schema(schema, schema_name, str(path))
            layouts[key] = bare
        md = pf.metadata
        return _Source(path, layouts[key], product, md.num_rows,
                       [md.row_group(i).total_byte_size for i in range(md.num_row_groups)])
    finally:
        pf.close()


def _product_tables(product: Path) -> dict[str, tuple[str, list[Path]]]:
    """``{output path: (schema, input files)}`` of one product directory, every level
    (``level`` or ``level/tel_type=<type>`` or ``simulation/<table>``)."""
    out: dict[str, tuple[str, list[Path]]] = {}
    for d in sorted(product.iterdir()):
        name = d.name
        if not d.is_dir() or name == "instrument" or name.startswith("."):
            continue   # instrument/ is written once from the first input; provenance.json anew
        if name in PARTITIONED_LEVELS:
            by_type: dict[str, list[Path]] = {}
            for tel_type, f in _level_files(product, name):
                by_type.setdefault(tel_type, []).append(f)
            if not by_type:
                raise InputError(d, "level directory holds no Parquet file")
            for tel_type, files in by_type.items():
                out[f"{name}/tel_type={tel_type}/part-00000.parquet"] = (PARTITIONED_LEVELS[name], files)
        elif name in TABLE_LEVELS:
            files = sorted(d.glob("*.parquet"))
            if not files:
                raise InputError(d, "level directory holds no Parquet file")
            out[f"{name}/part-00000.parquet"] = (TABLE_LEVELS[name], files)
        elif name == "simulation":
            for f in sorted(d.iterdir()):
                if f.name not in SIM_TABLES:
                    raise InputError(f, "unknown simulation table; dvp merge cannot merge it")
                out[f"simulation/{f.name}"] = (SIM_TABLES[f.name], [f])
        else:
            raise InputError(d, "unknown level directory; dvp merge cannot merge it")
    return out


def _levels(tables) -> list[str]:
    """The levels of a product: ``r1``, ``dl1``, ``trigger``, ..., ``simulation/<table>``
    (telescope-type partitions may differ between inputs: a small product may lack one)."""
    return sorted({rel if rel.startswith("simulation/") else rel.split("/", 1)[0] for rel in tables})


def _plan(products: list[Path], row_group_bytes: int, r1_row_group_bytes: int) -> tuple[dict, list[str]]:
    """Every output file with its input files, after checking that all inputs hold the
    same levels and that each output's inputs agree on columns and types."""
    outputs: dict[str, _Output] = {}
    levels0 = None
    layouts: dict = {}
    for i, p in enumerate(products):
        tables = _product_tables(p)
        levels = _levels(tables)
        if levels0 is None:
            levels0 = levels
        elif levels != levels0:
            extra = sorted(set(levels) - set(levels0))
            missing = sorted(set(levels0) - set(levels))
            what = "; ".join(s for s in (f"has {extra}" if extra else "", f"lacks {missing}" if missing else "") if s)
            raise InputError(p, f"levels differ from {products[0]} ({what}); merge products of the same levels")
        for rel, (schema_name, files) in tables.items():
            o = outputs.get(rel)
            if o is None:
                target = r1_row_group_bytes if rel.startswith("r1/") else row_group_bytes
                o = outputs[rel] = _Output(rel, schema_name, target)
            o.sources.extend(_open(f, schema_name, i, layouts) for f in files)
    for o in outputs.values():
        _check_columns(o)
    order = {lv: k for k, lv in enumerate(LEVEL_ORDER)}
    return dict(sorted(outputs.items(), key=lambda kv: (order[kv[0].split("/", 1)[0]], kv[0]))), levels0 or []


def _check_columns(o: _Output) -> None:
    """All non-empty inputs of one output have the same columns and types: optional
    per-pixel columns (DL1 images, DL2 model columns) and camera sizes must agree."""
    first = None
    for s in o.sources:
        if s.rows == 0:
            continue   # an empty table adds no rows: its optional columns do not matter
        schema = s.schema
        if first is None:
            first, names0, types0 = s, schema.names, schema.types
            continue
        if schema.names != names0:
            extra = [c for c in schema.names if c not in names0]
            missing = [c for c in names0 if c not in schema.names]
            what = "; ".join(t for t in (f"has {extra}" if extra else "", f"lacks {missing}" if missing else "") if t)
            raise InputError(s.path, f"columns differ from {first.path} ({what}); merge products written "
                                     "with the same options (e.g. --write-images, the same models)")
        for c, t, t0 in zip(names0, schema.types, types0):
            if t != t0:
                raise InputError(s.path, f"column {c!r} has type {t}, but {first.path} has {t0} "
                                         "(a different camera readout?)")


def _check_instrument(products: list[Path]):
    """The instrument of the first product, after checking that every product has the same
    (:meth:`SubarrayDescription.fingerprint`).

    Building a product's description costs ~8 ms (seven small Parquet files through
    ``pq.read_table``), so a product whose instrument tables equal the first product's
    (data and key-value metadata other than provenance, which differs per run; ~3 ms,
    reads included) is taken as identical without building it: the description is a
    function of those tables. Any other is compared by fingerprint.
    """
    subarray = _read_instrument(products[0])
    fingerprint = subarray.fingerprint()
    try:
        tables0 = _instrument_tables(products[0])
    except (OSError, pa.ArrowException):
        tables0 = None
    for p in products[1:]:
        try:
            same = tables0 is not None and _instrument_tables(p) == tables0
        except (OSError, pa.ArrowException):
            same = False   # the read below gives the one-line error
        if not same and _read_instrument(p).fingerprint() != fingerprint:
            raise InputError(p, f"instrument differs from {products[0]}; merge products of one array only")
    return subarray


def _read_instrument(product: Path):
    from .instrument.subarray import SubarrayDescription
    try:
        return SubarrayDescription.read(product)
    except (OSError, pa.ArrowException, KeyError, ValueError) as e:
        raise InputError(product / "instrument", f"unreadable instrument description "
                                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


class _Tables(dict):
    """``{relative path: (table, metadata)}`` compared by value (``Table.equals``)."""

    def __eq__(self, other):
        return self.keys() == other.keys() and all(
            self[k][1] == other[k][1] and self[k][0].equals(other[k][0]) for k in self)


def _instrument_tables(product: Path) -> _Tables:
    out = _Tables()
    root = product / "instrument"
    for f in sorted(root.rglob("*.parquet")):
        # one thread: for files of a few kB, pyarrow's thread pool costs more than the read
        t = pq.ParquetFile(f).read(use_threads=False)
        meta = {k: v for k, v in (t.schema.metadata or {}).items() if k != S.META_PROVENANCE}
        out[str(f.relative_to(root))] = (t.replace_schema_metadata(None), meta)
    return out


def _key_source(outputs: dict) -> _Output | None:
    """The per-array-event table whose keys identify an input's events."""
    for rel in ("trigger/part-00000.parquet", "dl2/part-00000.parquet"):
        if rel in outputs:
            return outputs[rel]
    return None


def _check_events(o: _Output | None, products: list[Path]) -> list[str]:
    """Fail on an (obs_id, event_id) found in two inputs; warn if the merge is out of
    event order. Reads only the two key columns of the per-event table."""
    if o is None:
        return []
    obs, ev, owner = [], [], []
    for s in o.sources:
        if not s.rows:
            continue
        try:   # the key columns' types were checked with the file's schema (_open)
            with pq.ParquetFile(s.path) as pf:
                t = pf.read(columns=[S.OBS_ID, S.EVENT_ID], use_threads=False)
        except (OSError, pa.ArrowException) as e:
            raise InputError(s.path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
        o_, e_ = table_keys(t)
        obs.append(o_)
        ev.append(e_)
        owner.append(np.full(len(o_), s.product, np.int64))
    if not obs:
        return []
    obs, ev, owner = np.concatenate(obs), np.concatenate(ev), np.concatenate(owner)
    order = np.lexsort((owner, ev, obs))
    so, se, sw = obs[order], ev[order], owner[order]
    dup = (so[1:] == so[:-1]) & (se[1:] == se[:-1]) & (sw[1:] != sw[:-1])
    if dup.any():
        k = int(np.argmax(dup))
        first, second = products[int(sw[k])], products[int(sw[k + 1])]
        raise InputError(second, f"duplicate events: {int(dup.sum())} (obs_id, event_id) keys in more than one "
                                 f"input, e.g. ({int(so[k])}, {int(se[k])}) also in {first} (the same input twice?)")
    do, de = np.diff(obs), np.diff(ev)
    if (do < 0).any() or ((do == 0) & (de < 0)).any():
        return ["the merged events are not in (obs_id, event_id) order (inputs not given in obs_id order?): "
                "dl1-to-dl2 and apply-models cannot cut its row groups into narrow tasks (they may read it whole)"]
    return []


def _tables(s: _Source, row_group_bytes: int):
    """The rows of one input, in order, as tables of at most about
    ``row_group_bytes / _BATCH_FRACTION`` (or one input row group, if larger).

    Consecutive small row groups are read together (``read_row_groups``: pyarrow's cost
    is per call and column, ~1 ms for a 50-column DL1 file of a few rows, up to a third
    less than ``iter_batches``); a larger row group is read batch by batch. Files with uncompressed
    per-pixel columns (R1 waveforms) are read row group by row group through
    :mod:`dvp.io.fastlist` (8x pyarrow's nested decoding) when a row group is not larger
    than twice the output's.
    """
    limit = row_group_bytes / _BATCH_FRACTION
    with pq.ParquetFile(s.path) as pf:
        fast = [c for c in s.schema.names if c in UNCOMPRESSED_COLUMNS]
        if fast and max(s.group_bytes, default=0) <= 2 * row_group_bytes:
            from .io.fastlist import read_row_group
            for i in range(len(s.group_bytes)):
                yield read_row_group(pf, s.path, i, None, fast_columns=fast)
            return
        # one thread for small reads: pyarrow's thread pool costs more than the decode
        run, run_bytes = [], 0
        for i, size in enumerate([*s.group_bytes, None]):
            if run and (size is None or run_bytes + size > limit):
                yield pf.read_row_groups(run, use_threads=run_bytes > 2**22)
                run, run_bytes = [], 0
            if size is None:
                break
            if size <= limit:
                run.append(i)
                run_bytes += size
                continue
            batch_rows = max(1, int(pf.metadata.row_group(i).num_rows * limit / size))
            for b in pf.iter_batches(batch_size=batch_rows, row_groups=[i], use_threads=True):
                yield pa.Table.from_batches([b])


def _copy(o: _Output, writer: TableWriter, progress) -> None:
    """Append the rows of ``o``'s inputs to ``writer``, in order, a row group at a time.

    Tables are collected here until they make a row group, so that the writer's
    per-call work (validation, provenance stamping: a few ms with many inputs) is paid
    per row group rather than per input file.
    """
    pending, pending_bytes = [], 0
    for s in o.sources:
        if not s.rows:
            continue
        try:
            for t in _tables(s, o.row_group_bytes):
                if not t.num_rows:
                    continue
                pending.append(t.replace_schema_metadata(None))
                pending_bytes += t.nbytes
                if pending_bytes >= o.row_group_bytes:
                    writer.write(pa.concat_tables(pending))
                    pending, pending_bytes = [], 0
                if progress:
                    progress(t.num_rows)
        except (OSError, pa.ArrowException) as e:
            raise InputError(s.path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
    if pending:
        writer.write(pa.concat_tables(pending))
    elif writer.rows == 0 and o.sources:
        # no input has a row: an empty table with the inputs' columns (optional ones too)
        writer.write(o.sources[0].schema.empty_table())


def merge(inputs, output, *, overwrite=False, progress=None, row_group_bytes=MERGE_ROW_GROUP_BYTES,
          r1_row_group_bytes=ROW_GROUP_BYTES) -> RunSummary:
    """Merge product directories into one product directory with large row groups.

    Parameters
    ----------
    inputs : iterable of str or Path
        Product directories, globs of them or ``@list.txt`` files. All must hold the same
        levels (``r1/``, ``dl1/``, ``dl2/``, ``dl2_telescopes/``, ``trigger/``,
        ``simulation/`` tables) and the same instrument.
    output : str or Path
        Product directory to create: one ``part-00000.parquet`` per partition
        (``r1|dl1/tel_type=<type>/``) or table, instrument/ from the first input.
    overwrite : bool
        Replace ``output`` if it exists, once the new one is complete.
    progress : callable, optional
        ``progress(n, total=None)``: called with the rows copied.
    row_group_bytes : int
        Minimum row-group size (Arrow bytes in memory) of every table but R1.
    r1_row_group_bytes : int
        The same for R1 waveforms: a reader's memory holds a row group, and r1-to-dl1 is
        fastest with row groups that stay in cache (~16 MiB, ``ROW_GROUP_BYTES``).

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        One line naming the product or file, before any output exists, for: a level or
        instrument that differs from the first input's; optional columns (DL1 images,
        DL2 model columns) or camera sizes that differ; an (obs_id, event_id) in two
        inputs (the same input twice); a corrupt, truncated or foreign file (found while
        reading: the temporary output is removed).

    Notes
    -----
    Rows keep (input order, file order), so inputs given in obs_id order give an output
    in event order, which later commands cut into tasks (see the module docstring).
    """
    for name, v in (("row_group_bytes", row_group_bytes), ("r1_row_group_bytes", r1_row_group_bytes)):
        if int(v) != v or v < 1:
            raise DvpError(f"{name} must be a positive integer, got {v!r}")
    products = expand_products(inputs, "instrument")   # every product has instrument/
    if not products:
        raise DvpError("no input product directories given")
    pw = ProductWriter(output, overwrite=overwrite)   # an existing output fails now, not after the checks
    t0 = time.perf_counter()
    outputs, levels = _plan(products, int(row_group_bytes), int(r1_row_group_bytes))
    if not outputs:
        raise InputError(products[0], "product directory holds no data to merge (only instrument/)")
    subarray = _check_instrument(products)
    warnings = _check_events(_key_source(outputs), products)
    summary = RunSummary(output=Path(output), n_inputs=len(products), warnings=warnings,
                         input_bytes=sum(s.path.stat().st_size for o in outputs.values() for s in o.sources))
    config = {"row_group_bytes": int(row_group_bytes), "r1_row_group_bytes": int(r1_row_group_bytes)}
    prov = start_record("merge", products, config)
    if progress:
        progress(0, sum(o.rows_in for o in outputs.values()))
    rows_in, rows_out = {}, {}
    with pw:
        for rel, o in outputs.items():
            writer = TableWriter(pw.path(rel), o.schema_name, prov, min_row_group_bytes=o.row_group_bytes)
            try:
                _copy(o, writer, progress)
            finally:
                writer.close()
            rows_in[rel], rows_out[rel] = o.rows_in, writer.rows
            if writer.rows != o.rows_in:   # never expected: the footers promised other row counts
                raise DvpError(f"{rel}: wrote {writer.rows} rows, but the input footers hold {o.rows_in}")
        subarray.write(pw.tmp, lambda t, p, n: write_table(t, p, n, prov))
        tel_level = next((lv for lv in ("r1", "dl1") if lv in levels), None)
        summary.n_tel_events = {rel.split("=", 1)[1].split("/", 1)[0]: n for rel, n in rows_out.items()
                                if tel_level and rel.startswith(f"{tel_level}/")}
        key = _key_source(outputs)
        summary.n_array_events = rows_out[key.rel] if key else 0
        summary.n_showers = rows_out.get("simulation/showers.parquet", 0)
        summary.seconds = time.perf_counter() - t0
        record = dict(prov, stop=now(), seconds=round(summary.seconds, 3), warnings=summary.warnings,
                      counts={"rows_in": rows_in, "rows_out": rows_out,
                              "telescope_events_out": summary.n_tel_events,
                              "array_events_out": summary.n_array_events, "showers_out": summary.n_showers,
                              "input_files": sum(len(o.sources) for o in outputs.values()),
                              "input_bytes": summary.input_bytes},
                      levels=["instrument", *levels])
        pw.path("provenance.json").write_text(json.dumps(record, indent=1, default=str))
        pw.commit()
    return summary
