"""Push delivery in the simulator: the kill switch reaches online endpoints within a minute.

With push on (the default, as the real agent runs it), an endpoint that holds a notice channel
and is online at the switch adopts the new policy within its notice latency (seconds), in both
the exact and the cohort mode; the wake-ups are deterministic given the world (who holds a
channel, who is online, the latency draws), so both modes count the same number. With push
off, endpoints adopt at their next check-in (every 10-15 minutes), so the one-minute bound
fails: the check can fail.
"""

from __future__ import annotations

import copy

import pytest

from fleet_sim.result.outcomes import ArmRun, reach
from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict

WITHIN_S = 60.0
AT_LEAST = 0.99

WORLD = {
    "name": "push",
    "seed": 11,
    "days": 1,
    "world": {"orgs": 5, "endpoints": 300, "scans_per_hour": 0.2},
    "models": {"initial": 1, "bundles": [{"version": 1, "bundle": "v1"}]},
    "timeline": [
        {"at": "10h", "do": "kill_switch", "org": "org-0001"},
        {"at": "14h7m", "do": "kill_switch"},
        # two minutes later, in the same 15-minute cohort step: a second notice to everyone
        {"at": "14h9m", "do": "kill_switch", "org": "org-0002", "mode": "detect_only"},
    ],
}


def _run(push: bool, mode: str, corpus, bundles, tmp) -> ArmRun:
    raw = copy.deepcopy(WORLD)
    raw["world"]["push"] = push
    run = run_scenario(
        scenario_from_dict(raw), corpus=corpus, bundles=bundles, out=tmp / mode, mode=mode
    )
    (arm,) = run.arms.values()
    return arm


@pytest.fixture(scope="module")
def arms(small_corpus, sim_bundles, tmp_path_factory) -> dict[tuple[bool, str], ArmRun]:
    tmp = tmp_path_factory.mktemp("push")
    return {
        (push, mode): _run(push, mode, small_corpus, sim_bundles, tmp / str(push))
        for push in (True, False)
        for mode in ("exact", "cohort")
    }


@pytest.mark.parametrize("mode", ["exact", "cohort"])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_push_brings_the_kill_switch_within_a_minute(arms, mode: str, index: int) -> None:
    arm = arms[(True, mode)]
    assert reach(arm.recorder, arm.world, index, WITHIN_S) >= AT_LEAST


@pytest.mark.parametrize("mode", ["exact", "cohort"])
def test_without_push_the_minute_bound_fails(arms, mode: str) -> None:
    arm = arms[(False, mode)]
    assert arm.recorder.counters.get("push_wakeups", 0) == 0
    for index in (0, 1, 2):
        assert reach(arm.recorder, arm.world, index, WITHIN_S) < 0.5
        # ...and the periodic check-ins still get there within the old 15-minute bound
        assert reach(arm.recorder, arm.world, index, 900.0) >= AT_LEAST


def test_both_modes_wake_the_same_endpoints(arms) -> None:
    ex, co = arms[(True, "exact")], arms[(True, "cohort")]
    n = ex.recorder.counters["push_wakeups"]
    assert n > 0
    assert co.recorder.counters["push_wakeups"] == n
    for index in (0, 1, 2):
        v = ex.recorder.kill_switches[index]
        assert co.recorder.kill_switches[index] == v
        t, seen_ex = ex.recorder.tracked[v]
        _, seen_co = co.recorder.tracked[v]
        fast_ex, fast_co = seen_ex - t <= WITHIN_S, seen_co - t <= WITHIN_S
        assert fast_ex.sum() > 0
        assert (fast_ex == fast_co).all()  # the same endpoints, through the same latencies
