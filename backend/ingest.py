"""Telemetry ingestion, the pure part: validate a batch, fold its events into aggregate rows.

No SQLite and no clock here. `parse_batch` turns request bytes into the agent's frozen
`TelemetryBatch` (the wire format is defined once, in `agent.telemetry`); `aggregate` folds
events into `AggregateRow`s keyed (day, org, sample, model version, shadow, verdict) and
`FeatureRow`s (one vector per sample and schema). Shadow-model verdicts become rows of their own
with `shadow=True`, so a candidate's would-be alerts are counted beside the active model's.

Why this is lossless for every count-based metric: each event adds exactly 1 to exactly one
active row (and one shadow row when it carries a shadow verdict), and rows only ever add, so
any sum over events grouped by a coarsening of the key equals the same sum over rows weighted
by `count`. `tests/backend/test_aggregation_lossless.py` checks it on random logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.decision import Verdict
from agent.telemetry import TelemetryBatch, TelemetryEvent, decode_batch
from backend import sketch
from backend.errors import BatchInvalidError, PayloadTooLargeError

__all__ = ["MS_PER_DAY", "AggregateRow", "FeatureRow", "aggregate", "parse_batch"]

MS_PER_DAY = 86_400_000


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
