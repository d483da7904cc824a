"""The transition report's core is one seam both engines call by public names.

`backend.analysis.transition` (local) and `backend.analysis.spark` (Spark) share every rule
through `backend.analysis.transition_report`; neither reaches into another module's private
names (their parity itself is `test_spark.py`'s).
"""

from __future__ import annotations

import ast
from pathlib import Path

import backend.analysis

ANALYSIS = Path(backend.analysis.__file__).parent


def _private_imports(path: Path) -> list[str]:
    """`module:name` for every private name `path` imports from another fleetward module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backend."):
            found += [f"{node.module}:{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_analysis_modules_import_no_private_names_of_each_other():
    used = {p.name: _private_imports(p) for p in sorted(ANALYSIS.glob("*.py"))}
    assert {name: names for name, names in used.items() if names} == {}
    assert len(used) > 5  # the folder was read
