"""Telemetry ingestion, the pure part: validate a batch, fold its events into aggregate rows.

No SQLite and no clock here. Two paths over the same wire format (defined once, in
`agent.telemetry`):
- the hot path, used by the HTTP route: `parse_columns` reads a batch as columns
  (`agent.telemetry`, no object per event) and `aggregate_columns` folds them with C-level dict
  operations into a `BatchAggregate` whose rows are plain tuples in the store's key order;
- the reference path: `parse_batch` gives the agent's frozen `TelemetryBatch` and `aggregate`
  folds any events (several endpoints too) into `AggregateRow`s keyed
  (day, org, sample, model version, shadow, verdict) and `FeatureRow`s (one vector per sample
  and schema). The tests hold the two paths equal. Shadow-model verdicts become rows of their own
with `shadow=True`, so a candidate's would-be alerts are counted beside the active model's.

Why this is lossless for every count-based metric: each event adds exactly 1 to exactly one
active row (and one shadow row when it carries a shadow verdict), and rows only ever add, so
any sum over events grouped by a coarsening of the key equals the same sum over rows weighted
by `count`. `tests/backend/test_aggregation_lossless.py` checks it on random logs.

Actions (`agent.telemetry.Action`): an event may say what the agent did to the file
(`quarantined`, `denied`, `restored`, `deleted`). An action event is never a decision: the agent
reports the decision on its own event and the action on another, so whenever a flush falls
between them nothing is counted twice. Action events are counted by `/metrics` and left out of
the aggregates and the rollout evidence (`decisions_only`), so a restore never adds a block
verdict or an alert.

The rollout gate's evidence comes from the same batch (`endpoint_day_rows`): per day and
active model version, events, alerts (`agent.decision.Verdict.is_alert`, the one definition)
and the batch's health counts. The store writes it in the batch's one ingest transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent.decision import Verdict
from agent.telemetry import Action, TelemetryBatch, TelemetryEvent, decode_batch
from agent.telemetry.columns import TelemetryColumns, decode_columns
from backend import sketch
from backend.errors import BatchInvalidError, PayloadTooLargeError

__all__ = [
    "MS_PER_DAY",
    "AggregateRow",
    "ArmDayRow",
    "BatchAggregate",
    "BatchRow",
    "EvidenceRow",
    "FeatureRow",
    "aggregate",
    "aggregate_columns",
    "decisions_only",
    "endpoint_day_rows",
    "parse_batch",
    "parse_columns",
]

MS_PER_DAY = 86_400_000
_NOT_DECISIONS = frozenset(a.value for a in Action if a is not Action.NONE)
_ALERT_VALUES = frozenset(v.value for v in Verdict if v.is_alert)

# (day, endpoint_id, model_version, org_id, events, alerts, self_test_failures, model_errors,
#  breaker_trips): one endpoint's counters for one day under one active model version
EvidenceRow = tuple[int, str, int, str, int, int, int, int, int]
# (day, model_version, org_id, endpoint_days, events, alerts, self_test_failures,
#  model_errors, breaker_trips): an increment of the gate's rollup, without the ledger
ArmDayRow = tuple[int, int, str, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class AggregateRow:
    """Counts for one (day, org, sample, model version, shadow, verdict).

    `day` is days since 1970-01-01 (UTC). `endpoints` is a `backend.sketch` of the endpoints
    that reported it; `distinct_endpoints` reads it (exact below `sketch.K`).
    """

    day: int
    org_id: str
    sha256: str
    model_version: int
    shadow: bool
    verdict: Verdict
    count: int
    endpoints: bytes
    first_seen_ms: int
    last_seen_ms: int

    @property
    def distinct_endpoints(self) -> int:
        """How many endpoints reported this row (exact below 64, then an estimate)."""
        return sketch.estimate(self.endpoints)


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """The one feature vector kept per (sample, feature schema)."""

    sha256: str
    schema: str
    vector: bytes


def parse_batch(raw: bytes, *, max_bytes: int) -> TelemetryBatch:
    """Validate request bytes as one telemetry batch.

    Raises:
        PayloadTooLargeError: more than `max_bytes`.
        BatchInvalidError: not a valid batch; the message names the first bad field.
    """
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(
            f"batch of {len(raw)} bytes is over {max_bytes}", limit_bytes=max_bytes
        )
    try:
        return decode_batch(raw)
    except ValueError as exc:
        raise BatchInvalidError(str(exc)) from None


def aggregate(events: Sequence[TelemetryEvent]) -> tuple[list[AggregateRow], list[FeatureRow]]:
    """Fold events into aggregate rows and the first feature vector seen per sample."""
    acc: dict[tuple[int, str, str, int, bool, Verdict], list[Any]] = {}
    hashes: dict[str, int] = {}
    features: dict[tuple[str, str], bytes] = {}
    for e in events:
        if e.action.value in _NOT_DECISIONS:
            continue
        h = hashes.get(e.endpoint_id)
        if h is None:
            h = hashes[e.endpoint_id] = sketch.endpoint_hash(e.endpoint_id)
        at = e.observed_at_ms
        day = at // MS_PER_DAY
        key = (day, e.org_id, e.sha256, e.model_version, False, e.verdict)
        cell = acc.get(key)
        if cell is None:
            acc[key] = [1, at, at, {h}]
        else:
            cell[0] += 1
            cell[1] = min(cell[1], at)
            cell[2] = max(cell[2], at)
            cell[3].add(h)
        if e.shadow_verdict is not None and e.shadow_model_version is not None:
            key = (day, e.org_id, e.sha256, e.shadow_model_version, True, e.shadow_verdict)
            cell = acc.get(key)
            if cell is None:
                acc[key] = [1, at, at, {h}]
            else:
                cell[0] += 1
                cell[1] = min(cell[1], at)
                cell[2] = max(cell[2], at)
                cell[3].add(h)
        if e.features is not None and e.feature_schema is not None:
            features.setdefault((e.sha256, e.feature_schema), e.features)
    single = {h: sketch.sketch_of([h]) for h in hashes.values()}
    rows = [
        AggregateRow(
            *k,
            c[0],
            single[next(iter(c[3]))] if len(c[3]) == 1 else sketch.sketch_of(c[3]),
            c[1],
            c[2],
        )
        for k, c in acc.items()
    ]
    return rows, [FeatureRow(s, schema, v) for (s, schema), v in features.items()]


# --- the hot path: columns in, key-ordered row tuples out -----------------------------------

# (day, sha256 raw, model_version, shadow 0/1, verdict value, count, first_seen_ms, last_seen_ms)
BatchRow = tuple[int, bytes, int, int, str, int, int, int]


@dataclass(frozen=True, slots=True)
class BatchAggregate:
    """One endpoint's batch, folded: what `Store.ingest_aggregate` writes in one transaction.

    `rows` are sorted by the aggregates table's key (day, sample, version, shadow, verdict) so
    that the upserts walk the B-tree in order. A batch comes from one endpoint, so every row's
    distinct-endpoint sketch is the same one-endpoint `endpoints`.
    """

    key: str
    org_id: str
    endpoint_id: str
    dropped_events: int
    events: int
    endpoints: bytes
    rows: list[BatchRow]
    features: list[tuple[bytes, str, bytes]]


def parse_columns(raw: bytes, *, max_bytes: int) -> TelemetryColumns:
    """Validate request bytes as one telemetry batch, read as columns.

    Raises:
        PayloadTooLargeError: more than `max_bytes`.
        BatchInvalidError: not a valid batch; the message names the first bad field.
    """
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(
            f"batch of {len(raw)} bytes is over {max_bytes}", limit_bytes=max_bytes
        )
    try:
        return decode_columns(raw)
    except ValueError as exc:
        raise BatchInvalidError(str(exc)) from None


def _fold(
    days: Sequence[int] | None,
    day: int,
    sha: Sequence[bytes],
    version: Sequence[int | None],
    verdict: Sequence[str | None],
    at: Sequence[int],
    shadow: int,
) -> list[BatchRow]:
    """Count, min and max time per key; `at` must be ascending (so last write = max)."""
    if days is None:
        keys: list[tuple[Any, ...]] = list(zip(sha, version, verdict, strict=True))
    else:
        keys = list(zip(days, sha, version, verdict, strict=True))
    counts = Counter(keys)
    last = dict(zip(keys, at, strict=True))
    first = dict(zip(reversed(keys), reversed(at), strict=True))
    if days is None:
        return [(day, k[0], k[1], shadow, k[2], c, first[k], last[k]) for k, c in counts.items()]
    return [(k[0], k[1], k[2], shadow, k[3], c, first[k], last[k]) for k, c in counts.items()]


def decisions_only(batch: TelemetryColumns) -> TelemetryColumns:
    """The batch without its action events (the batch itself when it has none)."""
    if not batch.action or _NOT_DECISIONS.isdisjoint(batch.action):
        return batch
    keep = [i for i, a in enumerate(batch.action) if a not in _NOT_DECISIONS]

    def pick(column: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(column[i] for i in keep)

    return replace(
        batch,
        sha256=pick(batch.sha256),
        model_version=pick(batch.model_version),
        score=pick(batch.score),
        verdict=pick(batch.verdict),
        reason=pick(batch.reason),
        observed_at_ms=pick(batch.observed_at_ms),
        feature_schema=pick(batch.feature_schema),
        features=pick(batch.features),
        shadow_model_version=pick(batch.shadow_model_version),
        shadow_score=pick(batch.shadow_score),
        shadow_verdict=pick(batch.shadow_verdict),
        action=pick(batch.action),
    )


def aggregate_columns(batch: TelemetryColumns) -> BatchAggregate:
    """Fold one batch's columns into key-ordered rows; equal to `aggregate` on its events.

    `restored` and `deleted` events are left out (`decisions_only`); `events` counts them.
    """
    received, batch = batch.size, decisions_only(batch)
    endpoints = sketch.sketch_of([sketch.endpoint_hash(batch.endpoint_id)])
    if batch.size == 0:
        return BatchAggregate(
            batch.key, batch.org_id, batch.endpoint_id, batch.dropped_events, received,
            endpoints, [], [],
        )  # fmt: skip
    at = batch.observed_at_ms
    sha, version, verdict = batch.sha256, batch.model_version, batch.verdict
    s_version, s_verdict = batch.shadow_model_version, batch.shadow_verdict
    if at != tuple(sorted(at)):  # agents send in time order; sort if not
        order = sorted(range(len(at)), key=at.__getitem__)
        at = tuple(at[i] for i in order)
        sha = tuple(sha[i] for i in order)
        version = tuple(version[i] for i in order)
        verdict = tuple(verdict[i] for i in order)
        s_version = tuple(s_version[i] for i in order)
        s_verdict = tuple(s_verdict[i] for i in order)
    day = at[0] // MS_PER_DAY
    days = None if at[-1] // MS_PER_DAY == day else [t // MS_PER_DAY for t in at]
    rows = _fold(days, day, sha, version, verdict, at, 0)
    if batch.has_shadow:
        idx = [i for i, v in enumerate(s_verdict) if v is not None]
        rows += _fold(
            None if days is None else [days[i] for i in idx],
            day,
            [sha[i] for i in idx],
            [s_version[i] for i in idx],
            [s_verdict[i] for i in idx],
            [at[i] for i in idx],
            1,
        )
    rows.sort()
    features: dict[tuple[bytes, str], bytes] = {}
    if batch.features.count(None) != batch.size:
        for s, schema, vector in zip(
            batch.sha256, batch.feature_schema, batch.features, strict=True
        ):
            if vector is not None and schema is not None:
                features.setdefault((s, schema), vector)
    return BatchAggregate(
        batch.key,
        batch.org_id,
        batch.endpoint_id,
        batch.dropped_events,
        received,
        endpoints,
        rows,
        [(s, schema, v) for (s, schema), v in features.items()],
    )


def endpoint_day_rows(batch: TelemetryColumns) -> list[EvidenceRow]:
    """The rollout evidence of one batch: a row per (day, active model version) it touches.

    Alerts are the verdicts `agent` calls alerts. Health counts (self-test failures, model
    errors, breaker trips) add to the row of their day and version; a version with health but
    no events gets a row of its own, one endpoint-day of exposure, which it was (a canary
    whose self-test failed was still assigned that day). `restored` and `deleted` events are
    not decisions and are left out.
    """
    batch = decisions_only(batch)
    cells: dict[tuple[int, int], list[int]] = {}
    at, versions, verdicts = batch.observed_at_ms, batch.model_version, batch.verdict
    if (
        at
        and min(at) // MS_PER_DAY == max(at) // MS_PER_DAY
        and versions.count(versions[0]) == len(versions)
    ):  # the usual batch: one day, one model (C-level counts, no per-event Python)
        alerts = sum(verdicts.count(v) for v in _ALERT_VALUES)
        cells[at[0] // MS_PER_DAY, versions[0]] = [len(at), alerts, 0, 0, 0]
    else:
        acc = Counter(
            zip(
                [t // MS_PER_DAY for t in at],
                versions,
                [v in _ALERT_VALUES for v in verdicts],
                strict=True,
            )
        )
        for (day, version, alert), n in acc.items():
            cell = cells.setdefault((day, version), [0, 0, 0, 0, 0])
            cell[0] += n
            cell[1] += n if alert else 0
    for h in batch.health:
        cell = cells.setdefault((h.observed_at_ms // MS_PER_DAY, h.model_version), [0] * 5)
        cell[2] += h.self_test_failures
        cell[3] += h.model_errors
        cell[4] += h.breaker_trips
    ep, org = batch.endpoint_id, batch.org_id
    return [
        (day, ep, version, org, c[0], c[1], c[2], c[3], c[4])
        for (day, version), c in sorted(cells.items())
    ]
