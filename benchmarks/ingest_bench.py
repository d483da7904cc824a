"""Ingest and check-in benchmark against the real server over loopback.

Starts `python -m backend serve` as a subprocess, sends pre-encoded msgpack batches from several
client processes, then runs 1000 concurrent simulated agents (asyncio streams on uvloop)
checking in; `--checkin-during-ingest` runs them beside the ingest clients too. The 1-minute load
average (start of ingest / end of ingest / after check-ins) is printed because on a shared
2-core machine every figure moves with it.
Prints one `name: value unit` per line; with `--store both` one column per store,
`name: sqlite | postgres unit`, each run against a fresh database.

    .venv/bin/python benchmarks/ingest_bench.py [--seconds 10] [--clients 2] [--batch 2000]
        [--store sqlite|postgres|both] [--pg-url postgresql://...] [--checkin-during-ingest]
        [--endpoints-per-client 50]

`--endpoints-per-client N` makes each client send for N endpoints of its org in turn, so rows
already counted for one endpoint get another's batch: the distinct-endpoint sketch merge
(`fw_merge`) runs on the upsert path (`max_distinct_endpoints_per_row` shows it did).

`--pg-url` (default `$FLEETWARD_TEST_PG_URL`, as `.ci/postgres.sh` prints) names a server; the
benchmark creates a throwaway database on it and drops it afterwards.

Synthetic telemetry: each client is one endpoint's worth of batches drawn from a Zipf(1.2)
catalog of 200k samples over 20 orgs; 2 % of events carry their feature vector (an agent sends a
sample's vector once, and popular samples were already reported).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.decision import Reason, Verdict  # noqa: E402
from agent.features import VECTOR_LENGTH  # noqa: E402
from agent.telemetry import TelemetryEvent, encode_batch  # noqa: E402
from backend.store import open_store  # noqa: E402

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
SAMPLES = 200_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_batches(org: str, endpoint: str, n: int, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    vector = np.ones(VECTOR_LENGTH, dtype=np.float32).tobytes()
    verdicts = (
        [Verdict.ALLOW] * 90
        + [Verdict.BLOCK] * 4
        + [Verdict.DETECT] * 3
        + [Verdict.ALLOWLISTED] * 3
    )
    out = []
    t0 = TelemetryEvent.ms(NOW)
    for b in range(n):
        ranks = np.minimum(rng.zipf(1.2, size), SAMPLES) - 1
        events = [
            TelemetryEvent(
                org,
                endpoint,
                f"{int(r):064x}",
                3,
                0.25,
                verdicts[int(r) % 100],
                Reason.SCORE_BELOW,
                t0 + b * 1000 + i,
                "static-v1",
                vector if rng.random() < 0.02 else None,
            )
            for i, r in enumerate(ranks)
        ]
        out.append(encode_batch(events))
    return out


def client_proc(
    url: str,
    endpoints: list[tuple[str, str, str]],
    args: tuple[int, int, int, float],
    q: mp.Queue[tuple[str, int, int, list[float]]],
) -> None:
    """Send batches for `endpoints` ((token, org, endpoint id) each) in turn until time is up."""
    n, size, seed, seconds = args
    per = max(1, n // len(endpoints) + 1)
    queues = [
        (
            {"authorization": f"Bearer {token}", "content-type": "application/msgpack"},
            make_batches(org, endpoint, per, size, seed * 1000 + k),
        )
        for k, (token, org, endpoint) in enumerate(endpoints)
    ]
    work = [(h, b[i]) for i in range(per) for h, b in queues][:n]
    lat, sent_events, sent_bytes = [], 0, 0
    with httpx.Client(timeout=60) as client:
        q.put(("ready", 0, 0, []))
        start = time.perf_counter()
        for headers, raw in work:
            if time.perf_counter() - start > seconds:
                break
            t = time.perf_counter()
            r = client.post(url + "/v1/telemetry", content=raw, headers=headers)
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
            sent_events += size
            sent_bytes += len(raw)
        q.put(("done", sent_events, sent_bytes, lat))


async def checkins(url: str, tokens: list[str], seconds: float) -> list[float]:
    """1000 agents, each on its own keep-alive connection, checking in about once a second.

    A minimal HTTP/1.1 client on asyncio streams: httpx's async pool spends more CPU per
    request than the server at this concurrency, and would measure itself.
    """
    host, port = url.split("//")[1].split(":")
    lat: list[float] = []
    end = time.perf_counter() + seconds

    async def agent(token: str, rng: random.Random) -> None:
        await asyncio.sleep(rng.random())
        reader, writer = await asyncio.open_connection(host, int(port))
        request = (
            f"GET /v1/checkin HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\r\n"
        ).encode()
        while time.perf_counter() < end:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.sleep(0.5 + rng.random())
        writer.close()

    await asyncio.gather(*(agent(t, random.Random(i)) for i, t in enumerate(tokens)))
    return lat


def run_checkins(url: str, tokens: list[str], seconds: float) -> list[float]:
    """`checkins` on uvloop when installed (the [backend] extra): the client's own loop
    overhead then stays well below the server's, so the figure is the server's."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - depends on the install
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(checkins(url, tokens, seconds))


def checkin_proc(url: str, tokens: list[str], seconds: float, q: mp.Queue[list[float]]) -> None:
    q.put(run_checkins(url, tokens, seconds))


def server_checkin_p99_ms(url: str) -> float:
    """The server-side p99 of /v1/checkin: the upper bound of the histogram bucket holding it."""
    buckets = []
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("fleetward_http_request_seconds_bucket") and "/v1/checkin" in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    return next((le * 1000 for le, n in buckets if n >= 0.99 * total), float("nan"))


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; NaN elsewhere).

    Unlike wall-clock rates, CPU per event does not move with other load on the machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p)) * 1000


def run_one(target: str, tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    """One server over `target` (SQLite path or postgresql:// URL); the figures it reached."""
    store = open_store(target)
    orgs = [store.create_org(f"org{i}", NOW).org_id for i in range(20)]
    writers = [
        [store.enroll(orgs[i % 20], NOW) for _ in range(args.endpoints_per_client)]
        for i in range(args.clients)
    ]
    agents = [store.enroll(orgs[i % 20], NOW) for i in range(args.agents)]
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend",
            "serve",
            "--db",
            target,
            "--repo",
            str(tmp / "repo"),
            "--port",
            str(port),
            "--synchronous",
            args.synchronous,
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        # enough batches for 300k events/s (the run still ends after `--seconds`)
        n_batches = int(args.seconds * 300_000 / args.batch / args.clients) + 5
        q: mp.Queue[tuple[str, int, int, list[float]]] = mp.Queue()
        procs = [
            mp.Process(
                target=client_proc,
                args=(
                    url,
                    [(e.token, e.org_id, e.endpoint_id) for e in w],
                    (n_batches, args.batch, i, args.seconds),
                    q,
                ),
            )
            for i, w in enumerate(writers)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            assert q.get()[0] == "ready"
        load = [os.getloadavg()[0]]
        cpu0 = cpu_s(server.pid)
        start = time.perf_counter()
        if args.checkin_during_ingest:
            cq: mp.Queue[list[float]] = mp.Queue()
            cp = mp.Process(
                target=checkin_proc, args=(url, [a.token for a in agents], args.seconds - 1, cq)
            )
            cp.start()
        results = [q.get() for _ in procs]
        wall = time.perf_counter() - start
        cpu1 = cpu_s(server.pid)
        during: list[float] = []
        if args.checkin_during_ingest:
            during = cq.get()
            cp.join()
        for p in procs:
            p.join()
        load.append(os.getloadavg()[0])
        events = sum(r[1] for r in results)
        raw_bytes = sum(r[2] for r in results)
        lat = [x for r in results for x in r[3]]
        cpu2 = cpu_s(server.pid)
        check = run_checkins(url, [a.token for a in agents], 5.0)
        cpu3 = cpu_s(server.pid)
        server_p99 = server_checkin_p99_ms(url)
        load.append(os.getloadavg()[0])
    finally:
        server.terminate()
        server.wait()
    store = open_store(target)
    stats = store.stats()
    in_aggregates = 0
    most_endpoints = 0
    for chunk in store.iter_aggregates():
        in_aggregates += sum(r.count for r in chunk)
        most_endpoints = max([most_endpoints, *(r.distinct_endpoints for r in chunk)])
    store.close()
    return {
        "events_ingested": (events, "events"),
        "events_in_aggregates": (in_aggregates, "events"),
        "aggregate_rows": (stats.aggregate_rows, "rows"),
        "max_distinct_endpoints_per_row": (most_endpoints, "endpoints"),
        "ingest_events_per_s": (round(events / wall), "events/s"),
        "server_cpu_per_event": (round((cpu1 - cpu0) / events * 1e6, 2), "us"),
        "batch_latency_p50": (round(pct(lat, 50), 1), "ms"),
        "batch_latency_p99": (round(pct(lat, 99), 1), "ms"),
        "checkin_requests": (len(check), "requests"),
        "checkin_p50": (round(pct(check, 50), 1), "ms"),
        "checkin_p99": (round(pct(check, 99), 1), "ms"),
        "checkin_server_p99_at_most": (round(server_p99, 1), "ms"),
        "server_cpu_per_checkin": (round((cpu3 - cpu2) / len(check) * 1e6), "us"),
        "checkin_during_ingest_p50": (round(pct(during, 50), 1) if during else "-", "ms"),
        "checkin_during_ingest_p99": (round(pct(during, 99), 1) if during else "-", "ms"),
        "load_avg_1m_start_ingest_end": ("/".join(f"{x:.1f}" for x in load), ""),
        "raw_msgpack_bytes": (raw_bytes, "bytes"),
        "database_bytes": (stats.database_bytes, "bytes"),
        "compression_ratio": (round(raw_bytes / stats.database_bytes, 1), "x"),
    }


def _pg_database(url: str) -> tuple[str, str]:
    """A fresh database on the server at `url`: (its URL, its name)."""
    import psycopg

    name = "fw_bench_" + os.urandom(4).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name, name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument(
        "--endpoints-per-client",
        type=int,
        default=1,
        help="endpoints each client sends for in turn (>1 exercises the sketch merge)",
    )
    ap.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    ap.add_argument(
        "--checkin-during-ingest",
        action="store_true",
        help="also run the check-in agents while the ingest clients send (lock contention)",
    )
    ap.add_argument("--store", default=None, choices=["sqlite", "postgres", "both"])
    ap.add_argument("--pg-url", default=os.environ.get("FLEETWARD_TEST_PG_URL"))
    args = ap.parse_args()
    which = args.store or ("both" if args.pg_url else "sqlite")
    if which != "sqlite" and not args.pg_url:
        ap.error("--store postgres needs --pg-url or FLEETWARD_TEST_PG_URL")
    stores = ["sqlite", "postgres"] if which == "both" else [which]
    figures: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as where:  # removed afterwards
        tmp = Path(where)
        for kind in stores:
            if kind == "sqlite":
                figures.append(run_one(str(tmp / "bench.db"), tmp, args))
                continue
            import psycopg

            target, name = _pg_database(args.pg_url)
            try:
                figures.append(run_one(target, tmp, args))
            finally:
                with psycopg.connect(args.pg_url, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"cores: {os.cpu_count()}")
    print(f"store: {' | '.join(stores)}")
    print(f"synchronous (sqlite): {args.synchronous}")
    print(f"batch_events: {args.batch} events")
    print(f"client_processes: {args.clients}")
    print(f"endpoints_per_client: {args.endpoints_per_client}")
    print(f"checkin_agents: {args.agents} agents")
    for key in figures[0]:
        values = [f[key] for f in figures]
        unit = values[0][1]  # type: ignore[index]
        print(f"{key}: {' | '.join(str(v[0]) for v in values)} {unit}")  # type: ignore[index]


if __name__ == "__main__":
    main()
