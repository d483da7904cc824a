"""The backend's SQLite store (WAL), the only module that speaks SQLite's SQL.

It holds orgs, hashed tokens, endpoints, the append-only policy history, the idempotency keys
of accepted batches, the aggregates and the feature vectors.

Layout choices, for locality and size:
- `aggregates` is a WITHOUT ROWID table keyed day first,
  (day, org, sha256, model_version, shadow, verdict): a batch's events fall on one or two days,
  so one batch's upserts touch one region of the B-tree instead of pages across all history.
  Orgs are small integers and sha256s 32 raw bytes inside the key.
- One transaction per batch: the idempotency key insert, then one `executemany` upsert
  (`INSERT ... ON CONFLICT DO UPDATE`) of the batch's pre-aggregated rows, then the feature
  vectors (`INSERT OR IGNORE`; see `vectors` below). A replayed key finds its row and the
  transaction rolls back having changed nothing, so a batch counts once however often it is
  retried. The commit happens before the caller answers 2xx; `synchronous=FULL` (the default)
  makes it survive power loss too, `NORMAL` only a crash of the process. `OFF` syncs nothing
  (still safe from a crash of the process, not of the machine): for a fleet simulation's scratch
  store only, which acknowledges nothing to anyone
  (`fleet_sim.link.fold_writer.SIM_STORE_SYNCHRONOUS`).
- Distinct endpoints merge through a registered SQL function (`fw_merge`, see
  `backend.sketch`), so the upsert stays one statement. The common case, an endpoint the row
  already counts, is decided in SQL without calling back into Python: sketches are sorted
  8-byte hashes, so an incoming sketch found at an 8-aligned offset (`instr(...) % 8 = 1`) is a
  subset of the row's and the union is the row's sketch; anything else goes to `fw_merge`.
- Bulk folds (`ingest_columns`, hundreds of thousands of rows a call) go through a second
  connection to the same file opened with APSW, whose `executemany` (and newer bundled SQLite)
  writes the same rows about 2.5x faster than the stdlib driver; it shares the store's lock, so
  the two connections never write at once in one process, and it never checkpoints (APSW's
  copy of SQLite cannot see the stdlib connections' locks: see `_bulk`). An in-memory store has
  no file to share and stays on the stdlib connection.
- The encoded bulk form (`ingest_encoded`, the simulator's daily fold) reaches SQLite with no
  Python object per row: integer columns packed as bit fields into int64 words
  (`_encoded.pack`), the first word bound as an array (APSW's `carray`), the others copied in
  C into temp rowid tables and looked up by rowid (a carray's rowid has no index), sha256s,
  verdicts and digests as temp code tables, each sketch `substr` of one bound blob; one
  `INSERT ... SELECT` then writes the rows in C, at under half the CPU of `executemany`.
- Feature vectors are stored once by content (`vectors`, keyed by the sha256 of the float32
  bytes) and referenced per (org, sample, schema) (`org_vectors`, first report wins): a fleet
  reports a few thousand distinct vectors for a million (org, sample) pairs, and one org's
  report can never change the reference another org's analyses read.
- The writer checkpoints the WAL every `_WAL_AUTOCHECKPOINT_PAGES` (8,192) pages rather than
  SQLite's 1,000: a batch dirties a few hundred scattered pages, and rarer checkpoints copy
  each hot page once for many batches instead of inside every third batch's request.
- `policy_history` is append-only: each operator change stores the whole signed document with
  its time, so `policy_as_of(t)` is one indexed lookup.

Tokens are random (`secrets`) and stored as their sha256; the plain token is shown once.
All methods are thread-safe (one connection behind a lock; SQLite serialises writers anyway).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import gc
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import apsw
import numpy as np
import numpy.typing as npt

from agent.decision import Verdict
from agent.telemetry import TelemetryBatch
from backend import sketch
from backend.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    PolicyConflictError,
    PublishError,
)
from backend.ingest import AggregateRow, ArmDayRow, EvidenceRow, FeatureRow
from backend.store._base import (
    _FAULT_MARKER,
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
    _vector_digest,
    hash_token,
    token_id_of,
)
from backend.store._encoded import EncodedAggregates, Packed
from backend.validation import check_org_name, check_token_limits

if TYPE_CHECKING:
    from agent.policy import PolicyDocumentModel
    from backend.analysis.labels import LabelChange

__all__ = ["Store"]

# a policy_history row: version, changed_at (ISO), actor, action, document (JSON)
_PolicyRow = tuple[int, str, str, str, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (
    id INTEGER PRIMARY KEY, org_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS token_revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, token_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, org INTEGER REFERENCES orgs(id),
    endpoint_id TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint_id TEXT PRIMARY KEY, org INTEGER NOT NULL REFERENCES orgs(id),
    enrolled_at TEXT NOT NULL, last_seen_ms INTEGER,
    spool_dropped_events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS policy_history (
    version INTEGER PRIMARY KEY, changed_at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, document TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS policy_history_time ON policy_history(changed_at);
CREATE TABLE IF NOT EXISTS policy_published (
    version INTEGER PRIMARY KEY, published_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    endpoint_id TEXT NOT NULL, key TEXT NOT NULL, received_ms INTEGER NOT NULL,
    events INTEGER NOT NULL, PRIMARY KEY (endpoint_id, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aggregates (
    day INTEGER NOT NULL, org INTEGER NOT NULL, sha256 BLOB NOT NULL,
    model_version INTEGER NOT NULL,
    shadow INTEGER NOT NULL, verdict TEXT NOT NULL, count INTEGER NOT NULL, endpoints BLOB NOT NULL,
    first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (day, org, sha256, model_version, shadow, verdict)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vectors (digest BLOB PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS org_vectors (
    org INTEGER NOT NULL, sha256 BLOB NOT NULL, schema TEXT NOT NULL, digest BLOB NOT NULL,
    PRIMARY KEY (org, sha256, schema)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS endpoint_days (
    day INTEGER NOT NULL, endpoint_id TEXT NOT NULL, model_version INTEGER NOT NULL,
    org_id TEXT NOT NULL, events INTEGER NOT NULL, alerts INTEGER NOT NULL,
    self_test_failures INTEGER NOT NULL, model_errors INTEGER NOT NULL,
    breaker_trips INTEGER NOT NULL,
    PRIMARY KEY (day, endpoint_id, model_version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_decisions (
    id INTEGER PRIMARY KEY, rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    at TEXT NOT NULL, action TEXT NOT NULL, stage_index INTEGER NOT NULL, percent REAL NOT NULL,
    reason TEXT NOT NULL, figures TEXT NOT NULL, policy_version INTEGER);
CREATE TRIGGER IF NOT EXISTS rollout_decisions_append_only
    BEFORE UPDATE ON rollout_decisions BEGIN SELECT RAISE(ABORT, 'append-only'); END;
CREATE TRIGGER IF NOT EXISTS rollout_decisions_no_delete
    BEFORE DELETE ON rollout_decisions BEGIN SELECT RAISE(ABORT, 'append-only'); END;
"""

# the token lifecycle (expiry, use limit, revocation), added to older databases' tables
_TOKEN_COLUMNS = (
    ("token_id", "TEXT"),
    ("expires_at", "TEXT"),
    ("max_uses", "INTEGER"),
    ("uses", "INTEGER NOT NULL DEFAULT 0"),
    ("revoked_at", "TEXT"),
)

# the rollout gate's rollup of endpoint_days per (day, model, org); created apart so that a
# database from before it gets it backfilled from its endpoint_days rows
_ARM_DAYS = """
CREATE TABLE arm_days (
    day INTEGER NOT NULL, model_version INTEGER NOT NULL, org_id TEXT NOT NULL,
    endpoint_days INTEGER NOT NULL, events INTEGER NOT NULL, alerts INTEGER NOT NULL,
    self_test_failures INTEGER NOT NULL, model_errors INTEGER NOT NULL,
    breaker_trips INTEGER NOT NULL,
    PRIMARY KEY (day, model_version, org_id)) WITHOUT ROWID
"""
_BACKFILL = """
INSERT INTO arm_days SELECT day, model_version, org_id, count(*), sum(events), sum(alerts),
    sum(self_test_failures), sum(model_errors), sum(breaker_trips)
FROM endpoint_days GROUP BY day, model_version, org_id
"""
_ARM_SUMS = (
    "ON CONFLICT DO UPDATE SET endpoint_days = arm_days.endpoint_days + excluded.endpoint_days, "
    "events = arm_days.events + excluded.events, alerts = arm_days.alerts + excluded.alerts, "
    "self_test_failures = arm_days.self_test_failures + excluded.self_test_failures, "
    "model_errors = arm_days.model_errors + excluded.model_errors, "
    "breaker_trips = arm_days.breaker_trips + excluded.breaker_trips"
)
# one row (day, model, org, endpoint-days, counts...) added into the rollup
_ADD_ARM_ROW = "INSERT INTO arm_days VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) " + _ARM_SUMS  # noqa: S608
# one endpoint-day row (day, endpoint, model, org, counts...) into the rollup, run before the
# row is written: it adds an endpoint-day when the key is new, and goes to the org the stored
# row already has (the upsert into endpoint_days keeps the first org)
_ROW_INTO_ARMS = (
    "INSERT INTO arm_days SELECT ?1, ?3, coalesce(o, ?4), o IS NULL, ?5, ?6, ?7, ?8, ?9 FROM "
    "(SELECT (SELECT org_id FROM endpoint_days "
    "WHERE day = ?1 AND endpoint_id = ?2 AND model_version = ?3) AS o) WHERE true "
    "ON CONFLICT DO UPDATE SET endpoint_days = arm_days.endpoint_days + excluded.endpoint_days, "
    "events = arm_days.events + excluded.events, alerts = arm_days.alerts + excluded.alerts, "
    "self_test_failures = arm_days.self_test_failures + excluded.self_test_failures, "
    "model_errors = arm_days.model_errors + excluded.model_errors, "
    "breaker_trips = arm_days.breaker_trips + excluded.breaker_trips"
)
_ADD_ENDPOINT_DAY = (
    "INSERT INTO endpoint_days VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET events = events + excluded.events, "
    "alerts = alerts + excluded.alerts, "
    "self_test_failures = self_test_failures + excluded.self_test_failures, "
    "model_errors = model_errors + excluded.model_errors, "
    "breaker_trips = breaker_trips + excluded.breaker_trips"
)

# a row meeting a stored one adds its count, unions the sketches, widens first and last seen
_MERGE_SET = """
ON CONFLICT DO UPDATE SET
    count = count + excluded.count,
    endpoints = CASE WHEN instr(endpoints, excluded.endpoints) % 8 = 1 THEN endpoints
                     ELSE fw_merge(endpoints, excluded.endpoints) END,
    first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
    last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)
"""
_UPSERT = (
    """
INSERT INTO aggregates (day, org, sha256, model_version, shadow, verdict, count, endpoints,
                        first_seen_ms, last_seen_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
    + _MERGE_SET
)


# the bulk form's rows (`ingest_encoded`, never shadow): merged like `_UPSERT`, or appended
# where no stored row can share the key
_MERGE_ROW = (
    """
INSERT INTO aggregates (day, org, sha256, model_version, shadow, verdict, count, endpoints,
                        first_seen_ms, last_seen_ms)
VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"""
    + _MERGE_SET
)
_APPEND_ROW = """
INSERT INTO aggregates (day, org, sha256, model_version, shadow, verdict, count, endpoints,
                        first_seen_ms, last_seen_ms)
VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?)
"""


def _int_sql(v: int) -> str:
    """An integer as SQL text (-2**63 has no literal: 2**63 would read as a real)."""
    return f"({v + 1} - 1)" if v == -(2**63) else f"({v})"


def _unpack_sql(packed: Packed, lo: int) -> tuple[list[str], str]:
    """Each packed column's SQL expression, and the joins that set words 1.. beside word 0.

    Word 0 is the statement's `carray(?1) AS w0`, bound from row `lo` on; words 1.. are the
    staged tables `temp.fw_w1`.. (rowid = row + 1), looked up by rowid (`_stage_words`).
    """
    exprs = []
    for f in packed.fields:
        w = f"w{f.word}.value"
        if f.bits == 64:
            exprs.append(w)
        elif f.bits == 0:
            exprs.append(_int_sql(f.offset))
        else:
            mask = (1 << f.bits) - 1
            exprs.append(f"((({w} >> {f.shift}) & {mask}) + {_int_sql(f.offset)})")
    joins = "".join(
        f" CROSS JOIN temp.fw_w{k} AS w{k} ON w{k}.rowid = w0.rowid + {lo}"
        for k in range(1, len(packed.words))
    )
    return exprs, joins


def _packed_rows_sql(packed: Packed, lo: int, *, merge: bool) -> str:
    """Insert packed aggregate rows (`EncodedAggregates.packed`).

    ?1 word 0, ?2 the sketches, ?3 the 32-byte sample hashes end to end (a code's hash is a
    `substr` of it: a copy, where a join on a code table was a B-tree seek a row).
    CROSS JOIN keeps word 0 the outer loop, so rows go in the order given: key order.
    """
    (day, org, sha, version, verdict, count, start, size, first, last), joins = _unpack_sql(
        packed, lo
    )
    return (
        "INSERT INTO aggregates (day, org, sha256, model_version, shadow, verdict, count, "  # noqa: S608 - generated from integers only
        "endpoints, first_seen_ms, last_seen_ms) "
        f"SELECT {day}, {org}, substr(?3, {sha} * 32 + 1, 32), {version}, 0, v.value, {count}, "
        f"coalesce(substr(?2, {start} + 1, {size}), x''), {first}, {last} "
        f"FROM carray(?1) AS w0{joins} "
        f"CROSS JOIN temp.fw_verdict AS v ON v.code = {verdict} WHERE true"
        + (_MERGE_SET if merge else "")
    )


def _packed_refs_sql(packed: Packed) -> str:
    """Insert packed vector references (`EncodedAggregates.packed_refs`).

    ?1 word 0, ?2 the schema, ?3 the 32-byte sample hashes and ?4 the 32-byte vector digests,
    each end to end (a code's bytes are a `substr`, as in `_packed_rows_sql`).
    """
    (org, sha, vec), joins = _unpack_sql(packed, 0)
    return (
        "INSERT OR IGNORE INTO org_vectors (org, sha256, schema, digest) "  # noqa: S608 - generated from integers only
        f"SELECT {org}, substr(?3, {sha} * 32 + 1, 32), ?2, substr(?4, {vec} * 32 + 1, 32) "
        f"FROM carray(?1) AS w0{joins}"
    )


def _fill_codes(db: apsw.Connection, table: str, values: Sequence[Any]) -> None:
    """A code table (code INTEGER PRIMARY KEY = position in `values`) in temp, refilled."""
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (code INTEGER PRIMARY KEY, value)")
    db.execute(f"DELETE FROM temp.{table}")  # noqa: S608 - a fixed name
    if values:
        db.execute(
            f"INSERT INTO temp.{table} SELECT rowid - 1, value FROM carray(?)",  # noqa: S608 - a fixed name
            (apsw.carray(tuple(values)),),
        )


def _stage_words(db: apsw.Connection, packed: Packed | None) -> None:
    """Copy words 1.. into temp tables `fw_w1`.. (rowid = row + 1); None empties them.

    carray's rowid is not indexed (joining two carrays on it scans the inner one for every
    row), so all but the first word go through a rowid table, each copied in C.
    """
    if packed is None:
        for (name,) in db.execute(
            "SELECT name FROM temp.sqlite_master WHERE name GLOB 'fw_w[0-9]*'"
        ).fetchall():
            db.execute(f"DELETE FROM temp.{name}")  # noqa: S608 - our own table
        return
    for k, word in enumerate(packed.words[1:], 1):
        db.execute(f"CREATE TEMP TABLE IF NOT EXISTS fw_w{k} (value INTEGER)")
        db.execute(f"DELETE FROM temp.fw_w{k}")  # noqa: S608 - a fixed name
        db.execute(
            f"INSERT INTO temp.fw_w{k} (rowid, value) SELECT rowid, value FROM carray(?)",  # noqa: S608 - a fixed name
            (apsw.carray(word),),
        )


# The writer copies the WAL back into the database (a checkpoint, with its fsyncs) once the WAL
# holds this many pages, instead of SQLite's default 1,000. A telemetry batch's upserts dirty
# pages all over the aggregates B-tree (a few hundred 4 KiB pages for 2,000 events), so at 1,000
# the writer checkpointed every second or third batch, inside that batch's request, and copied
# the same hot pages again each time. At 8,192 (a WAL of at most about 32 MiB) a checkpoint
# copies each of those pages once for many batches: the ingest benchmark's batch latency p50
# fell about a quarter.
_WAL_AUTOCHECKPOINT_PAGES = 8192


class _Writer(Protocol):
    """What `_apply` needs of a connection: the stdlib's and APSW's both have it."""

    def execute(self, sql: str, params: Any = ..., /) -> Any:
        """Run one statement."""
        ...

    def executemany(self, sql: str, params: Any, /) -> Any:
        """Run one statement per parameter row."""
        ...


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause automatic garbage collection while a bulk read builds its row tuples.

    Rows of ints, bytes and strings cannot form reference cycles, so the collector would only
    rescan (and promote) them at every allocation threshold; paused, the rescore benchmark's
    fetch runs about 15 % faster. The previous state is restored on exit, errors included.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _set_aside_shared_vectors(conn: sqlite3.Connection) -> None:
    """Rename a features table from before per-org vectors to `features_unowned`.

    Its vectors were shared by every org (the first reporter's won), so no org can be trusted
    to own them: they stay in the file for an operator to inspect and are never read.
    """
    cols = [r[1] for r in conn.execute("PRAGMA table_info(features)")]
    if cols and "org" not in cols:
        conn.execute("ALTER TABLE features RENAME TO features_unowned")


def _move_org_vectors(conn: sqlite3.Connection) -> None:
    """Move a per-org `features` table (one vector copy per org) into `vectors` + `org_vectors`.

    Each org keeps exactly the vector it had; equal vectors are then stored once. Runs in the
    caller's transaction, after the new tables exist.
    """
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'features'").fetchone() is None:
        return
    conn.create_function("fw_vector_digest", 1, _vector_digest, deterministic=True)
    conn.execute(
        "INSERT OR IGNORE INTO vectors (digest, vector) "
        "SELECT fw_vector_digest(vector), vector FROM features"
    )
    conn.execute(
        "INSERT OR IGNORE INTO org_vectors (org, sha256, schema, digest) "
        "SELECT org, sha256, schema, fw_vector_digest(vector) FROM features"
    )
    conn.execute("DROP TABLE features")


def _agg_row(r: Sequence[Any], names: dict[int, str]) -> AggregateRow:
    """An `aggregates` table row (its columns in table order) as an `AggregateRow`."""
    return AggregateRow(
        r[0], names[r[1]], r[2].hex(), r[3], bool(r[4]), Verdict(r[5]), r[6], r[7], r[8], r[9]
    )


def _iso(t: dt.datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return t.astimezone(dt.UTC).isoformat()


def _policy_record(row: _PolicyRow) -> PolicyRecord:
    # pydantic only where a policy is read: a process that only writes aggregates (the
    # simulator's fold writer) opens the store without loading it
    from agent.policy import PolicyDocumentModel

    return PolicyRecord(
        int(row[0]),
        dt.datetime.fromisoformat(row[1]),
        row[2],
        row[3],
        PolicyDocumentModel.model_validate_json(row[4]),
    )


class Store(_StoreCommon):
    """The backend's state in one SQLite file (or `:memory:`).

    `page_size` (bytes) applies only when the file is new: the simulator's scratch store,
    written in bulk, uses 16 KiB pages; the backend keeps SQLite's default. `busy_timeout_ms`
    is how long a write waits for another connection's write lock before it fails with
    "database is locked": 5 s suits a server answering requests; the simulator's coordinator
    and its fold writer process take turns on one file, and a day's write under load can hold
    the lock longer than that, so they wait longer.
    """

    # the read-only connection of a `snapshot` view, whose one transaction every read goes through
    _snapshot: sqlite3.Connection | None = None
    _interrupted = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        tracer: Callable[[str, object], None] | None = None,
        autocheckpoint: bool = True,
        page_size: int | None = None,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "OFF"):
            raise ValueError("synchronous must be FULL, NORMAL or OFF")
        if page_size is not None and (
            page_size < 512 or page_size > 65536 or page_size & (page_size - 1)
        ):
            raise ValueError("page_size must be a power of two from 512 to 65536")
        if busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must be >= 0")
        self.path = str(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.create_function("fw_merge", 2, sketch.merge, deterministic=True)
        if tracer is not None:  # sees every statement run (sqlite-utils' tracer habit)
            conn.set_trace_callback(lambda statement: tracer(statement, None))
        self._conn = conn
        self._synchronous = synchronous.upper()
        self._bulk_conn: apsw.Connection | None = None
        self._lock = threading.Lock()
        if page_size is not None:  # a new file only (before WAL fixes it); bulk writers
            conn.execute(f"PRAGMA page_size={page_size}")  # append ~15 % faster at 16 KiB
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute("PRAGMA cache_size=-65536")
        self._autocheckpoint = autocheckpoint
        if not autocheckpoint:  # another connection calls `checkpoint` (see its docstring)
            conn.execute("PRAGMA wal_autocheckpoint=0")
        else:
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        _set_aside_shared_vectors(conn)
        conn.executescript(_SCHEMA)
        with self.write_transaction():
            _move_org_vectors(conn)
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'arm_days'"
            ).fetchone()
            if found is None:
                conn.execute(_ARM_DAYS)
                conn.execute(_BACKFILL)
            have = {r[1] for r in conn.execute("PRAGMA table_info(tokens)")}
            for column, decl in _TOKEN_COLUMNS:
                if column not in have:  # a database from before token lifecycles
                    conn.execute(f"ALTER TABLE tokens ADD COLUMN {column} {decl}")
            conn.execute(
                "UPDATE tokens SET token_id = 'tok_' || substr(token_hash, 1, 16) "
                "WHERE token_id IS NULL"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS tokens_id ON tokens(token_id)")
            conn.execute("CREATE INDEX IF NOT EXISTS tokens_org ON tokens(org, kind)")
        self._orgs: dict[str, int] = {}
        self._org_names: dict[int, str] = {}
        self._principals: dict[str, Principal] = {}
        # Token lookups that miss the cache read through their own connection and lock: WAL
        # lets them run beside an ingest transaction, so a check-in never waits on the writer.
        self._auth_conn, self._auth_lock = conn, self._lock
        if not (self.path in (":memory:", "") or self.path.startswith("file::memory:")):
            self._auth_conn = sqlite3.connect(self.path, check_same_thread=False)
            self._auth_conn.execute("PRAGMA query_only=1")
            self._auth_lock = threading.Lock()
        # the latest policy; at open its row, parsed on the first `current_policy`
        self._policy: PolicyRecord | _PolicyRow | None = None
        self._reload()

    def _reload(self) -> None:
        for key, org_id in self._conn.execute("SELECT id, org_id FROM orgs"):
            self._orgs[org_id] = key
            self._org_names[key] = org_id
        self._policy = self._policy_row("1 = 1", ())

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE) under the store's lock.

        Committed when the block ends, rolled back when it raises; for the other backend
        modules that keep their own tables in this database (`backend.rollout.service`).
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def checkpoint(self) -> None:
        """Copy the WAL's pages back into the database file, without waiting on any writer.

        PASSIVE: frames a reader's snapshot still needs stay in the WAL. A bulk writer calls it
        after its writes (the bulk connection never checkpoints on its own, see `_bulk`); the
        fleet simulator's fold writer process does, after each chunk it writes.
        """
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def snapshot(self) -> Store:
        """A read-only view of this store as it is now, for a long read beside later writes.

        Every read of the view (the store's read methods and `reading`) goes through one
        read-only connection whose read transaction is begun here, before this returns: in WAL
        mode it sees the database as of this call and nothing committed afterwards, by this store
        or any other connection or process. Writes through the view fail. `close` ends it. While
        it is open, checkpoints (`checkpoint` is PASSIVE) copy back only the WAL frames before
        its start and the WAL grows instead; nothing waits on it. `interrupt` (from any thread)
        ends a long read early.

        Raises:
            ValueError: an in-memory store (no file to open a second connection on).
        """
        if self.path in (":memory:", "") or self.path.startswith("file:"):
            raise ValueError("a snapshot needs a store file")
        self._ensure_labels()  # a script would commit the view's read transaction
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            conn.execute("BEGIN")
            # the WAL snapshot is fixed by the transaction's first read, not by BEGIN
            conn.execute("SELECT count(*) FROM policy_history").fetchone()
        except BaseException:
            conn.close()
            raise
        view = copy.copy(self)
        view._conn = view._auth_conn = view._snapshot = conn
        view._lock = view._auth_lock = threading.Lock()
        view._bulk_conn = None
        view._orgs, view._org_names = dict(self._orgs), dict(self._org_names)
        view._principals = {}
        return view

    def interrupt(self) -> None:
        """Abort a `snapshot` view's running read and fail its later ones; any thread may call it.

        The reads raise `sqlite3.OperationalError` ("interrupted"). A no-op on a closed view.

        Raises:
            ValueError: not a snapshot view.
        """
        if self._snapshot is None:
            raise ValueError("only a snapshot view's reads can be interrupted")
        self._interrupted = True
        with self._lock:  # not while `close` runs
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed already
                self._snapshot.interrupt()

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to the store file for a bulk read in SQL of one's own.

        In a `snapshot` view, the view's own connection (its transaction stays open); else a
        fresh connection opened read-only, closed when the block ends. Temporary tables work.

        Raises:
            ValueError: an in-memory store.
        """
        if self._snapshot is not None:
            if self._interrupted:
                raise sqlite3.OperationalError("interrupted")
            yield self._snapshot
            return
        if self.path in (":memory:", "") or self.path.startswith("file:"):
            raise ValueError("reading needs a store file")
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, check_same_thread=False)) as conn:
            yield conn

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            if self._auth_conn is not self._conn:
                with self._auth_lock:
                    self._auth_conn.close()
            if self._bulk_conn is not None:
                self._bulk_conn.close()
            self._conn.close()

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
            "expires_at, max_uses, uses) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (
                digest, kind.value, org, endpoint_id, _iso(now), token_id_of(digest),
                _iso(expires_at) if expires_at else None, max_uses,
            ),
        )  # fmt: skip
        return token

    def create_org(self, name: str, now: dt.datetime) -> OrgCreated:
        """Create an organization with a random pseudonymous id and an enroll token.

        Raises:
            BatchInvalidError: the name is blank, too long or holds control characters.
            ConflictError: the name is taken.
        """
        return self.create_orgs([name], now)[0]

    def create_orgs(self, names: Sequence[str], now: dt.datetime) -> list[OrgCreated]:
        """Create many organizations at once, each as `create_org` would, in one transaction.

        All or none: a bad or taken name leaves no organization of `names` created. (A bulk
        producer's form: the fleet simulator creates a thousand orgs before a run.)

        Raises:
            BatchInvalidError: a name is blank, too long or holds control characters.
            ConflictError: a name is taken, or given twice.
        """
        for name in names:
            check_org_name(name)
        made: list[tuple[int, OrgCreated]] = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for name in names:
                    org_id = "org_" + secrets.token_hex(8)
                    cur = self._conn.execute(
                        "INSERT INTO orgs (org_id, name, created_at) VALUES (?, ?, ?)",
                        (org_id, name, _iso(now)),
                    )
                    key = int(cur.lastrowid or 0)
                    token = self._new_token(TokenKind.ENROLL, key, None, now)
                    made.append((key, OrgCreated(org_id, name, token)))
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise ConflictError(f"an organization named {name!r} exists") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            for key, org in made:
                self._orgs[org.org_id] = key
                self._org_names[key] = org.org_id
        return [org for _key, org in made]

    def org_ids(self) -> list[str]:
        """Every organization's pseudonymous id, in creation order."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT org_id FROM orgs ORDER BY id")]

    def has_org(self, org_id: str) -> bool:
        """True when `org_id` names an organization."""
        return org_id in self._orgs

    def create_admin_token(self, now: dt.datetime) -> str:
        """A new fleet-wide operator token (shown once)."""
        with self._lock:
            return self._new_token(TokenKind.ADMIN, None, None, now)

    def authenticate(self, token: str, now: dt.datetime | None = None) -> Principal:
        """Who `token` acts as.

        Admin and endpoint tokens are cached in memory once verified; revoking one drops it
        from the cache, so it is refused at once. Enroll tokens are read every time (they are
        used rarely, and expire and run out): with `now`, an expired one is refused.

        Raises:
            AuthError: the token is unknown, revoked, expired or used up.
        """
        digest = hash_token(token)
        found = self._principals.get(digest)
        if found is not None:
            return found
        forgets_seen = self._forgets
        with self._auth_lock:
            row = self._auth_conn.execute(
                "SELECT kind, org, endpoint_id, revoked_at, expires_at, max_uses, uses "
                "FROM tokens WHERE token_hash = ?",
                (digest,),
            ).fetchone()
        if row is None:
            raise AuthError("unknown token")
        _check_usable(
            row[3] is not None,
            None if row[4] is None else dt.datetime.fromisoformat(row[4]),
            row[5],
            int(row[6]),
            now,
        )
        if row[1] is not None and row[1] not in self._org_names:  # created by another process
            with self._auth_lock:
                for key, org_id in self._auth_conn.execute("SELECT id, org_id FROM orgs"):
                    self._orgs[org_id] = key
                    self._org_names[key] = org_id
        org = self._org_names.get(row[1]) if row[1] is not None else None
        principal = Principal(TokenKind(row[0]), org, row[2])
        self._remember(digest, principal, forgets_seen)
        return principal

    def enroll(
        self, org_id: str, now: dt.datetime, *, enroll_token: str | None = None
    ) -> EndpointCredentials:
        """Register a new endpoint in `org_id` with a random pseudonym and its own token.

        With `enroll_token`, the token's use is counted in the same transaction, and an
        expired, revoked or used-up token (or one of another org) enrolls nothing.

        Raises:
            AuthError: `enroll_token` cannot enroll (any more).
            NotFoundError: no such org.
        """
        key = self._orgs.get(org_id)
        if key is None:
            raise NotFoundError(f"no organization {org_id!r}")
        endpoint_id = "ep_" + secrets.token_hex(12)
        with self.write_transaction() as conn:
            if enroll_token is not None:
                used = conn.execute(
                    "UPDATE tokens SET uses = uses + 1 WHERE token_hash = ? AND kind = ? "
                    "AND org = ? AND revoked_at IS NULL AND (expires_at IS NULL OR "
                    "expires_at > ?) AND (max_uses IS NULL OR uses < max_uses)",
                    (hash_token(enroll_token), TokenKind.ENROLL.value, key, _iso(now)),
                ).rowcount
                if used != 1:
                    raise AuthError("enroll token is revoked, expired or used up")
            conn.execute(
                "INSERT INTO endpoints (endpoint_id, org, enrolled_at) VALUES (?, ?, ?)",
                (endpoint_id, key, _iso(now)),
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
        key = self._orgs.get(org_id)
        if key is None:
            raise NotFoundError(f"no organization {org_id!r}")
        with self.write_transaction() as conn:
            if rotate:
                conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE org = ? AND kind = ? "
                    "AND revoked_at IS NULL",
                    (_iso(now), key, TokenKind.ENROLL.value),
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
        key = self._orgs.get(org_id)
        if key is None:
            raise NotFoundError(f"no organization {org_id!r}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT token_id, kind, endpoint_id, created_at, expires_at, max_uses, uses, "
                "revoked_at FROM tokens WHERE org = ? ORDER BY created_at, token_id",
                (key,),
            ).fetchall()
        at = dt.datetime.fromisoformat
        return [
            TokenInfo(
                r[0], TokenKind(r[1]), org_id, r[2], at(r[3]), at(r[4]) if r[4] else None,
                r[5], int(r[6]), at(r[7]) if r[7] else None,
            )
            for r in rows
        ]  # fmt: skip

    def revoke_token(self, token_id: str, now: dt.datetime) -> int:
        """Revoke a token by its public id; refused at once (in this process). Returns 1.

        Raises:
            NotFoundError: no token with that id, or it is already revoked.
        """
        return self._revoke("token_id = ?", token_id, now, f"no active token {token_id!r}")

    def revoke_endpoint(self, endpoint_id: str, now: dt.datetime) -> int:
        """Revoke the tokens of one endpoint; its next request gets 401. Returns how many.

        Raises:
            NotFoundError: the endpoint has no active token.
        """
        return self._revoke(
            "endpoint_id = ?", endpoint_id, now, f"no active token for endpoint {endpoint_id!r}"
        )

    def _revoke(self, where: str, value: str, now: dt.datetime, missing: str) -> int:
        with self.write_transaction() as conn:
            hashes = [
                r[0]
                for r in conn.execute(
                    f"SELECT token_hash FROM tokens WHERE {where} AND revoked_at IS NULL",  # noqa: S608 - literal
                    (value,),
                )
            ]
            if not hashes:
                raise NotFoundError(missing)
            conn.executemany(
                "UPDATE tokens SET revoked_at = ? WHERE token_hash = ?",
                [(_iso(now), h) for h in hashes],
            )
            # the log other replicas' feeds read (backend.server.replica): writes are serialised,
            # so seq order is commit order
            conn.executemany(
                "INSERT INTO token_revocations (token_hash) VALUES (?)", [(h,) for h in hashes]
            )
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

        The reference path (any `AggregateRow`s, several endpoints per row allowed); the HTTP
        route uses `ingest_aggregate`, which writes the same rows.

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
        params.sort(key=lambda p: p[:6])
        feats = [(org, bytes.fromhex(f.sha256), f.schema, f.vector) for f in features]
        return self._apply(
            batch.endpoint_id,
            batch.key,
            len(batch.events),
            batch.dropped_events,
            params,
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

        What `ingest` writes for the same `AggregateRow`s (not shadow), without building a row
        object per row: the simulator folds a whole day of a fleet this way. `sha256` is the
        32 raw bytes, `verdict` the verdict's value, `endpoints` each row's sketch. Rows are
        written in the order given (callers sort by the table key for locality).

        Raises:
            NotFoundError: a row names an org the store does not know.
            ValueError: the columns differ in length.
        """
        n = len(day)
        cols = (org_id, sha256, model_version, verdict, count, endpoints)
        if any(len(c) != n for c in (*cols, first_seen_ms, last_seen_ms)):
            raise ValueError("ingest_columns: columns of different lengths")
        orgs = {o: self._org_key(o) for o in set(org_id)}
        params = zip(
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
        bulk = self._bulk()
        conn: _Writer = self._conn if bulk is None else bulk
        feats = [(self._org_key(o), sha, schema, vec) for o, sha, schema, vec in features]
        return self._apply(
            endpoint_id, key, 0, 0, params, feats, now, conn=conn, rows=n, arm_days=arm_days
        )

    def ingest_encoded(
        self, key: str, endpoint_id: str, rows: EncodedAggregates, *, now: dt.datetime
    ) -> IngestResult:
        """Apply dictionary-encoded aggregate rows and vector references in one transaction.

        What `ingest_columns` writes for the same rows (once per `key`, merging into rows that
        exist), in a bulk producer's form (`EncodedAggregates`: each org mapped once, not per
        row). The rows must strictly increase in the table's key; then the rows of days after
        the table's last day cannot meet a stored row, and go in as plain appends at the
        B-tree's right edge instead of upserts (the simulator's daily fold: about a third
        cheaper). Vector references are written in `org_vectors` key order.

        Raises:
            NotFoundError: `rows.orgs` names an org the store does not know.
            ValueError: columns of different lengths, codes out of range, or rows not in
                strictly increasing key order.
        """
        rows.check()
        org_keys = np.asarray([self._org_key(o) for o in rows.orgs], np.int64)
        if not rows.is_key_ordered(org_keys):
            raise ValueError("ingest_encoded: rows must strictly increase in the table's key")
        digests = [_vector_digest(v) for v in rows.vectors]
        bulk = self._bulk()
        n = len(rows)
        if bulk is None:
            return self._ingest_encoded_by_row(key, endpoint_id, rows, org_keys, digests, now)
        whole, start, size = rows.sketch_blob()
        blob = memoryview(whole)
        if n:  # SQLite copies a bound blob: bind only the bytes these rows' sketches span
            lo = int(start.min())
            blob, start = blob[lo : int((start + size).max())], start - lo
        packed = rows.packed(org_keys, start, size)
        refs, used_idx = rows.packed_refs(org_keys)
        shas = b"".join(rows.sha256s)  # 32 bytes each (`EncodedAggregates.check`)
        used = sorted({(digests[i], rows.vectors[i]) for i in used_idx})
        with self._lock:
            if not self._claim_batch(bulk, endpoint_id, key, int(now.timestamp() * 1000), 0):
                return IngestResult(True, 0, 0)
            try:
                last = bulk.execute("SELECT max(day) FROM aggregates").fetchall()[0][0]
                cut = 0 if last is None else int(np.searchsorted(rows.day, last, "right"))
                if n:
                    _fill_codes(bulk, "fw_verdict", rows.verdicts)
                    _stage_words(bulk, packed)
                    if cut:
                        bulk.execute(_packed_rows_sql(packed, 0, merge=True), (
                            apsw.carray(packed.words[0], stop=cut), blob, shas))  # fmt: skip
                    if cut < n:
                        bulk.execute(_packed_rows_sql(packed, cut, merge=False), (
                            apsw.carray(packed.words[0], start=cut), blob, shas))  # fmt: skip
                    _stage_words(bulk, None)
                if used:
                    bulk.executemany(
                        "INSERT OR IGNORE INTO vectors (digest, vector) VALUES (?, ?)", used
                    )
                if used_idx:
                    _stage_words(bulk, refs)
                    bulk.execute(
                        _packed_refs_sql(refs),
                        (apsw.carray(refs.words[0]), rows.schema, shas, b"".join(digests)),
                    )
                    _stage_words(bulk, None)
                bulk.execute("COMMIT")
            except BaseException:
                bulk.execute("ROLLBACK")
                raise
        return IngestResult(False, 0, n)

    def _ingest_encoded_by_row(
        self,
        key: str,
        endpoint_id: str,
        rows: EncodedAggregates,
        org_keys: npt.NDArray[np.int64],
        digests: Sequence[bytes],
        now: dt.datetime,
    ) -> IngestResult:
        """`ingest_encoded` on the stdlib connection (an in-memory store): a tuple per row."""
        db = self._conn
        refs, used_idx = rows.vector_refs(org_keys, digests)
        used = sorted({(digests[i], rows.vectors[i]) for i in used_idx})
        n = len(rows)
        with self._lock:
            if not self._claim_batch(db, endpoint_id, key, int(now.timestamp() * 1000), 0):
                return IngestResult(True, 0, 0)
            try:
                last = db.execute("SELECT max(day) FROM aggregates").fetchall()[0][0]
                cut = 0 if last is None else int(np.searchsorted(rows.day, last, "right"))
                if cut:
                    db.executemany(_MERGE_ROW, rows.params(org_keys, 0, cut))
                if cut < n:
                    db.executemany(_APPEND_ROW, rows.params(org_keys, cut, n))
                if used:
                    db.executemany(
                        "INSERT OR IGNORE INTO vectors (digest, vector) VALUES (?, ?)", used
                    )
                if refs:
                    db.executemany(
                        "INSERT OR IGNORE INTO org_vectors (org, sha256, schema, digest) "
                        "VALUES (?, ?, ?, ?)",
                        refs,
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return IngestResult(False, 0, n)

    @staticmethod
    def _claim_batch(
        db: _Writer, endpoint_id: str, key: str, received_ms: int, events: int
    ) -> bool:
        """Open the write transaction and record the batch's idempotency key in it.

        False when the key is already recorded: the transaction is then rolled back, and the
        batch must change nothing. Run under the store's lock; the caller commits.
        """
        db.execute("BEGIN IMMEDIATE")
        try:
            fresh = db.execute(
                "INSERT INTO batches (endpoint_id, key, received_ms, events) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                (endpoint_id, key, received_ms, events),
            ).fetchall()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if not fresh:
            db.execute("ROLLBACK")
        return bool(fresh)

    def _bulk(self) -> apsw.Connection | None:
        """The APSW connection for bulk folds (opened on first use; None in memory)."""
        if self._bulk_conn is None and not (
            self.path in (":memory:", "") or self.path.startswith("file::memory:")
        ):
            conn = apsw.Connection(self.path)
            conn.set_busy_timeout(self._busy_timeout_ms)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # 16 MiB, not the main connection's 64: bulk rows are appended in key order, so the
            # cache holds the table's right edge; a 1M-row fold replayed at 64 MiB used the same
            # CPU and 41 MB more of the simulator's fold writer process
            conn.execute("PRAGMA cache_size=-16384")
            conn.execute("PRAGMA temp_store=MEMORY")  # the packed rows' staging tables
            # Never a checkpoint through APSW's own copy of SQLite: it cannot see the stdlib
            # connections' locks in this process (POSIX locks are per process, each copy keeps
            # its own table), so it would copy back WAL frames past a stdlib reader's snapshot
            # (`snapshot`, in another thread) and overwrite pages that reader still reads. The
            # stdlib connection checkpoints (its autocheckpoint, `checkpoint`, its close).
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            merge: Any = sketch.merge  # APSW types a scalar function loosely
            conn.create_scalar_function("fw_merge", merge, 2, deterministic=True)
            self._bulk_conn = conn
        return self._bulk_conn

    def _org_key(self, org_id: str) -> int:
        org = self._orgs.get(org_id)
        if org is None:
            raise NotFoundError(f"no organization {org_id!r}")
        return org

    def _apply(
        self,
        endpoint_id: str,
        key: str,
        events: int,
        dropped_events: int,
        params: Iterable[tuple[object, ...]],
        feats: Sequence[tuple[int, bytes, str, bytes]],
        now: dt.datetime,
        *,
        conn: _Writer | None = None,
        rows: int | None = None,
        endpoint_days: Sequence[EvidenceRow] = (),
        arm_days: Sequence[ArmDayRow] = (),
    ) -> IngestResult:
        """The one ingest transaction, on the stdlib connection or (bulk) the APSW one.

        Ledger row (the idempotency key), aggregate upserts, feature vectors, rollout evidence
        (per-endpoint-day ledger and the gate's rollup) and the endpoint's last-seen time:
        committed together or not at all.
        """
        now_ms = int(now.timestamp() * 1000)
        db: _Writer = self._conn if conn is None else conn
        if rows is None:
            params = list(params)
            rows = len(params)
        with self._lock:
            if not self._claim_batch(db, endpoint_id, key, now_ms, events):
                return IngestResult(True, events, 0)
            try:
                db.executemany(_UPSERT, params)
                distinct, refs = self._vectors_to_write(feats)
                if distinct:
                    db.executemany(
                        "INSERT OR IGNORE INTO vectors (digest, vector) VALUES (?, ?)", distinct
                    )
                if refs:
                    db.executemany(
                        "INSERT OR IGNORE INTO org_vectors (org, sha256, schema, digest) "
                        "VALUES (?, ?, ?, ?)",
                        refs,
                    )
                if _FAULT_MARKER:
                    _pause_for_fault_injection(_FAULT_MARKER)
                if endpoint_days:
                    merged = _merge_endpoint_days(endpoint_days)
                    db.executemany(_ROW_INTO_ARMS, merged)  # before the rows: new keys absent
                    db.executemany(_ADD_ENDPOINT_DAY, merged)
                if arm_days:
                    db.executemany(_ADD_ARM_ROW, arm_days)
                db.execute(
                    "UPDATE endpoints SET last_seen_ms = ?, "
                    "spool_dropped_events = max(spool_dropped_events, ?) "
                    "WHERE endpoint_id = ?",
                    (now_ms, dropped_events, endpoint_id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._vectors_stored(refs)
        return IngestResult(False, events, rows)

    def aggregates(
        self, *, org_id: str | None = None, day: int | None = None
    ) -> list[AggregateRow]:
        """Aggregate rows, optionally for one org and/or one day, in key order."""
        where, args = [], []
        if day is not None:
            where.append("day = ?")
            args.append(day)
        if org_id is not None:
            if org_id not in self._orgs:
                return []
            where.append("org = ?")
            args.append(self._orgs[org_id])
        # the WHERE parts are literals above; values are bound
        sql = (
            "SELECT day, org, sha256, model_version, shadow, verdict, count, endpoints, "  # noqa: S608
            "first_seen_ms, last_seen_ms FROM aggregates"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY day, org, sha256, model_version, shadow, verdict"
        )
        with self._lock:
            found = self._conn.execute(sql, args).fetchall()
        names = self._org_names
        return [_agg_row(r, names) for r in found]

    def feature_vector(self, org_id: str, sha256: str, schema: str) -> bytes | None:
        """The feature vector `org_id`'s endpoints reported for a sample, or None.

        Vectors are kept per org: another org's report of the same sample is never read here.
        """
        org = self._orgs.get(org_id)
        if org is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT v.vector FROM org_vectors o JOIN vectors v ON v.digest = o.digest "
                "WHERE o.org = ? AND o.sha256 = ? AND o.schema = ?",
                (org, bytes.fromhex(sha256), schema),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def endpoint_dropped_events(self, endpoint_id: str) -> int:
        """How many events `endpoint_id` reported its spool dropped."""
        with self._lock:
            row = self._conn.execute(
                "SELECT spool_dropped_events FROM endpoints WHERE endpoint_id = ?", (endpoint_id,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> StoreStats:
        """Database size (main file plus WAL) and row counts."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            agg = self._conn.execute("SELECT count(*) FROM aggregates").fetchone()[0]
            feat = self._conn.execute("SELECT count(*) FROM org_vectors").fetchone()[0]
            vecs = self._conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
            nb, ne = self._conn.execute(
                "SELECT count(*), coalesce(sum(events), 0) FROM batches"
            ).fetchone()
        size = sum(
            Path(self.path + s).stat().st_size for s in ("", "-wal") if Path(self.path + s).exists()
        )
        return StoreStats(size, int(agg), int(feat), int(nb), int(ne), int(vecs))

    # --- policy history --------------------------------------------------------------------

    def _policy_row(self, clause: str, args: tuple[object, ...]) -> _PolicyRow | None:
        row: _PolicyRow | None = self._conn.execute(
            # `clause` is one of three literals in this module; values are bound
            "SELECT version, changed_at, actor, action, document FROM policy_history "  # noqa: S608
            f"WHERE {clause} "
            "ORDER BY version DESC LIMIT 1",
            args,
        ).fetchone()
        return row

    def _policy_where(self, clause: str, args: tuple[object, ...]) -> PolicyRecord | None:
        row = self._policy_row(clause, args)
        return None if row is None else _policy_record(row)

    def current_policy(self) -> PolicyRecord | None:
        """The latest policy, or None before the first operator change."""
        policy = self._policy
        if isinstance(policy, tuple):  # the row read at open: parsed once, here
            parsed = _policy_record(policy)
            with self._lock:  # a policy recorded meanwhile wins over the row read at open
                if self._policy is policy:
                    self._policy = parsed
            return self.current_policy()
        return policy

    def policy_as_of(self, when: dt.datetime) -> PolicyRecord | None:
        """The policy in force at `when` (the latest change at or before it), or None."""
        with self._lock:
            return self._policy_where("changed_at <= ?", (_iso(when),))

    def policy_history(self) -> list[PolicyRecord]:
        """Every policy change, oldest first."""
        with self._lock:
            versions = [
                r[0]
                for r in self._conn.execute("SELECT version FROM policy_history ORDER BY version")
            ]
            return [
                rec
                for v in versions
                if (rec := self._policy_where("version = ?", (v,))) is not None
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
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._record_next_policy(document, now, actor, action)
                self._conn.execute("COMMIT")
            except PolicyConflictError:
                self._conn.execute("ROLLBACK")
                self._policy = self._policy_where("1 = 1", ())  # another process wrote it
                raise
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            record = PolicyRecord(document.version, now.astimezone(dt.UTC), actor, action, document)
            self._policy = record
        if _PUBLISH_FAULT_MARKER:
            _pause_for_fault_injection(_PUBLISH_FAULT_MARKER)
        self.publish_pending_policy(publish, now)
        return record

    def _record_next_policy(
        self, document: PolicyDocumentModel, at: dt.datetime, actor: str, action: str
    ) -> None:
        """Record `document` as the next policy version (inside the caller's transaction).

        Compare-and-set: the caller holds the write lock (BEGIN IMMEDIATE), and the stored
        newest version is checked, so two writers (operator changes, rollout decisions, other
        processes) never both record one. `append_policy` and `log_rollout_decision` call it.

        Raises:
            PolicyConflictError: `document.version` is not the stored version + 1.
        """
        latest = self._conn.execute("SELECT coalesce(max(version), 0) FROM policy_history")
        _check_next_version(int(latest.fetchone()[0]), document.version)
        self._conn.execute(
            "INSERT INTO policy_history (version, changed_at, actor, action, document) "
            "VALUES (?, ?, ?, ?, ?)",
            (document.version, _iso(at), actor, action, document.model_dump_json()),
        )

    def publish_pending_policy(self, publish: Publish, now: dt.datetime) -> int | None:
        """Publish the newest recorded policy version unless it is published already.

        Writers are serialised (the write lock is held across `publish`), so versions reach
        the repository in order; the version is marked published only once `publish` returned.
        Returns the version published now, or None when there was nothing to publish.

        Raises:
            PublishError: `publish` failed; it stays pending.
        """
        published: int | None = None
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT version, document FROM policy_history WHERE version > "
                    "(SELECT coalesce(max(version), 0) FROM policy_published) "
                    "ORDER BY version DESC LIMIT 1"
                ).fetchone()
                if row is not None:
                    try:
                        publish(str(row[1]).encode(), now)
                    except Exception as exc:  # the repository is outside our control: report
                        raise PublishError(
                            f"policy v{row[0]} is recorded but could not be published ({exc}); "
                            "the next change or the next start publishes it"
                        ) from exc
                    self._conn.execute(
                        "INSERT INTO policy_published (version, published_at) VALUES (?, ?)",
                        (int(row[0]), _iso(now)),
                    )
                    published = int(row[0])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return published

    # --- the rollout controller's tables (backend.rollout.service decides what to write) ------

    def arm_counts(
        self, version: int, since_day: int, until_day: int, org_id: str | None = None
    ) -> list[ArmCountRow]:
        """Per org, the gate's rollup of `version` over days `since_day`..`until_day`.

        Each row: org, its busiest day's endpoint-days, endpoint-days, alerts, self-test
        failures, model errors, breaker trips (days x orgs rows read, never endpoint rows).
        """
        sql = (
            "SELECT org_id, max(endpoint_days), sum(endpoint_days), sum(alerts), "
            "sum(self_test_failures), sum(model_errors), sum(breaker_trips) FROM arm_days "
            "WHERE model_version = ? AND day >= ? AND day <= ?"
        )
        args: list[object] = [version, since_day, until_day]
        if org_id is not None:
            sql += " AND org_id = ?"
            args.append(org_id)
        with self._lock:
            found = self._conn.execute(sql + " GROUP BY org_id ORDER BY org_id", args).fetchall()
        return [(str(r[0]), *(int(x) for x in r[1:])) for r in found]  # type: ignore[misc]

    def rollout_state(self, rollout_id: int | None = None) -> str | None:
        """A rollout's stored state (JSON) by id, or the latest one's; None when none."""
        with self._lock:
            if rollout_id is None:
                row = self._conn.execute("SELECT state FROM rollouts ORDER BY id DESC LIMIT 1")
            else:
                row = self._conn.execute("SELECT state FROM rollouts WHERE id = ?", (rollout_id,))
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

        Compare-and-set: `expected` is the stored state the decision was made from (for a new
        rollout, the latest rollout's; None: there was none). The decision log is append-only
        (triggers refuse updates and deletes). Returns the id.

        `policy` (document, actor, action): the policy version the decision writes, recorded
        in the same transaction (compare-and-set on its version, as `append_policy`), so the
        policy can never be a stage ahead of (or behind) the logged state. Not published
        here: the caller calls `publish_pending_policy` after.

        Raises:
            ConflictError: the stored state is no longer `expected` (another replica decided
                first); nothing was written.
            PolicyConflictError: `policy` does not follow the stored policy version (another
                change came first); nothing was written.
        """
        try:
            rid = self._log_rollout_decision(rollout_id, at, state, decision, expected, policy)
        except PolicyConflictError:
            with self._lock:
                self._policy = self._policy_where("1 = 1", ())  # another process wrote it
            raise
        if policy is not None:
            document, actor, action = policy
            self._policy = PolicyRecord(document.version, at.astimezone(dt.UTC), actor, action,
                                        document)  # fmt: skip
        return rid

    def _log_rollout_decision(
        self,
        rollout_id: int | None,
        at: dt.datetime,
        state: Callable[[int], str],
        decision: RolloutDecisionRow,
        expected: str | None,
        policy: tuple[PolicyDocumentModel, str, str] | None,
    ) -> int:
        with self.write_transaction() as conn:
            if rollout_id is None:
                found = conn.execute("SELECT state FROM rollouts ORDER BY id DESC LIMIT 1")
            else:
                found = conn.execute("SELECT state FROM rollouts WHERE id = ?", (rollout_id,))
            now_stored = found.fetchone()
            if (None if now_stored is None else str(now_stored[0])) != expected:
                raise ConflictError(
                    f"rollout {rollout_id or 'start'}: another decision was logged since this "
                    "one read the rollout; read it again"
                )
            if rollout_id is None:
                cur = conn.execute(
                    "INSERT INTO rollouts (created_at, state) VALUES (?, '{}')", (_iso(at),)
                )
                rollout_id = int(cur.lastrowid or 0)
            conn.execute(
                "UPDATE rollouts SET state = ? WHERE id = ?", (state(rollout_id), rollout_id)
            )
            if policy is not None:
                document, actor, action = policy
                self._record_next_policy(document, at, actor, action)  # `conn` is self._conn
            conn.execute(
                "INSERT INTO rollout_decisions (rollout_id, at, action, stage_index, percent, "
                "reason, figures, policy_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (rollout_id, _iso(at), *decision),
            )
        return rollout_id

    def rollout_decisions(self, rollout_id: int) -> list[RolloutLogRow]:
        """A rollout's logged decisions, oldest first (`RolloutLogRow`s)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, action, stage_index, percent, reason, figures, policy_version "
                "FROM rollout_decisions WHERE rollout_id = ? ORDER BY id",
                (rollout_id,),
            ).fetchall()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    # --- golden labels and streaming reads (rescoring, transition analysis) ----------------
    # Added for `backend.analysis.labels`, `backend.analysis.rescore` and
    # `backend.analysis.transition`; self-contained, no change to the ingest path above. Streaming
    # reads open their own read connection (WAL lets readers run beside the writer), so a long scan
    # never holds the store's lock.

    _LABELS_SCHEMA = """
    CREATE TABLE IF NOT EXISTS labels (
        id INTEGER PRIMARY KEY, sha256 BLOB NOT NULL, label TEXT NOT NULL,
        source TEXT NOT NULL, family TEXT NOT NULL DEFAULT '', labelled_at TEXT NOT NULL,
        recorded_at TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS labels_sha_time ON labels(sha256, labelled_at);
    """

    def _ensure_labels(self) -> None:
        if not getattr(self, "_labels_ready", False):
            with self._lock:
                self._conn.executescript(self._LABELS_SCHEMA)
            self._labels_ready = True

    @staticmethod
    def _label_from_row(row: tuple[object, ...]) -> LabelChange:
        from backend.analysis.labels import LabelChange, LabelSource, LabelValue

        sha, label, source, family, at, rec = row
        assert isinstance(sha, bytes)
        return LabelChange(
            sha.hex(),
            LabelValue(str(label)),
            LabelSource(str(source)),
            dt.datetime.fromisoformat(str(at)),
            str(family),
            dt.datetime.fromisoformat(str(rec)),
        )

    def append_labels(self, changes: Sequence[LabelChange], *, now: dt.datetime) -> int:
        """Append label changes (append-only: earlier labels stay readable as of their time)."""
        self._ensure_labels()
        rows = [
            (
                bytes.fromhex(c.sha256),
                c.label.value,
                c.source.value,
                c.family,
                _iso(c.labelled_at),
                _iso(now),
            )
            for c in changes
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO labels (sha256, label, source, family, labelled_at, "
                    "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return len(rows)

    def label_as_of(
        self, sha256: str, when: dt.datetime, *, corrected: bool = False
    ) -> LabelChange | None:
        """The label of `sha256` known at `when` (`corrected`: labelled by `when`), or None.

        See `backend.analysis.labels`: by default a label counts from when the backend received it,
        so a backdated import changes no past answer.
        """
        from backend.analysis.labels import LabelBook

        self._ensure_labels()
        with self._lock:
            rows = self._conn.execute(
                "SELECT sha256, label, source, family, labelled_at, recorded_at FROM labels "
                "WHERE sha256 = ? ORDER BY id",
                (bytes.fromhex(sha256),),
            ).fetchall()
        book = LabelBook(self._label_from_row(tuple(r)) for r in rows)
        return book.label_as_of(sha256, when, corrected=corrected)

    def _reader(self) -> tuple[sqlite3.Connection, bool]:
        """A connection for a long read: a fresh one on a file, the shared one in memory.

        A `snapshot` view reads through its own connection (and transaction) only.
        """
        if self._snapshot is not None:
            if self._interrupted:
                raise sqlite3.OperationalError("interrupted")
            return self._snapshot, False
        if self.path in (":memory:", "") or self.path.startswith("file::memory:"):
            return self._conn, False
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        return conn, True

    def iter_labels(self, until: dt.datetime | None = None) -> Iterator[LabelChange]:
        """Every label change (labelled at or before `until`), by sample then time, streamed."""
        self._ensure_labels()
        conn, own = self._reader()
        try:
            sql = "SELECT sha256, label, source, family, labelled_at, recorded_at FROM labels"
            args: tuple[object, ...] = ()
            if until is not None:
                sql += " WHERE labelled_at <= ?"
                args = (_iso(until),)
            cur = conn.execute(sql + " ORDER BY sha256, labelled_at, id", args)
            while chunk := cur.fetchmany(10_000):
                for row in chunk:
                    yield self._label_from_row(tuple(row))
        finally:
            if own:
                conn.close()

    def iter_aggregates(
        self,
        *,
        org_id: str | None = None,
        shadow: bool | None = None,
        until_ms: int | None = None,
        batch_rows: int = 65_536,
    ) -> Iterator[list[AggregateRow]]:
        """Aggregate rows in batches of at most `batch_rows`, streamed (bounded memory).

        `until_ms` keeps rows first seen before it; `shadow` filters active/shadow rows.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        where: list[str] = []
        args: list[object] = []
        if org_id is not None:
            if org_id not in self._orgs:
                return
            where.append("org = ?")
            args.append(self._orgs[org_id])
        if shadow is not None:
            where.append("shadow = ?")
            args.append(int(shadow))
        if until_ms is not None:
            where.append("first_seen_ms < ?")
            args.append(until_ms)
        sql = (
            "SELECT day, org, sha256, model_version, shadow, verdict, count, endpoints, "  # noqa: S608
            "first_seen_ms, last_seen_ms FROM aggregates"
            + (" WHERE " + " AND ".join(where) if where else "")
        )
        names = self._org_names
        conn, own = self._reader()
        try:
            cur = conn.execute(sql, args)
            while chunk := cur.fetchmany(batch_rows):
                yield [_agg_row(r, names) for r in chunk]
        finally:
            if own:
                conn.close()

    def iter_aggregate_columns(
        self, *, shadow: bool, until_ms: int, batch_rows: int = 65_536
    ) -> Iterator[AggregateColumns]:
        """Aggregate rows first seen before `until_ms`, by sample, in columnar batches.

        Sorted by sample (then day and org), so a sample's rows are adjacent and each batch
        needs the vectors of few samples. Memory stays bounded: SQLite sorts in its own
        spilling sorter and one batch of at most `batch_rows` rows is held at a time.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        names = self._org_names
        conn, own = self._reader()
        try:
            cur = conn.execute(
                "SELECT day, org, sha256, model_version, verdict, count, first_seen_ms "
                "FROM aggregates WHERE shadow = ? AND first_seen_ms < ? "
                "ORDER BY sha256, day, org, model_version, verdict",
                (int(shadow), until_ms),
            )
            while True:
                with _gc_paused():
                    chunk = cur.fetchmany(batch_rows)
                    if not chunk:
                        break
                    days, orgs, shas, versions, verdicts, counts, first = zip(*chunk, strict=True)
                    del chunk
                yield AggregateColumns(
                    days,
                    orgs,
                    tuple((k, names[k]) for k in sorted(set(orgs))),
                    shas,
                    versions,
                    verdicts,
                    counts,
                    first,
                )
        finally:
            if own:
                conn.close()

    def feature_vectors(
        self, keys: Iterable[tuple[str, str]], schema: str
    ) -> dict[tuple[str, str], bytes]:
        """The stored vectors of many (org id, sample) pairs at once (missing ones left out).

        Each org reads only the vectors its own endpoints reported.
        """
        by_org: dict[int, list[bytes]] = {}
        for org_id, sha in dict.fromkeys(keys):
            org = self._orgs.get(org_id)
            if org is not None:
                by_org.setdefault(org, []).append(bytes.fromhex(sha))
        out: dict[tuple[str, str], bytes] = {}
        conn, own = self._reader()
        try:
            for org, shas in by_org.items():
                name = self._org_names[org]
                for i in range(0, len(shas), 500):
                    part = shas[i : i + 500]
                    marks = ",".join("?" * len(part))
                    for sha, vec in conn.execute(
                        "SELECT o.sha256, v.vector FROM org_vectors o "  # noqa: S608 - placeholders only
                        "JOIN vectors v ON v.digest = o.digest "
                        f"WHERE o.org = ? AND o.schema = ? AND o.sha256 IN ({marks})",
                        [org, schema, *part],
                    ):
                        out[(name, sha.hex())] = bytes(vec)
        finally:
            if own:
                conn.close()
        return out
