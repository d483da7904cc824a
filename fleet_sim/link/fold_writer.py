"""Where the cohort mode's folded rows are written: inline, or in a writer process.

A day of a million endpoints is about 13 million delivered events and 800 thousand aggregate
rows. The shards fold their own events into rows (`fleet_sim.link.fold`, numpy, in parallel);
writing those rows to SQLite takes about a second of CPU a day (`Store.ingest_encoded`'s packed
arrays), which the simulation need not wait for. On a machine with a second core,
`ProcessFoldWriter` writes in a process of its own, with its own connection to the same
SQLite file (WAL: the simulation's other writes wait at most one chunk's transaction, see
`link.in_process._WRITE_CHUNK_ROWS`), while the simulation goes on with the next day. The write is
the same function either way (`InProcessLink.write_rows`). A new day's rows are appended
(`Store.ingest_encoded`) and an older day's are upserted, and upserts commute (sums, sketch
unions, min and max), so the aggregates do not depend on which writer wrote them or when.

The writer process also does what would otherwise wait at the simulation's barriers or its end:
after each fold it writes the feature vectors of the pairs that fold reported first
(`InProcessLink.write_vectors`: the same references whenever written, first report wins, one
vector per sample) and copies the WAL back into the database file (`Store.checkpoint`,
PASSIVE, never waiting on a reader), so `join` and the store's close find little left.

Not a thread: APSW carries its own SQLite library beside the one the stdlib's `sqlite3` links,
and two copies of SQLite in one process cannot see each other's locks (POSIX locks belong to the
process, and each copy keeps its own table of them), so an APSW write in one thread beside a
stdlib connection in another corrupts the file or fails ("locking protocol"); the simulation's
store speaks through the stdlib. Across processes the locks work.

At most one fold is in flight: `submit` waits for the previous one, which bounds memory to two
days of rows. `join` has the feature vectors of the pairs folded so far written and waits for
everything submitted (the cohort engine joins before anyone reads the store: the transition
prediction, the end of the run); a failure in the writer process is raised there (or at the
next `submit`), in the simulation's process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from backend.store import Store
from fleet_sim._interrupt import leave_interrupts_to_the_coordinator
from fleet_sim._memory import trim_freed_memory
from fleet_sim.errors import FoldWriterError
from fleet_sim.link.fold import FoldedRows
from fleet_sim.link.in_process import InProcessLink

__all__ = [
    "PROCESS_MIN_ENDPOINTS",
    "SIM_STORE_SYNCHRONOUS",
    "STORE_BUSY_TIMEOUT_MS",
    "FoldWriter",
    "FoldWriterError",
    "InlineFoldWriter",
    "ProcessFoldWriter",
    "fold_writer_for",
    "writes_in_a_process",
]

PROCESS_MIN_ENDPOINTS = 200_000  # below this a fold takes well under a second: stay inline
# The coordinator's store and the writer process's take turns on one file: a day's write holds
# the write lock for seconds on a loaded machine, and the coordinator's policy change (a kill
# switch at 1M endpoints) failed with "database is locked" at the server's 5 s. Both sides
# belong to one run, so the wait is bounded by the other's write, not by a client's patience.
STORE_BUSY_TIMEOUT_MS = 600_000
# A run's store is the run's scratch: nothing is acknowledged to anyone while it is written, and a
# run cut short by a crash of the machine is run again. Without fsyncs (SQLite's `synchronous`
# OFF: a crash of the process still loses nothing written) the writer's checkpoints stopped
# waiting for the disk: 1M x 30 d 100.7-108.0 s -> 87.1-91.2 s, writer 61-64 -> 55-56 s CPU.
SIM_STORE_SYNCHRONOUS = "OFF"
_COLS = ("day", "org", "sample", "model", "verdict", "count", "first", "last", "start", "size")


class FoldWriter(Protocol):
    """Takes a fold's rows; `join` returns once they are in the aggregates.

    Rows come as `fleet_sim.link.fold.FoldedRows`, in the aggregates table's key order.
    """

    def submit(self, rows: FoldedRows, *, now: dt.datetime) -> None:
        """Write these rows into the backend's aggregates (now or later, before `join`)."""
        ...

    def join(self) -> None:
        """Write the vectors the folds reported and wait until everything submitted is written.

        Raises the writer's failure, if any.
        """
        ...

    def close(self) -> None:
        """Stop the writer (after `join`, or when the run failed)."""
        ...


@dataclass
class InlineFoldWriter:
    """Folds in the simulation's own process, at once."""

    link: InProcessLink
    _now: dt.datetime | None = None

    def submit(self, rows: FoldedRows, *, now: dt.datetime) -> None:
        """Write now, then copy the WAL back.

        The bulk connection never checkpoints (`Store._bulk`), so without this the WAL would
        hold every fold until a stdlib commit's autocheckpoint or the close: the same pages
        copied either way, here a fold at a time. Only after rows were written: a checkpoint
        right after a stdlib reader's snapshot began, with nothing written since, copies the
        whole WAL back, and the next APSW write would then restart the WAL under that reader
        (it cannot see the reader's lock: see `Store._bulk`).
        """
        if self.link.write_rows(rows, now):
            self.link.store.checkpoint()
        self._now = now

    def join(self) -> None:
        """Write the vectors reported since the last join (rows are never pending)."""
        if self._now is not None:
            self.link.write_vectors(self._now)

    def close(self) -> None:
        """Nothing to stop."""


def _own_link(
    db: str,
    org_names: Sequence[str],
    org_ids: Sequence[str],
    features: npt.NDArray[np.float32],
    sha256: Sequence[str],
) -> InProcessLink:
    """A writer's link: a `Store` of its own (its own connections) on the run's file.

    It checkpoints after each chunk of rows it writes (`InProcessLink.checkpoint_chunks`); the
    writer also calls `Store.checkpoint` after each job (the vectors).
    """
    store = Store(db, synchronous=SIM_STORE_SYNCHRONOUS, busy_timeout_ms=STORE_BUSY_TIMEOUT_MS)
    link = InProcessLink(store, tuple(org_names), features, tuple(sha256))
    link.org_ids = list(org_ids)
    link.checkpoint_chunks = True
    return link


# --- the writer process -----------------------------------------------------------------------
# A child `python -m fleet_sim.link.fold_writer` (not multiprocessing: it would re-import the
# caller's main module) reads one JSON line per fold from stdin and answers one JSON line on stdout.


def _write_job(link: InProcessLink, job: dict[str, str]) -> int:
    """One hand-over: a fold's rows (`path`) and their new pairs' vectors, or a join's vectors.

    Returns the rows written.
    """
    now = dt.datetime.fromisoformat(job["now"])
    if "path" not in job:
        link.write_vectors(now)
        return 0
    where = Path(job["path"])
    rows = _load_rows(where)
    shutil.rmtree(where)
    written = link.write_rows(rows, now)
    del rows  # before the vectors: a day of rows
    link.write_vectors(now)  # here, not at the join: the simulation does not wait for them
    return written


def _load_rows(where: Path) -> FoldedRows:
    """A hand-over's rows, sketches in row order (`FoldedRows.sketches_in_row_order`).

    `write_rows` binds each chunk's sketch bytes, which SQLite copies and its cached statements
    keep: in the fold's order a chunk's sketches span the whole day's blob, and a replayed 1M-row
    day grew the writer by ~230 MB of such copies (up to 430 MB); in row order each chunk binds
    its own few megabytes. The sketches are gathered before the other columns are read, so the
    gather's copies never meet a day's columns.
    """
    start, size = np.load(where / "start.npy"), np.load(where / "size.npy")
    blob = (where / "sketches.bin").read_bytes()
    sketches, start = FoldedRows.sketches_in_row_order(blob, start, size)
    del blob
    cols = {k: np.load(where / f"{k}.npy") for k in _COLS if k not in ("start", "size")}
    return FoldedRows(**cols, sketches=sketches, start=start, size=size)


def _serve(setup: Path) -> None:
    """The writer process: open the store, then write each hand-over it is sent.

    Without `keep_freed_memory`: what a job frees goes back to the system at once rather than
    at the job's end (a replayed 1M-row day: peak 271 -> 235-241 MB, the same CPU).
    """
    leave_interrupts_to_the_coordinator()
    meta = json.loads((setup / "setup.json").read_text())
    with np.load(setup / "arrays.npz") as arrays:
        features = arrays["features"]
    link = _own_link(meta["db"], meta["org_names"], meta["org_ids"], features, meta["sha256"])
    cpu = time.process_time()
    failed = ""  # a checkpoint's failure, answered to the next job
    for line in sys.stdin:
        job = json.loads(line)
        answer: dict[str, object]
        try:
            if failed:
                raise FoldWriterError(failed)
            before = link.batches
            rows = _write_job(link, job)
            answer = {
                "rows": rows, "batches": link.batches - before,
                "cpu_s": time.process_time() - cpu,  # since the last answer: checkpoint too
            }  # fmt: skip
        except Exception as exc:  # reported to the simulation, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        cpu = time.process_time()
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        try:  # after the answer: the simulation waits for the rows, not for this copy
            link.store.checkpoint()
        except Exception as exc:
            failed = f"checkpoint: {type(exc).__name__}: {exc}"
        trim_freed_memory()  # a day of rows, not needed again until the next hand-over
    link.store.close()


@dataclass
class ProcessFoldWriter:
    """Folds in a writer process of its own (one fold in flight at a time)."""

    link: InProcessLink
    _proc: subprocess.Popen[str] = field(init=False)
    _dir: tempfile.TemporaryDirectory[str] = field(init=False)
    _in_flight: int = 0
    _seq: int = 0
    _now: dt.datetime | None = None
    cpu_s: float = 0.0
    wait_s: float = 0.0

    def __post_init__(self) -> None:
        where = Path(self.link.store.path).parent
        self._dir = tempfile.TemporaryDirectory(prefix="folds-", dir=where)
        setup = Path(self._dir.name)
        meta = {
            "db": self.link.store.path, "org_names": list(self.link.org_names),
            "org_ids": list(self.link.org_ids), "sha256": list(self.link.sha256),
        }  # fmt: skip
        (setup / "setup.json").write_text(json.dumps(meta))
        np.savez(setup / "arrays.npz", features=self.link.features)
        self._proc = subprocess.Popen(  # noqa: S603 - our own module, our own interpreter
            [sys.executable, "-m", "fleet_sim.link.fold_writer", str(setup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def submit(self, rows: FoldedRows, *, now: dt.datetime) -> None:
        """Hand the rows to the writer process (after the previous fold is written).

        Each column goes to a plain .npy file (no archive, no checksum pass), the sketches
        to one file of bytes.
        """
        self._wait()
        self._now = now
        self._seq += 1
        path = Path(self._dir.name) / f"fold-{self._seq:06d}"
        path.mkdir()
        for k in _COLS:
            np.save(path / f"{k}.npy", getattr(rows, k))
        (path / "sketches.bin").write_bytes(rows.sketches)
        self._send({"path": str(path), "now": now.isoformat()})

    def join(self) -> None:
        """Have the vectors written, wait for everything in flight; count rows and batches.

        Raises:
            FoldWriterError: the writer process failed or died.
        """
        if self._now is not None:
            self._send({"now": self._now.isoformat()})
        self._wait()

    def _send(self, job: dict[str, str]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        self._in_flight += 1

    def _wait(self) -> None:
        """Wait for the jobs in flight (see `join`)."""
        assert self._proc.stdout is not None
        while self._in_flight:
            waited = time.perf_counter()
            line = self._proc.stdout.readline()
            self.wait_s += time.perf_counter() - waited
            if not line:
                raise FoldWriterError(f"the fold writer exited ({self._proc.wait()})")
            self._in_flight -= 1
            answer = json.loads(line)
            if "error" in answer:
                raise FoldWriterError(f"the fold writer failed: {answer['error']}")
            self.link.rows_ingested += int(answer["rows"])
            self.link.batches += int(answer["batches"])
            self.cpu_s += float(answer["cpu_s"])

    def close(self) -> None:
        """Stop the writer process and remove the hand-over files."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._dir.cleanup()


def writes_in_a_process(store_path: str, n_endpoints: int) -> bool:
    """Whether `fold_writer_for` gives a fleet of this size a writer process.

    Yes for large fleets on a machine with a spare core; no when the store is in memory (no file
    for a second connection).
    """
    if store_path in (":memory:", "") or store_path.startswith("file::memory:"):
        return False
    return (os.cpu_count() or 1) >= 2 and n_endpoints >= PROCESS_MIN_ENDPOINTS


def fold_writer_for(link: InProcessLink, n_endpoints: int) -> FoldWriter:
    """A writer process where `writes_in_a_process`, else inline."""
    if writes_in_a_process(link.store.path, n_endpoints):
        return ProcessFoldWriter(link)
    return InlineFoldWriter(link)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
