"""The exact and cohort modes hold the same statistics on the same small world.

Tolerances: counts are Poisson-like, so totals must agree within 4 standard deviations
(sqrt of the larger count) plus 2 % for the shared non-Poisson structure; adoption within 3
points; check-ins are deterministic given the world (same schedule, same online law) and must
agree exactly.
"""

from __future__ import annotations

import math

import numpy as np

from fleet_sim.outcomes import adoption_at, counters
from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict

WORLD = {
    "name": "parity",
    "seed": 21,
    "days": 3,
    "world": {"orgs": 6, "endpoints": 300, "scans_per_hour": 3.0, "inhouse_share": 0.1},
    "models": {
        "initial": 1,
        "bundles": [{"version": 1, "bundle": "v1"}, {"version": 2, "bundle": "v2"}],
    },
    "campaigns": [{"name": "c", "family": "loader_v2", "start": "1d", "per_endpoint_per_day": 2}],
    "timeline": [
        {"at": "1d6h", "do": "publish_model", "version": 2},
        {"at": "2d3h", "do": "kill_switch", "org": "org-0001"},
    ],
}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 4 * math.sqrt(max(a, b, 1.0)) + 0.02 * max(a, b)


def test_exact_and_cohort_agree_on_alerts_adoption_and_events(small_corpus, sim_bundles, tmp_path):
    sc = scenario_from_dict(WORLD)
    ex = run_scenario(
        sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "e", mode="exact"
    )
    co = run_scenario(
        sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "c", mode="cohort"
    )
    re, rc = ex.arms["main"].recorder, co.arms["main"].recorder
    ce, cc = counters(re), counters(rc)
    assert ce["checkins"] == cc["checkins"]
    for key in ("events_generated", "events_delivered"):
        assert _close(ce[key], cc[key]), (key, ce[key], cc[key])
    assert ce["events_lost"] == cc["events_lost"] == 0
    # alerts per org per day, summed over days, per org
    for table in ("alerts", "fp_alerts", "mal_alerts", "new_fp", "enc"):
        a, b = getattr(re, table).sum(axis=0), getattr(rc, table).sum(axis=0)
        for o in range(a.size):
            assert _close(float(a[o]), float(b[o])), (table, o, a[o], b[o])
    for day in (1.0, 1.5, 2.0, 3.0):
        assert abs(adoption_at(re, 2, day * 86400) - adoption_at(rc, 2, day * 86400)) <= 0.03
    # the kill switch zeroes org-0001's alerts in both
    assert re.alerts[2:, 1].sum() <= re.alerts[2, 1] and rc.alerts[2:, 1].sum() <= rc.alerts[2, 1]
    assert np.all(re.new_fp[:1] == 0) and np.all(rc.new_fp[:1] == 0)
