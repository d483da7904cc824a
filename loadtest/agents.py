"""Agents at scale: N simulated endpoints on asyncio, speaking the agent's own wire code.

Why not locust: a locust user is a greenlet that blocks between requests; a fleet of 10,000
agents each holding a push channel needs one cheap coroutine per agent. Each simulated agent:

- holds the push channel (`agent.update.push.push_request` / `parse_events`, the daemon's parser),
  reconnecting with the agent's own jittered backoff (`agent.update.push.backoff_s`);
- checks in every `interval_s` +- `jitter` (first one at a random phase, so the fleet is
  spread), conditionally (`agent.telemetry.checkin_request` with the last ETag, 304 when
  unchanged, `parse_checkin` otherwise), and at once when a notice names a newer version;
- after a share (`telemetry_share`) of its check-ins sends a telemetry batch built with
  `agent.telemetry.TelemetryEvent` / `encode_batch` (Zipf-popular samples, a feature vector
  with a sample the agent reports for the first time).

The transport is one aiohttp session per client process (the `[load]` extra): the bytes
sent and the answers parsed are the agent's own, but httpx's per-request CPU (~1 ms: h11, anyio,
httpcore's pool scan) had made the client, not the server, the thing measured.

An optional operator flips the kill switch at `kill_switch_at_s` and each agent records when
its notice arrived and when its effective mode (its check-in's answer) became `off`.

`run_fleet` starts a local backend (one or more `backend serve` replicas on one SQLite file or
one PostgreSQL URL, agents spread over them round-robin as behind a load balancer) or uses a
given host, and reports check-in p50/p99, the rate, push and kill-switch latencies, errors,
and the server processes' CPU and RSS (read from /proc) apart from this client's own.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import os
import random
import resource
import ssl
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from agent.features import VECTOR_LENGTH
from agent.telemetry import (
    CONTENT_TYPE,
    Credentials,
    TelemetryEvent,
    checkin_request,
    encode_batch,
    parse_checkin,
)
from agent.update.push import PushConfig, backoff_s, parse_events, push_request
from loadtest._clock import monotonic_s, utc_now
from loadtest._wire import synthetic_events
from loadtest.run import LoadtestError

if TYPE_CHECKING:  # the `[load]` extra; imported when agents run
    import aiohttp

__all__ = ["FleetConfig", "FleetResult", "ProcessUsage", "percentile", "run_fleet"]

_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """One run of simulated agents (defaults: a small, quick fleet slice).

    Attributes:
        agents: simulated endpoints (1..20000).
        duration_s: how long they run after the last one connected.
        interval_s: mean seconds between an agent's check-ins (+- `jitter`, a fraction).
        ramp_s: agents connect evenly over this long (a fleet never starts at one instant).
        telemetry_share: share of check-ins followed by a telemetry batch.
        batch_events: events per batch, uniform in [lo, hi].
        kill_switch_at_s: seconds after the ramp at which the operator sets mode `off`
            fleet-wide (None: never).
        push: hold push channels (False: polling only, for comparison).
        orgs: orgs the agents are spread over.
        db: local backend's store: a `postgresql://` URL, or None for a SQLite file.
        replicas: local `backend serve` processes on that store.
        client_processes: processes the simulated agents are spread over (one event loop
            each; the client must not be the bottleneck it measures).
        host, admin_token: a running backend instead of a local one.
    """

    agents: int = 100
    duration_s: float = 20.0
    interval_s: float = 30.0
    jitter: float = 0.1
    ramp_s: float = 5.0
    telemetry_share: float = 1.0
    batch_events: tuple[int, int] = (1, 20)
    kill_switch_at_s: float | None = None
    push: bool = True
    orgs: int = 4
    seed: int = 7
    db: str | None = None
    replicas: int = 1
    host: str | None = None
    admin_token: str | None = None
    client_processes: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.agents <= 20_000 or not 1 <= self.orgs <= 1000:
            raise ValueError("agents must be 1..20000 and orgs 1..1000")
        if not 0 < self.duration_s <= 24 * 3600 or not 0 <= self.ramp_s <= 3600:
            raise ValueError("duration must be in (0, 1 day] and ramp in [0, 1 h]")
        if not 0.01 <= self.interval_s <= 3600 or not 0 <= self.jitter < 1:
            raise ValueError("interval must be 0.01..3600 s and jitter in [0, 1)")
        if not 0 <= self.telemetry_share <= 1:
            raise ValueError("telemetry_share must be in [0, 1]")
        if not 1 <= self.batch_events[0] <= self.batch_events[1] <= 10_000:
            raise ValueError("batch_events must be 1 <= lo <= hi <= 10000")
        if not 1 <= self.replicas <= 8 or not 1 <= self.client_processes <= 16:
            raise ValueError("replicas must be 1..8 and client_processes 1..16")
        if self.host is not None and self.admin_token is None:
            raise ValueError("a remote host needs an admin token")
        if self.kill_switch_at_s is not None and not 0 <= self.kill_switch_at_s < self.duration_s:
            raise ValueError("kill_switch_at_s must fall inside the run")


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """CPU seconds and peak resident memory of a set of processes over the run."""

    cpu_s: float
    rss_mb: float

    def cores(self, wall_s: float) -> float:
        """Average cores used over `wall_s`."""
        return self.cpu_s / wall_s if wall_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FleetResult:
    """Figures of one `run_fleet` (latencies in milliseconds)."""

    config: FleetConfig
    wall_s: float
    steady_s: float
    channels_peak: int
    checkins: int
    checkins_steady: int
    checkin_ms: dict[str, float]
    not_modified: int
    telemetry_batches: int
    events: int
    telemetry_ms: dict[str, float]
    errors: dict[str, int]
    push_ms: dict[str, float]
    kill_ms: dict[str, float]
    kill_reached: int
    kill_call_ms: float | None
    server: ProcessUsage | None
    client: ProcessUsage
    server_ms: dict[str, float]
    load_average: tuple[float, float, float]
    cores: int | None = field(default_factory=os.cpu_count)
    database: ProcessUsage | None = None

    @property
    def checkins_per_s(self) -> float:
        """Check-ins per second once every agent had connected."""
        return self.checkins_steady / self.steady_s if self.steady_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "agents": self.config.agents,
            "replicas": self.config.replicas,
            "store": "postgresql" if self.config.db else "sqlite",
            "push": self.config.push,
            "interval_s": self.config.interval_s,
            "telemetry_share": self.config.telemetry_share,
            "cores": self.cores,
            "load_average": list(self.load_average),
            "wall_s": round(self.wall_s, 1),
            "channels_peak": self.channels_peak,
            "checkins": self.checkins,
            "checkins_per_s": round(self.checkins_per_s, 1),
            "checkin_ms": self.checkin_ms,
            "not_modified": self.not_modified,
            "telemetry_batches": self.telemetry_batches,
            "events": self.events,
            "telemetry_ms": self.telemetry_ms,
            "errors": self.errors,
            "push_ms": self.push_ms,
            "kill_ms": self.kill_ms,
            "kill_reached": self.kill_reached,
            "kill_call_ms": self.kill_call_ms,
            "server_side_ms": self.server_ms,
            "server_cpu_cores": round(self.server.cores(self.wall_s), 2) if self.server else None,
            "server_rss_mb": round(self.server.rss_mb, 1) if self.server else None,
            "client_cpu_cores": round(self.client.cores(self.wall_s), 2),
            "client_rss_mb": round(self.client.rss_mb, 1),
            "database_cpu_cores": round(self.database.cores(self.wall_s), 2)
            if self.database
            else None,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-quantile (0..1) of `values` by the nearest-rank method (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def _summary(values_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(percentile(ms, 0.50), 1),
        "p99": round(percentile(ms, 0.99), 1),
        "max": round(max(ms), 1) if ms else 0.0,
        "n": float(len(ms)),
    }


# --- the simulated agents -----------------------------------------------------------------


@dataclass
class _Stats:
    checkin_s: list[float] = field(default_factory=list)
    checkin_at: list[float] = field(default_factory=list)
    telemetry_s: list[float] = field(default_factory=list)
    not_modified: int = 0
    batches: int = 0
    events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    open_channels: int = 0
    channels_peak: int = 0
    heard: list[tuple[float, int]] = field(default_factory=list)  # (when, version) notices
    off_at: list[float] = field(default_factory=list)  # when an agent's check-in said "off"
    cpu_s: float = 0.0

    def merge(self, other: _Stats) -> None:
        """Fold another client process's figures into these."""
        self.checkin_s += other.checkin_s
        self.checkin_at += other.checkin_at
        self.telemetry_s += other.telemetry_s
        self.not_modified += other.not_modified
        self.batches += other.batches
        self.events += other.events
        self.errors.update(other.errors)
        self.channels_peak += other.channels_peak
        self.heard += other.heard
        self.off_at += other.off_at
        self.cpu_s += other.cpu_s


_VECTORS: list[bytes] = []


def _vector(rng: random.Random) -> bytes:
    if not _VECTORS:
        seeded = random.Random(0)  # noqa: S311 - synthetic payload
        _VECTORS.extend(
            array.array("f", (seeded.random() for _ in range(VECTOR_LENGTH))).tobytes()
            for _ in range(16)
        )
    return _VECTORS[rng.randrange(len(_VECTORS))]


@dataclass(frozen=True, slots=True)
class _Transport:
    """The one aiohttp session a client process's agents share, and what it raises."""

    session: aiohttp.ClientSession
    errors: tuple[type[BaseException], ...]
    stream_timeout: aiohttp.ClientTimeout


class _SimAgent:
    """One simulated endpoint: its push channel, its check-ins and its telemetry.

    The bytes it sends and the answers it parses are the agent's own (`push_request`,
    `parse_events`, `checkin_request`, `parse_checkin`, `encode_batch`); only the transport
    is aiohttp's, shared by every agent of the process (see `_drive`).
    """

    def __init__(
        self,
        creds: Credentials,
        transport: _Transport,
        config: FleetConfig,
        stats: _Stats,
        rng: random.Random,
    ) -> None:
        self.creds, self.config, self.stats, self.rng = creds, config, stats, rng
        self.session, self.errors = transport.session, transport.errors
        self.stream_timeout = transport.stream_timeout
        self.etag: str | None = None
        self.version = 0
        self.mode = "enforce"
        self.wake = asyncio.Event()
        self.seen: set[str] = set()
        self.telemetry_url = creds.backend_url + "/v1/telemetry"
        self.telemetry_headers = {
            "authorization": f"Bearer {creds.token}",
            "content-type": CONTENT_TYPE,
        }

    async def run(self, until: float) -> None:
        tasks = [asyncio.create_task(self._checkins(until))]
        if self.config.push:
            tasks.append(asyncio.create_task(self._push(until)))
        try:
            await tasks[0]
        finally:
            for t in tasks[1:]:
                t.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)

    async def _push(self, until: float) -> None:
        url, headers = push_request(self.creds.backend_url, self.creds.token)
        failures = 0
        config = PushConfig()
        while monotonic_s() < until:
            counted = False
            try:
                async with self.session.get(url, headers=headers, timeout=self.stream_timeout) as r:
                    if r.status != 200:
                        self.stats.errors[f"push HTTP {r.status}"] += 1
                    else:
                        failures, counted = 0, True
                        self.stats.open_channels += 1
                        self.stats.channels_peak = max(
                            self.stats.channels_peak, self.stats.open_channels
                        )
                        block: list[str] = []
                        async for raw in r.content:  # one SSE line at a time
                            line = raw.decode("utf-8", "replace").rstrip("\r\n")
                            block.append(line)
                            if line == "":
                                self._heard(list(parse_events(block)))
                                block = []
            except self.errors as exc:
                self.stats.errors[f"push {type(exc).__name__}"] += 1
            finally:
                if counted:
                    self.stats.open_channels -= 1
            failures += 1
            await asyncio.sleep(backoff_s(failures, config, self.rng))

    def _heard(self, versions: list[int]) -> None:
        for v in versions:
            if v > self.version:
                self.stats.heard.append((monotonic_s(), v))
                self.wake.set()

    async def _checkins(self, until: float) -> None:
        interval, jitter = self.config.interval_s, self.config.jitter
        delay = self.rng.uniform(0, interval)  # a random phase: the fleet is spread
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(delay, until - monotonic_s()))):
                    await self.wake.wait()
            if monotonic_s() >= until:
                return
            self.wake.clear()
            await self._check_in()
            if self.rng.random() < self.config.telemetry_share:
                await self._telemetry()
            delay = interval * self.rng.uniform(1 - jitter, 1 + jitter)

    async def _check_in(self) -> None:
        url, headers = checkin_request(self.creds, self.etag)
        started = monotonic_s()
        try:
            async with self.session.get(url, headers=headers) as r:
                status, body = r.status, await r.read()
                etag, media = r.headers.get("etag"), r.headers.get("content-type", "")
        except self.errors as exc:
            self.stats.errors[f"check-in {type(exc).__name__}"] += 1
            return
        done = monotonic_s()
        if status == 304:
            self.stats.not_modified += 1
        elif status == 200:
            # the agent's own parser reads an httpx.Response: build one from the bytes read
            info = parse_checkin(httpx.Response(200, headers={"content-type": media}, content=body))
            self.etag, self.version = etag, info.policy_version
            if info.mode == "off" and self.mode != "off":
                self.stats.off_at.append(done)
            self.mode = info.mode
        else:
            self.stats.errors[f"check-in HTTP {status}"] += 1
            return
        self.stats.checkin_s.append(done - started)
        self.stats.checkin_at.append(done)

    def _events(self) -> list[TelemetryEvent]:
        lo, hi = self.config.batch_events
        return synthetic_events(
            org_id=self.creds.org_id, endpoint_id=self.creds.endpoint_id, mode=self.mode,
            count=self.rng.randint(lo, hi), now_ms=TelemetryEvent.ms(utc_now()), rng=self.rng,
            seen=self.seen, vector=_vector,
        )  # fmt: skip

    async def _telemetry(self) -> None:
        events = self._events()
        raw = encode_batch(events)
        started = monotonic_s()
        try:
            async with self.session.post(
                self.telemetry_url, data=raw, headers=self.telemetry_headers
            ) as r:
                status = r.status
                await r.read()
        except self.errors as exc:
            self.stats.errors[f"telemetry {type(exc).__name__}"] += 1
            return
        if status != 200:
            self.stats.errors[f"telemetry HTTP {status}"] += 1
            return
        self.stats.telemetry_s.append(monotonic_s() - started)
        self.stats.batches += 1
        self.stats.events += len(events)


# --- the shell: backend processes, enrollment, /proc ------------------------------------------


@dataclass
class _Backend:
    urls: list[str]
    admin_token: str
    creds: list[Credentials]
    procs: list[subprocess.Popen[bytes]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_local(work: Path, config: FleetConfig) -> _Backend:
    from agent.decision import Mode
    from backend import admin
    from backend.store import open_store
    from model_store.repository import init_repository

    target = config.db or str(work / "backend.db")
    repo = work / "repo"
    now = utc_now()
    store = open_store(target, synchronous="NORMAL")
    try:
        orgs = [store.create_org(f"fleet-{i}", now).org_id for i in range(config.orgs)]
        token = store.create_admin_token(now)
        init_repository(repo, now=now)
        admin.set_mode(
            store,  # type: ignore[arg-type]  # both stores share the public methods
            admin.repository_publisher(repo),
            Mode.ENFORCE,
            org_id=None,
            now=now,
        )
        enrolled = [store.enroll(orgs[i % len(orgs)], now) for i in range(config.agents)]
    finally:
        store.close()
    ports = [_free_port() for _ in range(config.replicas)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = []
    env = {**os.environ, "PYTHONPATH": str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for i, port in enumerate(ports):
        cmd = [sys.executable, "-m", "backend", "serve", "--db", target, "--repo", str(repo)]
        cmd += ["--port", str(port), "--synchronous", "NORMAL", "--rollout-tick-s", "0"]
        with (work / f"server-{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
            )
    creds = [
        Credentials(urls[i % len(urls)], e.org_id, e.endpoint_id, e.token)
        for i, e in enumerate(enrolled)
    ]
    backend = _Backend(urls, token, creds, procs)
    try:
        _wait_healthy(backend, work)
    except BaseException:
        _stop(backend)
        raise
    return backend


def _wait_healthy(backend: _Backend, work: Path) -> None:
    started = monotonic_s()
    pending = set(backend.urls)
    while pending:
        if monotonic_s() - started > 60:
            raise LoadtestError(f"the backend did not answer /healthz within 60 s; see {work}")
        for proc in backend.procs:
            if proc.poll() is not None:
                raise LoadtestError(f"a backend exited with {proc.returncode}; see {work}")
        for url in sorted(pending):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    pending.discard(url)
        if pending:
            with contextlib.suppress(subprocess.TimeoutExpired):
                backend.procs[0].wait(timeout=0.1)


def _remote(config: FleetConfig) -> _Backend:
    assert config.host is not None and config.admin_token is not None
    url = config.host.rstrip("/")
    admin = {"authorization": f"Bearer {config.admin_token}"}
    creds = []
    with httpx.Client(timeout=30) as client:
        try:
            orgs = []
            for i in range(config.orgs):
                r = client.post(url + "/v1/admin/orgs", json={"name": f"fleet-{i}"}, headers=admin)
                if r.status_code != 201:
                    raise LoadtestError(f"creating an org: HTTP {r.status_code} {r.text[:200]}")
                orgs.append(r.json()["enroll_token"])
            for i in range(config.agents):
                r = client.post(
                    url + "/v1/enroll", headers={"authorization": f"Bearer {orgs[i % len(orgs)]}"}
                )
                if r.status_code != 201:
                    raise LoadtestError(f"enrolling: HTTP {r.status_code} {r.text[:200]}")
                b = r.json()
                creds.append(Credentials(url, b["org_id"], b["endpoint_id"], b["token"]))
        except httpx.HTTPError as exc:
            raise LoadtestError(f"cannot reach {url}: {exc}") from None
    return _Backend([url], config.admin_token, creds, [])


def _stop(backend: _Backend) -> None:
    for proc in backend.procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in backend.procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bucket_quantile(text: str, metric: str, route: str | None, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding the `q`-quantile, from /metrics."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(metric + "_bucket{"):
            continue
        if route is not None and f'route="{route}"' not in line:
            continue
        le = line.split('le="', 1)[1].split('"', 1)[0]
        bound = float("inf") if le == "+Inf" else float(le)
        counts[bound] = counts.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    if not counts or counts[max(counts)] == 0:
        return None
    total = counts[max(counts)]
    for bound in sorted(counts):
        if counts[bound] >= q * total:
            return bound * 1000
    return None


def _server_side(urls: Sequence[str]) -> dict[str, float]:
    """Server-side latencies summed over replicas (bucket bounds; the client's CPU excluded)."""
    text = ""
    for url in urls:
        with contextlib.suppress(httpx.HTTPError):
            text += httpx.get(url + "/metrics", timeout=10).text + "\n"
    out = {}
    for name, metric, route in (
        ("checkin", "fleetward_http_request_seconds", "/v1/checkin"),
        ("telemetry", "fleetward_http_request_seconds", "/v1/telemetry"),
        ("push_delivery", "fleetward_push_delivery_seconds", None),
    ):
        for q in (0.5, 0.99):
            v = _bucket_quantile(text, metric, route, q)
            if v is not None:
                out[f"{name}_p{round(q * 100)}_le"] = v
    return out


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set
            return int(line.split()[1]) / 1024
    return 0.0


def _database_pids(url: str) -> dict[int, tuple[str, str | None]]:
    """PostgreSQL's processes (pid: backend type, database), when the server is this machine's."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pid, backend_type, datname FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid()"
            ).fetchall()
    except psycopg.Error:
        return {}
    return {int(pid): (str(kind), name) for pid, kind, name in rows}


def _database_cpu_s(url: str, since: dict[int, float] | None) -> tuple[float, dict[int, float]]:
    """CPU seconds of the run's PostgreSQL processes, read from /proc.

    Its database's backends whole, and the server's shared processes (WAL writer,
    checkpointer, ...) counted from `since`. Returns (CPU seconds, the shared processes'
    CPU now: the next call's `since`).
    """
    name = url.rpartition("/")[2].partition("?")[0]
    shared: dict[int, float] = {}
    total = 0.0
    for pid, (kind, datname) in _database_pids(url).items():
        try:
            cpu = _proc_cpu_s(pid)
        except OSError:  # gone, or another machine's server
            continue
        if kind == "client backend":
            total += cpu if datname == name else 0.0
        else:
            shared[pid] = cpu
            total += cpu - since.get(pid, cpu) if since is not None else 0.0
    return total, shared


def _children_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _client_usage() -> ProcessUsage:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessUsage(ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


# --- the run ------------------------------------------------------------------------------


def _operator(backend: _Backend, at: float) -> tuple[float, int, float]:
    """Set mode `off` fleet-wide at monotonic time `at`: (call began, new version, call took).

    Raises:
        LoadtestError: the backend refused the change (its status and answer in the message).
    """
    with httpx.Client(timeout=60, trust_env=False) as client:
        wait = at - monotonic_s()
        if wait > 0:
            client.get(backend.urls[0] + "/healthz")  # connect first: time the change only
            wait = at - monotonic_s()
            if wait > 0:
                import time

                time.sleep(wait)
        began = monotonic_s()
        r = client.put(
            backend.urls[0] + "/v1/admin/mode",
            json={"mode": "off"},
            headers={"authorization": f"Bearer {backend.admin_token}"},
        )
    took = monotonic_s() - began
    if r.status_code != 200:
        raise LoadtestError(
            f"the operator's kill switch call was refused: HTTP {r.status_code} {r.text[:200]}"
        )
    return (began, int(r.json()["version"]), took)


async def _drive(
    creds: Sequence[Credentials], config: FleetConfig, started: float, until: float
) -> _Stats:
    stats = _Stats()
    rng = random.Random(f"{config.seed}:{creds[0].endpoint_id if creds else ''}")  # noqa: S311
    import aiohttp

    # One session for every agent of this process: aiohttp's pool hands out a kept-alive
    # connection in O(1) and parses with its C parser. httpx (h11 and anyio on every call,
    # httpcore scanning its pool) cost ~1 ms of CPU a request, so the client, not the server,
    # was what the bench measured (benchmarks/README.md, Fleet capacity).
    connector = aiohttp.TCPConnector(
        limit=0,  # no cap: every agent's push channel holds a connection of its own
        # The server closes a connection idle 30 s; a request written on it as it closes is
        # reset. Close ours at 15 s: the margin must hold while a loaded client lags seconds.
        keepalive_timeout=15.0,
        ssl=ssl.create_default_context(),  # built once (loading the CA store costs ~0.1 s)
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
    )
    transport = _Transport(
        session,
        (aiohttp.ClientError, TimeoutError, OSError),
        aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=None),
    )
    agents = [
        _SimAgent(c, transport, config, stats, random.Random(rng.random()))  # noqa: S311
        for c in creds
    ]
    # Agents, their tasks and connections live until the end. Full collections walked them all
    # again and again for nothing (they found no garbage): pauses of 50-360 ms that grew with
    # the fleet and landed in the check-in p99. Frozen (as they come, through the ramp), they
    # are not walked; what the run makes and drops is still collected.
    gc.freeze()
    tasks = []
    try:
        step = config.ramp_s / len(agents) if agents else 0
        for i, agent in enumerate(agents):
            tasks.append(asyncio.create_task(agent.run(until)))
            if step and i % 10 == 9:
                await asyncio.sleep(max(0.0, started + step * (i + 1) - monotonic_s()))
            if i % 500 == 499:
                gc.freeze()
        gc.freeze()
        await asyncio.gather(*tasks)
    finally:
        await session.close()
    return stats


def _shard(
    creds: Sequence[Credentials], config: FleetConfig, started: float, until: float
) -> _Stats:
    """One client process's agents (run in a forked worker, or inline for one process)."""
    before = _client_usage().cpu_s
    try:
        import uvloop

        stats = uvloop.run(_drive(creds, config, started, until))
    except ImportError:
        stats = asyncio.run(_drive(creds, config, started, until))
    stats.cpu_s = _client_usage().cpu_s - before
    return stats


def _after(times: Sequence[float], t0: float) -> list[float]:
    return [t - t0 for t in times if t >= t0]


def run_fleet(config: FleetConfig, out: Path) -> FleetResult:
    """Run simulated agents against a local (or given) backend and measure it.

    Raises:
        LoadtestError: the backend could not start or be reached.
    """
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-", dir=out))
    backend = _remote(config) if config.host else _start_local(work, config)
    server0 = [_proc_cpu_s(p.pid) for p in backend.procs]
    local_pg = config.db is not None and config.host is None
    database0 = _database_cpu_s(config.db, None)[1] if local_pg and config.db else {}
    started = monotonic_s() + 0.5
    steady_from = started + config.ramp_s
    until = steady_from + config.duration_s
    k = config.client_processes
    shards = [backend.creds[i::k] for i in range(k)]
    kill: tuple[float, int, float] | None = None
    try:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("fork")  # the shards share nothing but the clock
        with concurrent.futures.ProcessPoolExecutor(k, mp_context=ctx) as pool:
            futures = [pool.submit(_shard, shard, config, started, until) for shard in shards]
            if config.kill_switch_at_s is not None:
                kill = _operator(backend, steady_from + config.kill_switch_at_s)
            stats = _Stats()
            for future in futures:
                stats.merge(future.result())
        wall = monotonic_s() - started
        server = (
            ProcessUsage(
                sum(_proc_cpu_s(p.pid) for p in backend.procs) - sum(server0),
                sum(_proc_rss_mb(p.pid) for p in backend.procs),
            )
            if backend.procs
            else None
        )
        server_ms = _server_side(backend.urls)
        # the backends live as long as the servers' connections: read them before the stop
        database = (
            ProcessUsage(_database_cpu_s(config.db, database0)[0], 0.0)
            if local_pg and config.db
            else None
        )
    finally:
        _stop(backend)
    steady = [
        s
        for s, at in zip(stats.checkin_s, stats.checkin_at, strict=True)
        if steady_from <= at <= until
    ]
    return FleetResult(
        config=config,
        wall_s=wall,
        steady_s=until - steady_from,
        channels_peak=stats.channels_peak,
        checkins=len(stats.checkin_s),
        checkins_steady=len(steady),
        checkin_ms=_summary(steady or stats.checkin_s),
        not_modified=stats.not_modified,
        telemetry_batches=stats.batches,
        events=stats.events,
        telemetry_ms=_summary(stats.telemetry_s),
        errors=dict(stats.errors),
        push_ms=_summary(_after([t for t, v in stats.heard if kill and v >= kill[1]], kill[0]))
        if kill
        else _summary([]),
        kill_ms=_summary(_after(stats.off_at, kill[0])) if kill else _summary([]),
        kill_reached=len(_after(stats.off_at, kill[0])) if kill else 0,
        kill_call_ms=round(kill[2] * 1000, 1) if kill else None,
        server=server,
        server_ms=server_ms,
        client=ProcessUsage(stats.cpu_s, max(_client_usage().rss_mb, _children_rss_mb())),
        load_average=os.getloadavg(),
        database=database,
    )
