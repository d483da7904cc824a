"""kill -9 between a policy change's COMMIT and its publication: the next start publishes it.

`append_policy` used to sign the new version into the TUF repository inside the transaction,
before the COMMIT: a crash or a failed COMMIT after the signing left the repository announcing
a version the store never held. Now the COMMIT comes first and the publication after it. The
server runs with a fault-injection hook (`FLEETWARD_FAULT_PAUSE_PUBLISH`) that, after the
COMMIT and before the signing, drops a marker file holding its pid and waits: the test kills
it there, finds the version recorded and unpublished (the signed repository still serves the
old one), restarts the server without the hook, and fetches the new version through TUF.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from tuf.ngclient import Updater

from agent.decision import Mode
from agent.policy import DEFAULT_POLICY_TARGET
from backend import admin
from backend._clock import utc_now
from backend.store import Store
from tests.backend.conftest import NOW, ServerProcess, free_port


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
