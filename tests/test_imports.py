"""Light modules stay light: a process that only writes the store loads no model or web code.

The simulator's fold writer (`python -m fleet_sim.link.fold_writer`) only writes SQLite, yet it
once imported onnxruntime, httpx, starlette and pydantic (about 38 MB and a third of a second per
process) through eager package re-exports (`agent`, `agent.telemetry`, `backend`,
`backend.analysis`) and module-level imports of what only other functions use. Each case runs
in a fresh interpreter: its `sys.modules` is what that process would carry.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNUSED_BY_WRITERS = ["httpx", "onnxruntime", "pydantic", "starlette"]
LAZY_PACKAGES = [
    "agent",
    "agent.protect",
    "agent.telemetry",
    "agent.update",
    "backend",
    "backend.analysis",
    "backend.server",
    "fleet_sim.cohort",
    "fleet_sim.link",
    "fleet_sim.parallel",
    "fleet_sim.result",
    "fleet_sim.rollout",
    "model_store.corpus",
    "model_store.gate",
    "model_store.repository",
]


def _loaded_after(statement: str) -> list[str]:
    probe = (
        f"import json, sys; {statement}; "
        f"print(json.dumps([m for m in {UNUSED_BY_WRITERS!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import fleet_sim.link.fold_writer",
        "import backend.store",
        "from backend.store import Store",
        "from fleet_sim.link.in_process import InProcessLink",
        "from fleet_sim.link import InProcessLink, ProcessFoldWriter",
    ],
)
def test_store_writers_import_no_model_web_or_validation_library(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_opening_a_store_with_a_policy_loads_no_pydantic_until_the_policy_is_read(
    tmp_path: Path,
) -> None:
    # a fold writer opens the run's store, which holds the scenario's policy by then
    from agent.policy import PolicyDocumentModel
    from backend.store import Store

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    doc = PolicyDocumentModel.model_validate(
        {"version": 1, "issued_at": now, "default": {"mode": "enforce", "model_version": 3}}
    )
    store = Store(tmp_path / "s.db")
    store.append_policy(doc, actor="t", action="t", now=now, publish=lambda raw, at: None)
    store.close()
    opened = f"from backend.store import Store; store = Store({str(tmp_path / 's.db')!r})"
    assert _loaded_after(opened) == []
    read = f"{opened}; assert store.current_policy().document.default.model_version == 3"
    assert _loaded_after(read) == ["pydantic"]


def test_the_heavy_names_still_load_on_first_use() -> None:
    # the probe itself can see them: a lazy re-export resolves, it does not vanish
    statement = "from backend import create_app; from agent import load_bundle, telemetry"
    assert _loaded_after(f"{statement}; telemetry.enroll") == [
        "httpx",
        "onnxruntime",
        "pydantic",
        "starlette",
    ]


def _stub_names(package: str) -> dict[str, str]:
    """Each name the package's `__init__.pyi` re-exports, and the module that defines it."""
    path = ROOT.joinpath(*package.split("."), "__init__.pyi")
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Expr):  # the docstring
            continue
        assert isinstance(node, ast.ImportFrom) and node.level == 1 and node.module, node
        for a in node.names:
            assert a.asname == a.name, f"{package}: {a.name} as {a.asname} (explicit re-export)"
            out[a.name] = f"{package}.{node.module}"
    return out


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_reexports_are_the_stubs_names_and_resolve_to_their_modules(package: str) -> None:
    names = _stub_names(package)
    pkg = importlib.import_module(package)
    assert names, f"{package} re-exports nothing"
    assert sorted(pkg.__all__) == sorted(names)
    for name, module in names.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(module), name), name


def test_analysis_export_stays_the_function_after_its_module_is_imported() -> None:
    # `export` names both a submodule and its function: importing the submodule must not
    # rebind the package's name to the module (why that one re-export stays eager)
    probe = (
        "import backend.analysis.export; from backend.analysis import export; "
        "print(type(export).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "function"
