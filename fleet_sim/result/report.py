"""The run report: one self-contained HTML page (plots inlined as base64 PNG) and its JSON twin.

The page and its figures are drawn with the project's one report kit, `backend.report`.

Plots: alerts per org per day (the largest orgs and the protector orgs), model adoption over
time, and the kill-switch propagation CDF. The JSON carries everything the page shows, with the
scenario's seed, so a run can be compared or re-run.

Orgs appear by their world names, never by the pseudonyms the backend drew for them (at random,
per run), and rows equal in value keep the orgs' world order (`_world_order`): two runs of one
seed write the same report, whatever pseudonyms each drew (`wall_s` aside). The texts others
write follow the same rule: the rollout gate's reason (`backend.rollout.core`, shown with names
for pseudonyms) lists orgs in the store's creation order, the timeline's events in world order.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from backend.report import figure, figure_png, html_page, image_tag
from backend.rollout.core import RolloutDecision
from fleet_sim._clock import DAY_S
from fleet_sim.result.outcomes import ArmRun, counters, kill_switch_delays
from fleet_sim.rollout.controller import RolloutRecord
from fleet_sim.run import SimRun
from fleet_sim.world import World

__all__ = ["report_dict", "write_report"]


def _stage_start(r: RolloutRecord, t: float) -> float:
    """When the stage that decided at `t` began (the start, or the advance before it)."""
    start = r.started_s
    for when, d, _ in r.decisions:
        if when < t and d.action.value == "advance":
            start = when
    return start


def _world_order(r: RolloutRecord, world: World) -> dict[str, int]:
    """Each org pseudonym's position in the world (the tie key of every per-org list).

    The backend draws pseudonyms at random per run, so an order by pseudonym (the gate's, the
    prediction's) is no order across runs of one seed; the world's is. Pseudonyms the record
    does not name come last.
    """
    pos = {name: i for i, name in enumerate(world.org_names)}
    return {o: pos.get(name, len(pos)) for o, name in r.org_names.items()}


def _named(r: RolloutRecord, text: str, orgs: Iterable[str]) -> str:
    """`text` with each of `orgs`' pseudonyms replaced by the org's world name (longest first)."""
    for o in sorted(orgs, key=lambda o: (-len(o), o)):
        text = text.replace(o, r.org_names.get(o, o))
    return text


def _org_rows(r: RolloutRecord, d: RolloutDecision, world: World, t: float) -> list[dict[str, Any]]:
    """Per org: the transition prediction beside what the canary stage measured.

    Measured new alerts per day = (canary rate - control rate) per endpoint-day, times the
    org's endpoints (one endpoint-day each per day): what the org would see with every
    endpoint on the new version, the quantity the prediction states. A row counts an endpoint
    that reported on a day however little of that day the stage covered, so the rates are
    scaled by (calendar days spanned / days elapsed) to whole days; the test itself compares
    the rows as they are (both arms share the bias). Rows run by predicted surge, largest
    first, ties in world order.
    """
    sizes = {name: int(world.org_size[i]) for i, name in enumerate(world.org_names)}
    # a row counts an endpoint that reported on a day, however little of the day the stage ran:
    # scale the per-row rates to whole days of exposure
    begun = _stage_start(r, t)
    span = math.floor(t / DAY_S - 1e-9) - math.floor(begun / DAY_S) + 1
    full_day = max(1, span) / max((t - begun) / DAY_S, 1 / 24)
    rows = []
    seen: set[str] = set()
    for test in d.tests:
        if test.org_id is None or test.metric.value != "alerts" or test.org_id in seen:
            continue
        seen.add(test.org_id)
        c_rate = test.canary_count / test.canary_endpoint_days if test.canary_endpoint_days else 0.0
        k_rate = (
            test.control_count / test.control_endpoint_days if test.control_endpoint_days else 0.0
        )
        name = r.org_names.get(test.org_id, test.org_id)
        per_day = sizes.get(name, 0)
        rows.append(
            {
                "org": name,
                "endpoints": per_day,
                "predicted_new_fp_alerts_per_day": r.prediction.get(test.org_id),
                "measured_new_alerts_per_day": round((c_rate - k_rate) * per_day * full_day, 2),
                "canary_alerts_per_endpoint_day": round(c_rate, 4),
                "control_alerts_per_endpoint_day": round(k_rate, 4),
                "rate_ratio": test.rate_ratio,
                "p_worse": test.p_worse,
                "alpha": test.alpha,
                "worse": test.worse,
                "halted": test.org_id in d.halted_orgs,
            }
        )
    pos = {name: i for i, name in enumerate(world.org_names)}
    return sorted(
        rows,
        key=lambda x: (-(x["predicted_new_fp_alerts_per_day"] or 0.0), pos.get(x["org"], len(pos))),
    )


def _rollout_dict(r: RolloutRecord, world: World) -> dict[str, Any]:
    order = _world_order(r, world)
    last = len(order)
    decisions = []
    shown = list(r.decisions)
    if r.last is not None and (not shown or r.last[1] is not shown[-1][1]):
        shown.append((r.last[0], r.last[1], None))  # the latest wait, when it came last
    for t, d, pv in shown:
        decisions.append(
            {
                "t_days": round(t / DAY_S, 4),
                "action": d.action.value,
                "percent": d.percent,
                "reason": _named(
                    r, d.reason, {*d.halted_orgs, *(x.org_id for x in d.tests if x.org_id)}
                ),
                "halted_orgs": [
                    r.org_names.get(o, o)
                    for o in sorted(d.halted_orgs, key=lambda o: order.get(o, last))
                ],
                "policy_version": pv,
                "canary": asdict(d.canary),
                "control": asdict(d.control),
                "tests": [x.to_dict() for x in d.tests if x.org_id is None],
                "per_org": _org_rows(r, d, world, t),
            }
        )
    return {
        "rollout_id": r.rollout_id,
        "from_version": r.from_version,
        "to_version": r.to_version,
        "started_days": round(r.started_s / DAY_S, 4),
        "state": r.state,
        "stage_percent": r.stage_percent,
        "looks": r.looks,
        "halt_policy_version": r.halt_policy_version,
        "prediction": {
            r.org_names.get(o, o): round(v, 3)
            for o, v in sorted(
                r.prediction.items(), key=lambda kv: (-kv[1], order.get(kv[0], last))
            )
        },
        "decisions": decisions,
    }


def _arm_dict(run: ArmRun) -> dict[str, Any]:
    rec, w = run.recorder, run.world
    ks = []
    for i in range(len(rec.kill_switches)):
        delay, eligible = kill_switch_delays(rec, w, i, 900.0)
        d = delay[eligible & np.isfinite(delay)]
        ks.append(
            {
                "policy_version": rec.kill_switches[i],
                "eligible_endpoints": int(eligible.sum()),
                "p50_s": float(np.percentile(d, 50)) if d.size else None,
                "p99_s": float(np.percentile(d, 99)) if d.size else None,
                "max_s": float(d.max()) if d.size else None,
            }
        )
    return {
        "counters": counters(rec),
        "orgs": [
            {
                "name": w.org_names[o],
                "endpoints": int(w.org_size[o]),
                "protector": bool(w.org_protector[o]),
                "alerts_per_day": rec.alerts[:, o].tolist(),
                "fp_alerts_per_day": rec.fp_alerts[:, o].tolist(),
                "new_fp_alerts_per_day": rec.new_fp[:, o].tolist(),
                "encounters_per_day": rec.enc[:, o].tolist(),
            }
            for o in range(w.n_orgs)
        ],
        "fleet": {
            "alerts_per_day": rec.alerts.sum(axis=1).tolist(),
            "fp_alerts_per_day": rec.fp_alerts.sum(axis=1).tolist(),
            "new_fp_alerts_per_day": rec.new_fp.sum(axis=1).tolist(),
            "malicious_encounters_per_day": rec.mal_enc.sum(axis=1).tolist(),
            "malicious_alerts_per_day": rec.mal_alerts.sum(axis=1).tolist(),
        },
        "adoption": [{"t_days": t / DAY_S, "versions": c} for t, c in rec.adoption],
        "kill_switches": ks,
        "timeline": [{"t_days": t / DAY_S, "event": e} for t, e in rec.events[:200]],
        "rollouts": [_rollout_dict(r, w) for r in rec.rollouts],
    }


def report_dict(run: SimRun) -> dict[str, Any]:
    """The JSON twin of the report."""
    sc = run.scenario
    return {
        "scenario": sc.name,
        "description": sc.description,
        "seed": sc.seed,
        "mode": run.mode,
        "days": sc.days,
        "endpoints": sc.world.endpoints,
        "orgs": sc.world.orgs,
        "wall_s": round(run.wall_s, 2),
        "encounters": run.events,
        "passed": run.passed,
        "outcomes": [o.to_dict() for o in run.outcomes],
        "bundles": {str(k): v for k, v in run.bundles.items()},
        "arms": {name: _arm_dict(a) for name, a in run.arms.items()},
    }


def _plots(run: SimRun) -> list[tuple[str, str]]:
    out = []
    fig, axes = figure(6 * len(run.arms), 3.6, ncols=len(run.arms), squeeze=False)
    for ax, (name, arm) in zip(axes[0], run.arms.items(), strict=True):
        rec, w = arm.recorder, arm.world
        days = np.arange(rec.n_days)
        top = list(np.argsort(-w.org_size)[:6]) + list(np.flatnonzero(w.org_protector)[:3])
        for o in dict.fromkeys(int(x) for x in top):
            style = "--" if w.org_protector[o] else "-"
            ax.plot(days, rec.alerts[:, o], style, label=w.org_names[o])
        ax.set_title(f"alerts per org per day ({name})")
        ax.set_xlabel("day")
        ax.legend(fontsize=6)
    out.append(("Alerts per org over time (dashed: protector orgs)", figure_png(fig)))
    fig, ax = figure(7, 3.6)
    for name, arm in run.arms.items():
        versions = sorted({v for _, c in arm.recorder.adoption for v in c})
        for v in versions:
            xs = [t / DAY_S for t, _ in arm.recorder.adoption]
            ys = [c.get(v, 0) / max(1, sum(c.values())) for _, c in arm.recorder.adoption]
            ax.plot(xs, ys, label=f"{name}: v{v}")
    ax.set_title("model adoption (share of endpoints)")
    ax.set_xlabel("day")
    ax.legend(fontsize=7)
    out.append(("Rollout adoption", figure_png(fig)))
    fig, ax = figure(7, 3.6)
    drawn = False
    for name, arm in run.arms.items():
        for i in range(len(arm.recorder.kill_switches)):
            delay, eligible = kill_switch_delays(arm.recorder, arm.world, i, 900.0)
            d = np.sort(delay[eligible & np.isfinite(delay)]) / 60.0
            if d.size:
                ax.plot(d, np.arange(1, d.size + 1) / d.size, label=f"{name}: switch {i}")
                drawn = True
    if drawn:
        ax.axvline(15, color="grey", ls=":")
        ax.set_title("kill-switch propagation CDF (endpoints online throughout)")
        ax.set_xlabel("minutes after the switch")
        ax.legend(fontsize=7)
    png = figure_png(fig)  # closes the figure, drawn or not
    if drawn:
        out.append(("Kill-switch propagation", png))
    return out


def _rollout_html(arm: str, rollouts: list[dict[str, Any]]) -> str:
    out = []
    esc = html.escape
    for r in rollouts:
        out.append(
            f"<h2>Rollout v{r['from_version']} &rarr; v{r['to_version']} ({esc(arm)}): "
            f"{esc(r['state'])} at {r['stage_percent']:g} %</h2><table><tr><th>day</th>"
            "<th>action</th><th>stage</th><th>reason (statistic)</th><th>orgs</th></tr>"
        )
        for d in r["decisions"]:
            out.append(
                f"<tr><td>{d['t_days']:.2f}</td><td>{esc(d['action'])}</td>"
                f"<td>{d['percent']:g} %</td><td>{esc(d['reason'])}</td>"
                f"<td>{esc(', '.join(d['halted_orgs']))}</td></tr>"
            )
        out.append("</table>")
        for d in r["decisions"]:
            if not d["per_org"] or d["action"] not in ("halt", "advance", "complete"):
                continue
            out.append(
                f"<h3>{esc(d['action'])} at {d['percent']:g} %: transition prediction beside "
                "what the canary stage measured (new alerts per day, whole org on the new "
                "version)</h3><table><tr><th>org</th><th>predicted</th><th>measured</th>"
                "<th>canary /ep-day</th><th>control /ep-day</th><th>ratio</th><th>p (worse)"
                "</th><th>halted</th></tr>"
            )
            for o in d["per_org"]:
                pred = o["predicted_new_fp_alerts_per_day"]
                ratio = o["rate_ratio"]
                out.append(
                    f"<tr><td>{esc(o['org'])}</td>"
                    f"<td>{'-' if pred is None else f'{pred:.1f}'}</td>"
                    f"<td>{o['measured_new_alerts_per_day']:.1f}</td>"
                    f"<td>{o['canary_alerts_per_endpoint_day']:.3f}</td>"
                    f"<td>{o['control_alerts_per_endpoint_day']:.3f}</td>"
                    f"<td>{'-' if ratio is None else f'{ratio:.2f}'}</td>"
                    f"<td>{o['p_worse']:.2e}</td><td>{'yes' if o['halted'] else ''}</td></tr>"
                )
            out.append("</table>")
    return "".join(out)


def write_report(run: SimRun, out: str | Path) -> tuple[Path, Path]:
    """Write `report.html` and `report.json` into `out`; returns both paths."""
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    data = report_dict(run)
    jpath = base / "report.json"
    jpath.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    rows = "".join(
        f"<tr><td>{'PASS' if o.passed else '<b>FAIL</b>'}</td><td>{html.escape(o.name)}</td>"
        f"<td>{html.escape(o.arm)}</td><td>{o.value:.4g}</td><td>{html.escape(o.bound)}</td></tr>"
        for o in run.outcomes
    )
    outcomes = (
        "<table><tr><th></th><th>outcome</th><th>arm</th><th>value</th>"
        f"<th>bound</th></tr>{rows}</table>"
    )
    counters_html = "".join(
        f"<h3>{html.escape(n)}</h3><pre>{html.escape(json.dumps(a['counters'], indent=1))}</pre>"
        for n, a in data["arms"].items()
    )
    rollout_html = "".join(_rollout_html(n, a["rollouts"]) for n, a in data["arms"].items())
    sc = run.scenario
    intro = (
        f"<p>{html.escape(sc.description)}</p>"
        f"<p>mode {run.mode}, seed {sc.seed}, {sc.world.endpoints} endpoints, "
        f"{sc.world.orgs} orgs, {sc.days:g} days, {run.events} scans, "
        f"{run.wall_s:.1f} s wall</p>"
    )
    page = html_page(
        f"fleet_sim: {sc.name}",
        [
            ("Outcomes", outcomes),
            ("", rollout_html),  # its own headings, one per rollout
            *((title, image_tag(png)) for title, png in _plots(run)),
            ("Counters", counters_html),
        ],
        intro=intro,
    )
    hpath = base / "report.html"
    hpath.write_text(page, encoding="utf-8")
    return hpath, jpath
