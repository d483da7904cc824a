"""Telemetry wire format: the event, the batch, and their msgpack bytes (one definition).

The agent owns the telemetry contract (DESIGN.md, "Telemetry"); the backend imports
`TelemetryEvent` and `decode_batch` from here, so there is exactly one definition of the bytes.

Wire format (msgpack), one batch per request, all events from one endpoint:

    {"v": 1, "key": <idempotency key>, "org": <org pseudonym>, "endpoint": <endpoint pseudonym>,
     "dropped": <events this endpoint's spool has dropped so far>,
     "events": [[sha256 (32 raw bytes), model_version, score | nil, verdict, reason,
                 observed_at_ms, feature_schema | nil, features (float32 LE bytes) | nil,
                 shadow_model_version | nil, shadow_score | nil, shadow_verdict | nil
                 [, action]], ...]}

The twelfth field, `action`, is optional and present only when something was done to the file
(`Action`: quarantined, restored, deleted, denied): events without it are 11 fields long, so
the bytes of a batch without actions are unchanged and older batches stay valid.

Events are arrays, not maps: a batch of thousands decodes several times faster. The feature
vector is optional per event: the backend keeps one vector per (sample, schema), so an agent
sends it once per sample per batch (`make_batches` drops repeats) rather than with every event.

Privacy: nothing in an event names a path, a user or a host. The endpoint id is a random
pseudonym minted by the backend at enrollment; the org id is the org's pseudonym.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import msgpack

from agent.decision import Reason, Verdict
from agent.features import SCHEMA

__all__ = [
    "CONTENT_TYPE",
    "FORMAT_VERSION",
    "HEALTH_COUNTERS",
    "MAX_EVENTS_PER_BATCH",
    "Action",
    "HealthCount",
    "TelemetryBatch",
    "TelemetryEvent",
    "decode_batch",
    "encode_batch",
    "make_batches",
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


class Action(StrEnum):
    """What the agent did to the file an event is about (issue 16: telemetry carries it).

    `none` is the default and is not sent; `denied` is an exec or open refused without a
    quarantine (none configured, or it failed); `restored` and `deleted` come from
    `fleetward-agent quarantine restore|delete`.
    """

    NONE = "none"
    QUARANTINED = "quarantined"
    RESTORED = "restored"
    DELETED = "deleted"
    DENIED = "denied"


_ACTIONS: Final = {a.value: a for a in Action}


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
    action: Action = Action.NONE

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
    (`backend.rollout.core`), so they name the version they concern: the candidate that failed its
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
        row = [
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
        ]  # fmt: skip
        if e.action is not Action.NONE:
            row.append(e.action.value)
        rows.append(row)
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
        if not isinstance(row, tuple) or len(row) not in (11, 12):
            raise _fail(f"events[{i}]", "must be an array of 11 fields (12 with an action)")
        action = Action.NONE
        if len(row) == 12:
            a = _ACTIONS.get(row[11]) if type(row[11]) is str else None
            if a is None:
                raise _fail(f"events[{i}]", f"unknown action (one of {', '.join(_ACTIONS)})")
            action, row = a, row[:11]
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
                action,
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
                    e.action,
                )
            else:
                seen.add(k)
        current.append(e)
    if current:
        batches.append(current)
    return batches
