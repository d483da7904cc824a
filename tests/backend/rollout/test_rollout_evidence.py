"""The gate's evidence: the `arm_days` rollup the controller reads instead of per-endpoint rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.rollout.core import ArmCounts, Rollout, RolloutConfig
from backend.rollout.service import (
    ArmDayColumns,
    EndpointDayRow,
    _arms,
    gather_evidence,
    get_rollout,
    record_arm_day_columns,
    record_endpoint_days,
)
from backend.store import Store

DAY = 20_759  # 2026-11-02
T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
_COUNTS = "events, alerts, self_test_failures, model_errors, breaker_trips"


def _rollup(store: Store) -> list[tuple[object, ...]]:
    return store._conn.execute(
        f"SELECT day, model_version, org_id, endpoint_days, {_COUNTS} FROM arm_days "
        "ORDER BY day, model_version, org_id"
    ).fetchall()


def _ledger_grouped(store: Store) -> list[tuple[object, ...]]:
    """What the controller used to compute: the GROUP BY of the per-endpoint rows."""
    return store._conn.execute(
        "SELECT day, model_version, org_id, count(*), sum(events), sum(alerts), "
        "sum(self_test_failures), sum(model_errors), sum(breaker_trips) FROM endpoint_days "
        "GROUP BY day, model_version, org_id ORDER BY day, model_version, org_id"
    ).fetchall()


_count = st.integers(0, 5)
_row = st.builds(
    EndpointDayRow,
    day=st.integers(DAY, DAY + 2),
    endpoint_id=st.sampled_from(["ep_a", "ep_b", "ep_c", "ep_d"]),
    model_version=st.integers(1, 2),
    org_id=st.sampled_from(["org_x", "org_y"]),  # a repeated key may name another org
    events=_count,
    alerts=_count,
    self_test_failures=_count,
    model_errors=_count,
    breaker_trips=_count,
)


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(st.lists(_row, max_size=12), max_size=6))
def test_rollup_equals_the_grouped_endpoint_days_after_any_writes(
    calls: list[list[EndpointDayRow]],
) -> None:
    store = Store(":memory:")
    for rows in calls:
        assert record_endpoint_days(store, rows) == len(rows)
    if calls:
        assert _rollup(store) == _ledger_grouped(store)


def test_a_key_repeated_in_one_call_is_one_endpoint_day_of_the_first_org(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    record_endpoint_days(
        store,
        [
            EndpointDayRow(DAY, "ep_a", 2, "org_x", events=3, alerts=1),
            EndpointDayRow(DAY, "ep_a", 2, "org_y", events=2, breaker_trips=1),
        ],
    )
    record_endpoint_days(store, [EndpointDayRow(DAY, "ep_a", 2, "org_x", alerts=4)])
    assert _rollup(store) == [(DAY, 2, "org_x", 1, 5, 5, 0, 0, 1)]
    assert _arms(store, 2, DAY, DAY, None) == {"org_x": ArmCounts(1, 1.0, 5, 0, 0, 1)}


def _arm_columns(rows: list[tuple[int, str, int, int, int, int, int, int, int]]) -> ArmDayColumns:
    return ArmDayColumns(*(list(c) for c in zip(*rows, strict=True)))


def test_arm_day_columns_sum_per_org_over_the_window(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    first = [
        # day, org, model, endpoint-days, events, alerts, self-test, model errors, trips
        (DAY, "org_x", 2, 10, 100, 5, 1, 0, 0),
        (DAY, "org_x", 2, 2, 20, 1, 0, 0, 0),  # the same key again: summed
        (DAY + 1, "org_x", 2, 11, 110, 6, 0, 1, 0),
        (DAY, "org_y", 2, 4, 40, 9, 0, 0, 2),
        (DAY, "org_x", 1, 500, 5_000, 200, 0, 0, 0),  # the control arm
        (DAY + 2, "org_x", 2, 99, 990, 99, 9, 9, 9),  # after the window
    ]
    assert record_arm_day_columns(store, _arm_columns(first)) == len(first)
    assert record_arm_day_columns(store, _arm_columns([(DAY + 1, "org_y", 2, 3, 30, 2, 0, 0, 1)]))
    canary = _arms(store, 2, DAY, DAY + 1, None)
    assert canary == {
        # endpoints: the busiest day of the window (12 on DAY, 11 on DAY + 1)
        "org_x": ArmCounts(12, 23.0, 12, 1, 1, 0),
        "org_y": ArmCounts(4, 7.0, 11, 0, 0, 3),
    }
    assert _arms(store, 2, DAY, DAY + 1, "org_y") == {"org_y": canary["org_y"]}
    assert _arms(store, 1, DAY, DAY + 1, None) == {"org_x": ArmCounts(500, 500.0, 200)}
    rollout = Rollout(1, 2, 1, None, "s", RolloutConfig(), T0, stage_started_at=T0)
    ev = gather_evidence(store, rollout, T0, T0 + dt.timedelta(hours=47), 1)
    assert ev.canary == ArmCounts(16, 30.0, 23, 1, 1, 3)
    assert ev.control == ArmCounts(500, 500.0, 200)
    assert [(o.org_id, o.canary, o.control) for o in ev.by_org] == [
        ("org_x", canary["org_x"], ArmCounts(500, 500.0, 200)),
        ("org_y", canary["org_y"], ArmCounts()),
    ]


def test_arm_day_columns_of_unequal_lengths_are_refused_and_write_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    cols = ArmDayColumns([DAY, DAY], ["org_x"], [2, 2], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0], [0])
    with pytest.raises(ValueError):
        record_arm_day_columns(store, cols)
    assert get_rollout(store) is None  # the schema exists
    assert _rollup(store) == []


def test_a_database_from_before_the_rollup_is_backfilled_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path)
    rows = [
        EndpointDayRow(DAY + d, f"ep_{i}", v, f"org_{i % 3}", i, i % 4, i % 2, d, v)
        for d in range(3)
        for i in range(40)
        for v in (1, 2)
        if (i + d + v) % 5
    ]
    record_endpoint_days(store, rows)
    before = {(v, lo, hi): _arms(store, v, lo, hi, None) for v in (1, 2) for lo, hi in
              [(DAY, DAY), (DAY, DAY + 2), (DAY + 1, DAY + 2)]}  # fmt: skip
    store._conn.execute("DROP TABLE arm_days")  # what a database from before the rollup lacks
    store.close()

    reopened = Store(path)
    get_rollout(reopened)  # any use of the rollout tables creates and fills the rollup
    assert _rollup(reopened) == _ledger_grouped(reopened)
    assert {k: _arms(reopened, *k, None) for k in before} == before
    reopened.close()

    again = Store(path)
    get_rollout(again)  # the rollup exists now: not filled a second time
    assert {k: _arms(again, *k, None) for k in before} == before
