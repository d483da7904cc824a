"""The transition prediction's columnar read gives the reference (row by row) report exactly."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agent.decision import Reason, Verdict
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend.analysis.transition import predict_transition
from backend.analysis.transition_columns import read_pair_columns
from backend.ingest import aggregate
from tests.backend.history import END, ROLLOUT, START, History, copy_store, history

__all__ = ["history"]

_VERDICTS = [Verdict.ALLOW, Verdict.BLOCK, Verdict.DETECT, Verdict.ALLOWLISTED]


def _randomise(h: History, db: Path, seed: int) -> None:
    """Random extra telemetry (active and shadow), planted per-org vectors, missing vectors."""
    store = copy_store(h, db)
    rng = np.random.default_rng(seed)
    shas = sorted(h.vectors)
    for b in range(40):
        k = int(rng.integers(len(h.orgs)))
        org, ep = h.orgs[k], f"rnd-{k}-{int(rng.integers(6))}"
        events = []
        for _ in range(int(rng.integers(1, 12))):
            sha = shas[int(rng.integers(len(shas)))]
            t = START + dt.timedelta(
                seconds=int(rng.integers(0, int((END - START).total_seconds())))
            )
            vec = h.vectors[sha].astype("<f4")
            shadow = rng.random() < 0.3
            events.append(
                TelemetryEvent(
                    org, ep, sha, int(rng.integers(1, 3)), float(rng.random()),
                    _VERDICTS[int(rng.integers(len(_VERDICTS)))], Reason.SCORE_BELOW,
                    TelemetryEvent.ms(t), "static-v1", vec.tobytes(),
                    2 if shadow else None, float(rng.random()) if shadow else None,
                    _VERDICTS[int(rng.integers(3))] if shadow else None,
                )
            )  # fmt: skip
        events.sort(key=lambda e: e.observed_at_ms)
        rows, feats = aggregate(events)
        store.ingest(TelemetryBatch(f"rnd-{seed}-{b}", org, ep, 0, tuple(events)), rows, feats, t)
    store.close()
    with sqlite3.connect(db) as conn:
        keys = conn.execute(
            "SELECT o.org, o.sha256, v.vector FROM org_vectors o "
            "JOIN vectors v ON v.digest = o.digest ORDER BY o.org, o.sha256"
        ).fetchall()
        pick = rng.choice(len(keys), size=12, replace=False).tolist()
        for i in pick[:6]:  # an org's own, different vector for a sample others report too
            org, sha, vec = keys[i]
            other = np.frombuffer(vec, "<f4") + rng.normal(0, 2.0, len(vec) // 4).astype("<f4")
            raw = other.astype("<f4").tobytes()
            digest = hashlib.sha256(raw).digest()
            conn.execute("INSERT OR IGNORE INTO vectors VALUES (?, ?)", (digest, raw))
            conn.execute(
                "UPDATE org_vectors SET digest = ? WHERE org = ? AND sha256 = ?",
                (digest, org, sha),
            )
        for i in pick[6:]:  # pairs whose vector is missing (they cannot be scored)
            conn.execute("DELETE FROM org_vectors WHERE org = ? AND sha256 = ?", keys[i][:2])


@pytest.mark.parametrize("seed", [11, 12])
def test_columnar_read_gives_the_reference_report_on_a_random_history(
    history: History, tmp_path: Path, seed: int
):
    db = tmp_path / "rnd.db"
    _randomise(history, db, seed)
    store = type(history.store)(db, synchronous="NORMAL")
    rng = np.random.default_rng(seed)
    try:
        nows = [ROLLOUT, START + dt.timedelta(hours=float(rng.uniform(30, 24 * 11)))]
        v1, v2 = history.bundles[1], history.bundles[2]
        for now in nows:
            assert read_pair_columns(store, now, None) is not None  # the bulk read was taken
            fast = predict_transition(store, v1, v2, now=now, congruent_bundle=v2)
            ref = predict_transition(store, v1, v2, now=now, congruent_bundle=v2, columnar=False)
            assert fast.to_dict() == ref.to_dict()
            assert ref.samples_without_vectors > 0 or now < ROLLOUT
        org = max(ref.per_org.values(), key=lambda o: (o.negative_flips, o.org_id)).org_id
        fast = predict_transition(store, v1, v2, now=END, org=org)
        ref = predict_transition(store, v1, v2, now=END, org=org, columnar=False)
        assert fast.to_dict() == ref.to_dict() and list(fast.per_org) == [org]
        assert ref.shadow_per_org and ref.per_org[org].negative_flips > 0
    finally:
        store.close()


def test_reference_path_for_a_store_the_bulk_read_cannot_open(history: History):
    from backend.store import Store

    mem = Store(":memory:")
    try:
        assert read_pair_columns(mem, ROLLOUT, None) is None
    finally:
        mem.close()


def test_cases_give_each_pair_its_own_orgs_vector_under_every_schema(
    history: History, tmp_path: Path
):
    """`PairColumns.cases` over two schemas: per pair, the vector its own org referenced.

    A second schema's references are planted for some pairs (a vector of their own, another
    pair's vector, or a digest whose vector row is absent); every pair's case must name its own
    sample and, under each schema, exactly its own org's vector (none when it has no reference
    or the vector row is absent), and pairs of one case must agree on all of it.
    """
    db = tmp_path / "rnd.db"
    _randomise(history, db, 13)
    rng = np.random.default_rng(13)
    with sqlite3.connect(db) as conn:
        refs = conn.execute(
            "SELECT o.org, o.sha256, o.schema, v.vector FROM org_vectors o "
            "JOIN vectors v ON v.digest = o.digest ORDER BY o.org, o.sha256"
        ).fetchall()
        schema = refs[0][2]
        length = len(refs[0][3]) // 4
        for org, sha, _, vec in refs:
            roll = rng.random()
            if roll < 0.3:  # no reference under the second schema
                continue
            if roll < 0.8:  # a vector of its own
                raw = (np.frombuffer(vec, "<f4") + np.float32(rng.integers(1, 4))).tobytes()
            elif roll < 0.9:  # another pair's vector
                raw = refs[int(rng.integers(len(refs)))][3]
            else:  # a digest whose vector row is absent
                raw = b"absent" + sha
            digest = hashlib.sha256(raw).digest()
            if not raw.startswith(b"absent"):
                conn.execute("INSERT OR IGNORE INTO vectors VALUES (?, ?)", (digest, raw))
            conn.execute("INSERT INTO org_vectors VALUES (?, ?, 'other-v9', ?)", (org, sha, digest))
        want = {
            (org, sha, sch): bytes(vec)
            for org, sha, sch, vec in conn.execute(
                "SELECT o.org, o.sha256, o.schema, v.vector FROM org_vectors o "
                "JOIN vectors v ON v.digest = o.digest"
            )
        }
        key_of = dict(conn.execute("SELECT org_id, id FROM orgs").fetchall())
    store = type(history.store)(db, synchronous="NORMAL")
    try:
        cols = read_pair_columns(store, END, None)
        assert cols is not None
        cases = cols.cases([(schema, length), ("other-v9", length)])
    finally:
        store.close()
    pairs = cols.pairs
    seen: dict[int, tuple[object, ...]] = {}
    kinds = set()
    for i, (org, sha) in enumerate(zip(pairs.org_ids, pairs.sha256s, strict=True)):
        c = int(cases.case[i])
        assert pairs.samples is not None and pairs.samples[int(cases.sample[c])] == sha
        got = []
        for k, sch in enumerate((schema, "other-v9")):
            row = int(cases.rows[k][c])
            vec = cases.matrices[k][row].astype("<f4").tobytes() if row >= 0 else None
            expected = want.get((key_of[org], bytes.fromhex(sha), sch))
            assert vec == expected, (org, sha, sch)
            kinds.add((k, vec is None))
            got.append(vec)
        assert seen.setdefault(c, (sha, *got)) == (sha, *got)  # one case, one meaning
    assert kinds == {(0, True), (0, False), (1, True), (1, False)}
    assert len(seen) == len(cases.sample) < len(pairs.sha256s)  # every case held, fewer than pairs


def test_a_store_without_aggregates_gives_an_empty_report_on_both_reads(
    history: History, tmp_path: Path
) -> None:
    """No pair scored (an empty store, an org that is not there): no sweep, no orgs, no error.

    (np.quantile refuses an empty array: before `_sweep_grid` checked, this raised IndexError.)
    """
    from backend.store import Store

    store = Store(tmp_path / "empty.db")
    v1, v2 = history.bundles[1], history.bundles[2]
    try:
        for org in (None, "no-such-org"):
            fast = predict_transition(store, v1, v2, now=END, org=org)
            ref = predict_transition(store, v1, v2, now=END, org=org, columnar=False)
            assert fast.to_dict() == ref.to_dict()
            assert fast.per_org == {} and fast.sweep == () and fast.samples_scored == 0
            assert fast.recommended_alert_threshold is None
        empty = predict_transition(history.store, v1, v2, now=END, org="no-such-org")
        assert empty.per_org == {} and empty.fleet_predicted_new_fp_alerts_per_day == 0
    finally:
        store.close()
