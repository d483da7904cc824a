"""Backend fixtures: a signed TUF repository, a store, and a real uvicorn server on loopback."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from agent.decision import Reason, Verdict
from agent.telemetry import TelemetryEvent
from backend._clock import utc_now
from backend.server.app import create_app
from backend.server.push import PushConfig
from backend.store import Store
from model_store.repository import init_repository

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    store: Store
    admin_token: str
    repo_dir: Path

    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def create_org(self, client: httpx.Client, name: str) -> tuple[str, str]:
        r = client.post(f"{self.url}/v1/admin/orgs", json={"name": name}, headers=self.admin())
        assert r.status_code == 201, r.text
        return r.json()["org_id"], r.json()["enroll_token"]


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    init_repository(repo, now=utc_now())  # TUF expiries are relative to real time
    return repo


@pytest.fixture
def live_server(tmp_path: Path, repo_dir: Path) -> Iterator[LiveServer]:
    """The real app on uvicorn in a thread, on a free loopback port."""
    store = Store(tmp_path / "backend.db", synchronous="NORMAL")
    admin_token = store.create_admin_token(NOW)
    port = free_port()
    # push channels end after half a second, so clients that read a whole response (the
    # schemathesis and org-isolation tests) get one instead of an endless stream
    config = uvicorn.Config(
        create_app(store, repo_dir, push=PushConfig(lifetime_s=0.5)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", store, admin_token, repo_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


@dataclass
class ServerProcess:
    """`fleetward backend serve` as a subprocess, so tests can kill -9 it."""

    db: Path
    repo_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()  # more `backend serve` options

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "backend",
                "serve",
                "--db",
                str(self.db),
                "--repo",
                str(self.repo_dir),
                "--port",
                str(self.port),
                "--synchronous",
                "NORMAL",
                *self.extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_event(
    org: str,
    endpoint: str,
    sha: str | None = None,
    *,
    verdict: Verdict = Verdict.ALLOW,
    version: int = 1,
    at: dt.datetime = NOW,
    features: bytes | None = None,
) -> TelemetryEvent:
    return TelemetryEvent(
        org,
        endpoint,
        sha or secrets.token_hex(32),
        version,
        0.1,
        verdict,
        Reason.SCORE_BELOW,
        TelemetryEvent.ms(at),
        "static-v1",
        features,
    )
