"""File sets: globs, directories, @list files, several files of one array, mixed arrays."""
import shutil

import pyarrow.parquet as pq
import pytest

from dvp.errors import InputError
from dvp.runner import expand_inputs, simtel_to_r1

from .conftest import SIMTEL, run_cli


def test_expand_globs_dirs_and_lists(tmp_path):
    a = tmp_path / "d" / "a.simtel.zst"
    a.parent.mkdir()
    shutil.copy(SIMTEL / "lst_with_photons.simtel.zst", a)
    (tmp_path / "d" / "notes.txt").write_text("x")
    lst = tmp_path / "files.txt"
    lst.write_text(f"# comment\n{a}\n")
    assert expand_inputs([tmp_path / "d"]) == [a]
    assert expand_inputs([str(tmp_path / "d" / "*.zst")]) == [a]
    assert expand_inputs([f"@{lst}"]) == [a]
    with pytest.raises(InputError, match="glob matches no file"):
        expand_inputs([str(tmp_path / "*.nothing")])


def test_two_runs_of_one_array_go_into_one_product(tmp_path):
    # the same run twice under another name: rows double, instrument written once
    b = tmp_path / "copy.simtel.zst"
    shutil.copy(SIMTEL / "lst_muons.simtel.zst", b)
    out = tmp_path / "out"
    s = simtel_to_r1([SIMTEL / "lst_muons.simtel.zst", b], out)
    assert s.n_tel_events == {"LST_LST_LSTCam": 60}
    assert pq.read_table(out / "simulation" / "runs.parquet").num_rows == 2
    assert pq.read_table(out / "simulation" / "showers.parquet").num_rows == 60


def test_files_of_different_arrays_are_refused(tmp_path):
    out = tmp_path / "out"
    res = run_cli("simtel-to-r1", SIMTEL / "lst_muons.simtel.zst", SIMTEL / "40k_pixels.simtel.zst", "-o", out, "-q")
    assert res.returncode == 1 and "instrument differs" in res.stderr and not out.exists()
