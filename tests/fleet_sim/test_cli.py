"""`fleetward sim run`: report files, exit 1 naming a failed outcome, Ctrl-C in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _group(pgid: int) -> list[str]:
    """The live processes of process group `pgid`, by name (zombies left out)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append((stat.parent / "comm").read_text().strip())
    return out


def test_ctrl_c_ends_the_run_in_one_line_and_leaves_no_process(sim_data, tmp_path):
    # as a terminal does: SIGINT to the whole foreground group, while two shard workers and the
    # prediction's process run beside the coordinator
    cmd = [sys.executable, "-m", "fleetward", "sim", "run", str(SCENARIOS / "rollout-bad.toml"),
           "--endpoints", "4000", "--days", "60", "--workers", "2", "--data", str(sim_data),
           "--out", str(tmp_path / "o")]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(_group(proc.pid)) < 4 and time.monotonic() < deadline:  # coordinator + 3 helpers
        time.sleep(0.1)
    names = _group(proc.pid)
    assert "fw-prediction" in names and len(names) >= 4, names  # the helpers are running
    assert proc.poll() is None  # and the run too: the interrupt lands mid-run
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.rstrip().endswith("Aborted!")
    deadline = time.monotonic() + 10
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group(proc.pid) == []
