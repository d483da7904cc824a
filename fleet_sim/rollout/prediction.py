"""The transition prediction at a rollout start, in a process beside the run.

Nothing the run decides reads the prediction (the rollout controller judges measured evidence
only; the report sets the prediction beside what the canary measured), so it need not hold the
simulation up: `PendingPrediction` computes it in a process of its own on a snapshot of the
store taken at the start, while the simulation goes on, and the run puts the value into the
rollout's record when it ends.

A process, not a thread: the prediction is mostly Python and numpy over a few million rows, and
in a thread it shared the simulation's interpreter lock (at 100k endpoints x 3 days the run
waited ~0.9 s of its ~3.5 s for it). A thread also needed the folds written by a writer process:
inline they go through APSW's own copy of SQLite, which cannot see a reader's locks taken
through the stdlib's copy in the same process (POSIX locks are per process), so it could restart
the WAL under the snapshot.

Forked when the arm begins, before its store exists (`PendingPrediction()`), and told the rest
at the rollout start (`begin`). Forked before, not at the start: a process forked from one with
an open SQLite connection inherits SQLite's in-process lock bookkeeping for that file, so a
connection it opens could believe it holds a WAL read lock it does not hold ("do not carry an
open connection across fork"). Forked, not spawned: it starts in milliseconds with the
simulator's modules loaded (a fresh interpreter needs ~0.8 s of imports, longer than a 100k run
takes to reach its rollout), and it loads the prediction's own modules while the run sets up.
The child opens the store file anew, begins its read transaction (`Store.snapshot`) and says so
before the simulation writes on: it sees the store as it is at the start, whatever the run
writes meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import pickle
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.store import Store
from fleet_sim._interrupt import leave_interrupts_to_the_coordinator
from fleet_sim._memory import trim_freed_memory

if TYPE_CHECKING:
    from fleet_sim.rollout.controller import RolloutRecord

__all__ = ["COMM", "PROCESS_NAME", "PendingPrediction", "forecast"]

PROCESS_NAME = "transition-prediction"
COMM = "fw-prediction"  # the process's name for the system (ps, top, /proc/PID/comm)


def forecast(store: Store, old_dir: Path, new_dir: Path, now: dt.datetime) -> dict[str, float]:
    """The transition report's predicted new FP alerts per day per org id (empty: no data)."""
    from backend.analysis.transition import predict_transition

    report = predict_transition(store, old_dir, new_dir, now=now)
    value = {o: t.predicted_new_fp_alerts_per_day for o, t in report.per_org.items()}
    del report
    trim_freed_memory()  # the prediction read every aggregate row so far; the run goes on
    return value


def _send_error(conn: Connection, exc: BaseException) -> None:
    try:
        conn.send(("error", exc))
    except (pickle.PicklingError, TypeError, AttributeError):  # an exception that will not pickle
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _serve(conn: Connection) -> None:
    """The child: wait for the start, take the snapshot, say so, compute, send the value."""
    leave_interrupts_to_the_coordinator()
    with contextlib.suppress(OSError):  # its name in ps and top (Linux; 15 bytes at most)
        Path("/proc/self/comm").write_text(COMM)
    import backend.analysis.transition  # noqa: F401 - loaded while the run sets up

    try:
        request = conn.recv()
    except EOFError:
        return
    if request is None:  # the arm ended without this rollout start
        return
    db, busy_timeout_ms, old_dir, new_dir, now = request
    try:
        store = Store(db, busy_timeout_ms=busy_timeout_ms, autocheckpoint=False)
        try:
            snap = store.snapshot()
        finally:
            store.close()
    except BaseException as exc:
        _send_error(conn, exc)
        return
    try:
        conn.send(("ready", None))
        wall, cpu = time.perf_counter(), time.process_time()
        value = forecast(snap, Path(old_dir), Path(new_dir), now)
        timing = (time.perf_counter() - wall, time.process_time() - cpu)
        conn.send(("value", (value, timing)))
    except BaseException as exc:  # handed to the run, which raises it
        _send_error(conn, exc)
    finally:
        snap.close()


class PendingPrediction:
    """A transition prediction computed in a process beside the simulation.

    Made (forked) when an arm begins, before its store is opened; `begin` at the rollout start;
    `result` (or `fill`) waits for the value. A run owning one must call `result`, `fill` or
    `cancel` on every exit path: each joins the process. `record`, when set, is the rollout
    record `fill` writes the value into; `wall_s` and `cpu_s` are the child's, once known.
    """

    def __init__(self) -> None:
        self.record: RolloutRecord | None = None
        self.wall_s = self.cpu_s = 0.0
        self._value: dict[str, float] | None = None
        self._error: BaseException | None = None
        self._begun = self._done = False
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), name=PROCESS_NAME, daemon=True)
        self._proc.start()
        child.close()

    def begin(
        self, db: str, busy_timeout_ms: int, old_dir: Path, new_dir: Path, now: dt.datetime
    ) -> None:
        """Start the prediction on store file `db`, which the run must not write until this returns.

        Returns once the child has begun its read of the store, so nothing the run writes
        afterwards can reach it.

        Raises:
            BaseException: what kept the child from opening the store or taking its snapshot.
        """
        self._begun = True
        self._conn.send((db, busy_timeout_ms, str(old_dir), str(new_dir), now))
        kind, payload = self._receive()
        if kind != "ready":
            self._finish(None, payload)
            raise payload

    def _receive(self) -> tuple[str, Any]:
        """The child's next message; its death without one is an error."""
        wait([self._conn, self._proc.sentinel])
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self._proc.join()
            err = RuntimeError(f"the transition prediction's process died ({self._proc.exitcode})")
            return "error", err
        return str(kind), payload

    def _finish(self, value: dict[str, float] | None, error: BaseException | None) -> None:
        self._value, self._error, self._done = value, error, True
        self._proc.join()
        self._conn.close()

    def _take(self) -> None:
        kind, payload = self._receive()
        if kind == "value":
            value, (self.wall_s, self.cpu_s) = payload
            self._finish(value, None)
        else:
            self._finish(None, payload)

    def result(self) -> dict[str, float]:
        """Wait for the prediction; its per-org forecast.

        Raises:
            BaseException: whatever the prediction raised in its process.
        """
        if not self._done:
            self._take()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    def fill(self) -> None:
        """Wait for the prediction and write it into `record` (see `result` for what it raises)."""
        value = self.result()
        if self.record is not None:
            self.record.prediction = value

    def cancel(self) -> BaseException | None:
        """Stop the prediction (a run that failed waits no longer); the error it ended with."""
        if not self._done:
            if not self._begun:
                self._conn.send(None)  # never begun: it exits
                self._finish(None, None)
            elif self._conn.poll():  # it finished: keep what it said
                self._take()
            else:
                self._proc.terminate()
                self._finish(None, None)
        return self._error
