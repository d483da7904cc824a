"""Store parity: the backend store tests, run against SQLite and PostgreSQL alike.

Every test takes the parametrized `store` fixture, so `pytest -k postgres` selects this whole
module (both stores) and the PostgreSQL half needs `FLEETWARD_TEST_PG_URL` (`.ci/postgres.sh`
starts a throwaway server and prints it). In CI a missing URL fails the tests; elsewhere they
skip with the reason. Each PostgreSQL test gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn

from agent.decision import Verdict
from agent.policy import PolicyDocumentModel
from agent.telemetry import TelemetryBatch, encode_batch
from backend import sketch
from backend.analysis.labels import LabelChange, LabelSource, LabelValue
from backend.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    PolicyConflictError,
    PublishError,
)
from backend.ingest import aggregate
from backend.server.app import create_app
from backend.store import AnyStore, Store, TokenKind, open_store
from tests.backend.conftest import NOW, free_port, make_event

PG_URL = os.environ.get("FLEETWARD_TEST_PG_URL")
DAY = dt.timedelta(days=1)


def _require_pg_url() -> str:
    if PG_URL:
        return PG_URL
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("FLEETWARD_TEST_PG_URL is unset in CI: .ci/run must start PostgreSQL")
    pytest.skip("FLEETWARD_TEST_PG_URL is unset (run `.ci/postgres.sh` to start a server)")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    if request.param == "sqlite":
        s: AnyStore = open_store(tmp_path / "b.db", synchronous="NORMAL")
        yield s
        s.close()
        return
    import psycopg

    from backend.store.postgres import PostgresStore

    url = _require_pg_url()
    schema = "t_" + secrets.token_hex(6)
    pg = PostgresStore(url, schema=schema)
    try:
        yield pg
    finally:
        pg.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # noqa: S608 - hex name


def _policy(version: int, mode: str = "enforce") -> PolicyDocumentModel:
    return PolicyDocumentModel.model_validate(
        {"version": version, "issued_at": NOW.isoformat(), "default": {"mode": mode}}
    )


def _batch(org: str, endpoint: str, events: list[Any], key: str | None = None) -> TelemetryBatch:
    return TelemetryBatch(key or secrets.token_hex(8), org, endpoint, 0, tuple(events))


def _ingest(s: AnyStore, batch: TelemetryBatch, now: dt.datetime = NOW) -> Any:
    rows, feats = aggregate(batch.events)
    return s.ingest(batch, rows, feats, now)


def test_postgres_parity_orgs_tokens_and_enrollment(store: AnyStore):
    created = store.create_org("acme", NOW)
    with pytest.raises(ConflictError):
        store.create_org("acme", NOW)
    other = store.create_org("globex", NOW)
    assert store.org_ids() == [created.org_id, other.org_id]
    assert store.has_org(created.org_id) and not store.has_org("org_nope")
    assert store.authenticate(created.enroll_token).kind is TokenKind.ENROLL
    creds = store.enroll(created.org_id, NOW)
    who = store.authenticate(creds.token)
    assert (who.kind, who.org_id, who.endpoint_id) == (
        TokenKind.ENDPOINT,
        created.org_id,
        creds.endpoint_id,
    )
    assert store.authenticate(store.create_admin_token(NOW)).kind is TokenKind.ADMIN
    with pytest.raises(AuthError):
        store.authenticate("fwad_unknown")
    with pytest.raises(NotFoundError):
        store.enroll("org_nope", NOW)


def _random_log(seed: int, org: str) -> list[TelemetryBatch]:
    rng = random.Random(seed)
    samples = [rng.randbytes(32).hex() for _ in range(6)]
    endpoints = [f"ep_{i}" for i in range(90)]  # > sketch.K on the popular rows
    out = []
    for b in range(60):
        ep = rng.choice(endpoints)
        events = [
            make_event(
                org,
                ep,
                rng.choice(samples[:2] if rng.random() < 0.7 else samples),
                verdict=rng.choice([Verdict.ALLOW, Verdict.BLOCK]),
                version=rng.choice([1, 2]),
                at=NOW + dt.timedelta(hours=rng.randrange(60)),
                features=bytes(16),
            )
            for _ in range(rng.randrange(1, 8))
        ]
        out.append(_batch(org, ep, events, key=f"k{b}"))
    return out


def _normalised(s: AnyStore, names: dict[str, str]) -> list[tuple[Any, ...]]:
    return [
        (r.day, names[r.org_id], r.sha256, r.model_version, r.shadow, r.verdict, r.count,
         r.endpoints, r.first_seen_ms, r.last_seen_ms)
        for r in s.aggregates()
    ]  # fmt: skip


def test_postgres_parity_aggregates_equal_sqlite_on_a_random_log(store: AnyStore, tmp_path: Path):
    ref = Store(tmp_path / "ref.db", synchronous="NORMAL")
    org_s, org_r = store.create_org("acme", NOW).org_id, ref.create_org("acme", NOW).org_id
    log_s, log_r = _random_log(7, org_s), _random_log(7, org_r)
    for bs, br in zip(log_s, log_r, strict=True):
        _ingest(store, bs)
        _ingest(ref, br)
    assert _ingest(store, log_s[3]).duplicate  # a retried key counts once
    got, want = _normalised(store, {org_s: "acme"}), _normalised(ref, {org_r: "acme"})
    assert got == want
    assert store.aggregates(org_id=org_s, day=got[0][0]) == [
        r for r in store.aggregates() if r.day == got[0][0]
    ]
    assert store.aggregates(org_id="org_nope") == []
    streamed = [r for chunk in store.iter_aggregates(batch_rows=5) for r in chunk]
    assert sorted(streamed, key=lambda r: (r.day, r.sha256, r.model_version, r.verdict)) == sorted(
        store.aggregates(), key=lambda r: (r.day, r.sha256, r.model_version, r.verdict)
    )
    cut = got[len(got) // 2][8]
    early = [r for chunk in store.iter_aggregates(until_ms=cut, shadow=False) for r in chunk]
    assert early and all(r.first_seen_ms < cut and not r.shadow for r in early)
    stats = store.stats()
    assert (stats.aggregate_rows, stats.batches) == (len(got), len(log_s))
    assert stats.events == sum(len(b.events) for b in log_s) and stats.database_bytes > 0
    ref.close()


def test_postgres_parity_sketch_merge_matches_python(store: AnyStore):
    org = store.create_org("acme", NOW).org_id
    rng = random.Random(3)
    sha = "ee" * 32
    seen: set[str] = set()
    expected = b""
    for i in range(40):
        eps = {f"ep_{rng.randrange(300)}" for _ in range(rng.randrange(1, 12))}
        seen |= eps
        events = [make_event(org, ep, sha) for ep in sorted(eps)]
        rows, feats = aggregate(events)
        store.ingest(_batch(org, "ep_x", events, key=f"m{i}"), rows, feats, NOW)
        expected = sketch.merge(expected, rows[0].endpoints)
    (row,) = store.aggregates()
    assert len(seen) > sketch.K  # the merge past K is exercised
    assert row.endpoints == expected == sketch.sketch_of(sketch.endpoint_hash(e) for e in seen)


def test_postgres_parity_features_and_dropped_events(store: AnyStore):
    org = store.create_org("acme", NOW).org_id
    ep = store.enroll(org, NOW).endpoint_id
    vec = bytes(range(16))
    ev = make_event(org, ep, "aa" * 32, features=vec)
    rows, feats = aggregate([ev])
    store.ingest(TelemetryBatch("k1", org, ep, 5, (ev,)), rows, feats, NOW)
    store.ingest(TelemetryBatch("k2", org, ep, 3, (ev,)), rows, feats, NOW)
    assert store.feature_vector(org, "aa" * 32, "static-v1") == vec
    assert store.feature_vector(org, "bb" * 32, "static-v1") is None
    keys = [(org, "aa" * 32), (org, "bb" * 32), (org, "aa" * 32)]
    assert store.feature_vectors(keys, "static-v1") == {(org, "aa" * 32): vec}
    # vectors are per org: another org reporting the same sample keeps its own
    other = store.create_org("globex", NOW).org_id
    other_ep = store.enroll(other, NOW).endpoint_id
    planted = bytes(16)
    ev2 = make_event(other, other_ep, "aa" * 32, features=planted)
    store.ingest(TelemetryBatch("k3", other, other_ep, 0, (ev2,)), *aggregate([ev2]), NOW)
    assert store.feature_vector(org, "aa" * 32, "static-v1") == vec
    assert store.feature_vector(other, "aa" * 32, "static-v1") == planted
    both = store.feature_vectors([(org, "aa" * 32), (other, "aa" * 32)], "static-v1")
    assert both == {(org, "aa" * 32): vec, (other, "aa" * 32): planted}
    assert store.endpoint_dropped_events(ep) == 5
    assert store.endpoint_dropped_events("ep_unknown") == 0
    with pytest.raises(NotFoundError):
        store.ingest(_batch("org_nope", ep, [ev]), rows, feats, NOW)


def test_postgres_parity_equal_vectors_stored_once_while_each_org_keeps_its_reference(
    store: AnyStore,
) -> None:
    a, b = (store.create_org(n, NOW).org_id for n in ("acme", "globex"))
    ep_a, ep_b = store.enroll(a, NOW).endpoint_id, store.enroll(b, NOW).endpoint_id
    vec, other = bytes(range(16)), bytes(range(16, 32))
    s1, s2 = "aa" * 32, "bb" * 32
    # both orgs report the same vector for one sample, and for a second sample too
    for org, ep, key in ((a, ep_a, "ka"), (b, ep_b, "kb")):
        evs = [make_event(org, ep, s, features=vec) for s in (s1, s2)]
        store.ingest(TelemetryBatch(key, org, ep, 0, tuple(evs)), *aggregate(evs), NOW)
    got = store.stats()
    assert (got.feature_rows, got.vector_rows) == (4, 1)  # four references, one stored vector
    # org A reports a different vector for s1 (HTTP path) and then through the bulk fold:
    # A keeps its first one, and B's reference is not touched either way
    ev = make_event(a, ep_a, s1, features=other)
    store.ingest(TelemetryBatch("ka2", a, ep_a, 0, (ev,)), *aggregate([ev]), NOW)
    store.ingest_columns(
        "fold-1", "sim", day=[0], org_id=[a], sha256=[bytes.fromhex(s1)], model_version=[1],
        verdict=["allow"], count=[1], endpoints=[sketch.sketch_of([1])], first_seen_ms=[0],
        last_seen_ms=[0], features=[(a, bytes.fromhex(s1), "static-v1", other)], now=NOW,
    )  # fmt: skip
    assert store.feature_vector(a, s1, "static-v1") == vec
    assert store.feature_vector(b, s1, "static-v1") == vec
    # a third org whose first report is the other vector: its own reference, one more vector
    c = store.create_org("initech", NOW).org_id
    ep_c = store.enroll(c, NOW).endpoint_id
    ev = make_event(c, ep_c, s1, features=other)
    store.ingest(TelemetryBatch("kc", c, ep_c, 0, (ev,)), *aggregate([ev]), NOW)
    pairs = [(a, s1), (b, s1), (c, s1), (a, s2), (b, s2)]
    assert store.feature_vectors(pairs, "static-v1") == {
        (a, s1): vec, (b, s1): vec, (c, s1): other, (a, s2): vec, (b, s2): vec,
    }  # fmt: skip
    got = store.stats()
    assert (got.feature_rows, got.vector_rows) == (5, 2)


def test_postgres_per_org_features_table_moves_into_shared_vectors_at_open() -> None:
    import psycopg

    from backend.store.postgres import PostgresStore

    url = _require_pg_url()
    schema = "t_" + secrets.token_hex(6)
    pg = PostgresStore(url, schema=schema)
    try:
        a, b = (pg.create_org(n, NOW).org_id for n in ("acme", "globex"))
        ka, kb = pg._org_key(a), pg._org_key(b)
    finally:
        pg.close()
    vec, other = bytes(range(16)), bytes(16)
    s1, s2 = bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 32)
    try:
        with psycopg.connect(url, autocommit=True) as conn:  # the layout before, per-org copies
            conn.execute(f"SET search_path TO {schema}")
            conn.execute("DROP TABLE org_vectors, vectors")
            conn.execute(
                "CREATE TABLE features (org BIGINT NOT NULL, sha256 BYTEA NOT NULL, "
                "schema TEXT NOT NULL, vector BYTEA NOT NULL, PRIMARY KEY (org, sha256, schema))"
            )
            with conn.cursor() as c:
                c.executemany(
                    "INSERT INTO features VALUES (%s, %s, 'static-v1', %s)",
                    [(ka, s1, vec), (kb, s1, other), (ka, s2, vec), (kb, s2, vec)],
                )
        pg = PostgresStore(url, schema=schema)
        try:
            pairs = [(a, s1.hex()), (b, s1.hex()), (a, s2.hex()), (b, s2.hex())]
            assert pg.feature_vectors(pairs, "static-v1") == {
                (a, s1.hex()): vec, (b, s1.hex()): other, (a, s2.hex()): vec, (b, s2.hex()): vec,
            }  # fmt: skip
            got = pg.stats()
            assert (got.feature_rows, got.vector_rows) == (4, 2)
        finally:
            pg.close()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # noqa: S608 - hex name


def test_postgres_parity_policy_history_reads_as_of_and_publishes_after_commit(store: AnyStore):
    published: list[bytes] = []

    def ok(raw: bytes, now: dt.datetime) -> None:
        published.append(raw)

    def fail(raw: bytes, now: dt.datetime) -> None:
        raise OSError("repository is read-only")

    def versions() -> list[int]:
        return [PolicyDocumentModel.model_validate_json(b).version for b in published]

    assert store.current_policy() is None
    assert store.publish_pending_policy(ok, NOW) is None  # nothing recorded, nothing to do
    store.append_policy(_policy(1), actor="op", action="init", now=NOW, publish=ok)
    store.append_policy(
        _policy(2, "detect_only"), actor="op", action="mode", now=NOW + DAY, publish=ok
    )
    with pytest.raises(PolicyConflictError, match="version 2 is current") as conflict:
        store.append_policy(_policy(5), actor="op", action="x", now=NOW, publish=ok)
    assert conflict.value.current_version == 2
    assert versions() == [1, 2]

    # publication follows the COMMIT: a failed publish leaves v3 recorded, announced nowhere
    with pytest.raises(PublishError, match="v3 is recorded but could not be published"):
        store.append_policy(_policy(3), actor="op", action="x", now=NOW + 2 * DAY, publish=fail)
    current = store.current_policy()
    assert current is not None and current.version == 3 and current.changed_at == NOW + 2 * DAY
    assert versions() == [1, 2]
    assert store.publish_pending_policy(ok, NOW + 3 * DAY) == 3  # at start, say
    assert store.publish_pending_policy(ok, NOW + 3 * DAY) is None  # once
    assert versions() == [1, 2, 3]
    # a pending version that a newer one supersedes is never published: only the newest
    with pytest.raises(PublishError):
        store.append_policy(_policy(4), actor="op", action="x", now=NOW + 4 * DAY, publish=fail)
    store.append_policy(_policy(5), actor="op", action="x", now=NOW + 5 * DAY, publish=ok)
    assert versions() == [1, 2, 3, 5]

    assert store.policy_as_of(NOW - DAY) is None
    as_of = store.policy_as_of(NOW + DAY / 2)
    assert as_of is not None and as_of.version == 1 and as_of.document.default.mode == "enforce"
    assert [p.version for p in store.policy_history()] == [1, 2, 3, 4, 5]


def test_postgres_parity_labels_are_append_only_and_read_as_of(store: AnyStore):
    sha = "ab" * 32
    store.append_labels(
        [
            LabelChange(sha, LabelValue.BENIGN, LabelSource.CUSTOMER_REPORT, NOW),
            LabelChange(sha, LabelValue.MALICIOUS, LabelSource.ANALYST, NOW + 3 * DAY, "fam"),
            LabelChange("cd" * 32, LabelValue.BENIGN, LabelSource.ANALYST, NOW + DAY),
        ],
        now=NOW,
    )
    assert store.label_as_of(sha, NOW - DAY) is None
    first = store.label_as_of(sha, NOW + DAY)
    assert first is not None and first.label is LabelValue.BENIGN
    later = store.label_as_of(sha, NOW + 3 * DAY)
    assert later == LabelChange(
        sha, LabelValue.MALICIOUS, LabelSource.ANALYST, NOW + 3 * DAY, "fam", recorded_at=NOW
    )
    assert [c.sha256 for c in store.iter_labels()] == [sha, sha, "cd" * 32]
    assert len(list(store.iter_labels(until=NOW + DAY))) == 2
    # a label received later and dated back counts from its arrival, unless corrected
    store.append_labels(
        [LabelChange(sha, LabelValue.BENIGN, LabelSource.ANALYST, NOW + 4 * DAY)], now=NOW + 9 * DAY
    )
    assert store.label_as_of(sha, NOW + 5 * DAY) == later
    fixed = store.label_as_of(sha, NOW + 5 * DAY, corrected=True)
    assert fixed is not None and fixed.label is LabelValue.BENIGN
    assert fixed.recorded_at == NOW + 9 * DAY


def test_postgres_store_serves_the_http_api(tmp_path: Path, repo_dir: Path):
    """`backend serve --db postgresql://...` end to end: enroll, telemetry, aggregates."""
    s = open_store(_require_pg_url())
    from backend.store.postgres import PostgresStore

    assert isinstance(s, PostgresStore)
    admin = {"authorization": f"Bearer {s.create_admin_token(NOW)}"}
    port = free_port()
    app = create_app(cast(Store, s), repo_dir)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as client:
            r = client.post(
                f"{url}/v1/admin/orgs", json={"name": secrets.token_hex(4)}, headers=admin
            )
            assert r.status_code == 201, r.text
            org, enroll_token = r.json()["org_id"], r.json()["enroll_token"]
            r = client.post(f"{url}/v1/enroll", headers={"authorization": f"Bearer {enroll_token}"})
            assert r.status_code in (200, 201), r.text
            ep, token = r.json()["endpoint_id"], r.json()["token"]
            body = encode_batch([make_event(org, ep, "ab" * 32)] * 3, key="batch-0001")
            for _ in range(2):  # the retry counts once
                r = client.post(
                    f"{url}/v1/telemetry",
                    content=body,
                    headers={
                        "authorization": f"Bearer {token}",
                        "content-type": "application/msgpack",
                    },
                )
                assert r.status_code < 300, r.text
        rows = s.aggregates(org_id=org)
        assert [(r.count, r.distinct_endpoints) for r in rows] == [(3, 1)]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        s.close()
