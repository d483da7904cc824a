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
from collections.abc import Iterator
from pathlib import Path

import pytest

import backend.analysis
import backend.store.sqlite as sqlite_store
from backend.analysis.transition import predict_transition
from tests.backend.history import END, History, build_history

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


class _Counter:
    """Pseudonyms and tokens from a counter, up (`step` 1) or down (`step` -1)."""

    def __init__(self, step: int) -> None:
        self.n, self.step = (0 if step > 0 else 1 << 40), step

    def token_hex(self, nbytes: int = 16) -> str:
        self.n += self.step
        return f"{self.n:0{2 * nbytes}x}"

    def token_urlsafe(self, nbytes: int = 16) -> str:
        return self.token_hex(nbytes)


@pytest.fixture(scope="module")
def twins(small_corpus, bundles, tmp_path_factory) -> Iterator[dict[int, History]]:
    """The shared history built twice: org pseudonyms drawn up (in creation order) and down."""
    got = {}
    for step in (1, -1):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sqlite_store, "secrets", _Counter(step))
            got[step] = build_history(tmp_path_factory.mktemp(f"ids{step}"), small_corpus, bundles)
    yield got
    for h in got.values():
        h.store.close()


def _named(text: str, h: History) -> str:
    """`text` with each org's pseudonym replaced by its name in the history."""
    for k, org in enumerate(h.orgs):
        text = text.replace(org, f"org{k}")
    return text


def test_report_json_is_identical_when_the_pseudonyms_come_in_reverse_order(twins):
    up, down = twins[1], twins[-1]
    assert up.orgs == sorted(up.orgs) and down.orgs == sorted(down.orgs, reverse=True)
    texts = [
        _named(json.dumps(predict_transition(h.store, h.bundles[1], h.bundles[2], now=NOW)
                          .to_dict()), h)
        for h in (up, down)
    ]  # fmt: skip
    data = json.loads(texts[0])
    surge = [o["predicted_new_fp_alerts_per_day"] for o in data["per_org"]]
    assert len(surge) > len(set(surge))  # orgs tied on their surge: the order under test
    assert len(data["shadow_per_org"]) > 1
    assert len({c["org_id"] for c in data["allowlist_candidates"]}) > 1
    assert texts[0] == texts[1]
