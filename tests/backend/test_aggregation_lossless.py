"""Any count-based metric on the raw event log equals the same metric on the stored aggregates.

Random logs go through the real path (encode, columnar decode, fold, SQLite upsert in several
batches) and back out of the store; the metrics are computed once on the events, once on rows.
Each batch's columnar fold is also checked against the reference `aggregate` over events.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decision import Reason, Verdict
from agent.telemetry import TelemetryEvent, decode_batch, encode_batch
from backend import sketch
from backend.ingest import AggregateRow, BatchRow, aggregate, aggregate_columns, parse_columns
from backend.store import Store

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SAMPLES = [f"{i:02x}" * 32 for i in range(8)]
MALICIOUS = {s for i, s in enumerate(SAMPLES) if i % 3 == 0}


@st.composite
def event_logs(draw: st.DrawFn) -> list[TelemetryEvent]:
    n = draw(st.integers(1, 120))
    events = []
    for _ in range(n):
        org = draw(st.sampled_from(["org_a", "org_b", "org_c"]))
        shadow = draw(st.booleans())
        events.append(
            TelemetryEvent(
                org,
                f"ep_{org}_{draw(st.integers(0, 9))}",
                draw(st.sampled_from(SAMPLES)),
                draw(st.integers(1, 3)),
                draw(st.floats(0, 1)),
                draw(st.sampled_from(list(Verdict))),
                Reason.SCORE_BELOW,
                TelemetryEvent.ms(T0 + dt.timedelta(minutes=draw(st.integers(0, 4 * 24 * 60)))),
                "static-v1",
                None,
                4 if shadow else None,
                0.5 if shadow else None,
                draw(st.sampled_from(list(Verdict))) if shadow else None,
            )
        )
    return events


def _metrics(
    units: Iterable[tuple[str, str, int, bool, Verdict, int, set[int]]],
) -> dict[str, object]:
    """Metrics over (org, sha, version, shadow, verdict, weight, endpoint-hashes) units."""
    mal = ben = mal_alert = ben_alert = 0
    org_alerts: Counter[str] = Counter()
    prevalence: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    alerts_by_sample: Counter[tuple[str, str]] = Counter()
    for org, sha, _version, shadow, verdict, weight, eps in units:
        if shadow:
            continue
        prevalence[(org, sha)] |= eps
        if sha in MALICIOUS:
            mal += weight
            mal_alert += weight * verdict.is_alert
        else:
            ben += weight
            ben_alert += weight * verdict.is_alert
            if verdict.is_alert:
                alerts_by_sample[(org, sha)] += weight
        if verdict.is_alert:
            org_alerts[org] += weight
    weighted_fp = sum(len(prevalence[k]) * c for k, c in alerts_by_sample.items())
    return {
        "detection_rate": (mal_alert, mal),
        "fp_rate": (ben_alert, ben),
        "org_alerts": dict(org_alerts),
        "prevalence_weighted_fp_alerts": weighted_fp,
        "prevalence": {k: len(v) for k, v in prevalence.items()},
    }


def _from_events(events: list[TelemetryEvent]):
    for e in events:
        h = {sketch.endpoint_hash(e.endpoint_id)}
        yield e.org_id, e.sha256, e.model_version, False, e.verdict, 1, h


def _from_rows(rows: list[AggregateRow]):
    for r in rows:
        hashes = {
            int.from_bytes(r.endpoints[i : i + 8], "big") for i in range(0, len(r.endpoints), 8)
        }
        yield r.org_id, r.sha256, r.model_version, r.shadow, r.verdict, r.count, hashes


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=event_logs(), batch_size=st.integers(1, 50))
def test_metrics_on_aggregates_equal_metrics_on_raw_events(
    tmp_path_factory, events: list[TelemetryEvent], batch_size: int
) -> None:
    store = Store(tmp_path_factory.mktemp("lossless") / "db.sqlite", synchronous="NORMAL")
    try:
        orgs = {o: store.create_org(o, T0).org_id for o in ("org_a", "org_b", "org_c")}
        by_endpoint: defaultdict[str, list[TelemetryEvent]] = defaultdict(list)
        for e in events:
            by_endpoint[e.endpoint_id].append(e)
        renamed = []
        for group in by_endpoint.values():
            group = [TelemetryEvent(orgs[e.org_id], e.endpoint_id, *_rest(e)) for e in group]
            renamed += group
            for i in range(0, len(group), batch_size):
                raw = encode_batch(group[i : i + batch_size])
                folded = aggregate_columns(parse_columns(raw, max_bytes=1 << 24))
                rows, feats = aggregate(decode_batch(raw).events)  # the reference fold
                assert folded.rows == sorted(_as_tuple(r) for r in rows)
                assert folded.features == [
                    (bytes.fromhex(f.sha256), f.schema, f.vector) for f in feats
                ]
                store.ingest_aggregate(folded, T0)
        stored = store.aggregates()
    finally:
        store.close()
    assert _metrics(_from_events(renamed)) == _metrics(_from_rows(stored))
    assert sum(r.count for r in stored if not r.shadow) == len(events)
    assert sum(r.count for r in stored if r.shadow) == sum(
        e.shadow_verdict is not None for e in events
    )
    by_day = Counter((e.observed_at_ms // 86_400_000, e.org_id, e.sha256) for e in renamed)
    assert by_day == _sum_rows(stored)


def _as_tuple(r: AggregateRow) -> BatchRow:
    sha = bytes.fromhex(r.sha256)
    return (
        r.day,
        sha,
        r.model_version,
        int(r.shadow),
        r.verdict.value,
        r.count,
        r.first_seen_ms,
        r.last_seen_ms,
    )


def _rest(e: TelemetryEvent) -> tuple[object, ...]:
    return (
        e.sha256,
        e.model_version,
        e.score,
        e.verdict,
        e.reason,
        e.observed_at_ms,
        e.feature_schema,
        e.features,
        e.shadow_model_version,
        e.shadow_score,
        e.shadow_verdict,
    )


def _sum_rows(rows: list[AggregateRow]) -> Counter[tuple[int, str, str]]:
    out: Counter[tuple[int, str, str]] = Counter()
    for r in rows:
        if not r.shadow:
            out[(r.day, r.org_id, r.sha256)] += r.count
    return out


def test_distinct_endpoints_are_exact_below_64_and_estimated_above() -> None:
    few = sketch.sketch_of(sketch.endpoint_hash(f"ep_{i}") for i in range(63))
    assert sketch.is_exact(few) and sketch.estimate(few) == 63
    merged = b""
    for i in range(5000):
        merged = sketch.merge(merged, sketch.sketch_of([sketch.endpoint_hash(f"ep_{i}")]))
    assert len(merged) == 8 * sketch.K
    assert abs(sketch.estimate(merged) - 5000) / 5000 < 0.4


def test_first_and_last_seen_span_the_batches(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    org = store.create_org("a", T0).org_id
    times = [T0 + dt.timedelta(hours=h) for h in (5, 1, 9)]
    for i, t in enumerate(times):
        e = TelemetryEvent(
            org, "ep_x", "aa" * 32, 1, 0.1, Verdict.ALLOW, Reason.SCORE_BELOW, TelemetryEvent.ms(t)
        )
        batch = decode_batch(encode_batch([e], key=f"key-{i:08d}"))
        store.ingest(batch, *aggregate(batch.events), T0)
    (row,) = store.aggregates()
    store.close()
    assert (row.count, row.first_seen_ms, row.last_seen_ms) == (
        3,
        TelemetryEvent.ms(times[1]),
        TelemetryEvent.ms(times[2]),
    )
