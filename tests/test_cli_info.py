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


def test_help_text_is_reflowed_for_an_80_column_terminal():
    """Every command's description fills an 80-column terminal's lines: a line that is not a
    paragraph's last is never cut short where the docstring's source line ended."""
    from typer.testing import CliRunner

    from dvp.cli import app

    names = [info.name or info.callback.__name__.replace("_", "-") for info in app.registered_commands]
    assert {"r1-to-dl1", "train", "apply-models", "simulate"} <= set(names)
    for name in names:
        res = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert res.exit_code == 0, res.output
        description = res.output.split("Usage:")[1].split("╭")[0].splitlines()[2:]
        paragraphs = "\n".join(line.strip() for line in description).strip().split("\n\n")
        assert paragraphs and paragraphs[0], name
        for p in paragraphs:
            lines = p.splitlines()
            for line, following in zip(lines, lines[1:]):
                # rich wraps at the last space before column 79: the next word did not fit
                assert len(line) + 1 + len(following.split()[0]) > 76, (name, line)


def test_help_keeps_bracketed_text():
    """rich reads "[ml]" in a help text as a markup tag and drops it ("a config with an
    section"): every bracketed word of every command's and option's help must be printed
    (escaped as "\\[ml]" in the source)."""
    import re

    import typer
    from typer.testing import CliRunner

    from dvp.cli import app

    commands = typer.main.get_command(app).commands
    checked = 0
    for name, command in commands.items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        brackets = [m.group(1) for t in texts for m in re.finditer(r"\\?(\[[a-z_.*]+\])", t)]
        if not brackets:
            continue
        res = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert res.exit_code == 0, res.output
        flat = " ".join(res.output.replace("│", " ").split())
        for b in brackets:
            assert b in flat, (name, b)
            checked += 1
    assert checked, "no help text with a bracketed word left to check"
