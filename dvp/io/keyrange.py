"""Read per-event tables by (obs_id, event_id) range, for tasks that need whole array events.

A DL1 (or DL2) product holds one file per telescope type (or many part files), and an
array event's rows are spread over them. A task that needs whole events therefore
takes a *key range* ``[lo, hi)`` of ``(obs_id, event_id)`` and reads, from every file,
only the row groups whose min/max statistics can hold keys in the range, then keeps
the rows in it. :func:`plan_key_ranges` cuts a set of files into ranges of about a
given number of rows at row-group starts, so the tasks together read every row once
(plus the few row groups that straddle a cut); each task's memory is its range.

Keys compare lexicographically. Per-column statistics bound a row group's keys
conservatively: ``(min obs_id, min event_id) <= key <= (max obs_id, max event_id)``.
A file without statistics is read whole by every task that reads it, so the planner
then makes a single range.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schemas as S
from ..errors import InputError

Key = tuple  # (obs_id, event_id)

#: a plan whose ranges would read more than this many times the rows falls back to one range
MAX_READ_AMPLIFICATION = 2.0


def _open(path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None


def row_group_bounds(pf: pq.ParquetFile) -> list | None:
    """``[(lo, hi, rows), ...]`` per row group from the key columns' statistics, or None
    if a row group has no usable statistics (or the file has no key columns)."""
    md = pf.metadata
    names = [md.schema.column(j).path for j in range(md.num_columns)]
    if S.OBS_ID not in names or S.EVENT_ID not in names:
        return None
    jo, je = names.index(S.OBS_ID), names.index(S.EVENT_ID)
    out = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if rg.num_rows == 0:
            continue
        so, se = rg.column(jo).statistics, rg.column(je).statistics
        if so is None or se is None or not so.has_min_max or not se.has_min_max:
            return None
        out.append(((int(so.min), int(se.min)), (int(so.max), int(se.max)), rg.num_rows))
    return out


def _overlaps(rg_lo: Key, rg_hi: Key, lo: Key | None, hi: Key | None) -> bool:
    return (lo is None or rg_hi >= lo) and (hi is None or rg_lo < hi)


def plan_key_ranges(files, target_rows: int) -> list[tuple]:
    """Cut the rows of ``files`` into key ranges of about ``target_rows`` rows.

    Parameters
    ----------
    files : sequence of str or Path
        Parquet files with ``obs_id`` and ``event_id`` columns, any row order.
    target_rows : int
        Rows per range (a range holds at least this many, apart from the last). Ranges
        are cut at row-group starts, and inside row groups of more than half
        ``target_rows`` rows at their own keys (read for that; a task still reads
        every row group its range overlaps, and keeps the rows in range).

    Returns
    -------
    list of (lo, hi)
        Consecutive ranges ``[lo, hi)`` covering every key: the first ``lo`` and the
        last ``hi`` are None (unbounded). Where the row groups' key ranges are wide
        compared with their size, so that the tasks would read the rows more than
        :data:`MAX_READ_AMPLIFICATION` times (beyond what row groups larger than a task
        need), the ranges are made coarser (down to ``[(None, None)]`` for files whose
        rows are in no key order, or that lack statistics).
    """
    if target_rows < 1:
        raise ValueError(f"target_rows must be positive, got {target_rows}")
    entries, groups = [], []   # where to cut; what the tasks will read
    piece = max(target_rows // 4, 1)
    for f in files:
        pf = _open(f)
        b = row_group_bounds(pf)
        if b is None:
            return [(None, None)]
        nonempty = [g for g in range(pf.metadata.num_row_groups) if pf.metadata.row_group(g).num_rows]
        for g, e in zip(nonempty, b):
            if e[2] <= 2 * piece and e[0][0] == e[1][0]:
                entries.append(e)
                groups.append(e)
                continue
            # a row group much larger than a task (a merged product's 64 MiB ones) is cut
            # at its rows' own keys, so that tasks keep their size; one across an obs_id
            # boundary gets exact bounds (its statistics bound it loosely, and the tasks
            # check its keys before reading it: see read_key_range)
            pieces = _pieces(pf, f, g, piece if e[2] > 2 * piece else e[2])
            entries.extend(pieces)
            groups.append((min(x[0] for x in pieces), max(x[1] for x in pieces), e[2]))
    entries.sort()
    total = sum(r for _, _, r in groups)
    while True:
        ranges = _cut(entries, target_rows)
        if len(ranges) == 1:
            return ranges
        read = sum(rows * sum(_overlaps(lo, hi, a, b) for a, b in ranges) for lo, hi, rows in groups)
        # a row group of r rows in key order already spans about r / target_rows ranges
        spanned = sum(rows * rows for _, _, rows in groups) / target_rows
        if read <= MAX_READ_AMPLIFICATION * total + spanned:
            return ranges
        # row groups wider than the ranges (small tasks, or rows out of order) would be
        # read by many tasks: coarser ranges, down to one for fully unordered files
        target_rows *= 2


def _pieces(pf: pq.ParquetFile, path, g: int, piece: int) -> list:
    """``(lo, hi, rows)`` of consecutive slices of ``piece`` rows of row group ``g``,
    from its key columns (only they are read)."""
    try:
        obs, ev = _row_group_keys(pf, g)
    except (OSError, pa.ArrowException) as e:
        raise InputError(path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
    out = []
    for a in range(0, len(obs), piece):
        o, e = obs[a:a + piece], ev[a:a + piece]
        o_lo, o_hi = int(o.min()), int(o.max())
        out.append(((o_lo, int(e[o == o_lo].min())), (o_hi, int(e[o == o_hi].max())), len(o)))
    return out


def _cut(entries, target_rows: int) -> list:
    cuts: list = []
    acc = 0
    last = entries[0][0] if entries else None   # a cut above the smallest key: no empty first range
    for lo, _, rows in entries:
        if acc >= target_rows and lo > last:
            cuts.append(lo)
            last = lo
            acc = 0
        acc += rows
    return list(zip([None, *cuts], [*cuts, None]))


def _in_range(obs: np.ndarray, ev: np.ndarray, lo: Key | None, hi: Key | None) -> np.ndarray:
    keep = np.ones(len(obs), bool)
    if lo is not None:
        keep &= (obs > lo[0]) | ((obs == lo[0]) & (ev >= lo[1]))
    if hi is not None:
        keep &= (obs < hi[0]) | ((obs == hi[0]) & (ev < hi[1]))
    return keep


def read_key_range(path, columns, lo: Key | None, hi: Key | None, event_ids: pa.Array | None = None) -> pa.Table:
    """The rows of one Parquet file with keys in ``[lo, hi)``, in file order.

    Only ``columns`` (None: all; the keys are read in any case) and only the row groups
    whose statistics overlap the range are read. With ``event_ids``, rows whose event_id
    is not among them are dropped too, row group by row group as they are read: for a
    per-shower table (every simulated shower, most never triggered), memory is then one
    row group plus the rows kept, not the whole range.
    """
    pf = _open(path)
    cols = list(dict.fromkeys(pf.schema_arrow.names if columns is None else [*columns]))
    read_cols = list(dict.fromkeys([S.OBS_ID, S.EVENT_ID, *cols]))
    bounds = row_group_bounds(pf) if (lo is not None or hi is not None) else None
    if bounds is None:
        groups = list(range(pf.metadata.num_row_groups))
    else:
        nonempty = [g for g in range(pf.metadata.num_row_groups) if pf.metadata.row_group(g).num_rows]
        groups = [g for g, (a, b, _) in zip(nonempty, bounds) if _overlaps(a, b, lo, hi)]
    try:
        if bounds is not None:
            # statistics of a row group across an obs_id boundary bound its keys loosely
            # (min and max event_id of different runs): its keys tell if it holds any
            multi = {g for g, (a, b, _) in zip(nonempty, bounds) if a[0] != b[0]}
            groups = [g for g in groups if g not in multi or _keys_in_range(pf, g, lo, hi)]
        if not groups:
            return pf.schema_arrow.empty_table().select(cols)
        if event_ids is None:
            return _filter(pf.read_row_groups(groups, columns=read_cols, use_threads=False), lo, hi, None).select(cols)
        parts = [_filter(pf.read_row_group(g, columns=read_cols, use_threads=False), lo, hi, event_ids).select(cols)
                 for g in groups]
        return pa.concat_tables(parts)
    except (OSError, pa.ArrowException, KeyError) as e:
        raise InputError(path, f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None


def table_keys(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """``(obs_id, event_id)`` of a table as int64 arrays, shape (n,) each."""
    return (np.asarray(table.column(S.OBS_ID).to_numpy(zero_copy_only=False), np.int64),
            np.asarray(table.column(S.EVENT_ID).to_numpy(zero_copy_only=False), np.int64))


def _row_group_keys(pf: pq.ParquetFile, g: int) -> tuple[np.ndarray, np.ndarray]:
    return table_keys(pf.read_row_group(g, columns=[S.OBS_ID, S.EVENT_ID], use_threads=False))


def _keys_in_range(pf: pq.ParquetFile, g: int, lo, hi) -> bool:
    return bool(_in_range(*_row_group_keys(pf, g), lo, hi).any())


def _filter(t: pa.Table, lo, hi, event_ids) -> pa.Table:
    keep = None
    if lo is not None or hi is not None:
        keep = _in_range(*table_keys(t), lo, hi)
    if event_ids is not None:
        import pyarrow.compute as pc
        m = pc.is_in(t.column(S.EVENT_ID), value_set=event_ids).to_numpy(zero_copy_only=False)
        keep = m if keep is None else keep & m
    return t if keep is None or keep.all() else t.filter(pa.array(keep))


def read_key_range_concat(files, columns, lo: Key | None, hi: Key | None,
                          event_ids: pa.Array | None = None) -> pa.Table | None:
    """:func:`read_key_range` over several files, concatenated (None for no file)."""
    parts = [read_key_range(f, columns, lo, hi, event_ids) for f in files]
    if not parts:
        return None
    return pa.concat_tables([p.replace_schema_metadata(None) for p in parts], promote_options="permissive")


def key_json(key: Key | None):
    """A key as JSON (a list, or None); tuples come back from :func:`key_from_json`."""
    return None if key is None else [int(key[0]), int(key[1])]


def key_from_json(value) -> Key | None:
    return None if value is None else (int(value[0]), int(value[1]))


def paths(files) -> tuple[str, ...]:
    return tuple(str(Path(f).resolve()) for f in files)
