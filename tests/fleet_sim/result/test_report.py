"""The run report is the same text for one seed, whatever pseudonyms the backend drew.

The store draws each org's pseudonym at random (`secrets`), so an order by pseudonym is a new
order on every run. Here the draws are replaced by counters running up (pseudonyms in the
world's order) and down (the reverse), the two extremes of that randomness.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

import backend.store.sqlite as sqlite_store
from backend.rollout.core import Metric, RateTest, RolloutAction, RolloutDecision
from fleet_sim.result.report import _rollout_dict, report_dict
from fleet_sim.rollout.controller import RolloutRecord
from fleet_sim.run import SimRun, run_scenario
from fleet_sim.scenario import scenario_from_dict
from fleet_sim.world import World
from tests.fleet_sim.test_run import _half_day_rollout
from tests.pseudonyms import CountingIds


@pytest.fixture(scope="module")
def runs(small_corpus, sim_bundles, tmp_path_factory) -> Iterator[dict[int, SimRun]]:
    """The half-day rollout (prediction at its start) run with pseudonyms drawn up and down."""
    sc = _half_day_rollout("pseudonyms", predict=True)
    # and each org's raw transition flips allowlisted in that org (the timeline names the scopes)
    flips = {"at": "9h", "do": "allowlist_add", "source": "transition", "evidence": False}
    sc = scenario_from_dict({**sc.model_dump(mode="json"), "timeline": [
        *sc.model_dump(mode="json")["timeline"], flips]})  # fmt: skip
    got = {}
    for step in (1, -1):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sqlite_store, "secrets", CountingIds(step))
            out = tmp_path_factory.mktemp(f"ids{step}")
            got[step] = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=out,
                                     workers=1)  # fmt: skip
    yield got


def _ids_in_world_order(run: SimRun) -> list[str]:
    names = run.arms["main"].recorder.rollouts[0].org_names
    by_name = {name: o for o, name in names.items()}
    return [by_name[name] for name in run.arms["main"].world.org_names]


def test_report_json_is_identical_when_the_pseudonyms_come_in_reverse_order(runs):
    up, down = _ids_in_world_order(runs[1]), _ids_in_world_order(runs[-1])
    assert up == sorted(up) and down == sorted(down, reverse=True)  # the draws were replaced
    texts = []
    for run in runs.values():
        data = report_dict(run)
        data.pop("wall_s")
        data.pop("bundles")  # each run's own copy of the bundles
        texts.append(json.dumps(data, indent=1))
    prediction = json.loads(texts[0])["arms"]["main"]["rollouts"][0]["prediction"]
    values = list(prediction.values())
    assert len(values) > len(set(values))  # orgs tied on their prediction: what is ordered
    assert texts[0] == texts[1]


def _test(org: str, canary: int, worse: bool) -> RateTest:
    return RateTest(Metric.ALERTS, org, canary, 10.0, 1, 10.0, canary / 1.0, 1e-9 if worse else 0.5,
                    1.0, 1e-3, worse, False)  # fmt: skip


def _halted_record(ids: list[str], world: World) -> RolloutRecord:
    """A halt naming two orgs, per-org tests and a prediction with ties, listed in id order
    (the gate's and the prediction's order), orgs addressed by `ids` (world order).

    The reason names one org: the gate's own text lists several in its (pseudonym) order.
    """
    names = dict(zip(ids, world.org_names, strict=True))
    halted = (ids[3], ids[1])
    tests = [_test(o, 5 + 3 * (o in halted), o in halted) for o in sorted(ids[:6])]
    decision = RolloutDecision(
        1, dt.datetime(2026, 11, 1, tzinfo=dt.UTC), RolloutAction.HALT, 0, 10.0,
        f"canary significantly worse: alerts in {ids[3]} (ratio 8.0)",
        tests=(_test(None, 40, True), *tests), halted_orgs=tuple(sorted(halted)),
    )  # fmt: skip
    prediction = {o: (2.5 if o in halted else 0.0) for o in sorted(ids)}
    return RolloutRecord(1, 2, 1, 0.0, "halted", 1, prediction=prediction, org_names=names,
                         decisions=[(3600.0, decision, 4)])  # fmt: skip


def test_rollout_rows_follow_the_world_order_and_name_orgs_by_name(runs):
    world = runs[1].arms["main"].world
    n = len(world.org_names)
    up = [f"org_{k:016x}" for k in range(n)]
    down = [f"org_{n - k:016x}" for k in range(n)]  # the same orgs, pseudonyms sorted reversed
    got: list[dict[str, Any]] = [_rollout_dict(_halted_record(i, world), world) for i in (up, down)]
    assert json.dumps(got[0]) == json.dumps(got[1])
    text = json.dumps(got[0])
    assert "org_0" not in text  # no pseudonym: every org by its world name
    halt = got[0]["decisions"][0]
    assert halt["halted_orgs"] == [world.org_names[1], world.org_names[3]]
    assert halt["reason"].endswith(f"alerts in {world.org_names[3]} (ratio 8.0)")
    rows = [r["org"] for r in halt["per_org"]]
    assert rows == [world.org_names[k] for k in (1, 3, 0, 2, 4, 5)]  # surge, then world order
    assert list(got[0]["prediction"])[:3] == [world.org_names[k] for k in (1, 3, 0)]
