"""The simulator applies transition allowlist candidates by scope (the demo's path).

`fleet_sim.control` hands the predictor's candidates to `InProcessLink.add_allowlist_candidates`
(`backend.admin.add_allowlist_candidates`); the policy endpoints obey is `link.effective`. An
in-house flip of org A (5 endpoints on 3 days, org A only) must never reach org B's policy.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from agent.bundle import Thresholds
from agent.decision import Reason, Verdict, decide
from agent.engine import context_for
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend.analysis.transition_allowlist import evidence_allowlist
from backend.ingest import aggregate
from backend.store import Store
from fleet_sim.link.in_process import InProcessLink

NOW = dt.datetime(2026, 11, 9, tzinfo=dt.UTC)
D = dt.timedelta(days=1)
SHA = "ef" * 32


def _report(store: Store, org: str, endpoint: str, at: dt.datetime) -> None:
    ev = TelemetryEvent(
        org, endpoint, SHA, 1, 0.1, Verdict.ALLOW, Reason.SCORE_BELOW,
        TelemetryEvent.ms(at), None, None,
    )  # fmt: skip
    rows, feats = aggregate([ev])
    batch = TelemetryBatch(f"k-{org}-{endpoint}-{ev.observed_at_ms}", org, endpoint, 0, (ev,))
    store.ingest(batch, rows, feats, at)


def test_simulated_org_a_in_house_flip_never_shields_the_sample_in_org_b(tmp_path: Path) -> None:
    store = Store(tmp_path / "sim.db")
    link = InProcessLink.open(
        store, ["attacker", "victim"], np.zeros((1, 4), np.float32), [SHA], NOW - 10 * D
    )
    v1 = link.init_policy(1, NOW - 10 * D)
    a, b = link.org_ids
    for day in range(3):
        for e in range(5):
            _report(store, a, f"a-e{e}", NOW - (5 - day) * D)
    _report(store, b, "b-e0", NOW - 2 * D)
    cands = evidence_allowlist(store, [SHA], now=NOW).candidates
    assert [c.org_id for c in cands] == [a]
    # a scenario action aimed at the victim alone applies nothing of the attacker's evidence
    assert link.add_allowlist_candidates(cands, "victim", NOW) == v1
    v = link.add_allowlist_candidates(cands, None, NOW)  # fleet action: each by its scope
    assert v == v1 + 1 and link.published[-1][0] == v
    th = Thresholds(block=0.9, detect=0.5)
    allow = {o: {e.sha256 for e in link.effective(v, o).allowlist} for o in (0, 1)}
    assert allow == {0: {SHA}, 1: set()}
    verdicts = [
        decide(SHA, 0.95, context_for(link.effective(v, o), th, NOW)).verdict for o in (0, 1)
    ]
    assert verdicts == [Verdict.ALLOWLISTED, Verdict.BLOCK]
