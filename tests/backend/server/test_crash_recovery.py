"""kill -9 of the server under telemetry load: every acknowledged batch is counted exactly once.

A sender thread posts batches (each with its own idempotency key) while the server process is
killed with SIGKILL and restarted, three times. Batches whose answer was lost are retried
after the restart, and some acknowledged ones are replayed on purpose. The database must then
hold every acknowledged batch, once: the aggregate counts equal the events of distinct keys.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from agent.telemetry import encode_batch
from backend.store import Store
from tests.backend.conftest import NOW, ServerProcess, free_port, make_event

EVENTS_PER_BATCH = 7


def test_acknowledged_batches_survive_kill_9_and_count_once(tmp_path: Path, repo_dir: Path) -> None:
    db = tmp_path / "crash.db"
    store = Store(db)
    org = store.create_org("acme", NOW)
    creds = store.enroll(org.org_id, NOW)
    store.close()
    server = ServerProcess(db, repo_dir, free_port())
    server.start()
    rng = random.Random(7)
    batches = {
        f"batch-{i:06d}": encode_batch(
            [
                make_event(org.org_id, creds.endpoint_id, f"{rng.randrange(50):064x}")
                for _ in range(EVENTS_PER_BATCH)
            ],
            key=f"batch-{i:06d}",
        )
        for i in range(3000)
    }
    acked: set[str] = set()
    unknown: list[str] = []
    sent: list[str] = []
    acked_per_round: list[int] = []
    stop = threading.Event()
    headers = {"authorization": f"Bearer {creds.token}", "content-type": "application/msgpack"}

    def post(client: httpx.Client, key: str) -> bool:
        try:
            r = client.post(
                server.url + "/v1/telemetry", content=batches[key], headers=headers, timeout=5
            )
        except httpx.TransportError:
            return False
        assert r.status_code < 500 or r.status_code == 503, r.text
        return r.status_code == 200

    def load() -> None:
        with httpx.Client() as client:
            for key in batches:
                if stop.is_set():
                    break
                sent.append(key)
                if post(client, key):
                    acked.add(key)
                else:
                    unknown.append(key)
                    time.sleep(0.05)  # an agent backs off while the backend is down
                if acked and rng.random() < 0.1:  # deliberate replay of an acknowledged batch
                    post(client, rng.choice(sorted(acked)))

    try:
        sender = threading.Thread(target=load)
        sender.start()
        for _ in range(3):
            time.sleep(0.4)
            server.kill9()
            time.sleep(0.1)
            server.start()
            acked_per_round.append(len(acked))
        time.sleep(0.3)
        stop.set()
        sender.join(timeout=60)
        with httpx.Client() as client:
            for key in list(unknown):  # the agent's retry after the outage
                assert post(client, key), key
                acked.add(key)
            for key in rng.sample(sorted(acked), 30):
                assert post(client, key)
    finally:
        server.stop()
    assert unknown, "the kills did not hit the load"
    assert acked_per_round[0] < acked_per_round[1] < acked_per_round[2] < len(acked), (
        "load ran in every round"
    )
    assert acked == set(sent)
    with sqlite3.connect(db) as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM batches")}
        (counted,) = conn.execute("SELECT sum(count) FROM aggregates WHERE shadow = 0").fetchone()
    assert keys == acked
    assert counted == EVENTS_PER_BATCH * len(acked)
