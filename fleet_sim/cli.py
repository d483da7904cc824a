"""`fleetward sim`: run a scenario file and check its outcomes (a thin layer over `run_scenario`).

Exit status: 0 when every outcome passed, 1 when one failed (each failed outcome is named).
"""

from __future__ import annotations

import datetime as dt

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fleet_sim._clock import wall_s
from fleet_sim.report import write_report
from fleet_sim.run import ensure_assets, run_scenario
from fleet_sim.scenario import ScenarioError, load_scenario

__all__ = ["sim"]

console = Console(stderr=True)


@click.group()
def sim() -> None:
    """Simulate fleets of endpoints against the backend (scenarios/*.toml)."""


@sim.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--mode", type=click.Choice(["cohort", "exact"]), default="cohort", show_default=True)
@click.option("--endpoints", type=int, default=None, help="Override the world's endpoint count.")
@click.option("--days", type=float, default=None, help="Override the simulated days.")
@click.option("--orgs", type=int, default=None, help="Override the number of organizations.")
@click.option(
    "--backend",
    "backend_url",
    default=None,
    help="Drive a running `fleetward backend serve` over HTTP (not available in this version).",
)
@click.option("--data", default="fleetward-data", show_default=True, help="Corpus and bundles.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report directory.")
def run(
    scenario: str,
    mode: str,
    endpoints: int | None,
    days: float | None,
    orgs: int | None,
    backend_url: str | None,
    data: str,
    out: str,
) -> None:
    """Run SCENARIO, write report.html and report.json to --out, exit 1 if an outcome fails.

    Example: fleetward sim run scenarios/kill-switch.toml --out runs/kill-switch
    """
    if backend_url is not None:
        raise click.ClickException(
            "--backend over HTTP is not implemented yet; the in-process backend is used by default"
        )
    try:
        sc = load_scenario(scenario, endpoints=endpoints, days=days, orgs=orgs)
        corpus, bundles = ensure_assets(
            data,
            now=dt.datetime.combine(sc.start.date(), dt.time(), dt.UTC),
            progress=lambda m: console.print(m),
        )
        started = wall_s()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("sim day {task.fields[day]:.2f}"),
            TextColumn("{task.fields[rate]:,.0f} events/s"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(arm: str, t: float, total: float, events: int) -> None:
                if arm not in tasks:
                    tasks[arm] = int(
                        bar.add_task(f"{sc.name}/{arm}", total=total, day=0.0, rate=0.0)
                    )
                rate = events / max(wall_s() - started, 1e-6)
                bar.update(tasks[arm], completed=t, day=t / 86_400.0, rate=rate)  # type: ignore[arg-type]

            result = run_scenario(
                sc, corpus=corpus, bundles=bundles, out=out, mode=mode, progress=progress
            )
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    html_path, json_path = write_report(result, out)
    for o in result.outcomes:
        mark = "[green]PASS[/]" if o.passed else "[red]FAIL[/]"
        console.print(
            f"{mark} {escape(o.name)} ({escape(o.arm)}): {o.value:.4g} ({escape(o.bound)})"
        )
    console.print(f"written: {html_path} and {json_path}")
    if not result.passed:
        names = "; ".join(o.name for o in result.failed)
        click.echo(f"error: outcome failed: {names}", err=True)
        raise SystemExit(1)
