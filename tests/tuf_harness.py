"""Test support: a loopback HTTP server for a TUF repository, policy documents, key access."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata

from agent._clock import utc_now
from agent.daemon import Agent, read_status
from agent.update.updater import UpdateClient
from model_store.repository import init_repository, publish_model, publish_policy

ORG = "acme"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients killed mid-download (crash tests) reset their connections


class RepoServer:
    """Serves repo_dir/metadata and repo_dir/targets only (never keys/), like the backend will.

    `extra_bytes[path]` appends that many bytes to a response (endless data); `down` answers
    every request with 503; `drip_s[file name]` sends that file one byte every so many seconds
    (a slow-retrieval mirror), setting `dripping` when it starts and `drip_cut` when the client
    hung up before the end (`drip_sent` counts the bytes that went out).
    """

    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir
        self.extra_bytes: dict[str, int] = {}
        self.down = False
        self.requests: list[str] = []
        self.drip_s: dict[str, float] = {}
        self.dripping = threading.Event()
        self.drip_cut = threading.Event()
        self.drip_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.down:
                    self.send_error(503)
                    return
                parts = self.path.lstrip("/").split("/")
                if not parts or parts[0] not in ("metadata", "targets") or ".." in parts:
                    self.send_error(404)
                    return
                path = server.repo_dir.joinpath(*parts)
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes() + b"\0" * server.extra_bytes.get(self.path, 0)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                pause = server.drip_s.get(path.name)
                if pause is None:
                    self.wfile.write(data)
                    return
                server.dripping.set()
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        server.drip_sent += 1
                        time.sleep(pause)
                except OSError:  # the client gave up on us
                    server.drip_cut.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> RepoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serving(repo_dir: Path) -> Iterator[RepoServer]:
    server = RepoServer(repo_dir).start()
    try:
        yield server
    finally:
        server.stop()


def policy_bytes(
    version: int,
    *,
    model_version: int | None = 1,
    mode: str = "enforce",
    shadow: int | None = None,
    orgs: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    issued_at: dt.datetime | None = None,
    **default: Any,
) -> bytes:
    doc: dict[str, Any] = {
        "version": version,
        "issued_at": (issued_at or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).isoformat(),
        "default": {"mode": mode, **default},
        "orgs": orgs or {},
    }
    if model_version is not None:
        doc["default"]["model_version"] = model_version
    if shadow is not None:
        doc["default"]["shadow_model_version"] = shadow
    if breaker is not None:
        doc["default"]["breaker"] = breaker
    return json.dumps(doc).encode()


def signer_for(repo_dir: Path, role: str, *, revoked: bool = False) -> CryptoSigner:
    """Load a role's private key from the repository's key files (a 'compromised' key)."""
    folder = repo_dir / "keys" / ("revoked" if revoked else "")
    path = sorted(folder.glob(f"{role}.*.pem"))[0]
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))  # type: ignore[arg-type]


def load_md(repo_dir: Path, name: str) -> Metadata[Any]:
    return Metadata.from_file(str(repo_dir / "metadata" / name))


def trust_anchor(repo_dir: Path) -> bytes:
    return (repo_dir / "metadata" / "1.root.json").read_bytes()


# --- a whole world: repository, loopback server, agent with v1 installed ---------------------


@dataclass
class World:
    repo: Path
    state: Path
    server: RepoServer
    agent: Agent
    sample: Path
    bundles: dict[int, Path]

    def status(self) -> dict[str, Any]:
        return read_status(self.state, utc_now())

    def scan_sample(self):
        return list(self.agent.scan([str(self.sample)]))[0]

    def new_agent(self) -> Agent:
        anchor = trust_anchor(self.repo)
        updater = UpdateClient(self.state, self.server.url, org=ORG, trust_anchor=anchor)
        agent = Agent(self.state, org=ORG, clock=utc_now, updater=updater)
        agent.start()
        return agent


def make_world(tmp: Path, bundles: dict[int, Path]) -> Iterator[World]:
    """Repository with v1 and policy v1 published, served on loopback, agent at v1."""
    now = utc_now()
    repo = tmp / "repo"
    init_repository(repo, now=now)
    publish_model(repo, bundles[1], now=now)
    publish_policy(repo, policy_bytes(1, model_version=1), now=now)
    sample = tmp / "sample.bin"
    sample.write_bytes(b"\x7fELF" + bytes(range(256)) * 64)
    with serving(repo) as server:
        state = tmp / "state"
        updater = UpdateClient(state, server.url, org=ORG, trust_anchor=trust_anchor(repo))
        agent = Agent(state, org=ORG, clock=utc_now, updater=updater)
        agent.start()
        first = agent.check_in()
        assert first.ok and first.changed, first
        yield World(repo, state, server, agent, sample, bundles)
