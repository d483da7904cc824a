"""Operator actions as policy changes: one action, one version, all of it or nothing.

Over both dialects (the parity fixture): a real SQLite file and, when configured, PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

import pytest

from agent.decision import Mode
from agent.policy import ListEntry, PolicyDocumentModel
from backend import admin
from backend.analysis.transition_allowlist import AllowlistCandidate
from backend.errors import NotFoundError
from backend.store import AggregateStore
from tests.backend.conftest import NOW
from tests.backend.store.test_store_postgres import store

__all__ = ["store"]


def _candidate(i: int, org_id: str | None) -> AllowlistCandidate:
    return AllowlistCandidate(ListEntry(f"{i:064x}", "benign flip", "t", NOW), org_id)


def _recorder() -> tuple[list[PolicyDocumentModel], admin.Publish]:
    published: list[PolicyDocumentModel] = []

    def publish(raw: bytes, now: dt.datetime) -> None:
        published.append(PolicyDocumentModel.model_validate_json(raw))

    return published, publish


def test_allowlist_candidates_of_every_scope_are_one_policy_version(store: AggregateStore):
    a = store.create_org("acme", NOW).org_id
    b = store.create_org("beta", NOW).org_id
    published, publish = _recorder()
    admin.set_mode(store, publish, Mode.ENFORCE, org_id=None, now=NOW)
    cands = [_candidate(1, None), _candidate(2, a), _candidate(3, b), _candidate(4, a)]
    record = admin.add_allowlist_candidates(store, publish, cands, now=NOW)
    assert record is not None and record.version == 2
    assert [p.version for p in store.policy_history()] == [1, 2]
    assert [d.version for d in published] == [1, 2]  # one publication for the whole action
    doc = published[-1]
    assert {e.sha256 for e in doc.default.allowlist} == {f"{1:064x}"}
    assert {e.sha256 for e in doc.orgs[a].allowlist} == {f"{2:064x}", f"{4:064x}"}
    assert {e.sha256 for e in doc.orgs[b].allowlist} == {f"{3:064x}"}
    assert record.action == "transition allowlist add 4 (fleet, " + ", ".join(sorted([a, b])) + ")"
    assert admin.add_allowlist_candidates(store, publish, [], now=NOW) is None
    assert len(store.policy_history()) == 2


def test_allowlist_candidates_naming_an_unknown_org_apply_nothing(store: AggregateStore):
    a = store.create_org("acme", NOW).org_id
    published, publish = _recorder()
    admin.set_mode(store, publish, Mode.ENFORCE, org_id=None, now=NOW)
    # the fleet and org A scopes sort first, the unknown org last: a scope-by-scope apply
    # would have recorded the first two before failing on the third
    cands = [_candidate(1, None), _candidate(2, a), _candidate(3, "org_" + "0" * 16)]
    with pytest.raises(NotFoundError, match="org_0000000000000000"):
        admin.add_allowlist_candidates(store, publish, cands, now=NOW + dt.timedelta(hours=1))
    assert [p.version for p in store.policy_history()] == [1]  # nothing recorded
    assert [d.version for d in published] == [1]  # nothing published
    current = store.current_policy()
    assert current is not None and len(current.document.default.allowlist) == 0
    assert a not in current.document.orgs
