"""The block-storm breaker and the engine around it, with time passed in."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.breaker import BreakerState, first_trips, observe, reset, window_us
from agent.bundle import Thresholds
from agent.decision import Mode, Reason, Verdict
from agent.engine import ShadowScore, effective_mode, evaluate
from agent.policy import BreakerConfig, EffectivePolicy, ListEntry

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
CONFIG = BreakerConfig(enabled=True, max_blocks=3, window_min=10)


def _blocks(times_min: list[float], config: BreakerConfig = CONFIG) -> BreakerState:
    state = BreakerState()
    for m in times_min:
        state = observe(state, Verdict.BLOCK, config, T0 + dt.timedelta(minutes=m))
    return state


def test_more_than_n_blocks_within_window_trips_the_breaker() -> None:
    assert not _blocks([0, 1, 2]).is_tripped
    tripped = _blocks([0, 1, 2, 3])
    assert tripped.is_tripped and "4 blocks within 10 min" in tripped.reason


def test_blocks_spread_beyond_the_window_do_not_trip() -> None:
    assert not _blocks([0, 5, 10, 15, 20, 25]).is_tripped


def test_window_is_half_open_at_its_far_edge() -> None:
    assert not _blocks([0, 1, 2, 10]).is_tripped  # the block at 0 left the window at 10
    assert _blocks([0, 1, 2, 9.99]).is_tripped


@pytest.mark.parametrize("verdict", [v for v in Verdict if v is not Verdict.BLOCK])
def test_only_model_blocks_count(verdict: Verdict) -> None:
    state = BreakerState()
    for i in range(10):
        state = observe(state, verdict, CONFIG, T0 + dt.timedelta(seconds=i))
    assert state == BreakerState()


def test_disabled_breaker_never_trips() -> None:
    assert not _blocks([0, 0, 0, 0, 0], BreakerConfig(enabled=False)).is_tripped


def test_tripped_breaker_latches_until_reset() -> None:
    tripped = _blocks([0, 1, 2, 3])
    later = observe(tripped, Verdict.BLOCK, CONFIG, T0 + dt.timedelta(days=1))
    assert later is tripped
    assert not reset().is_tripped


def _policy(**kw) -> EffectivePolicy:
    base = dict(
        policy_version=1,
        mode=Mode.ENFORCE,
        model_version=1,
        shadow_model_version=None,
        allowlist=(),
        blocklist=(),
        block_threshold=None,
        detect_threshold=None,
        breaker=CONFIG,
    )
    base.update(kw)
    return EffectivePolicy(**base)


def test_engine_downgrades_blocks_to_detect_once_tripped() -> None:
    state = BreakerState()
    verdicts = []
    for i in range(6):
        ev = evaluate(
            "a" * 64,
            0.99,
            policy=_policy(),
            thresholds=Thresholds(0.5),
            breaker=state,
            now=T0 + dt.timedelta(seconds=i),
        )
        state = ev.breaker
        verdicts.append((ev.decision.verdict, ev.breaker_tripped_now))
    assert verdicts[3] == (Verdict.BLOCK, True)
    assert verdicts[4][0] is Verdict.DETECT and not verdicts[4][1]
    assert effective_mode(_policy(), state) is Mode.DETECT_ONLY


def test_policy_threshold_override_wins_and_expired_allowlist_entry_no_longer_applies() -> None:
    entry = ListEntry("b" * 64, created_at=T0 - dt.timedelta(days=2), expires_at=T0)
    policy = _policy(block_threshold=0.9, allowlist=(entry,))
    ev = evaluate(
        "b" * 64, 0.95, policy=policy, thresholds=Thresholds(0.99), breaker=BreakerState(), now=T0
    )
    assert ev.decision.verdict is Verdict.BLOCK and ev.decision.reason is Reason.SCORE_BLOCK
    ev = evaluate(
        "b" * 64,
        0.95,
        policy=policy,
        thresholds=Thresholds(0.99),
        breaker=BreakerState(),
        now=T0 - dt.timedelta(days=1),
    )
    assert ev.decision.verdict is Verdict.ALLOWLISTED


def test_shadow_verdicts_use_their_own_thresholds_and_never_feed_the_breaker() -> None:
    ev = evaluate(
        "c" * 64,
        0.2,
        policy=_policy(),
        thresholds=Thresholds(0.5),
        breaker=BreakerState(),
        now=T0,
        shadow=[ShadowScore(2, 0.99, Thresholds(0.5))],
    )
    assert ev.decision.verdict is Verdict.ALLOW
    assert ev.shadow[0].verdict is Verdict.BLOCK
    assert ev.breaker == BreakerState()


def test_kill_switch_allows_everything() -> None:
    ev = evaluate(
        "d" * 64,
        0.99,
        policy=_policy(mode=Mode.OFF),
        thresholds=Thresholds(0.5),
        breaker=BreakerState(),
        now=T0,
    )
    assert ev.decision.verdict is Verdict.ALLOW and ev.decision.reason is Reason.MODE_OFF


_GROUP = st.tuples(
    st.lists(st.integers(0, 3_000_000_000), max_size=12),  # block times, us
    st.integers(1, 4),  # max_blocks
    st.floats(0.001, 30.0, allow_nan=False),  # window_min, fractional ones included
)


@given(st.lists(_GROUP, max_size=6))
def test_first_trips_trips_where_observe_trips(groups) -> None:
    times, starts, limits, windows, expected = [], [], [], [], []
    for raw, max_blocks, window_min in groups:
        config = BreakerConfig(enabled=True, max_blocks=max_blocks, window_min=window_min)
        us = sorted(raw)
        starts.append(len(times))
        state, trip = BreakerState(), -1
        for i, u in enumerate(us):
            state = observe(state, Verdict.BLOCK, config, T0 + dt.timedelta(microseconds=u))
            if state.is_tripped:
                trip = len(times) + i
                break
        times += us
        limits.append(max_blocks)
        windows.append(window_us(config))
        expected.append(trip)
    got = first_trips(
        np.asarray(times, np.int64),
        np.asarray(starts, np.int64),
        np.asarray(limits, np.int64),
        np.asarray(windows, np.int64),
    )
    assert got.tolist() == expected


def test_first_trips_counts_blocks_kept_from_earlier_steps_and_keeps_the_window_half_open() -> None:
    w = window_us(CONFIG)  # 10 min, at most 3 blocks
    times = np.asarray(
        [0, 1, 2, w]  # the block at 0 left the window at w: no trip
        + [0, 1, 2, w - 1]  # four within the window: trips at the fourth
        + [1, 5, 6, w + 2, w + 3],  # (1, 5, 6 kept from earlier): trips at w + 3, not w + 2
        np.int64,
    )
    got = first_trips(times, np.asarray([0, 4, 8]), np.full(3, 3), np.full(3, w))
    assert got.tolist() == [-1, 7, 12]
