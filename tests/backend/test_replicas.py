"""Two `fleetward backend serve` processes on one store see each other's policy changes.

Real processes on loopback: on one SQLite file (WAL) and on one PostgreSQL database (needs
`FLEETWARD_TEST_PG_URL`, from `.ci/postgres.sh`; skipped cleanly when unset outside CI). A
change made through replica A must reach an agent's push channel held on replica B, and B's
check-in must answer from it; a change made through B afterwards must not be refused as a
conflict because B had not written the previous one itself. A token revoked through A must
be refused by B (which had cached it) within `REVOKE_BOUND_S`, and B's open channel for it
must end.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.store import Store, open_store
from tests.backend.conftest import NOW, ServerProcess, free_port
from tests.backend.test_push import Listener

PG_URL = os.environ.get("FLEETWARD_TEST_PG_URL")
# The design latency is the feed's SQLite poll (0.2 s) or one NOTIFY; the bound is one
# second, plus a margin for a shared, loaded 2-core machine (each poll is one HTTP request).
REVOKE_BOUND_S = 2.0


def _prepare(target: str, tmp_path: Path, repo_dir: Path) -> tuple[str, str, str]:
    """Admin token, org and enroll token, made in the shared store before the replicas start."""
    store = open_store(target, synchronous="NORMAL")
    try:
        token = store.create_admin_token(NOW)
        made = store.create_org("replicated", NOW)
    finally:
        store.close()
    return token, made.org_id, made.enroll_token


def _replicas(db: str, repo_dir: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = ServerProcess(Path(db), repo_dir, free_port())
    b = ServerProcess(Path(db), repo_dir, free_port())
    a.db = b.db = db  # type: ignore[assignment]  # a URL passes through as a string
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def _exercise(a: ServerProcess, b: ServerProcess, admin_token: str, enroll: str) -> None:
    admin = {"authorization": f"Bearer {admin_token}"}
    with httpx.Client(timeout=20) as client:
        r = client.post(a.url + "/v1/enroll", headers={"authorization": f"Bearer {enroll}"})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        first = client.put(a.url + "/v1/admin/mode", json={"mode": "enforce"}, headers=admin)
        assert first.status_code == 200, first.text
        listener = Listener(b.url, token)  # the agent holds its channel on replica B
        try:
            seen = listener.versions.get(timeout=20)
            while seen < first.json()["version"]:  # B may have connected before it caught up
                seen = listener.versions.get(timeout=20)
            off = client.put(a.url + "/v1/admin/mode", json={"mode": "off"}, headers=admin)
            assert off.status_code == 200, off.text
            assert listener.versions.get(timeout=20) == off.json()["version"]
            answer = client.get(b.url + "/v1/checkin", headers={"authorization": f"Bearer {token}"})
            assert answer.json()["mode"] == "off"
            assert answer.json()["policy_version"] == off.json()["version"]
            # B never wrote the last change itself; its change applies on top, no 409
            back = client.put(b.url + "/v1/admin/mode", json={"mode": "enforce"}, headers=admin)
            assert back.status_code == 200, back.text
            assert back.json()["version"] == off.json()["version"] + 1
            assert listener.versions.get(timeout=20) == back.json()["version"]
        finally:
            listener.close()


def _revoke_across(a: ServerProcess, b: ServerProcess, admin_token: str, enroll: str) -> None:
    admin = {"authorization": f"Bearer {admin_token}"}
    with httpx.Client(timeout=20) as client:
        tokens = []
        for _ in range(2):
            r = client.post(a.url + "/v1/enroll", headers={"authorization": f"Bearer {enroll}"})
            assert r.status_code == 201, r.text
            tokens.append((r.json()["endpoint_id"], r.json()["token"]))
        (gone_id, gone), (_kept_id, kept) = tokens
        for _eid, token in tokens:  # B accepts both, so it holds both in its principal cache
            bearer = {"authorization": f"Bearer {token}"}
            assert client.get(b.url + "/v1/checkin", headers=bearer).status_code == 200
        held, other = Listener(b.url, gone), Listener(b.url, kept)
        try:
            held.versions.get(timeout=20)
            other.versions.get(timeout=20)
            r = client.delete(a.url + f"/v1/admin/endpoints/{gone_id}/tokens", headers=admin)
            assert r.status_code == 200, r.text
            revoked_at = time.monotonic()
            statuses = []
            while time.monotonic() - revoked_at < REVOKE_BOUND_S:
                r = client.get(b.url + "/v1/checkin", headers={"authorization": f"Bearer {gone}"})
                statuses.append(r.status_code)
                if r.status_code == 401:
                    break
            took = time.monotonic() - revoked_at
            assert statuses[-1] == 401, f"B still accepts the revoked token: {statuses[-5:]}"
            print(f"revocation reached replica B after {took:.3f} s ({len(statuses)} polls)")
            assert held.ended.wait(timeout=REVOKE_BOUND_S), "B's channel for it stayed open"
            assert not other.ended.is_set()
            bearer = {"authorization": f"Bearer {kept}"}
            assert client.get(b.url + "/v1/checkin", headers=bearer).status_code == 200
        finally:
            held.close()
            other.close()


@pytest.mark.slow
def test_sqlite_replicas_see_each_others_policy_changes_and_push_across(
    tmp_path: Path, repo_dir: Path
) -> None:
    db = str(tmp_path / "shared.db")
    Store(db).close()
    admin_token, _org, enroll = _prepare(db, tmp_path, repo_dir)
    for a, b in _replicas(db, repo_dir):
        _exercise(a, b, admin_token, enroll)


@pytest.mark.slow
def test_sqlite_token_revoked_through_one_replica_is_refused_by_the_other_within_the_bound(
    tmp_path: Path, repo_dir: Path
) -> None:
    db = str(tmp_path / "shared.db")
    Store(db).close()
    admin_token, _org, enroll = _prepare(db, tmp_path, repo_dir)
    for a, b in _replicas(db, repo_dir):
        _revoke_across(a, b, admin_token, enroll)


@pytest.fixture
def pg_database() -> Iterator[str]:
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("FLEETWARD_TEST_PG_URL is unset in CI: .ci/run must start PostgreSQL")
        pytest.skip("FLEETWARD_TEST_PG_URL is unset (run `.ci/postgres.sh` to start a server)")
    import psycopg

    name = "fw_replicas_" + secrets.token_hex(4)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # a fresh database: no shared schema state
    base, _, _db = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow
def test_postgres_replicas_see_each_others_policy_changes_and_push_across(
    pg_database: str, tmp_path: Path, repo_dir: Path
) -> None:
    admin_token, _org, enroll = _prepare(pg_database, tmp_path, repo_dir)
    for a, b in _replicas(pg_database, repo_dir):
        _exercise(a, b, admin_token, enroll)


@pytest.mark.slow
def test_postgres_token_revoked_through_one_replica_is_refused_by_the_other_within_the_bound(
    pg_database: str, tmp_path: Path, repo_dir: Path
) -> None:
    admin_token, _org, enroll = _prepare(pg_database, tmp_path, repo_dir)
    for a, b in _replicas(pg_database, repo_dir):
        _revoke_across(a, b, admin_token, enroll)
