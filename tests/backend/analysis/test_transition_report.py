"""The transition report's core: one seam both engines call by public names, one text per history.

`backend.analysis.transition` (local) and `backend.analysis.spark` (Spark) share every rule
through `backend.analysis.transition_report`; neither reaches into another module's private
names (their parity itself is `test_spark.py`'s). The store draws org pseudonyms at random, so
the report lists orgs tied on a value in the store's creation order, and sums fleet figures
exactly: the same history gives the same report text whatever pseudonyms it got.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
from pathlib import Path

import backend.analysis
from backend.analysis.transition import predict_transition
from tests.backend.history import END, named_orgs

ANALYSIS = Path(backend.analysis.__file__).parent
NOW = END + dt.timedelta(days=2)


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


def test_report_json_is_identical_when_the_pseudonyms_come_in_reverse_order(twins):
    up, down = twins[1], twins[-1]
    assert up.orgs == sorted(up.orgs) and down.orgs == sorted(down.orgs, reverse=True)
    texts = [
        named_orgs(json.dumps(predict_transition(h.store, h.bundles[1], h.bundles[2], now=NOW)
                          .to_dict()), h)
        for h in (up, down)
    ]  # fmt: skip
    data = json.loads(texts[0])
    surge = [o["predicted_new_fp_alerts_per_day"] for o in data["per_org"]]
    assert len(surge) > len(set(surge))  # orgs tied on their surge: the order under test
    assert len(data["shadow_per_org"]) > 1
    assert len({c["org_id"] for c in data["allowlist_candidates"]}) > 1
    assert texts[0] == texts[1]
