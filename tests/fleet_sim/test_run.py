"""`run_scenario`: how many shards a run gets when none is asked for."""

from __future__ import annotations

import pytest

import fleet_sim.shard as shard
from fleet_sim.run import SHARDS_MIN_ENDPOINTS, default_workers, run_scenario
from fleet_sim.scenario import scenario_from_dict


def test_default_workers_is_one_shard_below_the_threshold_and_the_cores_from_it() -> None:
    assert default_workers(SHARDS_MIN_ENDPOINTS - 1, cores=8) == 1
    assert default_workers(1_000, cores=8) == 1
    assert default_workers(SHARDS_MIN_ENDPOINTS, cores=8) == 8
    assert default_workers(10 * SHARDS_MIN_ENDPOINTS, cores=2) == 2
    assert default_workers(SHARDS_MIN_ENDPOINTS, cores=0) == 1


@pytest.mark.parametrize(("asked", "used"), [(None, 1), (1, 1), (3, 3)])
def test_run_scenario_passes_asked_workers_and_picks_by_size_when_none(
    small_corpus, sim_bundles, tmp_path, monkeypatch, asked, used
) -> None:
    seen: list[int] = []
    real = shard.run_cohort

    def spy(*args, **kwargs):
        seen.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(shard, "run_cohort", spy)
    sc = scenario_from_dict(
        {
            "name": "workers",
            "seed": 2,
            "days": 0.25,
            "world": {"orgs": 20, "endpoints": 300},
            "models": {"initial": 1, "bundles": [{"version": 1, "bundle": "v1"}]},
        }
    )
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=asked)
    assert seen == [used]
    assert run.events > 0


@pytest.mark.parametrize("predict", [False, True])
def test_rollout_start_folds_delivered_events_only_for_the_prediction(
    small_corpus, sim_bundles, tmp_path, monkeypatch, predict
) -> None:
    takes: list[int] = []
    real = shard.Shard.take

    def spy(self, s):
        takes.append(1)
        return real(self, s)

    monkeypatch.setattr(shard.Shard, "take", spy)
    sc = scenario_from_dict(
        {
            "name": "flush",
            "seed": 2,
            "days": 0.5,
            "world": {"orgs": 20, "endpoints": 300, "scans_per_hour": 4.0},
            "models": {
                "initial": 1,
                "bundles": [{"version": 1, "bundle": "v1"}, {"version": 2, "bundle": "v2"}],
            },
            "timeline": [
                {"at": "6h", "do": "start_rollout", "version": 2, "stages": [10, 100],
                 "stage_hours": 3, "predict": predict},
            ],
        }
    )  # fmt: skip
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=1)
    assert run.arms["main"].recorder.rollouts  # the rollout started
    assert len(takes) == (1 if predict else 0)
