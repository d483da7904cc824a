"""Two `fleetward backend serve` processes on one store see each other's policy changes.

Real processes on loopback: on one SQLite file (WAL) and on one PostgreSQL database (needs
`FLEETWARD_TEST_PG_URL`, from `.ci/postgres.sh`; skipped cleanly when unset outside CI). A
change made through replica A must reach an agent's push channel held on replica B, and B's
check-in must answer from it; a change made through B afterwards must not be refused as a
conflict because B had not written the previous one itself. A token revoked through A must
be refused by B (which had cached it) within `REVOKE_BOUND_S`, and B's open channel for it
must end.

A replica announces only what an agent can fetch and verify from it: a change another
replica has COMMITted but not yet signed into the TUF repository (held there by the
`FLEETWARD_FAULT_PAUSE_PUBLISH` hook) causes no notice and no check-in answer on B; every
notice B sends is followed by a TUF fetch from B that verifies exactly that version.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tuf.ngclient import Updater  # type: ignore[attr-defined]

from agent.decision import Mode
from agent.policy import DEFAULT_POLICY_TARGET
from backend._clock import utc_now
from backend.admin import repository_publisher, set_mode
from backend.server.replica import served_policy_version
from backend.store import Store, open_store
from tests.backend.conftest import NOW, ServerProcess, free_port
from tests.backend.server.test_push import Listener

PG_URL = os.environ.get("FLEETWARD_TEST_PG_URL")
# The design latency is the feed's SQLite poll (0.2 s) or one NOTIFY; the bound is one
# second, plus a margin for a shared, loaded 2-core machine (each poll is one HTTP request).
# Revocations and policy changes ride the same feed, so they share the bound.
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


def _served_policy(url: str, repo_dir: Path, client_dir: Path) -> dict[str, object]:
    """The fleet policy as an agent gets it: fetched over HTTP and verified by TUF."""
    shutil.rmtree(client_dir, ignore_errors=True)
    (client_dir / "targets").mkdir(parents=True)
    updater = Updater(
        metadata_dir=str(client_dir),
        metadata_base_url=f"{url}/tuf/metadata/",
        target_dir=str(client_dir / "targets"),
        target_base_url=f"{url}/tuf/targets/",
        bootstrap=(repo_dir / "metadata" / "1.root.json").read_bytes(),  # the trust anchor
    )
    updater.refresh()
    info = updater.get_targetinfo(DEFAULT_POLICY_TARGET)
    assert info is not None, "no fleet policy is published"
    doc: dict[str, object] = json.loads(Path(updater.download_target(info)).read_bytes())
    return doc


class _PausedChange:
    """Replica A with the publication fault hook, and a policy change caught at its pause.

    `start()` launches A with `FLEETWARD_FAULT_PAUSE_PUBLISH`; `change(mode)` sends the change
    to A in a thread and returns once A's marker file (holding A's pid) shows the change is
    COMMITted and its signing has not begun. The answer never comes (A is killed there).
    """

    def __init__(self, db: str, repo_dir: Path, tmp_path: Path) -> None:
        self.server = ServerProcess(Path(db), repo_dir, free_port())
        self.server.db = db  # type: ignore[assignment]  # a URL passes through as a string
        self.marker = tmp_path / "paused"
        self.answers: list[object] = []

    def start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with monkeypatch.context() as env:
            env.setenv("FLEETWARD_FAULT_PAUSE_PUBLISH", str(self.marker))
            self.server.start()

    def change(self, admin: dict[str, str], mode: str) -> None:
        def put() -> None:
            try:
                self.answers.append(
                    httpx.put(
                        self.server.url + "/v1/admin/mode",
                        json={"mode": mode},
                        headers=admin,
                        timeout=60,
                    )
                )
            except httpx.TransportError as exc:
                self.answers.append(exc)

        threading.Thread(target=put, daemon=True).start()
        deadline = time.monotonic() + 20
        while not self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.marker.exists(), f"the change never reached the fault point: {self.answers}"
        assert self.server.proc is not None
        assert self.marker.read_text() == str(self.server.proc.pid)  # A paused, nobody else


def _notices_are_fetchable(
    listener: Listener,
    b: ServerProcess,
    repo_dir: Path,
    client_dir: Path,
    *,
    for_s: float,
    until_heard: int | None = None,
) -> list[int]:
    """Each notice B sends within `for_s` (or until `until_heard`), fetched from B through TUF.

    Every notice is followed at once by a fetch that must verify exactly that version.
    """
    heard: list[int] = []
    until = time.monotonic() + for_s
    while (left := until - time.monotonic()) > 0 and until_heard not in heard:
        try:
            version = listener.versions.get(timeout=left)
        except queue.Empty:
            break
        served = _served_policy(b.url, repo_dir, client_dir)["version"]
        assert served == version, f"B announced v{version}; an agent fetching from B got v{served}"
        heard.append(version)
    return heard


def _announce_only_published(
    db: str, repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_token, _org, enroll = _prepare(db, tmp_path, repo_dir)
    admin = {"authorization": f"Bearer {admin_token}"}
    client_dir = tmp_path / "agent"
    b = ServerProcess(Path(db), repo_dir, free_port())
    b.db = db  # type: ignore[assignment]
    a = _PausedChange(db, repo_dir, tmp_path)
    try:
        b.start()
        a.start(monkeypatch)
        with httpx.Client(timeout=20) as client:
            first = client.put(b.url + "/v1/admin/mode", json={"mode": "enforce"}, headers=admin)
            assert first.status_code == 200, first.text
            r = client.post(b.url + "/v1/enroll", headers={"authorization": f"Bearer {enroll}"})
            bearer = {"authorization": f"Bearer {r.json()['token']}"}
            listener = Listener(b.url, r.json()["token"])  # the agent's channel, on B
            try:
                assert listener.versions.get(timeout=20) == 1
                a.change(admin, "off")  # v2 COMMITted through A; A pauses before signing it
                # B's feed polls every 0.2 s (SQLite) or hears a NOTIFY at once: the old code
                # announced v2 well within a second. (B's reconciliation may publish v2 itself
                # later, once it has seen it pending on two looks 2 s apart: then it serves it.)
                heard = _notices_are_fetchable(listener, b, repo_dir, client_dir, for_s=1.0)
                assert heard == [], f"B announced {heard} before v2 was signed"
                answer = client.get(b.url + "/v1/checkin", headers=bearer).json()
                assert (
                    answer["policy_version"]
                    == _served_policy(b.url, repo_dir, client_dir)["version"]
                )  # B's check-in answers what B's repository serves
                a.server.kill9()
                again = client.put(b.url + "/v1/admin/mode", json={"mode": "detect_only"},
                                   headers=admin)  # fmt: skip
                assert again.status_code == 200, again.text
                assert again.json()["version"] == 3
                heard = _notices_are_fetchable(
                    listener, b, repo_dir, client_dir, for_s=10.0, until_heard=3
                )
                assert heard[-1:] == [3] and set(heard) <= {2, 3}, heard
            finally:
                listener.close()
    finally:
        a.server.stop()  # killed above unless the test failed first
        b.stop()


def test_served_policy_version_is_what_the_repository_chain_reaches(repo_dir: Path) -> None:
    assert served_policy_version(repo_dir) == 0  # initialised, no policy signed yet
    store = Store(":memory:")
    try:
        for mode in (Mode.ENFORCE, Mode.OFF):
            record = set_mode(
                store, repository_publisher(repo_dir), mode, org_id=None, now=utc_now()
            )
            assert served_policy_version(repo_dir) == record.version
    finally:
        store.close()
    assert served_policy_version(repo_dir) == 2


@pytest.mark.slow
def test_sqlite_replica_announces_a_version_only_once_it_serves_it_signed(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "shared.db")
    Store(db).close()
    _announce_only_published(db, repo_dir, tmp_path, monkeypatch)


def _metric(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.slow
def test_each_replica_bounds_and_reports_its_own_push_channels(
    tmp_path: Path, repo_dir: Path
) -> None:
    """The channel bound is per process: B full refuses (503) while A still accepts.

    Each replica's `/metrics` shows its own open count and its own limit; a policy change
    made through A reaches B's channels, and a token revoked through A ends B's channel,
    both within the one propagation bound.
    """
    db = str(tmp_path / "shared.db")
    Store(db).close()
    admin_token, _org, enroll = _prepare(db, tmp_path, repo_dir)
    admin = {"authorization": f"Bearer {admin_token}"}
    a = ServerProcess(Path(db), repo_dir, free_port(), extra=("--max-push-channels", "5"))
    b = ServerProcess(Path(db), repo_dir, free_port(), extra=("--max-push-channels", "2"))
    listeners: list[Listener] = []
    try:
        a.start()
        b.start()
        with httpx.Client(timeout=20) as client:
            first = client.put(a.url + "/v1/admin/mode", json={"mode": "enforce"}, headers=admin)
            assert first.status_code == 200, first.text
            tokens = []
            for _ in range(3):
                r = client.post(a.url + "/v1/enroll", headers={"authorization": f"Bearer {enroll}"})
                assert r.status_code == 201, r.text
                tokens.append((r.json()["endpoint_id"], r.json()["token"]))
            listeners += [Listener(b.url, t) for _e, t in tokens[:2]]  # B is full now
            for listener in listeners:  # B may have connected them before it caught up
                while listener.versions.get(timeout=20) < 1:
                    pass
            refused = client.get(b.url + "/v1/push",
                                 headers={"authorization": f"Bearer {tokens[2][1]}"})  # fmt: skip
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            listeners.append(Listener(a.url, tokens[2][1]))  # A has room: its own bound
            assert listeners[-1].versions.get(timeout=20) == 1
            on_a, on_b = client.get(a.url + "/metrics").text, client.get(b.url + "/metrics").text
            assert (_metric(on_a, "fleetward_push_channels"),
                    _metric(on_a, "fleetward_push_channels_limit"),
                    _metric(on_a, "fleetward_push_refused_total")) == (1, 5, 0)  # fmt: skip
            assert (_metric(on_b, "fleetward_push_channels"),
                    _metric(on_b, "fleetward_push_channels_limit"),
                    _metric(on_b, "fleetward_push_refused_total")) == (2, 2, 1)  # fmt: skip

            off = client.put(a.url + "/v1/admin/mode", json={"mode": "off"}, headers=admin)
            changed_at = time.monotonic()
            for listener in listeners[:2]:  # B's channels, told by B's feed
                assert listener.versions.get(timeout=REVOKE_BOUND_S) == off.json()["version"]
            print(f"policy change reached B's channels after {time.monotonic() - changed_at:.3f} s")
            gone_id = tokens[0][0]
            r = client.delete(a.url + f"/v1/admin/endpoints/{gone_id}/tokens", headers=admin)
            assert r.status_code == 200, r.text
            assert listeners[0].ended.wait(timeout=REVOKE_BOUND_S), "B kept a revoked channel"
            assert not listeners[1].ended.is_set()
            deadline = time.monotonic() + REVOKE_BOUND_S
            while _metric(client.get(b.url + "/metrics").text, "fleetward_push_channels") != 1:
                assert time.monotonic() < deadline, "B still counts the revoked channel"
                time.sleep(0.05)
            assert _metric(client.get(b.url + "/metrics").text, "fleetward_push_revoked_total") == 1
    finally:
        for listener in listeners:
            listener.close()
        a.stop()
        b.stop()


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


@pytest.mark.slow
def test_postgres_replica_announces_a_version_only_once_it_serves_it_signed(
    pg_database: str, tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _announce_only_published(pg_database, repo_dir, tmp_path, monkeypatch)
