"""Scenario `ringed-bad-release`: a block-storm release stops in the canary ring, in both modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_sim.result.outcomes import ring_exposure
from fleet_sim.run import run_scenario
from fleet_sim.scenario import load_scenario, scenario_from_dict
from model_store.corpus import Corpus

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "ringed-bad-release.toml"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cohort", "exact"])
def test_bad_release_halts_in_preview_and_never_leaves_the_canary_ring(
    mode: str, small_corpus: Corpus, sim_bundles: dict[str, Path], tmp_path: Path
) -> None:
    sc = load_scenario(SCENARIO)
    if mode == "exact":  # the per-endpoint reference is slower: a smaller, shorter world
        w = sc.world.model_copy(update={"endpoints": 300, "scans_per_hour": 3.0})
        sc = sc.model_copy(update={"world": w, "days": 2.5})
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, mode=mode)
    assert run.passed, [(o.name, o.value, o.bound) for o in run.failed]
    arm = run.arms["main"]
    rec, world = arm.recorder, arm.world
    # the fault landed: preview endpoints installed v2 and their alert rate soared
    assert ring_exposure(rec, world, 2, ("preview",)) > 0
    (rollout,) = rec.rollouts
    halt = next(d for _t, d, _v in rollout.decisions if d.action.value == "halt")
    c, k = halt.canary, halt.control
    assert c.alerts / c.endpoint_days > 3 * k.alerts / k.endpoint_days
    assert halt.ring == "preview" and halt.halted_orgs
    preview = {world.org_names[o] for o, r in rec.org_rings.items() if r == "preview"}
    assert {rollout.org_names[o] for o in halt.halted_orgs} <= preview


def test_set_ring_names_unknown_rings_and_empty_org_lists_at_load() -> None:
    base: dict[str, object] = {
        "name": "x",
        "timeline": [{"at": "0d", "do": "set_ring", "orgs": [], "ring": "broad"}],
    }
    with pytest.raises(ValueError, match="timeline"):
        scenario_from_dict(base)
    base["timeline"] = [{"at": "0d", "do": "set_ring", "orgs": ["org-0001"], "ring": "beta"}]
    with pytest.raises(ValueError, match="timeline"):
        scenario_from_dict(base)
