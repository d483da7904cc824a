"""Fleet capacity and kill-switch propagation, measured with simulated agents on asyncio.

Runs `loadtest.agents.run_fleet` (the backend in `backend serve` subprocesses, the agents in
this process, both on this machine) three ways and prints one `name: value` per line:

1. kill switch: `--kill-agents` agents hold push channels; the operator sets mode `off`
   fleet-wide; per agent, the time from the API call to its check-in answering `off`
   (its effective mode), and to its push notice, p50/p99 (goal p99 <= 2 s);
2. one server process on SQLite: `--agents` push channels and check-ins every
   `--interval` s, each followed by a telemetry batch (goal: >= 10,000 channels and
   >= 333 check-ins/s at check-in p99 <= 50 ms);
3. the same with two replicas on PostgreSQL (`--pg URL`, or `FLEETWARD_TEST_PG_URL`).

Server CPU and RSS (from /proc of the server processes; with PostgreSQL on this machine, its
processes' CPU too, added to the server's CPU per check-in) are reported apart from this
client's.
The load average is printed before and after: the figures only mean something next to it.
So is each part's steal time (`<run>_machine`, from /proc/stat): on a virtual machine the
host's other guests take CPU that no load average shows, and the same code then measures
slower servers and longer tails.

The default interval, 28 s, offers 357 check-ins/s from 10,000 agents: at 30 s the offer is
exactly the goal's 333/s, and the jitter and the window's edges measure it a little under.
`<run>_goal` says whether a run met the goal.

    .venv/bin/python benchmarks/capacity_bench.py [--agents 10000] [--interval 28]
        [--kill-agents 2000] [--seconds 30] [--pg postgresql://...] [--only kill,sqlite,pg]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.agents import FleetConfig, FleetResult, run_fleet  # noqa: E402


def _print(name: str, r: FleetResult) -> None:
    d = r.to_dict()
    c, k, p = r.checkin_ms, r.kill_ms, r.push_ms
    print(
        f"{name}: {d['agents']} agents, {d['replicas']} x {d['store']}, "
        f"channels peak {d['channels_peak']}, {d['checkins_per_s']} check-ins/s "
        f"(p50/p99 {c['p50']:.0f}/{c['p99']:.0f} ms, {d['not_modified']} answered 304), "
        f"{d['telemetry_batches']} telemetry batches ({d['events']} events, "
        f"p99 {r.telemetry_ms['p99']:.0f} ms), errors {sum(r.errors.values())} {r.errors or ''}"
    )
    if r.config.kill_switch_at_s is not None:
        print(
            f"{name}_kill_switch: {r.kill_reached}/{d['agents']} agents off; effective mode "
            f"p50/p99/max {k['p50']:.0f}/{k['p99']:.0f}/{k['max']:.0f} ms; push notice "
            f"p50/p99 {p['p50']:.0f}/{p['p99']:.0f} ms; the operator's call itself (commit and "
            f"TUF signing) {r.kill_call_ms} ms"
        )
    print(f"{name}_server_side_ms (histogram bucket bounds): {r.server_ms}")
    db = r.database.cpu_s if r.database else 0.0
    db_text = f" + PostgreSQL {d['database_cpu_cores']} cores" if r.database else ""
    print(
        f"{name}_cpu: server {d['server_cpu_cores']} cores{db_text}, RSS {d['server_rss_mb']} "
        f"MB; client {d['client_cpu_cores']} cores, RSS {d['client_rss_mb']} MB; "
        f"load average {', '.join(f'{x:.1f}' for x in r.load_average)}"
    )
    if r.checkins and r.server is not None:
        # CPU seconds, not wall time: the figure a loaded machine changes least. Each check-in
        # carries its share of everything else (telemetry, channel heartbeats, connects).
        # The server's figure includes PostgreSQL's processes (its database's backends and
        # the shared WAL writer, checkpointer, ...) when the database is on this machine.
        server = r.server.cpu_s + db
        split = (
            f" (backend processes {1000 * r.server.cpu_s / r.checkins:.2f} + PostgreSQL "
            f"{1000 * db / r.checkins:.2f})"
            if r.database
            else ""
        )
        print(
            f"{name}_cpu_per_checkin: server {1000 * server / r.checkins:.2f} ms{split}, "
            f"client {1000 * r.client.cpu_s / r.checkins:.2f} ms "
            f"(cores for 333 check-ins/s at this mix: server "
            f"{333 * server / r.checkins:.2f}, client "
            f"{333 * r.client.cpu_s / r.checkins:.2f})"
        )
    if r.config.kill_switch_at_s is None:
        met = (
            r.channels_peak >= 10_000
            and r.checkins_per_s >= 333
            and c["p99"] <= 50
            and not r.errors
            and r.telemetry_batches > 0
        )
        print(
            f"{name}_goal (>= 10,000 channels, >= 333 check-ins/s with telemetry, check-in p99 "
            f"<= 50 ms, no errors): {'met' if met else 'NOT met'} ({r.channels_peak} channels, "
            f"{r.checkins_per_s:.1f}/s, p99 {c['p99']:.0f} ms, {sum(r.errors.values())} errors)"
        )
    print(f"{name}_json: {json.dumps(d)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=28.0, help="check-in interval, seconds")
    ap.add_argument("--kill-agents", type=int, default=2_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--ramp", type=float, default=30.0)
    ap.add_argument("--telemetry-share", type=float, default=1.0)
    ap.add_argument("--pg", default=os.environ.get("FLEETWARD_TEST_PG_URL"))
    ap.add_argument("--only", default="kill,sqlite,pg")
    ap.add_argument("--client-processes", type=int, default=2)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fw-capacity-"))
    try:
        _run(args, out)
    finally:  # databases, TUF repositories, server logs: ~40 MB a run
        shutil.rmtree(out, ignore_errors=True)


def _cpu_ticks() -> tuple[int, int, int]:
    """(steal, busy, total) jiffies of all CPUs since boot (/proc/stat; zeros elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0, 0, 0
    t = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
    # user nice system idle iowait irq softirq steal: busy is what ran on this machine's CPUs
    return t[7], t[0] + t[1] + t[2] + t[5] + t[6], sum(t)


def _part(name: str, run: Callable[[], FleetResult]) -> None:
    steal0, busy0, total0 = _cpu_ticks()
    r = run()
    steal1, busy1, total1 = _cpu_ticks()
    _print(name, r)
    if total1 > total0:
        cores = os.cpu_count() or 1
        print(
            f"{name}_machine: steal {100 * (steal1 - steal0) / (total1 - total0):.1f} % of CPU "
            f"time; every process together {cores * (busy1 - busy0) / (total1 - total0):.2f} "
            f"cores over the whole part (start-up and ramp included)"
        )


def _run(args: argparse.Namespace, out: Path) -> None:
    only = set(args.only.split(","))
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if "kill" in only:
        kill = FleetConfig(
            agents=args.kill_agents,
            interval_s=300.0,  # the default interval: without push, minutes
            ramp_s=min(args.ramp, 20.0),
            duration_s=15.0,
            kill_switch_at_s=5.0,
            telemetry_share=0.0,
            client_processes=args.client_processes,
        )
        _part("kill", lambda: run_fleet(kill, out / "kill"))
    base = FleetConfig(
        agents=args.agents,
        interval_s=args.interval,
        ramp_s=args.ramp,
        duration_s=args.seconds,
        telemetry_share=args.telemetry_share,
        client_processes=args.client_processes,
    )
    if "sqlite" in only:
        _part("sqlite_1", lambda: run_fleet(base, out / "sqlite"))
    if "pg" in only:
        if not args.pg:
            print("pg_2: skipped (no --pg URL and FLEETWARD_TEST_PG_URL unset)")
        else:
            import psycopg

            name = "fw_capacity_" + os.urandom(4).hex()
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            try:
                url = args.pg.rpartition("/")[0] + "/" + name
                cfg = FleetConfig(**{**_fields(base), "db": url, "replicas": 2})
                _part("pg_2", lambda: run_fleet(cfg, out / "pg"))
            finally:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"load_average_after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _fields(config: FleetConfig) -> dict[str, object]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


if __name__ == "__main__":
    main()
