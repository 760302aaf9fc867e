"""Bad input: one-line error naming the file, non-zero exit, no (partial) output, nothing destroyed."""
import numpy as np
import pytest

from .conftest import SIMTEL, run_cli


def assert_clean_failure(res, out, needle):
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dvp: error:"), res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


@pytest.fixture()
def bad_files(tmp_path):
    src = SIMTEL / "gamma_prod6_tel_event_header_v4.simtel.zst"
    data = src.read_bytes()
    (tmp_path / "truncated.simtel.zst").write_bytes(data[: len(data) // 2])
    gz = (SIMTEL / "calib_events.simtel.gz").read_bytes()
    (tmp_path / "truncated.simtel.gz").write_bytes(gz[: len(gz) // 3])
    (tmp_path / "random.simtel").write_bytes(np.random.default_rng(1).bytes(100_000))
    (tmp_path / "empty.simtel.gz").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("name,needle", [
    ("truncated.simtel.zst", "truncated"),
    ("truncated.simtel.gz", "truncated.simtel.gz"),
    ("random.simtel", "not an EventIO"),
    ("empty.simtel.gz", "empty file"),
    ("does-not-exist.simtel.zst", "no such file"),
])
def test_bad_file_gives_one_line_error(bad_files, name, needle):
    out = bad_files / "out"
    res = run_cli("simtel-to-r1", bad_files / name, "-o", out, "-q")
    assert_clean_failure(res, out, needle)
    assert name in res.stderr


def test_corsika_file_rejected_clearly(tmp_path):
    f = SIMTEL / "5_gamma_2_telescopes_reuse_2_split_always.zst"
    res = run_cli("simtel-to-r1", f, "-o", tmp_path / "out", "-q")
    assert_clean_failure(res, tmp_path / "out", "CORSIKA IACT")


def test_truncated_can_be_kept_explicitly(bad_files):
    out = bad_files / "kept"
    res = run_cli("simtel-to-r1", bad_files / "truncated.simtel.zst", "-o", out, "--allow-truncated")
    assert res.returncode == 0, res.stderr
    assert "truncated" in res.stderr and (out / "provenance.json").is_file()


@pytest.mark.parametrize("name", ["proton_run000201_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst",
                                  "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.2_test.simtel.zst"])
def test_zero_event_files_give_valid_empty_products(name, r1_products):
    from dvp.info import summarize

    stem = name.replace(".simtel.zst", "")
    info = summarize(r1_products[stem])
    assert info["array_events"] == 0
    assert info["simulation"]["showers_in_file"] > 0 and info["simulation"]["showers_triggered"] == 0
    assert info["simulation"]["simulated_showers_x_reuse"] > 0


def test_failed_run_does_not_destroy_existing_output(tmp_path, bad_files):
    out = tmp_path / "existing"
    res = run_cli("simtel-to-r1", SIMTEL / "lst_with_photons.simtel.zst", "-o", out, "-q")
    assert res.returncode == 0, res.stderr
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    res = run_cli("simtel-to-r1", bad_files / "truncated.simtel.zst", "-o", out, "-q", "--overwrite")
    assert res.returncode == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    res = run_cli("simtel-to-r1", SIMTEL / "lst_with_photons.simtel.zst", "-o", out, "-q")
    assert res.returncode == 1 and "exists" in res.stderr
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_one_bad_input_among_good_ones_writes_nothing(tmp_path, bad_files):
    out = tmp_path / "out"
    res = run_cli("simtel-to-r1", SIMTEL / "lst_with_photons.simtel.zst", bad_files / "random.simtel", "-o", out, "-q")
    assert_clean_failure(res, out, "random.simtel")
