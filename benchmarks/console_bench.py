"""Server time of the console's overview and per-org pages at fleet scale.

A real SQLite store with `--orgs` organizations and `--endpoints` enrolled endpoints (a share of
them online), `--days` of the rollout gate's daily health rollup per org and model version,
and a policy with per-org overrides and list entries. The real backend app (console mounted)
answers in-process through httpx's ASGI transport, so the time measured is the server's:
routing, session check, queries, plots, templates. Prints p50/p95 per page and the cores.

    python benchmarks/console_bench.py [--orgs 1000] [--endpoints 100000] [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from agent.decision import Mode
from backend import admin
from backend.rollout.service import ArmDayColumns, record_arm_day_columns
from backend.server.app import create_app
from backend.store import Store

NOW = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)
MS_PER_DAY = 86_400_000


def build(db: Path, orgs: int, endpoints: int, days: int, rng: random.Random) -> Store:
    store = Store(db, synchronous="NORMAL")
    ids = [store.create_org(f"org-{i}", NOW).org_id for i in range(orgs)]
    keys = {org_id: key for key, org_id in enumerate(ids, start=1)}
    # heavy-tailed org sizes, the same shape the simulator draws
    weights = [1.0 / (i + 1) ** 0.8 for i in range(orgs)]
    owners = rng.choices(ids, weights=weights, k=endpoints)
    now_ms = int(NOW.timestamp() * 1000)
    rows = [
        (f"ep_{i:012x}", keys[o], NOW.isoformat(),
         now_ms - rng.randrange(0, 6 * 3_600_000) if rng.random() < 0.9 else None)
        for i, o in enumerate(owners)
    ]  # fmt: skip
    with store.write_transaction() as conn:  # enrollment one at a time would take minutes
        conn.executemany(
            "INSERT INTO endpoints (endpoint_id, org, enrolled_at, last_seen_ms) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
    sizes = {o: 0 for o in ids}
    for o in owners:
        sizes[o] += 1
    today = now_ms // MS_PER_DAY
    cols: dict[str, list[object]] = {k: [] for k in ArmDayColumns.__dataclass_fields__}
    for day in range(today - days + 1, today + 1):
        for o in ids:
            for version, share in ((1, 0.8), (2, 0.2)):
                n = int(sizes[o] * share)
                if n == 0:
                    continue
                events = n * rng.randrange(50, 200)
                values = (day, o, version, n, events, events // 500, rng.randrange(0, 2),
                          rng.randrange(0, 3), rng.randrange(0, 2))  # fmt: skip
                for k, v in zip(cols, values, strict=True):
                    cols[k].append(v)
    record_arm_day_columns(store, ArmDayColumns(**cols))  # type: ignore[arg-type]

    def publish(raw: bytes, now: dt.datetime) -> None:  # page reads need no signing
        del raw, now

    admin.assign_model(store, publish, 1, org_id=None, now=NOW)
    for i, o in enumerate(ids[:50]):
        when = NOW - dt.timedelta(hours=50 - i)
        if i % 5 == 0:
            admin.set_mode(store, publish, Mode.DETECT_ONLY, org_id=o, now=when)
        admin.add_list_entry(store, publish, "allowlist", f"{i:064x}", org_id=o, now=when,
                             reason="bench", expires_at=NOW + dt.timedelta(days=7))  # fmt: skip
    return store


async def measure(store: Store, ids: list[str], requests: int) -> dict[str, list[float]]:
    app = create_app(store, None, publish=lambda raw, now: None, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        token = store.create_admin_token(NOW)
        login = await client.get("/console/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert csrf is not None
        r = await client.post("/console/login", data={"token": token, "csrf_token": csrf[1]})
        assert r.status_code == 303, r.text
        out: dict[str, list[float]] = {
            "overview (first)": [], "overview": [], "org page": [], "org page plots (each)": []
        }  # fmt: skip
        for i in range(requests + 1):
            t0 = time.perf_counter()
            r = await client.get("/console/")
            took = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, r.text[:300]
            out["overview (first)" if i == 0 else "overview"].append(took)
        for o in ids[:requests]:  # a different org each time: its plots are drawn fresh
            t0 = time.perf_counter()
            r = await client.get(f"/console/orgs/{o}")
            out["org page"].append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text[:300]
            for key in re.findall(r"/console/plots/([0-9a-f]+)\.svg", r.text):
                t0 = time.perf_counter()
                img = await client.get(f"/console/plots/{key}.svg")
                out["org page plots (each)"].append((time.perf_counter() - t0) * 1000)
                assert img.status_code == 200 and img.headers["content-type"] == "image/svg+xml"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build(Path(tmp) / "backend.db", args.orgs, args.endpoints, args.days, rng)
        print(f"store: {args.orgs:,} orgs, {args.endpoints:,} endpoints, {args.days} days "
              f"(built in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
        ids = store.org_ids()
        rng.shuffle(ids)
        try:
            timings = asyncio.run(measure(store, ids, args.requests))
        finally:
            store.close()
    for page, ms in timings.items():
        if len(ms) == 1:
            print(f"{page}: {ms[0]:.1f} ms")
            continue
        p95 = statistics.quantiles(ms, n=20)[-1]
        print(
            f"{page}: p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms "
            f"(n={len(ms)}{'' if 'plots' in page else '; goal <= 200 ms'})"
        )


if __name__ == "__main__":
    main()
