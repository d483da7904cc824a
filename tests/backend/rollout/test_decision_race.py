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
from backend.rollout.core import RolloutConfig, RolloutDecision, RolloutState
from backend.rollout.service import (
    EndpointDayRow,
    decision_log,
    get_rollout,
    pause_rollout,
    record_endpoint_days,
    start_rollout,
    tick_rollout,
)
from backend.store import AggregateStore, open_store
from tests.backend.store.test_store_postgres import store

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


# --- the policy a decision writes and the decision's log are one write ---------------------

HOLD = RolloutConfig(
    max_fp_increase=0.25, min_endpoint_days=30, min_org_endpoint_days=10,
    hold=dt.timedelta(hours=1),
)  # fmt: skip


def _twin(store: AggregateStore) -> AggregateStore:
    """A second store object on the same database: another replica's own connection."""
    url = getattr(store, "url", None)
    if url is None:
        return open_store(getattr(store, "path"), synchronous="NORMAL")  # noqa: B009
    from backend.store.postgres import PostgresStore

    return PostgresStore(url, schema=getattr(store, "schema"))  # noqa: B009


def _healthy_canary(store: AggregateStore) -> list[int]:
    """A started rollout (stage 0) whose canary is clearly no worse: the gate will advance."""
    published: list[int] = []

    def publish(raw: bytes, now: dt.datetime) -> None:
        published.append(len(raw))

    store.create_org("o0", T0)
    assign_model(store, publish, 1, org_id=None, now=T0)
    start_rollout(store, publish, 2, now=T0, config=HOLD, salt="race")
    org = store.org_ids()[0]
    day = int(T0.timestamp()) // 86_400
    rows = [EndpointDayRow(day, f"c-{i}", 1, org, 10, 2) for i in range(200)]
    rows += [EndpointDayRow(day, f"n-{i}", 2, org, 10, 0) for i in range(100)]
    record_endpoint_days(store, rows)
    return published


def _logged_equals_policy(store: AggregateStore) -> tuple[float, float | None]:
    """(the logged stage's percent, the percent the current signed policy carries)."""
    r = get_rollout(store)
    assert r is not None
    cur = store.policy_history()[-1]  # read back: the other replica's store object may have won
    block = cur.document.default.rollout
    return r.percent, (None if block is None else block.percent)


def _advances(store: AggregateStore) -> tuple[int, int]:
    """(advances in the decision log, advances written to policy)."""
    logged = sum(x["action"] == "advance" for x in decision_log(store))
    written = sum("rollout advance" in rec.action for rec in store.policy_history())
    return logged, written


class _Interleaved:
    """A replica's store whose writes wait on `gate` first, and report them through `done`."""

    def __init__(
        self, store: AggregateStore, *, before_log: threading.Event | None,
        after_policy: threading.Event | None = None,
        after_log: threading.Event | None = None,
    ) -> None:  # fmt: skip
        self._store = store
        self.before_log, self.after_policy, self.after_log = before_log, after_policy, after_log

    def append_policy(self, *args: Any, **kwargs: Any) -> Any:
        out = self._store.append_policy(*args, **kwargs)
        if self.after_policy is not None:
            self.after_policy.set()
        return out

    def log_rollout_decision(self, *args: Any, **kwargs: Any) -> Any:
        if self.after_policy is not None and kwargs.get("policy") is not None:
            self.after_policy.set()  # the decision's policy is written here, with its log
        if self.before_log is not None:
            assert self.before_log.wait(timeout=20), "the other replica never got there"
        try:
            return self._store.log_rollout_decision(*args, **kwargs)
        finally:
            if self.after_log is not None:
                self.after_log.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_decision_logged_between_another_replicas_policy_write_and_its_log_leaves_policy_at_the_logged_stage(  # noqa: E501
    store: AggregateStore,
) -> None:
    """Replica A advances (policy, then log); replica B's wait is logged in between.

    The old order (append the advance to policy, then log) left the signed policy one stage
    ahead of the logged state: B's log won the compare-and-set, A's log was refused, A's
    advance stayed in policy. Now A's policy is written in its log's transaction: refused
    together.
    """
    published = _healthy_canary(store)
    twin = _twin(store)
    try:
        a_wrote, b_logged = threading.Event(), threading.Event()
        a = _Interleaved(store, before_log=b_logged, after_policy=a_wrote)
        b = _Interleaved(twin, before_log=a_wrote, after_log=b_logged)
        read = threading.Barrier(2)
        outcomes: list[object] = []

        def tick(replica: Any, now: dt.datetime) -> None:
            try:
                outcomes.append(tick_rollout(_Replica(replica, read), _pub(published), now=now))
            except Exception as exc:  # the outcome under test
                outcomes.append(exc)

        threads = [
            threading.Thread(target=tick, args=(a, T0 + H2)),  # past the hold: advance
            threading.Thread(target=tick, args=(b, T0 + dt.timedelta(minutes=30))),  # wait
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        actions = sorted(
            o.action.value if isinstance(o, RolloutDecision) else type(o).__name__ for o in outcomes
        )
        assert actions == ["ConflictError", "wait"], outcomes
        assert [x["action"] for x in decision_log(store)] == ["start", "wait"]
        assert _advances(store) == (0, 0), "an advance reached policy that no log records"
        logged, signed = _logged_equals_policy(store)
        assert logged == signed == HOLD.stages[0]
    finally:
        twin.close()


def _pub(sink: list[int]) -> Any:
    return lambda raw, now: sink.append(len(raw))


def test_two_replicas_advancing_at_once_advance_once_and_policy_matches_the_log(
    store: AggregateStore,
) -> None:
    published = _healthy_canary(store)
    twin = _twin(store)
    try:
        write = threading.Barrier(2)

        class _AtWrite(_Interleaved):  # both replicas reach their first write together
            def append_policy(self, *args: Any, **kwargs: Any) -> Any:
                write.wait(timeout=20)
                return self._store.append_policy(*args, **kwargs)

            def log_rollout_decision(self, *args: Any, **kwargs: Any) -> Any:
                if kwargs.get("policy") is not None:
                    write.wait(timeout=20)
                return self._store.log_rollout_decision(*args, **kwargs)

        outcomes = _race_on(
            [_AtWrite(store, before_log=None), _AtWrite(twin, before_log=None)],
            lambda replica: tick_rollout(replica, _pub(published), now=T0 + H2),
        )
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert len(errors) == 1 and isinstance(errors[0], ConflictError), outcomes
        assert _advances(store) == (1, 1)
        logged, signed = _logged_equals_policy(store)
        assert logged == signed == HOLD.stages[1]
        (advance,) = [x for x in decision_log(store) if x["action"] == "advance"]
        assert advance["policy_version"] == store.policy_history()[-1].version
    finally:
        twin.close()


def _race_on(replicas: list[Any], act: Callable[[Any], object]) -> list[object]:
    """`act` on each replica in its own thread at once; each outcome a result or the error."""
    outcomes: list[object] = []

    def run(replica: Any) -> None:
        try:
            outcomes.append(act(replica))
        except Exception as exc:  # the outcome under test
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == len(replicas), outcomes
    return outcomes
