import json

from .conftest import SIMTEL, run_cli


def test_info_on_product_directory(r1_products):
    res = run_cli("info", r1_products["run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini"], "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["levels"]["r1"] == {"LST_LST_LSTCam": 6, "MST_MST_FlashCam": 30}
    assert info["array_events"] == 6
    assert info["schema_version"] == "1.0.0"
    assert info["simulation"]["particles"] == {"proton": info["simulation"]["showers_in_file"]}
    assert info["provenance"]["command"] == "simtel-to-r1"


def test_info_text_on_simtel_file():
    res = run_cli("info", SIMTEL / "gamma_prod6_tel_event_header_v4.simtel.zst")
    assert res.returncode == 0, res.stderr
    assert "sim_telarray file" in res.stdout and "LST_LST_LSTcam" in res.stdout


def test_info_on_bad_path(tmp_path):
    res = run_cli("info", tmp_path / "nope")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "no such file" in res.stderr


def test_help_explains_commands():
    res = run_cli("simtel-to-r1", "--help")
    assert res.returncode == 0 and "--output" in res.stdout and "ctapipe" in res.stdout
