"""Human-readable summaries of product directories and sim_telarray files."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from . import schemas as S
from .errors import InputError
from .io.parquet import is_product_dir, read_provenance

LEVELS = ("r1", "dl0", "dl1", "dl2", "dl3")


def summarize(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        if not is_product_dir(path):
            raise InputError(path, "not a dvp product directory (no instrument/subarray.parquet)")
        return _product(path)
    return _simtel(path)


def _count_rows(files) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _product(path: Path) -> dict:
    from .instrument import SubarrayDescription

    sub = SubarrayDescription.read(path)
    tel_types = Counter(sub.telescopes.column(S.TEL_TYPE).to_pylist())
    out = {"kind": "dvp product directory", "path": str(path), "array": sub.name,
           "telescopes": dict(tel_types), "n_telescopes": sub.telescopes.num_rows, "levels": {}}
    meta = pq.read_schema(path / "instrument" / "subarray.parquet").metadata or {}
    out["schema_version"] = meta.get(S.META_SCHEMA_VERSION, b"?").decode()
    out["dvp_version"] = meta.get(S.META_DVP_VERSION, b"?").decode()
    for level in LEVELS:
        d = path / level
        if d.is_dir():
            per_type = {}
            for part in sorted(d.glob("tel_type=*")):
                per_type[part.name.split("=", 1)[1]] = _count_rows(sorted(part.glob("*.parquet")))
            if not per_type:
                per_type["(array events)"] = _count_rows(sorted(d.glob("*.parquet")))
            out["levels"][level] = per_type
    sim = path / "simulation"
    if (sim / "runs.parquet").is_file():
        runs = pq.read_table(sim / "runs.parquet").to_pylist()
        sh = pq.read_table(sim / "showers.parquet", columns=["triggered", "particle"])
        out["simulation"] = {
            "runs": len(runs),
            "simulated_showers_x_reuse": sum(r["n_showers"] * r["shower_reuse"] for r in runs),
            "showers_in_file": sh.num_rows,
            "showers_triggered": int(sum(sh.column("triggered").to_pylist())),
            "particles": dict(Counter(sh.column("particle").to_pylist())),
            "energy_range_tev": [min((r["energy_min_tev"] for r in runs), default=None),
                                 max((r["energy_max_tev"] for r in runs), default=None)],
        }
    trig = path / "trigger"
    if trig.is_dir():
        out["array_events"] = _count_rows(sorted(trig.glob("*.parquet")))
    dl2 = sorted((path / "dl2").glob("*.parquet"))
    if dl2:
        out["reconstruction"] = _dl2_summary(dl2)
    prov = read_provenance(path)
    if prov:
        out["provenance"] = {k: prov.get(k) for k in ("command", "start", "stop", "seconds")}
        out["provenance"]["inputs"] = [i["path"] for i in prov.get("inputs", [])]
        out["provenance"]["dvp"] = prov.get("versions", {}).get("dvp")
    return out


def _simtel(path: Path) -> dict:
    from .io.simtel import SimtelR1Reader

    reader = SimtelR1Reader(path)
    try:
        sub = reader.subarray
        counts = Counter()
        n_tel_events = 0
        for tel_type, batch in reader.batches():
            counts[tel_type] += batch.num_rows
            n_tel_events += batch.num_rows
        runs = reader.runs
        showers = reader.shower_table()
        return {"kind": "sim_telarray file", "path": str(path), "obs_id": reader.obs_id, "array": sub.name,
                "telescopes": dict(Counter(sub.telescopes.column(S.TEL_TYPE).to_pylist())),
                "n_telescopes": sub.telescopes.num_rows,
                "array_events": reader.trigger_table().num_rows, "telescope_events": dict(counts),
                "simulation": {"runs": len(runs),
                               "simulated_showers_x_reuse": sum(r["n_showers"] * r["shower_reuse"] for r in runs),
                               "showers_in_file": showers.num_rows,
                               "energy_range_tev": [runs[-1]["energy_min_tev"], runs[-1]["energy_max_tev"]],
                               "spectral_index": runs[-1]["spectral_index"],
                               "viewcone_deg": [runs[-1]["min_viewcone_deg"], runs[-1]["max_viewcone_deg"]],
                               "scatter_m": [runs[-1]["min_scatter_m"], runs[-1]["max_scatter_m"]]}}
    finally:
        reader.close()


def _dl2_summary(files) -> dict:
    """Array events and valid geometry, energy and gammaness counts of DL2 event files
    (only the flags read)."""
    names = set(pq.read_schema(files[0]).names)
    flags = [c for c in (S.RECO_IS_VALID, S.RECO_ENERGY_IS_VALID, S.GAMMANESS_IS_VALID) if c in names]
    label = {S.RECO_IS_VALID: "valid geometry", S.RECO_ENERGY_IS_VALID: "valid energy",
             S.GAMMANESS_IS_VALID: "valid gammaness"}
    out = {label[c]: 0 for c in flags}
    for f in files:
        t = pq.read_table(f, columns=flags)
        for c in flags:
            out[label[c]] += int(t.column(c).to_numpy(zero_copy_only=False).sum())
    return out


def render(info: dict, print_fn=print, indent: int = 0) -> None:
    pad = "  " * indent
    for k, v in info.items():
        if isinstance(v, dict):
            print_fn(f"{pad}{k}:")
            render(v, print_fn, indent + 1)
        else:
            print_fn(f"{pad}{k}: {v}")
