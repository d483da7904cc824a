"""The backend's PostgreSQL store: every `backend.store.AggregateStore` operation over psycopg 3.

For a fleet past one machine (several backend processes, one database). Same tables, same
semantics, same return values as the SQLite store; `tests/backend/store/test_store_postgres.py`
runs one suite against both and holds them equal. What differs, and why:

- The aggregate upsert is `INSERT ... SELECT ... FROM unnest(...) ORDER BY <key> ON CONFLICT
  (day, org, sha256, model_version, shadow, verdict) DO UPDATE`: the batch's rows travel as
  one array per column, so a batch is one statement and one round trip per table
  (aggregates, vectors, per-org references, endpoint-days, the gate's rollup) instead of one
  per row, and the sort makes concurrent batches lock rows in one order (no deadlocks between
  backend processes). A statement may touch a row once, so repeated keys are summed first.
- The distinct-endpoint sketch merges inside the statement through `fw_merge(a, b)`, a
  `LANGUAGE sql` function created with the schema: the union of both sketches' 8-byte values,
  distinct, smallest `sketch.K` kept, concatenated in order. `bytea` compares as unsigned
  bytes, so that order is `backend.sketch`'s big-endian integer order and the result is
  byte-for-byte `sketch.merge(a, b)` (the parity tests check it). The common case, an
  endpoint the row already counts, is decided without the function, as on SQLite: sketches
  are sorted 8-byte values, so an incoming sketch found at an 8-aligned offset
  (`position(...) % 8 = 1`) is a subset of the row's. Merging in the database
  rather than in Python keeps the upsert one statement and correct when two processes touch
  the same row: `ON CONFLICT DO UPDATE` holds the row lock while the merge runs.
- Times are `timestamptz` (the session runs in UTC), so "as of" lookups compare instants.
- Org and policy caches are re-read on a miss, because another process may have written them.
- `schema` puts every table in one PostgreSQL schema (tests use a fresh one each).

- The HTTP route's batches commit in groups (`backend.store._group`): batches that arrive
  while one of this process's ingest transactions commits share the next one, in pipeline
  mode (two round trips a group). Every batch of an org upserts the same hot rows, and one
  transaction per batch made them queue on each other's row locks until each COMMIT.

One connection (autocommit, explicit transactions) behind a lock serves the other writers;
ingest transactions run on up to four connections of their own, side by side; token
lookups that miss the cache have a connection and lock of their own (a check-in never waits
for an ingest transaction); long reads (`iter_aggregates`, `iter_labels`) open their own
connection with a server-side cursor.
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from agent.decision import Verdict
from agent.policy import PolicyDocumentModel
from agent.telemetry import TelemetryBatch
from backend import sketch
from backend.errors import AuthError, ConflictError, NotFoundError, PublishError
from backend.ingest import AggregateRow, ArmDayRow, BatchAggregate, EvidenceRow, FeatureRow
from backend.store._base import (
    _FAULT_MARKER,
    _GROUP_FAULT_MARKER,
    _PUBLISH_FAULT_MARKER,
    AggregateColumns,
    ArmCountRow,
    EndpointCredentials,
    EnrollToken,
    IngestResult,
    OrgCreated,
    PolicyRecord,
    Principal,
    Publish,
    RolloutDecisionRow,
    RolloutLogRow,
    StoreStats,
    TokenInfo,
    TokenKind,
    _check_next_version,
    _check_usable,
    _merge_endpoint_days,
    _new_token_secret,
    _pause_for_fault_injection,
    _StoreCommon,
    hash_token,
    is_postgres_url,
    token_id_of,
)
from backend.store._group import GroupCommit
from backend.validation import check_org_name, check_token_limits

if TYPE_CHECKING:
    from backend.analysis.labels import LabelChange

__all__ = ["PostgresStore"]

_REVOKE_LOCK = 0x66_77_72_65_76_6B  # "fwrevk": serialises revocations (see `_revoke`)
_PUBLISH_LOCK = 0x66_77_70_75_62_6C  # "fwpubl": one policy publisher at a time (all replicas)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (
    id BIGSERIAL PRIMARY KEY, org_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, org BIGINT REFERENCES orgs(id),
    endpoint_id TEXT, created_at TIMESTAMPTZ NOT NULL);
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS token_id TEXT;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS max_uses BIGINT;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS revoked_at TIMESTAMPTZ;
UPDATE tokens SET token_id = 'tok_' || substr(token_hash, 1, 16) WHERE token_id IS NULL;
CREATE INDEX IF NOT EXISTS tokens_id ON tokens(token_id);
CREATE INDEX IF NOT EXISTS tokens_org ON tokens(org, kind);
CREATE TABLE IF NOT EXISTS token_revocations (
    seq BIGSERIAL PRIMARY KEY, token_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint_id TEXT PRIMARY KEY, org BIGINT NOT NULL REFERENCES orgs(id),
    enrolled_at TIMESTAMPTZ NOT NULL, last_seen_ms BIGINT,
    spool_dropped_events BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS policy_history (
    version BIGINT PRIMARY KEY, changed_at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, document TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS policy_history_time ON policy_history(changed_at);
CREATE TABLE IF NOT EXISTS policy_published (
    version BIGINT PRIMARY KEY, published_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    endpoint_id TEXT NOT NULL, key TEXT NOT NULL, received_ms BIGINT NOT NULL,
    events BIGINT NOT NULL, PRIMARY KEY (endpoint_id, key));
CREATE TABLE IF NOT EXISTS aggregates (
    day INTEGER NOT NULL, org BIGINT NOT NULL, sha256 BYTEA NOT NULL,
    model_version BIGINT NOT NULL, shadow SMALLINT NOT NULL, verdict TEXT NOT NULL,
    count BIGINT NOT NULL, endpoints BYTEA NOT NULL,
    first_seen_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (day, org, sha256, model_version, shadow, verdict));
CREATE TABLE IF NOT EXISTS vectors (digest BYTEA PRIMARY KEY, vector BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS org_vectors (
    org BIGINT NOT NULL, sha256 BYTEA NOT NULL, schema TEXT NOT NULL, digest BYTEA NOT NULL,
    PRIMARY KEY (org, sha256, schema));
CREATE TABLE IF NOT EXISTS endpoint_days (
    day INTEGER NOT NULL, endpoint_id TEXT NOT NULL, model_version BIGINT NOT NULL,
    org_id TEXT NOT NULL, events BIGINT NOT NULL, alerts BIGINT NOT NULL,
    self_test_failures BIGINT NOT NULL, model_errors BIGINT NOT NULL,
    breaker_trips BIGINT NOT NULL,
    PRIMARY KEY (day, endpoint_id, model_version));
CREATE TABLE IF NOT EXISTS arm_days (
    day INTEGER NOT NULL, model_version BIGINT NOT NULL, org_id TEXT NOT NULL,
    endpoint_days BIGINT NOT NULL, events BIGINT NOT NULL, alerts BIGINT NOT NULL,
    self_test_failures BIGINT NOT NULL, model_errors BIGINT NOT NULL,
    breaker_trips BIGINT NOT NULL,
    PRIMARY KEY (day, model_version, org_id));
CREATE TABLE IF NOT EXISTS rollouts (
    id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_decisions (
    id BIGSERIAL PRIMARY KEY, rollout_id BIGINT NOT NULL REFERENCES rollouts(id),
    at TIMESTAMPTZ NOT NULL, action TEXT NOT NULL, stage_index INTEGER NOT NULL,
    percent DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, figures TEXT NOT NULL,
    policy_version BIGINT);
CREATE OR REPLACE FUNCTION fw_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'append-only'; END $$;
DROP TRIGGER IF EXISTS rollout_decisions_append_only ON rollout_decisions;
CREATE TRIGGER rollout_decisions_append_only BEFORE UPDATE OR DELETE ON rollout_decisions
    FOR EACH ROW EXECUTE FUNCTION fw_append_only();
CREATE TABLE IF NOT EXISTS labels (
    id BIGSERIAL PRIMARY KEY, sha256 BYTEA NOT NULL, label TEXT NOT NULL,
    source TEXT NOT NULL, family TEXT NOT NULL DEFAULT '', labelled_at TIMESTAMPTZ NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL);
CREATE INDEX IF NOT EXISTS labels_sha_time ON labels(sha256, labelled_at);
CREATE OR REPLACE FUNCTION fw_merge(a BYTEA, b BYTEA) RETURNS BYTEA
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(v, ''::bytea ORDER BY v), ''::bytea) FROM (
        SELECT DISTINCT substring(s FROM i FOR 8) AS v
        FROM (SELECT a UNION ALL SELECT b) AS t(s), generate_series(1, length(s), 8) AS i
        ORDER BY v LIMIT __K__) AS kept
$$;
""".replace("__K__", str(sketch.K))

# Each write below is one statement over the batch's rows passed as arrays (`unnest`): one
# round trip, one plan, no per-row Python in the driver. `ORDER BY` the key makes every writer
# take its row locks in one order (no deadlocks between backend processes); the caller passes
# keys that are unique within one call, as `ON CONFLICT DO UPDATE` requires.
_UPSERT = """
INSERT INTO aggregates AS a (day, org, sha256, model_version, shadow, verdict, count,
                             endpoints, first_seen_ms, last_seen_ms)
SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::bytea[], %s::bigint[], %s::smallint[],
                     %s::text[], %s::bigint[], %s::bytea[], %s::bigint[], %s::bigint[])
ORDER BY 1, 2, 3, 4, 5, 6
ON CONFLICT (day, org, sha256, model_version, shadow, verdict) DO UPDATE SET
    count = a.count + excluded.count,
    endpoints = CASE WHEN position(excluded.endpoints IN a.endpoints) %% 8 = 1 THEN a.endpoints
                     ELSE fw_merge(a.endpoints, excluded.endpoints) END,
    first_seen_ms = least(a.first_seen_ms, excluded.first_seen_ms),
    last_seen_ms = greatest(a.last_seen_ms, excluded.last_seen_ms)
"""
_ADD_VECTORS = """
INSERT INTO vectors (digest, vector) SELECT * FROM unnest(%s::bytea[], %s::bytea[]) ORDER BY 1
ON CONFLICT DO NOTHING
"""
_ADD_ORG_VECTORS = """
INSERT INTO org_vectors (org, sha256, schema, digest)
SELECT * FROM unnest(%s::bigint[], %s::bytea[], %s::text[], %s::bytea[]) ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
"""
# endpoint-day rows summed into the ledger; `inserted` tells whether a key is new (one more
# endpoint-day for the rollup) under the row lock, so concurrent writers count it once
_ADD_ENDPOINT_DAYS = """
INSERT INTO endpoint_days AS e
SELECT * FROM unnest(%s::integer[], %s::text[], %s::bigint[], %s::text[], %s::bigint[],
                     %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
ORDER BY 1, 2, 3
ON CONFLICT (day, endpoint_id, model_version) DO UPDATE SET
    events = e.events + excluded.events, alerts = e.alerts + excluded.alerts,
    self_test_failures = e.self_test_failures + excluded.self_test_failures,
    model_errors = e.model_errors + excluded.model_errors,
    breaker_trips = e.breaker_trips + excluded.breaker_trips
RETURNING day, endpoint_id, model_version, (xmax = 0) AS inserted, org_id
"""
# an arm-day rollup row meeting a stored one adds to each of its sums
_ARM_SUM_SET = """
ON CONFLICT (day, model_version, org_id) DO UPDATE SET
    endpoint_days = a.endpoint_days + excluded.endpoint_days,
    events = a.events + excluded.events, alerts = a.alerts + excluded.alerts,
    self_test_failures = a.self_test_failures + excluded.self_test_failures,
    model_errors = a.model_errors + excluded.model_errors,
    breaker_trips = a.breaker_trips + excluded.breaker_trips
"""
# The same ledger write with its rollup increment in one statement (no round trip between
# them, so a pipelined transaction never waits): each key's `inserted` joins its input row.
_ADD_EVIDENCE = (
    """
WITH e AS (
"""
    + _ADD_ENDPOINT_DAYS.strip().replace("\n", "\n    ")
    + """
)
INSERT INTO arm_days AS a
SELECT day, model_version, e.org_id, sum(e.inserted::integer), sum(u.events), sum(u.alerts),
       sum(u.self_test_failures), sum(u.model_errors), sum(u.breaker_trips)
FROM e JOIN unnest(%s::integer[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],
                   %s::bigint[], %s::bigint[], %s::bigint[])
    AS u(day, endpoint_id, model_version, events, alerts, self_test_failures, model_errors,
         breaker_trips) USING (day, endpoint_id, model_version)
GROUP BY day, model_version, e.org_id
ORDER BY 1, 2, 3"""
    + _ARM_SUM_SET
)
_ADD_ARM_ROWS = (
    """
INSERT INTO arm_days AS a
SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[],
                     %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
ORDER BY 1, 2, 3"""
    + _ARM_SUM_SET
)

# The group path's ledger: every batch of the group in one statement, in key order (the lock
# order); RETURNING names the keys that were new, and only their rows are written after it.
_ADD_BATCHES = """
INSERT INTO batches (endpoint_id, key, received_ms, events)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) ORDER BY 1, 2
ON CONFLICT DO NOTHING RETURNING endpoint_id, key
"""
# last seen of the group's endpoints, their rows locked in key order first (no deadlock with
# another replica's group naming the same endpoints)
_TOUCH_ENDPOINTS = """
WITH locked AS (SELECT endpoint_id FROM endpoints WHERE endpoint_id = ANY(%s::text[])
                ORDER BY endpoint_id FOR UPDATE)
UPDATE endpoints AS e SET last_seen_ms = u.seen,
    spool_dropped_events = greatest(e.spool_dropped_events, u.dropped)
FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS u(endpoint_id, seen, dropped)
WHERE e.endpoint_id = u.endpoint_id AND (SELECT count(*) FROM locked) >= 0
"""
# Batches queued while a group commits join the next group; past this many they wait for
# the one after (bounds one transaction's size and its locks).
_GROUP_MAX_BATCHES = 128

# concurrent ingest transactions (each on its own connection); every write sorts its rows by
# the table's key and the tables come in one order, so they wait on each other, never deadlock
_INGEST_CONNECTIONS = 4
_hex = operator.methodcaller("hex")  # bytes, bytearray and memoryview alike

_AGG_COLUMNS = (
    "SELECT day, org, sha256, model_version, shadow, verdict, count, endpoints, "
    "first_seen_ms, last_seen_ms FROM aggregates"
)
_KEY_ORDER = " ORDER BY day, org, sha256, model_version, shadow, verdict"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SCHEMA_LOCK = 0x66770A  # advisory lock id: one process creates the tables at a time


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return t.astimezone(dt.UTC)


def _text_element(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _array_literal(column: Sequence[Any], kind: str) -> str:
    """One column as a PostgreSQL array literal: `i` integers, `b` bytea, `t` text.

    Built with C-level joins: psycopg's binary list dumper packs element by element in
    Python (about 2.7 ms for a 600-row batch's ten columns; this takes about 0.7 ms).
    Every text element is quoted (commas, braces, spaces and the word NULL stay data) and
    backslashes and quotes in it are escaped.
    """
    if kind == "i":
        return "{" + ",".join(map(str, map(int, column))) + "}"
    if not column:
        return "{}"
    if kind == "b":
        return '{"\\\\x' + '","\\\\x'.join(map(_hex, column)) + '"}'
    if any('"' in v or "\\" in v for v in set(column)):
        column = [_text_element(v) for v in column]
    return '{"' + '","'.join(column) + '"}'


def _arrays(rows: Sequence[Sequence[Any]], kinds: str) -> list[str]:
    """`rows` as one array literal per column (`kinds` names each column's type, see above)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in kinds]
    return [_array_literal(c, k) for c, k in zip(columns, kinds, strict=True)]


def _coalesce_rows(params: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Aggregate rows (table column order) with each key once: repeats summed and merged.

    What applying the repeats one after the other would leave, so that one set-based upsert
    (which may touch a row only once) writes what a row-by-row one did.
    """
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for p in params:
        k = tuple(p[:6])
        was = out.get(k)
        if was is None:
            out[k] = tuple(p)
        else:
            ends = was[7] if was[7] == p[7] else sketch.merge(was[7], p[7])
            out[k] = (*k, was[6] + p[6], ends, min(was[8], p[8]), max(was[9], p[9]))
    return list(out.values())


def _sum_arm_rows(rows: Iterable[ArmDayRow]) -> list[ArmDayRow]:
    """Rollup increments with each (day, model, org) once, their counts summed."""
    out: dict[tuple[int, int, str], list[int]] = {}
    for r in rows:
        cell = out.setdefault((r[0], r[1], r[2]), [0] * 6)
        for i in range(6):
            cell[i] += int(r[3 + i])
    return [(d, v, o, *c) for (d, v, o), c in out.items()]  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class _Pending:
    """One acknowledged-on-commit telemetry batch, ready for a group's transaction."""

    endpoint_id: str
    key: str
    events: int
    dropped_events: int
    params: list[tuple[Any, ...]]
    feats: list[tuple[int, bytes, str, bytes]]
    evidence: Sequence[EvidenceRow]
    now: dt.datetime


class PostgresStore(_StoreCommon):
    """The backend's state in one PostgreSQL database (optionally one schema of it)."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        if not is_postgres_url(url):
            raise ValueError("url must start with postgresql://")
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError("schema must be a lower-case identifier")
        self.url = url
        self.schema = schema
        self._conn = self._connect()
        self._lock = threading.Lock()
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if schema is not None:
                self._conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
            # vectors from before per-org vectors had no owner: set aside, never read
            self._conn.execute(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name = 'features') AND NOT "
                "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = 'features' AND column_name = 'org') THEN "
                "ALTER TABLE features RENAME TO features_unowned; END IF; END $$"
            )
            self._conn.execute(_SCHEMA)
            # per-org copies from before vectors were stored once: each org keeps its vector
            self._conn.execute(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name = 'features') THEN "
                "INSERT INTO vectors (digest, vector) SELECT sha256(vector), vector "
                "FROM features ON CONFLICT DO NOTHING; "
                "INSERT INTO org_vectors (org, sha256, schema, digest) "
                "SELECT org, sha256, schema, sha256(vector) FROM features ON CONFLICT DO NOTHING; "
                "DROP TABLE features; END IF; END $$"
            )
        self._orgs: dict[str, int] = {}
        self._org_names: dict[int, str] = {}
        self._principals: dict[str, Principal] = {}
        self._reload_orgs(self._conn)
        # Token lookups that miss the cache read through a connection and lock of their own,
        # so a check-in never waits for the ingest transaction holding the writer's.
        self._auth_conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._auth_lock = threading.Lock()
        # Ingest transactions take connections of their own (up to `_INGEST_CONNECTIONS`), so
        # batches commit side by side: PostgreSQL overlaps one's WAL flush with another's
        # work, where one connection made each batch wait for the previous one's flush.
        self._ingest_idle: queue.LifoQueue[psycopg.Connection[tuple[Any, ...]]] = queue.LifoQueue()
        self._ingest_opened = 0
        self._ingest_lock = threading.Lock()
        # The HTTP route's batches commit in groups (backend.store._group): a group of one is
        # `_apply` itself; two or more share one transaction (`_apply_group`).
        self._group: GroupCommit[_Pending, IngestResult] = GroupCommit(
            self._apply_group, self._apply_pending, max_items=_GROUP_MAX_BATCHES
        )

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute("SET TIME ZONE 'UTC'")
        if self.schema is not None:
            conn.execute(
                sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema))
            )
        return conn

    def _reload_orgs(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        for key, org_id in conn.execute("SELECT id, org_id FROM orgs"):
            self._orgs[org_id] = int(key)
            self._org_names[int(key)] = org_id

    def _org_name(self, key: int) -> str:
        name = self._org_names.get(key)
        if name is None:
            with self._lock:
                self._reload_orgs(self._conn)
            name = self._org_names[key]
        return name

    def _reader(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The token-lookup connection (opened on first use); call with `_auth_lock` held."""
        if self._auth_conn is None or self._auth_conn.closed:
            self._auth_conn = self._connect()
        return self._auth_conn

    def _ingest_conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        """An idle ingest connection, a new one while fewer than the cap are open, else wait."""
        while True:
            try:
                conn = self._ingest_idle.get_nowait()
            except queue.Empty:
                with self._ingest_lock:
                    if self._ingest_opened < _INGEST_CONNECTIONS:
                        self._ingest_opened += 1
                        try:
                            return self._connect()
                        except BaseException:
                            self._ingest_opened -= 1
                            raise
                conn = self._ingest_idle.get()
            if not conn.closed:
                return conn
            with self._ingest_lock:  # lost (server restart): open another in its place
                self._ingest_opened -= 1

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            with self._auth_lock:
                if self._auth_conn is not None:
                    self._auth_conn.close()
            while not self._ingest_idle.empty():
                self._ingest_idle.get_nowait().close()
            self._conn.close()

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints its write-ahead log on its own schedule."""

    # --- orgs and tokens ---------------------------------------------------------------

    def _new_token(
        self,
        kind: TokenKind,
        org: int | None,
        endpoint_id: str | None,
        now: dt.datetime,
        *,
        expires_at: dt.datetime | None = None,
        max_uses: int | None = None,
    ) -> str:
        token = _new_token_secret(kind)
        digest = hash_token(token)
        self._conn.execute(
            "INSERT INTO tokens (token_hash, kind, org, endpoint_id, created_at, token_id, "
            "expires_at, max_uses, uses) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0)",
            (
                digest, kind.value, org, endpoint_id, _utc(now), token_id_of(digest),
                _utc(expires_at) if expires_at else None, max_uses,
            ),
        )  # fmt: skip
        return token

    def create_org(self, name: str, now: dt.datetime) -> OrgCreated:
        """Create an organization with a random pseudonymous id and an enroll token.

        Raises:
            BatchInvalidError: the name is blank, too long or holds control characters.
            ConflictError: the name is taken.
        """
        check_org_name(name)
        with self._lock:
            org_id = "org_" + secrets.token_hex(8)
            try:
                with self._conn.transaction():
                    row = self._conn.execute(
                        "INSERT INTO orgs (org_id, name, created_at) VALUES (%s, %s, %s) "
                        "RETURNING id",
                        (org_id, name, _utc(now)),
                    ).fetchone()
                    assert row is not None
                    key = int(row[0])
                    token = self._new_token(TokenKind.ENROLL, key, None, now)
            except psycopg.errors.UniqueViolation:
                raise ConflictError(f"an organization named {name!r} exists") from None
            self._orgs[org_id] = key
            self._org_names[key] = org_id
            return OrgCreated(org_id, name, token)

    def org_ids(self) -> list[str]:
        """Every organization's pseudonymous id, in creation order."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT org_id FROM orgs ORDER BY id")]

    def has_org(self, org_id: str) -> bool:
        """True when `org_id` names an organization."""
        return self._org_lookup(org_id) is not None

    def _org_lookup(self, org_id: str) -> int | None:
        key = self._orgs.get(org_id)
        if key is None:
            with self._lock:
                self._reload_orgs(self._conn)
            key = self._orgs.get(org_id)
        return key

    def _org_key(self, org_id: str) -> int:
        key = self._org_lookup(org_id)
        if key is None:
            raise NotFoundError(f"no organization {org_id!r}")
        return key

    def create_admin_token(self, now: dt.datetime) -> str:
        """A new fleet-wide operator token (shown once)."""
        with self._lock:
            return self._new_token(TokenKind.ADMIN, None, None, now)

    def authenticate(self, token: str, now: dt.datetime | None = None) -> Principal:
        """Who `token` acts as (see `backend.store.sqlite.Store.authenticate`).

        Raises:
            AuthError: the token is unknown, revoked, expired or used up.
        """
        digest = hash_token(token)
        found = self._principals.get(digest)
        if found is not None:
            return found
        forgets_seen = self._forgets
        with self._auth_lock:
            reader = self._reader()
            row = reader.execute(
                "SELECT kind, org, endpoint_id, revoked_at, expires_at, max_uses, uses "
                "FROM tokens WHERE token_hash = %s",
                (digest,),
            ).fetchone()
            if row is not None and row[1] is not None and int(row[1]) not in self._org_names:
                self._reload_orgs(reader)  # an org another process created
        if row is None:
            raise AuthError("unknown token")
        _check_usable(row[3] is not None, row[4], row[5], int(row[6]), now)
        org = self._org_name(int(row[1])) if row[1] is not None else None
        principal = Principal(TokenKind(row[0]), org, row[2])
        self._remember(digest, principal, forgets_seen)
        return principal

    def enroll(
        self, org_id: str, now: dt.datetime, *, enroll_token: str | None = None
    ) -> EndpointCredentials:
        """Register a new endpoint in `org_id`, counting `enroll_token`'s use atomically.

        Raises:
            AuthError: `enroll_token` cannot enroll (any more).
            NotFoundError: no such org.
        """
        key = self._org_key(org_id)
        endpoint_id = "ep_" + secrets.token_hex(12)
        with self._lock, self._conn.transaction():
            if enroll_token is not None:
                used = self._conn.execute(
                    "UPDATE tokens SET uses = uses + 1 WHERE token_hash = %s AND kind = %s "
                    "AND org = %s AND revoked_at IS NULL AND (expires_at IS NULL OR "
                    "expires_at > %s) AND (max_uses IS NULL OR uses < max_uses)",
                    (hash_token(enroll_token), TokenKind.ENROLL.value, key, _utc(now)),
                ).rowcount
                if used != 1:
                    raise AuthError("enroll token is revoked, expired or used up")
            self._conn.execute(
                "INSERT INTO endpoints (endpoint_id, org, enrolled_at) VALUES (%s, %s, %s)",
                (endpoint_id, key, _utc(now)),
            )
            token = self._new_token(TokenKind.ENDPOINT, key, endpoint_id, now)
        return EndpointCredentials(org_id, endpoint_id, token)

    def create_enroll_token(
        self,
        org_id: str,
        now: dt.datetime,
        *,
        expires_at: dt.datetime | None = None,
        max_uses: int | None = None,
        rotate: bool = False,
    ) -> EnrollToken:
        """A new enroll token for `org_id` (shown once); `rotate` revokes the org's others.

        Raises:
            BatchInvalidError: `max_uses` below 1 or `expires_at` not after `now`.
            NotFoundError: no such org.
        """
        check_token_limits(expires_at, max_uses, now)
        key = self._org_key(org_id)
        with self._lock, self._conn.transaction():
            if rotate:
                self._conn.execute(
                    "UPDATE tokens SET revoked_at = %s WHERE org = %s AND kind = %s "
                    "AND revoked_at IS NULL",
                    (_utc(now), key, TokenKind.ENROLL.value),
                )
            token = self._new_token(
                TokenKind.ENROLL, key, None, now, expires_at=expires_at, max_uses=max_uses
            )
        return EnrollToken(org_id, token_id_of(hash_token(token)), token, expires_at, max_uses)

    def tokens(self, org_id: str) -> list[TokenInfo]:
        """The org's enroll and endpoint tokens (never their secrets), oldest first.

        Raises:
            NotFoundError: no such org.
        """
        key = self._org_key(org_id)
        with self._lock:
            rows = self._conn.execute(
                "SELECT token_id, kind, endpoint_id, created_at, expires_at, max_uses, uses, "
                "revoked_at FROM tokens WHERE org = %s ORDER BY created_at, token_id",
                (key,),
            ).fetchall()
        return [
            TokenInfo(
                r[0], TokenKind(r[1]), org_id, r[2], r[3].astimezone(dt.UTC),
                r[4].astimezone(dt.UTC) if r[4] else None, r[5], int(r[6]),
                r[7].astimezone(dt.UTC) if r[7] else None,
            )
            for r in rows
        ]  # fmt: skip

    def revoke_token(self, token_id: str, now: dt.datetime) -> int:
        """Revoke a token by its public id; refused at once (in this process). Returns 1.

        Raises:
            NotFoundError: no token with that id, or it is already revoked.
        """
        return self._revoke("token_id", token_id, now, f"no active token {token_id!r}")

    def revoke_endpoint(self, endpoint_id: str, now: dt.datetime) -> int:
        """Revoke the tokens of one endpoint; its next request gets 401. Returns how many.

        Raises:
            NotFoundError: the endpoint has no active token.
        """
        return self._revoke(
            "endpoint_id", endpoint_id, now, f"no active token for endpoint {endpoint_id!r}"
        )

    def _revoke(self, column: str, value: str, now: dt.datetime, missing: str) -> int:
        query = sql.SQL(
            "UPDATE tokens SET revoked_at = %s WHERE {} = %s AND revoked_at IS NULL "
            "RETURNING token_hash"
        ).format(sql.Identifier(column))
        with self._lock, self._conn.transaction():
            # one revoker at a time, so the log's seq order is its commit order: a replica
            # reading `seq > last` never skips a row that commits late (backend.server.replica)
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REVOKE_LOCK,))
            hashes = [r[0] for r in self._conn.execute(query, (_utc(now), value))]
            with self._conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO token_revocations (token_hash) VALUES (%s)",
                    [(h,) for h in hashes],
                )
        if not hashes:
            raise NotFoundError(missing)
        self.forget_tokens(hashes)
        return len(hashes)

    # --- telemetry -----------------------------------------------------------------------

    def ingest(
        self,
        batch: TelemetryBatch,
        rows: list[AggregateRow],
        features: list[FeatureRow],
        now: dt.datetime,
    ) -> IngestResult:
        """Apply one batch's rows in one transaction, once per idempotency key.

        Raises:
            NotFoundError: the batch names an org the store does not know.
        """
        org = self._org_key(batch.org_id)
        params = [
            (
                r.day,
                org,
                bytes.fromhex(r.sha256),
                r.model_version,
                int(r.shadow),
                r.verdict.value,
                r.count,
                r.endpoints,
                r.first_seen_ms,
                r.last_seen_ms,
            )
            for r in rows
        ]
        feats = [(org, bytes.fromhex(f.sha256), f.schema, f.vector) for f in features]
        return self._apply(
            batch.endpoint_id,
            batch.key,
            len(batch.events),
            batch.dropped_events,
            _coalesce_rows(params),
            feats,
            now,
        )

    def ingest_columns(
        self,
        key: str,
        endpoint_id: str,
        *,
        day: Sequence[int],
        org_id: Sequence[str],
        sha256: Sequence[bytes],
        model_version: Sequence[int],
        verdict: Sequence[str],
        count: Sequence[int],
        endpoints: Sequence[bytes],
        first_seen_ms: Sequence[int],
        last_seen_ms: Sequence[int],
        features: Sequence[tuple[str, bytes, str, bytes]],
        now: dt.datetime,
        arm_days: Sequence[ArmDayRow] = (),
    ) -> IngestResult:
        """Apply many orgs' aggregate rows, given as columns, in one transaction (bulk path).

        Raises:
            NotFoundError: a row names an org the store does not know.
            ValueError: the columns differ in length.
        """
        n = len(day)
        cols = (org_id, sha256, model_version, verdict, count, endpoints)
        if any(len(c) != n for c in (*cols, first_seen_ms, last_seen_ms)):
            raise ValueError("ingest_columns: columns of different lengths")
        orgs = {o: self._org_key(o) for o in set(org_id)}
        params = _coalesce_rows(
            zip(
                day,
                [orgs[o] for o in org_id],
                sha256,
                model_version,
                [0] * n,
                verdict,
                count,
                endpoints,
                first_seen_ms,
                last_seen_ms,
                strict=True,
            )
        )
        feats = [(self._org_key(o), sha, schema, vec) for o, sha, schema, vec in features]
        return self._apply(endpoint_id, key, 0, 0, params, feats, now, rows=n, arm_days=arm_days)

    def ingest_aggregate(
        self,
        batch: BatchAggregate,
        now: dt.datetime,
        *,
        evidence: Sequence[EvidenceRow] = (),
    ) -> IngestResult:
        """Apply one folded batch once per idempotency key; return once it is committed.

        Batches arriving while another transaction of this process commits share the next
        transaction (group commit, `backend.store._group`): the same rows as one transaction
        per batch, a hot row written once per group instead of once per batch. A batch whose
        group failed is applied alone, so its error is its own.

        Raises:
            NotFoundError: the batch names an org the store does not know (before it queues).
        """
        org, ep = self._org_key(batch.org_id), batch.endpoints
        params = [(d, org, s, v, sh, vd, c, ep, f, la) for d, s, v, sh, vd, c, f, la in batch.rows]
        return self._group.submit(
            _Pending(
                batch.endpoint_id,
                batch.key,
                batch.events,
                batch.dropped_events,
                params,
                [(org, sha, schema, vec) for sha, schema, vec in batch.features],
                evidence,
                now,
            )
        )

    def ingest_waiting(self) -> int:
        """Telemetry batches queued for the next group commit."""
        return self._group.waiting

    def _apply_pending(self, p: _Pending) -> IngestResult:
        return self._apply(
            p.endpoint_id, p.key, p.events, p.dropped_events, p.params, p.feats, p.now,
            endpoint_days=p.evidence,
        )  # fmt: skip

    def _apply_group(self, group: Sequence[_Pending]) -> list[IngestResult]:
        """Two or more batches in one transaction: what applying each in turn would leave.

        The ledger takes every key in one statement and says which were new; the rows of the
        new batches are merged (`_coalesce_rows`, `_merge_endpoint_days`) and written as one
        batch's would be, each table in key order. A key twice in one group counts once.
        """
        first: dict[tuple[str, str], int] = {}
        for i, p in enumerate(group):
            first.setdefault((p.endpoint_id, p.key), i)
        ledger = sorted(
            (group[i].endpoint_id, group[i].key, _ms(group[i].now), group[i].events)
            for i in first.values()
        )
        conn = self._ingest_conn()
        try:
            # pipeline mode: BEGIN and the ledger go out together, then every other write and
            # the COMMIT together: two round trips a group, whatever it holds
            with conn.pipeline() as pipe, conn.transaction(), conn.cursor() as c:
                c.execute(_ADD_BATCHES, _arrays(ledger, "ttii"))
                inserted = {(str(r[0]), str(r[1])) for r in c.fetchall()}
                new = [
                    i
                    for i, p in enumerate(group)
                    if first[p.endpoint_id, p.key] == i and (p.endpoint_id, p.key) in inserted
                ]
                refs: list[tuple[int, bytes, str, bytes]] = []
                if new:
                    picked = [group[i] for i in new]
                    marker = _FAULT_MARKER or (_GROUP_FAULT_MARKER if len(picked) > 1 else "")
                    refs = self._write_rows(
                        c,
                        _coalesce_rows(itertools.chain.from_iterable(p.params for p in picked)),
                        list(itertools.chain.from_iterable(p.feats for p in picked)),
                        list(itertools.chain.from_iterable(p.evidence for p in picked)),
                        (),
                        fault=(marker, " ".join(sorted(p.key for p in picked))),
                        sync=pipe.sync,
                    )
                    seen: dict[str, tuple[int, int]] = {}
                    for p in picked:
                        was = seen.get(p.endpoint_id, (0, 0))
                        seen[p.endpoint_id] = (
                            max(was[0], _ms(p.now)),
                            max(was[1], p.dropped_events),
                        )
                    touched = sorted((e, *v) for e, v in seen.items())
                    ids = _arrays(touched, "tii")
                    c.execute(_TOUCH_ENDPOINTS, [ids[0], *ids])
        finally:
            self._ingest_idle.put(conn)
        self._vectors_stored(refs)  # committed
        fresh = set(new)
        return [
            IngestResult(False, p.events, len(p.params))
            if i in fresh
            else IngestResult(True, p.events, 0)
            for i, p in enumerate(group)
        ]

    def _write_rows(
        self,
        c: psycopg.Cursor[tuple[Any, ...]],
        params: Sequence[tuple[Any, ...]],
        feats: Sequence[tuple[int, bytes, str, bytes]],
        endpoint_days: Sequence[EvidenceRow],
        arm_days: Sequence[ArmDayRow],
        *,
        fault: tuple[str, str] = (_FAULT_MARKER, ""),
        sync: Callable[[], None] | None = None,
    ) -> list[tuple[int, bytes, str, bytes]]:
        """Aggregates, vectors and evidence of one transaction (each key once in `params`).

        Reads no result back, so in pipeline mode the statements go out together. `sync`
        (the pipeline's) runs before a fault-injection pause. Returns the vector references
        written (for `_vectors_stored` after the COMMIT).
        """
        if params:
            c.execute(_UPSERT, _arrays(params, "iibiitibii"))
        distinct, refs = self._vectors_to_write(feats)
        if distinct:
            c.execute(_ADD_VECTORS, _arrays(distinct, "bb"))
        if refs:
            c.execute(_ADD_ORG_VECTORS, _arrays(refs, "ibtb"))
        if fault[0]:
            if sync is not None:  # the writes so far executed, not just queued
                sync()
            _pause_for_fault_injection(*fault)
        merged = _merge_endpoint_days(endpoint_days)
        if merged and not arm_days:  # the route's case: one statement, nothing read back
            ledger = _arrays(merged, "ititiiiii")
            c.execute(_ADD_EVIDENCE, [*ledger, *ledger[:3], *ledger[4:]])
            return refs
        # rollup rows of their own too: summed with the ledger's into one statement, so the
        # rollup's rows are locked once, in key order, as every other writer locks them
        adds: list[ArmDayRow] = list(arm_days)
        if merged:
            c.execute(_ADD_ENDPOINT_DAYS, _arrays(merged, "ititiiiii"))
            found = {(r[0], r[1], r[2]): (r[3], r[4]) for r in c.fetchall()}
            for r in merged:
                inserted, org = found[(r[0], r[1], r[2])]
                adds.append((r[0], r[2], str(org), int(bool(inserted)), *r[4:]))
        if adds:
            c.execute(_ADD_ARM_ROWS, _arrays(_sum_arm_rows(adds), "iitiiiiii"))
        return refs

    def _apply(
        self,
        endpoint_id: str,
        key: str,
        events: int,
        dropped_events: int,
        params: Sequence[tuple[Any, ...]],
        feats: Sequence[tuple[int, bytes, str, bytes]],
        now: dt.datetime,
        *,
        rows: int | None = None,
        endpoint_days: Sequence[EvidenceRow] = (),
        arm_days: Sequence[ArmDayRow] = (),
    ) -> IngestResult:
        """The one ingest transaction: ledger, aggregates, vectors, evidence, last seen.

        Each table takes one statement over all of the batch's rows (`unnest` of one array
        literal per column), whatever the number of rows: `params` must hold each aggregate
        key once.
        """
        now_ms = _ms(now)
        conn = self._ingest_conn()
        written = False
        try:
            with conn.transaction() as tx:
                cur = conn.execute(
                    "INSERT INTO batches (endpoint_id, key, received_ms, events) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (endpoint_id, key, now_ms, events),
                )
                if cur.rowcount == 0:
                    raise psycopg.Rollback(tx)
                with conn.cursor() as c:
                    refs = self._write_rows(c, params, feats, endpoint_days, arm_days)
                conn.execute(
                    "UPDATE endpoints SET last_seen_ms = %s, "
                    "spool_dropped_events = greatest(spool_dropped_events, %s) "
                    "WHERE endpoint_id = %s",
                    (now_ms, dropped_events, endpoint_id),
                )
                written = True
        finally:
            self._ingest_idle.put(conn)
        if written:  # committed
            self._vectors_stored(refs)
            return IngestResult(False, events, len(params) if rows is None else rows)
        return IngestResult(True, events, 0)

    def _agg_row(self, r: Sequence[Any]) -> AggregateRow:
        return AggregateRow(
            int(r[0]),
            self._org_name(int(r[1])),
            bytes(r[2]).hex(),
            int(r[3]),
            bool(r[4]),
            Verdict(r[5]),
            int(r[6]),
            bytes(r[7]),
            int(r[8]),
            int(r[9]),
        )

    def aggregates(
        self, *, org_id: str | None = None, day: int | None = None
    ) -> list[AggregateRow]:
        """Aggregate rows, optionally for one org and/or one day, in key order."""
        where: list[str] = []
        args: list[object] = []
        if day is not None:
            where.append("day = %s")
            args.append(day)
        if org_id is not None:
            key = self._org_lookup(org_id)
            if key is None:
                return []
            where.append("org = %s")
            args.append(key)
        query = _AGG_COLUMNS + (" WHERE " + " AND ".join(where) if where else "") + _KEY_ORDER
        with self._lock:
            found = self._conn.execute(query.encode(), args).fetchall()
        return [self._agg_row(r) for r in found]

    def feature_vector(self, org_id: str, sha256: str, schema: str) -> bytes | None:
        """The feature vector `org_id`'s endpoints reported for a sample, or None."""
        org = self._org_lookup(org_id)
        if org is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT v.vector FROM org_vectors o JOIN vectors v ON v.digest = o.digest "
                "WHERE o.org = %s AND o.sha256 = %s AND o.schema = %s",
                (org, bytes.fromhex(sha256), schema),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def endpoint_dropped_events(self, endpoint_id: str) -> int:
        """How many events `endpoint_id` reported its spool dropped."""
        with self._lock:
            row = self._conn.execute(
                "SELECT spool_dropped_events FROM endpoints WHERE endpoint_id = %s",
                (endpoint_id,),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> StoreStats:
        """Table sizes (with indexes and TOAST) and row counts."""
        with self._lock:
            row = self._conn.execute(
                "SELECT (SELECT count(*) FROM aggregates), (SELECT count(*) FROM org_vectors), "
                "(SELECT count(*) FROM batches), (SELECT coalesce(sum(events), 0) FROM batches), "
                "(SELECT count(*) FROM vectors), "
                "(SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                " JOIN pg_namespace n ON n.oid = c.relnamespace "
                " WHERE c.relkind = 'r' AND n.nspname = current_schema())"
            ).fetchone()
        assert row is not None
        return StoreStats(
            int(row[5] or 0), int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])
        )

    # --- policy history --------------------------------------------------------------------

    def _policy_where(self, clause: str, args: tuple[object, ...]) -> PolicyRecord | None:
        row = self._conn.execute(
            # `clause` is one of three literals in this module; values are bound
            (
                "SELECT version, changed_at, actor, action, document FROM policy_history "  # noqa: S608
                f"WHERE {clause} ORDER BY version DESC LIMIT 1"
            ).encode(),
            args,
        ).fetchone()
        if row is None:
            return None
        return PolicyRecord(
            int(row[0]),
            row[1].astimezone(dt.UTC),
            row[2],
            row[3],
            PolicyDocumentModel.model_validate_json(row[4]),
        )

    def current_policy(self) -> PolicyRecord | None:
        """The latest policy (read each time: another process may have appended one)."""
        with self._lock:
            return self._policy_where("TRUE", ())

    def policy_as_of(self, when: dt.datetime) -> PolicyRecord | None:
        """The policy in force at `when` (the latest change at or before it), or None."""
        with self._lock:
            return self._policy_where("changed_at <= %s", (_utc(when),))

    def policy_history(self) -> list[PolicyRecord]:
        """Every policy change, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT version, changed_at, actor, action, document FROM policy_history "
                "ORDER BY version"
            ).fetchall()
        return [
            PolicyRecord(
                int(r[0]),
                r[1].astimezone(dt.UTC),
                r[2],
                r[3],
                PolicyDocumentModel.model_validate_json(r[4]),
            )
            for r in rows
        ]

    def append_policy(
        self,
        document: PolicyDocumentModel,
        *,
        actor: str,
        action: str,
        now: dt.datetime,
        publish: Publish,
    ) -> PolicyRecord:
        """Record `document` as the next policy version, commit it, then publish it.

        Publication follows the COMMIT (`publish_pending_policy`), so the repository never
        announces a version the store does not hold. A crash or a failed `publish` after the
        COMMIT leaves the version recorded and unpublished; the next change, or the next
        start (`backend.admin.publish_pending`), publishes the newest recorded version.

        Raises:
            PolicyConflictError: `document.version` is not the stored version + 1 (another
                change came first); nothing was recorded.
            PublishError: `publish` failed; the version is recorded, publication pending.
        """
        with self._lock, self._conn.transaction():
            self._record_next_policy(document, now, actor, action)
        if _PUBLISH_FAULT_MARKER:
            _pause_for_fault_injection(_PUBLISH_FAULT_MARKER)
        self.publish_pending_policy(publish, now)
        return PolicyRecord(document.version, _utc(now), actor, action, document)

    def _record_next_policy(
        self, document: PolicyDocumentModel, at: dt.datetime, actor: str, action: str
    ) -> None:
        """Record `document` as the next policy version (inside the caller's transaction).

        Compare-and-set: the table is locked and the stored newest version checked, so two
        writers (operator changes, rollout decisions, other replicas) never both record one.
        """
        self._conn.execute("LOCK TABLE policy_history IN EXCLUSIVE MODE")
        latest = self._conn.execute(
            "SELECT coalesce(max(version), 0) FROM policy_history"
        ).fetchone()
        assert latest is not None
        _check_next_version(int(latest[0]), document.version)
        self._conn.execute(
            "INSERT INTO policy_history (version, changed_at, actor, action, document) "
            "VALUES (%s, %s, %s, %s, %s)",
            (document.version, _utc(at), actor, action, document.model_dump_json()),
        )

    def publish_pending_policy(self, publish: Publish, now: dt.datetime) -> int | None:
        """Publish the newest recorded policy version unless it is published already.

        Publishers are serialised across replicas (an advisory lock held across `publish`), so
        versions reach the repository in order; the version is marked published only once
        `publish` returned. Returns the version published now, or None when none was pending.

        Raises:
            PublishError: `publish` failed; it stays pending.
        """
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))
            row = self._conn.execute(
                "SELECT version, document FROM policy_history WHERE version > "
                "(SELECT coalesce(max(version), 0) FROM policy_published) "
                "ORDER BY version DESC LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            version = int(row[0])
            try:
                publish(str(row[1]).encode(), now)
            except Exception as exc:  # the repository is outside our control: report
                raise PublishError(
                    f"policy v{version} is recorded but could not be published ({exc}); "
                    "the next change or the next start publishes it"
                ) from exc
            self._conn.execute(
                "INSERT INTO policy_published (version, published_at) VALUES (%s, %s)",
                (version, _utc(now)),
            )
        return version

    # --- the rollout controller's tables (backend.rollout.service decides what to write) ------

    def arm_counts(
        self, version: int, since_day: int, until_day: int, org_id: str | None = None
    ) -> list[ArmCountRow]:
        """Per org, the gate's rollup of `version` over days `since_day`..`until_day`."""
        query = (
            "SELECT org_id, max(endpoint_days), sum(endpoint_days), sum(alerts), "
            "sum(self_test_failures), sum(model_errors), sum(breaker_trips) FROM arm_days "
            "WHERE model_version = %s AND day >= %s AND day <= %s"
        )
        args: list[object] = [version, since_day, until_day]
        if org_id is not None:
            query += " AND org_id = %s"
            args.append(org_id)
        with self._lock:
            found = self._conn.execute(
                (query + " GROUP BY org_id ORDER BY org_id").encode(), args
            ).fetchall()
        return [(str(r[0]), *(int(x) for x in r[1:])) for r in found]  # type: ignore[misc]

    def rollout_state(self, rollout_id: int | None = None) -> str | None:
        """A rollout's stored state (JSON) by id, or the latest one's; None when none."""
        with self._lock:
            if rollout_id is None:
                row = self._conn.execute("SELECT state FROM rollouts ORDER BY id DESC LIMIT 1")
            else:
                row = self._conn.execute("SELECT state FROM rollouts WHERE id = %s", (rollout_id,))
            found = row.fetchone()
        return None if found is None else str(found[0])

    def log_rollout_decision(
        self,
        rollout_id: int | None,
        at: dt.datetime,
        state: Callable[[int], str],
        decision: RolloutDecisionRow,
        *,
        expected: str | None,
        policy: tuple[PolicyDocumentModel, str, str] | None = None,
    ) -> int:
        """In one transaction: create the rollout (no id), store `state(id)`, log the decision.

        Compare-and-set on `expected`, the stored state the decision was made from (for a new
        rollout, the latest rollout's; None: there was none). `policy` (document, actor,
        action): the policy version the decision writes, recorded in the same transaction
        (compare-and-set on its version, as `append_policy`), so the policy can never be a
        stage ahead of (or behind) the logged state; the caller publishes it after.

        Raises:
            ConflictError: the stored state is no longer `expected` (another replica decided
                first); nothing was written.
            PolicyConflictError: `policy` does not follow the stored policy version (another
                change came first); nothing was written.
        """
        with self._lock, self._conn.transaction():
            self._conn.execute("LOCK TABLE rollouts IN EXCLUSIVE MODE")  # readers go on
            if rollout_id is None:
                found = self._conn.execute("SELECT state FROM rollouts ORDER BY id DESC LIMIT 1")
            else:
                found = self._conn.execute(
                    "SELECT state FROM rollouts WHERE id = %s", (rollout_id,)
                )
            now_stored = found.fetchone()
            if (None if now_stored is None else str(now_stored[0])) != expected:
                raise ConflictError(
                    f"rollout {rollout_id or 'start'}: another decision was logged since this "
                    "one read the rollout; read it again"
                )
            if rollout_id is None:
                row = self._conn.execute(
                    "INSERT INTO rollouts (created_at, state) VALUES (%s, '{}') RETURNING id",
                    (_utc(at),),
                ).fetchone()
                assert row is not None
                rollout_id = int(row[0])
            self._conn.execute(
                "UPDATE rollouts SET state = %s WHERE id = %s", (state(rollout_id), rollout_id)
            )
            if policy is not None:  # lock order: rollouts, then policy_history (never reversed)
                document, actor, action = policy
                self._record_next_policy(document, at, actor, action)
            self._conn.execute(
                "INSERT INTO rollout_decisions (rollout_id, at, action, stage_index, percent, "
                "reason, figures, policy_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (rollout_id, _utc(at), *decision),
            )
        return rollout_id

    def rollout_decisions(self, rollout_id: int) -> list[RolloutLogRow]:
        """A rollout's logged decisions, oldest first (`RolloutLogRow`s, times in ISO)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, action, stage_index, percent, reason, figures, policy_version "
                "FROM rollout_decisions WHERE rollout_id = %s ORDER BY id",
                (rollout_id,),
            ).fetchall()
        return [
            (r[0].astimezone(dt.UTC).isoformat(), r[1], int(r[2]), float(r[3]), r[4], r[5],
             None if r[6] is None else int(r[6]))
            for r in rows
        ]  # fmt: skip

    # --- golden labels and streaming reads (rescoring, transition analysis) ----------------

    @staticmethod
    def _label_from_row(row: Sequence[Any]) -> LabelChange:
        from backend.analysis.labels import LabelChange, LabelSource, LabelValue

        sha, label, source, family, at, rec = row
        return LabelChange(
            bytes(sha).hex(),
            LabelValue(str(label)),
            LabelSource(str(source)),
            at.astimezone(dt.UTC),
            str(family),
            rec.astimezone(dt.UTC),
        )

    def append_labels(self, changes: Sequence[LabelChange], *, now: dt.datetime) -> int:
        """Append label changes (append-only: earlier labels stay readable as of their time)."""
        rows = [
            (
                bytes.fromhex(c.sha256),
                c.label.value,
                c.source.value,
                c.family,
                _utc(c.labelled_at),
                _utc(now),
            )
            for c in changes
        ]
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO labels (sha256, label, source, family, labelled_at, recorded_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
        return len(rows)

    def label_as_of(
        self, sha256: str, when: dt.datetime, *, corrected: bool = False
    ) -> LabelChange | None:
        """The label of `sha256` known at `when` (`corrected`: labelled by `when`), or None."""
        from backend.analysis.labels import LabelBook

        with self._lock:
            rows = self._conn.execute(
                "SELECT sha256, label, source, family, labelled_at, recorded_at FROM labels "
                "WHERE sha256 = %s ORDER BY id",
                (bytes.fromhex(sha256),),
            ).fetchall()
        book = LabelBook(self._label_from_row(r) for r in rows)
        return book.label_as_of(sha256, when, corrected=corrected)

    def _stream(self, query: str, args: Sequence[object], size: int) -> Iterator[list[Any]]:
        """Rows of `query` in chunks, over a server-side cursor on a connection of its own."""
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor(name="fw_stream") as cur:
                cur.execute(query.encode(), args)
                while chunk := cur.fetchmany(size):
                    yield chunk
        finally:
            conn.close()

    def iter_labels(self, until: dt.datetime | None = None) -> Iterator[LabelChange]:
        """Every label change (labelled at or before `until`), by sample then time, streamed."""
        query = "SELECT sha256, label, source, family, labelled_at, recorded_at FROM labels"
        args: tuple[object, ...] = ()
        if until is not None:
            query += " WHERE labelled_at <= %s"
            args = (_utc(until),)
        for chunk in self._stream(query + " ORDER BY sha256, labelled_at, id", args, 10_000):
            for row in chunk:
                yield self._label_from_row(row)

    def iter_aggregates(
        self,
        *,
        org_id: str | None = None,
        shadow: bool | None = None,
        until_ms: int | None = None,
        batch_rows: int = 65_536,
    ) -> Iterator[list[AggregateRow]]:
        """Aggregate rows in batches of at most `batch_rows`, streamed, in key order.

        `until_ms` keeps rows first seen before it; `shadow` filters active/shadow rows.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        where: list[str] = []
        args: list[object] = []
        if org_id is not None:
            key = self._org_lookup(org_id)
            if key is None:
                return
            where.append("org = %s")
            args.append(key)
        if shadow is not None:
            where.append("shadow = %s")
            args.append(int(shadow))
        if until_ms is not None:
            where.append("first_seen_ms < %s")
            args.append(until_ms)
        query = _AGG_COLUMNS + (" WHERE " + " AND ".join(where) if where else "") + _KEY_ORDER
        for chunk in self._stream(query, args, batch_rows):
            yield [self._agg_row(r) for r in chunk]

    def iter_aggregate_columns(
        self, *, shadow: bool, until_ms: int, batch_rows: int = 65_536
    ) -> Iterator[AggregateColumns]:
        """Aggregate rows first seen before `until_ms`, by sample, in columnar batches.

        Sorted by sample (then day and org), as the SQLite store returns them, over a
        server-side cursor: one batch of at most `batch_rows` rows is held at a time.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        query = (
            "SELECT day, org, sha256, model_version, verdict, count, first_seen_ms "
            "FROM aggregates WHERE shadow = %s AND first_seen_ms < %s "
            "ORDER BY sha256, day, org, model_version, verdict"
        )
        for chunk in self._stream(query, (int(shadow), until_ms), batch_rows):
            days, orgs, shas, versions, verdicts, counts, first = zip(*chunk, strict=True)
            keys = tuple(int(k) for k in orgs)
            yield AggregateColumns(
                tuple(int(d) for d in days),
                keys,
                tuple((k, self._org_name(k)) for k in sorted(set(keys))),
                tuple(bytes(s) for s in shas),
                tuple(int(v) for v in versions),
                tuple(verdicts),
                tuple(int(c) for c in counts),
                tuple(int(f) for f in first),
            )

    def feature_vectors(
        self, keys: Iterable[tuple[str, str]], schema: str
    ) -> dict[tuple[str, str], bytes]:
        """The stored vectors of many (org id, sample) pairs at once (missing ones left out)."""
        by_org: dict[int, list[bytes]] = {}
        for org_id, sha in dict.fromkeys(keys):
            org = self._org_lookup(org_id)
            if org is not None:
                by_org.setdefault(org, []).append(bytes.fromhex(sha))
        out: dict[tuple[str, str], bytes] = {}
        with self._lock:
            for org, shas in by_org.items():
                name = self._org_names[org]
                for i in range(0, len(shas), 5000):
                    for sha, vec in self._conn.execute(
                        "SELECT o.sha256, v.vector FROM org_vectors o "
                        "JOIN vectors v ON v.digest = o.digest "
                        "WHERE o.org = %s AND o.schema = %s AND o.sha256 = ANY(%s)",
                        (org, schema, shas[i : i + 5000]),
                    ):
                        out[(name, bytes(sha).hex())] = bytes(vec)
        return out
