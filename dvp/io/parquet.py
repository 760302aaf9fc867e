"""Parquet product directories: validated writes, atomic directory commits, readers.

Every table goes through :func:`dvp.schemas.validate` before it is written, and every
file carries the schema name/version, the dvp version and the run's provenance in its
key-value metadata. A product directory is assembled under a temporary sibling name
and renamed into place only when complete (:class:`ProductWriter`), so a failed run
leaves no partial output and never touches an existing one.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schemas as S
from ..errors import DvpError, InputError

# Chosen by measurement (benchmarks/RESULTS.md, "R1 storage" and "R1 -> DL1"): noise-dominated
# float32 waveforms hardly compress (zstd-1: 0.92 of raw; level 9: 0.87 at 1/5 the write
# speed; byte-stream-split gains nothing) while decompressing them costs ~280 us per LSTCam
# event, three times the whole R1 -> DL1 computation. So waveform columns are stored
# uncompressed (8 % more disk) and everything else zstd level 1. Row groups of ~16 MiB of
# waveforms (~56 LSTCam events) read fastest (they stay in cache) and bound a worker's memory.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 1
ROW_GROUP_BYTES = 16 * 2**20
# per-pixel numeric lists read on every R1 -> DL1 batch: kept uncompressed so that
# dvp.io.fastlist can copy them instead of pyarrow's slow nested decoding (+3 % of disk)
UNCOMPRESSED_COLUMNS = (S.WAVEFORM, S.SELECTED_GAIN, S.TIME_SHIFT)

PARQUET_OPTIONS = dict(compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                       use_dictionary=False, write_statistics=True)


def parquet_options(schema: pa.Schema) -> dict:
    """Writer options for a table with ``schema``: zstd-1, except waveform columns."""
    if not any(name in UNCOMPRESSED_COLUMNS for name in schema.names):
        return dict(PARQUET_OPTIONS)
    # per-column options are keyed by Parquet leaf path (a list column's top-level name is
    # silently ignored); pyarrow takes one level for all codecs and refuses it for "none",
    # and its zstd default level is 1
    leaves = {f.name: _leaf_path(f) for f in schema}
    codecs = {leaf: "none" if name in UNCOMPRESSED_COLUMNS else COMPRESSION for name, leaf in leaves.items()}
    # min/max statistics of every waveform page cost write time and no reader uses them
    stats = [leaf for name, leaf in leaves.items() if name not in UNCOMPRESSED_COLUMNS]
    # one data page per column chunk (pages of 1 MiB cut an LSTCam row group into 14, and
    # the fast reader's cost is per page: header, level check, read call)
    return dict(compression=codecs, use_dictionary=False, write_statistics=stats, data_page_size=ROW_GROUP_BYTES)


def _leaf_path(f: pa.Field) -> str:
    t = f.type
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        return f"{f.name}.list.element"  # pyarrow's compliant nested naming (the default)
    return f.name


def with_provenance(table: pa.Table, provenance: dict | None) -> pa.Table:
    if not provenance:
        return table
    meta = dict(table.schema.metadata or {})
    meta[S.META_PROVENANCE] = json.dumps(provenance, default=str).encode()
    return table.replace_schema_metadata(meta)


def write_table(table: pa.Table, path, schema_name: str, provenance: dict | None = None) -> Path:
    """Validate ``table`` against ``schema_name`` and write it to ``path`` (one file)."""
    table = with_provenance(S.validate(table, schema_name, source=str(path)), provenance)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **parquet_options(table.schema))
    return path


class TableWriter:
    """Append validated batches to one Parquet file, in row groups of at least
    ``min_row_group_bytes`` (small batches, e.g. DL1 parameters at ~600 bytes a row, are
    collected first so that row groups and the footer do not grow with the number of
    batches; 0 writes one row group per batch). A table written batch by batch reads back
    the same as one written at once by :func:`write_table`."""

    def __init__(self, path, schema_name: str, provenance: dict | None = None,
                 min_row_group_bytes: int = ROW_GROUP_BYTES):
        self.path = Path(path)
        self.schema_name = schema_name
        self.provenance = provenance
        self.min_row_group_bytes = min_row_group_bytes or 0
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list = []
        self._pending_bytes = 0

    def write(self, table: pa.Table):
        table = with_provenance(S.validate(table, self.schema_name, source=str(self.path)), self.provenance)
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self._pending_bytes >= self.min_row_group_bytes:
            self._flush()

    def _flush(self):
        table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_bytes = [], 0
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, table.schema, **parquet_options(table.schema))
        elif not self._writer.schema.equals(table.schema, check_metadata=False):
            raise DvpError(f"{self.path}: batch schema differs from earlier batches "
                           f"(different camera readout in the inputs?)")
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self):
        """Write what is pending; an empty table if nothing was ever written."""
        if self._pending:
            self._flush()
        if self._writer is None:
            write_table(S.schema(self.schema_name).empty_table(), self.path, self.schema_name, self.provenance)
        else:
            self._writer.close()
            self._writer = None


class PartitionedWriter:
    """Append validated batches to ``<root>/tel_type=<type>/part-00000.parquet``: one
    :class:`TableWriter` per telescope type (one row group per batch unless
    ``min_row_group_bytes`` is given)."""

    def __init__(self, root: Path, schema_name: str, provenance: dict | None = None,
                 min_row_group_bytes: int | None = None):
        self.root = Path(root)
        self.schema_name = schema_name
        self.provenance = provenance
        self.min_row_group_bytes = min_row_group_bytes
        self._writers: dict[str, TableWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, tel_type: str, table: pa.Table):
        w = self._writers.get(tel_type)
        if w is None:
            w = self._writers[tel_type] = TableWriter(
                self.root / f"tel_type={tel_type}" / "part-00000.parquet", self.schema_name, self.provenance,
                self.min_row_group_bytes)
        w.write(table)
        self.rows[tel_type] = w.rows

    def close(self):
        try:
            for w in self._writers.values():
                w.close()
        finally:
            self._writers.clear()


class ProductWriter:
    """Build a product directory under a temporary name; :meth:`commit` renames it.

    If ``out`` exists, :class:`DvpError` is raised unless ``overwrite``; with
    ``overwrite`` the old directory is replaced only after the new one is complete.
    Leaving the ``with`` block by an exception removes the temporary directory.
    """

    def __init__(self, out, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DvpError(f"{self.out}: output exists (use --overwrite to replace it)")
        self.overwrite = overwrite
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self):
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def path(self, *parts) -> Path:
        return self.tmp.joinpath(*parts)

    def commit(self):
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.out, old)
            os.rename(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.out)
        self.committed = True


def waveforms_view(table: pa.Table | pa.RecordBatch, column: str = S.WAVEFORM) -> np.ndarray:
    """Zero-copy ``(n_events, n_pixels, n_samples)`` float32 view of a single-chunk batch."""
    arr = table.column(column)
    if isinstance(arr, pa.ChunkedArray):
        # a row group read from Parquet is one chunk; only concatenated tables copy here
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if len(arr) == 0:
        return np.empty((0, 0, 0), np.float32)
    n_pix, n_samp = int(table.column(S.N_PIXELS)[0].as_py()), int(table.column(S.N_SAMPLES)[0].as_py())
    return arr.flatten().to_numpy(zero_copy_only=True).reshape(len(arr), n_pix, n_samp)


def is_product_dir(path) -> bool:
    return (Path(path) / "instrument" / "subarray.parquet").is_file()


def read_provenance(path) -> dict:
    p = Path(path) / "provenance.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(p, f"invalid JSON ({e})") from None
