"""Two replicas deciding on one rollout at once: one decision is logged, the other gets 409.

Each replica used to read the rollout, decide, and then write the state it computed in its
own transaction: two replicas reading the same state both logged (two pauses, two halts), the
second overwriting the first. Now the write compares the stored state with the one the
decision was made from (compare-and-set) and refuses a stale one with ConflictError (409).

The race is forced, not hoped for: each replica's first read of the rollout waits at a barrier
until the other replica has read it too, so both decide on the same state. Over both store
dialects (the parity fixture).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from backend.admin import assign_model
from backend.errors import ConflictError
from backend.rollout.core import RolloutConfig, RolloutState
from backend.rollout.service import (
    EndpointDayRow,
    decision_log,
    get_rollout,
    pause_rollout,
    record_endpoint_days,
    start_rollout,
    tick_rollout,
)
from backend.store import AggregateStore
from tests.backend.test_store_postgres import store

__all__ = ["store"]

T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
CFG = RolloutConfig(max_fp_increase=0.25, min_endpoint_days=30, min_org_endpoint_days=10)
H2 = dt.timedelta(hours=2)


class _Replica:
    """One replica's view of the shared store: its first rollout read waits for the other's."""

    def __init__(self, store: AggregateStore, barrier: threading.Barrier) -> None:
        self._store, self._barrier, self.reads = store, barrier, 0

    def rollout_state(self, rollout_id: int | None = None) -> str | None:
        raw = self._store.rollout_state(rollout_id)
        self.reads += 1
        if self.reads == 1:
            self._barrier.wait(timeout=20)  # both replicas hold the same state now
        return raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _race(store: AggregateStore, act: Callable[[Any], object]) -> list[object]:
    """Run `act` as two replicas at once; each outcome is a result or the error raised."""
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(act(_Replica(store, barrier)))
        except Exception as exc:  # the outcome under test
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 2 and not barrier.broken, outcomes  # both read before either wrote
    return outcomes


def _started(store: AggregateStore) -> list[int]:
    published: list[int] = []

    def publish(raw: bytes, now: dt.datetime) -> None:
        published.append(len(raw))

    store.create_org("o0", T0)
    assign_model(store, publish, 1, org_id=None, now=T0)
    start_rollout(store, publish, 2, now=T0, config=CFG, salt="race")
    return published


def test_two_replicas_pausing_at_once_log_one_pause_and_the_other_gets_409(
    store: AggregateStore,
) -> None:
    _started(store)
    outcomes = _race(store, lambda replica: pause_rollout(replica, now=T0 + dt.timedelta(hours=1)))
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ConflictError), outcomes
    assert "another decision was logged" in str(errors[0])
    assert [x["action"] for x in decision_log(store)] == ["start", "pause"]
    r = get_rollout(store)
    assert r is not None and r.state is RolloutState.PAUSED


def test_two_replicas_ticking_at_once_log_one_halt(store: AggregateStore) -> None:
    published = _started(store)
    org = store.org_ids()[0]
    day = int(T0.timestamp()) // 86_400
    rows = [EndpointDayRow(day, f"c-{i}", 1, org, 10, 1) for i in range(200)]
    rows += [EndpointDayRow(day, f"n-{i}", 2, org, 10, 9) for i in range(40)]  # the surge
    record_endpoint_days(store, rows)
    before = len(published)

    def tick(replica: Any) -> object:
        return tick_rollout(replica, lambda raw, now: published.append(len(raw)), now=T0 + H2)

    outcomes = _race(store, tick)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ConflictError), outcomes
    assert [x["action"] for x in decision_log(store)] == ["start", "halt"]
    r = get_rollout(store)
    assert r is not None and r.state is RolloutState.HALTED
    # the loser published nothing when it saw the winner's decision before its own publish,
    # and at most the same rollback otherwise
    assert 1 <= len(published) - before <= 2
