"""Issue 5's "done when": an agent enrolled against a running `fleetward backend serve` receives
a model and a policy through the TUF repository served under /tuf/, scans, and its telemetry
shows up in the aggregates. Everything is real: the server is a subprocess on loopback, the
agent is `fleetward-agent run --once` in another, the repository is signed with real keys.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx

from agent._clock import utc_now
from backend.store import Store
from model_store.repository import init_repository, publish_model
from tests.backend.conftest import ROOT, ServerProcess, free_port


def test_enrolled_agent_gets_model_and_policy_scans_and_its_telemetry_is_aggregated(
    tmp_path: Path, bundles: dict[int, Path]
) -> None:
    repo, db = tmp_path / "repo", tmp_path / "backend.db"
    init_repository(repo, now=utc_now())  # TUF expiries are relative to real time
    publish_model(repo, bundles[1], now=utc_now())
    store = Store(db)
    admin = {"authorization": f"Bearer {store.create_admin_token(utc_now())}"}
    store.close()
    files = tmp_path / "incoming"
    files.mkdir()
    samples = {
        "tool.elf": b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40,
        "setup.sh": b"#!/bin/sh\necho installing\n" * 50,
        "notes.txt": b"plain text, nothing to see\n" * 30,
    }
    for name, data in samples.items():
        (files / name).write_bytes(data)

    server = ServerProcess(db, repo, free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            made = client.post("/v1/admin/orgs", json={"name": "acme"}, headers=admin)
            assert made.status_code == 201, made.text
            org_id, enroll_token = made.json()["org_id"], made.json()["enroll_token"]
            # the operator assigns model v1: the backend signs policy v1 into the repository
            assigned = client.put("/v1/admin/model", json={"model_version": 1}, headers=admin)
            assert assigned.status_code == 200, assigned.text

            state = tmp_path / "agent-state"
            run = subprocess.run(  # noqa: S603
                [
                    sys.executable, "-m", "agent", "run", "--once",
                    "--repo-url", f"{server.url}/tuf",
                    "--backend", server.url, "--enroll-token", enroll_token,
                    "--state-dir", str(state),
                    "--root", str(repo / "metadata" / "1.root.json"),
                    "--watch", str(files), "--json",
                ],
                capture_output=True, cwd=ROOT, text=True, timeout=120,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            assert "telemetry: 1 sent, 0 pending" in run.stderr, run.stderr  # one batch

            status = json.loads(
                subprocess.run(  # noqa: S603
                    [sys.executable, "-m", "agent", "status", "--state-dir", str(state), "--json"],
                    capture_output=True, cwd=ROOT, text=True, check=True,
                ).stdout
            )  # fmt: skip
            assert status["active_model_version"] == 1
            assert status["policy_version"] == 1
            decisions = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
            assert {d["model_version"] for d in decisions} == {1}

            rows = client.get("/v1/admin/aggregates", params={"org_id": org_id}, headers=admin)
            assert rows.status_code == 200, rows.text
    finally:
        server.stop()
    active = [r for r in rows.json() if not r["shadow"]]
    expected = {hashlib.sha256(data).hexdigest() for data in samples.values()}
    assert {r["sha256"] for r in active} == expected
    assert sum(r["count"] for r in active) == len(samples)
    assert {(r["model_version"], r["distinct_endpoints"]) for r in active} == {(1, 1)}
    verdicts = {d["sha256"]: d["verdict"] for d in decisions}
    assert {r["sha256"]: r["verdict"] for r in active} == verdicts
