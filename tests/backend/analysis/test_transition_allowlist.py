"""The benign-evidence rules of the transition allowlist, row by row, and its as-of reading."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent.decision import Reason, Verdict
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend.analysis.labels import LabelBook, LabelChange, LabelSource, LabelValue
from backend.analysis.transition_allowlist import (
    AllowlistConfig,
    FlipEvidence,
    admit_flips,
    evidence_allowlist,
    gather_flip_evidence,
)
from backend.ingest import aggregate
from backend.store import Store

NOW = dt.datetime(2026, 11, 9, tzinfo=dt.UTC)
D = dt.timedelta(days=1)
SHA = "ab" * 32


def _ev(age_d: float, orgs: int, endpoints: int, org_eps: int = 0, days: int = 0) -> FlipEvidence:
    first = NOW - age_d * D
    return FlipEvidence(SHA, first, orgs, endpoints, {"o": org_eps}, {"o": days}, {"o": first})


@pytest.mark.parametrize(
    ("label", "evidence", "admitted", "why"),
    [
        (LabelValue.MALICIOUS, _ev(30, 9, 900, 50, 9), False, "labelled malicious"),
        (LabelValue.BENIGN, None, True, "label"),
        (None, _ev(5, 3, 10), True, "prevalent"),  # 3 orgs, 10 endpoints, 5 days old
        (None, _ev(5, 2, 500), False, "no benign evidence"),  # one org short
        (None, _ev(2.9, 30, 500), False, "no benign evidence"),  # too young: a campaign
        (None, _ev(4, 1, 6, org_eps=5, days=3), True, "established"),  # in-house software
        (None, _ev(4, 1, 6, org_eps=5, days=2), False, "no benign evidence"),  # too few days
        (None, _ev(4, 1, 6, org_eps=4, days=3), False, "no benign evidence"),  # too few eps
        (None, None, False, "no aggregates"),
    ],
)
def test_admission_rule_by_rule(
    label: LabelValue | None, evidence: FlipEvidence | None, admitted: bool, why: str
) -> None:
    book = LabelBook(
        [LabelChange(SHA, label, LabelSource.ANALYST, NOW - D)] if label is not None else []
    )
    got = admit_flips([SHA], {SHA: evidence} if evidence else {}, book, now=NOW)
    assert (SHA in got.sha256s) is admitted
    text = got.entries[0].reason if admitted else got.refused[0][1]
    assert why in text


def test_entries_expire_after_the_configured_ttl() -> None:
    book = LabelBook([LabelChange(SHA, LabelValue.BENIGN, LabelSource.FEED, NOW - D)])
    cfg = AllowlistConfig(ttl=dt.timedelta(days=7))
    (entry,) = admit_flips([SHA], {}, book, now=NOW, config=cfg).entries
    assert entry.is_active(NOW) and not entry.is_active(NOW + 7 * D)


def test_a_label_known_only_after_now_is_not_evidence() -> None:
    book = LabelBook([LabelChange(SHA, LabelValue.BENIGN, LabelSource.ANALYST, NOW + D)])
    assert not admit_flips([SHA], {}, book, now=NOW).entries


def _ingest(store: Store, org: str, endpoint: str, at: dt.datetime) -> None:
    ev = TelemetryEvent(
        org,
        endpoint,
        SHA,
        1,
        0.1,
        Verdict.ALLOW,
        Reason.SCORE_BELOW,
        TelemetryEvent.ms(at),
        None,
        None,
    )
    rows, feats = aggregate([ev])
    batch = TelemetryBatch(f"k-{org}-{endpoint}-{ev.observed_at_ms}", org, endpoint, 0, (ev,))
    store.ingest(batch, rows, feats, at)


def test_evidence_is_read_from_the_aggregates_as_of_now(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    orgs = [store.create_org(f"o{i}", NOW - 10 * D) for i in range(3)]
    for org in orgs:
        for day in range(4):
            at = NOW - (6 - day) * D
            for e in range(4):
                _ingest(store, org.org_id, f"{org.org_id}-e{e}", at)
    _ingest(store, orgs[0].org_id, "late", NOW + D)  # a row from after `now` changes nothing
    ev = gather_flip_evidence(store, [SHA], now=NOW)[SHA]
    assert (ev.orgs, ev.endpoints) == (3, 12)
    assert ev.first_seen == NOW - 6 * D
    assert ev.org_days[orgs[0].org_id] == 4
    got = evidence_allowlist(store, [SHA], now=NOW)
    assert got.sha256s == {SHA} and "prevalent" in got.entries[0].reason
