"""Shared analysis parts: `decide_batch` equals per-row `decide`; vectorised as-of lookups."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decision import DecisionContext, Mode, decide
from backend.analysis._base import VERDICTS, PolicyTimeline, decide_batch, to_us
from backend.analysis.rescore import Coded, verdict_codes
from tests.backend.history import History, history

__all__ = ["history"]

POOL = tuple(f"{i:064x}" for i in range(8))
THRESHOLDS = st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
SCORES = st.one_of(
    THRESHOLDS,
    st.floats(min_value=0.0, max_value=1.0),
    st.just(float("nan")),
    st.sampled_from([np.nextafter(0.5, 0.0), np.nextafter(0.9, 1.0)]),
)


@st.composite
def contexts(draw: st.DrawFn) -> DecisionContext:
    return DecisionContext(
        block_threshold=draw(THRESHOLDS),
        detect_threshold=draw(st.one_of(st.none(), THRESHOLDS)),
        mode=draw(st.sampled_from(Mode)),
        allowlist=frozenset(draw(st.lists(st.sampled_from(POOL), max_size=4))),
        blocklist=frozenset(draw(st.lists(st.sampled_from(POOL), max_size=4))),
        breaker_tripped=draw(st.booleans()),
    )


@settings(max_examples=500, deadline=None)
@given(
    ctx=contexts(),
    rows=st.lists(st.tuples(st.integers(0, len(POOL) - 1), SCORES), max_size=60),
)
def test_parity_decide_batch_equals_decide_on_every_row(
    ctx: DecisionContext, rows: list[tuple[int, float]]
) -> None:
    index = np.array([j for j, _ in rows], dtype=np.intp)
    scores = np.array([s for _, s in rows], dtype=np.float64)
    got = decide_batch(ctx, POOL, index, scores)
    want = [decide(POOL[j], float(s), ctx).verdict for j, s in rows]
    assert [VERDICTS[int(c)] for c in got] == want


def test_coded_column_reads_like_the_sequence_it_encodes() -> None:
    items = ["b", "a", "b", "c", "a"]
    col = Coded.encode(items)
    assert list(col) == items and len(col) == 5 and list(col[1:3]) == items[1:3]
    assert Coded.encode(col) is col
    assert [VERDICTS[c] for c in verdict_codes(tuple(VERDICTS[::-1]))] == list(VERDICTS[::-1])


def test_vectorised_segments_equal_the_bisect_ones(history: History) -> None:
    records = history.store.policy_history()
    timeline = PolicyTimeline((r.changed_at, r.document) for r in records)
    edges = {r.changed_at for r in records}
    expiries = set()
    for r in records:
        for org in history.orgs:
            eff = timeline.effective(org, r.changed_at)
            assert eff is not None
            for e in eff.allowlist + eff.blocklist:
                edges.add(e.created_at)
                expiries |= {e.expires_at} if e.expires_at else set()
    assert expiries  # the history's allowlist entry expires
    edges |= expiries
    step = dt.timedelta(microseconds=1)
    times = sorted({t + d for t in edges for d in (-step, dt.timedelta(0), step)})
    us = np.array([to_us(t) for t in times], dtype=np.int64)
    for org in history.orgs:
        index = timeline.policy_indexes(us)
        for k, t in enumerate(times):
            seg = timeline.list_segments(int(index[k]), org, us[k : k + 1])
            assert (int(index[k]), int(seg[0])) == timeline.segment(org, t)
