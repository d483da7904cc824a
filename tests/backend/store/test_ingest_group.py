"""Group commit of telemetry batches on PostgreSQL (`backend.store._group`, `PostgresStore`).

Batches that arrive while a transaction commits share the next one. Each test makes the group
form for certain: an outside connection holds `LOCK TABLE batches IN SHARE MODE`, so the first
batch's transaction waits at its ledger insert (seen in `pg_stat_activity`) while the others
queue behind it (`ingest_waiting`); releasing the lock lets the first commit alone and the
queued ones commit as one group. Needs `FLEETWARD_TEST_PG_URL` (`.ci/postgres.sh`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.decision import Verdict
from agent.telemetry import encode_batch
from backend import sketch
from backend.ingest import BatchAggregate
from backend.store import IngestResult
from backend.store._group import GroupCommit
from tests.backend.conftest import NOW, ServerProcess, free_port, make_event

PG_URL = os.environ.get("FLEETWARD_TEST_PG_URL")
DAY = 20_758
SHAS = [bytes([i]) * 32 for i in range(12)]

needs_pg = pytest.mark.skipif(
    not PG_URL and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="FLEETWARD_TEST_PG_URL is unset (run `.ci/postgres.sh` to start a server)",
)


def _wait_for(
    what: str, done: Callable[[], bool], timeout_s: float = 30.0, state: object = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({state})")
        time.sleep(0.01)


@pytest.fixture
def schema() -> Iterator[str]:
    import psycopg

    assert PG_URL, "FLEETWARD_TEST_PG_URL is unset in CI: .ci/run must start PostgreSQL"
    name = "t_" + secrets.token_hex(6)
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")  # noqa: S608 - hex name


def _store(schema: str) -> Any:
    from backend.store.postgres import PostgresStore

    assert PG_URL
    return PostgresStore(PG_URL, schema=schema)


def _batch(org: str, endpoint: str, key: str, n: int) -> BatchAggregate:
    """A batch of `n` events over the hot samples: every batch of the org shares these rows."""
    rows = [(DAY, SHAS[i], 3, 0, "allow", n, 1_000 + i, 2_000 + i) for i in range(len(SHAS))]
    return BatchAggregate(
        key,
        org,
        endpoint,
        0,
        n * len(SHAS),
        sketch.sketch_of([sketch.endpoint_hash(endpoint)]),
        rows,
        [],
    )


def _evidence(org: str, endpoint: str, events: int, day: int = DAY) -> list[Any]:
    return [(day, endpoint, 3, org, events, 1, 0, 0, 0)]


@contextlib.contextmanager
def _ledger_locked(schema: str) -> Iterator[Callable[[], bool]]:
    """Hold the ledger in SHARE mode; yields "is an ingest transaction waiting for it"."""
    import psycopg

    assert PG_URL
    with psycopg.connect(PG_URL) as holder, psycopg.connect(PG_URL, autocommit=True) as watch:
        holder.execute(f"LOCK TABLE {schema}.batches IN SHARE MODE")

        def waiting() -> bool:
            row = watch.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE NOT l.granted AND c.relname = 'batches' AND n.nspname = %s",
                (schema,),
            ).fetchone()
            return row is not None and int(row[0]) > 0

        yield waiting
        holder.commit()


def _grouped(
    store: Any, schema: str, calls: Sequence[Callable[..., IngestResult]]
) -> list[IngestResult | BaseException]:
    """Run `calls[0]` alone (held at the ledger), the rest queued behind it, then release."""
    out: list[IngestResult | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # reported to the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with _ledger_locked(schema) as waiting:
        threads[0].start()
        _wait_for("the first transaction to wait at the ledger", waiting)
        for t in threads[1:]:
            t.start()
        _wait_for("the others to queue", lambda: store.ingest_waiting() == len(calls) - 1)
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def _send(
    store: Any, org: str, ep: str, key: str, n: int, events: int, day: int = DAY
) -> IngestResult:
    """One batch of `n` per hot row, with `events` in its endpoint-day evidence."""
    result: IngestResult = store.ingest_aggregate(
        _batch(org, ep, key, n), NOW, evidence=_evidence(org, ep, events, day)
    )
    return result


def _count(store: Any, query: str) -> Any:
    return store._conn.execute(query).fetchone()


@needs_pg
def test_queued_batches_commit_as_one_group_and_each_counts_once(schema: str) -> None:
    store = _store(schema)
    try:
        org = store.create_org("acme", NOW).org_id
        eps = [store.enroll(org, NOW).endpoint_id for _ in range(6)]
        calls = [
            functools.partial(_send, store, org, ep, f"k{i}", i + 1, 10 * (i + 1))
            for i, ep in enumerate(eps)
        ]
        # the same batch again in the same group (an agent's retry racing its first send)
        calls.append(functools.partial(_send, store, org, eps[3], "k3", 4, 40))
        results = _grouped(store, schema, calls)
        stats = store._group.stats
        assert (stats.groups, stats.largest, stats.fallbacks) == (2, 6, 0)
        assert [isinstance(r, IngestResult) and r.duplicate for r in results] == [
            False, False, False, False, False, False, True
        ]  # fmt: skip
        total = sum(range(1, 7))
        aggs = store.aggregates(org_id=org)
        assert len(aggs) == len(SHAS)
        assert all(r.count == total and r.distinct_endpoints == 6 for r in aggs)
        assert _count(store, "SELECT count(*), sum(events) FROM batches") == (6, total * 12)
        assert _count(store, "SELECT endpoint_days, events FROM arm_days") == (6, 10 * total)
        seen = _count(store, "SELECT count(*) FROM endpoints WHERE last_seen_ms IS NOT NULL")
        assert seen == (6,)
    finally:
        store.close()


@needs_pg
def test_a_bad_batch_in_a_group_fails_alone_and_the_others_commit(schema: str) -> None:
    store = _store(schema)
    try:
        org = store.create_org("acme", NOW).org_id
        eps = [store.enroll(org, NOW).endpoint_id for _ in range(5)]
        days = [DAY, DAY, 2**40, DAY, DAY]  # 2**40 passes Python, PostgreSQL refuses it
        calls = [
            functools.partial(_send, store, org, ep, f"k{i}", 1, 12, days[i])
            for i, ep in enumerate(eps)
        ]
        results = _grouped(store, schema, calls)
        import psycopg

        assert isinstance(results[2], psycopg.errors.NumericValueOutOfRange), results[2]
        assert all(isinstance(r, IngestResult) and not r.duplicate for i, r in
                   enumerate(results) if i != 2)  # fmt: skip
        assert store._group.stats.fallbacks == 1  # the group failed, then each went alone
        keys = {r[0] for r in store._conn.execute("SELECT key FROM batches").fetchall()}
        assert keys == {"k0", "k1", "k3", "k4"}
        assert all(r.count == 4 for r in store.aggregates(org_id=org))
        # the failed batch left nothing behind: its retry (fixed) counts once
        assert not _send(store, org, eps[2], "k2", 1, 12).duplicate
        assert all(r.count == 5 for r in store.aggregates(org_id=org))
    finally:
        store.close()


@needs_pg
def test_two_replicas_racing_the_same_batch_keys_count_each_key_once(schema: str) -> None:
    replicas = [_store(schema), _store(schema)]
    try:
        org = replicas[0].create_org("acme", NOW).org_id
        eps = [replicas[0].enroll(org, NOW).endpoint_id for _ in range(8)]
        keys = [(ep, f"k{j}") for ep in eps for j in range(6)]
        barrier = threading.Barrier(16)
        results: dict[tuple[str, str], list[bool]] = {k: [] for k in keys}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def send(n: int) -> None:  # 8 threads per replica, each sends every key
            store = replicas[n % 2]
            order = keys[n:] + keys[:n]
            barrier.wait()
            try:
                for ep, key in order:
                    r = _send(store, org, ep, key, 1, 12)
                    with lock:
                        results[ep, key].append(r.duplicate)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert all(sorted(v) == [False] + [True] * 15 for v in results.values())
        assert all(r.count == len(keys) for r in replicas[0].aggregates(org_id=org))
        assert _count(replicas[1], "SELECT count(*) FROM batches") == (len(keys),)
        assert _count(replicas[1], "SELECT endpoint_days, events FROM arm_days") == (
            8, 12 * len(keys)
        )  # fmt: skip
        assert max(r._group.stats.largest for r in replicas) > 1  # groups did form
    finally:
        for r in replicas:
            r.close()


def test_group_commit_hands_each_item_its_own_error_and_result() -> None:
    """The committer alone: a failing group falls back item by item; a group of one fails."""
    applied: list[list[int]] = []

    def apply_group(items: Any) -> list[int]:
        applied.append(list(items))
        if 13 in items:
            raise ValueError("13 is bad")
        return [i * 2 for i in items]

    def apply_one(item: int) -> int:
        if item == 13:
            raise ValueError("13 is bad")
        return item * 2

    group: GroupCommit[int, int] = GroupCommit(apply_group, apply_one)
    assert group.submit(4) == 8
    with pytest.raises(ValueError, match="13"):
        group.submit(13)
    assert applied == [[4], [13]]  # a group of one is not applied twice
    assert group.stats.fallbacks == 0


# --- kill -9 inside a group's transaction, through the HTTP server -----------------------------


def _waiting(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("fleetward_ingest_batches_waiting "))
    return float(line.split()[1])


@needs_pg
@pytest.mark.slow  # two server starts: ~14 s on the loaded 2-core machine
def test_kill_9_inside_a_group_loses_no_acknowledged_batch(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    assert PG_URL
    name = "fw_group_" + secrets.token_hex(4)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = PG_URL.rpartition("/")[0] + "/" + name
    try:
        _kill_inside_a_group(tmp_path, repo_dir, monkeypatch, url, name)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _kill_inside_a_group(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch, url: str, name: str
) -> None:
    import psycopg

    from backend.store.postgres import PostgresStore

    store = PostgresStore(url)
    org = store.create_org("acme", NOW).org_id
    creds = [store.enroll(org, NOW) for _ in range(6)]
    store.close()
    bodies = [
        encode_batch(
            [make_event(org, c.endpoint_id, f"{j:064x}", verdict=Verdict.BLOCK) for j in range(5)],
            key=f"batch-{i}-of-the-group",
        )
        for i, c in enumerate(creds)
    ]
    marker = tmp_path / "paused"
    monkeypatch.setenv("FLEETWARD_FAULT_PAUSE_INGEST_GROUP", str(marker))
    server = ServerProcess(url, repo_dir, free_port())  # type: ignore[arg-type]  # a URL
    server.start()
    answers: list[Any] = [None] * len(creds)

    def send(i: int) -> None:
        headers = {
            "authorization": f"Bearer {creds[i].token}",
            "content-type": "application/msgpack",
        }
        try:
            answers[i] = httpx.post(
                server.url + "/v1/telemetry", content=bodies[i], headers=headers, timeout=60
            )
        except httpx.TransportError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(creds))]
    try:
        with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watch:
            holder.execute("LOCK TABLE batches IN SHARE MODE")

            def first_waits() -> bool:
                row = watch.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE NOT l.granted AND c.relname = 'batches'"
                ).fetchone()
                return row is not None and int(row[0]) > 0

            threads[0].start()
            _wait_for("batch 0 to wait at the ledger", first_waits, state=answers)
            for t in threads[1:]:
                t.start()
            _wait_for("five batches to queue", lambda: _waiting(server.url) == 5)
            holder.commit()  # batch 0 commits alone; the five queued form one group
        _wait_for("the group to reach the fault point", marker.exists)
        pid, keys = marker.read_text().split("\n")
        assert server.proc is not None and pid == str(server.proc.pid)
        assert keys.split() == [
            f"batch-{i}-of-the-group" for i in range(1, 6)
        ]  # the kill lands in a group
        server.kill9()
        for t in threads:
            t.join(timeout=30)
        assert answers[0].status_code == 200 and answers[0].json()["duplicate"] is False
        assert all(isinstance(a, httpx.TransportError) for a in answers[1:]), answers
        with psycopg.connect(url) as conn:  # the acknowledged batch is there, the group is not
            assert conn.execute("SELECT key FROM batches").fetchall() == [("batch-0-of-the-group",)]

        monkeypatch.delenv("FLEETWARD_FAULT_PAUSE_INGEST_GROUP")
        marker.unlink()
        server.start()
        for i in range(len(creds)):  # every agent retries: the acknowledged one is a duplicate
            send(i)
            assert answers[i].status_code == 200, answers[i]
            assert answers[i].json()["duplicate"] is (i == 0)
    finally:
        server.stop()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*), sum(events) FROM batches").fetchone() == (6, 30)
        assert conn.execute("SELECT sum(count) FROM aggregates").fetchone() == (30,)
        assert conn.execute("SELECT sum(events), sum(alerts) FROM arm_days").fetchone() == (
            30, 30
        )  # fmt: skip
