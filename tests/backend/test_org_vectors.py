"""Feature vectors are kept per (org, sample, schema): one org cannot plant another's vector.

Before, the shared `features` table kept the first vector anyone reported for a sample, so an
endpoint of org A that reported a new sample first chose the vector org B's transition report
and transition allowlist used for it: a cross-tenant path to get a file allowlisted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from pathlib import Path

import numpy as np

from agent.decision import Reason, Verdict
from agent.features import SCHEMA
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend._analysis import load_model, score_vectors
from backend.ingest import aggregate
from backend.store import Store
from backend.transition import predict_transition
from tests.backend.history import ROLLOUT, History, copy_store, history

__all__ = ["history"]


def _report(store: Store, h: History, org: str) -> dict[str, object]:
    got = predict_transition(store, h.bundles[1], h.bundles[2], now=ROLLOUT, org=org)
    return dataclasses.asdict(got.per_org[org])


def _send(store: Store, org: str, sha: str, vector: np.ndarray, at: dt.datetime) -> None:
    ep = store.enroll(org, at).endpoint_id
    ev = TelemetryEvent(
        org, ep, sha, 1, 0.1, Verdict.ALLOW, Reason.SCORE_BELOW, TelemetryEvent.ms(at),
        SCHEMA.name, vector.astype("<f4").tobytes(),
    )  # fmt: skip
    store.ingest(TelemetryBatch(secrets.token_hex(8), org, ep, 0, (ev,)), *aggregate([ev]), at)


def test_org_a_vector_cannot_change_org_b_transition_report_or_allowlist(
    history: History, tmp_path: Path
) -> None:
    victim = history.orgs[0]
    store = copy_store(history, tmp_path / "copy.db")
    before = _report(store, history, victim)
    full = predict_transition(store, history.bundles[1], history.bundles[2], now=ROLLOUT)
    # a vector that flips (v1 quiet, v2 alerts), and one both versions leave alone
    flip_vec = history.vectors[full.transition_allowlist[0].sha256]
    old, new = load_model(history.bundles[1]), load_model(history.bundles[2])
    shas = sorted(history.vectors)
    mat = np.stack([history.vectors[s] for s in shas]).astype(np.float32)
    low = min(
        (t for t in (old.manifest.thresholds.detect, old.manifest.thresholds.block) if t),
        default=1.0,
    )
    quiet = np.flatnonzero(
        (score_vectors(old, mat) < low * 0.5) & (score_vectors(new, mat) < low * 0.5)
    )
    assert quiet.size, "no sample both versions leave alone"
    quiet_vec = mat[int(quiet[0])]

    attacker = store.create_org("attacker", ROLLOUT - dt.timedelta(days=3)).org_id
    planted = secrets.token_hex(32)  # a file the victim is about to see
    at = ROLLOUT - dt.timedelta(days=2)
    _send(store, attacker, planted, flip_vec, at)  # the attacker reports it first
    _send(store, victim, planted, quiet_vec, at + dt.timedelta(hours=1))

    assert store.feature_vector(victim, planted, SCHEMA.name) == quiet_vec.astype("<f4").tobytes()
    after = _report(store, history, victim)
    assert after == before
    assert planted not in after["allowlist_sha256s"]  # type: ignore[operator]
    # the plant did take effect, in the attacker's own org only
    mine = predict_transition(store, history.bundles[1], history.bundles[2], now=ROLLOUT)
    assert planted in mine.per_org[attacker].allowlist_sha256s
    assert planted not in mine.per_org[victim].allowlist_sha256s
    store.close()
