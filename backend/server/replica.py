"""Keep one backend process's view of the policy fresh when other processes change it.

Several `fleetward backend serve` processes (replicas) share one store. Each answers check-ins
from the policy it holds in memory, so each must learn of a change another replica made, and
fast: the kill switch is a policy change. `PolicyFeed` holds this process's current
`PolicyRecord` and watches the shared store for a newer *published* version:

- PostgreSQL: a trigger on `policy_published` (installed once, idempotently, under an
  advisory lock) sends `NOTIFY fleetward_policy, '<schema>:<version>'` when the transaction
  that marks a version published commits; the feed `LISTEN`s on its own connection, and
  still reads the newest published version every `fallback_poll_s` in case a notification
  was lost with a dropped connection.
- SQLite (replicas on one host, one file in WAL mode): a read-only connection checks
  `PRAGMA data_version` (changes when another connection committed anything) and then the
  newest published version every `poll_s` (0.2 s): microseconds each, no writer is blocked.

Published, not committed: a change is COMMITted first and signed into the TUF repository
after (`Store.append_policy`), so an agent told "version N is out" at the COMMIT could fetch
and find N-1, and then wait a whole polling interval. The feed therefore follows
`policy_published` (written once `publish` returned), and with `served_version` (the version
the TUF repository this process serves carries, `served_policy_version`) it never goes past
what its own repository serves either: every notice it causes, and every check-in answer, is
fetchable and verifiable from this replica. A version read back is handed to
`on_change(old, new)` on the event loop (the push hub turns it into notices). Changes made
in this process are offered directly (`offer`, after their publication), so they do not wait
for the next poll.

Reconciliation: a process killed between a change's COMMIT and its publication (or a
`publish` that failed) leaves a version recorded and unannounced until the next change. So
every `reconcile_s` (2 s) each feed compares the newest committed version with the newest
published one; a version it finds pending on two looks in a row (so at least `reconcile_s`
old: a replica in the middle of publishing it is not raced) it publishes itself through
`publish_pending` (serialised across replicas by the store, which re-checks under its
lock), and the publication is then announced like any other. `backend serve` also publishes
at start (`backend.admin.publish_pending`), before it answers anything.

Revocations ride the same feed. Each process caches the principals of tokens it accepted,
so a token revoked through replica A stayed valid on replica B. A revoke now appends the
token hashes to `token_revocations` (seq order = commit order) in its own transaction; the
feed reads rows past the last seq it saw (PostgreSQL: a trigger NOTIFYs `<schema>:revoked`;
SQLite: the same `data_version` poll), drops them from the store's cache
(`forget_tokens`) and hands them to `on_revoke` (the push hub closes their channels). On
its first read the feed drops the whole cache, so nothing cached before it ran survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from agent.policy import DEFAULT_POLICY_TARGET, PolicyDocumentModel
from backend._clock import monotonic_s
from backend.store import PolicyRecord

__all__ = ["PolicyFeed", "PolicySource", "served_policy_version"]

log = logging.getLogger(__name__)

_CHANNEL = "fleetward_policy"
_TRIGGER_LOCK = 0x66_77_70_75_73_68  # "fwpush": serialises trigger creation across replicas
_TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION fleetward_policy_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{_CHANNEL}', TG_TABLE_SCHEMA || ':' || NEW.version::text);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS fleetward_policy_notify ON policy_history;
DROP TRIGGER IF EXISTS fleetward_policy_notify ON policy_published;
CREATE TRIGGER fleetward_policy_notify AFTER INSERT ON policy_published
    FOR EACH ROW EXECUTE FUNCTION fleetward_policy_notify();
CREATE OR REPLACE FUNCTION fleetward_revoke_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{_CHANNEL}', TG_TABLE_SCHEMA || ':revoked');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS fleetward_revoke_notify ON token_revocations;
CREATE TRIGGER fleetward_revoke_notify AFTER INSERT ON token_revocations
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward_revoke_notify();
"""


class PolicySource(Protocol):
    """What the feed needs of a store (both `Store` and `PostgresStore` have it)."""

    def current_policy(self) -> PolicyRecord | None:
        """The policy this store last saw."""

    def forget_tokens(self, token_hashes: Iterable[str] | None) -> None:
        """Drop cached principals of `token_hashes` (None: all)."""


OnChange = Callable[[PolicyRecord | None, PolicyRecord], None]
OnRevoke = Callable[[frozenset[str]], None]
_Read = Callable[[int], Awaitable[PolicyRecord | None]]


def served_policy_version(repo_dir: str | Path) -> int:
    """The policy version the TUF repository at `repo_dir` serves now (0: none).

    Follows the chain an agent's updater follows (timestamp -> its snapshot -> its targets ->
    the fleet default policy target), reading the versioned files a client fetches, so the
    answer is what a fetch from this directory would verify, never a half-written publication
    (the repository writes the timestamp last). Signatures are not checked here: the agent
    checks them; this only asks how far publication has got.
    """
    meta = Path(repo_dir) / "metadata"
    try:
        stamp = json.loads((meta / "timestamp.json").read_bytes())
        snap_v = stamp["signed"]["meta"]["snapshot.json"]["version"]
        snap = json.loads((meta / f"{snap_v}.snapshot.json").read_bytes())
        targets_v = snap["signed"]["meta"]["targets.json"]["version"]
        targets = json.loads((meta / f"{targets_v}.targets.json").read_bytes())
        info = targets["signed"]["targets"].get(DEFAULT_POLICY_TARGET)
        if info is None:
            return 0
        folder, _, name = DEFAULT_POLICY_TARGET.rpartition("/")
        stored = Path(repo_dir) / "targets" / folder / f"{info['hashes']['sha256']}.{name}"
        return int(json.loads(stored.read_bytes())["version"])
    except FileNotFoundError:
        return 0


def _record(row: tuple[Any, ...]) -> PolicyRecord:
    """A `policy_history` row (either dialect) as a `PolicyRecord`."""
    version, changed_at, actor, action, document = row
    at = (
        changed_at if isinstance(changed_at, dt.datetime) else dt.datetime.fromisoformat(changed_at)
    )
    return PolicyRecord(
        int(version),
        at.astimezone(dt.UTC),
        str(actor),
        str(action),
        PolicyDocumentModel.model_validate_json(document),
    )


class PolicyFeed:
    """This process's current policy, refreshed from the shared store (see the module doc).

    `run()` is the watching task (started by the app's lifespan); without it, `latest()`
    falls back to asking the store, so an app served without a lifespan stays correct.
    `served_version()` (optional, called in a worker thread) is the policy version the TUF
    repository this process serves carries: the feed never adopts a newer one.
    `publish_pending()` (optional, called in a worker thread) publishes the newest recorded
    version if it is pending; the feed calls it when reconciliation finds one (module doc).
    """

    def __init__(
        self,
        store: PolicySource,
        *,
        on_change: OnChange | None = None,
        on_revoke: OnRevoke | None = None,
        poll_s: float = 0.2,
        fallback_poll_s: float = 1.0,
        served_version: Callable[[], int] | None = None,
        publish_pending: Callable[[], object] | None = None,
        reconcile_s: float = 2.0,
    ) -> None:
        if not 0 < poll_s <= 5 or not 0 < fallback_poll_s <= 60:
            raise ValueError("poll_s must be in (0, 5] and fallback_poll_s in (0, 60]")
        if not 0 < reconcile_s <= 600:
            raise ValueError("reconcile_s must be in (0, 600]")
        self.store = store
        self.on_change, self.on_revoke = on_change, on_revoke
        self.revoked_seq: int | None = None  # the last revocation seen; None: none read yet
        self.revocations_seen = 0
        self.poll_s, self.fallback_poll_s = poll_s, fallback_poll_s
        self.current: PolicyRecord | None = store.current_policy()
        self.served_version = served_version
        self.publish_pending, self.reconcile_s = publish_pending, reconcile_s
        self.reconciled = 0  # versions this feed found pending and published
        self._reconcile_at = 0.0  # monotonic seconds of the next look
        self._pending_seen: int | None = None  # the pending version the last look found
        self.running = False
        self.changes_seen = 0
        self._synced = False  # the first read replaces `current` (it may be unpublished)
        self._behind = 0  # a published version this process's repository does not serve yet
        self._url: str | None = getattr(store, "url", None)
        self._schema: str | None = getattr(store, "schema", None)
        self._path: str | None = getattr(store, "path", None)
        # an in-memory SQLite store has one connection in one process: no replica, no feed to
        # run, and its own record is the only one (as before the feed existed)
        self._alone = self._path is not None and (
            self._path in (":memory:", "") or self._path.startswith("file::memory:")
        )

    @property
    def is_postgres(self) -> bool:
        """True when the store is PostgreSQL (LISTEN/NOTIFY), else a SQLite file (polling)."""
        return self._url is not None

    def latest(self) -> PolicyRecord | None:
        """The newest published policy this process knows of (what a check-in answers from)."""
        if not self.running or self._alone:
            return self.store.current_policy()
        return self.current

    def offer(self, record: PolicyRecord) -> None:
        """Adopt a change made in this process now (call on the event loop)."""
        old = self.current
        if old is not None and record.version <= old.version:
            return
        self.current = record
        self.changes_seen += 1
        if self.on_change is not None:
            self.on_change(old, record)

    def _revocations(self, rows: list[tuple[int, str]]) -> frozenset[str] | None:
        """Fold rows of `token_revocations` (seq, hash) read past `revoked_seq`.

        Returns the hashes to forget; None on the first read (forget every cached principal).
        """
        first = self.revoked_seq is None
        if rows:
            self.revoked_seq = max(self.revoked_seq or 0, max(seq for seq, _h in rows))
        elif first:
            self.revoked_seq = 0
        return None if first else frozenset(h for _seq, h in rows)

    def _forget(self, hashes: frozenset[str] | None) -> None:
        """Drop revoked tokens from the store's cache and close their channels (on the loop)."""
        if hashes is not None and not hashes:
            return
        self.store.forget_tokens(hashes)
        if hashes is not None:
            self.revocations_seen += len(hashes)
            if self.on_revoke is not None:
                self.on_revoke(hashes)

    async def _catch_up(self, published: int, read: _Read) -> None:
        """Adopt the newest version that is published and that this process's repository serves."""
        known = self.current.version if self.current is not None else 0
        if self._synced and published <= known:
            return
        target = published
        if self.served_version is not None and published > 0:
            target = min(published, await asyncio.to_thread(self.served_version))
        self._behind = published if target < published else 0
        if target <= 0 or (self._synced and target <= known):
            self._synced = self._synced or target <= 0
            return
        record = await read(target)
        if record is None:
            return
        if not self._synced and self.current is not None and record.version < known:
            self.current = record  # what this process held had not been published: no notice
        else:
            self.offer(record)
        self._synced = True

    async def _reconcile(self, counts: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        """Publish a version found committed and unpublished on two looks in a row."""
        if self.publish_pending is None or monotonic_s() < self._reconcile_at:
            return
        self._reconcile_at = monotonic_s() + self.reconcile_s
        committed, published = await counts()
        pending = committed if committed > published else None
        if pending is not None and pending == self._pending_seen:
            try:
                await asyncio.to_thread(self.publish_pending)
            except Exception:  # supervisor: the repository may be down; look again later
                log.exception("policy v%d is still unpublished; retrying", pending)
            else:
                self.reconciled += 1
                log.warning("published policy v%d, left pending by its writer", pending)
        self._pending_seen = pending

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the store until `stop` is set (a supervisor loop: failures are logged, retried)."""
        self.running = True
        try:
            while not stop.is_set():
                try:
                    if self.is_postgres:
                        await self._listen(stop)
                    else:
                        await self._poll_sqlite(stop)
                except Exception:  # supervisor: log, wait, watch again
                    log.exception("policy feed failed; retrying")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
        finally:
            self.running = False

    async def _poll_sqlite(self, stop: asyncio.Event) -> None:
        assert self._path is not None
        if self._alone:
            await stop.wait()  # one connection, one process: nothing else can change it
            return
        conn = sqlite3.connect(
            f"file:{self._path}?mode=ro", uri=True, timeout=0.5, check_same_thread=False
        )
        seen = [-1]

        def newest() -> tuple[int, list[tuple[int, str]]] | None:  # in a worker thread
            data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if data_version == seen[0] and not self._behind:
                return None
            seen[0] = data_version
            if self.revoked_seq is None:  # first read: start at the end, forget everything
                rows = [(int(conn.execute(_LAST_REVOKED_SQL).fetchone()[0]), "")]
            else:
                rows = conn.execute(_REVOKED_SQL, (self.revoked_seq,)).fetchall()
            return int(conn.execute(_MAX_SQL).fetchone()[0]), rows

        def record(version: int) -> PolicyRecord | None:  # in a worker thread
            row = conn.execute(_RECORD_SQL, (version,)).fetchone()
            return None if row is None else _record(tuple(row))

        async def read(version: int) -> PolicyRecord | None:
            return await asyncio.to_thread(record, version)

        def counts() -> tuple[int, int]:  # in a worker thread
            committed, published = conn.execute(_COUNTS_SQL).fetchone()
            return int(committed), int(published)

        async def look() -> tuple[int, int]:
            return await asyncio.to_thread(counts)

        try:
            while not stop.is_set():
                found = await asyncio.to_thread(newest)
                if found is not None:
                    version, rows = found
                    self._forget(self._revocations(rows))
                    await self._catch_up(version, read)
                await self._reconcile(look)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
        finally:
            conn.close()

    async def _listen(self, stop: asyncio.Event) -> None:
        import psycopg

        assert self._url is not None
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        try:
            if self._schema is not None:
                await conn.execute(f'SET search_path TO "{self._schema}"')
            schema = await _scalar(conn, "SELECT current_schema()")
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_TRIGGER_LOCK,))
                await conn.execute(_TRIGGER_SQL.encode())
            await conn.execute(f"LISTEN {_CHANNEL}")

            async def read(version: int) -> PolicyRecord | None:
                cur = await conn.execute(_RECORD_SQL.replace("?", "%s"), (version,))
                row = await cur.fetchone()
                return None if row is None else _record(tuple(row))

            async def look() -> tuple[int, int]:
                cur = await conn.execute(_COUNTS_SQL)
                row = await cur.fetchone()
                assert row is not None
                return int(row[0]), int(row[1])

            await self._pg_revocations(conn)
            await self._catch_up(int(await _scalar(conn, _MAX_SQL)), read)
            while not stop.is_set():
                newest, revoked = 0, False
                gen = conn.notifies(timeout=self.fallback_poll_s, stop_after=1)
                async for note in gen:
                    where, _, version = note.payload.rpartition(":")
                    if where == schema and version.isdigit():
                        newest = max(newest, int(version))
                    revoked |= where == schema and version == "revoked"
                if newest:
                    await self._catch_up(newest, read)
                if not newest and not revoked:  # quiet, or a lost notification: look anyway
                    await self._catch_up(int(await _scalar(conn, _MAX_SQL)), read)
                await self._pg_revocations(conn)  # one indexed read; a lost NOTIFY costs nothing
                await self._reconcile(look)
        finally:
            await conn.close()

    async def _pg_revocations(self, conn: Any) -> None:
        if self.revoked_seq is None:
            rows = [(int(await _scalar(conn, _LAST_REVOKED_SQL)), "")]
        else:
            cur = await conn.execute(_REVOKED_SQL.replace("?", "%s"), (self.revoked_seq,))
            rows = [(int(seq), str(h)) for seq, h in await cur.fetchall()]
        self._forget(self._revocations(rows))


_MAX_SQL = "SELECT coalesce(max(version), 0) FROM policy_published"
_COUNTS_SQL = (
    "SELECT (SELECT coalesce(max(version), 0) FROM policy_history), "
    "(SELECT coalesce(max(version), 0) FROM policy_published)"
)
_RECORD_SQL = (
    "SELECT version, changed_at, actor, action, document FROM policy_history WHERE version = ?"
)
_LAST_REVOKED_SQL = "SELECT coalesce(max(seq), 0) FROM token_revocations"
_REVOKED_SQL = "SELECT seq, token_hash FROM token_revocations WHERE seq > ? ORDER BY seq"


async def _scalar(conn: Any, query: str) -> Any:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return row[0]
