"""The agent installs alone: importing it pulls in no training, simulation or web code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# rich is not listed: httpx imports it for its own CLI whenever it is installed.
HEAVY = [
    "pyspark",
    "sklearn",
    "skl2onnx",
    "simpy",
    "starlette",
    "fastapi",
    "uvicorn",
    "sqlite_utils",
    "model_store",
    "backend",
    "fleet_sim",
    "matplotlib",
    "scipy",
    "pandas",
]


def test_importing_the_agent_imports_nothing_heavy():
    code = (
        "import sys, json, agent, agent.cli, agent.protect.scan, agent.model, agent.policy,"
        " agent.features;"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


PACKAGES = [
    p for p in ("agent", "model_store", "backend", "fleet_sim", "fleetward") if (ROOT / p).is_dir()
]


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_respect_the_dependency_direction_and_private_names(package):
    allowed = {
        "agent": {"agent"},
        "model_store": {"agent", "model_store"},
        "backend": {"agent", "model_store", "backend"},
        "fleet_sim": {"agent", "model_store", "backend", "fleet_sim"},
        "fleetward": {"agent", "model_store", "backend", "fleet_sim", "fleetward"},
    }[package]
    ours = {"agent", "model_store", "backend", "fleet_sim", "fleetward"}
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        for module, names in _imports(path):
            top = module.split(".")[0]
            if top in ours:
                assert top in allowed, f"{path.relative_to(ROOT)} imports {module}"
                if top != package:
                    private = [p for p in module.split(".")[1:] if p.startswith("_")]
                    private += [n for n in names if n.startswith("_")]
                    assert not private, f"{path.relative_to(ROOT)} uses private {module}:{private}"
