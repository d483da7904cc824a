"""The one ingest transaction's set-based writes, on SQLite and PostgreSQL alike.

PostgreSQL writes each table of a batch in one statement over arrays (`unnest`), which may
touch a row only once: keys repeated in one call must still add up as they do row by row.
Token lookups must not wait for an ingest transaction holding the writer. The PostgreSQL half
needs `FLEETWARD_TEST_PG_URL` (`.ci/postgres.sh`), as in `test_store_postgres.py`.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.decision import Verdict
from backend import sketch
from backend.ingest import BatchAggregate
from backend.store import AnyStore, Store, open_store
from tests.backend.conftest import NOW

PG_URL = os.environ.get("FLEETWARD_TEST_PG_URL")
DAY = 20_758
_COLUMNS = (
    "day", "org_id", "sha256", "model_version", "verdict", "count", "endpoints",
    "first_seen_ms", "last_seen_ms",
)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    if request.param == "sqlite":
        s: AnyStore = open_store(tmp_path / "b.db", synchronous="NORMAL")
        yield s
        s.close()
        return
    if not PG_URL:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("FLEETWARD_TEST_PG_URL is unset in CI: .ci/run must start PostgreSQL")
        pytest.skip("FLEETWARD_TEST_PG_URL is unset (run `.ci/postgres.sh` to start a server)")
    import psycopg

    from backend.store.postgres import PostgresStore

    schema = "t_" + secrets.token_hex(6)
    pg = PostgresStore(PG_URL, schema=schema)
    try:
        yield pg
    finally:
        pg.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # noqa: S608 - hex name


def _rows(store: Any, query: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query, through the store's own connection (either dialect)."""
    return [tuple(r) for r in store._conn.execute(query).fetchall()]


def test_evidence_rollup_equals_the_grouped_ledger_with_keys_repeated_in_one_call(
    store: AnyStore,
) -> None:
    rng = random.Random(7)
    ledger: dict[tuple[int, str, int], list[Any]] = {}
    extra: dict[tuple[int, int, str], list[int]] = defaultdict(lambda: [0] * 6)
    for call in range(8):
        rows: list[Any] = [
            (
                DAY + rng.randrange(2), rng.choice(["ep_a", "ep_b", "ep_c"]), rng.randrange(1, 3),
                rng.choice(["org_x", "org_y"]), *(rng.randrange(6) for _ in range(5)),
            )
            for _ in range(rng.randrange(1, 15))
        ]  # fmt: skip
        arms: list[Any] = [
            (DAY, 1, "org_x", 1, *(rng.randrange(6) for _ in range(5))) for _ in range(2)
        ]
        store.record_evidence(f"ev-{call}", endpoint_days=rows, arm_days=arms, now=NOW)
        for r in rows:  # the oracle: the first org of a key stays, counts add
            cell = ledger.setdefault((r[0], r[1], r[2]), [r[3], 0, 0, 0, 0, 0])
            for i in range(5):
                cell[1 + i] += r[4 + i]
        for a in arms:
            for i in range(6):
                extra[a[0], a[1], a[2]][i] += a[3 + i]
    assert store.record_evidence("ev-0", endpoint_days=rows, now=NOW).duplicate

    got_ledger = _rows(
        store,
        "SELECT day, endpoint_id, model_version, org_id, events, alerts, self_test_failures, "
        "model_errors, breaker_trips FROM endpoint_days ORDER BY 1, 2, 3",
    )
    assert got_ledger == [(*k, *v) for k, v in sorted(ledger.items())]
    rollup: dict[tuple[int, int, str], list[int]] = defaultdict(lambda: [0] * 6)
    for (day, _, version), (org, *counts) in ledger.items():
        cell = rollup[day, version, org]
        cell[0] += 1
        for i, n in enumerate(counts):
            cell[1 + i] += n
    for k, add in extra.items():
        rollup[k] = [a + b for a, b in zip(rollup[k], add, strict=True)]
    got_rollup = _rows(
        store,
        "SELECT day, model_version, org_id, endpoint_days, events, alerts, self_test_failures, "
        "model_errors, breaker_trips FROM arm_days ORDER BY 1, 2, 3",
    )
    assert got_rollup == [(*k, *v) for k, v in sorted(rollup.items())]


def test_a_key_repeated_in_one_bulk_fold_adds_every_row(store: AnyStore) -> None:
    org = store.create_org("acme", NOW).org_id
    sha = bytes(range(32))
    result = store.ingest_columns(
        "fold-1",
        "sim",
        day=[DAY, DAY, DAY],
        org_id=[org] * 3,
        sha256=[sha] * 3,
        model_version=[3, 3, 3],
        verdict=["allow", "allow", "block"],
        count=[2, 5, 1],
        endpoints=[sketch.sketch_of([1, 2]), sketch.sketch_of([2, 3]), sketch.sketch_of([9])],
        first_seen_ms=[500, 100, 700],
        last_seen_ms=[900, 300, 800],
        features=[],
        now=NOW,
    )
    assert (result.duplicate, result.rows) == (False, 3)
    got = [
        (r.verdict, r.count, r.distinct_endpoints, r.first_seen_ms, r.last_seen_ms)
        for r in store.aggregates(org_id=org)
    ]
    assert got == [(Verdict.ALLOW, 7, 3, 100, 900), (Verdict.BLOCK, 1, 1, 700, 800)]


def test_the_first_vector_reported_in_one_write_wins_for_its_org(store: AnyStore) -> None:
    org = store.create_org("acme", NOW).org_id
    sha = bytes(range(32))
    first, second = b"\xff" * 16, b"\x00" * 16  # the second sorts first
    result = store.ingest_columns(
        "fold-1",
        "sim",
        **{c: [] for c in _COLUMNS},
        features=[(org, sha, "static-v1", first), (org, sha, "static-v1", second)],
        now=NOW,
    )
    assert not result.duplicate
    assert store.feature_vector(org, sha.hex(), "static-v1") == first
    assert store.stats().vector_rows == 1  # the vector no org refers to is not kept


def test_a_token_lookup_does_not_wait_for_the_ingest_writer(store: AnyStore) -> None:
    org = store.create_org("acme", NOW).org_id
    creds = store.enroll(org, NOW)
    done = threading.Event()

    def check_in() -> None:
        store.authenticate(creds.token, NOW)  # not cached yet: reads the tokens table
        done.set()

    writer: Any = store
    with writer._lock:  # what an ingest transaction holds while it writes
        worker = threading.Thread(target=check_in)
        worker.start()
        answered = done.wait(10.0)
    worker.join()
    assert answered, "authenticate waited for the writer's lock"


def _vector_fold(store: AnyStore, key: str, org: str, vector: bytes, **kw: Any) -> Any:
    return store.ingest_columns(
        key,
        "sim",
        **{c: [] for c in _COLUMNS},
        features=[(org, bytes(range(32)), "static-v1", vector)],
        now=NOW,
        **kw,
    )


def test_a_rolled_back_write_leaves_its_vector_to_be_written_by_the_retry(
    store: AnyStore,
) -> None:
    org = store.create_org("acme", NOW).org_id
    sha, vector = bytes(range(32)), b"\x07" * 16
    batch = BatchAggregate("k", org, "ep_1", 0, 1, b"", [], [(sha, "static-v1", vector)])
    bad: Any = [("not a day", "ep_1", 1, org, 1, 0, 0, 0, 0)]
    with pytest.raises(ValueError):  # fails after the vectors, inside the transaction
        store.ingest_aggregate(batch, NOW, evidence=bad)
    assert store.feature_vector(org, sha.hex(), "static-v1") is None
    assert not store.ingest_aggregate(batch, NOW).duplicate  # the agent's retry
    assert store.feature_vector(org, sha.hex(), "static-v1") == vector


def test_a_reference_already_stored_is_not_written_again_and_other_orgs_keep_their_own() -> None:
    statements: list[str] = []
    store = Store(":memory:", tracer=lambda sql, _: statements.append(sql))
    acme, globex = (store.create_org(n, NOW).org_id for n in ("acme", "globex"))
    mine, theirs = b"\x01" * 16, b"\x02" * 16
    _vector_fold(store, "k1", acme, mine)
    written = sum("INTO org_vectors" in s for s in statements)
    _vector_fold(store, "k2", acme, theirs)  # the same sample again: first report stands
    assert sum("INTO org_vectors" in s for s in statements) == written
    _vector_fold(store, "k3", globex, theirs)
    assert sum("INTO org_vectors" in s for s in statements) > written
    sha = bytes(range(32)).hex()
    assert store.feature_vector(acme, sha, "static-v1") == mine
    assert store.feature_vector(globex, sha, "static-v1") == theirs
    store.close()


def test_text_with_quotes_backslashes_braces_and_null_is_stored_as_sent(store: AnyStore) -> None:
    names = ['ep "quoted"', "ep\\back\\slash", "NULL", "a,b{c} d", "", "ep_ü"]
    rows: list[Any] = [(DAY, n, 1, "org_x", 1, 0, 0, 0, 0) for n in names]
    store.record_evidence("odd-names", endpoint_days=rows, now=NOW)
    got = _rows(store, "SELECT endpoint_id FROM endpoint_days")
    assert sorted(r[0] for r in got) == sorted(names)


def test_concurrent_batches_over_the_same_rows_all_count_and_never_deadlock(
    store: AnyStore,
) -> None:
    org = store.create_org("acme", NOW).org_id
    endpoints = [store.enroll(org, NOW).endpoint_id for _ in range(4)]
    shas = [bytes([i]) * 32 for i in range(40)]
    errors: list[BaseException] = []

    def send(n: int, ep: str) -> None:
        rng = random.Random(n)
        try:
            for b in range(8):
                picked = sorted(rng.sample(range(40), 25))  # overlapping rows, several per batch
                rows = [(DAY, shas[i], 3, 0, "allow", 2, 1_000 + b, 2_000 + b) for i in picked]
                batch = BatchAggregate(
                    f"b-{n}-{b}", org, ep, 0, 50, sketch.sketch_of([n]), rows, []
                )
                evidence = [(DAY, ep, 3, org, 50, 1, 0, 0, 0)]
                store.ingest_aggregate(batch, NOW, evidence=evidence)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n, ep)) for n, ep in enumerate(endpoints)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.count for r in store.aggregates(org_id=org)) == 4 * 8 * 25 * 2
    assert max(r.distinct_endpoints for r in store.aggregates(org_id=org)) == 4
    rollup = _rows(store, "SELECT endpoint_days, events, alerts FROM arm_days")
    assert rollup == [(4, 4 * 8 * 50, 4 * 8)]


def test_an_endpoint_a_row_already_counts_leaves_it_and_a_straddling_one_is_merged(
    store: AnyStore,
) -> None:
    org = store.create_org("acme", NOW).org_id
    a, b = 0x0000_0001_0000_0002, 0x0000_0003_0000_0004
    straddling = 0x0000_0002_0000_0003  # a's last 4 bytes + b's first 4: not an element
    sent = [[a, b], [b], [a, b], [straddling], [straddling]]
    for i, hashes in enumerate(sent):
        row = (DAY, bytes(32), 1, 0, "allow", 1, 10, 20)
        batch = BatchAggregate(f"k-{i}", org, "ep", 0, 1, sketch.sketch_of(hashes), [row], [])
        store.ingest_aggregate(batch, NOW)
        if i == 2:
            assert store.aggregates()[0].endpoints == sketch.sketch_of([a, b])
    (stored,) = store.aggregates()
    assert stored.endpoints == sketch.sketch_of([a, b, straddling])
    assert (stored.count, stored.distinct_endpoints) == (5, 3)
