"""Run a locust load test against a fleetward backend and check that nothing was lost or doubled.

`run_loadtest` is what `fleetward loadtest` calls. Without a host it builds a fresh backend on
loopback (a SQLite store with a few orgs, a TUF repository with a signed policy, and
`python -m backend serve` in a subprocess); with a host it creates the orgs through the admin
API. It then runs `locust --headless` in a subprocess (locust patches the standard library with
gevent, so it never shares a process with fleetward), samples the backend's `/metrics` and
database size once a second, and reads back locust's CSV statistics.

The consistency check (`check_consistency`, pure) compares every acknowledgement the users
recorded with what the backend counts: each acknowledged batch counted once (a replay answered
as a duplicate), per-org aggregate counts equal to the acknowledged events, and, for a local
backend, the stored batch ledger equal to the acknowledged keys. Traffic goes to 127.0.0.1 only
(unless a host is given) and the run is bounded by `duration_s` plus a fixed grace period.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtest._clock import monotonic_s

__all__ = [
    "AckRecord",
    "Counted",
    "LoadtestConfig",
    "LoadtestError",
    "LoadtestResult",
    "Sample",
    "check_consistency",
    "read_acks",
    "run_loadtest",
]

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
_ROOT = Path(__file__).resolve().parents[1]
_GRACE_S = 60.0


class LoadtestError(Exception):
    """The load test could not run (backend did not start, locust failed, bad host)."""


@dataclass(frozen=True, slots=True)
class LoadtestConfig:
    """The traffic shape of one run (defaults are a small, realistic fleet slice).

    `checkin_interval_s` is the mean wait between an agent's actions (check-in, TUF poll,
    telemetry, replay in a 10:5:3:1 mix), varied by +-`jitter`. `batch_events` bounds a batch's
    size. One of the `users` is the operator.
    """

    users: int = 20
    spawn_rate: float = 10.0
    duration_s: float = 60.0
    host: str | None = None
    admin_token: str | None = None
    orgs: int = 4
    seed: int = 7
    checkin_interval_s: float = 1.0
    jitter: float = 0.5
    batch_events: tuple[int, int] = (50, 400)
    operator_interval_s: float = 5.0
    processes: int = 1
    synchronous: str = "FULL"

    def __post_init__(self) -> None:
        if not 2 <= self.users <= 100_000:
            raise ValueError("users must be 2..100000 (one of them is the operator)")
        if not 0 < self.duration_s <= 24 * 3600:
            raise ValueError("duration must be positive and at most a day")
        if not 1 <= self.orgs <= 1000 or not 0 <= self.jitter < 1:
            raise ValueError("orgs must be 1..1000 and jitter in [0, 1)")
        if not 1 <= self.batch_events[0] <= self.batch_events[1] <= 10_000:
            raise ValueError("batch_events must be 1 <= min <= max <= 10000")
        if self.host is not None and self.admin_token is None:
            raise ValueError("a remote host needs an admin token")


@dataclass(frozen=True, slots=True)
class AckRecord:
    """One telemetry response a user saw."""

    org_id: str
    endpoint_id: str
    key: str
    events: int
    replay: bool
    status: int
    duplicate: bool | None
    acked_events: int | None

    @property
    def is_acknowledged(self) -> bool:
        """The backend answered 2xx: the batch is now its responsibility."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Counted:
    """What the backend counts: aggregate events per org, and its ledger when readable."""

    events_by_org: dict[str, int]
    ledger_batches: int | None = None
    ledger_events: int | None = None
    metrics_events: int | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of the run as the backend saw it."""

    t_s: float
    events_ingested: float
    database_bytes: int | None


@dataclass(frozen=True, slots=True)
class LoadtestResult:
    """Figures of one run and the consistency check's verdict (`mismatches` empty when good)."""

    config: LoadtestConfig
    host: str
    requests: int
    failures: int
    checkin_ms: dict[str, float]
    per_route: list[dict[str, Any]]
    events_sent: int
    events_acknowledged: int
    events_counted: int
    batches_acknowledged: int
    replays_acknowledged: int
    ingest_events_per_s: float
    database_bytes: int | None
    samples: list[Sample]
    history: list[dict[str, str]] = field(repr=False)
    mismatches: list[str]

    @property
    def error_rate(self) -> float:
        """Failed requests over all requests."""
        return self.failures / self.requests if self.requests else 0.0

    @property
    def is_consistent(self) -> bool:
        """Nothing lost, nothing doubled."""
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        """The JSON twin of the HTML report."""
        return {
            "users": self.config.users,
            "spawn_rate": self.config.spawn_rate,
            "duration_s": self.config.duration_s,
            "host": self.host,
            "cores": os.cpu_count(),
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": self.error_rate,
            "checkin_ms": self.checkin_ms,
            "per_route": self.per_route,
            "events_sent": self.events_sent,
            "events_acknowledged": self.events_acknowledged,
            "events_counted": self.events_counted,
            "batches_acknowledged": self.batches_acknowledged,
            "replays_acknowledged": self.replays_acknowledged,
            "ingest_events_per_s": self.ingest_events_per_s,
            "database_bytes": self.database_bytes,
            "timeline": [
                {
                    "t_s": s.t_s,
                    "events_ingested": s.events_ingested,
                    "database_bytes": s.database_bytes,
                }
                for s in self.samples
            ],
            "consistent": self.is_consistent,
            "mismatches": self.mismatches,
        }


def read_acks(ack_dir: Path) -> list[AckRecord]:
    """Every acknowledgement line the locust processes wrote under `ack_dir`."""
    out = []
    for path in sorted(ack_dir.glob("acks-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            out.append(
                AckRecord(
                    d["org"],
                    d["endpoint"],
                    d["key"],
                    int(d["events"]),
                    bool(d["replay"]),
                    int(d["status"]),
                    d.get("duplicate"),
                    d.get("acked_events"),
                )
            )
    return out


def check_consistency(acks: Sequence[AckRecord], counted: Counted) -> list[str]:
    """Compare acknowledgements with the backend's counts; one line per mismatch.

    Acknowledged events are the events of each distinct acknowledged (endpoint, key), counted
    once however many times it was replayed. A key answered "not a duplicate" twice was doubled.
    """
    problems: list[str] = []
    first_count: dict[tuple[str, str], int] = {}
    fresh: dict[tuple[str, str], int] = defaultdict(int)
    org_of: dict[tuple[str, str], str] = {}
    for a in acks:
        if not a.is_acknowledged:
            continue
        k = (a.endpoint_id, a.key)
        org_of[k] = a.org_id
        first_count.setdefault(k, a.events)
        if a.acked_events is not None and a.acked_events != a.events:
            problems.append(
                f"batch {a.key}: sent {a.events} events, backend acknowledged {a.acked_events}"
            )
        if a.duplicate is False:
            fresh[k] += 1
    doubled = [k for k, n in fresh.items() if n > 1]
    if doubled:
        problems.append(
            f"doubled: {len(doubled)} batches counted as new more than once (e.g. {doubled[0][1]})"
        )
    acked_by_org: dict[str, int] = defaultdict(int)
    for k, n in first_count.items():
        acked_by_org[org_of[k]] += n
    for org in sorted(set(acked_by_org) | set(counted.events_by_org)):
        sent, seen = acked_by_org.get(org, 0), counted.events_by_org.get(org, 0)
        if seen < sent:
            problems.append(f"lost: org {org} acknowledged {sent} events, aggregates count {seen}")
        elif seen > sent:
            problems.append(
                f"doubled: org {org} acknowledged {sent} events, aggregates count {seen}"
            )
    total = sum(first_count.values())
    if counted.ledger_batches is not None and counted.ledger_batches != len(first_count):
        problems.append(
            f"ledger: {len(first_count)} batches acknowledged, {counted.ledger_batches} stored"
        )
    if counted.ledger_events is not None and counted.ledger_events != total:
        problems.append(f"ledger: {total} events acknowledged, {counted.ledger_events} stored")
    if counted.metrics_events is not None and counted.metrics_events != total:
        problems.append(
            f"metrics: {total} events acknowledged, /metrics counted {counted.metrics_events}"
        )
    return problems


# --- the shell: backend, locust, sampling ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass(frozen=True, slots=True)
class _Backend:
    url: str
    orgs: list[dict[str, str]]
    admin_token: str
    db: Path | None
    process: subprocess.Popen[bytes] | None


def _start_local(work: Path, config: LoadtestConfig, now_fn: Callable[[], Any]) -> _Backend:
    from agent.decision import Mode
    from backend import admin
    from backend.store import Store
    from model_store.repository import init_repository

    db, repo = work / "backend.db", work / "repo"
    store = Store(db, synchronous=config.synchronous)
    try:
        now = now_fn()
        orgs = []
        for i in range(config.orgs):
            made = store.create_org(f"loadtest-org-{i}", now)
            orgs.append({"org_id": made.org_id, "enroll_token": made.enroll_token})
        token = store.create_admin_token(now)
        init_repository(repo, now=now)
        admin.set_mode(store, admin.repository_publisher(repo), Mode.ENFORCE, org_id=None, now=now)
    finally:
        store.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (work / "server.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "backend",
                "serve",
                "--db",
                str(db),
                "--repo",
                str(repo),
                "--port",
                str(port),
                "--synchronous",
                config.synchronous,
            ],
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = monotonic_s()
    while monotonic_s() - started < 30:
        if proc.poll() is not None:
            raise LoadtestError(f"the backend exited with {proc.returncode}; see {work}/server.log")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return _Backend(url, orgs, token, db, proc)
        except httpx.TransportError:
            pass
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    raise LoadtestError("the backend did not answer /healthz within 30 s")


def _remote(config: LoadtestConfig, run_id: str) -> _Backend:
    assert config.host is not None and config.admin_token is not None
    url = config.host.rstrip("/")
    orgs = []
    with httpx.Client(timeout=30) as client:
        for i in range(config.orgs):
            try:
                r = client.post(
                    url + "/v1/admin/orgs",
                    json={"name": f"loadtest-{run_id}-{i}"},
                    headers={"authorization": f"Bearer {config.admin_token}"},
                )
            except httpx.HTTPError as exc:
                raise LoadtestError(f"cannot reach {url}: {exc}") from None
            if r.status_code != 201:
                raise LoadtestError(
                    f"creating an org at {url}: HTTP {r.status_code} {r.text[:200]}"
                )
            body = r.json()
            orgs.append({"org_id": body["org_id"], "enroll_token": body["enroll_token"]})
    return _Backend(url, orgs, config.admin_token, None, None)


def _pythonpath() -> str:
    extra = os.environ.get("PYTHONPATH")
    return str(_ROOT) + (os.pathsep + extra if extra else "")


def _db_bytes(db: Path | None) -> int | None:
    if db is None:
        return None
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def _sample(client: httpx.Client, backend: _Backend, t_s: float) -> Sample | None:
    try:
        text = client.get(backend.url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    return Sample(
        t_s, _metric(text, "fleetward_telemetry_events_ingested_total"), _db_bytes(backend.db)
    )


def _locust(out: Path, backend: _Backend, config: LoadtestConfig, env: dict[str, str]) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(config.users),
        "--spawn-rate",
        str(config.spawn_rate),
        "--run-time",
        f"{max(1, round(config.duration_s))}s",
        "--host",
        backend.url,
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--html",
        str(out / "locust.html"),
        "--stop-timeout",
        "10",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    if config.processes > 1:
        cmd += ["--processes", str(config.processes)]
    return cmd


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _ms(row: dict[str, str], col: str) -> float:
    value = row.get(col, "N/A")
    return float(value) if value not in ("", "N/A") else 0.0


def _counted(backend: _Backend, acks: Sequence[AckRecord], last: Sample | None) -> Counted:
    by_org: dict[str, int] = {}
    headers = {"authorization": f"Bearer {backend.admin_token}"}
    with httpx.Client(timeout=120) as client:
        for org in backend.orgs:
            r = client.get(
                backend.url + "/v1/admin/aggregates",
                params={"org_id": org["org_id"]},
                headers=headers,
            )
            if r.status_code != 200:
                raise LoadtestError(f"reading aggregates: HTTP {r.status_code} {r.text[:200]}")
            by_org[org["org_id"]] = sum(int(row["count"]) for row in r.json() if not row["shadow"])
    metrics = int(last.events_ingested) if last is not None and backend.process else None
    return Counted(by_org, metrics_events=metrics)


def run_loadtest(
    config: LoadtestConfig,
    out: Path,
    *,
    now: Callable[[], Any],
    on_sample: Callable[[Sample], None] | None = None,
) -> LoadtestResult:
    """Run one load test and its consistency check; reports go under `out` (see `report`).

    `now` is the clock used to stamp the orgs and the signed policy of a local backend.

    Raises:
        LoadtestError: the backend or locust could not run.
    """
    if importlib.util.find_spec("locust") is None:
        raise LoadtestError("locust is not installed: pip install 'fleetward[load]'")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="backend-", dir=out))
    ack_dir = out / "acks"
    ack_dir.mkdir(exist_ok=True)
    for stale in ack_dir.glob("acks-*.jsonl"):
        stale.unlink()
    backend = _remote(config, work.name) if config.host else _start_local(work, config, now)
    try:
        setup = {
            "orgs": backend.orgs,
            "admin_token": backend.admin_token,
            "ack_dir": str(ack_dir),
            "seed": config.seed,
            "checkin_interval_s": config.checkin_interval_s,
            "jitter": config.jitter,
            "batch_events": list(config.batch_events),
            "operator_interval_s": config.operator_interval_s,
        }
        setup_path = work / "locust-setup.json"
        setup_path.write_text(json.dumps(setup), encoding="utf-8")
        setup_path.chmod(0o600)
        env = {
            **os.environ,
            "PYTHONPATH": _pythonpath(),
            "FLEETWARD_LOADTEST_CONFIG": str(setup_path),
        }
        samples: list[Sample] = []
        with (
            httpx.Client() as client,
            (out / "locust.log").open("wb") as log,
        ):
            started = monotonic_s()
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                _locust(out, backend, config, env), env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                while True:
                    try:
                        proc.wait(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    elapsed = monotonic_s() - started
                    if elapsed > config.duration_s + _GRACE_S:
                        raise LoadtestError("locust overran its run time; stopped it")
                    s = _sample(client, backend, elapsed)
                    if s is not None:
                        samples.append(s)
                        if on_sample is not None:
                            on_sample(s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            final = _sample(client, backend, monotonic_s() - started)
            if final is not None:
                samples.append(final)
        if proc.returncode != 0:
            tail = (out / "locust.log").read_text(encoding="utf-8", errors="replace")[-400:]
            raise LoadtestError(f"locust exited with {proc.returncode}: {tail.strip()}")
        acks = read_acks(ack_dir)
        counted = _counted(backend, acks, final)
    finally:
        if backend.process is not None:
            backend.process.terminate()
            try:
                backend.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                backend.process.kill()
                backend.process.wait()
    if backend.db is not None:
        from backend.store import Store

        store = Store(backend.db)
        try:
            stats = store.stats()
        finally:
            store.close()
        counted = Counted(
            counted.events_by_org, stats.batches, stats.events, counted.metrics_events
        )
    return _result(config, backend, out, acks, counted, samples)


def _sustained_rate(samples: Sequence[Sample]) -> float:
    """Events per second between the first and the last sample that saw ingest growing."""
    moving = [
        s
        for a, s in zip(samples, samples[1:], strict=False)
        if s.events_ingested > a.events_ingested
    ]
    if len(samples) < 2 or not moving:
        return 0.0
    start = next(s for s in samples if s.events_ingested > 0)
    first = samples[max(samples.index(start) - 1, 0)]
    last = moving[-1]
    span = last.t_s - first.t_s
    return (last.events_ingested - first.events_ingested) / span if span > 0 else 0.0


def _result(
    config: LoadtestConfig,
    backend: _Backend,
    out: Path,
    acks: Sequence[AckRecord],
    counted: Counted,
    samples: list[Sample],
) -> LoadtestResult:
    stats = _read_csv(out / "locust_stats.csv")
    agg = next((r for r in stats if r.get("Name") == "Aggregated"), {})
    chk = next((r for r in stats if r.get("Name") == "/v1/checkin"), {})
    acked = {(a.endpoint_id, a.key): a.events for a in acks if a.is_acknowledged}
    return LoadtestResult(
        config=config,
        host=backend.url,
        requests=int(agg.get("Request Count", 0) or 0),
        failures=int(agg.get("Failure Count", 0) or 0),
        checkin_ms={p: _ms(chk, f"{p}%") for p in ("50", "95", "99")}
        | {"count": float(chk.get("Request Count", 0) or 0)},
        per_route=[
            {
                "name": r["Name"],
                "requests": int(r["Request Count"]),
                "failures": int(r["Failure Count"]),
                "rps": float(r["Requests/s"]),
                "p50_ms": _ms(r, "50%"),
                "p95_ms": _ms(r, "95%"),
                "p99_ms": _ms(r, "99%"),
            }
            for r in stats
        ],
        events_sent=sum(a.events for a in acks if not a.replay),
        events_acknowledged=sum(acked.values()),
        events_counted=sum(counted.events_by_org.values()),
        batches_acknowledged=len(acked),
        replays_acknowledged=sum(1 for a in acks if a.replay and a.is_acknowledged),
        ingest_events_per_s=_sustained_rate(samples),
        database_bytes=samples[-1].database_bytes if samples else None,
        samples=samples,
        history=_read_csv(out / "locust_stats_history.csv"),
        mismatches=check_consistency(acks, counted),
    )
