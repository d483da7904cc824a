"""Where the cohort mode's daily folds are computed and written: inline, or in a writer process.

A day of a million endpoints is about 13 million delivered events and 800 thousand aggregate
rows; sorting them into rows and writing those rows to SQLite takes as long as simulating the
day. On a machine with a second core, `ProcessFoldWriter` does that work in a process of its
own, with its own connection to the same SQLite file (WAL: the simulation's other writes wait
at most one chunk's transaction, see `backend_link._WRITE_CHUNK_ROWS`), while the simulation
goes on with the next day. The writer only appends to the WAL; the simulation, which has time
to spare, copies it back into the database file hourly (`Store.checkpoint`). The fold itself
is the same function either way (`InProcessLink.ingest_folded`), and aggregate upserts commute
(sums, sketch unions, min and max), so the rows written do not depend on which writer wrote
them or when.

At most one fold is in flight: `submit` waits for the previous one, which bounds memory to two
days of events. `join` waits for everything submitted (the cohort engine joins before anyone
reads the aggregates: the transition prediction, the end of the run); a failure in the writer
process is raised there, in the simulation's process.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from backend.store import Store
from fleet_sim._memory import keep_freed_memory
from fleet_sim.backend_link import InProcessLink
from fleet_sim.errors import FoldWriterError

__all__ = [
    "PROCESS_MIN_ENDPOINTS",
    "FoldWriter",
    "FoldWriterError",
    "InlineFoldWriter",
    "ProcessFoldWriter",
    "fold_writer_for",
]

PROCESS_MIN_ENDPOINTS = 200_000  # below this a fold takes well under a second: stay inline
_COLS = ("ep", "sample", "model", "verdict", "t_ms")


def _ms_offsets(parts: Sequence[Mapping[str, Arr]]) -> tuple[int, Arr]:
    """Milliseconds after the parts' first event, and that first event's."""
    base = min(int(p["t_ms"].min()) for p in parts)
    return base, np.concatenate([p["t_ms"] - np.uint32(base) for p in parts])


Arr = npt.NDArray[Any]


class FoldWriter(Protocol):
    """Takes a fold's delivered events; `join` returns once they are in the aggregates.

    Events come as parts (column dicts: `ep`, `sample`, `model`, `verdict` and `t_ms`,
    milliseconds since the simulation's second 0 as uint32), so nobody builds a day-sized
    copy just to hand it over; `epoch_ms` is second 0 in milliseconds since the Unix epoch.
    """

    def submit(
        self, parts: Sequence[Mapping[str, Arr]], *, epoch_ms: int, now: dt.datetime
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
        self, parts: Sequence[Mapping[str, Arr]], *, epoch_ms: int, now: dt.datetime
    ) -> None:
        """Fold and write now."""
        cols = {k: np.concatenate([p[k] for p in parts]) for k in ("ep", "sample", "model",
                                                                  "verdict")}  # fmt: skip
        base, offsets = _ms_offsets(parts)
        self.link.ingest_folded(
            **cols, t_ms=offsets, t_base_ms=epoch_ms + base, ep_org=self.ep_org, now=now
        )

    def join(self) -> None:
        """Nothing is ever pending."""

    def close(self) -> None:
        """Nothing to stop."""


# --- the writer process -----------------------------------------------------------------------
# A child `python -m fleet_sim.fold_writer` (not multiprocessing: it would re-import the caller's
# main module) reads one JSON line per fold from stdin and answers one JSON line on stdout.


def _serve(setup: Path) -> None:
    """The writer process: open the store, then fold each hand-over file it is sent."""
    keep_freed_memory()
    meta = json.loads((setup / "setup.json").read_text())
    with np.load(setup / "arrays.npz") as arrays:
        features, ep_org = arrays["features"], arrays["ep_org"]
    link = InProcessLink(
        Store(meta["db"], synchronous="NORMAL", autocheckpoint=False),
        tuple(meta["org_names"]),
        features,
        tuple(meta["sha256"]),
    )
    link.org_ids = list(meta["org_ids"])
    link.prepare(int(ep_org.size))  # while the first day is still being simulated
    for line in sys.stdin:
        job = json.loads(line)
        try:
            where = Path(job["path"])
            cols = {k: np.load(where / f"{k}.npy", mmap_mode="r") for k in _COLS}
            shutil.rmtree(where)  # the mappings keep the data until they go
            before, cpu = link.batches, time.process_time()
            rows = link.ingest_folded(
                ep=cols["ep"], sample=cols["sample"], model=cols["model"],
                verdict=cols["verdict"], t_ms=cols["t_ms"], t_base_ms=int(job["t_base_ms"]),
                ep_org=ep_org, now=dt.datetime.fromisoformat(job["now"]),
            )  # fmt: skip
            del cols
            answer: dict[str, object] = {
                "rows": rows, "batches": link.batches - before,
                "cpu_s": time.process_time() - cpu,
            }  # fmt: skip
        except Exception as exc:  # reported to the simulation, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    link.store.close()


@dataclass
class ProcessFoldWriter:
    """Folds in a writer process of its own (one fold in flight at a time)."""

    link: InProcessLink
    ep_org: npt.NDArray[np.int32]
    _proc: subprocess.Popen[str] = field(init=False)
    _dir: tempfile.TemporaryDirectory[str] = field(init=False)
    _in_flight: int = 0
    _seq: int = 0
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
        np.savez(setup / "arrays.npz", features=self.link.features, ep_org=self.ep_org)
        self._proc = subprocess.Popen(  # noqa: S603 - our own module, our own interpreter
            [sys.executable, "-m", "fleet_sim.fold_writer", str(setup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def submit(
        self, parts: Sequence[Mapping[str, Arr]], *, epoch_ms: int, now: dt.datetime
    ) -> None:
        """Hand the events to the writer process (after the previous fold is written).

        Each column goes to a plain .npy file part by part (no day-sized copy, no archive,
        no checksum pass); times go as uint32 milliseconds after the fold's first event.
        """
        self.join()
        self._seq += 1
        path = Path(self._dir.name) / f"fold-{self._seq:06d}"
        path.mkdir()
        base = min(int(p["t_ms"].min()) for p in parts)
        for k in _COLS:
            _write_npy(path / f"{k}.npy", [p[k] - np.uint32(base) if k == "t_ms" else p[k]
                                           for p in parts])  # fmt: skip
        assert self._proc.stdin is not None
        job = {"path": str(path), "now": now.isoformat(), "t_base_ms": epoch_ms + base}
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        self._in_flight += 1

    def join(self) -> None:
        """Wait for the folds in flight; count their rows and batches on the link.

        Raises:
            FoldWriterError: the writer process failed or died.
        """
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


def _write_npy(path: Path, arrays: Sequence[Arr]) -> None:
    """One .npy file holding `arrays` end to end, written piece by piece."""
    dtype = np.result_type(*arrays)
    n = sum(a.size for a in arrays)
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
        )
        for a in arrays:
            np.ascontiguousarray(a, dtype).tofile(f)


def fold_writer_for(link: InProcessLink, ep_org: npt.NDArray[np.int32]) -> FoldWriter:
    """A writer process for large fleets on a machine with a spare core, else inline."""
    if ep_org.size >= PROCESS_MIN_ENDPOINTS and (os.cpu_count() or 1) > 1:
        return ProcessFoldWriter(link, ep_org)
    return InlineFoldWriter(link, ep_org)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
