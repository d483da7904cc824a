"""The agent's telemetry: wire format, crash-safe bounded spool, retrying sender, enrollment."""

from __future__ import annotations

import datetime as dt
import getpass
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import stamina

from agent.decision import Reason, Verdict
from agent.errors import SpoolFullError, TransportError
from agent.telemetry import (
    MAX_ANSWER_BYTES,
    Credentials,
    SenderConfig,
    Spool,
    TelemetryEvent,
    TelemetrySender,
    decode_batch,
    encode_batch,
    enroll,
    load_credentials,
    make_batches,
    save_credentials,
)
from agent.update.backoff import jittered_backoff_s

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
VECTOR = b"\0" * (4 * 669)


def _event(i: int = 0, *, features: bytes | None = None, shadow: bool = False) -> TelemetryEvent:
    return TelemetryEvent(
        "org_1",
        "ep_1",
        f"{i % 256:02x}" * 32,
        2,
        0.75,
        Verdict.BLOCK,
        Reason.SCORE_BLOCK,
        TelemetryEvent.ms(NOW) + i,
        "static-v1",
        features,
        3 if shadow else None,
        0.2 if shadow else None,
        Verdict.ALLOW if shadow else None,
    )


@pytest.fixture(autouse=True)
def _no_sleeping_retries():
    with stamina.set_testing(True, attempts=3):
        yield


def test_batch_round_trips_every_field() -> None:
    events = [_event(0, features=VECTOR, shadow=True), _event(1)]
    batch = decode_batch(encode_batch(events, key="key-000001", dropped_events=5))
    assert batch.events == tuple(events)
    assert (batch.key, batch.org_id, batch.endpoint_id, batch.dropped_events) == (
        "key-000001",
        "org_1",
        "ep_1",
        5,
    )
    assert batch.events[0].observed_at == NOW


def test_batch_refuses_events_of_two_endpoints() -> None:
    other = TelemetryEvent(
        "org_1", "ep_2", "00" * 32, 1, None, Verdict.ERROR, Reason.MODEL_ERROR, 1_800_000_000_000
    )
    with pytest.raises(ValueError, match="one endpoint"):
        encode_batch([_event(), other])


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d.update(v=2), "format version"),
        (lambda d: d.update(key="x"), "idempotency key"),
        (lambda d: d["events"][0].__setitem__(0, b"short"), "sha256"),
        (lambda d: d["events"][0].__setitem__(2, 1.5), "score"),
        (lambda d: d["events"][0].__setitem__(5, 0), "observed_at"),
        (lambda d: d["events"][0].__setitem__(7, b"\0" * 10), "features"),
        (lambda d: d["events"][0].__setitem__(6, "static-v9"), "schema"),
        (lambda d: d["events"][0].__setitem__(10, "allow"), "shadow"),
        (lambda d: d.update(events=[]), "events"),
    ],
)
def test_decode_names_the_bad_field(mutate, reason: str) -> None:
    doc = msgpack.unpackb(encode_batch([_event(features=VECTOR)]))
    mutate(doc)
    with pytest.raises(ValueError, match=reason):
        decode_batch(msgpack.packb(doc))


def test_no_path_user_or_host_leaves_the_endpoint(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put([_event(i, features=VECTOR) for i in range(10)])
    raw = b"".join(p.read_bytes() for p in spool.pending())
    for secret in {getpass.getuser(), socket.gethostname(), str(tmp_path), "/home", "/usr"}:
        assert secret.encode() not in raw, secret


def test_make_batches_sends_each_vector_once_per_batch() -> None:
    events = [_event(i % 3, features=VECTOR) for i in range(10)]
    batches = make_batches(events, max_events=6)
    assert [len(b) for b in batches] == [6, 4]
    assert [sum(e.features is not None for e in b) for b in batches] == [3, 3]


def test_spool_drops_oldest_first_counts_and_reports_the_drop(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=4096)
    paths = [spool.put([_event(i) for i in range(10)]) for _ in range(12)]
    assert spool.size_bytes() <= 4096
    kept = spool.pending()
    assert kept == paths[-len(kept) :]  # the newest survive
    assert (
        spool.dropped_batches == 12 - len(kept)
        and spool.dropped_events == 10 * spool.dropped_batches
    )
    assert decode_batch(kept[-1].read_bytes()).dropped_events == spool.dropped_events
    reopened = Spool(tmp_path / "spool", max_bytes=4096)
    assert (reopened.dropped_batches, reopened.pending()) == (spool.dropped_batches, kept)


def test_spool_refuses_a_batch_larger_than_its_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=2048)
    with pytest.raises(SpoolFullError):
        spool.put([_event(0, features=VECTOR)])
    assert spool.dropped_events == 1


def test_spool_survives_a_crash_mid_write(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    good = spool.put([_event(1)])
    (tmp_path / "spool" / "0000000000000001-1.mpk.tmp").write_bytes(b"\x85half a batch")
    reopened = Spool(tmp_path / "spool")
    assert reopened.pending() == [good]
    assert not list((tmp_path / "spool").glob("*.tmp"))
    assert decode_batch(good.read_bytes()).events == (_event(1),)
    assert reopened.put([_event(2)]).name.startswith("0000000000000001-")


class Backend:
    """A MockTransport backend for fault injection: answers from a script, counts attempts."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.attempts = 0
        self.keys: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        step = self.script[min(self.attempts - 1, len(self.script) - 1)]
        if isinstance(step, Exception):
            raise step
        if step == 200:
            self.keys.append(decode_batch(request.content).key)
        assert isinstance(step, int)
        headers = {"retry-after": "0"} if step == 429 else {}
        return httpx.Response(step, headers=headers, json={})


def _sender(tmp_path: Path, backend: Backend, *, max_bytes: int = 1 << 20) -> TelemetrySender:
    client = httpx.Client(transport=httpx.MockTransport(backend))
    import random

    return TelemetrySender(
        client,
        "http://backend",
        "tok",
        Spool(tmp_path / "spool", max_bytes=max_bytes),
        SenderConfig(),
        random.Random(1),
    )


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("slow backend"),
        500,
        429,
        503,
    ],
)
def test_sender_keeps_everything_while_backend_fails_and_backs_off(
    tmp_path: Path, fault: object
) -> None:
    backend = Backend([fault])
    sender = _sender(tmp_path, backend)
    for i in range(5):
        sender.spool.put([_event(i)])
    rounds = 0
    for minute in range(60):  # an hour of a flush attempt every minute
        now = NOW + dt.timedelta(minutes=minute)
        if sender.is_due(now):
            rounds += 1
        report = sender.flush(now)
        assert report.sent == 0 and report.pending == 5
    # The rounds' waits come from agent.update.backoff (uniform in [cap/2, cap], cap doubling from
    # 30 s to 900 s): replaying the sender's seeded draws gives the exact round count, and even
    # the floors (15, 30, 60, 120, 240, 450, 450, ... s) on minute ticks allow 11 rounds at most.
    assert rounds == _replayed_rounds(SenderConfig(), seed=1, minutes=60) <= 11
    assert backend.attempts == 3 * rounds, "each round: one batch, three attempts, then stop"
    backend.script = [200]
    later = NOW + dt.timedelta(hours=3)
    assert sender.flush(later).sent == 5
    assert len(set(backend.keys)) == 5 and sender.spool.pending() == []


def _replayed_rounds(config: SenderConfig, *, seed: int, minutes: int) -> int:
    import random

    rng, due_s, rounds = random.Random(seed), 0.0, 0
    for minute in range(minutes):
        if minute * 60 >= due_s:
            rounds += 1
            due_s = minute * 60 + jittered_backoff_s(
                rounds,
                initial_s=config.round_backoff_initial_s,
                max_s=config.round_backoff_max_s,
                rng=rng,
            )
    return rounds


def test_sender_retries_within_a_round_until_success(tmp_path: Path) -> None:
    backend = Backend([500, 429, 200])
    sender = _sender(tmp_path, backend)
    sender.spool.put([_event(0)])
    report = sender.flush(NOW)
    assert (report.sent, report.pending, report.attempts) == (1, 0, 3)


def test_sender_drops_malformed_batches_and_keeps_going(tmp_path: Path) -> None:
    backend = Backend([422, 200])
    sender = _sender(tmp_path, backend)
    sender.spool.put([_event(0)])
    sender.spool.put([_event(1)])
    report = sender.flush(NOW)
    assert (report.sent, report.rejected, report.pending) == (1, 1, 0)


def test_sender_keeps_the_spool_when_credentials_are_refused(tmp_path: Path) -> None:
    sender = _sender(tmp_path, Backend([401]))
    sender.spool.put([_event(0)])
    with pytest.raises(TransportError) as info:
        sender.flush(NOW)
    assert info.value.status_code == 401 and len(sender.spool.pending()) == 1


def test_offline_loss_is_bounded_by_the_spool_and_counted(tmp_path: Path) -> None:
    backend = Backend([httpx.ConnectError("down")])
    sender = _sender(tmp_path, backend, max_bytes=8192)
    total = 0
    for i in range(50):
        sender.spool.put([_event(j) for j in range(20)])
        total += 20
        sender.flush(NOW + dt.timedelta(minutes=i))
    backend.script = [200]
    sender.flush(NOW + dt.timedelta(days=1))
    delivered = len(backend.keys) * 20
    assert delivered + sender.spool.dropped_events == total
    assert delivered > 0 and sender.spool.dropped_events > 0


def test_credentials_are_saved_private_and_read_back(tmp_path: Path) -> None:
    creds = Credentials("http://b", "org_1", "ep_1", "secret")
    path = save_credentials(tmp_path / "state", creds)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_credentials(tmp_path / "state") == creds
    assert load_credentials(tmp_path / "nothing") is None


class _EndlessAnswers:
    """A loopback HTTP server whose every answer is `200` with a body that never ends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sent: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(1 << 20)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[")
                sent = 0
                try:
                    while sent < (64 << 20):
                        conn.sendall(b"0," * 32768)
                        sent += 65536
                except OSError:
                    pass
                self.sent.append(sent)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def endless() -> Iterator[_EndlessAnswers]:
    server = _EndlessAnswers()
    yield server
    server.close()


def test_enroll_refuses_an_endless_answer_in_one_line_without_reading_it(endless) -> None:
    with httpx.Client(timeout=10) as client, pytest.raises(TransportError) as info:
        enroll(client, endless.url, "fwen_token")
    assert str(info.value) == f"POST /v1/enroll: the answer is over {MAX_ANSWER_BYTES} bytes"
    _wait_for(lambda: len(endless.sent) == 1)
    assert MAX_ANSWER_BYTES < endless.sent[0] < (16 << 20)  # it landed, and was cut short


def test_sender_counts_an_endless_acknowledgement_as_a_failed_round_and_keeps_the_batch(
    tmp_path: Path, endless
) -> None:
    import random

    with httpx.Client(timeout=10) as client:
        sender = TelemetrySender(
            client, endless.url, "tok", Spool(tmp_path / "spool"), SenderConfig(), random.Random(1)
        )
        sender.spool.put([_event(0)])
        report = sender.flush(NOW)
    assert report.sent == 0 and report.pending == 1
    assert report.error == f"POST /v1/telemetry: the answer is over {MAX_ANSWER_BYTES} bytes"
    _wait_for(lambda: len(endless.sent) == 3)  # stamina's three attempts in tests
    assert all(MAX_ANSWER_BYTES < n < (16 << 20) for n in endless.sent)


def _wait_for(done: Callable[[], bool]) -> None:
    for _ in range(200):
        if done():
            return
        threading.Event().wait(0.05)
    raise AssertionError("the server's connection did not end")
