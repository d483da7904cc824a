"""`fleetward sim run`: report files, and exit 1 naming a failed outcome."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fleetward.cli import main

from .conftest import SCENARIOS


def test_sim_run_writes_report_and_passes(sim_data, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "sim",
            "run",
            str(SCENARIOS / "kill-switch.toml"),
            "--endpoints",
            "300",
            "--data",
            str(sim_data),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((out / "report.json").read_text())
    assert data["passed"] and data["seed"] == 11
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_failed_outcome_exits_1_and_names_it(sim_data, tmp_path):
    text = (SCENARIOS / "kill-switch.toml").read_text() + (
        '\n[[outcomes]]\nname = "impossible alert budget"\ncheck = "alerts_per_org_day"\n'
        "false_positives = false\nat_most = -1\n"
    )
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = CliRunner().invoke(
        main,
        [
            "sim",
            "run",
            str(path),
            "--endpoints",
            "200",
            "--days",
            "2",
            "--data",
            str(sim_data),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 1
    assert "impossible alert budget" in r.output


def test_invalid_scenario_is_a_one_line_error(sim_data, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('name = "x"\n[world]\nendpointz = 3\n')
    r = CliRunner().invoke(
        main, ["sim", "run", str(path), "--data", str(sim_data), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code != 0 and "endpointz" in r.output


def test_sim_run_refuses_zero_workers_in_one_line(tmp_path):
    r = CliRunner().invoke(
        main,
        ["sim", "run", str(SCENARIOS / "kill-switch.toml"), "--workers", "0",
         "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert r.exit_code == 2
    assert "--workers" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()
