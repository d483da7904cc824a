"""The rollout evidence of a batch (`backend.ingest.endpoint_day_rows`) against a plain count.

The usual batch (one day, one model version) takes a path of whole-column counts; any other
takes the per-event fold. Both must give, per (day, version), the events and the alerts as
`agent` defines them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decision import Reason, Verdict
from agent.telemetry import TelemetryEvent, encode_batch
from backend.ingest import MS_PER_DAY, endpoint_day_rows, parse_columns

T0 = TelemetryEvent.ms(dt.datetime(2026, 11, 1, 23, 0, tzinfo=dt.UTC))

_event = st.tuples(
    st.sampled_from(list(Verdict)),
    st.sampled_from([3, 3, 3, 4]),  # mostly one version
    st.integers(0, 2 * 3_600_000),  # up to two hours past 23:00: often one day, not always
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(_event, min_size=1, max_size=40), one_day=st.booleans())
def test_evidence_counts_events_and_alerts_per_day_and_version(
    events: list[tuple[Verdict, int, int]], one_day: bool
) -> None:
    if one_day:  # the fast path's case: one day, one version
        events = [(v, 3, t % 3_600_000) for v, _, t in events]
    sent = [
        TelemetryEvent("org_a", "ep_a", "ab" * 32, m, 0.5, v, Reason.SCORE_BELOW, T0 + t)
        for v, m, t in events
    ]
    rows = endpoint_day_rows(parse_columns(encode_batch(sent, key="batch-0001"), max_bytes=1 << 20))
    seen = Counter(((T0 + t) // MS_PER_DAY, m) for _, m, t in events)
    alerts = Counter(((T0 + t) // MS_PER_DAY, m) for v, m, t in events if v.is_alert)
    assert rows == [
        (day, "ep_a", m, "org_a", n, alerts[day, m], 0, 0, 0)
        for (day, m), n in sorted(seen.items())
    ]
