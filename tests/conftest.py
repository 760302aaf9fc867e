import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SIMTEL = SHARED / "data" / "simtel"
REFERENCE = SHARED / "reference" / "ctapipe-0.28"
INSTRUMENT_REF = Path(__file__).parent / "reference" / "instrument"

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


def run_cli(*args, cwd=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "dvp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)
