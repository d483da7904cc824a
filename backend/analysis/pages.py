"""The rescore and transition reports as files: an HTML page with figures, and its JSON twin.

Apart from the analysis on purpose: `backend.analysis.rescore` and `backend.analysis.transition`
compute summaries and reports as plain data; this module only lays them out, with the project's
one page and figure kit (`backend.report`). matplotlib is loaded when a page is drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from backend.analysis.rescore import RescoreSummary
from backend.analysis.transition import TransitionReport
from backend.report import figure, figure_png, html_page, html_table

__all__ = ["rescore_page", "transition_page", "write_rescore_report", "write_transition_report"]


# --- rescore: baseline vs experiment ---------------------------------------------------------


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _f(x: float | None, d: int = 4) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def _orgs(baseline: RescoreSummary, experiment: RescoreSummary) -> list[str]:
    """The orgs of either summary in their order (the store's creation order), not by id."""
    return list(dict.fromkeys([*dict(baseline.alerts_per_org), *dict(experiment.alerts_per_org)]))


def write_rescore_report(
    baseline: RescoreSummary, experiment: RescoreSummary, out_dir: str | Path
) -> Path:
    """Write `rescore.html` (plots inline) and `rescore.json`, baseline vs experiment.

    Returns the HTML path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "baseline": baseline.to_dict(),
        "experiment": experiment.to_dict(),
        "delta": {
            "recall": _delta(baseline.recall, experiment.recall),
            "fp_rate": _delta(baseline.fp_rate, experiment.fp_rate),
            "alerts_per_org": {
                o: dict(experiment.alerts_per_org).get(o, 0)
                - dict(baseline.alerts_per_org).get(o, 0)
                for o in _orgs(baseline, experiment)
            },
        },
    }
    (out / "rescore.json").write_text(json.dumps(doc, indent=2))
    page = out / "rescore.html"
    page.write_text(rescore_page(baseline, experiment))
    return page


def rescore_page(baseline: RescoreSummary, experiment: RescoreSummary) -> str:
    """The rescore report as one self-contained HTML page, baseline beside experiment."""
    images = []
    orgs = _orgs(baseline, experiment)
    fig, ax = figure(9, 3.5)
    x = np.arange(len(orgs))
    ax.bar(
        x - 0.2,
        [dict(baseline.alerts_per_org_per_day).get(o, 0) for o in orgs],
        0.4,
        label=baseline.name,
    )
    ax.bar(
        x + 0.2,
        [dict(experiment.alerts_per_org_per_day).get(o, 0) for o in orgs],
        0.4,
        label=experiment.name,
    )
    ax.set_xticks(x, [o[-8:] for o in orgs], rotation=70, fontsize=7)
    ax.set_ylabel("alerts / day")
    ax.legend()
    images.append(figure_png(fig))
    fams = sorted({f for f, _, _ in baseline.families} | {f for f, _, _ in experiment.families})
    rate = {
        s.name: {f: (a / e if e else 0.0) for f, e, a in s.families} for s in (baseline, experiment)
    }
    fig, ax = figure(9, 3.5)
    x = np.arange(len(fams))
    ax.bar(x - 0.2, [rate[baseline.name].get(f, 0) for f in fams], 0.4, label=baseline.name)
    ax.bar(x + 0.2, [rate[experiment.name].get(f, 0) for f in fams], 0.4, label=experiment.name)
    ax.set_xticks(x, fams, rotation=70, fontsize=7)
    ax.set_ylabel("alert rate per encounter")
    ax.legend()
    images.append(figure_png(fig))
    headline = html_table(
        ["", baseline.name, experiment.name, "delta"],
        [
            (
                "rescored recall",
                _f(baseline.recall),
                _f(experiment.recall),
                _f(_delta(baseline.recall, experiment.recall)),
            ),
            (
                "FP rate",
                _f(baseline.fp_rate, 5),
                _f(experiment.fp_rate, 5),
                _f(_delta(baseline.fp_rate, experiment.fp_rate), 5),
            ),
            ("encounters", baseline.encounters, experiment.encounters, ""),
            (
                "rescored encounters",
                baseline.rescored_encounters,
                experiment.rescored_encounters,
                "",
            ),
            (
                "agreement with recorded verdicts",
                _f(baseline.agreement_with_recorded),
                _f(experiment.agreement_with_recorded),
                "",
            ),
        ],
    )
    per_org = html_table(
        ["org", f"{baseline.name} alerts", f"{experiment.name} alerts", "delta"],
        [
            (
                o,
                dict(baseline.alerts_per_org).get(o, 0),
                dict(experiment.alerts_per_org).get(o, 0),
                dict(experiment.alerts_per_org).get(o, 0) - dict(baseline.alerts_per_org).get(o, 0),
            )
            for o in orgs
        ],
    )
    fam_b = {f: (e, a) for f, e, a in baseline.families}
    fam_e = {f: (e, a) for f, e, a in experiment.families}
    per_fam = html_table(
        ["family", "encounters", f"{baseline.name} alerts", f"{experiment.name} alerts", "delta"],
        [
            (
                f,
                fam_b.get(f, (0, 0))[0],
                fam_b.get(f, (0, 0))[1],
                fam_e.get(f, (0, 0))[1],
                fam_e.get(f, (0, 0))[1] - fam_b.get(f, (0, 0))[1],
            )
            for f in fams
        ],
    )
    return html_page(
        f"Rescore: {baseline.name} vs {experiment.name}",
        [("Headline", headline), ("Alerts per org", per_org), ("Per family", per_fam)],
        images,
    )


# --- transition: old version -> new version --------------------------------------------------


def write_transition_report(report: TransitionReport, out_dir: str | Path) -> Path:
    """Write `transition.html` (with plots), `transition.json` and the allowlist file.

    `transition_allowlist.json` is a JSON list of entries in the form `agent.policy`'s
    `read_list_file` and the admin API take. Returns the HTML path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transition.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out / "transition_allowlist.json").write_text(
        json.dumps(report.to_dict()["transition_allowlist"], indent=2)
    )
    page = out / "transition.html"
    page.write_text(transition_page(report))
    return page


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def transition_page(r: TransitionReport) -> str:
    """The transition report as one self-contained HTML page (figures inline)."""
    ranked = r.ranked_orgs()
    images = []
    fig, ax = figure(9, 3.5)
    top = ranked[:30]
    ax.bar([o.org_id[-8:] for o in top], [o.predicted_new_fp_alerts_per_day for o in top])
    ax.set_ylabel("predicted new FP alerts / day")
    ax.set_title(f"v{r.old_version} -> v{r.new_version}: predicted surge per org")
    ax.tick_params(axis="x", rotation=70, labelsize=7)
    images.append(figure_png(fig))
    if r.sweep:
        fig, ax = figure(6, 3.5)
        ax.plot([p.max_org_fp_per_day for p in r.sweep], [p.recall or 0 for p in r.sweep], "o-")
        ax.axvline(r.fp_budget_per_day, color="r", ls="--", label="per-org FP budget")
        ax.set_xlabel("worst org: new FP alerts / day")
        ax.set_ylabel("recall on historical attacks")
        ax.set_title("threshold sweep (new version)")
        ax.legend()
        images.append(figure_png(fig))
    summary = html_table(
        ["", "value"],
        [
            ("schema changed", r.schema_changed),
            ("fleet predicted new FP alerts/day", _fmt(r.fleet_predicted_new_fp_alerts_per_day, 2)),
            ("fleet endpoints touched", r.fleet_endpoints_touched),
            ("recall before / after", f"{_fmt(r.recall_before)} / {_fmt(r.recall_after)}"),
            ("samples scored", r.samples_scored),
            ("samples without stored vectors", r.samples_without_vectors),
            ("transition allowlist entries", len(r.transition_allowlist)),
            (
                "FP alerts/day the allowlist removes",
                _fmt(r.allowlisted_fp_alerts_per_day_removed, 2),
            ),
            ("recommended alert threshold (budget)", _fmt(r.recommended_alert_threshold, 4)),
        ],
    )
    orgs = html_table(
        [
            "rank",
            "org",
            "new FP alerts/day",
            "endpoints",
            "neg flips",
            "pos flips",
            "window days",
            "recall before",
            "recall after",
        ],
        [
            (
                i + 1,
                o.org_id,
                _fmt(o.predicted_new_fp_alerts_per_day, 2),
                o.endpoints_touched,
                o.negative_flips,
                o.positive_flips,
                o.observation_days,
                _fmt(o.recall_before),
                _fmt(o.recall_after),
            )
            for i, o in enumerate(ranked)
        ],
    )
    sections = [("Summary", summary), ("Organizations ranked by predicted surge", orgs)]
    if r.candidates:
        sections.append(
            (
                "Candidates (plain vs congruent)",
                html_table(
                    ["candidate", "NFR", "recall", "fleet new FP/day", "negative flips"],
                    [
                        (
                            c.name,
                            _fmt(c.nfr, 4),
                            _fmt(c.recall),
                            _fmt(c.fleet_predicted_new_fp_alerts_per_day, 2),
                            c.negative_flips,
                        )
                        for c in r.candidates
                    ],
                ),
            )
        )
    if r.shadow_per_org:
        sections.append(
            (
                "Prediction from shadow telemetry",
                html_table(
                    ["org", "new FP alerts/day", "endpoints", "samples"],
                    [
                        (
                            o.org_id,
                            _fmt(o.predicted_new_fp_alerts_per_day, 2),
                            o.endpoints_touched,
                            o.negative_flips,
                        )
                        for o in r.shadow_per_org.values()
                    ],
                ),
            )
        )
    sections.append(
        (
            f"Threshold sweep (per-org budget {r.fp_budget_per_day:g} new FP/day)",
            html_table(
                [
                    "alert threshold",
                    "worst org FP/day",
                    "fleet FP/day",
                    "orgs over budget",
                    "recall",
                ],
                [
                    (
                        _fmt(p.alert_threshold, 4),
                        _fmt(p.max_org_fp_per_day, 2),
                        _fmt(p.fleet_fp_per_day, 2),
                        p.orgs_over_budget,
                        _fmt(p.recall),
                    )
                    for p in r.sweep
                ],
            ),
        )
    )
    sections.append(("Notes", "".join(f"<p>{n}</p>" for n in r.notes)))
    return html_page(f"Transition v{r.old_version} -> v{r.new_version}", sections, images)
