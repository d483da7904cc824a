"""`fleetward loadtest`: a thin click layer over `loadtest.run.run_loadtest` and the report."""

from __future__ import annotations

import re
from pathlib import Path

import click

from loadtest._clock import utc_now
from loadtest.report import write_report
from loadtest.run import LoadtestConfig, LoadtestError, run_loadtest

__all__ = ["loadtest", "parse_duration"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)?$")


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `2m` or `1h`.

    Raises:
        ValueError: not a duration.
    """
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 60s, 5m)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


@click.command("loadtest")
@click.option("--users", default=20, show_default=True, help="Users, one of them the operator.")
@click.option("--spawn-rate", default=10.0, show_default=True, help="Users started per second.")
@click.option("--duration", default="60s", show_default=True, help="Run time, e.g. 60s, 5m.")
@click.option("--host", default=None, help="Backend URL; a fresh loopback backend when omitted.")
@click.option("--admin-token", default=None, envvar="FLEETWARD_ADMIN_TOKEN", help="For --host.")
@click.option("--orgs", default=4, show_default=True, help="Orgs the agents enroll into.")
@click.option("--interval", default=1.0, show_default=True, help="Mean seconds between actions.")
@click.option("--processes", default=1, show_default=True, help="Locust worker processes.")
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--agents",
    type=click.IntRange(1, 20_000),
    default=None,
    help="Simulated agents on asyncio (push channels, check-ins, telemetry) instead of locust.",
)
@click.option("--replicas", default=1, show_default=True, help="With --agents: local servers.")
@click.option("--db", default=None, help="With --agents: a postgresql:// URL (default SQLite).")
@click.option(
    "--kill-switch-at", type=float, default=None, help="With --agents: seconds in, set mode off."
)
@click.option("--telemetry-share", default=1.0, show_default=True, help="With --agents.")
@click.option("--push/--no-push", default=True, show_default=True, help="With --agents.")
@click.option("--client-processes", default=1, show_default=True, help="With --agents.")
@click.option(
    "--out",
    default="loadtest-report",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the HTML reports, CSVs and JSON go.",
)
def loadtest(
    users: int,
    spawn_rate: float,
    duration: str,
    host: str | None,
    admin_token: str | None,
    orgs: int,
    interval: float,
    processes: int,
    seed: int,
    agents: int | None,
    replicas: int,
    db: str | None,
    kill_switch_at: float | None,
    telemetry_share: float,
    push: bool,
    client_processes: int,
    out: Path,
) -> None:
    """Load-test the backend with locust agents and check nothing was lost or doubled.

    Exits 1 naming the mismatch when the backend's aggregates disagree with what the users
    had acknowledged.

    With --agents N, N simulated agents hold push channels, check in every --interval
    seconds (with jitter) and send telemetry; it reports check-in p50/p99, push and
    kill-switch latency, errors, and the server's CPU and RSS apart from the client's.

    Example: fleetward loadtest --users 200 --spawn-rate 50 --duration 60s --out report

    Example: fleetward loadtest --agents 2000 --interval 30 --kill-switch-at 10 --duration 30s
    """
    if agents is not None:
        _agents(agents, duration, host, admin_token, orgs, interval, seed, replicas, db,
                kill_switch_at, telemetry_share, push, client_processes, out)  # fmt: skip
        return
    try:
        config = LoadtestConfig(
            users=users,
            spawn_rate=spawn_rate,
            duration_s=parse_duration(duration),
            host=host,
            admin_token=admin_token,
            orgs=orgs,
            checkin_interval_s=interval,
            processes=processes,
            seed=seed,
        )
        result = run_loadtest(config, out, now=utc_now)
    except (ValueError, LoadtestError) as exc:
        raise click.ClickException(str(exc)) from None
    html_path, _ = write_report(result, out)
    c = result.checkin_ms
    click.echo(
        f"{result.requests} requests, {result.failures} failures; check-in p50/p95/p99 "
        f"{c['50']:.0f}/{c['95']:.0f}/{c['99']:.0f} ms; ingest {result.ingest_events_per_s:.0f} "
        f"events/s; {result.events_acknowledged} events acknowledged, "
        f"{result.events_counted} counted"
    )
    click.echo(f"report: {html_path}")
    if not result.is_consistent:
        raise click.ClickException("; ".join(result.mismatches))


def _agents(
    agents: int,
    duration: str,
    host: str | None,
    admin_token: str | None,
    orgs: int,
    interval: float,
    seed: int,
    replicas: int,
    db: str | None,
    kill_switch_at: float | None,
    telemetry_share: float,
    push: bool,
    client_processes: int,
    out: Path,
) -> None:
    import json

    from loadtest.agents import FleetConfig, run_fleet

    try:
        config = FleetConfig(
            agents=agents,
            duration_s=parse_duration(duration),
            interval_s=interval,
            kill_switch_at_s=kill_switch_at,
            telemetry_share=telemetry_share,
            push=push,
            client_processes=client_processes,
            orgs=orgs,
            seed=seed,
            db=db,
            replicas=replicas,
            host=host,
            admin_token=admin_token,
        )
        result = run_fleet(config, out)
    except (ValueError, LoadtestError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = result.to_dict()
    (out / "agents.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    c, k = result.checkin_ms, result.kill_ms
    click.echo(
        f"{agents} agents, {result.channels_peak} push channels; {result.checkins_per_s:.0f} "
        f"check-ins/s, p50/p99 {c['p50']:.0f}/{c['p99']:.0f} ms; "
        f"errors {sum(result.errors.values())}"
    )
    if config.kill_switch_at_s is not None:
        click.echo(
            f"kill switch: {result.kill_reached}/{agents} agents off, p50/p99 "
            f"{k['p50']:.0f}/{k['p99']:.0f} ms"
        )
    click.echo(
        f"server CPU {summary['server_cpu_cores']} cores, RSS {summary['server_rss_mb']} MB; "
        f"client CPU {summary['client_cpu_cores']} cores; report: {out / 'agents.json'}"
    )
