"""The simulator's timeline names halted orgs in the world's order, whatever order the gate gives.

The gate lists orgs in the store's creation order (never by their random pseudonyms); the
timeline's halt event (`ControllerRollout.tick`) lists them in the world's order, the order of
the rollout record's names, so its text is the world's own even where the two orders differ.
Here the store creates the world's orgs in reverse, and the controller halts on two of them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from backend._clock import utc_now
from backend.admin import assign_model, repository_publisher
from backend.rollout.service import ArmDayColumns, record_arm_day_columns
from backend.store import Store
from fleet_sim._clock import SimClock
from fleet_sim.control import Recorder
from fleet_sim.rollout import ControllerRollout
from fleet_sim.scenario import StartRollout
from model_store.repository import init_repository

T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
WORLD = [f"w{i}" for i in range(6)]


def test_halt_event_lists_the_halted_orgs_in_world_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    created = {name: store.create_org(name, T0).org_id for name in reversed(WORLD)}
    assert store.org_ids() == [created[name] for name in reversed(WORLD)]
    repo = tmp_path / "repo"
    init_repository(repo, now=utc_now())  # TUF expiries are relative to real time
    publish = repository_publisher(repo)
    assign_model(store, publish, 1, org_id=None, now=T0)

    def version() -> int:
        cur = store.current_policy()
        assert cur is not None
        return cur.version

    action = StartRollout(do="start_rollout", at=0, version=2, predict=False,
                          min_endpoint_days=30, min_org_endpoint_days=10)  # fmt: skip
    hook = ControllerRollout.begin(
        action, 0.0, store=store, publish=publish, clock=SimClock(T0), org_id=None,
        org_names={created[name]: name for name in WORLD}, policy_version=version, salt="s",
    )  # fmt: skip
    day = hook.clock.epoch_day
    surge = {"w1": 60, "w4": 60}  # the others' canary as their control: 25 alerts / 20 days
    cells = [(created[n], 1, 200, 200) for n in WORLD]
    cells += [(created[n], 2, 20, surge.get(n, 25)) for n in WORLD]
    k = len(cells)
    record_arm_day_columns(
        store,
        ArmDayColumns(
            [day] * k, [c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells],
            [10 * c[2] for c in cells], [c[3] for c in cells], [0] * k, [0] * k, [0] * k,
        ),
    )  # fmt: skip
    recorder = Recorder(n_days=1, n_orgs=len(WORLD), n_endpoints=1)
    t = hook.next_tick_s
    hook.tick(t, recorder)
    assert hook.record.state == "halted"
    _, halt, _ = hook.record.decisions[-1]
    assert [hook.record.org_names[o] for o in halt.halted_orgs] == ["w4", "w1"]  # the gate's
    assert recorder.events == [(t, "rollout halt at 1 % (orgs w1, w4)")]
    store.close()
