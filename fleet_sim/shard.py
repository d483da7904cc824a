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
  control plane exactly as one process would at that point of the SimPy schedule.
- Evidence: at the hourly barrier each shard hands over its per (day, model) x org counts,
  which are summed (orgs are disjoint) into the fleet's tally before the controller ticks.
- Folds: at the fold times each shard folds its own delivered events into aggregate rows
  (`fleet_sim.fold`, in parallel); a fold is a function of the multiset of events (value
  sorts) and rows hold their org, so the shards' rows, joined in org order, are the rows one
  process folds, and the one writer (`fleet_sim.fold_writer`) writes them.
- Records: per-org arrays and counters are summed, per-endpoint arrays combined, breaker trips
  merged per step, events ordered by time (`merge_records`), once at the end.

`workers=1` runs the same code with one shard in this process, so there is no second path to
drift. Workers are forked after the world is built (they share its arrays copy-on-write), and
before the fold writer process is started (so none of them holds the writer's pipe); they never
touch the coordinator's store connection. Another `ShardEngine` may run the shards elsewhere
(`fleet_sim.spark_engine`: Spark tasks running `serve_shard` over a socket); the coordinator only
sees `ShardDriver`s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing as mp
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
from fleet_sim._memory import keep_freed_memory, trim_freed_memory
from fleet_sim.cohort import FOLD_GRACE_S, CohortEngine, rng_blocks
from fleet_sim.control import DecisionTables, Fleet, Recorder
from fleet_sim.errors import SimError
from fleet_sim.fold import EventFolder, FoldedRows
from fleet_sim.fold_writer import ProcessFoldWriter, fold_writer_for
from fleet_sim.rollout import ArmDayTally
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
    "run_cohort",
    "serve_shard",
    "shard_ranges",
]

Progress = Callable[[float, int], None]
Cols = dict[str, npt.NDArray[Any]]
Counts = dict[tuple[int, int], npt.NDArray[np.int64]]
_SUMMED = ("enc", "mal_enc", "alerts", "fp_alerts", "new_fp", "mal_alerts")


class ShardWorkerError(SimError):
    """A shard's worker process failed or died (its reason is in the message)."""


def shard_ranges(org_first: npt.NDArray[np.int64], org_size: npt.NDArray[np.int64],
                 workers: int) -> list[tuple[int, int]]:  # fmt: skip
    """Org ranges for `workers` shards: whole random-stream blocks, about equal endpoints.

    Fewer shards than `workers` when the world has fewer blocks (`cohort.RNG_BLOCKS`).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    blocks = rng_blocks(org_first, org_size)
    k = min(workers, len(blocks))
    size = np.asarray([int(org_size[a:b].sum()) for a, b in blocks], np.float64)
    ends = np.cumsum(size)
    total = float(ends[-1]) if ends.size else 0.0
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(k):
        if i == k - 1:
            stop = len(blocks)
        else:
            # the block where this shard's share of endpoints ends, leaving a block for each
            # shard still to come
            stop = int(np.searchsorted(ends, total * (i + 1) / k, side="left")) + 1
            stop = max(start + 1, min(stop, len(blocks) - (k - 1 - i)))
        out.append((blocks[start][0], blocks[stop - 1][1]))
        start = stop
    return out


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

    def _fold(self, parts: list[Cols]) -> FoldedRows:
        """This shard's delivered events as aggregate rows (in the table's key order)."""
        # the parts as they are: a joined copy of a day's events would double them at the fold
        rows = self._folder.fold_parts(
            parts, ep_org=self.fleet.world.ep_org, t_base_ms=self._epoch_ms
        )
        del parts
        trim_freed_memory()  # the fold's temporaries: a day's worth, not needed until the next
        # the rows themselves are freed once handed over, after this call: trim at the next one
        self._trim_due = True
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
        self.sync(s)
        n = self.engine.step(t0)
        t1 = t0 + self.engine.step_s
        rows = None
        if fold_upto is not None:
            rows = self._fold(self.engine.take_delivered(fold_upto))
        if prune:
            self.engine.prune_breakers(t1)
        return n, rows

    def hourly(self, s: ShardSync, t: float) -> Counts:
        """Sample adoption; hand over the evidence counted since the last hour."""
        self.sync(s)
        self.engine.sample_adoption(t)
        tally = self.fleet.tally
        return {} if tally is None else tally.take_counts()

    def take(self, s: ShardSync) -> FoldedRows:
        """Every delivered event not yet folded, folded (before someone reads the aggregates)."""
        self.sync(s)
        return self._fold(self.engine.take_delivered(None))

    def finish(self, s: ShardSync, t: float) -> ShardResult:
        """End of run: the engine's closing counts, the records and the last events."""
        self.sync(s)
        self.engine.finish(t)
        e = self.engine
        rows = self._fold(e.take_delivered())
        return ShardResult(self.fleet.recorder, e.trip_log, e.events_total, rows)


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
    """One shard in this process."""

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    def send(self, method: str, *args: Any) -> None:
        self._result = getattr(self._shard, method)(*args)

    def recv(self) -> Any:
        result, self._result = self._result, None  # held by the caller only (see `Shard.sync`)
        return result

    def close(self) -> None:
        pass


def serve_shard(conn: Connection, others: list[Connection], make: Callable[[], object]) -> None:
    """A worker process: build the shard, then answer calls until told to stop.

    `make` returns a `Shard` or an object with its methods; `others` are connections to close
    first (the coordinator's ends of other workers' pipes a fork copied).
    """
    for c in others:  # the coordinator's ends of the other workers' pipes
        c.close()
    keep_freed_memory()
    try:
        shard = make()
    except Exception as exc:  # reported to the coordinator, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        method, args = msg
        try:
            conn.send(("ok", getattr(shard, method)(*args)))
        except Exception as exc:  # reported to the coordinator, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return


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
        self.conn.send((method, args))

    def recv(self) -> Any:
        try:
            status, value = self.conn.recv()
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
        """Call `method` on every shard (all at once), with a fresh sync first."""
        s = self._sync()
        for d in self.drivers:
            d.send(method, s, *args)
        return [d.recv() for d in self.drivers]

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

    def fold(parts: Sequence[FoldedRows | None], t: float) -> None:
        rows = FoldedRows.concat([p for p in parts if p is not None])
        if len(rows):
            writer.submit(rows, now=clock.at(t))

    def flush(t: float) -> None:
        fold(shards.call("take"), t)
        writer.join()

    fleet.flush_hook = flush

    def operator() -> simpy.events.ProcessGenerator:
        for act in actions:
            if act.at_s > env.now:
                yield env.timeout(act.at_s - env.now)
            fleet.apply(act, env.now)

    def stepper() -> simpy.events.ProcessGenerator:
        nonlocal events
        while env.now < horizon:
            t0 = env.now
            yield env.timeout(QUARTER_S)
            now = env.now
            upto = int(now // DAY_S) - 1 if now % DAY_S == FOLD_GRACE_S else None
            got = shards.call("advance", t0, upto, now % DAY_S == 0)
            events += sum(n for n, _ in got)
            if progress is not None:
                progress(now, events)
            if upto is not None:
                fold([rows for _, rows in got], now)
                del got  # a day of rows, handed over: kept, glibc would hold it till the next
                trim_freed_memory()

    def hourly() -> simpy.events.ProcessGenerator:
        while env.now < horizon:
            counts = shards.call("hourly", env.now)
            if fleet.tally is not None:
                for c in counts:
                    fleet.tally.put_counts(c)
            fleet.hourly(env.now)
            if isinstance(writer, ProcessFoldWriter):
                fleet.link.store.checkpoint()  # the writer process only appends to the WAL
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
            fleet.recorder.count("fold_writer_cpu_ms", round(writer.cpu_s * 1000))
            fleet.recorder.count("fold_writer_wait_ms", round(writer.wait_s * 1000))
    finally:
        writer.close()
        shards.close()
    return events
