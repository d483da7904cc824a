"""The agent's push listener (`agent.update.push`) and its conditional TUF timestamp fetch.

Parsing and backoff are pure; the listener and the fetcher run against the real backend on
loopback (`tests.backend.server.test_push`'s server: uvicorn in a thread, a real TUF repository).
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.update.push import (
    MAX_LINE_CHARS,
    PushConfig,
    PushListener,
    backoff_s,
    bounded_lines,
    parse_events,
    push_request,
)
from agent.update.updater import HTTPXFetcher
from backend.server.push import PushConfig as ServerPushConfig
from model_store.repository import init_repository
from tests.backend.conftest import NOW  # noqa: F401 - shared test time
from tests.backend.server.test_push import Listener, Server, _serve


@pytest.mark.parametrize(
    ("lines", "versions"),
    [
        (["event: policy", 'data: {"policy_version": 7}', ""], [7]),
        ([": ping", "", "event: policy", 'data: {"policy_version": 3}', ""], [3]),
        (["event: policy\r\n", 'data: {"policy_version": 4}\r\n', "\r\n"], [4]),
        (["event: other", 'data: {"policy_version": 9}', ""], []),
        (['data: {"policy_version": 9}', ""], []),  # no event name: a plain message
        (["event: policy", "data: not json", ""], []),
        (["event: policy", 'data: {"policy_version": "5"}', ""], []),
        (["event: policy", 'data: {"policy_version": -1}', ""], []),
        (["event: policy", 'data: {"policy_version": 2}'], []),  # incomplete: no blank line
        (
            ["event: policy", 'data: {"policy_version": 1}', "", "event: policy", "data: {}", ""],
            [1],
        ),
    ],
)
def test_parse_events_yields_only_complete_well_formed_policy_versions(lines, versions):
    assert list(parse_events(lines)) == versions


def test_backoff_is_jittered_under_a_doubling_cap():
    config = PushConfig(min_backoff_s=1.0, max_backoff_s=8.0)
    rng = random.Random(3)
    for failures, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (30, 8.0)):
        draws = [backoff_s(failures, config, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in draws)  # agent.update.backoff: [cap/2, cap]
        assert max(draws) - min(draws) > cap / 4  # the range is used, not a fixed delay


def test_push_request_carries_the_endpoint_token():
    url, headers = push_request("http://h:1/", "tok")
    assert url == "http://h:1/v1/push"
    assert headers["authorization"] == "Bearer tok"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    repo = tmp_path / "repo"
    from backend._clock import utc_now

    init_repository(repo, now=utc_now())
    yield from _serve(tmp_path, repo, ServerPushConfig(max_channels=1, heartbeat_s=0.5))


def test_listener_wakes_the_check_in_on_a_newer_version_only(server: Server) -> None:
    with httpx.Client(timeout=10) as client:
        _org, token = server.org_endpoint(client, "a")
        current = server.set_mode(client, "enforce")
        woken: list[int] = []
        got = threading.Event()

        def on_version(v: int) -> None:
            woken.append(v)
            got.set()

        own = httpx.Client()
        listener = PushListener(
            own,
            server.url,
            token,
            known_version=lambda: current,  # the agent runs the current version already
            on_version=on_version,
            rng=random.Random(1),
        )
        stop = threading.Event()
        thread = threading.Thread(target=listener.run, args=(lambda p: None, stop))
        thread.start()
        try:
            off = server.set_mode(client, "off")
            assert got.wait(20)
            assert woken == [off]  # the version on connect was not newer: no wake for it
            assert listener.notices >= 2 and listener.connects == 1
        finally:
            stop.set()
            thread.join(10)
            own.close()
        assert not thread.is_alive()  # stop closes the open stream


def test_listener_backs_off_per_retry_after_when_the_channels_are_full(server: Server) -> None:
    with httpx.Client(timeout=10) as client:
        _org, token = server.org_endpoint(client, "a")
        held = Listener(server.url, token)  # the only channel the server allows
        lines: list[str] = []
        own = httpx.Client()
        try:
            listener = PushListener(
                own,
                server.url,
                token,
                known_version=lambda: None,
                on_version=lambda v: None,
                rng=random.Random(2),
                on_line=lines.append,
            )
            wait = listener._listen_once(threading.Event())
        finally:
            held.close()
            own.close()
        assert wait is not None and 15 <= wait <= 30  # Retry-After: 30, jittered down to half
        assert "503" in lines[0]


def test_listener_reports_a_refused_token_and_backs_off(server: Server) -> None:
    lines: list[str] = []
    own = httpx.Client()
    listener = PushListener(
        own,
        server.url,
        "not-a-token",
        known_version=lambda: None,
        on_version=lambda v: None,
        rng=random.Random(3),
        on_line=lines.append,
    )
    assert listener._listen_once(threading.Event()) == -1
    own.close()
    assert lines == ["push channel refused: HTTP 401"]


def test_fetcher_gets_an_unchanged_timestamp_as_304_and_hands_tuf_the_kept_bytes(
    server: Server,
) -> None:
    statuses: list[int] = []
    client = httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    fetcher = HTTPXFetcher(client)
    url = server.url + "/tuf/metadata/timestamp.json"
    first = b"".join(fetcher.fetch(url))
    again = b"".join(fetcher.fetch(url))
    assert statuses == [200, 304]
    assert again == first
    with httpx.Client(timeout=10) as admin:
        server.set_mode(admin, "off")  # a new policy: a new timestamp
    changed = b"".join(fetcher.fetch(url))
    assert statuses[-1] == 200 and changed != first
    # other metadata is never fetched conditionally
    b"".join(fetcher.fetch(server.url + "/tuf/metadata/1.root.json"))
    b"".join(fetcher.fetch(server.url + "/tuf/metadata/1.root.json"))
    assert statuses[-2:] == [200, 200]
    client.close()


@pytest.mark.parametrize(
    "chunks",
    [
        ["event: policy\n", 'data: {"policy_version": 7}\n', "\n"],
        ["event: policy\r\ndata: {", '"policy_version": 7}\r', "\n\r\n"],  # CRLF split
        ["event: pol", "icy\rdata: ", '{"policy_version": 7}\r\r'],  # bare CR ends
    ],
)
def test_bounded_lines_splits_lf_cr_and_crlf_across_chunks(chunks):
    assert list(parse_events(bounded_lines(chunks))) == [7]


def test_bounded_lines_refuses_a_line_past_the_bound_before_it_ends():
    endless = iter(["event: policy\ndata: "] + ["A" * 1000] * 10_000)
    with pytest.raises(ValueError, match="over 4096"):
        for _ in bounded_lines(endless):
            pass
    assert len(list(endless)) > 9_000  # refused early, not after reading it all


def test_an_event_whose_data_outgrows_the_bound_is_dropped():
    lines = ["event: policy"] + ["data: 1"] * (MAX_LINE_CHARS // 4) + [""]
    lines += ["event: policy", 'data: {"policy_version": 8}', ""]
    assert list(parse_events(lines)) == [8]


class _EndlessPush:
    """A push endpoint that never ends its first line (an endless-data attack on the channel)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.sock:
            conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
            conn.sendall(b"event: policy\ndata: ")
            try:
                while self.sent < (64 << 20) and not self.done.is_set():
                    conn.sendall(b"A" * 65536)
                    self.sent += 65536
            except OSError:
                pass
        self.done.set()


def test_listener_hangs_up_on_an_endless_line_instead_of_buffering_it():
    evil = _EndlessPush()
    said: list[str] = []
    client = httpx.Client()
    listener = PushListener(
        client,
        f"http://127.0.0.1:{evil.port}",
        "tok",
        known_version=lambda: 1,
        on_version=lambda v: None,
        rng=random.Random(1),
        on_line=said.append,
    )
    stop = threading.Event()
    assert listener._listen_once(stop) == -1  # back off; the check-ins go on polling
    client.close()
    evil.done.wait(10)
    assert evil.sent > MAX_LINE_CHARS  # the attack landed: the line went past the bound
    assert evil.sent < (16 << 20)  # and the agent hung up long before the server's 64 MiB
    assert said == [f"push channel refused: push channel line over {MAX_LINE_CHARS} characters"]
