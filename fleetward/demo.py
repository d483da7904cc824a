"""`fleetward demo`: the README's first command's main job.

On embedded defaults, with nothing to configure, it builds (or reuses) the corpus and the v1/v2
bundles, runs the `v1-to-v2-transition` scenario in the fleet simulator (a week on v1 feeding
the backend's aggregates, then v2 fleet-wide; with and without the transition allowlist), runs
the backend's transition prediction on what the simulated fleet reported before the switch,
and writes one report comparing predicted and simulated new false-positive alerts per org and
fleet-wide, with and without the mitigation (`demo.html`, `demo.json`).

Definitions: "simulated new-FP alerts per day" is the mean, over the days after v2 reached the
fleet, of alerts on truly benign samples that v1 would not have alerted on under the same
policy; "predicted" is `predict_transition`'s per-org figure from the aggregates before the
switch (no future data: the prediction reads the store as of the switch time), its flips judged
by the labels as corrected later. At the switch a zero-day no feed knew yet is running, and v2
catches it: the report made then counts those new detections among the possible false
positives (it cannot tell them apart), so a week later, once a feed has labelled the zero-day
(the scenario's `label_campaign`), the same prediction with the corrected labels
(`corrected_labels`: the aggregates, vectors and policy still as of the switch) is the one to
hold against the simulated false positives; the figure told at the switch is reported beside it.
The fleet totals are compared by an exact test of one Poisson rate behind the counts each rests
on (`fleetward._figures.rate_ratio_test`): at a few hundred alerts a day a gap of several percent
is the counts' own noise, and the test says when it is more. "Predicted
with the allowlist" is `predict_transition` run the same way on the mitigated arm's store, whose
policy at the switch holds the transition allowlist that arm published: allowlisted samples are
decided `allowlisted` under both versions, so what remains is computed from the allowlist
actually in force, not assumed to be zero.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from backend.analysis import TransitionReport, predict_transition, write_transition_report
from backend.report import figure, figure_png, html_page, image_tag
from backend.store import Store
from fleet_sim.result.outcomes import org_day_rate
from fleet_sim.result.report import write_report
from fleet_sim.run import SimRun, ensure_assets, run_scenario
from fleet_sim.scenario import LabelCampaign, ScenarioError, scenario_from_dict
from fleetward._figures import (
    COVERAGE_ALPHA,
    FLEET_ALPHA,
    coverage,
    coverage_p_value,
    interval_of,
    mitigation_figures,
    rate_ratio_test,
    recall,
)
from model_store.errors import ModelStoreError

__all__ = ["DemoReport", "demo", "predict_at", "run_demo"]

console = Console(soft_wrap=True)  # messages hold paths: never hard-wrapped (the terminal wraps)

# The embedded scenario (scenarios/v1-to-v2-transition.toml, sized for a minute on a laptop).
SCENARIO = """
name = "v1-to-v2-transition"
description = "v1 for a week, then v2 fleet-wide; with and without the transition allowlist."
seed = 7
days = 12

[world]
orgs = 40
endpoints = 8000
scans_per_hour = 1.0
# in-house software takes 15 % of the scans: the new FP alerts the prediction is held against
# then number a thousand or more a day, so the fleet total's own noise is about 2 % (at 5 % it
# was 5 % or more with some trainings' flips, and a 3 % comparison measured luck)
inhouse_share = 0.15
label_noise = 0.0

[models]
initial = 1
bundles = [{ version = 1, bundle = "v1" }, { version = 2, bundle = "v2" }]

# a zero-day no label feed knows (era-2 loader), starting half a day before the switch: v2
# catches it, so its samples are negative flips; the transition allowlist must not take them
[[campaigns]]
name = "zero-day"
family = "loader_v2"
start = "6d12h"
duration = "5d"
ramp = "6h"
per_endpoint_per_day = 0.1
target_share = 0.3
labelled = false

# on day 10 a feed learns of the zero-day (labelled malicious from its start): what was true at
# the switch, which the prediction made then could not know, but an evaluation of it can
[[timeline]]
at = "10d"
do = "label_campaign"
campaign = "zero-day"

[[arms]]
name = "no-mitigation"
timeline = [{ at = "7d", do = "publish_model", version = 2 }]

[[arms]]
name = "transition-allowlist"
timeline = [
  { at = "7d", do = "allowlist_add", source = "transition", old = 1, new = 2 },
  { at = "7d", do = "publish_model", version = 2 },
]

[[outcomes]]
name = "the transition allowlist removes at least 95% of the new FP alerts"
arm = "transition-allowlist"
check = "arm_ratio"
versus = "no-mitigation"
from_day = 8
at_most = 0.05

[[outcomes]]
name = "at a recall cost of at most 1 point (malicious encounters alerted on, zero-day included)"
arm = "transition-allowlist"
check = "detection"
versus = "no-mitigation"
from_day = 8
at_least = -0.01
"""
SWITCH_DAY = 7
MEASURE_FROM_DAY = 8


@dataclass(frozen=True, slots=True)
class DemoReport:
    """Fleet totals and the paths written."""

    predicted_new_fp_alerts: float
    simulated_new_fp_alerts: float
    simulated_with_allowlist: float
    predicted_with_allowlist: float
    relative_error: float
    html: Path
    json: Path
    predicted_removal: float | None = None
    simulated_removal: float | None = None
    predicted_recall_cost_points: float | None = None
    simulated_recall_cost_points: float | None = None
    orgs_inside_interval_share: float | None = None
    orgs_with_alerts: int = 0
    coverage_p_value: float | None = None
    fleet_p_value: float | None = None
    """Exact test of one rate behind the predicted and simulated totals (`rate_ratio_test`)."""
    fleet_ratio_95: tuple[float, float] | None = None
    predicted_at_switch: float = 0.0
    """What the report at the switch predicted: new alerts on samples not labelled malicious
    then (the figure above plus v2's new detections of malware no feed knew yet)."""


def predict_at(
    store_path: str | Path,
    old: Path,
    new: Path,
    now: dt.datetime,
    *,
    corrected_labels: bool = False,
) -> tuple[list[str], TransitionReport]:
    """The org ids of a store and `predict_transition` on it as of `now` (policy in force then).

    `corrected_labels`: the flips judged by the labels as corrected later (every label from its
    `labelled_at`) instead of those known at `now`; the aggregates, vectors and policy are still
    those of `now`.
    """
    store = Store(store_path)
    try:
        return store.org_ids(), predict_transition(
            store, old, new, now=now, corrected_labels=corrected_labels
        )
    finally:
        store.close()


def _allowlist_in_force(store_path: str | Path) -> dict[str, int]:
    """The transition entries an arm published, by scope: fleet-wide and org-only."""
    store = Store(store_path)
    try:
        record = store.current_policy()
    finally:
        store.close()
    if record is None:
        return {"fleet": 0, "org": 0}
    doc = record.document
    return {
        "fleet": sum(e.reason.startswith("transition") for e in doc.default.allowlist),
        "org": sum(
            e.reason.startswith("transition") for p in doc.orgs.values() for e in p.allowlist
        ),
    }


def _compare(sim: SimRun, root: Path) -> dict[str, Any]:
    arm = sim.arms["no-mitigation"]
    mitigated = sim.arms["transition-allowlist"]
    world = arm.world
    switch = sim.scenario.start + dt.timedelta(days=SWITCH_DAY)
    old, new = Path(sim.bundles[1]), Path(sim.bundles[2])
    # What the operator was told at the switch counts every flip not labelled malicious then,
    # the zero-day included (v2's new true detections, which no feed knew yet); the demo judges
    # the prediction's false positives against the labels learned later (the same aggregates,
    # vectors and policy as of the switch).
    org_ids, told = predict_at(sim.stores["no-mitigation"], old, new, switch)
    _, report = predict_at(sim.stores["no-mitigation"], old, new, switch, corrected_labels=True)
    mit_ids, with_allow = predict_at(
        sim.stores["transition-allowlist"], old, new, switch, corrected_labels=True
    )
    write_transition_report(told, root / "transition")
    sim_rate = org_day_rate(arm.recorder, arm.recorder.new_fp, MEASURE_FROM_DAY, None)
    mit_rate = org_day_rate(mitigated.recorder, mitigated.recorder.new_fp, MEASURE_FROM_DAY, None)
    future_days = arm.recorder.n_days - MEASURE_FROM_DAY
    after = slice(MEASURE_FROM_DAY, None)
    rec, mrec = arm.recorder, mitigated.recorder
    orgs = []
    for o, name in enumerate(world.org_names):
        pred = report.per_org.get(org_ids[o])
        pred_allow = with_allow.per_org.get(mit_ids[o])
        band = interval_of(pred, future_days)
        r0 = recall(rec.mal_alerts[after, o], rec.mal_enc[after, o])
        r1 = recall(mrec.mal_alerts[after, o], mrec.mal_enc[after, o])
        orgs.append(
            {
                "org": name,
                "org_id": org_ids[o],
                "endpoints": int(world.org_size[o]),
                "protector": bool(world.org_protector[o]),
                "predicted_new_fp_alerts": pred.predicted_new_fp_alerts_per_day if pred else 0.0,
                "predicted_new_fp_alerts_with_allowlist": (
                    pred_allow.predicted_new_fp_alerts_per_day if pred_allow else 0.0
                ),
                "simulated_new_fp_alerts": float(sim_rate[o]),
                "simulated_new_fp_alerts_with_allowlist": float(mit_rate[o]),
                "predicted_interval": [band.low, band.high],
                "simulated_inside_interval": band.contains(float(sim_rate[o])),
                "simulated_removal": (
                    1 - float(mit_rate[o]) / float(sim_rate[o]) if sim_rate[o] > 0 else None
                ),
                "simulated_recall_cost_points": (
                    None if r0 is None or r1 is None else 100.0 * (r0 - r1)
                ),
            }
        )
    share, counted = coverage(
        [(interval_of(report.per_org.get(org_ids[o]), future_days), float(sim_rate[o]))
         for o in range(world.n_orgs)]
    )  # fmt: skip
    fig = mitigation_figures(
        predicted=float(report.fleet_predicted_new_fp_alerts_per_day),
        predicted_with=float(with_allow.fleet_predicted_new_fp_alerts_per_day),
        simulated=float(sim_rate.sum()),
        simulated_with=float(mit_rate.sum()),
        predicted_recall=(report.recall_after, with_allow.recall_after),
        simulated_recall=(
            recall(rec.mal_alerts[after], rec.mal_enc[after]),
            recall(mrec.mal_alerts[after], mrec.mal_enc[after]),
        ),
    )
    predicted = float(report.fleet_predicted_new_fp_alerts_per_day)
    simulated = float(sim_rate.sum())
    x = sum(o.new_fp_encounters for o in report.per_org.values())
    t_days = x / predicted if predicted > 0 else 0.0  # the orgs' windows, weighted by rate
    y = int(rec.new_fp[after].sum())
    fleet = rate_ratio_test(x, t_days, y, future_days)
    return {
        "scenario": sim.scenario.name,
        "seed": sim.scenario.seed,
        "endpoints": world.n_endpoints,
        "orgs": world.n_orgs,
        "switch_day": SWITCH_DAY,
        "switch_at": switch.isoformat(),
        "measured_from_day": MEASURE_FROM_DAY,
        "unit": "new false-positive alerts per day",
        "predicted_new_fp_alerts": predicted,
        "simulated_new_fp_alerts": simulated,
        "predicted_basis": (
            "predict_transition as of the switch (aggregates, vectors, policy then), its flips"
            " judged by the labels as corrected later (the zero-day's, learned on day"
            f" {_learned_day(sim)}); the report at the switch counted flips not labelled"
            " malicious then"
        ),
        "predicted_new_alerts_at_switch": float(told.fleet_predicted_new_fp_alerts_per_day),
        "predicted_alerts_on_unknown_malware": float(
            told.fleet_predicted_new_fp_alerts_per_day
            - report.fleet_predicted_new_fp_alerts_per_day
        ),
        "relative_error": abs(predicted - simulated) / simulated if simulated else 0.0,
        "within_10_percent": abs(predicted - simulated) <= 0.1 * max(simulated, 1e-9),
        "within_3_percent": abs(predicted - simulated) <= 0.03 * max(simulated, 1e-9),
        "fleet_test": {
            "test": (
                "exact conditional test of one Poisson rate behind the prediction's encounters"
                " and the simulated alerts (two-sided), and the 95 % interval of predicted /"
                " simulated from the same binomial"
            ),
            "encounters_before_switch": x,
            "days_before_switch": t_days,
            "alerts_simulated": y,
            "days_simulated": future_days,
            "p_value": fleet.p_value if fleet else None,
            "ratio": fleet.ratio if fleet else None,
            "ratio_95": [fleet.ratio_low, fleet.ratio_high] if fleet else None,
        },
        "interval": "95 % negative-binomial prediction interval (backend.intervals)",
        "orgs_inside_interval_share": share,
        "orgs_with_alerts": counted,
        "coverage_p_value": coverage_p_value(share, counted),
        "coverage_test": (
            "one-sided binomial: P(at least this many orgs outside their 95 % intervals"
            f" | intervals exact); below {COVERAGE_ALPHA} the intervals are too narrow"
        ),
        "predicted_removal": fig.predicted_removal,
        "simulated_removal": fig.simulated_removal,
        "predicted_recall_cost_points": fig.predicted_recall_cost_points,
        "simulated_recall_cost_points": fig.simulated_recall_cost_points,
        "predicted_new_fp_alerts_with_allowlist": float(
            with_allow.fleet_predicted_new_fp_alerts_per_day
        ),
        "simulated_new_fp_alerts_with_allowlist": float(mit_rate.sum()),
        "transition_allowlist_entries": len(report.transition_allowlist),
        "transition_allowlist_in_force": _allowlist_in_force(sim.stores["transition-allowlist"]),
        "per_org": orgs,
        "outcomes": [o.to_dict() for o in sim.outcomes],
    }


def _learned_day(sim: SimRun) -> str:
    """When the label feed learned of the zero-day, in days (the scenario's action)."""
    acts = [a for a in sim.scenario.actions("no-mitigation") if isinstance(a, LabelCampaign)]
    return ", ".join(f"{a.at_s / 86_400:g}" for a in acts) or "-"


def _html(data: dict[str, Any]) -> str:
    import numpy as np

    rows = [
        r for r in data["per_org"] if r["predicted_new_fp_alerts"] or r["simulated_new_fp_alerts"]
    ]
    fig, ax = figure(10, 3.8)
    x = np.arange(len(rows))
    ax.bar(x - 0.27, [r["predicted_new_fp_alerts"] for r in rows], 0.27, label="predicted")
    ax.bar(x, [r["simulated_new_fp_alerts"] for r in rows], 0.27, label="simulated")
    ax.bar(
        x + 0.27,
        [r["simulated_new_fp_alerts_with_allowlist"] for r in rows],
        0.27,
        label="simulated, with transition allowlist",
    )
    ax.set_xticks(x, [r["org"] for r in rows], rotation=60, fontsize=7)
    ax.set_ylabel("new FP alerts / day")
    ax.legend(fontsize=8)
    img = figure_png(fig)
    table = "".join(
        f"<tr><td>{html.escape(r['org'])}</td><td>{r['endpoints']}</td>"
        f"<td>{'yes' if r['protector'] else ''}</td><td>{r['predicted_new_fp_alerts']:.1f}</td>"
        f"<td>{r['predicted_interval'][0]:.1f}-{r['predicted_interval'][1]:.1f}</td>"
        f"<td>{r['simulated_new_fp_alerts']:.1f}"
        f"{'' if r['simulated_inside_interval'] else ' (outside)'}</td>"
        f"<td>{r['simulated_new_fp_alerts_with_allowlist']:.1f}</td>"
        f"<td>{_pct(r['simulated_removal'])}</td>"
        f"<td>{_pts(r['simulated_recall_cost_points'])}</td></tr>"
        for r in data["per_org"]
    )
    intro = (
        f"<p>{data['endpoints']} simulated endpoints in {data['orgs']} orgs (seed {data['seed']});"
        f" v2 published fleet-wide on day {data['switch_day']}; simulated figures are the mean"
        f" per day from day {data['measured_from_day']}.</p>"
        f"<p><b>Fleet, new FP alerts per day:</b> predicted {data['predicted_new_fp_alerts']:.1f},"
        f" simulated {data['simulated_new_fp_alerts']:.1f}"
        f" (relative error {100 * data['relative_error']:.1f} %). At the switch the report"
        f" counted {data['predicted_new_alerts_at_switch']:.1f} new alerts/day on samples not"
        " labelled malicious then; the zero-day (v2's new detections of malware no feed knew"
        f" yet) accounts for {data['predicted_alerts_on_unknown_malware']:.1f} of them, and"
        f" the predicted figures here judge the flips by the labels learned later"
        f" ({html.escape(data['predicted_basis'])}). {_fleet_sentence(data['fleet_test'])}"
        " With the transition allowlist"
        f" ({data['transition_allowlist_entries']} candidate flips; in force"
        f" {data['transition_allowlist_in_force']['fleet']} fleet-wide and"
        f" {data['transition_allowlist_in_force']['org']} org-only entries): predicted"
        f" {data['predicted_new_fp_alerts_with_allowlist']:.1f}, simulated"
        f" {data['simulated_new_fp_alerts_with_allowlist']:.1f}.</p>"
        f"<p><b>Transition allowlist:</b> new FP alerts removed, predicted"
        f" {_pct(data['predicted_removal'])}, simulated {_pct(data['simulated_removal'])};"
        f" recall lost (points), predicted {_pts(data['predicted_recall_cost_points'])},"
        f" simulated {_pts(data['simulated_recall_cost_points'])}. Orgs whose simulated figure"
        f" falls inside the predicted 95 % interval: {_pct(data['orgs_inside_interval_share'])}"
        f" of {data['orgs_with_alerts']} ({_coverage_verdict(data['coverage_p_value'])}).</p>"
    )
    per_org = (
        "<table><tr><th>org</th><th>endpoints</th><th>protector</th><th>predicted</th>"
        "<th>95 % interval</th><th>simulated</th><th>simulated with allowlist</th>"
        f"<th>removed</th><th>recall lost (points)</th></tr>{table}</table>"
    )
    details = (
        "<p><a href='transition/transition.html'>transition report</a>,"
        " <a href='simulation/report.html'>simulation report</a>.</p>"
    )
    return html_page(
        "v1 -> v2: predicted vs simulated false-positive surge",
        [("Per org, new FP alerts per day", image_tag(img) + per_org), ("Details", details)],
        intro=intro,
    )


def run_demo(
    root: Path, *, size: int = 3000, seed: int = 7, endpoints: int | None = None
) -> DemoReport:
    """Build what is missing under `root`, simulate the transition, predict it, compare.

    Raises:
        ModelStoreError: the corpus or the bundles cannot be built.
        ScenarioError: the embedded scenario cannot run.
    """
    sc = scenario_from_dict(tomllib.loads(SCENARIO), source="demo", endpoints=endpoints)
    day0 = dt.datetime.combine(sc.start.date(), dt.time(), dt.UTC)
    corpus, bundles = ensure_assets(
        root, size=size, seed=seed, now=day0, progress=lambda m: console.print(m)
    )
    with console.status("simulating the fleet (two arms)"):
        sim = run_scenario(sc, corpus=corpus, bundles=bundles, out=root / "demo-run")
    write_report(sim, root / "simulation")
    with console.status("predicting the transition from the aggregates"):
        data = _compare(sim, root)
    jpath = root / "demo.json"
    jpath.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    hpath = root / "demo.html"
    hpath.write_text(_html(data), encoding="utf-8")
    return DemoReport(
        data["predicted_new_fp_alerts"],
        data["simulated_new_fp_alerts"],
        data["simulated_new_fp_alerts_with_allowlist"],
        data["predicted_new_fp_alerts_with_allowlist"],
        data["relative_error"],
        hpath,
        jpath,
        data["predicted_removal"],
        data["simulated_removal"],
        data["predicted_recall_cost_points"],
        data["simulated_recall_cost_points"],
        data["orgs_inside_interval_share"],
        data["orgs_with_alerts"],
        data["coverage_p_value"],
        data["fleet_test"]["p_value"],
        None if data["fleet_test"]["ratio_95"] is None else tuple(data["fleet_test"]["ratio_95"]),
        data["predicted_new_alerts_at_switch"],
    )


def _bias_verdict(p_value: float) -> str:
    """What the fleet total's test says at `FLEET_ALPHA`, in words (the HTML and the CLI)."""
    evidence = "no evidence of" if p_value >= FLEET_ALPHA else "evidence of"
    return f"{evidence} a biased prediction at {FLEET_ALPHA}"


def _fleet_sentence(t: dict[str, Any]) -> str:
    """The fleet total's exact test of one rate, in a sentence."""
    if t["p_value"] is None:
        return ""
    lo, hi = t["ratio_95"]
    return (
        f"The prediction rests on {t['encounters_before_switch']} encounters over"
        f" {t['days_before_switch']:g} days, the simulated figure on {t['alerts_simulated']}"
        f" alerts over {t['days_simulated']} days: predicted / simulated {t['ratio']:.3f}, 95 %"
        f" interval {lo:.3f}-{hi:.3f}; exact test of one rate p = {t['p_value']:.2f}"
        f" ({_bias_verdict(t['p_value'])})."
    )


def _coverage_verdict(p: float | None) -> str:
    """What the coverage says about the intervals, by the binomial test it was put to."""
    if p is None:
        return "no org to judge"
    fits = "consistent with" if p >= COVERAGE_ALPHA else "too many outside for"
    return f"{fits} 95 % intervals: binomial p = {p:.2f}, alpha {COVERAGE_ALPHA}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


@click.command()
@click.option(
    "--out",
    default="fleetward-data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the corpus, bundles and reports go (reused when present).",
)
@click.option(
    "--size",
    default=3000,
    show_default=True,
    help="Synthetic samples drawn from the family plan (maintainer scripts add 4 % on top).",
)
@click.option("--endpoints", type=int, default=None, help="Simulated endpoints (default 8000).")
def demo(out: str, size: int, endpoints: int | None) -> None:
    """Build corpus and v1/v2, simulate the v2 rollout, compare predicted vs simulated FPs.

    Example: fleetward demo --out fleetward-data
    """
    try:
        r = run_demo(Path(out), size=size, endpoints=endpoints)
    except (ModelStoreError, ScenarioError) as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title="v1 -> v2: new false-positive alerts per day, fleet-wide")
    for col in ("", "predicted", "simulated"):
        table.add_column(col, justify="right")
    table.add_row(
        "no mitigation", f"{r.predicted_new_fp_alerts:.1f}", f"{r.simulated_new_fp_alerts:.1f}"
    )
    table.add_row(
        "transition allowlist",
        f"{r.predicted_with_allowlist:.1f}",
        f"{r.simulated_with_allowlist:.1f}",
    )
    console.print(table)
    console.print(f"relative error {100 * r.relative_error:.1f} %")
    if r.fleet_p_value is not None and r.fleet_ratio_95 is not None:
        lo, hi = r.fleet_ratio_95
        console.print(
            f"predicted / simulated {lo:.3f}-{hi:.3f} (95 % interval from the counts behind the"
            f" two figures); exact test of one rate: p = {r.fleet_p_value:.2f}"
            f" ({_bias_verdict(r.fleet_p_value)})"
        )
    console.print(
        f"at the switch the report counted {r.predicted_at_switch:.1f} new alerts/day on samples"
        " not labelled malicious then; "
        f"{r.predicted_at_switch - r.predicted_new_fp_alerts:.1f} of them fall on the zero-day"
        " (v2's new detections: labelled malicious once a feed learned of it, so not false"
        " positives)"
    )
    cost = Table(title="transition allowlist: new FP alerts removed and recall it costs")
    for col in ("", "predicted", "simulated"):
        cost.add_column(col, justify="right")
    cost.add_row("FP alerts removed", _pct(r.predicted_removal), _pct(r.simulated_removal))
    cost.add_row(
        "recall lost (points)",
        _pts(r.predicted_recall_cost_points),
        _pts(r.simulated_recall_cost_points),
    )
    console.print(cost)
    console.print(
        f"orgs whose simulated new FP alerts/day fall inside the predicted 95 % interval: "
        f"{_pct(r.orgs_inside_interval_share)} of {r.orgs_with_alerts}"
        f" ({_coverage_verdict(r.coverage_p_value)})"
    )
    console.print(f"written: {r.html} and {r.json}")
