"""Org shards: the cohort mode split over worker processes, with results identical to one.

`run_cohort` is the coordinator. It alone runs SimPy, the operator's actions, the backend
store, the rollout controller and the transition prediction; the endpoints are simulated by
`Shard`s, each a `cohort.CohortEngine` over a contiguous range of orgs, in this process
(`workers=1`) or in forked worker processes. The results do not depend on the number of
workers, by construction rather than by tuning:

- Randomness: each random-stream block of orgs (`cohort.rng_blocks`, fixed by the world)
  draws from a stream of its own, `(seed, 1, block)`, and a worker runs whole blocks, so an
  org draws the same numbers whichever worker runs it. Everything else a step does is per
  endpoint and deterministic (check-ins, adoption, breaker, delivery, spool bound).
- Fleet-wide decisions stay in one place, at step barriers. Before each step (and each hourly
  barrier) the coordinator sends every shard what changed in the control plane (`ShardSync`:
  new signed policy documents and their publication times, outages, revocations, the policy
  versions whose spread is timed, the evidence tally's generation), so a shard sees the
  control plane exactly as one process would at that point of the SimPy schedule. A call
  whose answer is only counts (a step that folds nothing, an hourly barrier with no evidence
  to hand over) is posted (`_Shards.post`): the coordinator goes on with the schedule and
  takes the answers, in order, at the next call that needs one, so the shards work through
  an hour's steps (a day's, outside a rollout) without a round trip each. What a shard is
  sent, and in which order, is the same either way.
- Evidence: at the hourly barrier each shard hands over its per (day, model) x org counts,
  which are summed (orgs are disjoint) into the fleet's tally before the controller ticks.
- Folds: at the fold times each shard folds its own delivered events into aggregate rows
  (`fleet_sim.link.fold`, in parallel); a fold is a function of the multiset of events (value
  sorts) and rows hold their org, so the shards' rows, joined in org order, are the rows one
  process folds, and the one writer (`fleet_sim.link.fold_writer`) writes them.
- Records: per-org arrays and counters are summed, per-endpoint arrays combined, breaker trips
  merged per step, events ordered by time (`merge_records`), once at the end.

`workers=1` runs the same code with one shard in this process, so there is no second path to
drift. Workers are forked after the world is built (they share its arrays copy-on-write), and
before the fold writer process is started (so none of them holds the writer's pipe); they never
touch the coordinator's store connection. Another `ShardEngine` may run the shards elsewhere
(`fleet_sim.parallel.spark`: Spark tasks running `serve_shard` over a socket); the coordinator only
sees `ShardDriver`s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import multiprocessing as mp
import pickle
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import simpy

from agent.policy import PolicyDocumentModel
from fleet_sim._clock import DAY_S
from fleet_sim._interrupt import leave_interrupts_to_the_coordinator
from fleet_sim._memory import keep_freed_memory, trim_freed_memory
from fleet_sim.cohort.engine import FOLD_GRACE_S, CohortEngine, rng_blocks
from fleet_sim.control import DecisionTables, Fleet, Recorder
from fleet_sim.errors import SimError
from fleet_sim.link.fold import EventFolder, FoldedRows
from fleet_sim.link.fold_writer import ProcessFoldWriter, fold_writer_for
from fleet_sim.rollout.controller import ArmDayTally
from fleet_sim.scenario import Action
from fleet_sim.world import QUARTER_S

__all__ = [
    "Shard",
    "ShardDriver",
    "ShardEngine",
    "ShardResult",
    "ShardSync",
    "ShardWorkerError",
    "merge_records",
    "recv_reply",
    "run_cohort",
    "send_reply",
    "serve_shard",
    "shard_ranges",
]

Progress = Callable[[float, int], None]
_POSTED_MAX = 64  # calls sent ahead of their answers (`_Shards.post`): a pipe holds them all
Cols = dict[str, npt.NDArray[Any]]
Counts = dict[tuple[int, int], npt.NDArray[np.int64]]
_SUMMED = ("enc", "mal_enc", "alerts", "fp_alerts", "new_fp", "mal_alerts")


class ShardWorkerError(SimError):
    """A shard's worker process failed or died (its reason is in the message)."""


def shard_ranges(org_first: npt.NDArray[np.int64], org_size: npt.NDArray[np.int64],
                 workers: int) -> list[tuple[int, int]]:  # fmt: skip
    """Org ranges for `workers` shards: whole random-stream blocks, the largest shard smallest.

    A step's and a fold's cost follow the endpoints about evenly (shard CPU per endpoint within
    a few per cent at 1M), and every shard waits for the slowest at each barrier, so the split
    minimises the largest shard's endpoint count over the contiguous splits of the blocks
    (exactly: a block is one org when orgs are large, and the world's largest org alone can be
    a quarter of the fleet). Fewer shards than `workers` when the world has fewer blocks
    (`cohort.RNG_BLOCKS`).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    blocks = rng_blocks(org_first, org_size)
    k = min(workers, len(blocks))
    cuts = _balanced_cuts([int(org_size[a:b].sum()) for a, b in blocks], k)
    return [(blocks[a][0], blocks[b - 1][1]) for a, b in zip(cuts, cuts[1:], strict=False)]


def _balanced_cuts(size: list[int], k: int) -> list[int]:
    """Cut points 0 = c0 < c1 < ... < ck = len(size) minimising the largest part's sum.

    A linear-partition dynamic programme (blocks are few: O(n^2 k)); among equal optima the
    earliest cuts win, so the split is a function of the sizes alone.
    """
    n = len(size)
    pre = [0]
    for x in size:
        pre.append(pre[-1] + x)
    inf = float("inf")
    # best[j][i]: the least largest part splitting the first i blocks into j parts
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    arg = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n - (k - j) + 1):
            for m in range(j - 1, i):
                cost = max(best[j - 1][m], pre[i] - pre[m])
                if cost < best[j][i]:
                    best[j][i], arg[j][i] = cost, m
    cuts = [n]
    for j in range(k, 0, -1):
        cuts.append(arg[j][cuts[-1]])
    return cuts[::-1]


@dataclass(frozen=True, slots=True)
class ShardSync:
    """What changed in the control plane since a shard last heard (sent before each barrier)."""

    docs: tuple[PolicyDocumentModel, ...]
    published: tuple[tuple[int, dt.datetime], ...]
    outages: tuple[tuple[float, float], ...]
    revoked: tuple[int, ...]
    tracks: tuple[tuple[int, float], ...]
    tally_gen: int
    tally_on: bool


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What a shard hands back at the end: its records and what is left to fold."""

    recorder: Recorder
    trips: list[tuple[float, int]]
    events_total: int
    rows: FoldedRows
    timing: dict[str, float] = field(default_factory=dict)


def _clocks() -> tuple[float, float]:
    """Wall and this thread's CPU seconds (for the benchmark's figures, never for results)."""
    return time.perf_counter(), time.thread_time()


class Shard:
    """The endpoints of orgs [`org_lo`, `org_hi`): an engine with its own view of the fleet.

    The view shares the world, models and clock, and keeps its own copy of the published
    policy documents (kept current by `sync`), its own decision tables, records and tally.
    """

    def __init__(
        self, fleet: Fleet, seed: tuple[int, ...], org_lo: int, org_hi: int, v0: int
    ) -> None:
        link = fleet.link
        view = dataclasses.replace(
            link, docs=dict(link.docs), published=list(link.published),
            outages=list(link.outages), _resolved={},
        )  # fmt: skip
        rec = fleet.recorder
        own = Recorder(rec.n_days, rec.n_orgs, rec.n_endpoints)
        for v, t in rec.track_log:
            own.track(v, t)
        w = fleet.world
        self.fleet = Fleet(
            world=w,
            link=view,
            registry=fleet.registry,
            clock=fleet.clock,
            recorder=own,
            tables=DecisionTables(w.catalog.sha256, w.catalog.label, fleet.registry),
            revoked=set(fleet.revoked),
            own_orgs=(org_lo, org_hi),
        )
        self._tally_gen = 0
        self._new_tally(fleet.tally is not None)
        self.engine = CohortEngine(self.fleet, seed, org_lo, org_hi, v0=v0)
        self._folder = EventFolder(w.catalog.sha256, w.n_orgs, e_lo=self.engine.e_lo)
        self._epoch_ms = fleet.clock.ms(0)
        self._trim_due = False
        self.timing: dict[str, float] = {}  # wall-clock seconds per kind of work, for benchmarks
        self._idle_from: float | None = None

    def _clocked(self, kind: str, since: tuple[float, float]) -> None:
        """Add the wall and CPU seconds since `since` (`_clocks`) to `kind`'s figures."""
        t, (wall, cpu) = self.timing, _clocks()
        t[kind] = t.get(kind, 0.0) + wall - since[0]
        t[f"{kind}_cpu"] = t.get(f"{kind}_cpu", 0.0) + cpu - since[1]

    def _begin(self) -> tuple[float, float]:
        """A call starts: the time since the last one ended counts as idle."""
        since = _clocks()
        if self._idle_from is not None:
            self.timing["idle"] = self.timing.get("idle", 0.0) + since[0] - self._idle_from
        return since

    def _end(self, kind: str, since: tuple[float, float]) -> None:
        self._clocked(kind, since)
        self._idle_from = time.perf_counter()

    def _fold(self, parts: list[Cols]) -> FoldedRows:
        """This shard's delivered events as aggregate rows (in the table's key order)."""
        since = _clocks()
        # the parts as they are: a joined copy of a day's events would double them at the fold;
        # handed over (the list emptied) and given back once their keys are written, so the
        # sort's and the rows' memory does not come on top of the day's events
        rows = self._folder.fold_parts(
            parts, ep_org=self.fleet.world.ep_org, t_base_ms=self._epoch_ms,
            released=trim_freed_memory,
        )  # fmt: skip
        trim_freed_memory()  # the fold's temporaries: a day's worth, not needed until the next
        # the rows themselves are freed once handed over, after this call: trim at the next one
        self._trim_due = True
        self._clocked("fold", since)
        return rows

    def _new_tally(self, on: bool) -> None:
        f = self.fleet
        f.tally = ArmDayTally(f.clock.epoch_day, f.world.ep_org, f.world.n_orgs) if on else None

    def sync(self, s: ShardSync) -> None:
        """Apply the control plane's changes (every call starts with it).

        Gives the heap back first when the last call handed over folded rows: a day of rows
        freed after the reply would otherwise stay in this process until the next fold
        (glibc keeps up to `keep_freed_memory`'s trim threshold, ~180 MB a worker at 1M).
        """
        if self._trim_due:
            self._trim_due = False
            trim_freed_memory()
        link, f = self.fleet.link, self.fleet
        for doc in s.docs:
            link.docs[doc.version] = doc
        link.published.extend(s.published)
        link.outages[:] = s.outages
        f.revoked = set(s.revoked)
        for v, t in s.tracks:
            f.recorder.track(v, t)
        if s.tally_gen != self._tally_gen:
            self._tally_gen = s.tally_gen
            self._new_tally(s.tally_on)

    def advance(
        self, s: ShardSync, t0: float, fold_upto: int | None, prune: bool
    ) -> tuple[int, FoldedRows | None]:
        """Sync, step through [t0, t0 + step), fold days <= `fold_upto`, prune breakers."""
        since = self._begin()
        self.sync(s)
        stepped = _clocks()
        n = self.engine.step(t0)
        self._clocked("step", stepped)
        t1 = t0 + self.engine.step_s
        rows = None
        if fold_upto is not None:
            rows = self._fold(self.engine.take_delivered(fold_upto))
        if prune:
            self.engine.prune_breakers(t1)
        self._end("advance", since)
        return n, rows

    def hourly(self, s: ShardSync, t: float) -> Counts:
        """Sample adoption; hand over the evidence counted since the last hour."""
        since = self._begin()
        self.sync(s)
        self.engine.sample_adoption(t)
        tally = self.fleet.tally
        counts = {} if tally is None else tally.take_counts()
        self._end("hourly", since)
        return counts

    def take(self, s: ShardSync) -> FoldedRows:
        """Every delivered event not yet folded, folded (before someone reads the aggregates)."""
        since = self._begin()
        self.sync(s)
        rows = self._fold(self.engine.take_delivered(None))
        self._end("take", since)
        return rows

    def finish(self, s: ShardSync, t: float) -> ShardResult:
        """End of run: the engine's closing counts, the records and the last events."""
        since = self._begin()
        self.sync(s)
        self.engine.finish(t)
        e = self.engine
        rows = self._fold(e.take_delivered())
        self._end("finish", since)
        return ShardResult(self.fleet.recorder, e.trip_log, e.events_total, rows, self.timing)


# --- drivers: the same calls, in this process or over a pipe ------------------------------


class ShardDriver(Protocol):
    """The coordinator's handle on one shard: call a `Shard` method, then take its answer."""

    def send(self, method: str, *args: Any) -> None:
        """Start `method(*args)` on the shard."""

    def recv(self) -> Any:
        """The answer to the last `send` (raises `ShardWorkerError` when the shard failed)."""

    def close(self) -> None:
        """Stop the shard."""


class ShardEngine(Protocol):
    """Where shards run when not in this machine's processes (e.g. `SparkEngine`)."""

    def open(
        self, fleet: Fleet, seed: tuple[int, ...], workers: int, out: Path
    ) -> list[ShardDriver]:
        """Start the shards of `fleet` (whole org blocks, `shard_ranges`), in org order.

        `out` is the arm's output directory, for whatever the shards write.
        """


class _Local:
    """One shard in this process (answers queue up as a pipe's would)."""

    def __init__(self, shard: Shard) -> None:
        self._shard = shard
        self._results: deque[Any] = deque()

    def send(self, method: str, *args: Any) -> None:
        self._results.append(getattr(self._shard, method)(*args))

    def recv(self) -> Any:
        return self._results.popleft()  # held by the caller only (see `Shard.sync`)

    def close(self) -> None:
        pass


_OUT_OF_BAND_MIN_BYTES = 1 << 16  # a fold's sketch blob this large goes out of band too


def _folded_rows(fields: dict[str, Any]) -> FoldedRows:
    """Rows whose sketch blob came out of band (`_ReplyPickler`), in the buffer it arrived in."""
    fields["sketches"] = bytes(fields["sketches"])
    return FoldedRows(**fields)


class _ReplyPickler(pickle.Pickler):
    """Protocol 5 with a fold's sketch blob out of band, as the arrays are.

    (A `bytes` object itself cannot be: the pickler does not ask `reducer_override` about
    exact `bytes`; the rows can.)
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is FoldedRows and len(obj.sketches) >= _OUT_OF_BAND_MIN_BYTES:
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            fields["sketches"] = pickle.PickleBuffer(obj.sketches)
            return _folded_rows, (fields,)
        return NotImplemented


def send_reply(conn: Connection, reply: object) -> None:
    """Send `reply` over `conn` with its arrays' memory as it is (`recv_reply` reads it).

    A pickle (protocol 5) with the arrays and sketch blobs out of band, then each one's memory
    as a message of its own: a day's folded rows (tens of megabytes) are not copied into a
    pickle first and out of it again on the other side (a pickled `send` of them cost a worker
    ~30 ms CPU and ~80 ms wall per fold; this ~4 and ~26, `benchmarks/README.md`). In band,
    the rows' sketch blob (~28 MB a 1M-endpoint shard's day) was copied twice in the worker
    (into the pickle, then the pickle into a message) and three times in the coordinator.
    """
    buffers: list[pickle.PickleBuffer] = []
    head = io.BytesIO()
    _ReplyPickler(head, protocol=5, buffer_callback=buffers.append).dump(reply)
    raws = [b.raw() for b in buffers]
    conn.send_bytes(pickle.dumps([r.nbytes for r in raws], protocol=5))
    conn.send_bytes(head.getbuffer())
    for r in raws:
        conn.send_bytes(r)


def recv_reply(conn: Connection) -> Any:
    """What `send_reply` sent (each array over the bytes received, not a copy).

    Raises:
        EOFError: the other end closed the connection.
    """
    sizes = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own worker's reply
    head = conn.recv_bytes()
    buffers = []
    for n in sizes:
        buf = np.empty(n, np.uint8)
        conn.recv_bytes_into(buf)
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)  # noqa: S301 - our own worker's reply


def serve_shard(conn: Connection, others: list[Connection], make: Callable[[], object]) -> None:
    """A worker process: build the shard, then answer calls until told to stop.

    `make` returns a `Shard` or an object with its methods; `others` are connections to close
    first (the coordinator's ends of other workers' pipes a fork copied).
    """
    leave_interrupts_to_the_coordinator()
    for c in others:  # the coordinator's ends of the other workers' pipes
        c.close()
    keep_freed_memory()
    try:
        shard = make()
    except Exception as exc:  # reported to the coordinator, which raises it
        send_reply(conn, ("error", f"{type(exc).__name__}: {exc}"))
        return
    send_reply(conn, ("ok", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        method, args = msg
        try:
            reply = ("ok", getattr(shard, method)(*args))
        except Exception as exc:  # reported to the coordinator, which raises it
            send_reply(conn, ("error", f"{type(exc).__name__}: {exc}"))
            return
        send_reply(conn, reply)
        del reply  # before waiting for the next call (a day of rows, handed over)


class _Remote:
    """One shard in a forked worker process."""

    def __init__(self, make: Callable[[], Shard], others: list[Connection]) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve_shard, args=(child, others, make), daemon=True)
        self.proc.start()
        child.close()

    def started(self) -> None:
        self.recv()

    def send(self, method: str, *args: Any) -> None:
        try:
            self.conn.send((method, args))
        except OSError:  # the worker is gone, after a failure it reported: `recv` raises it
            pass

    def recv(self) -> Any:
        try:
            status, value = recv_reply(self.conn)
        except EOFError:
            self.proc.join(timeout=10)
            raise ShardWorkerError(f"a shard worker exited ({self.proc.exitcode})") from None
        if status == "error":
            raise ShardWorkerError(f"a shard worker failed: {value}")
        return value

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.conn.close()


@dataclass
class _Shards:
    """The coordinator's side: every shard, and what each has been told."""

    fleet: Fleet
    drivers: Sequence[ShardDriver]
    _docs_sent: int = 0
    _tracks_sent: int = 0
    _tally: ArmDayTally | None = None
    _tally_gen: int = 0
    _events: int = field(default=0)
    _closed: bool = False
    waited: dict[str, float] = field(default_factory=dict)  # wall s in `recv`, per method
    # the coordinator's own work that can wait until the shards are busy: run after each
    # posted call is sent and before each call waits for answers
    meanwhile: Callable[[], None] | None = None
    _posted: deque[tuple[str, Callable[[list[Any]], None]]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._docs_sent = len(self.fleet.link.published)
        self._tracks_sent = len(self.fleet.recorder.track_log)
        self._tally = self.fleet.tally

    def _sync(self) -> ShardSync:
        f, link = self.fleet, self.fleet.link
        new = link.published[self._docs_sent :]
        self._docs_sent = len(link.published)
        tracks = f.recorder.track_log[self._tracks_sent :]
        self._tracks_sent = len(f.recorder.track_log)
        if f.tally is not self._tally:
            self._tally = f.tally
            self._tally_gen += 1
        return ShardSync(
            docs=tuple(link.docs[v] for v, _ in new),
            published=tuple(new),
            outages=tuple(link.outages),
            revoked=tuple(sorted(f.revoked)),
            tracks=tuple(tracks),
            tally_gen=self._tally_gen,
            tally_on=f.tally is not None,
        )

    def call(self, method: str, *args: Any) -> list[Any]:
        """Call `method` on every shard (all at once), with a fresh sync first; their answers.

        The answers to posted calls are taken first, in order (after `meanwhile`).
        """
        if self.meanwhile is not None:
            self.meanwhile()
        self._drain()
        s = self._sync()
        for d in self.drivers:
            d.send(method, s, *args)
        return self._answers(method)

    def post(self, method: str, on_answers: Callable[[list[Any]], None], *args: Any) -> None:
        """Start `method` on every shard as `call` does, without waiting for the answers.

        A shard works through its calls in order, so the coordinator goes on with the SimPy
        schedule (and its own work) while the shards step; `on_answers` gets the answers at
        the next `call` (the older half once `_POSTED_MAX` calls are waiting). Only for calls
        whose answers are small (a pipe holds thousands: a worker never blocks handing them
        back, so it always reads the next call) and that nothing needs before the next `call`.
        """
        if len(self._posted) >= _POSTED_MAX:
            self._drain(keep=_POSTED_MAX // 2)  # the shards keep half a queue of calls to run
        s = self._sync()
        for d in self.drivers:
            d.send(method, s, *args)
        self._posted.append((method, on_answers))
        if self.meanwhile is not None:
            self.meanwhile()

    def _drain(self, keep: int = 0) -> None:
        """Take the answers to posted calls, oldest first, until `keep` are left waiting."""
        while len(self._posted) > keep:
            method, on_answers = self._posted.popleft()
            on_answers(self._answers(method))

    def _answers(self, method: str) -> list[Any]:
        since = time.perf_counter()
        got = [d.recv() for d in self.drivers]
        self.waited[method] = self.waited.get(method, 0.0) + time.perf_counter() - since
        return got

    def close(self) -> None:
        """Stop every shard (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        for d in self.drivers:
            d.close()


def _open_shards(fleet: Fleet, seed: tuple[int, ...], workers: int) -> _Shards:
    w = fleet.world
    ranges = shard_ranges(w.org_first, w.org_size, workers)
    v0 = fleet.link.policy_version
    if len(ranges) == 1:
        return _Shards(fleet, [_Local(Shard(fleet, seed, *ranges[0], v0))])
    drivers: list[_Local | _Remote] = []
    try:
        for lo, hi in ranges:
            others = [d.conn for d in drivers if isinstance(d, _Remote)]

            def make(lo: int = lo, hi: int = hi) -> Shard:
                return Shard(fleet, seed, lo, hi, v0)

            drivers.append(_Remote(make, others))
        for d in drivers:
            assert isinstance(d, _Remote)
            d.started()
    except BaseException:
        for d in drivers:
            d.close()
        raise
    return _Shards(fleet, drivers)


def merge_records(rec: Recorder, results: Sequence[ShardResult]) -> None:
    """Add the shards' records into the coordinator's `rec` (in a fixed, worker-free order).

    Per-org arrays and counters add up (orgs are disjoint); per-endpoint arrays combine
    (first time seen: the minimum; ever installed: or); adoption samples add up sample by
    sample; breaker trips of one step (15-minute quarter) become one event, and events are
    ordered by time. Counters are sorted by name.
    """
    for r in results:
        for name in _SUMMED:
            getattr(rec, name)[...] += getattr(r.recorder, name)
    names = sorted({k for r in results for k in r.recorder.counters} | set(rec.counters))
    rec.counters = {
        k: rec.counters.get(k, 0) + sum(r.recorder.counters.get(k, 0) for r in results)
        for k in names
    }
    samples = [r.recorder.adoption for r in results]
    for group in zip(*samples, strict=True):
        total: dict[int, int] = {}
        for _t, counts in group:
            for v, c in counts.items():
                total[v] = total.get(v, 0) + c
        rec.adoption.append((group[0][0], dict(sorted(total.items()))))
    for v, (_t, seen) in rec.tracked.items():
        for r in results:
            np.minimum(seen, r.recorder.tracked[v][1], out=seen)
    for v in sorted({v for r in results for v in r.recorder.installed}):
        ever = rec.installed.get(v)
        if ever is None:
            ever = rec.installed[v] = np.zeros(rec.n_endpoints, bool)
        for r in results:
            got = r.recorder.installed.get(v)
            if got is not None:
                ever |= got
    trips: dict[int, tuple[float, int]] = {}
    for r in results:
        for t, n in r.trips:
            q = int(t // QUARTER_S)
            t0, n0 = trips.get(q, (np.inf, 0))
            trips[q] = (min(t0, t), n0 + n)
    events = rec.events + [
        (t, f"breaker tripped on {n} endpoint(s)") for _q, (t, n) in sorted(trips.items())
    ]
    rec.events[:] = sorted(events, key=lambda e: e[0])


def _ignored(_answers: list[Any]) -> None:
    pass


def _count_timing(
    rec: Recorder, waited: dict[str, float], timing: Sequence[dict[str, float]]
) -> None:
    """Wall-clock figures for the benchmark (`Recorder.timings`, never in the report).

    `shard_wait_<method>_ms`: the coordinator waiting for the shards' answers;
    `shard<i>_<kind>_ms`: shard i's wall (and `_cpu`) time per kind of work (`advance`
    includes `step` and `fold`; `idle`: between calls, waiting for the coordinator).
    """
    for method, s in sorted(waited.items()):
        rec.time(f"shard_wait_{method}_ms", s)
    for i, t in enumerate(timing):
        for kind, s in sorted(t.items()):
            rec.time(f"shard{i}_{kind}_ms", s)


def run_cohort(
    fleet: Fleet,
    actions: Sequence[Action],
    *,
    days: float,
    seed: tuple[int, ...],
    workers: int = 1,
    progress: Progress | None = None,
    engine: ShardEngine | None = None,
    out: Path | None = None,
) -> int:
    """Run the cohort mode under SimPy for `days` simulated days; returns the encounters.

    `workers` shards run the endpoints (in forked processes when more than one, or where
    `engine` runs them, writing under `out`); the records (`fleet.recorder`) and the backend's
    aggregates are the same for any `workers` and engine.

    Raises:
        ShardWorkerError: a worker process failed.
    """
    keep_freed_memory()
    env = simpy.Environment()
    if engine is None:
        shards = _open_shards(fleet, seed, workers)
    else:
        shards = _Shards(fleet, engine.open(fleet, seed, workers, out or Path(".")))
    writer = fold_writer_for(fleet.link, fleet.world.n_endpoints)  # after the fork: see above
    clock = fleet.clock
    horizon = days * DAY_S
    events = 0

    folded: list[tuple[list[FoldedRows], float]] = []  # not yet handed to the writer

    def hand_over() -> None:
        """Join the shards' rows of each fold and hand them to the writer.

        The daily fold's rows wait for the first step after it to be posted (`meanwhile`), so
        the shards step while this process joins a day's rows and writes them out for the
        writer (or waits for the writer's previous day); anyone reading the aggregates calls
        `flush`, which hands everything over first.
        """
        while folded:
            parts, t = folded.pop(0)
            rows = FoldedRows.concat(parts)
            del parts
            if len(rows):
                writer.submit(rows, now=clock.at(t))
            del rows  # a day of rows, handed over: kept, glibc would hold it till the next
            trim_freed_memory()

    shards.meanwhile = hand_over

    def fold(parts: Sequence[FoldedRows | None], t: float) -> None:
        folded.append(([p for p in parts if p is not None], t))
        hand_over()

    def flush(t: float) -> None:
        fold(shards.call("take"), t)
        writer.join()

    fleet.flush_hook = flush

    def operator() -> simpy.events.ProcessGenerator:
        for act in actions:
            if act.at_s > env.now:
                yield env.timeout(act.at_s - env.now)
            fleet.apply(act, env.now)

    def counted(got: list[tuple[int, FoldedRows | None]]) -> None:
        nonlocal events
        events += sum(n for n, _ in got)

    def stepper() -> simpy.events.ProcessGenerator:
        while env.now < horizon:
            t0 = env.now
            yield env.timeout(QUARTER_S)
            now = env.now
            upto = int(now // DAY_S) - 1 if now % DAY_S == FOLD_GRACE_S else None
            if upto is None:  # nothing but counts to hand back: the shards go on meanwhile
                shards.post("advance", counted, t0, upto, now % DAY_S == 0)
            else:
                got = shards.call("advance", t0, upto, now % DAY_S == 0)
                counted(got)
                folded.append(([rows for _, rows in got if rows is not None], now))
                del got  # handed over once the next step is under way (`hand_over`)
            if progress is not None:
                progress(now, events)  # the encounters of the steps answered so far

    def hourly() -> simpy.events.ProcessGenerator:
        while env.now < horizon:
            if fleet.tally is None:  # no evidence to hand over (the shards' tallies are off)
                shards.post("hourly", _ignored, env.now)
            else:
                for c in shards.call("hourly", env.now):
                    fleet.tally.put_counts(c)
            fleet.hourly(env.now)  # (the fold writer checkpoints the WAL, not this barrier)
            yield env.timeout(3600.0)

    try:
        env.process(operator())
        env.process(stepper())
        env.process(hourly())
        env.run(until=horizon + 1e-6)
        results: list[ShardResult] = shards.call("finish", horizon)
        shards.close()  # the workers' memory goes before the last rows are joined and written
        fold([r.rows for r in results], horizon)
        writer.join()
        merge_records(fleet.recorder, results)
        events = sum(r.events_total for r in results)
        if isinstance(writer, ProcessFoldWriter):  # wall-clock figures for the benchmark
            fleet.recorder.time("fold_writer_cpu_ms", writer.cpu_s)
            fleet.recorder.time("fold_writer_wait_ms", writer.wait_s)
            _count_timing(fleet.recorder, shards.waited, [r.timing for r in results])
    finally:
        writer.close()
        shards.close()
    return events
