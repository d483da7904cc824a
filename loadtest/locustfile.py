"""Locust users that behave like fleetward agents and one operator (run by `fleetward loadtest`).

Importing this module imports locust, which monkey-patches the standard library with gevent:
it is only ever loaded by a `locust -f` subprocess, never by fleetward modules or the tests
(`loadtest/__init__.py` does not import it).

The run's setup comes from the JSON file named by `FLEETWARD_LOADTEST_CONFIG` (written by
`loadtest.run`): the orgs and their enroll tokens, the admin token, where to record
acknowledgements, and the traffic shape. Every telemetry response is appended to
`<ack_dir>/acks-<pid>.jsonl` (key, events, duplicate flag), so the consistency check can compare
what the backend acknowledged with what its aggregates count.

An agent user enrolls once, then checks in on an interval with jitter, polls the TUF timestamp
with `If-None-Match` (mostly 304), sends msgpack batches of a realistic size (a feature vector
the first time it reports a sample) under a fresh idempotency key, and now and then replays its
last batch, which must come back as a duplicate. The operator user flips an org's mode and adds
allowlist entries.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid
from array import array
from pathlib import Path
from typing import Any, ClassVar

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

from agent.features import VECTOR_LENGTH
from agent.telemetry import TelemetryEvent, encode_batch
from loadtest._clock import utc_now
from loadtest._wire import sample, synthetic_events

__all__ = ["AgentUser", "OperatorUser"]

_CONFIG: dict[str, Any] = json.loads(
    Path(os.environ["FLEETWARD_LOADTEST_CONFIG"]).read_text(encoding="utf-8")
)
_USER_IDS = itertools.count()
_ACKS: list[Any] = []  # the open ack file of this process, opened on first use
_VECTORS: list[bytes] = []


def _ack(record: dict[str, Any]) -> None:
    if not _ACKS:
        path = Path(_CONFIG["ack_dir"]) / f"acks-{os.getpid()}.jsonl"
        _ACKS.append(path.open("a", encoding="utf-8", buffering=1))
    _ACKS[0].write(json.dumps(record, separators=(",", ":")) + "\n")


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _close_acks(**_: Any) -> None:
    for f in _ACKS:
        f.close()


def _vector(rng: random.Random) -> bytes:
    if not _VECTORS:
        seeded = random.Random(_CONFIG["seed"])
        _VECTORS.extend(
            array("f", (seeded.random() for _ in range(VECTOR_LENGTH))).tobytes() for _ in range(32)
        )
    return _VECTORS[rng.randrange(len(_VECTORS))]


class AgentUser(FastHttpUser):
    """One endpoint: enroll, check in, poll TUF metadata, send and sometimes replay telemetry."""

    weight = 100
    wait_time = between(
        _CONFIG["checkin_interval_s"] * (1 - _CONFIG["jitter"]),
        _CONFIG["checkin_interval_s"] * (1 + _CONFIG["jitter"]),
    )

    def on_start(self) -> None:
        """Enroll once into one of the run's orgs."""
        n = next(_USER_IDS)
        self.rng = random.Random(f"{_CONFIG['seed']}:{os.getpid()}:{n}")
        orgs = _CONFIG["orgs"]
        org = orgs[(os.getpid() + n) % len(orgs)]
        self.etag: str | None = None
        self.mode = "enforce"
        self.seen: set[str] = set()
        self.last: tuple[bytes, str, int] | None = None
        self.token = ""
        with self.client.post(
            "/v1/enroll",
            headers={"authorization": f"Bearer {org['enroll_token']}"},
            name="/v1/enroll",
            catch_response=True,
        ) as r:
            if r.status_code != 201:
                r.failure(f"enroll: HTTP {r.status_code}")
                return
            body = r.json()
        self.org_id, self.endpoint_id, self.token = (
            str(body["org_id"]),
            str(body["endpoint_id"]),
            str(body["token"]),
        )

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    @task(10)
    def check_in(self) -> None:
        """GET /v1/checkin: the policy version and mode this endpoint should run."""
        if not self.token:
            return
        with self.client.get(
            "/v1/checkin", headers=self._auth(), name="/v1/checkin", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"check-in: HTTP {r.status_code}")
                return
            self.mode = str(r.json()["mode"])

    @task(5)
    def tuf_timestamp(self) -> None:
        """GET the TUF timestamp with If-None-Match: unchanged (304) unless policy moved."""
        headers = {"if-none-match": self.etag} if self.etag else {}
        with self.client.get(
            "/tuf/metadata/timestamp.json",
            headers=headers,
            name="/tuf/metadata/timestamp.json",
            catch_response=True,
        ) as r:
            if r.status_code == 200:
                self.etag = r.headers.get("etag")
            elif r.status_code == 304:
                r.success()
            else:
                r.failure(f"tuf: HTTP {r.status_code}")

    def _events(self) -> list[TelemetryEvent]:
        lo, hi = _CONFIG["batch_events"]
        return synthetic_events(
            org_id=self.org_id, endpoint_id=self.endpoint_id, mode=self.mode,
            count=self.rng.randint(lo, hi), now_ms=TelemetryEvent.ms(utc_now()), rng=self.rng,
            seen=self.seen, vector=_vector,
        )  # fmt: skip

    def _post(self, raw: bytes, key: str, n: int, *, replay: bool) -> None:
        headers = {**self._auth(), "content-type": "application/msgpack"}
        name = "/v1/telemetry (replay)" if replay else "/v1/telemetry"
        with self.client.post(
            "/v1/telemetry",
            data=raw,  # type: ignore[arg-type]  # bytes are sent as they are
            headers=headers,
            name=name,
            catch_response=True,
        ) as r:
            record: dict[str, Any] = {
                "org": self.org_id,
                "endpoint": self.endpoint_id,
                "key": key,
                "events": n,
                "replay": replay,
                "status": r.status_code,
            }
            if r.status_code != 200:
                r.failure(f"telemetry: HTTP {r.status_code}")
            else:
                body = r.json()
                record["duplicate"] = bool(body["duplicate"])
                record["acked_events"] = int(body["events"])
                if replay and not body["duplicate"]:
                    r.failure("a replayed batch was counted again")
            _ack(record)

    @task(3)
    def telemetry(self) -> None:
        """POST a fresh batch under a new idempotency key."""
        if not self.token:
            return
        batch = self._events()
        key = uuid.UUID(int=self.rng.getrandbits(128)).hex
        raw = encode_batch(batch, key=key)
        self._post(raw, key, len(batch), replay=False)
        self.last = (raw, key, len(batch))

    @task(1)
    def replay(self) -> None:
        """Resend the last batch, as an agent does when an acknowledgement was lost."""
        if self.last is not None:
            raw, key, n = self.last
            self._post(raw, key, n, replay=True)


class OperatorUser(FastHttpUser):
    """One operator: flips an org between enforce and detect_only, adds allowlist entries."""

    fixed_count = 1
    wait_time = between(_CONFIG["operator_interval_s"] * 0.5, _CONFIG["operator_interval_s"] * 1.5)
    modes: ClassVar[tuple[str, ...]] = ("detect_only", "enforce")

    def on_start(self) -> None:
        """Seed this operator's choices."""
        self.rng = random.Random(f"{_CONFIG['seed']}:operator:{os.getpid()}")
        self.flips = 0

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {_CONFIG['admin_token']}"}

    @task(1)
    def flip_mode(self) -> None:
        """PUT /v1/admin/mode for one org (signs and publishes a new policy)."""
        org = self.rng.choice(_CONFIG["orgs"])["org_id"]
        mode = self.modes[self.flips % 2]
        self.flips += 1
        self.client.put(
            "/v1/admin/mode",
            json={"mode": mode, "org_id": org},
            headers=self._headers(),
            name="/v1/admin/mode",
        )

    @task(1)
    def allowlist(self) -> None:
        """POST /v1/admin/allowlist for one org's popular sample."""
        org = self.rng.choice(_CONFIG["orgs"])["org_id"]
        sha = sample(org, self.rng)
        self.client.post(
            "/v1/admin/allowlist",
            json={"sha256": sha, "reason": "loadtest: known good", "org_id": org},
            headers=self._headers(),
            name="/v1/admin/allowlist",
        )
