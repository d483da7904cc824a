"""`backend.server.replica.PolicyFeed`'s rules, one look at a time, on a real SQLite store.

The two-replica behaviour runs with real processes in `test_replicas.py` and
`test_policy_publish_crash.py`; here each rule is driven step by step: the feed adopts no
version its own repository does not serve yet (and adopts it once it does), and its
reconciliation publishes a pending version only when two looks in a row found it pending,
and tries again after a publication that failed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from pathlib import Path

from agent.decision import Mode
from backend.admin import set_mode
from backend.errors import PublishError
from backend.server.replica import PolicyFeed
from backend.store import PolicyRecord, Store
from tests.backend.conftest import NOW
from tests.backend.server.test_replicas import pg_database

__all__ = ["pg_database"]


def _store(tmp_path: Path, versions: int) -> Store:
    store = Store(tmp_path / "feed.db", synchronous="NORMAL")
    for i in range(versions):
        mode = (Mode.ENFORCE, Mode.OFF)[i % 2]
        set_mode(store, lambda raw, now: None, mode, org_id=None, now=NOW)
    return store


def _reader(store: Store):  # type: ignore[no-untyped-def]
    async def read(version: int) -> PolicyRecord | None:
        return next((r for r in store.policy_history() if r.version == version), None)

    return read


def test_feed_adopts_no_version_its_repository_does_not_serve_yet(tmp_path: Path) -> None:
    store = _store(tmp_path, 2)
    served = [1]
    changes: list[tuple[int | None, int]] = []
    feed = PolicyFeed(
        store,
        served_version=lambda: served[0],
        on_change=lambda old, new: changes.append((old.version if old else None, new.version)),
    )
    try:
        asyncio.run(feed._catch_up(2, _reader(store)))  # published 2, the repository serves 1
        assert feed.current is not None and feed.current.version == 1
        assert changes == []  # the first read only corrects what it held: no notice
        asyncio.run(feed._catch_up(2, _reader(store)))
        assert feed.current.version == 1 and feed._behind == 2
        served[0] = 2  # the signed metadata reached this repository
        asyncio.run(feed._catch_up(2, _reader(store)))
        assert feed.current.version == 2 and feed._behind == 0
        assert changes == [(1, 2)]
    finally:
        store.close()


def test_reconciliation_publishes_only_a_version_found_pending_on_two_looks(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, 1)
    calls: list[str] = []
    looks = iter([(2, 1), (3, 1), (3, 1), (3, 3)])

    async def counts() -> tuple[int, int]:
        return next(looks)

    def publish_pending() -> None:
        calls.append("publish")
        if len(calls) == 1:
            raise PublishError("repository down")

    feed = PolicyFeed(store, publish_pending=publish_pending, reconcile_s=0.01)
    try:

        async def look() -> None:
            feed._reconcile_at = 0.0  # due now: the clock is not under test
            await feed._reconcile(counts)

        asyncio.run(look())  # v2 pending, first seen
        asyncio.run(look())  # v3 pending now: a different version, first seen again
        assert calls == []
        asyncio.run(look())  # v3 pending twice in a row: publish (it fails)
        assert calls == ["publish"] and feed.reconciled == 0
        asyncio.run(look())  # published by now (by someone): nothing to do
        assert calls == ["publish"] and feed._pending_seen is None
    finally:
        store.close()


def test_reconciliation_tries_again_after_a_failed_publication(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    calls: list[dt.datetime] = []

    async def counts() -> tuple[int, int]:
        return 2, 1  # stays pending until a publication succeeds

    def publish_pending() -> None:
        calls.append(NOW)
        if len(calls) == 1:
            raise PublishError("repository down")

    feed = PolicyFeed(store, publish_pending=publish_pending, reconcile_s=0.01)
    try:

        async def look() -> None:
            feed._reconcile_at = 0.0
            await feed._reconcile(counts)

        for _ in range(3):
            asyncio.run(look())
        assert len(calls) == 2 and feed.reconciled == 1
    finally:
        store.close()


def test_an_in_memory_store_answers_from_its_own_record_while_the_feed_runs() -> None:
    store = Store(":memory:")
    try:
        feed = PolicyFeed(store)
        feed.running = True  # as under the app's lifespan; nothing else can write this store
        record = set_mode(store, lambda raw, now: None, Mode.OFF, org_id=None, now=NOW)
        assert feed.latest() == record  # a console or rollout change, never offered
    finally:
        store.close()


_FEED_QUERIES = (
    "SELECT seq, token_hash FROM token_revocations%",
    "SELECT (SELECT coalesce(max(version), 0) FROM policy_history)%",
)


def test_a_notice_lost_with_the_feeds_connection_is_caught_up_on_reconnect(
    pg_database: str,
) -> None:
    """PostgreSQL does not queue a NOTIFY for a listener that was disconnected.

    The feed's own connection is terminated by the server (`pg_terminate_backend`), a change
    is committed and published while it is gone, and the feed must still announce it: it
    reconnects and reads the newest published version before it listens again.
    """
    import psycopg

    from backend.store.postgres import PostgresStore

    store = PostgresStore(pg_database)
    noop = lambda raw, now: None  # noqa: E731 - signing is not under test here
    set_mode(store, noop, Mode.ENFORCE, org_id=None, now=NOW)
    seen: list[int] = []
    feed = PolicyFeed(store, on_change=lambda old, new: seen.append(new.version))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(feed.run(stop),))
    runner.start()

    def feed_pids(conn: psycopg.Connection[tuple[int]]) -> list[int]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND (query LIKE %s OR query LIKE %s)",
            _FEED_QUERIES,
        ).fetchall()
        return [int(r[0]) for r in rows]

    try:
        with psycopg.connect(pg_database, autocommit=True) as admin:
            deadline = time.monotonic() + 20
            while not (feed.running and feed._synced and feed_pids(admin)):
                assert time.monotonic() < deadline, "the feed never connected"
                time.sleep(0.02)
            (pid,) = feed_pids(admin)
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            record = set_mode(store, noop, Mode.OFF, org_id=None, now=NOW)  # NOTIFY: nobody
            deadline = time.monotonic() + 10
            while record.version not in seen:
                assert time.monotonic() < deadline, f"the lost notice was never caught up: {seen}"
                time.sleep(0.02)
            assert pid not in feed_pids(admin)  # the kill landed: a new connection answered
            assert feed.current is not None and feed.current.version == record.version
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(timeout=20)
        loop.close()
        store.close()
