"""kill -9 between a policy change's COMMIT and its publication: the next start publishes it.

`append_policy` used to sign the new version into the TUF repository inside the transaction,
before the COMMIT: a crash or a failed COMMIT after the signing left the repository announcing
a version the store never held. Now the COMMIT comes first and the publication after it. The
server runs with a fault-injection hook (`FLEETWARD_FAULT_PAUSE_PUBLISH`) that, after the
COMMIT and before the signing, drops a marker file holding its pid and waits: the test kills
it there, finds the version recorded and unpublished (the signed repository still serves the
old one), restarts the server without the hook, and fetches the new version through TUF.

Nor does a pending version wait for a restart or the next change: with two replicas, the
one still running finds it committed and unpublished (its feed's reconciliation, every two
seconds), publishes it and announces it on its push channels; the killed one, restarted,
announces the same version on connect and publishes nothing twice (SQLite and PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from agent.decision import Mode
from backend import admin
from backend._clock import utc_now
from backend.store import Store, open_store
from tests.backend.conftest import NOW, ServerProcess, free_port
from tests.backend.server.test_push import Listener
from tests.backend.server.test_replicas import (
    _notices_are_fetchable,
    _PausedChange,
    _served_policy,
    pg_database,
)

__all__ = ["pg_database"]


def _published_versions(db: Path) -> tuple[int, list[int]]:
    conn = sqlite3.connect(db)
    try:
        recorded = conn.execute("SELECT max(version) FROM policy_history").fetchone()[0]
        published = [r[0] for r in conn.execute("SELECT version FROM policy_published")]
        return int(recorded), sorted(published)
    finally:
        conn.close()


def test_kill_9_after_commit_before_publish_is_published_at_the_next_start(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "b.db"
    store = Store(db)
    admin_token = store.create_admin_token(NOW)
    # TUF expiries are relative to real time (the server signs with its own clock too)
    publish = admin.repository_publisher(repo_dir)
    admin.set_mode(store, publish, Mode.ENFORCE, org_id=None, now=utc_now())
    store.close()
    headers = {"authorization": f"Bearer {admin_token}"}
    marker = tmp_path / "paused"
    client_dir = tmp_path / "agent"

    monkeypatch.setenv("FLEETWARD_FAULT_PAUSE_PUBLISH", str(marker))
    server = ServerProcess(db, repo_dir, free_port())
    server.start()
    answers: list[object] = []

    def kill_switch() -> None:
        try:
            answers.append(
                httpx.put(
                    server.url + "/v1/admin/mode", json={"mode": "off"}, headers=headers, timeout=30
                )
            )
        except httpx.TransportError as exc:
            answers.append(exc)

    caller = threading.Thread(target=kill_switch)
    try:
        assert _served_policy(server.url, repo_dir, client_dir)["version"] == 1
        caller.start()
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), f"the change never reached the fault point: {answers}"
        assert server.proc is not None and marker.read_text() == str(server.proc.pid)
        server.kill9()
        caller.join(timeout=10)
        assert len(answers) == 1 and isinstance(answers[0], httpx.TransportError)
        # the kill landed between the two: v2 is committed, and nothing announced it
        assert _published_versions(db) == (2, [1])

        monkeypatch.delenv("FLEETWARD_FAULT_PAUSE_PUBLISH")
        marker.unlink()
        server.start()
        assert _published_versions(db) == (2, [1, 2])  # published at start, no new change
        served = _served_policy(server.url, repo_dir, client_dir)
        assert served["version"] == 2
        assert served["default"]["mode"] == "off"  # type: ignore[index]
        assert not marker.exists()
    finally:
        server.stop()


def _versions(target: str) -> tuple[int, list[int]]:
    """(newest recorded version, published versions) read straight from the database."""
    if not target.startswith("postgresql://"):
        return _published_versions(Path(target))
    import psycopg

    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT max(version) FROM policy_history").fetchone()
        assert row is not None
        published = [int(r[0]) for r in conn.execute("SELECT version FROM policy_published")]
    return int(row[0]), sorted(published)


def _pending_is_published_and_announced_by_the_survivor(
    target: str, tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(target, synchronous="NORMAL")
    try:
        admin_token = store.create_admin_token(NOW)
        enroll = store.create_org("survivor", NOW).enroll_token
        # TUF expiries are relative to real time (the servers sign with their own clocks too)
        admin.set_mode(store, admin.repository_publisher(repo_dir), Mode.ENFORCE, org_id=None,
                       now=utc_now())  # fmt: skip
    finally:
        store.close()
    headers = {"authorization": f"Bearer {admin_token}"}
    b = ServerProcess(Path(target), repo_dir, free_port())
    b.db = target  # type: ignore[assignment]  # a URL passes through as a string
    a = _PausedChange(target, repo_dir, tmp_path)
    client = httpx.Client(timeout=20)
    listeners: list[Listener] = []
    try:
        b.start()
        a.start(monkeypatch)
        r = client.post(b.url + "/v1/enroll", headers={"authorization": f"Bearer {enroll}"})
        token = r.json()["token"]
        listeners.append(on_b := Listener(b.url, token))
        assert on_b.versions.get(timeout=20) == 1
        a.change(headers, "off")
        a.server.kill9()
        assert _versions(target) == (2, [1]), "the kill did not land between COMMIT and signing"
        # no restart and no new change: B publishes v2 and announces it
        heard = _notices_are_fetchable(on_b, b, repo_dir, tmp_path / "agent-b", for_s=15.0,
                                       until_heard=2)  # fmt: skip
        assert heard == [2], f"B announced {heard}; v2 stayed pending"
        assert _versions(target) == (2, [1, 2])
        assert len(a.answers) == 1 and isinstance(a.answers[0], httpx.TransportError)

        monkeypatch.delenv("FLEETWARD_FAULT_PAUSE_PUBLISH", raising=False)
        a.server.start()  # the killed replica comes back: same version, nothing signed twice
        listeners.append(on_a := Listener(a.server.url, token))
        assert _notices_are_fetchable(on_a, a.server, repo_dir, tmp_path / "agent-a",
                                      for_s=5.0, until_heard=2) == [2]  # fmt: skip
        bearer = {"authorization": f"Bearer {token}"}
        answer = client.get(a.server.url + "/v1/checkin", headers=bearer).json()
        assert (answer["policy_version"], answer["mode"]) == (2, "off")
        assert _versions(target) == (2, [1, 2])
    finally:
        for listener in listeners:
            listener.close()
        client.close()
        a.server.stop()
        b.stop()


@pytest.mark.slow
def test_sqlite_version_left_pending_by_a_kill_9_is_published_and_announced_by_the_survivor(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shared.db"
    Store(db).close()
    _pending_is_published_and_announced_by_the_survivor(str(db), tmp_path, repo_dir, monkeypatch)


@pytest.mark.slow
def test_postgres_version_left_pending_by_a_kill_9_is_published_and_announced_by_the_survivor(
    pg_database: str, tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pending_is_published_and_announced_by_the_survivor(
        pg_database, tmp_path, repo_dir, monkeypatch
    )
