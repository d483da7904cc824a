"""`backend.replica.PolicyFeed`'s rules, one look at a time, on a real SQLite store.

The two-replica behaviour runs with real processes in `test_replicas.py` and
`test_policy_publish_crash.py`; here each rule is driven step by step: the feed adopts no
version its own repository does not serve yet (and adopts it once it does), and its
reconciliation publishes a pending version only when two looks in a row found it pending,
and tries again after a publication that failed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from agent.decision import Mode
from backend.admin import set_mode
from backend.errors import PublishError
from backend.replica import PolicyFeed
from backend.store import PolicyRecord, Store
from tests.backend.conftest import NOW


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
