"""The release gate's report: one self-contained HTML page and its JSON twin.

The HTML page embeds its one figure (the golden set's score distributions, current model vs
candidate, benign and malware apart, log scale) as a base64 PNG and inlines its styles, so it
can be mailed or attached to a change ticket as one file. Templates are Jinja2 with
autoescaping: bundle fields and org ids never reach the page unescaped.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import jinja2

from model_store.gate.judgement import GateReport, ScoreHistogram

__all__ = ["HTML_NAME", "JSON_NAME", "render_html", "write_gate_report"]

HTML_NAME = "gate.html"
JSON_NAME = "gate.json"

_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Release gate: v{{ r.candidate_version }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.pass { color: #176d2c; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
img { max-width: 100%; }
</style></head><body>
<h1>Release gate: v{{ r.candidate_version }}
{%- if r.current_version is not none %} against current v{{ r.current_version }}{% endif %}:
<span class="{{ 'pass' if r.passed else 'fail' }}">
{{- 'PASSED' if r.passed else 'REFUSED' }}</span></h1>
<p>Judged at {{ r.now.isoformat() }} on {{ r.golden_real_benign }} real benign files,
{{ r.golden_synthetic_benign }} synthetic benign samples and {{ r.golden_malware }} malware
samples of the corpus's held-out split.</p>
{% if forced %}<p class="fail">Published despite the gate, forced with the reason:
<q>{{ forced }}</q></p>{% endif %}
<table><tr><th>check</th><th>result</th><th>value</th><th>bound</th><th>reason</th></tr>
{% for c in r.checks %}<tr><td>{{ c.name }}</td>
<td class="{{ 'pass' if c.passed else 'fail' }}">{{ 'pass' if c.passed else 'FAIL' }}</td>
<td>{{ fmt(c.value) }}</td><td>{{ fmt(c.bound) }}</td><td>{{ c.reason }}</td></tr>
{% endfor %}</table>
{% if r.pair %}<h2>Regression v{{ r.pair.old_version }} &rarr; v{{ r.pair.new_version }}</h2>
<table><tr><th>negative flip rate (NFR)</th><td>{{ fmt(r.pair.nfr) }}
({{ r.pair.negative_flips }} of {{ r.pair.samples }})</td></tr>
<tr><th>positive flip rate</th><td>{{ fmt(r.pair.pfr) }}
({{ r.pair.positive_flips }} of {{ r.pair.samples }})</td></tr>
<tr><th>alert decisions changed</th><td>{{ fmt(r.pair.flip_share) }}</td></tr>
<tr><th>mean |&Delta;score|</th><td>{{ fmt(r.pair.mean_abs_score_shift) }}</td></tr>
<tr><th>KS statistic (reported, not gated)</th><td>{{ fmt(r.pair.ks) }}</td></tr></table>
<p>NFR (Yan et al., CVPR 2021): share of golden samples the old version decided right, at its
alert threshold, that the new one decides wrong.</p>{% endif %}
{% if r.worst_orgs %}<h2>Predicted new false-positive alerts per day, worst orgs</h2>
<table><tr><th>org</th><th>per day</th></tr>
{% for org, v in r.worst_orgs %}<tr><td>{{ org }}</td><td>{{ fmt(v) }}</td></tr>{% endfor %}
</table>{% endif %}
{% if png %}<h2>Score distributions on the golden set</h2>
<img alt="score histograms, current vs candidate" src="data:image/png;base64,{{ png }}">{% endif %}
{% for n in r.notes %}<p>{{ n }}</p>{% endfor %}
</body></html>
"""
)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def _plot(h: ScoreHistogram, old_version: int | None, new_version: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=False)
    centres = [(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)]
    width = h.edges[1] - h.edges[0]
    panels = (("benign", h.old_benign, h.new_benign), ("malware", h.old_malicious, h.new_malicious))
    for ax, (title, old, new) in zip(axes, panels, strict=True):
        if old:
            ax.bar(centres, old, width=width, alpha=0.5, label=f"current v{old_version}")
        ax.bar(centres, new, width=width * 0.5, alpha=0.8, label=f"candidate v{new_version}")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("score")
        ax.set_ylabel("golden samples")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(report: GateReport, *, forced_reason: str | None = None) -> str:
    """The self-contained HTML page of `report`."""
    png = (
        _plot(report.histogram, report.current_version, report.candidate_version)
        if report.histogram is not None
        else ""
    )
    return _TEMPLATE.render(r=report, png=png, fmt=_fmt, forced=forced_reason)


def write_gate_report(
    report: GateReport, out_dir: str | os.PathLike[str], *, forced_reason: str | None = None
) -> tuple[Path, Path]:
    """Write `gate.html` and `gate.json` into `out_dir` (created); returns (html, json) paths.

    The JSON carries `forced_reason` (null unless the publish was forced).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    data["forced_reason"] = forced_reason
    json_path = out / JSON_NAME
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_path = out / HTML_NAME
    html_path.write_text(render_html(report, forced_reason=forced_reason), encoding="utf-8")
    return html_path, json_path
