"""The transition prediction on a store snapshot: what is written after it never reaches it."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from agent.decision import Reason, Verdict
from agent.policy import Mode
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend import admin
from backend.analysis.transition import predict_transition
from backend.analysis.transition_columns import read_pair_columns
from backend.ingest import aggregate
from tests.backend.history import END, START, History, copy_store, history

__all__ = ["history"]


def _nop(raw: bytes, now: dt.datetime) -> None:
    return None


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:  # a connection of its own: what really landed
        return int(conn.execute("SELECT sum(count) FROM aggregates").fetchone()[0])


def test_snapshot_prediction_excludes_rows_and_policies_written_after_it(
    history: History, tmp_path: Path
):
    db = tmp_path / "snap.db"
    store = copy_store(history, db)
    v1, v2 = history.bundles[1], history.bundles[2]
    try:
        report = predict_transition(store, v1, v2, now=END)
        before = report.to_dict()
        policy_before = store.policy_as_of(END)
        snap = store.snapshot()
        try:
            # after the snapshot: a burst of an org's negatively flipped sample, through the
            # store's own connection, and a policy change
            flipped = max(report.per_org.values(), key=lambda o: (o.negative_flips, o.org_id))
            org, sha = flipped.org_id, flipped.allowlist_sha256s[0]
            vec = history.vectors[sha].astype("<f4").tobytes()
            t = START + dt.timedelta(days=2, hours=3)
            events = tuple(
                TelemetryEvent(
                    org,
                    f"late-{k}",
                    sha,
                    1,
                    0.5,
                    Verdict.ALLOW,
                    Reason.SCORE_BELOW,
                    TelemetryEvent.ms(t + dt.timedelta(seconds=k)),
                    "static-v1",
                    vec,
                )  # fmt: skip
                for k in range(50)
            )
            rows, feats = aggregate(list(events))
            n0 = _count(db)
            store.ingest(TelemetryBatch("late", org, "late-0", 0, events), rows, feats, t)
            admin.set_mode(store, _nop, Mode.DETECT_ONLY, org_id=None, now=END)
            assert _count(db) == n0 + 50  # the rows landed, in the file
            live = predict_transition(store, v1, v2, now=END)
            assert live.per_org[org] != report.per_org[org]  # they change the prediction
            assert store.policy_as_of(END) != policy_before

            got = predict_transition(snap, v1, v2, now=END).to_dict()
            assert read_pair_columns(snap, END, None) is not None  # the bulk read, on the view
            assert got == before
            assert snap.policy_as_of(END) == policy_before
        finally:
            snap.close()
    finally:
        store.close()


def test_snapshot_is_read_only_and_stops_reading_when_interrupted(history: History, tmp_path: Path):
    store = copy_store(history, tmp_path / "ro.db")
    snap = store.snapshot()
    try:
        with pytest.raises(sqlite3.OperationalError):  # no write transaction in the view
            admin.set_mode(snap, _nop, Mode.OFF, org_id=None, now=END)
        assert sum(len(b) for b in snap.iter_aggregates()) > 0
        snap.interrupt()
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            sum(len(b) for b in snap.iter_aggregates())
        assert sum(len(b) for b in store.iter_aggregates()) > 0  # the store reads on
        with pytest.raises(ValueError, match="snapshot"):
            store.interrupt()
    finally:
        snap.close()
        store.close()


def test_snapshot_needs_a_store_file():
    from backend.store import Store

    mem = Store(":memory:")
    try:
        with pytest.raises(ValueError, match="store file"):
            mem.snapshot()
    finally:
        mem.close()
