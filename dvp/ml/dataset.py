"""Load the columns a model needs from DL2 product directories, telescope type by type.

A DL2 product (``dvp dl1-to-dl2``) holds ``dl1/tel_type=<type>/`` (image parameters),
``dl2_telescopes/`` (per telescope event: impact distance, used flag, predictions) and
``dl2/`` (per array event: geometry, energy, gammaness, true values). A telescope
event's row is its DL1 parameters joined with its ``dl2_telescopes`` row and its array
event's ``dl2`` row. Only the requested columns are read (Parquet projection), so the
memory is that of the features, never of images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .. import schemas as S
from ..errors import InputError

KEYS = (S.OBS_ID, S.EVENT_ID)
TEL_KEYS = (S.OBS_ID, S.EVENT_ID, S.TEL_ID)


def telescope_types(product: Path) -> list[str]:
    """Telescope types with DL1 data in ``product`` (sorted)."""
    d = Path(product) / "dl1"
    if not d.is_dir():
        raise InputError(product, "product directory has no dl1/ parameters (made by dvp dl1-to-dl2 "
                                  "or apply-models from dvp >= 0.1: rerun dl1-to-dl2)")
    return sorted(p.name.split("=", 1)[1] for p in d.iterdir() if p.is_dir() and p.name.startswith("tel_type="))


def _split(columns) -> tuple[list, list, list]:
    dl1 = set(S.column_names(S.DL1_EVENTS))
    tel = set(S.column_names(S.DL2_TELESCOPE_EVENTS, optional=True))
    ev = set(S.column_names(S.DL2_EVENTS, optional=True))
    out_dl1, out_tel, out_ev = [], [], []
    for c in columns:
        if c in TEL_KEYS:
            continue
        if c in dl1:
            out_dl1.append(c)
        elif c in tel:
            out_tel.append(c)
        elif c in ev:
            out_ev.append(c)
        else:
            raise InputError(c, "is neither a DL1 parameter nor a DL2 column")
    return out_dl1, out_tel, out_ev


def _scan(directory: Path, columns) -> pl.LazyFrame:
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise InputError(directory, "no Parquet file")
    try:
        schema = pl.read_parquet_schema(files[0])
    except Exception as e:  # polars raises several exception types for unreadable files
        raise InputError(files[0], f"corrupt or unreadable Parquet file ({str(e).splitlines()[0]})") from None
    missing = [c for c in columns if c not in schema]
    if missing:
        hint = " (apply an energy model first: dvp apply-models)" if missing[0] == S.RECO_ENERGY else ""
        raise InputError(files[0], f"missing column {missing[0]!r}{hint}")
    return pl.scan_parquet(files, hive_partitioning=False).select(list(columns))


def load_telescope_events(product: Path, tel_type: str, columns) -> pl.DataFrame:
    """One telescope type's rows with ``columns`` (plus the keys), in event order.

    Parameters
    ----------
    product : Path
        DL2 product directory.
    tel_type : str
    columns : iterable of str
        DL1 parameter, ``dl2_telescopes`` or ``dl2`` column names.
    """
    product = Path(product)
    dl1_cols, tel_cols, ev_cols = _split(columns)
    lf = join_features(_scan(product / "dl1" / f"tel_type={tel_type}", [*TEL_KEYS, *dl1_cols]),
                       _scan(product / "dl2_telescopes", [*TEL_KEYS, *tel_cols]) if tel_cols else None,
                       _scan(product / "dl2", [*KEYS, *ev_cols]) if ev_cols else None)
    try:
        return lf.collect()
    except Exception as e:
        raise InputError(product, f"cannot read the model inputs ({str(e).splitlines()[0]})") from None


def join_features(dl1, tel=None, ev=None) -> pl.LazyFrame:
    """Telescope events (``dl1``: keys and DL1 columns) with their ``dl2_telescopes``
    (``tel``) and array-event (``ev``) columns joined, sorted by (obs_id, event_id,
    tel_id). Frames or lazy frames; the join keys are the tables' keys."""
    lf = dl1.lazy()
    if tel is not None:
        lf = lf.join(tel.lazy(), on=list(TEL_KEYS), how="left")
    if ev is not None:
        lf = lf.join(ev.lazy(), on=list(KEYS), how="left")
    return lf.sort(list(TEL_KEYS))


def split_columns(columns) -> tuple[list, list, list]:
    """``columns`` as (DL1 parameters, ``dl2_telescopes`` columns, ``dl2`` columns),
    keys left out; an unknown name is an :class:`InputError`."""
    return _split(columns)


def columns_as_numpy(df: pl.DataFrame) -> dict:
    """Column name → numpy array (nulls from the left joins become NaN / False)."""
    out = {}
    for c in df.columns:
        s = df[c]
        if s.dtype == pl.Boolean:
            out[c] = s.fill_null(False).to_numpy()
        elif s.dtype.is_numeric():
            out[c] = s.cast(pl.Float64).fill_null(np.nan).to_numpy() if s.null_count() else s.to_numpy()
        else:
            out[c] = s.to_numpy()
    return out
