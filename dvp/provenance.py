"""Provenance records: inputs with checksums, versions, host, timings, counts."""
from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

from . import __version__

_DEPENDENCIES = ("numpy", "numba", "pyarrow", "polars", "eventio", "astropy", "scipy", "typer", "lightgbm", "distributed")


def sha256(path, chunk: int = 2**22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    out = {"dvp": __version__, "python": sys.version.split()[0]}
    for name in _DEPENDENCIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def input_record(path) -> dict:
    """Identity of one input: a file's size and sha256, or for a product directory the
    sha256 of its ``provenance.json`` (which holds its own inputs' checksums) and the total
    size of its Parquet files. Re-hashing gigabytes of waveforms per run would cost more
    than processing them."""
    p = Path(path)
    if not p.is_dir():
        return {"path": str(p.resolve()), "size_bytes": p.stat().st_size, "sha256": sha256(p)}
    files = sorted(p.rglob("*.parquet"))
    prov = p / "provenance.json"
    return {"path": str(p.resolve()), "kind": "product", "n_files": len(files),
            "size_bytes": sum(f.stat().st_size for f in files),
            "provenance_sha256": sha256(prov) if prov.is_file() else None}


def start_record(command: str, inputs, config: dict) -> dict:
    """Provenance known at the start of a run (also stamped into every Parquet file)."""
    return {
        "command": command,
        "start": now(),
        "inputs": [input_record(p) for p in inputs],
        "config": config,
        "versions": versions(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "user": _user(), "cpu_count": __import__("os").cpu_count()},
    }


def _user():
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
