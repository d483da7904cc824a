"""`fleetward demo` at a small size: the prediction agrees with the simulation, and the
with-allowlist prediction is computed from the allowlist in force, not assumed to be zero."""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from pathlib import Path

import pytest
from scipy.stats import binom

from fleetward._figures import COVERAGE_ALPHA
from fleetward.demo import MEASURE_FROM_DAY, SCENARIO, SWITCH_DAY, predict_at, run_demo

ENDPOINTS = 1500
# Predicted vs simulated new FP alerts, fleet-wide, held together by a stated test instead of a
# relative tolerance: the exact conditional test of two Poisson counts, two-sided, alpha 0.001.
ALPHA = 0.001


def _same_rate_p_value(x: int, t_days: float, y: int, f_days: float) -> float:
    """Two-sided p-value of "x events over t_days and y over f_days share one Poisson rate".

    Conditional on x + y, y ~ Binomial(x + y, f / (t + f)) under that hypothesis.
    """
    from scipy.stats import binomtest

    return float(binomtest(y, x + y, f_days / (t_days + f_days)).pvalue)


@pytest.mark.slow
def test_demo_prediction_agrees_and_the_allowlist_prediction_is_computed(
    small_corpus, bundles, tmp_path: Path
):
    root = tmp_path / "data"
    (root / "bundles").mkdir(parents=True)
    os.symlink(small_corpus.root, root / "corpus")
    for v, path in bundles.items():
        os.symlink(path, root / "bundles" / f"v{v}")
    report = run_demo(root, endpoints=ENDPOINTS)
    data = json.loads(report.json.read_text())
    assert report.simulated_new_fp_alerts >= 5, "v2 must still bring a surge to predict"
    # The prediction rests on x new-FP encounters over the T days observed before the switch
    # (rescored with v2); the simulation measured y new FP alerts over the F days from
    # MEASURE_FROM_DAY. Test (scipy binomtest, alpha 0.001): one rate behind both counts.
    store = root / "demo-run" / "no-mitigation" / "backend.sqlite"
    bundle_dirs = root / "bundles" / "v1", root / "bundles" / "v2"
    switch = dt.datetime.fromisoformat(data["switch_at"])
    # the figure judged: the prediction as of the switch, its flips judged by the labels
    # corrected later (the zero-day, labelled on day 10, is v2's new detection, not an FP)
    _, at_switch = predict_at(store, *bundle_dirs, switch, corrected_labels=True)
    assert at_switch.fleet_predicted_new_fp_alerts_per_day == pytest.approx(
        report.predicted_new_fp_alerts
    )
    # what the report told at the switch, with the labels known then, counted the zero-day's
    # flips among the possible FPs: the fault landed (v2 caught the zero-day before the
    # switch), and the demo reports that figure beside the judged one
    _, told = predict_at(store, *bundle_dirs, switch)
    assert told.fleet_predicted_new_fp_alerts_per_day == pytest.approx(report.predicted_at_switch)
    assert report.predicted_at_switch > report.predicted_new_fp_alerts
    assert data["predicted_alerts_on_unknown_malware"] == pytest.approx(
        report.predicted_at_switch - report.predicted_new_fp_alerts
    )
    observed = [o for o in at_switch.per_org.values() if o.observation_days > 0]
    (t_days,) = {o.observation_days for o in observed}  # one window for the whole fleet
    x = sum(o.new_fp_encounters for o in observed)
    f_days = tomllib.loads(SCENARIO)["days"] - MEASURE_FROM_DAY
    y = round(report.simulated_new_fp_alerts * f_days)
    assert y == pytest.approx(report.simulated_new_fp_alerts * f_days)  # a count per F days
    assert x / t_days == pytest.approx(report.predicted_new_fp_alerts)
    p_value = _same_rate_p_value(x, t_days, y, f_days)
    assert p_value >= ALPHA, (x, t_days, y, f_days, p_value)
    fleet = data["fleet_test"]  # the demo's own statement of the same test
    assert (fleet["encounters_before_switch"], fleet["alerts_simulated"]) == (x, y)
    assert fleet["p_value"] == pytest.approx(p_value)
    lo, hi = fleet["ratio_95"]
    assert lo <= fleet["ratio"] <= hi and report.fleet_ratio_95 == pytest.approx((lo, hi))
    # and the test has teeth at these counts (about 5,500 and 3,100): a simulation a tenth
    # above or below the prediction fails it (the 3 % goal needs the full-size demo)
    assert max(_same_rate_p_value(x, t_days, round(y * k), f_days) for k in (0.9, 1.1)) < ALPHA
    assert data["transition_allowlist_entries"] > 0
    in_force = data["transition_allowlist_in_force"]  # each entry by its evidence's scope
    assert in_force["fleet"] + in_force["org"] > 0
    assert report.predicted_with_allowlist <= 0.1 * report.predicted_new_fp_alerts
    assert report.simulated_with_allowlist <= 0.1 * report.simulated_new_fp_alerts
    # issue 18: removal beside recall cost (a zero-day the label feed does not know runs
    # across the switch), and the per-org 95 % intervals are reported with their coverage
    assert report.simulated_removal is not None and report.simulated_removal >= 0.95
    assert report.simulated_recall_cost_points is not None
    assert report.simulated_recall_cost_points <= 1.0
    assert report.predicted_removal is not None and report.predicted_recall_cost_points == 0.0
    assert report.orgs_inside_interval_share is not None and report.orgs_with_alerts > 0
    # the intervals hold by a stated test: one-sided binomial on the count outside, alpha 0.01
    outside = round(report.orgs_with_alerts * (1 - report.orgs_inside_interval_share))
    assert report.coverage_p_value == pytest.approx(
        float(binom.sf(outside - 1, report.orgs_with_alerts, 0.05))
    )
    assert report.coverage_p_value >= COVERAGE_ALPHA, (outside, report.orgs_with_alerts)
    assert data["coverage_p_value"] == report.coverage_p_value
    assert all(lo <= hi for lo, hi in (o["predicted_interval"] for o in data["per_org"]))
    assert data["predicted_new_fp_alerts_with_allowlist"] == pytest.approx(
        sum(o["predicted_new_fp_alerts_with_allowlist"] for o in data["per_org"])
    )
    # The same computation on the mitigated arm's store, a day before its allowlist was
    # published, sees no allowlist in force and predicts the surge: the figure above comes
    # from the allowlist, it is not a constant.
    store = root / "demo-run" / "transition-allowlist" / "backend.sqlite"
    assert data["switch_day"] == SWITCH_DAY
    _, before = predict_at(store, *bundle_dirs, switch - dt.timedelta(days=1))
    assert before.fleet_predicted_new_fp_alerts_per_day > 2 * report.predicted_with_allowlist
    assert before.fleet_predicted_new_fp_alerts_per_day >= 0.5 * report.predicted_new_fp_alerts
