"""The cohort's breakers: the agent's `observe`, step by step, for many endpoints at once."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.breaker import BreakerState, observe, window_us
from agent.decision import Verdict
from agent.policy import BreakerConfig
from fleet_sim._clock import SimClock
from fleet_sim.cohort._breaker import Breakers, seconds_to_us

CLOCK = SimClock(dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
_US = dt.timedelta(microseconds=1)


@given(
    st.lists(
        st.one_of(
            st.floats(0, 3e6, allow_nan=False),
            st.integers(0, 6e12).map(lambda k: k / 2e6),  # half-microsecond ties
        ),
        max_size=50,
    )
)
def test_seconds_to_us_is_the_clocks_microseconds(seconds) -> None:
    got = seconds_to_us(np.asarray(seconds, np.float64)).tolist()
    assert got == [(CLOCK.at(s) - CLOCK.start) // _US for s in seconds]


# per step: blocks as (endpoint, seconds into the step); between steps, a prune or a reset
_STEP = st.tuples(
    st.lists(st.tuples(st.integers(0, 4), st.floats(0, 900, allow_nan=False)), max_size=12),
    st.sampled_from(["-", "prune", "reset 0", "reset 3"]),
)


@settings(max_examples=200)
@given(st.lists(_STEP, max_size=10), st.integers(1, 3), st.floats(0.5, 70, allow_nan=False))
def test_breakers_trip_where_observe_trips_step_after_step(steps, max_blocks, window_min) -> None:
    config = BreakerConfig(enabled=True, max_blocks=max_blocks, window_min=window_min)
    states: dict[int, BreakerState] = {}  # the scalar reference, as the engine kept it before
    tripped: set[int] = set()
    book = Breakers()
    for k, (blocks, between) in enumerate(steps):
        t0 = 900.0 * k * 3  # steps 45 minutes apart
        blocks = sorted((e, t0 + s) for e, s in blocks)
        expected = {}
        latched = set(tripped)  # tripped in an earlier step: the engine feeds them nothing
        for e, t in blocks:
            if e in tripped:
                continue
            state = observe(states.get(e, BreakerState()), Verdict.BLOCK, config, CLOCK.at(t))
            states[e] = state
            if state.is_tripped and e not in expected:
                expected[e] = t
                tripped.add(e)
        live = [(e, t) for e, t in blocks if e not in latched]
        ep = np.asarray([e for e, _ in live], np.int64)
        ts = np.asarray([t for _, t in live], np.float64)
        n = ep.size
        got_ep, at = book.feed(ep, ts, np.full(n, max_blocks), np.full(n, window_us(config)))
        assert dict(zip(got_ep.tolist(), ts[at].tolist(), strict=True)) == expected
        if between == "prune":
            t1 = t0 + 900
            book.prune(t1)
            for e in [e for e, s in states.items() if not s.is_tripped]:
                if CLOCK.seconds(states[e].block_times[-1]) < t1 - 3600:
                    del states[e]
        elif between.startswith("reset"):
            e = int(between.split()[1])
            hit = np.zeros(5, bool)
            hit[e] = True
            book.forget(hit, 0)
            states.pop(e, None)
            tripped.discard(e)
