"""`fleetward sim`: run a scenario file and check its outcomes (a thin layer over `run_scenario`).

Exit status: 0 when every outcome passed, 1 when one failed (each failed outcome is named).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fleet_sim._clock import wall_s
from fleet_sim.errors import SimError
from fleet_sim.link.http import RemoteBackend
from fleet_sim.result.report import write_report
from fleet_sim.run import ensure_assets, run_scenario
from fleet_sim.scenario import ScenarioError, load_scenario, scenario_schema

__all__ = ["sim"]

console = Console(stderr=True, soft_wrap=True)  # messages hold paths: never hard-wrapped


class _EngineError(click.ClickException):
    """Spark cannot run (missing pyspark or Java, master unreachable): one line, exit 2."""

    exit_code = 2


@click.group()
def sim() -> None:
    """Simulate fleets of endpoints against the backend (scenarios/*.toml)."""


@sim.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--mode",
    type=click.Choice(["cohort", "exact"]),
    default=None,
    help="cohort (default) or exact; --backend implies exact.",
)
@click.option("--endpoints", type=int, default=None, help="Override the world's endpoint count.")
@click.option("--days", type=float, default=None, help="Override the simulated days.")
@click.option("--orgs", type=int, default=None, help="Override the number of organizations.")
@click.option(
    "--backend",
    "backend_url",
    default=None,
    help=(
        "Also drive a running `fleetward backend serve` at URL over HTTP: each endpoint enrolls, "
        "checks in and sends its telemetry batches with the agent's code (at most 2,000 "
        "endpoints). Needs --admin-token."
    ),
)
@click.option(
    "--admin-token",
    envvar="FLEETWARD_ADMIN_TOKEN",
    default=None,
    help="Admin token of the --backend server (or $FLEETWARD_ADMIN_TOKEN), to create the orgs.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help=(
        "Worker processes for the cohort mode, each simulating a shard of the orgs (default: "
        "the core count, one below 250,000 endpoints; with --engine spark, the cluster's "
        "cores). Results are identical for any number; the exact mode uses one."
    ),
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help=(
        "Where the cohort mode's shards run: local worker processes, or Spark tasks (one "
        "barrier job, a task per shard, each writing its aggregates as Parquet under --out)."
    ),
)
@click.option(
    "--spark-master",
    default=None,
    help="Spark master URL for --engine spark (default local[*]; e.g. spark://host:7077).",
)
@click.option("--data", default="fleetward-data", show_default=True, help="Corpus and bundles.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report directory.")
def run(
    scenario: str,
    mode: str | None,
    endpoints: int | None,
    days: float | None,
    orgs: int | None,
    backend_url: str | None,
    admin_token: str | None,
    workers: int | None,
    engine: str,
    spark_master: str | None,
    data: str,
    out: str,
) -> None:
    """Run SCENARIO, write report.html and report.json to --out, exit 1 if an outcome fails.

    Example: fleetward sim run scenarios/kill-switch.toml --out runs/kill-switch

    Example: fleetward sim run scenarios/rollout-good.toml --endpoints 1000000 --workers 2
    --out runs/rollout-1m

    Example: fleetward sim run scenarios/kill-switch.toml --endpoints 200 --days 1
    --backend http://127.0.0.1:8080 --admin-token $TOKEN --out runs/ks-http

    Example: fleetward sim run scenarios/rollout-good.toml --engine spark
    --spark-master spark://10.0.0.5:7077 --out runs/rollout-spark
    """
    remote = None
    if backend_url is not None:
        if admin_token is None:
            raise click.ClickException("--backend needs --admin-token (or $FLEETWARD_ADMIN_TOKEN)")
        remote = RemoteBackend(backend_url, admin_token)
    mode = mode or ("exact" if remote is not None else "cohort")
    if spark_master is not None and engine != "spark":
        raise click.UsageError("--spark-master needs --engine spark")
    if engine == "spark" and mode != "cohort":
        raise click.UsageError("--engine spark runs the cohort mode (not exact, not --backend)")
    shards = None
    if engine == "spark":
        from fleet_sim.parallel.spark import SparkEngine, SparkEngineError

        try:
            shards = SparkEngine.start(spark_master or "local[*]")
        except SparkEngineError as exc:
            raise _EngineError(str(exc)) from None
    try:
        sc = load_scenario(scenario, endpoints=endpoints, days=days, orgs=orgs)
        Path(out).mkdir(parents=True, exist_ok=True)  # a bad --out fails before the assets build
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
                sc,
                corpus=corpus,
                bundles=bundles,
                out=out,
                mode=mode,
                progress=progress,
                remote=remote,
                workers=workers or (shards.slots if shards else None),
                engine=shards,
            )
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    except SimError as exc:  # a shard worker or the Spark job failed
        raise click.ClickException(str(exc)) from exc
    finally:
        if shards is not None:
            shards.stop()
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


@sim.command()
def schema() -> None:
    """Print the scenario file's JSON Schema: world, campaigns, timeline actions, outcome checks.

    Each action (`do`) and outcome (`check`) with its fields and what they mean; editors that read
    JSON Schema (e.g. Taplo for TOML) complete and check scenario files with it.

    Example: fleetward sim schema > scenario.schema.json
    """
    click.echo(json.dumps(scenario_schema(), indent=2))
