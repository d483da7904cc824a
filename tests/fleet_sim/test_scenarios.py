"""Every shipped scenario passes its own checks (at reduced sizes in the suite)."""

from __future__ import annotations

import pytest

from fleet_sim.result.outcomes import counters
from fleet_sim.run import run_scenario
from fleet_sim.scenario import load_scenario

from .conftest import SCENARIOS

SIZES = {
    "kill-switch": 800,
    "bad-model": 300,
    "backend-outage": 600,
    "malware-campaign": 1000,
    "v1-to-v2-transition": 2500,
}


def test_every_scenario_file_is_listed():
    assert {p.stem for p in SCENARIOS.glob("*.toml")} >= set(SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_scenario_passes_its_checks(name, small_corpus, sim_bundles, tmp_path):
    sc = load_scenario(SCENARIOS / f"{name}.toml", endpoints=SIZES[name])
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path)
    assert run.passed, [(o.name, o.value, o.bound) for o in run.failed]
    for arm in run.arms.values():
        assert counters(arm.recorder)["events_lost"] == 0
