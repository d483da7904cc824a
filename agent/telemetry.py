"""Telemetry: the event wire format, the on-disk spool, sending with retry, and enrollment.

The agent owns the telemetry contract (DESIGN.md, "Telemetry"); the backend imports
`TelemetryEvent` and `decode_batch` from here, so there is exactly one definition of the bytes.

Wire format (msgpack), one batch per request, all events from one endpoint:

    {"v": 1, "key": <idempotency key>, "org": <org pseudonym>, "endpoint": <endpoint pseudonym>,
     "dropped": <events this endpoint's spool has dropped so far>,
     "events": [[sha256 (32 raw bytes), model_version, score | nil, verdict, reason,
                 observed_at_ms, feature_schema | nil, features (float32 LE bytes) | nil,
                 shadow_model_version | nil, shadow_score | nil, shadow_verdict | nil], ...]}

Events are arrays, not maps: a batch of thousands decodes several times faster. The feature
vector is optional per event: the backend keeps one vector per (sample, schema), so an agent
sends it once per sample per batch (`make_batches` drops repeats) rather than with every event.

Privacy: nothing in an event names a path, a user or a host. The endpoint id is a random
pseudonym minted by the backend at enrollment; the org id is the org's pseudonym.

Spool invariants (`Spool`):
- a batch is on disk in full or not at all: written to a temp file, fsynced, renamed, and the
  directory fsynced; a crash leaves at most a stray `*.tmp` that the next open removes;
- the spool never holds more than `max_bytes`; making room drops the oldest batches first, and
  every dropped batch and event is counted (persisted in `dropped.json`) and reported to the
  backend in the next batch's `dropped` field;
- a batch leaves the spool only after the backend acknowledged it (2xx, replays included) or
  rejected it as malformed (4xx other than 401/403/408/429: it would never succeed).

Retry (`TelemetrySender.flush`): each POST is retried with exponential backoff and jitter by
stamina (honouring `Retry-After` on 429/503); when a round gives up, the sender backs off across
rounds too (`is_due(now)`), so a dead backend costs a bounded number of attempts per hour.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random as _random
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import msgpack
import stamina

from agent.decision import Reason, Verdict
from agent.errors import SpoolFullError, TransportError
from agent.features import SCHEMA

__all__ = [
    "FORMAT_VERSION",
    "HEALTH_COUNTERS",
    "MAX_EVENTS_PER_BATCH",
    "CheckinInfo",
    "Credentials",
    "FlushReport",
    "HealthCount",
    "SenderConfig",
    "Spool",
    "TelemetryBatch",
    "TelemetryEvent",
    "TelemetryPipe",
    "TelemetrySender",
    "check_in",
    "decode_batch",
    "encode_batch",
    "enroll",
    "load_credentials",
    "make_batches",
    "save_credentials",
]

FORMAT_VERSION: Final = 1
MAX_EVENTS_PER_BATCH: Final = 10_000
CONTENT_TYPE: Final = "application/msgpack"
_SCHEMA_LENGTHS: Final[dict[str, int]] = {SCHEMA.name: SCHEMA.vector_length}
_VERDICTS: Final = {v.value: v for v in Verdict}
_REASONS: Final = {r.value: r for r in Reason}
_KEY = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MIN_MS: Final = 946_684_800_000  # 2000-01-01: older timestamps are clock garbage
_MAX_MS: Final = 4_102_444_800_000  # 2100-01-01


@dataclass(frozen=True, slots=True)
class TelemetryEvent:
    """One decision on one file, as it leaves the endpoint.

    `observed_at_ms` (milliseconds since the Unix epoch, UTC) is the stored and wire form;
    `observed_at` gives the aware datetime. `features` is the float32 little-endian vector of
    `feature_schema`, or None when this batch already carried it for the same sample.
    """

    org_id: str
    endpoint_id: str
    sha256: str
    model_version: int
    score: float | None
    verdict: Verdict
    reason: Reason
    observed_at_ms: int
    feature_schema: str | None = SCHEMA.name
    features: bytes | None = None
    shadow_model_version: int | None = None
    shadow_score: float | None = None
    shadow_verdict: Verdict | None = None

    @property
    def observed_at(self) -> dt.datetime:
        """The observation time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.observed_at_ms / 1000, tz=dt.UTC)

    @staticmethod
    def ms(when: dt.datetime) -> int:
        """Convert an aware datetime to the wire's milliseconds since the epoch."""
        if when.tzinfo is None:
            raise ValueError("observed_at must be timezone-aware")
        return int(when.timestamp() * 1000)


HEALTH_COUNTERS: Final = ("self_test_failures", "model_errors", "breaker_trips")
_MAX_HEALTH: Final = 64


@dataclass(frozen=True, slots=True)
class HealthCount:
    """Agent health events about one model version on one day, carried beside the events.

    The rollout controller compares canary and control on these as well as on alerts
    (`backend.rollout`), so they name the version they concern: the candidate that failed its
    self-test, the active model for run-time errors and breaker trips. `observed_at_ms` is the
    first such event's time (its UTC day is the one counted). Optional on the wire (`health`):
    batches without it, and backends that ignore it, work as before.
    """

    model_version: int
    observed_at_ms: int
    self_test_failures: int = 0
    model_errors: int = 0
    breaker_trips: int = 0


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """A decoded batch: its idempotency key, sender, spool drop counter and events."""

    key: str
    org_id: str
    endpoint_id: str
    dropped_events: int
    events: tuple[TelemetryEvent, ...]
    health: tuple[HealthCount, ...] = ()


def encode_batch(
    events: Sequence[TelemetryEvent],
    *,
    key: str | None = None,
    dropped_events: int = 0,
    health: Sequence[HealthCount] = (),
) -> bytes:
    """Encode events from one endpoint as one msgpack batch (a fresh uuid4 key unless given).

    `health` rides along only when non-empty, so the bytes of a batch without it are unchanged.

    Raises:
        ValueError: no events, too many, events from more than one (org, endpoint), or more
            than 64 health rows.
    """
    if len(health) > _MAX_HEALTH:
        raise ValueError(f"a batch holds at most {_MAX_HEALTH} health rows")
    if not events or len(events) > MAX_EVENTS_PER_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_EVENTS_PER_BATCH} events, got {len(events)}")
    org, endpoint = events[0].org_id, events[0].endpoint_id
    rows = []
    for e in events:
        if e.org_id != org or e.endpoint_id != endpoint:
            raise ValueError("a batch carries the events of exactly one endpoint")
        rows.append(
            [
                bytes.fromhex(e.sha256),
                e.model_version,
                e.score,
                e.verdict.value,
                e.reason.value,
                e.observed_at_ms,
                e.feature_schema,
                e.features,
                e.shadow_model_version,
                e.shadow_score,
                e.shadow_verdict.value if e.shadow_verdict is not None else None,
            ]
        )
    doc = {
        "v": FORMAT_VERSION,
        "key": key or uuid.uuid4().hex,
        "org": org,
        "endpoint": endpoint,
        "dropped": dropped_events,
        "events": rows,
    }
    if health:
        doc["health"] = [
            [h.model_version, h.observed_at_ms, h.self_test_failures, h.model_errors,
             h.breaker_trips]
            for h in health
        ]  # fmt: skip
    return bytes(msgpack.packb(doc, use_bin_type=True))


def _fail(where: str, why: str) -> ValueError:
    return ValueError(f"{where}: {why}")


def _opt_score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if type(value) is int:
        value = float(value)
    if type(value) is not float or not 0.0 <= value <= 1.0:  # also rejects NaN
        raise _fail(where, "score must be a number in [0, 1] or nil")
    return value


def _opt_version(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 2**31:
        raise _fail(where, "model version must be an integer in [0, 2^31)")
    return value


def _unpack(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_bin_len=len(raw),
            max_str_len=1 << 16,
            max_array_len=MAX_EVENTS_PER_BATCH,
            max_map_len=64,
        )
    except Exception as exc:  # msgpack raises many unrelated types on garbage input
        raise ValueError(f"not a msgpack document: {type(exc).__name__}") from None


def _header(doc: Any) -> tuple[str, str, str, int, tuple[Any, ...]]:
    """Validate a decoded batch's header; return (key, org, endpoint, dropped, event rows)."""
    if not isinstance(doc, dict):
        raise _fail("batch", "must be a map")
    if doc.get("v") != FORMAT_VERSION:
        raise _fail("v", f"unsupported format version (this backend speaks {FORMAT_VERSION})")
    key, org, endpoint, dropped = (
        doc.get("key"),
        doc.get("org"),
        doc.get("endpoint"),
        doc.get("dropped", 0),
    )
    if not isinstance(key, str) or not _KEY.match(key):
        raise _fail("key", "idempotency key must be 8..128 characters of [A-Za-z0-9_.:-]")
    if not isinstance(org, str) or not _ID.match(org):
        raise _fail("org", "must be an id of 1..64 characters of [A-Za-z0-9_-]")
    if not isinstance(endpoint, str) or not _ID.match(endpoint):
        raise _fail("endpoint", "must be an id of 1..64 characters of [A-Za-z0-9_-]")
    if type(dropped) is not int or not 0 <= dropped < 2**63:
        raise _fail("dropped", "must be a non-negative integer")
    rows = doc.get("events")
    if not isinstance(rows, tuple) or not rows:
        raise _fail("events", f"must be an array of 1..{MAX_EVENTS_PER_BATCH} events")
    return key, org, endpoint, dropped, rows


def _health(doc: dict[str, Any]) -> tuple[HealthCount, ...]:
    """Validate the optional `health` rows of a decoded batch (absent: none)."""
    rows = doc.get("health", ())
    if not isinstance(rows, tuple) or len(rows) > _MAX_HEALTH:
        raise _fail("health", f"must be an array of at most {_MAX_HEALTH} rows")
    out = []
    for i, row in enumerate(rows):
        ok = isinstance(row, tuple) and len(row) == 5 and all(type(x) is int for x in row)
        if not ok or not 0 <= row[0] < 2**31 or not _MIN_MS <= row[1] < _MAX_MS:
            raise _fail(f"health[{i}]", "must be [model version, observed_at_ms, 3 counts]")
        if not all(0 <= x < 2**31 for x in row[2:]):
            raise _fail(f"health[{i}]", "counts must be integers in [0, 2^31)")
        out.append(HealthCount(*row))
    return tuple(out)


def _decode_events(rows: tuple[Any, ...], org: str, endpoint: str) -> tuple[TelemetryEvent, ...]:
    """Validate event rows one by one; the reference rules, with the first bad field named."""
    events = []
    verdicts, reasons, lengths = _VERDICTS, _REASONS, _SCHEMA_LENGTHS
    for i, row in enumerate(rows):
        if not isinstance(row, tuple) or len(row) != 11:
            raise _fail(f"events[{i}]", "must be an array of 11 fields")
        (
            sha,
            version,
            score,
            verdict,
            reason,
            at_ms,
            schema,
            feats,
            s_version,
            s_score,
            s_verdict,
        ) = row
        where = f"events[{i}]"
        if type(sha) is not bytes or len(sha) != 32:
            raise _fail(where, "sha256 must be 32 raw bytes")
        if type(version) is not int or not 0 <= version < 2**31:
            raise _fail(where, "model version must be an integer in [0, 2^31)")
        v = verdicts.get(verdict) if type(verdict) is str else None
        r = reasons.get(reason) if type(reason) is str else None
        if v is None or r is None:
            raise _fail(where, "unknown verdict or reason")
        if type(at_ms) is not int or not _MIN_MS <= at_ms < _MAX_MS:
            raise _fail(where, "observed_at_ms must be an integer between 2000 and 2100")
        if feats is not None:
            want = lengths.get(schema) if type(schema) is str else None
            if want is None:
                raise _fail(where, f"unknown feature schema {schema!r}")
            if type(feats) is not bytes or len(feats) != 4 * want:
                raise _fail(where, f"features must be {4 * want} bytes (float32 x {want})")
        elif schema is not None and (type(schema) is not str or schema not in lengths):
            raise _fail(where, f"unknown feature schema {schema!r}")
        sv = None
        if s_verdict is not None:
            sv = verdicts.get(s_verdict) if type(s_verdict) is str else None
            if sv is None:
                raise _fail(where, "unknown shadow verdict")
        s_v = _opt_version(s_version, where)
        if (s_v is None) != (sv is None):
            raise _fail(where, "shadow model version and shadow verdict go together")
        events.append(
            TelemetryEvent(
                org,
                endpoint,
                sha.hex(),
                version,
                _opt_score(score, where),
                v,
                r,
                at_ms,
                schema,
                feats,
                s_v,
                _opt_score(s_score, where),
                sv,
            )
        )
    return tuple(events)


def decode_batch(raw: bytes) -> TelemetryBatch:
    """Decode and validate one batch; the inverse of `encode_batch`.

    Raises:
        ValueError: the bytes are not a valid batch; the message names the first bad field.
    """
    doc = _unpack(raw)
    key, org, endpoint, dropped, rows = _header(doc)
    events = _decode_events(rows, org, endpoint)
    return TelemetryBatch(key, org, endpoint, dropped, events, _health(doc))


def make_batches(
    events: Iterable[TelemetryEvent], *, max_events: int = 1000
) -> list[list[TelemetryEvent]]:
    """Split events into batches of at most `max_events`, sending each vector once per batch."""
    if not 1 <= max_events <= MAX_EVENTS_PER_BATCH:
        raise ValueError(f"max_events must be in 1..{MAX_EVENTS_PER_BATCH}")
    batches: list[list[TelemetryEvent]] = []
    current: list[TelemetryEvent] = []
    seen: set[tuple[str, str | None]] = set()
    for e in events:
        if len(current) >= max_events:
            batches.append(current)
            current, seen = [], set()
        if e.features is not None:
            k = (e.sha256, e.feature_schema)
            if k in seen:
                e = TelemetryEvent(
                    e.org_id,
                    e.endpoint_id,
                    e.sha256,
                    e.model_version,
                    e.score,
                    e.verdict,
                    e.reason,
                    e.observed_at_ms,
                    e.feature_schema,
                    None,
                    e.shadow_model_version,
                    e.shadow_score,
                    e.shadow_verdict,
                )
            else:
                seen.add(k)
        current.append(e)
    if current:
        batches.append(current)
    return batches


# --- the spool ------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Spool:
    """Batches waiting to be sent, one file each, oldest first; bounded by `max_bytes`.

    Raises:
        SpoolFullError: from `put`, when one batch alone is larger than the bound (it is
            dropped and counted).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        if max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1 KiB")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        counters = self._read_counters()
        self.dropped_batches = counters.get("dropped_batches", 0)
        self.dropped_events = counters.get("dropped_events", 0)
        files = self.pending()
        self._seq = int(files[-1].name.split("-", 1)[0]) + 1 if files else 0

    def _read_counters(self) -> dict[str, int]:
        try:
            data = json.loads((self.directory / "dropped.json").read_text(encoding="utf-8"))
            return {k: int(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _write_counters(self) -> None:
        doc = {"dropped_batches": self.dropped_batches, "dropped_events": self.dropped_events}
        _atomic_write(self.directory / "dropped.json", json.dumps(doc).encode())

    def pending(self) -> list[Path]:
        """The spooled batch files, oldest first."""
        return sorted(self.directory.glob("*.mpk"))

    def size_bytes(self) -> int:
        """Bytes currently held by spooled batches."""
        return sum(p.stat().st_size for p in self.pending())

    def _drop(self, path: Path) -> None:
        events = int(path.name.rsplit("-", 1)[1].split(".", 1)[0])
        path.unlink(missing_ok=True)
        self.dropped_batches += 1
        self.dropped_events += events

    def put(self, events: Sequence[TelemetryEvent], health: Sequence[HealthCount] = ()) -> Path:
        """Encode `events` and `health` as one batch and store it, dropping the oldest if needed."""
        size = len(encode_batch(events, key="k" * 32, dropped_events=self.dropped_events,
                                health=health)) + 16  # fmt: skip
        if size > self.max_bytes:
            self.dropped_batches += 1
            self.dropped_events += len(events)
            self._write_counters()
            raise SpoolFullError(
                f"a batch of {size} bytes exceeds the spool bound of {self.max_bytes}"
            )
        files = self.pending()
        total = sum(p.stat().st_size for p in files)
        dropped = False
        while files and total + size > self.max_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            self._drop(oldest)
            dropped = True
        if dropped:
            self._write_counters()
        data = encode_batch(
            events, key=uuid.uuid4().hex, dropped_events=self.dropped_events, health=health
        )
        path = self.directory / f"{self._seq:016d}-{len(events)}.mpk"
        self._seq += 1
        _atomic_write(path, data)
        return path


# --- sending --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """How hard the sender tries. Defaults: 4 attempts per batch within 0.5..10 s waits."""

    attempts: int = 4
    wait_initial_s: float = 0.5
    wait_max_s: float = 10.0
    wait_jitter_s: float = 1.0
    round_backoff_initial_s: float = 30.0
    round_backoff_max_s: float = 900.0
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What one `flush` did: batches acknowledged, rejected as malformed, still pending."""

    sent: int
    rejected: int
    pending: int
    attempts: int
    error: str | None = None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), 300.0) if math.isfinite(seconds) else None


@dataclass
class TelemetrySender:
    """Sends the spool to the backend through an injected `httpx.Client`.

    `flush(now)` sends the pending batches oldest first; after a round that gave up it waits
    `round_backoff` (doubling, with jitter, up to the max) before `is_due` says try again.
    """

    client: httpx.Client
    url: str
    token: str
    spool: Spool
    config: SenderConfig = field(default_factory=SenderConfig)
    rng: _random.Random = field(default_factory=_random.Random)
    attempts: int = 0
    _failures: int = 0
    _next_due: dt.datetime | None = None

    def is_due(self, now: dt.datetime) -> bool:
        """False while backing off after a failed round."""
        return self._next_due is None or now >= self._next_due

    def _post(self, data: bytes) -> httpx.Response:
        self.attempts += 1
        try:
            response = self.client.post(
                self.url.rstrip("/") + "/v1/telemetry",
                content=data,
                timeout=self.config.timeout_s,
                headers={"content-type": CONTENT_TYPE, "authorization": f"Bearer {self.token}"},
            )
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}", _retry_after(response))
        return response

    def _send_one(self, data: bytes) -> httpx.Response:
        def backoff(exc: Exception) -> bool | float:
            if isinstance(exc, _Retryable):
                return exc.retry_after_s if exc.retry_after_s is not None else True
            return False

        for attempt in stamina.retry_context(
            on=backoff,
            attempts=self.config.attempts,
            timeout=None,
            wait_initial=self.config.wait_initial_s,
            wait_max=self.config.wait_max_s,
            wait_jitter=self.config.wait_jitter_s,
        ):
            with attempt:
                return self._post(data)
        raise AssertionError("unreachable: stamina re-raises after the last attempt")

    def flush(self, now: dt.datetime) -> FlushReport:
        """Send every pending batch, oldest first; stop at the first batch that cannot go.

        Raises:
            TransportError: the backend refused the credentials (401/403); nothing is dropped.
        """
        if not self.is_due(now):
            return FlushReport(0, 0, len(self.spool.pending()), 0, "backing off")
        sent = rejected = 0
        start = self.attempts
        error: str | None = None
        for path in self.spool.pending():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            try:
                response = self._send_one(data)
            except _Retryable as exc:
                error = str(exc)
                break
            if response.status_code in (401, 403):
                raise TransportError(
                    f"backend refused the credentials: HTTP {response.status_code}",
                    status_code=response.status_code,
                )
            if response.is_success:
                sent += 1
            else:
                rejected += 1  # malformed for good: keeping it would block the spool forever
            path.unlink(missing_ok=True)
        if error is None:
            self._failures, self._next_due = 0, None
        else:
            self._failures += 1
            base = min(
                self.config.round_backoff_max_s,
                self.config.round_backoff_initial_s * 2 ** (self._failures - 1),
            )
            self._next_due = now + dt.timedelta(seconds=base * (0.5 + self.rng.random()))
        return FlushReport(sent, rejected, len(self.spool.pending()), self.attempts - start, error)


# --- enrollment and check-in ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """What enrollment gives an endpoint: its pseudonyms and its own bearer token."""

    backend_url: str
    org_id: str
    endpoint_id: str
    token: str


@dataclass(frozen=True, slots=True)
class CheckinInfo:
    """The backend's answer to a check-in: what policy and model the endpoint should run."""

    policy_version: int
    mode: str
    model_version: int | None
    shadow_model_version: int | None


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if not response.is_success:
        raise TransportError(
            f"{what} failed: HTTP {response.status_code} {response.text[:200]}",
            status_code=response.status_code,
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise TransportError(f"{what}: the backend answered with invalid JSON") from exc
    if not isinstance(body, dict):
        raise TransportError(f"{what}: the backend answered with a non-object")
    return body


def enroll(client: httpx.Client, url: str, enroll_token: str) -> Credentials:
    """Trade an org's enroll token for this endpoint's own credentials.

    Raises:
        TransportError: the backend is unreachable or refused the token.
    """
    try:
        response = client.post(
            url.rstrip("/") + "/v1/enroll", headers={"authorization": f"Bearer {enroll_token}"}
        )
    except httpx.HTTPError as exc:
        raise TransportError(f"enroll: {exc}") from exc
    body = _json(response, "enroll")
    try:
        return Credentials(
            url.rstrip("/"), str(body["org_id"]), str(body["endpoint_id"]), str(body["token"])
        )
    except KeyError as exc:
        raise TransportError(f"enroll: the answer lacks {exc}") from exc


def check_in(client: httpx.Client, creds: Credentials) -> CheckinInfo:
    """Ask the backend which policy version and model this endpoint should run.

    Raises:
        TransportError: the backend is unreachable or answered with an error.
    """
    try:
        response = client.get(
            creds.backend_url + "/v1/checkin", headers={"authorization": f"Bearer {creds.token}"}
        )
    except httpx.HTTPError as exc:
        raise TransportError(f"check-in: {exc}") from exc
    body = _json(response, "check-in")
    try:
        return CheckinInfo(
            int(body["policy_version"]),
            str(body["mode"]),
            None if body.get("model_version") is None else int(body["model_version"]),
            None if body.get("shadow_model_version") is None else int(body["shadow_model_version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransportError(f"check-in: malformed answer ({exc})") from exc


def save_credentials(state_dir: str | os.PathLike[str], creds: Credentials) -> Path:
    """Write the credentials to `state_dir/credentials.json` (mode 0600, atomically)."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "credentials.json"
    doc = {
        "backend_url": creds.backend_url,
        "org_id": creds.org_id,
        "endpoint_id": creds.endpoint_id,
        "token": creds.token,
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps(doc).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_credentials(state_dir: str | os.PathLike[str]) -> Credentials | None:
    """The saved credentials, or None when this endpoint has not enrolled yet."""
    path = Path(state_dir) / "credentials.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(doc["backend_url"], doc["org_id"], doc["endpoint_id"], doc["token"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TransportError(f"unreadable credentials file {path}: {exc}") from exc


class TelemetryPipe:
    """The daemon's telemetry hook: buffer decisions, spool them as batches, flush to the backend.

    `record` is the `Agent(on_event=...)` callback (it takes the daemon's `DecisionEvent`);
    `notice` takes the daemon's `Notice`s and counts the health ones (self-test failures, model
    errors, breaker trips: `Notice.health_counter`); `flush(now)` spools what was buffered,
    the health counts riding in the first batch, and sends the spool when the sender is due.
    Health counts wait for a batch with events (a batch never travels empty).
    """

    def __init__(
        self, sender: TelemetrySender, creds: Credentials, *, max_events: int = 1000
    ) -> None:
        self.sender, self.creds, self.max_events = sender, creds, max_events
        self._buffer: list[TelemetryEvent] = []
        self._health: dict[tuple[int, int], list[int]] = {}
        self._lock = threading.Lock()  # decisions record while the network thread flushes

    def notice(self, notice: Any) -> None:
        """Count a daemon `Notice` that reports agent health (others are ignored)."""
        counter = getattr(notice, "health_counter", None)
        version = getattr(notice, "model_version", None)
        if counter not in HEALTH_COUNTERS or version is None:
            return
        at_ms = TelemetryEvent.ms(notice.at)
        with self._lock:
            cell = self._health.setdefault((int(version), at_ms // 86_400_000), [at_ms, 0, 0, 0])
            cell[1 + HEALTH_COUNTERS.index(counter)] += 1

    def _take_health(self) -> tuple[HealthCount, ...]:
        rows = [HealthCount(v, c[0], c[1], c[2], c[3]) for (v, _d), c in self._health.items()]
        self._health = {}
        return tuple(rows[:_MAX_HEALTH])

    def record(self, event: Any) -> None:
        """Turn one daemon `DecisionEvent` into a `TelemetryEvent` (pseudonyms only)."""
        shadow = event.shadow[0] if event.shadow else None
        row = TelemetryEvent(
            self.creds.org_id,
            self.creds.endpoint_id,
            event.sha256,
            event.model_version or 0,
            event.score,
            event.verdict,
            event.reason,
            TelemetryEvent.ms(event.observed_at),
            SCHEMA.name,
            event.features or None,
            shadow.model_version if shadow else None,
            shadow.score if shadow else None,
            shadow.verdict if shadow else None,
        )
        with self._lock:
            self._buffer.append(row)

    def flush(self, now: dt.datetime) -> FlushReport:
        """Spool the buffered events, then send the spool if the sender is due.

        Raises:
            TransportError: the backend refused the credentials.
        """
        with self._lock:
            buffered, self._buffer = self._buffer, []
        for batch in make_batches(buffered, max_events=self.max_events):
            with self._lock:
                health = self._take_health() if self._health else ()
            try:
                self.spool_put(batch, health)
            except SpoolFullError:
                continue  # counted by the spool; reported in the next batch
        return self.sender.flush(now)

    def spool_put(
        self, batch: Sequence[TelemetryEvent], health: Sequence[HealthCount] = ()
    ) -> None:
        """Store one batch (with any health counts) in the sender's spool."""
        self.sender.spool.put(batch, health)
