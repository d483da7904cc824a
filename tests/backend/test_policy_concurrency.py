"""Policy changes are serialised: a compare-and-set on the version, a 409 on conflict, no 500."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from agent.decision import Mode
from backend import admin
from backend.errors import PolicyConflictError
from backend.store import Store
from tests.backend.conftest import NOW, LiveServer


def test_thirty_parallel_policy_changes_each_apply_or_get_409_with_current_version(
    live_server: LiveServer,
) -> None:
    n = 30
    start = threading.Barrier(n)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def change(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            start.wait()
            r = client.put(
                f"{live_server.url}/v1/admin/mode",
                json={"mode": ("detect_only", "enforce", "off")[i % 3]},
                headers=live_server.admin(),
            )
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = sorted(r.status_code for r in answers)
    assert len(answers) == n
    assert set(statuses) <= {200, 409}, statuses
    applied = [r.json()["version"] for r in answers if r.status_code == 200]
    for r in answers:
        if r.status_code == 409:
            body = r.json()
            assert body["error"] == "PolicyConflictError"
            assert 1 <= body["current_version"] <= len(applied)
    # every applied change got its own version, and the history advanced by exactly that many
    assert sorted(applied) == list(range(1, len(applied) + 1))
    current = live_server.store.current_policy()
    assert current is not None and current.version == len(applied)
    assert len(live_server.store.policy_history()) == len(applied)


def test_stale_policy_change_is_refused_and_records_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    published: list[int] = []
    admin.set_mode(store, lambda raw, now: published.append(1), Mode.OFF, org_id=None, now=NOW)
    stale = store.current_policy()
    assert stale is not None
    admin.set_mode(store, lambda raw, now: published.append(1), Mode.ENFORCE, org_id=None, now=NOW)
    doc = stale.document.model_copy(update={"version": stale.version + 1})
    with pytest.raises(PolicyConflictError) as err:
        store.append_policy(doc, actor="t", action="stale", now=NOW, publish=lambda r, n: None)
    assert err.value.current_version == 2
    assert [r.version for r in store.policy_history()] == [1, 2]
    store.close()


@pytest.mark.parametrize("module", ["sqlite", "postgres"])
def test_each_store_writes_policy_versions_only_in_record_next_policy(module: str) -> None:
    """Operator changes and rollout decisions record a version through one compare-and-set.

    `append_policy` and `log_rollout_decision` each wrote the version check and the INSERT out
    (a fix to one could miss the other); both now call `_record_next_policy`.
    """
    import ast
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(f"backend.store.{module}"))
    writers = {
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
        and any(
            isinstance(c, ast.Constant)
            and isinstance(c.value, str)
            and "INSERT INTO policy_history" in c.value
            for c in ast.walk(node)
        )
    }
    assert writers == {"_record_next_policy"}
    callers = {
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
        and any(
            isinstance(c, ast.Attribute) and c.attr == "_record_next_policy" for c in ast.walk(node)
        )
    }
    assert {"append_policy"} <= callers and callers & {
        "log_rollout_decision",
        "_log_rollout_decision",
    }
