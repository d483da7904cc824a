"""Where the cohort mode's daily folds are computed and written: inline, or in a writer process.

A day of a million endpoints is about 13 million delivered events and 800 thousand aggregate
rows; sorting them into rows and writing those rows to SQLite takes as long as simulating the
day. On a machine with a second core, `ProcessFoldWriter` does that work in a process of its
own, with its own connection to the same SQLite file (WAL: the simulation's other writes wait
at most one chunk's transaction, see `backend_link._WRITE_CHUNK_ROWS`), while the simulation
goes on with the next day. The fold itself is the same function either way
(`InProcessLink.ingest_folded`), and aggregate upserts commute (sums, sketch unions, min and
max), so the rows written do not depend on which writer wrote them or when.

At most one fold is in flight: `submit` waits for the previous one, which bounds memory to two
days of events. `join` waits for everything submitted (the cohort engine joins before anyone
reads the aggregates: the transition prediction, the end of the run); a failure in the writer
process is raised there, in the simulation's process.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from backend.store import Store
from fleet_sim.backend_link import InProcessLink

__all__ = [
    "PROCESS_MIN_ENDPOINTS",
    "FoldWriter",
    "InlineFoldWriter",
    "ProcessFoldWriter",
    "fold_writer_for",
]

PROCESS_MIN_ENDPOINTS = 200_000  # below this a fold takes well under a second: stay inline
_MS_PER_DAY = 86_400_000

Arr = npt.NDArray[Any]


class FoldWriter(Protocol):
    """Takes a fold's delivered events; `join` returns once they are in the aggregates."""

    def submit(
        self, *, ep: Arr, sample: Arr, model: Arr, verdict: Arr, t_ms: Arr, now: dt.datetime
    ) -> None:
        """Fold these events into the backend's aggregates (now or later, before `join`)."""
        ...

    def join(self) -> None:
        """Wait until every submitted fold is written; raise the writer's failure, if any."""
        ...

    def close(self) -> None:
        """Stop the writer (after `join`, or when the run failed)."""
        ...


@dataclass
class InlineFoldWriter:
    """Folds in the simulation's own process, at once."""

    link: InProcessLink
    ep_org: npt.NDArray[np.int32]

    def submit(
        self, *, ep: Arr, sample: Arr, model: Arr, verdict: Arr, t_ms: Arr, now: dt.datetime
    ) -> None:
        """Fold and write now."""
        self.link.ingest_folded(
            day=t_ms // _MS_PER_DAY, org=self.ep_org[ep], sample=sample, model=model,
            verdict=verdict, ep=ep, t_ms=t_ms, now=now,
        )  # fmt: skip

    def join(self) -> None:
        """Nothing is ever pending."""

    def close(self) -> None:
        """Nothing to stop."""


# --- the writer process -----------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(
    db: str,
    org_names: tuple[str, ...],
    org_ids: list[str],
    features: npt.NDArray[np.float32],
    sha256: tuple[str, ...],
    ep_org: npt.NDArray[np.int32],
) -> None:
    link = InProcessLink(Store(db, synchronous="NORMAL"), org_names, features, sha256)
    link.org_ids = list(org_ids)
    _worker.update(link=link, ep_org=ep_org)


def _fold_job(path: str, now: dt.datetime) -> tuple[int, int]:
    with np.load(path) as data:
        cols = {k: data[k] for k in ("ep", "sample", "model", "verdict", "t_ms")}
    os.unlink(path)
    link: InProcessLink = _worker["link"]
    before = link.batches
    ep = cols["ep"]
    rows = link.ingest_folded(
        day=cols["t_ms"] // _MS_PER_DAY, org=_worker["ep_org"][ep], sample=cols["sample"],
        model=cols["model"], verdict=cols["verdict"], ep=ep, t_ms=cols["t_ms"], now=now,
    )  # fmt: skip
    return rows, link.batches - before


@dataclass
class ProcessFoldWriter:
    """Folds in a writer process of its own (one fold in flight at a time)."""

    link: InProcessLink
    ep_org: npt.NDArray[np.int32]
    _pool: ProcessPoolExecutor = field(init=False)
    _dir: tempfile.TemporaryDirectory[str] = field(init=False)
    _pending: list[Future[tuple[int, int]]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        where = Path(self.link.store.path).parent
        self._dir = tempfile.TemporaryDirectory(prefix="folds-", dir=where)
        self._pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(
                self.link.store.path, self.link.org_names, self.link.org_ids,
                self.link.features, self.link.sha256, self.ep_org,
            ),
        )  # fmt: skip

    def submit(
        self, *, ep: Arr, sample: Arr, model: Arr, verdict: Arr, t_ms: Arr, now: dt.datetime
    ) -> None:
        """Hand the events to the writer process (after the previous fold is written)."""
        self.join()
        self._seq += 1
        path = Path(self._dir.name) / f"fold-{self._seq:06d}.npz"
        np.savez(path, ep=ep, sample=sample, model=model, verdict=verdict, t_ms=t_ms)
        self._pending.append(self._pool.submit(_fold_job, str(path), now))

    def join(self) -> None:
        """Wait for the folds in flight; count their rows and batches on the link."""
        pending, self._pending = self._pending, []
        for fut in pending:
            rows, batches = fut.result()
            self.link.rows_ingested += rows
            self.link.batches += batches

    def close(self) -> None:
        """Stop the writer process and remove the hand-over files."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._dir.cleanup()


def fold_writer_for(link: InProcessLink, ep_org: npt.NDArray[np.int32]) -> FoldWriter:
    """A writer process for large fleets on a machine with a spare core, else inline."""
    if ep_org.size >= PROCESS_MIN_ENDPOINTS and (os.cpu_count() or 1) > 1:
        return ProcessFoldWriter(link, ep_org)
    return InlineFoldWriter(link, ep_org)
