"""The systemd unit: what it runs, restart, capabilities, hardening, systemd-analyze verify."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main as agent_cli
from agent.service import CAPABILITIES, UNIT_NAME, install_service, render_unit, uninstall_service

RUN_ARGS = ["--repo-url", "http://updates.local:8080", "--org", "acme", "--protect", "/srv/in box"]


def _settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_unit_runs_the_agent_with_state_under_var_lib_and_restarts_on_failure() -> None:
    s = _settings(render_unit(RUN_ARGS))
    assert s["ExecStart"] == (
        f"{sys.executable} -m agent run --repo-url http://updates.local:8080 --org acme "
        '--protect "/srv/in box" --state-dir /var/lib/fleetward'
    )
    assert s["Restart"] == "on-failure" and s["StateDirectory"] == "fleetward"
    assert s["StateDirectoryMode"] == "0700" and s["WantedBy"] == "multi-user.target"


def test_unit_keeps_a_given_state_dir_and_escapes_specifiers() -> None:
    s = _settings(render_unit(["--state-dir", "/opt/fw", "--org", "50%$off"]))
    assert s["ExecStart"].endswith("run --state-dir /opt/fw --org 50%%$$off")
    assert "/var/lib/fleetward" not in s["ExecStart"]


def test_unit_grants_the_fanotify_capabilities_and_no_mount_namespace() -> None:
    s = _settings(render_unit(RUN_ARGS))
    bounded = set(s["CapabilityBoundingSet"].split())
    assert {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH"} <= bounded == set(CAPABILITIES)
    assert s["NoNewPrivileges"] == "yes"
    # a private mount namespace would blind mount marks and block quarantine moves
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths", "PrivateDevices"):
        assert key not in s


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_generated_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    path = install_service(RUN_ARGS, unit_dir=tmp_path, start=False)
    ok = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr
    broken = tmp_path / "bad" / UNIT_NAME  # the check can fail: a unit with a bad directive
    broken.parent.mkdir()
    broken.write_text(path.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    bad = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True)
    assert "restart specifier" in bad.stderr


def test_service_install_and_uninstall_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [*RUN_ARGS[:-1], str(tmp_path)]  # --protect must name an existing folder
    out = runner.invoke(
        agent_cli,
        ["service", "install", "--unit-dir", str(tmp_path), "--no-start", "--", *args],
    )
    assert out.exit_code == 0, out.output
    unit = tmp_path / UNIT_NAME
    assert "--protect" in unit.read_text() and str(unit) in out.output
    out = runner.invoke(
        agent_cli, ["service", "uninstall", "--unit-dir", str(tmp_path), "--no-stop"]
    )
    assert out.exit_code == 0 and not unit.exists()
    assert uninstall_service(unit_dir=tmp_path, stop=False) is None


def test_service_install_refuses_run_options_that_do_not_parse(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        agent_cli,
        ["service", "install", "--unit-dir", str(tmp_path), "--no-start", "--", "--org", "acme"],
    )
    assert out.exit_code != 0 and "--repo-url" in out.output
    assert not (tmp_path / UNIT_NAME).exists()


def test_service_install_makes_relative_run_paths_absolute(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "root.json").write_text("{}")
    (tmp_path / "in box").mkdir()
    monkeypatch.chdir(tmp_path)
    units = tmp_path / "units"
    args = ["--repo-url", "http://u:8080", "--org", "acme", "--root", "root.json"]
    args += ["--protect", "in box", "--watch=./in box", "--state-dir", "state/../fw"]
    out = CliRunner().invoke(
        agent_cli, ["service", "install", "--unit-dir", str(units), "--no-start", "--", *args]
    )
    assert out.exit_code == 0, out.output
    exec_start = _settings((units / UNIT_NAME).read_text())["ExecStart"]
    assert exec_start == (
        f"{sys.executable} -m agent run --repo-url http://u:8080 --org acme "
        f'--root {tmp_path}/root.json --protect "{tmp_path}/in box" '
        f'"--watch={tmp_path}/in box" --state-dir {tmp_path}/fw'
    )
    assert (units / UNIT_NAME).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in units.iterdir()) == [UNIT_NAME]  # no temp file left behind
