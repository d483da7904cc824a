"""Scope of transition allowlist candidates: org-local evidence never reaches another org.

The attack: enrol 5 endpoints in org A, report a malicious sample for 3 days, and hope the
`established` (in-house) rule allowlists it for org B too. Checked in the pure core
(`admit_flips`) and through the store, the admin call every consumer uses, the signed policy
document and the agent's own `decide`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.bundle import Thresholds
from agent.decision import Mode, Reason, Verdict, decide
from agent.engine import context_for
from agent.policy import PolicyDocumentModel, resolve_policy
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend import admin
from backend.analysis.labels import LabelBook, LabelChange, LabelSource, LabelValue
from backend.analysis.transition_allowlist import FlipEvidence, admit_flips, evidence_allowlist
from backend.ingest import aggregate
from backend.store import Store

NOW = dt.datetime(2026, 11, 9, tzinfo=dt.UTC)
D = dt.timedelta(days=1)
SHA = "cd" * 32
THRESHOLDS = Thresholds(block=0.9, detect=0.5)


def test_in_house_flip_of_org_a_is_a_candidate_for_org_a_only() -> None:
    first = NOW - 4 * D
    ev = FlipEvidence(
        SHA, first, 2, 6, {"A": 5, "B": 1}, {"A": 3, "B": 1}, {"A": first, "B": first}
    )
    got = admit_flips([SHA], {SHA: ev}, LabelBook([]), now=NOW)
    assert [(c.org_id, c.scope) for c in got.candidates] == [("A", "org")]
    assert got.for_org("A") == {SHA}
    assert got.for_org("B") == frozenset() and got.fleet_sha256s == frozenset()


def test_fleet_level_evidence_is_a_fleet_candidate() -> None:
    first = NOW - 5 * D
    prevalent = FlipEvidence(SHA, first, 3, 10, {"A": 4}, {"A": 1}, {"A": first})
    assert [
        c.scope for c in admit_flips([SHA], {SHA: prevalent}, LabelBook([]), now=NOW).candidates
    ] == ["fleet"]
    book = LabelBook([LabelChange(SHA, LabelValue.BENIGN, LabelSource.ANALYST, NOW - D)])
    got = admit_flips([SHA], {}, book, now=NOW)
    assert got.fleet_sha256s == {SHA} and got.for_org("anyone") == {SHA}


def _report(store: Store, org: str, endpoint: str, at: dt.datetime) -> None:
    ev = TelemetryEvent(
        org, endpoint, SHA, 1, 0.1, Verdict.ALLOW, Reason.SCORE_BELOW,
        TelemetryEvent.ms(at), None, None,
    )  # fmt: skip
    rows, feats = aggregate([ev])
    batch = TelemetryBatch(f"k-{org}-{endpoint}-{ev.observed_at_ms}", org, endpoint, 0, (ev,))
    store.ingest(batch, rows, feats, at)


def test_org_a_only_in_house_flip_never_changes_org_b_allowlist_or_verdicts(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "b.db")
    a = store.create_org("attacker", NOW - 10 * D).org_id
    b = store.create_org("victim", NOW - 10 * D).org_id
    for day in range(3):  # 5 endpoints of A on 3 days, first seen 5 days before the switch
        for e in range(5):
            _report(store, a, f"a-e{e}", NOW - (5 - day) * D)
    _report(store, b, "b-e0", NOW - 2 * D)  # B sees the sample too
    published: list[PolicyDocumentModel] = []

    def publish(raw: bytes, now: dt.datetime) -> None:
        published.append(PolicyDocumentModel.model_validate_json(raw))

    admin.set_mode(store, publish, Mode.ENFORCE, org_id=None, now=NOW - D, actor="t")
    decision = evidence_allowlist(store, [SHA], now=NOW)
    assert [c.org_id for c in decision.candidates] == [a]  # the rule did admit it, for A
    admin.add_allowlist_candidates(store, publish, decision.candidates, now=NOW)
    signed = published[-1]  # the document the backend signed and published
    assert SHA not in {e.sha256 for e in signed.default.allowlist}
    assert SHA not in {e.sha256 for e in resolve_policy(signed, b).allowlist}
    verdict_of = {
        org: decide(SHA, 0.95, context_for(resolve_policy(signed, org), THRESHOLDS, NOW)).verdict
        for org in (a, b)
    }
    assert verdict_of == {a: Verdict.ALLOWLISTED, b: Verdict.BLOCK}
