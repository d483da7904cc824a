"""Org shards as Spark tasks: `fleetward sim run --engine spark --spark-master URL`.

The cohort mode's coordinator (`fleet_sim.parallel.shard.run_cohort`) needs a barrier before every
15-minute step: it sends each shard the control plane's changes, the shards step, their
evidence is summed before the rollout controller ticks. Spark tasks are batch, so there are
two ways to put shards on Spark:

(a) one long-running *barrier* job (`rdd.barrier().mapPartitions`) with a task per shard; each
    task connects back to the coordinator in the driver over an authenticated
    `multiprocessing.connection` socket and runs the very loop a local worker process runs
    (`fleet_sim.parallel.shard.serve_shard` around a `Shard`); or
(b) a Spark job per step, each task rebuilding or unpickling its shard's state (per-endpoint
    arrays, breakers, spools, undelivered events) from storage and saving it again.

This module does (a). It is the same code path as `--workers N` (the coordinator sees only
`ShardDriver`s), so it gives the same results by construction and the identity test holds it
there (`tests/fleet_sim/parallel/test_spark.py`); (b) would move every shard's whole state
through storage 96 times a simulated day, and a job's scheduling costs alone (tens of ms) would
exceed a step's work at 100k endpoints. Barrier mode matters: it starts all of a stage's tasks
together or none (the coordinator waits for every shard to connect, so tasks that queued behind
each other would deadlock) and Spark refuses it up front when the cluster has fewer free slots,
so the engine runs at most as many shards as `defaultParallelism`.

What travels: each task gets its shard's inputs (the world, models, clock and published policy,
without the store: `shard_template`) over its connection once, then the same `ShardSync`
messages and answers as a local worker's pipe carries. Folded aggregate rows do not: each shard
writes them as Parquet (pyarrow; `<arm>/shard-aggregates/shard=K/fold-NNNNN.parquet`, Hive-style
so `spark.read.parquet` reads the directory) and answers with the file's path; the coordinator
reads each file back into `FoldedRows` and hands them to the one writer, so the backend store
ends up with the rows the local engine writes. On a cluster the output directory must be on
storage that executors and the driver both see (a shared mount), and executors must reach the
driver's host on an ephemeral port. The connections carry pickles, so the coordinator listens
only for the job's lifetime (on loopback in local mode) and each side proves a random per-run
key (`multiprocessing`'s HMAC challenge) before a message is read; the key reaches the tasks in
the job's own task data, as their code does.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import secrets
import shutil
import socket
import threading
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from fleet_sim.control import Fleet, Recorder
from fleet_sim.errors import SimError
from fleet_sim.link.fold import FoldedRows
from fleet_sim.parallel.shard import (
    Shard,
    ShardDriver,
    ShardResult,
    ShardSync,
    ShardWorkerError,
    recv_reply,
    serve_shard,
    shard_ranges,
)

__all__ = [
    "SparkEngine",
    "SparkEngineError",
    "read_folded_rows",
    "shard_template",
    "write_folded_rows",
]

CONNECT_TIMEOUT_S = 300.0  # every task must have connected by then (cluster start, queueing)
_PROBE_TIMEOUT_S = 5.0
# the master URLs Spark knows (spark-submit prints a Java stack trace for any other)
_MASTER = re.compile(
    r"local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]|yarn|"
    r"(spark|k8s|mesos)://\S+"
)
_ROW_COLS = ("day", "org", "sample", "model", "verdict", "count", "first", "last")


class SparkEngineError(SimError):
    """Spark cannot run the shards: pyspark or Java missing, master unreachable, job failed."""


def write_folded_rows(rows: FoldedRows, path: Path) -> None:
    """Write `rows` as one Parquet file: the integer columns as they are, a sketch per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the rows' sketches in row order (a row's sketch may sit anywhere in the fold's blob)
    data, _ = FoldedRows.sketches_in_row_order(rows.sketches, rows.start, rows.size)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(rows.size, out=offsets[1:])
    sketch = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(rows), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    cols = {c: pa.array(getattr(rows, c)) for c in _ROW_COLS}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({**cols, "sketch": sketch}), path)


def read_folded_rows(path: Path) -> FoldedRows:
    """The rows `write_folded_rows` wrote, with the same values, dtypes and sketch bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = {c: np.array(table.column(c).to_numpy()) for c in _ROW_COLS}
    sketch = table.column("sketch").combine_chunks()
    if not pa.types.is_large_binary(sketch.type):
        sketch = sketch.cast(pa.large_binary())
    n = len(sketch)
    offsets = np.frombuffer(sketch.buffers()[1], np.int64, count=n + 1, offset=8 * sketch.offset)
    data = sketch.buffers()[2]
    blob = b"" if data is None else data.to_pybytes()[int(offsets[0]) : int(offsets[-1])]
    return FoldedRows(
        **cols,
        sketches=blob,
        start=(offsets[:-1] - offsets[0]).astype(np.int64),
        size=np.diff(offsets).astype(np.int64),
    )


def shard_template(fleet: Fleet) -> Fleet:
    """What a remote `Shard` is built from: `fleet` without the store, hooks and caches.

    A `Shard` reads the world, models, clock, published policy documents, outages, revoked
    versions, tracked policy versions and whether evidence is tallied; nothing else crosses.
    """
    link = dataclasses.replace(
        fleet.link,
        store=None,  # type: ignore[arg-type]  # a shard never touches the store
        docs=dict(fleet.link.docs),
        published=list(fleet.link.published),
        outages=list(fleet.link.outages),
        **_fresh_caches(fleet.link),
    )
    rec = fleet.recorder
    own = Recorder(rec.n_days, rec.n_orgs, rec.n_endpoints)
    for v, t in rec.track_log:
        own.track(v, t)
    return Fleet(
        world=fleet.world,
        link=link,
        registry=fleet.registry,
        clock=fleet.clock,
        recorder=own,
        tables=fleet.tables,
        revoked=set(fleet.revoked),
        tally=fleet.tally,
    )


def _fresh_caches(obj: Any) -> dict[str, Any]:
    """The defaults of `obj`'s private dataclass fields.

    They hold caches and ingest bookkeeping, which a shard does not read (and which can be
    large: every (org, sample) pair seen).
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.name.startswith("_") or not f.init:
            continue
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class _ShardInit:
    """What a task needs to build its shard (sent once over its connection)."""

    fleet: Fleet
    seed: tuple[int, ...]
    org_lo: int
    org_hi: int
    v0: int
    out: str


class _ParquetShard:
    """A `Shard` whose folded rows go to Parquet files; it answers with their paths."""

    def __init__(self, shard: Shard, out: Path) -> None:
        self._shard = shard
        self._out = out
        self._folds = 0

    def _write(self, rows: FoldedRows | None) -> str | None:
        if rows is None or not len(rows):
            return None
        path = self._out / f"fold-{self._folds:05d}.parquet"
        self._folds += 1
        write_folded_rows(rows, path)
        return str(path)

    def advance(
        self, s: ShardSync, t0: float, fold_upto: int | None, prune: bool
    ) -> tuple[int, str | None]:
        n, rows = self._shard.advance(s, t0, fold_upto, prune)
        return n, self._write(rows)

    def hourly(self, s: ShardSync, t: float) -> Any:
        return self._shard.hourly(s, t)

    def take(self, s: ShardSync) -> str | None:
        return self._write(self._shard.take(s))

    def finish(self, s: ShardSync, t: float) -> tuple[ShardResult, str | None]:
        r = self._shard.finish(s, t)
        return dataclasses.replace(r, rows=FoldedRows.concat([])), self._write(r.rows)


def _no_delay(conn: Connection) -> Connection:
    """`conn` with Nagle's algorithm off (TCP_NODELAY).

    `Connection` writes a message over 16 KB as two writes (header, body); with Nagle on, the
    body's last partial segment may wait for the peer's delayed ACK (up to ~40 ms). Most
    barrier messages are smaller, and no gain showed at 30k endpoints; it costs nothing.
    """
    with socket.socket(fileno=os.dup(conn.fileno())) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _shard_task(part: Iterator[tuple[int, str, int, bytes]]) -> Iterator[int]:
    """A Spark task: connect to the coordinator, build the shard, serve it until told to stop."""
    for k, host, port, key in part:
        conn = _no_delay(Client((host, port), authkey=key))
        try:
            conn.send(k)
            init: _ShardInit = conn.recv()

            def make(init: _ShardInit = init, k: int = k) -> _ParquetShard:
                shard = Shard(init.fleet, init.seed, init.org_lo, init.org_hi, init.v0)
                return _ParquetShard(shard, Path(init.out) / f"shard={k}")

            serve_shard(conn, [], make)
        finally:
            conn.close()
        yield k


def _rows_at(path: str | None) -> FoldedRows:
    return FoldedRows.concat([]) if path is None else read_folded_rows(Path(path))


class _Job:
    """The barrier job running every shard's task, and the driver thread waiting on it."""

    def __init__(self, sc: Any, tasks: list[tuple[int, str, int, bytes]], group: str) -> None:
        self._sc = sc
        self.group = group
        self.error: BaseException | None = None
        self._open = len(tasks)
        rdd = sc.parallelize(tasks, len(tasks)).barrier().mapPartitions(_shard_task)

        def run() -> None:
            sc.setJobGroup(group, "fleetward sim shards", interruptOnCancel=True)
            try:
                rdd.collect()
            except BaseException as exc:  # reported by the coordinator (`failed`)
                self.error = exc

        self.thread = threading.Thread(target=run, name="fleetward-spark-shards", daemon=True)
        self.thread.start()

    def failed(self) -> SparkEngineError | None:
        if self.thread.is_alive() or self.error is None:
            return None
        first = str(self.error).strip().splitlines()
        return SparkEngineError(f"the Spark shard job failed: {first[0] if first else self.error}")

    def release(self) -> None:
        """One shard closed; after the last, wait for the job (cancel it if it hangs)."""
        self._open -= 1
        if self._open > 0:
            return
        self.thread.join(timeout=60)
        if self.thread.is_alive():
            self._sc.cancelJobGroup(self.group)
            self.thread.join(timeout=30)


class _TaskDriver:
    """The coordinator's end of one Spark task's connection (`ShardDriver`)."""

    def __init__(self, conn: Connection, job: _Job) -> None:
        self.conn = conn
        self._job = job
        self._methods: deque[str] = deque()  # sent, not yet answered (`_Shards.post`), in order
        self._closed = False

    def send(self, method: str, *args: Any) -> None:
        self._methods.append(method)
        try:
            self.conn.send((method, args))
        except OSError as exc:
            raise ShardWorkerError(f"a Spark shard task is gone: {exc}") from None

    def recv(self) -> Any:
        try:
            status, value = recv_reply(self.conn)
        except (EOFError, OSError):
            self._job.thread.join(timeout=10)
            raise self._job.failed() or ShardWorkerError("a Spark shard task exited") from None
        method = self._methods.popleft() if self._methods else ""
        if status == "error":
            raise ShardWorkerError(f"a Spark shard task failed: {value}")
        if method == "advance":
            n, path = value
            return n, None if path is None else read_folded_rows(Path(path))
        if method == "take":
            return _rows_at(value)
        if method == "finish":
            result, path = value
            return dataclasses.replace(result, rows=_rows_at(path))
        return value

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()
        self._job.release()


def _java_home_ok() -> bool:
    home = os.environ.get("JAVA_HOME")
    if home:
        return (Path(home) / "bin" / "java").exists()
    return shutil.which("java") is not None


def _probe_master(master: str) -> None:
    """Fail fast on a master URL of no known form or a standalone master nobody answers at.

    (Spark itself prints a Java stack trace for the first and retries for minutes on the second.)

    Raises:
        SparkEngineError: a URL of no known form, or no master answers at any of its host:port
            pairs.
    """
    if _MASTER.fullmatch(master) is None:
        raise SparkEngineError(
            f"bad Spark master URL {master!r} (local[N], spark://host:port, yarn, k8s://...)"
        )
    if not master.startswith("spark://"):
        return
    reasons = []
    for hostport in master.removeprefix("spark://").split(","):
        parts = urlsplit(f"//{hostport}")
        try:
            host, port = parts.hostname or "", parts.port or 7077
        except ValueError as exc:
            raise SparkEngineError(f"bad Spark master URL {master!r}: {exc}") from None
        try:
            with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    raise SparkEngineError(f"the Spark master {master} is unreachable ({'; '.join(reasons)})")


class SparkEngine:
    """Runs `run_cohort`'s shards as Spark tasks (a `ShardEngine`; see the module docstring).

    Build it with `start(master)` (starts or reuses the SparkSession, through
    `backend.analysis.spark.spark_session`) or around a session you hold (`SparkEngine(spark)`).
    """

    def __init__(self, spark: Any, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.spark = spark
        self.connect_timeout_s = connect_timeout_s

    @classmethod
    def start(cls, master: str) -> SparkEngine:
        """A session on `master` (`local[2]`, `spark://host:7077`, `yarn`, ...).

        Raises:
            SparkEngineError: pyspark or Java is missing, or Spark does not start on `master`.
        """
        try:
            import pyspark  # noqa: F401 - only whether it is there
        except ImportError:
            raise SparkEngineError(
                "--engine spark needs pyspark: pip install 'fleetward[spark]'"
            ) from None
        if not _java_home_ok():
            raise SparkEngineError("--engine spark needs Java: no java on PATH or in $JAVA_HOME")
        _probe_master(master)
        from backend.analysis.spark import spark_session

        try:
            spark = spark_session(master, "fleetward-sim")
        except Exception as exc:  # the JVM's reasons are many; the first line names it
            lines = str(exc).strip().splitlines()
            reason = lines[0] if lines else type(exc).__name__
            raise SparkEngineError(f"Spark does not start on {master}: {reason}") from None
        return cls(spark)

    @property
    def slots(self) -> int:
        """Tasks the cluster runs at once (`defaultParallelism`): the most shards `open` runs."""
        return int(self.spark.sparkContext.defaultParallelism)

    def stop(self) -> None:
        """Stop the session (and its JVM)."""
        self.spark.stop()

    def open(
        self, fleet: Fleet, seed: tuple[int, ...], workers: int, out: Path
    ) -> list[ShardDriver]:
        """Start a barrier job with one task per shard and connect to each (in org order).

        At most `defaultParallelism` shards (a barrier stage needs a slot per task).

        Raises:
            SparkEngineError: the job failed or not every task connected in time.
            ShardWorkerError: a task failed to build its shard.
        """
        sc = self.spark.sparkContext
        w = fleet.world
        ranges = shard_ranges(w.org_first, w.org_size, min(workers, self.slots))
        rows_dir = out / "shard-aggregates"
        shutil.rmtree(rows_dir, ignore_errors=True)
        rows_dir.mkdir(parents=True)
        template = shard_template(fleet)
        v0 = fleet.link.policy_version
        key = secrets.token_bytes(32)
        local = str(sc.master).startswith("local")
        host = "127.0.0.1" if local else str(sc.getConf().get("spark.driver.host"))
        listener = Listener((host, 0), authkey=key)
        port = int(listener.address[1])
        accepted: queue.Queue[Connection | BaseException] = queue.Queue()

        def accept() -> None:
            for _ in ranges:
                try:
                    accepted.put(listener.accept())
                except BaseException as exc:  # handed to the waiting coordinator
                    accepted.put(exc)
                    return

        threading.Thread(target=accept, name="fleetward-spark-accept", daemon=True).start()
        job = _Job(sc, [(k, host, port, key) for k in range(len(ranges))], secrets.token_hex(8))
        conns: dict[int, Connection] = {}
        try:
            waited = 0.0
            while len(conns) < len(ranges):
                try:
                    got = accepted.get(timeout=1.0)
                except queue.Empty:
                    waited += 1.0
                    if (err := job.failed()) is not None:
                        raise err from None
                    if waited >= self.connect_timeout_s:
                        raise SparkEngineError(
                            f"only {len(conns)} of {len(ranges)} Spark shard tasks connected in "
                            f"{self.connect_timeout_s:.0f} s (free executor cores? can executors "
                            f"reach {host}:{port}?)"
                        ) from None
                    continue
                if isinstance(got, BaseException):
                    raise SparkEngineError(f"accepting Spark shard tasks: {got}") from None
                k = int(_no_delay(got).recv())
                lo, hi = ranges[k]
                got.send(_ShardInit(template, seed, lo, hi, v0, str(rows_dir)))
                conns[k] = got
        except BaseException:
            for c in conns.values():
                c.close()
            if len(conns) < len(ranges):  # unblock the accepting thread (it fails the handshake)
                try:
                    socket.create_connection((host, port), timeout=1.0).close()
                except OSError:
                    pass
            listener.close()
            sc.cancelJobGroup(job.group)
            raise
        listener.close()
        drivers = [_TaskDriver(conns[k], job) for k in range(len(ranges))]
        try:
            for d in drivers:
                d.recv()  # the shard is built
        except BaseException:
            for d in drivers:
                d.close()
            raise
        return list(drivers)
