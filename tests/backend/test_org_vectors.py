"""Feature vectors are kept per (org, sample, schema): one org cannot plant another's vector.

Before, the shared `features` table kept the first vector anyone reported for a sample, so an
endpoint of org A that reported a new sample first chose the vector org B's transition report
and transition allowlist used for it: a cross-tenant path to get a file allowlisted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import sqlite3
from pathlib import Path

import numpy as np

from agent.decision import Reason, Verdict
from agent.features import SCHEMA
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend.analysis._base import load_model, score_vectors
from backend.analysis.transition import predict_transition
from backend.ingest import aggregate
from backend.store import Store
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
    # a vector that flips (v1 quiet, v2 alerts) at the bundles' own thresholds (some entries
    # flip only under org 2's lower detect threshold), and one both versions leave alone
    old, new = load_model(history.bundles[1]), load_model(history.bundles[2])
    low, new_low = (
        min(t for t in (m.manifest.thresholds.detect, m.manifest.thresholds.block) if t)
        for m in (old, new)
    )
    flips = np.stack([history.vectors[e.sha256] for e in full.transition_allowlist])
    flips = flips[(score_vectors(old, flips) < low) & (score_vectors(new, flips) >= new_low)]
    assert flips.shape[0], "no sample flips at the bundles' thresholds"
    flip_vec = flips[0]
    shas = sorted(history.vectors)
    mat = np.stack([history.vectors[s] for s in shas]).astype(np.float32)
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


def test_per_org_features_table_moves_into_shared_vectors_keeping_each_orgs_vector(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    now = ROLLOUT
    store = Store(db)
    a, b = (store.create_org(n, now).org_id for n in ("acme", "globex"))
    keys = {a: store._org_key(a), b: store._org_key(b)}
    store.close()
    vec, other = np.arange(4, dtype="<f4").tobytes(), np.ones(4, dtype="<f4").tobytes()
    s1, s2 = bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 32)
    with sqlite3.connect(db) as conn:  # the layout before vectors were stored once
        conn.execute("DROP TABLE org_vectors")
        conn.execute("DROP TABLE vectors")
        conn.execute(
            "CREATE TABLE features (org INTEGER NOT NULL, sha256 BLOB NOT NULL, "
            "schema TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (org, sha256, schema)) "
            "WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO features VALUES (?, ?, 'static-v1', ?)",
            [(keys[a], s1, vec), (keys[b], s1, other), (keys[a], s2, vec), (keys[b], s2, vec)],
        )
    store = Store(db)
    try:
        got = store.feature_vectors([(a, s1.hex()), (b, s1.hex()), (a, s2.hex()), (b, s2.hex())],
                                    "static-v1")  # fmt: skip
        assert got == {(a, s1.hex()): vec, (b, s1.hex()): other, (a, s2.hex()): vec,
                       (b, s2.hex()): vec}  # fmt: skip
        stats = store.stats()
        assert (stats.feature_rows, stats.vector_rows) == (4, 2)
    finally:
        store.close()
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "features" not in names and {"vectors", "org_vectors"} <= names
