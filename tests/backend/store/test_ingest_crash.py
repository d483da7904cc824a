"""kill -9 inside the one ingest transaction: every table stays consistent.

The telemetry route used to commit the aggregates, then write the rollout evidence
(`endpoint_days`, `arm_days`) in a second transaction; a kill between the two left the gate's
evidence short for good, because the agent's retry is a duplicate. Now the ledger row, the
aggregates, the vectors and the evidence are one transaction. The server is started with a
fault-injection hook (`FLEETWARD_FAULT_PAUSE_INGEST`) that, after the aggregates are written
and before the evidence, drops a marker file and waits: the test kills it there, checks the
marker (the kill landed at that point), restarts without the hook, retries the batch and finds
aggregates, ledger and evidence all counting it once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from agent.decision import Verdict
from agent.features import SCHEMA
from agent.telemetry import encode_batch
from backend.store import Store
from tests.backend.conftest import NOW, ServerProcess, free_port, make_event

VECTOR = bytes(4 * SCHEMA.vector_length)


def _counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        q = {
            "batches": "SELECT count(*) FROM batches WHERE endpoint_id LIKE 'ep_%'",
            "aggregate_events": "SELECT coalesce(sum(count), 0) FROM aggregates WHERE shadow = 0",
            "aggregate_alerts": "SELECT coalesce(sum(count), 0) FROM aggregates "
            "WHERE shadow = 0 AND verdict IN ('block', 'detect', 'blocklisted')",
            "endpoint_day_events": "SELECT coalesce(sum(events), 0) FROM endpoint_days",
            "endpoint_day_alerts": "SELECT coalesce(sum(alerts), 0) FROM endpoint_days",
            "arm_day_events": "SELECT coalesce(sum(events), 0) FROM arm_days",
            "arm_day_alerts": "SELECT coalesce(sum(alerts), 0) FROM arm_days",
            "arm_endpoint_days": "SELECT coalesce(sum(endpoint_days), 0) FROM arm_days",
            "org_vectors": "SELECT count(*) FROM org_vectors",
            "vectors": "SELECT count(*) FROM vectors",
        }
        return {k: int(conn.execute(sql).fetchone()[0]) for k, sql in q.items()}
    finally:
        conn.close()


def test_kill_9_between_aggregates_and_evidence_leaves_every_table_consistent(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "b.db"
    store = Store(db)
    org = store.create_org("acme", NOW)
    creds = store.enroll(org.org_id, NOW)
    store.close()
    verdicts = [Verdict.ALLOW, Verdict.BLOCK, Verdict.DETECT, Verdict.BLOCKLISTED]
    events = [
        make_event(org.org_id, creds.endpoint_id, f"{i % 5:064x}", verdict=verdicts[i % 4],
                   features=VECTOR if i < 5 else None)
        for i in range(40)
    ]  # fmt: skip
    raw = encode_batch(events, key="the-batch")
    headers = {"authorization": f"Bearer {creds.token}", "content-type": "application/msgpack"}
    marker = tmp_path / "paused"

    monkeypatch.setenv("FLEETWARD_FAULT_PAUSE_INGEST", str(marker))
    server = ServerProcess(db, repo_dir, free_port())
    server.start()
    answers: list[object] = []

    def send() -> None:
        try:
            answers.append(
                httpx.post(server.url + "/v1/telemetry", content=raw, headers=headers, timeout=30)
            )
        except httpx.TransportError as exc:
            answers.append(exc)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), f"the ingest never reached the fault point: {answers}"
        assert server.proc is not None and marker.read_text() == str(server.proc.pid)
        server.kill9()
        sender.join(timeout=10)
        assert len(answers) == 1 and isinstance(answers[0], httpx.TransportError)
        # the kill landed mid-transaction: nothing of the batch is visible
        before = _counts(db)
        assert before["batches"] == 0 and before["aggregate_events"] == 0, before
        assert before["endpoint_day_events"] == before["arm_day_events"] == 0, before

        monkeypatch.delenv("FLEETWARD_FAULT_PAUSE_INGEST")
        marker.unlink()
        server.start()
        for _ in range(2):  # the agent's retry, and one replay more: counted once
            r = httpx.post(server.url + "/v1/telemetry", content=raw, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
        assert not marker.exists()
    finally:
        server.stop()

    after = _counts(db)
    alerts = sum(e.verdict.is_alert for e in events)
    assert after == {
        "batches": 1,
        "aggregate_events": 40,
        "aggregate_alerts": alerts,
        "endpoint_day_events": 40,
        "endpoint_day_alerts": alerts,
        "arm_day_events": 40,
        "arm_day_alerts": alerts,
        "arm_endpoint_days": 1,
        "org_vectors": 5,
        "vectors": 1,  # the five samples reported one vector: stored once
    }
