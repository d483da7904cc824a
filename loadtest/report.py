"""The fleetward page of a load test: figures, timelines as embedded PNGs, and a JSON twin.

Locust writes its own `locust.html`; this page holds what locust cannot know: events ingested
per second as the backend counted them, the database's size over time, and the consistency
check. The page and its plots come from `backend.report`: matplotlib PNGs embedded as base64,
so the page is one self-contained file.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from backend.report import figure, figure_png, html_page, image_tag
from loadtest.run import LoadtestResult, Sample

__all__ = ["plot_png", "write_report"]


def plot_png(
    title: str, ylabel: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]]
) -> str:
    """One line plot as a base64 PNG (the Agg backend: no display needed)."""
    fig, ax = figure(7, 3)
    for label, xs, ys in series:
        ax.plot(list(xs), list(ys), label=label)
    ax.set_title(title)
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return figure_png(fig)


def _rates(samples: Sequence[Sample]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for a, b in zip(samples, samples[1:], strict=False):
        if b.t_s > a.t_s:
            xs.append(b.t_s)
            ys.append((b.events_ingested - a.events_ingested) / (b.t_s - a.t_s))
    return xs, ys


def _checkin_history(result: LoadtestResult) -> list[tuple[str, list[float], list[float]]]:
    rows = [r for r in result.history if r.get("Name") == "/v1/checkin"]
    if not rows:
        return []
    t0 = float(rows[0]["Timestamp"])
    out = []
    for p in ("50%", "95%", "99%"):
        pts = [
            (float(r["Timestamp"]) - t0, float(r[p])) for r in rows if r.get(p) not in ("N/A", "")
        ]
        out.append((f"p{p[:-1]}", [x for x, _ in pts], [y for _, y in pts]))
    return out


def write_report(result: LoadtestResult, out: Path) -> tuple[Path, Path]:
    """Write `fleetward.html` and `loadtest.json` under `out`; return their paths."""
    data = result.to_dict()
    json_path = out / "loadtest.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plots = []
    xs, ys = _rates(result.samples)
    if xs:
        plots.append(plot_png("Events ingested per second", "events/s", [("ingest", xs, ys)]))
    sized = [s for s in result.samples if s.database_bytes is not None]
    if sized:
        plots.append(
            plot_png(
                "Database size (main file + WAL)",
                "MB",
                [("db", [s.t_s for s in sized], [(s.database_bytes or 0) / 1e6 for s in sized])],
            )
        )
    history = _checkin_history(result)
    if history:
        plots.append(plot_png("Check-in latency (locust, cumulative)", "ms", history))
    c = result.checkin_ms
    verdict = (
        "<p class=ok>Consistent: every acknowledged batch counted exactly once.</p>"
        if result.is_consistent
        else "<ul class=bad>"
        + "".join(f"<li>{html.escape(m)}</li>" for m in result.mismatches)
        + "</ul>"
    )
    routes = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['requests']}</td><td>{r['failures']}</td>"
        f"<td>{r['rps']:.1f}</td><td>{r['p50_ms']:.0f}</td><td>{r['p95_ms']:.0f}</td>"
        f"<td>{r['p99_ms']:.0f}</td></tr>"
        for r in result.per_route
    )
    db = f"{result.database_bytes / 1e6:.1f} MB" if result.database_bytes is not None else "n/a"
    intro = f"""<p>{data["users"]} users (1 operator), spawn rate {data["spawn_rate"]}/s,
{data["duration_s"]:.0f} s against {html.escape(result.host)} on {data["cores"]} cores.
Locust's own report: <a href="locust.html">locust.html</a>.</p>
<table>
<tr><th>events ingested per second (sustained)</th><td>{result.ingest_events_per_s:.0f}</td></tr>
<tr><th>check-in p50 / p95 / p99</th><td>{c["50"]:.0f} / {c["95"]:.0f} / {c["99"]:.0f} ms</td></tr>
<tr><th>requests / failures / error rate</th>
<td>{result.requests} / {result.failures} / {result.error_rate:.4%}</td></tr>
<tr><th>events sent / acknowledged / counted</th>
<td>{result.events_sent} / {result.events_acknowledged} / {result.events_counted}</td></tr>
<tr><th>batches acknowledged / replays answered</th>
<td>{result.batches_acknowledged} / {result.replays_acknowledged}</td></tr>
<tr><th>database size at the end</th><td>{db}</td></tr>
</table>
"""
    routes_table = (
        "<table><tr><th>route</th><th>requests</th><th>failures</th><th>req/s</th>"
        f"<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>{routes}</table>"
    )
    page = html_page(
        "fleetward load test",
        [
            ("Consistency", verdict),
            ("Routes", routes_table),
            ("Over time", "".join(image_tag(p) for p in plots)),
        ],
        intro=intro,
        extra_css=".ok{color:#060}.bad{color:#a00}",
    )
    html_path = out / "fleetward.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, json_path
