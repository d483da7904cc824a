"""The bulk (APSW) connection never checkpoints: a stdlib reader's snapshot in this process holds.

APSW carries its own copy of SQLite, which cannot see the stdlib connections' locks in the same
process; a checkpoint through it would copy WAL frames into the database file under a stdlib
reader that still reads the older pages there.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np

import backend.store.sqlite as sqlite_store
from backend import sketch
from backend.store import EncodedAggregates, Store

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SHAS = [bytes([i]) * 32 for i in range(1, 41)]


def _day(day: int, orgs: list[str]) -> EncodedAggregates:
    """One row per (org, sample) on `day`, in key order (org keys follow creation order)."""
    org, sha = np.divmod(np.arange(len(orgs) * len(SHAS)), len(SHAS))
    n = org.size
    sketches = [sketch.sketch_of([day * 10_000 + i]) for i in range(n)]
    return EncodedAggregates(
        orgs=orgs, sha256s=SHAS, verdicts=["allow"],
        day=np.full(n, day), org=org, sha256=sha, model_version=np.ones(n, np.int64),
        verdict=np.zeros(n, np.int64), count=np.full(n, 2), endpoints=sketches,
        first_seen_ms=np.zeros(n, np.int64), last_seen_ms=np.ones(n, np.int64),
    )  # fmt: skip


def test_bulk_writes_never_checkpoint_under_a_stdlib_readers_snapshot(tmp_path, monkeypatch):
    # any connection that checkpoints on its own would now do so at every commit
    monkeypatch.setattr(sqlite_store, "_WAL_AUTOCHECKPOINT_PAGES", 2)
    path = tmp_path / "store.sqlite"
    store = Store(path, synchronous="NORMAL")
    ids = [store.create_org(f"org-{i}", NOW).org_id for i in range(5)]
    first = _day(20_000, ids)
    store.ingest_encoded("d0", "sim", first, now=NOW)
    store.checkpoint()  # the reader below starts from the database file alone
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    # the snapshot starts at its first read; the aggregates' pages are read only afterwards
    assert reader.execute("SELECT count(*) FROM orgs").fetchone()[0] == len(ids)
    for d in range(1, 6):  # the bulk connection's commits (appends of later days)
        store.ingest_encoded(f"d{d}", "sim", _day(20_000 + d, ids), now=NOW)
    store.checkpoint()  # PASSIVE, through the stdlib: it sees the reader and leaves its pages
    seen = reader.execute("SELECT count(*), sum(count) FROM aggregates").fetchone()
    assert seen == (len(first), 2 * len(first))
    rows = reader.execute("SELECT day, org, sha256, endpoints FROM aggregates").fetchall()
    assert {r[0] for r in rows} == {20_000}
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM aggregates").fetchone()[0] == 6 * len(first)
    reader.close()
    store.close()
    assert not path.with_name(path.name + "-wal").exists()  # the stdlib's close copied it back
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
