import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SIMTEL = SHARED / "data" / "simtel"
REFERENCE = SHARED / "reference" / "ctapipe-0.28"
INSTRUMENT_REF = Path(__file__).parent / "reference" / "instrument"
REFERENCE_STEMS = sorted(p.name[: -len(".dl1.parquet")] for p in REFERENCE.glob("*.dl1.parquet"))

if not SIMTEL.is_dir():
    # never skip silently: the suite is meaningless without the shared data
    raise pytest.UsageError(f"shared test data missing: {SIMTEL}")


def stem(path) -> str:
    return re.sub(r"(\.simtel)?(\.(gz|zst))?$", "", Path(path).name)


def simtel_files():
    return sorted(SIMTEL.iterdir())


# files that are not sim_telarray output and must be rejected
REJECTED = {"5_gamma_2_telescopes_reuse_2_split_always"}


@pytest.fixture(scope="session")
def r1_products(tmp_path_factory):
    """Every readable shared sim_telarray file converted once: stem -> product directory."""
    from dvp.runner import simtel_to_r1

    base = tmp_path_factory.mktemp("r1")
    out = {}
    for f in simtel_files():
        if stem(f) in REJECTED:
            continue
        out[stem(f)] = base / stem(f)
        simtel_to_r1([f], out[stem(f)])
    return out


@pytest.fixture(scope="session")
def dl1_products(r1_products, tmp_path_factory):
    """Every shared file with events processed to DL1 with images, default config."""
    from dvp.runner import r1_to_dl1

    base = tmp_path_factory.mktemp("dl1")
    out = {}
    for name in REFERENCE_STEMS:
        out[name] = base / name
        r1_to_dl1([r1_products[name]], out[name], write_images=True)
    return out


def product_tables(product, by_partition: bool = False, by_key: bool = False) -> dict:
    """Relative path → table as Arrow IPC bytes (bit-exact, NaN-safe), Parquet metadata
    (provenance times) left out, row groups merged. With ``by_partition`` the files of a
    ``tel_type=`` directory (or of ``dl2/``, ``dl2_telescopes/``) are concatenated in
    name order under the directory's path: how many part files a writer makes is then
    not content. With ``by_key`` each table's rows are sorted (stably) by the keys it has
    (obs_id, event_id, tel_id): row order is then not content either."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    product = Path(product)
    groups: dict = {}
    for f in sorted(product.rglob("*.parquet")):
        split = f.parent.name.startswith("tel_type=") or f.parent.name in ("dl2", "dl2_telescopes")
        key = f.parent if by_partition and split else f
        groups.setdefault(str(key.relative_to(product)), []).append(pq.read_table(f).replace_schema_metadata(None))
    out = {}
    for key, tables in groups.items():
        t = pa.concat_tables(tables).combine_chunks()
        keys = [k for k in ("obs_id", "event_id", "tel_id") if k in t.column_names] if by_key else []
        if keys:
            t = t.sort_by([(k, "ascending") for k in keys])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out[key] = sink.getvalue().to_pybytes()
    return out


def run_cli(*args, cwd=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "dvp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def pytest_terminal_summary(terminalreporter):
    """Print the DL1 parity table (fraction of telescope events matching ctapipe per column)."""
    _dl2_parity_summary(terminalreporter)
    mod = sys.modules.get("tests.test_dl1_parity")
    parity = getattr(mod, "PARITY", None)
    if not parity:
        return
    tr = terminalreporter
    tr.section("DL1 parity with ctapipe 0.28 (rtol 1e-4, atol 1e-5)")
    for col, (ok, n) in parity.items():
        tr.write_line(f"{col:42s} {ok:5d}/{n:<5d} {100.0 * ok / max(n, 1):6.2f} %")


def _dl2_parity_summary(tr):
    parity = getattr(sys.modules.get("tests.test_dl2_parity"), "PARITY", None)
    if not parity:
        return
    tr.section("DL2 parity with ctapipe 0.28 (array events)")
    for col, (ok, n) in parity.items():
        tr.write_line(f"{col:42s} {ok:5d}/{n:<5d} {100.0 * ok / max(n, 1):6.2f} %")


@pytest.fixture(scope="session")
def dl2_products(dl1_products, tmp_path_factory):
    """Every DL1 product of ``dl1_products`` reconstructed to DL2, default config."""
    from dvp.runner import dl1_to_dl2

    base = tmp_path_factory.mktemp("dl2")
    out = {}
    for name, product in dl1_products.items():
        out[name] = base / name
        dl1_to_dl2([product], out[name])
    return out


def _sim_dl2(base, particle, n_showers, **kw):
    """A small toy-MC sample run through the whole chain to DL2 (default configs)."""
    from dvp.runner import dl1_to_dl2, r1_to_dl1, simulate

    simulate(particle, n_showers, base / "r1", **kw)
    r1_to_dl1([base / "r1"], base / "dl1")
    dl1_to_dl2([base / "dl1"], base / "dl2")
    return base / "dl2"


@pytest.fixture(scope="session")
def sim_dl2_gamma(tmp_path_factory):
    """Toy gammas to DL2: ~600 array events, 0.05-10 TeV (training and apply tests)."""
    return _sim_dl2(tmp_path_factory.mktemp("ml_gamma"), "gamma", 300, energy_range=(0.05, 10.0),
                    scatter_radius_m=500.0, reuse=5, seed=11, obs_id=1)


@pytest.fixture(scope="session")
def sim_dl2_proton(tmp_path_factory):
    """Toy protons to DL2 (diffuse within 3 deg), the background of the particle tests."""
    return _sim_dl2(tmp_path_factory.mktemp("ml_proton"), "proton", 500, energy_range=(0.15, 30.0),
                    scatter_radius_m=500.0, reuse=5, seed=12, obs_id=2, viewcone_deg=3.0)
