"""Kill-switch propagation across backend replicas, measured with simulated agents.

Why: a replica announces a policy version only once the TUF repository it serves carries it
(`backend.server.replica`), so the notice an agent hears on replica B waits for replica A's signing,
not just its COMMIT. This measures what that costs end to end: `--agents` simulated agents
(`loadtest.agents.run_fleet`, the agent's own wire code) hold push channels spread over two
`backend serve` replicas; the operator sets mode `off` through the first; per agent, the time
from the API call to its check-in answering `off` (its effective mode) and to its push notice,
p50/p99/max. Once on one SQLite file, and on PostgreSQL with `--pg URL` (or
`FLEETWARD_TEST_PG_URL`). Core count and load average are printed beside the figures.

    .venv/bin/python benchmarks/replica_kill_bench.py [--agents 1000] [--replicas 2]
        [--pg postgresql://...] [--only sqlite,pg]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.agents import FleetConfig, FleetResult, run_fleet  # noqa: E402


def _print(name: str, r: FleetResult) -> None:
    k, p = r.kill_ms, r.push_ms
    print(
        f"{name}: {r.config.agents} agents on {r.config.replicas} replicas; "
        f"{r.kill_reached}/{r.config.agents} off; effective mode p50/p99/max "
        f"{k['p50']:.0f}/{k['p99']:.0f}/{k['max']:.0f} ms; push notice p50/p99 "
        f"{p['p50']:.0f}/{p['p99']:.0f} ms; the call itself {r.kill_call_ms} ms; "
        f"errors {sum(r.errors.values())} {r.errors or ''}; load average "
        f"{', '.join(f'{x:.1f}' for x in r.load_average)}"
    )


def _config(args: argparse.Namespace, db: str | None) -> FleetConfig:
    return FleetConfig(
        agents=args.agents,
        interval_s=300.0,  # the default check-in interval: without push, minutes
        ramp_s=10.0,
        duration_s=12.0,
        kill_switch_at_s=4.0,
        telemetry_share=0.0,
        replicas=args.replicas,
        db=db,
    )


def main() -> None:
    """Parse the options, run each store's round, print one line per round."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--pg", default=os.environ.get("FLEETWARD_TEST_PG_URL"))
    ap.add_argument("--only", default="sqlite,pg")
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    out = Path(tempfile.mkdtemp(prefix="replica-kill-"))
    try:
        if "sqlite" in only:
            _print("sqlite", run_fleet(_config(args, None), out / "sqlite"))
        if "pg" in only and args.pg:
            import psycopg

            name = "fw_replica_kill_" + os.urandom(4).hex()
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            try:
                url = args.pg.rpartition("/")[0] + "/" + name
                _print("postgresql", run_fleet(_config(args, url), out / "pg"))
            finally:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        elif "pg" in only:
            print("postgresql: skipped (no --pg URL and FLEETWARD_TEST_PG_URL unset)")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"load_average_after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
