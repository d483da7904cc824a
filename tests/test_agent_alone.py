"""The agent installs alone: `pip install fleetward` with no extras gives a working scanner.

A fresh virtual environment gets the package from this checkout without extras (pip resolves
the agent's dependencies from the configured index or wheel cache), then `fleetward-agent scan`
runs on a small folder with a real bundle. The heavy rooms' dependencies must be absent.
Slow (a minute: numpy and onnxruntime are installed), and still part of CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pip_install_without_extras_gives_a_working_agent(tmp_path, bundles):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        check=True,
        env=clean,
        cwd=tmp_path,
        timeout=540,
    )
    absent = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
            "for m in ('sklearn', 'simpy', 'starlette', 'uvicorn', 'locust', 'onnxruntime')}))",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
    )
    found = json.loads(absent.stdout)
    assert found == {
        "sklearn": False,
        "simpy": False,
        "starlette": False,
        "uvicorn": False,
        "locust": False,
        "onnxruntime": True,
    }
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(Path(sys.executable).resolve(), folder / "python")
    (folder / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    (folder / "readme.txt").write_text("plain text\n")
    agent = env_dir / "bin" / "fleetward-agent"
    scan = subprocess.run(
        [str(agent), "scan", str(folder), "--bundle", str(bundles[2]), "--json"],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=120,
    )
    assert scan.returncode in (0, 1), scan.stderr
    rows = [json.loads(line) for line in scan.stdout.splitlines() if line.startswith("{")]
    scanned = {Path(r["path"]).name for r in rows if r.get("status") == "scanned"}
    assert scanned == {"python", "hello.sh", "readme.txt"}, scan.stdout
    assert all(r.get("model_version") == 2 for r in rows if r.get("status") == "scanned")
    run_help = subprocess.run(
        [str(agent), "run", "--help"], capture_output=True, text=True, env=clean, timeout=60
    )
    assert run_help.returncode == 0 and "--enroll-token" in run_help.stdout
    # the fleetward command still starts and points at the missing extra
    hint = subprocess.run(
        [str(env_dir / "bin" / "fleetward"), "backend", "serve"],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )
    assert hint.returncode == 2 and "pip install 'fleetward[backend]'" in hint.stderr
