"""The push channel (`backend.server.push`) and conditional check-ins on a real server on loopback.

Notices are read with the agent's own parser (`agent.update.parse_events`) from real SSE streams.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from agent.update.push import parse_events, push_request
from backend.server.app import create_app
from backend.server.push import PushConfig, orgs_touched
from backend.store import Store
from tests.backend.conftest import NOW, ServerProcess, free_port


@dataclass
class Server:
    url: str
    admin: dict[str, str]

    def org_endpoint(self, client: httpx.Client, name: str) -> tuple[str, str]:
        r = client.post(f"{self.url}/v1/admin/orgs", json={"name": name}, headers=self.admin)
        org_id, enroll = r.json()["org_id"], r.json()["enroll_token"]
        r = client.post(f"{self.url}/v1/enroll", headers={"authorization": f"Bearer {enroll}"})
        assert r.status_code == 201, r.text
        return org_id, r.json()["token"]

    def set_mode(self, client: httpx.Client, mode: str, org_id: str | None = None) -> int:
        body = {"mode": mode} if org_id is None else {"mode": mode, "org_id": org_id}
        r = client.put(f"{self.url}/v1/admin/mode", json=body, headers=self.admin)
        assert r.status_code == 200, r.text
        return int(r.json()["version"])


def _serve(tmp_path: Path, repo_dir: Path, push: PushConfig) -> Iterator[Server]:
    store = Store(tmp_path / "backend.db", synchronous="NORMAL")
    token = store.create_admin_token(NOW)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, repo_dir, push=push),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    try:
        yield Server(f"http://127.0.0.1:{port}", {"authorization": f"Bearer {token}"})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


@pytest.fixture
def server(tmp_path: Path, repo_dir: Path) -> Iterator[Server]:
    yield from _serve(tmp_path, repo_dir, PushConfig(max_channels=3, heartbeat_s=0.5))


class Listener:
    """A push channel read in a thread; announced versions land in `versions`."""

    def __init__(self, url: str, token: str) -> None:
        self.versions: queue.Queue[int] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        self.ended = threading.Event()  # the server ended the stream (or it broke)
        self.client = httpx.Client(timeout=httpx.Timeout(20.0, read=30.0))
        self.url, self.headers = push_request(url, token)
        self._socket: socket.socket | None = None  # the channel's, once it is open
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.status.get(timeout=20) == 200

    def _run(self) -> None:
        try:
            with self.client.stream("GET", self.url, headers=self.headers) as r:
                self._socket = r.extensions["network_stream"].get_extra_info("socket")
                self.status.put(r.status_code)
                for v in parse_events(r.iter_lines()):
                    self.versions.put(v)
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        """Hang up: shut the channel's socket, which also ends the read in the thread.

        `Client.close` alone leaves open a stream that another thread is reading, and a
        server stopped after it waits its whole graceful shutdown (5 s) for that channel.
        """
        if self._socket is not None:
            with contextlib.suppress(OSError):  # the server ended it first
                self._socket.shutdown(socket.SHUT_RDWR)
        self.client.close()


def test_revoking_a_token_ends_its_open_channel_and_refuses_a_reconnect(server: Server) -> None:
    with httpx.Client(timeout=10) as client:
        org_id, token = server.org_endpoint(client, "revoked")
        _other_org, other_token = server.org_endpoint(client, "kept")
        held, kept = Listener(server.url, token), Listener(server.url, other_token)
        try:
            held.versions.get(timeout=20)
            kept.versions.get(timeout=20)
            listed = client.get(
                f"{server.url}/v1/admin/orgs/{org_id}/tokens", headers=server.admin
            ).json()
            (endpoint_token,) = [t for t in listed if t["kind"] == "endpoint"]
            r = client.delete(
                f"{server.url}/v1/admin/tokens/{endpoint_token['token_id']}", headers=server.admin
            )
            assert r.status_code == 200, r.text
            assert held.ended.wait(timeout=20), "the revoked token's channel stayed open"
            assert not kept.ended.is_set()  # another endpoint's channel is untouched
            url, headers = push_request(server.url, token)
            assert client.get(url, headers=headers).status_code == 401
            metrics = client.get(f"{server.url}/metrics").text
            assert "fleetward_push_revoked_total 1.0" in metrics
        finally:
            held.close()
            kept.close()


def test_a_change_to_one_org_notifies_that_org_and_never_another(server: Server) -> None:
    with httpx.Client(timeout=10) as client:
        org_a, token_a = server.org_endpoint(client, "a")
        _org_b, token_b = server.org_endpoint(client, "b")
        first = server.set_mode(client, "enforce")
        a, b = Listener(server.url, token_a), Listener(server.url, token_b)
        try:
            assert a.versions.get(timeout=20) == first  # the current version, on connect
            assert b.versions.get(timeout=20) == first
            only_a = server.set_mode(client, "off", org_id=org_a)
            assert a.versions.get(timeout=20) == only_a
            fleet = server.set_mode(client, "detect_only")
            assert a.versions.get(timeout=20) == fleet
            # b's next notice is the fleet-wide change: org a's change never reached it
            assert b.versions.get(timeout=20) == fleet
            assert b.versions.empty()
        finally:
            a.close()
            b.close()


def test_push_refuses_a_missing_or_revoked_token_with_401_and_an_admin_token_with_403(
    server: Server,
) -> None:
    with httpx.Client(timeout=10) as client:
        assert client.get(server.url + "/v1/push").status_code == 401
        bad = client.get(server.url + "/v1/push", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        assert client.get(server.url + "/v1/push", headers=server.admin).status_code == 403


def test_channels_past_the_bound_get_503_with_retry_after_and_show_in_metrics(
    server: Server,
) -> None:
    with httpx.Client(timeout=10) as client:
        _, token = server.org_endpoint(client, "a")
        held = [Listener(server.url, token) for _ in range(3)]
        try:
            url, headers = push_request(server.url, token)
            refused = client.get(url, headers=headers)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) == 30
            text = client.get(server.url + "/metrics").text
            assert "fleetward_push_channels 3.0" in text
            assert "fleetward_push_refused_total 1.0" in text
        finally:
            for listener in held:
                listener.close()
        deadline = time.monotonic() + 20  # closed channels are unregistered
        while "fleetward_push_channels 0.0" not in client.get(server.url + "/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_checkin_answers_304_while_unchanged_and_200_after_a_policy_change(
    server: Server,
) -> None:
    with httpx.Client(timeout=10) as client:
        _, token = server.org_endpoint(client, "a")
        server.set_mode(client, "enforce")
        auth = {"authorization": f"Bearer {token}"}
        first = client.get(server.url + "/v1/checkin", headers=auth)
        etag = first.headers["etag"]
        again = client.get(server.url + "/v1/checkin", headers={**auth, "if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        server.set_mode(client, "off")
        changed = client.get(server.url + "/v1/checkin", headers={**auth, "if-none-match": etag})
        assert changed.status_code == 200 and changed.json()["mode"] == "off"
        assert changed.headers["etag"] != etag


def test_tuf_timestamp_answers_304_to_its_etag(server: Server) -> None:
    with httpx.Client(timeout=10) as client:
        url = server.url + "/tuf/metadata/timestamp.json"
        first = client.get(url)
        assert first.status_code == 200
        again = client.get(url, headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304


def test_orgs_touched_is_none_for_a_fleet_wide_change_and_the_org_for_an_override() -> None:
    from agent.decision import Mode
    from agent.policy import OrgPolicyModel, PolicyDocumentModel

    base = PolicyDocumentModel(version=1, issued_at=NOW, default=OrgPolicyModel(mode=Mode.ENFORCE))
    org = base.model_copy(update={"version": 2, "orgs": {"o1": OrgPolicyModel(mode=Mode.OFF)}})
    fleet = org.model_copy(update={"version": 3, "default": OrgPolicyModel(mode=Mode.OFF)})
    assert orgs_touched(None, base) is None
    assert orgs_touched(base, org) == frozenset({"o1"})
    assert orgs_touched(org, fleet) is None
    assert orgs_touched(org, org.model_copy(update={"version": 4})) == frozenset()


def test_a_channel_ends_cleanly_after_its_lifetime_with_the_current_version(
    tmp_path: Path, repo_dir: Path
) -> None:
    for server in _serve(tmp_path, repo_dir, PushConfig(heartbeat_s=0.1, lifetime_s=0.6)):
        with httpx.Client(timeout=10) as client:
            _org, token = server.org_endpoint(client, "short")
            url, headers = push_request(server.url, token)
            started = time.monotonic()
            r = client.get(url, headers=headers)  # a whole response: the stream ends by itself
            took = time.monotonic() - started
        assert r.status_code == 200
        # the whole body: the current version once, then heartbeats only. A ping ends a wait
        # that began with more than one heartbeat (0.1 s) of the 0.6 s lifetime left, so before
        # 0.5 s; each wait lasts 0.1 s less at most asyncio's clock resolution (it runs a timer
        # that early), so the k-th began no sooner than (k - 1) x (0.1 - 1 ms): k <= 6, however
        # slow. The first wait always begins with 0.6 s left, so there is at least one ping.
        pings = r.text.count(": ping\n\n")
        rest = r.text.replace(": ping\n\n", "")
        assert list(parse_events(rest.splitlines())) == [0] and rest.count("\n\n") == 1
        assert 1 <= pings <= 6, r.text
        assert took >= 0.6  # it ended by its lifetime, not sooner


@pytest.mark.slow
def test_backend_serve_bounds_push_channels_and_heartbeats_as_its_options_say(
    tmp_path: Path, repo_dir: Path
) -> None:
    db = tmp_path / "served.db"
    store = Store(db, synchronous="NORMAL")
    made = store.create_org("served", NOW)
    token = store.enroll(made.org_id, NOW, enroll_token=made.enroll_token).token
    store.close()
    options = ("--max-push-channels", "1", "--push-heartbeat-s", "0.2")
    proc = ServerProcess(db, repo_dir, free_port(), extra=options)
    proc.start()
    try:
        url, headers = push_request(proc.url, token)
        with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=headers) as held:
            assert held.status_code == 200
            lines = held.iter_lines()
            pings = 0
            while pings < 2:  # the 25 s default would not send one within the read timeout
                pings += next(lines) == ": ping"
            second = client.get(url, headers=headers)  # past --max-push-channels 1
            assert second.status_code == 503
            assert second.headers["retry-after"].isdigit()
    finally:
        proc.stop()


def test_a_slow_token_lookup_does_not_stall_the_event_loop() -> None:
    """The channel's token lookup (a store read on a token's first request) runs off the loop.

    On the loop, a PostgreSQL short of CPU held every other channel and check-in of the
    process for seconds during a 10,000-agent ramp (issue 19's capacity runs).
    """
    import asyncio

    from prometheus_client import CollectorRegistry
    from starlette.responses import JSONResponse

    from backend.errors import AuthError
    from backend.server.push import PushHub, PushRoute

    def slow_lookup(request: object) -> tuple[str, str, str | None]:
        time.sleep(0.5)  # a blocking store read
        raise AuthError("unknown token")

    async def render(request: object, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__}, status_code=401)

    hub = PushHub(PushConfig(), CollectorRegistry())
    route = PushRoute(hub, None, slow_lookup, render)  # type: ignore[arg-type]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def main() -> float:
        scope = {"type": "http", "method": "GET", "path": "/v1/push", "headers": [],
                 "query_string": b""}  # fmt: skip
        task = asyncio.create_task(route(scope, receive, send))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        worst, last = 0.0, loop.time()
        while not task.done():
            await asyncio.sleep(0.01)
            worst, last = max(worst, loop.time() - last), loop.time()
        await task
        return worst

    worst_gap = asyncio.run(main())
    assert sent and sent[0]["status"] == 401  # the lookup ran and its answer went out
    assert worst_gap < 0.25, f"the loop stalled {worst_gap:.2f} s during the lookup"
