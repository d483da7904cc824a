"""Load-test ladder: the most agents the loopback backend holds with check-in p99 <= 50 ms.

Runs `loadtest.run_loadtest` (locust in a subprocess, the backend in another, both on this
machine) at increasing user counts, each user acting about once a second (check-in, TUF poll,
telemetry batch of 50-400 events, replay), and prints one `name: value unit` per line, the
consistency check of every run included.

    .venv/bin/python benchmarks/loadtest_bench.py [--users 50,100,200,400] [--seconds 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest import LoadtestConfig, run_loadtest  # noqa: E402

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", default="50,100,200,400,800")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--p99-ms", type=float, default=50.0)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fw-loadbench-"))
    print(f"cores: {os.cpu_count()}")
    print(f"run_seconds: {args.seconds:.0f} s")
    held, best_rate = 0, 0.0
    for users in [int(u) for u in args.users.split(",")]:
        config = LoadtestConfig(
            users=users,
            spawn_rate=max(users / 5, 10),
            duration_s=args.seconds,
            processes=args.processes,
        )
        r = run_loadtest(config, out / f"u{users}", now=lambda: NOW)
        c = r.checkin_ms
        ok = c["99"] <= args.p99_ms and r.failures == 0
        print(
            f"users_{users}: check-in p50/p95/p99 {c['50']:.0f}/{c['95']:.0f}/{c['99']:.0f} ms, "
            f"{r.requests / args.seconds:.0f} req/s, {r.failures} errors, "
            f"ingest {r.ingest_events_per_s:.0f} events/s, "
            f"consistent {r.is_consistent}, {'held' if ok else 'not held'}"
        )
        if not r.is_consistent:
            print(f"  mismatches: {r.mismatches}")
        if ok:
            held, best_rate = users, max(best_rate, r.ingest_events_per_s)
        else:
            break
    print(f"max_users_held: {held} users (check-in p99 <= {args.p99_ms:.0f} ms, 0 errors)")
    print(f"sustained_ingest: {best_rate:.0f} events/s")
    print(f"reports: {out}")


if __name__ == "__main__":
    main()
