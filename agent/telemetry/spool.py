"""The telemetry spool: batches on disk while offline, bounded, oldest dropped first.

Invariants (`Spool`):
- a batch is on disk in full or not at all (`agent.update.atomic.write_atomic`); a crash leaves at
  most a stray `*.tmp` that the next open removes;
- the spool never holds more than `max_bytes`; making room drops the oldest batches first
  (`drop_oldest`, the one drop rule, which the simulator's endpoints use too), and every
  dropped batch and event is counted (persisted in `dropped.json`) and reported to the
  backend in the next batch's `dropped` field;
- a batch leaves the spool only after the backend acknowledged it (2xx, replays included) or
  rejected it as malformed (4xx other than 401/403/408/429: it would never succeed).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.errors import SpoolFullError
from agent.telemetry.wire import HealthCount, TelemetryEvent, encode_batch
from agent.update.atomic import write_atomic

__all__ = ["Spool", "keep_newest"]


def keep_newest(
    sizes: npt.ArrayLike,
    room: int,
    *,
    order: npt.ArrayLike | None = None,
    group: npt.ArrayLike | None = None,
) -> npt.NDArray[np.bool_]:
    """The spool's bound, the one drop rule: keep the newest entries that fit in `room`.

    Per `group` (one spool each; all one spool when None), entries are taken newest first by
    `order` (their position when None; ties keep their positions) while their summed `sizes`
    stay within `room`; every older entry is dropped. The agent's `Spool` applies it to its
    batch files in bytes, the simulator's endpoints to their events one by one.
    """
    w = np.asarray(sizes, np.int64)
    n = w.size
    pos = np.arange(n) if order is None else np.asarray(order)
    grp = np.zeros(n, np.int64) if group is None else np.asarray(group)
    o = np.lexsort((-pos, grp))  # per group, newest first
    g = grp[o]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if n else np.zeros(0, np.int64)
    total = np.cumsum(w[o])
    before = np.repeat(total[starts] - w[o][starts], np.diff(np.r_[starts, n]))
    keep = np.empty(n, bool)
    keep[o] = (total - before) <= room
    return keep


class Spool:
    """Batches waiting to be sent, one file each, oldest first; bounded by `max_bytes`.

    Raises:
        SpoolFullError: from `put`, when one batch alone is larger than the bound (it is
            dropped and counted).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        if max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1 KiB")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        counters = self._read_counters()
        self.dropped_batches = counters.get("dropped_batches", 0)
        self.dropped_events = counters.get("dropped_events", 0)
        files = self.pending()
        self._seq = int(files[-1].name.split("-", 1)[0]) + 1 if files else 0

    def _read_counters(self) -> dict[str, int]:
        try:
            data = json.loads((self.directory / "dropped.json").read_text(encoding="utf-8"))
            return {k: int(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _write_counters(self) -> None:
        doc = {"dropped_batches": self.dropped_batches, "dropped_events": self.dropped_events}
        write_atomic(self.directory / "dropped.json", json.dumps(doc).encode())

    def pending(self) -> list[Path]:
        """The spooled batch files, oldest first."""
        return sorted(self.directory.glob("*.mpk"))

    def size_bytes(self) -> int:
        """Bytes currently held by spooled batches."""
        return sum(p.stat().st_size for p in self.pending())

    def _drop(self, path: Path) -> None:
        events = int(path.name.rsplit("-", 1)[1].split(".", 1)[0])
        path.unlink(missing_ok=True)
        self.dropped_batches += 1
        self.dropped_events += events

    def put(self, events: Sequence[TelemetryEvent], health: Sequence[HealthCount] = ()) -> Path:
        """Encode `events` and `health` as one batch and store it, dropping the oldest if needed.

        The batch carries the drop count including the drops it causes itself, so it is encoded
        again only when it made room; 16 bytes of slack cover the count's longer encoding.
        """
        key = uuid.uuid4().hex
        data = encode_batch(events, key=key, dropped_events=self.dropped_events, health=health)
        size = len(data) + 16
        if size > self.max_bytes:
            self.dropped_batches += 1
            self.dropped_events += len(events)
            self._write_counters()
            raise SpoolFullError(
                f"a batch of {size} bytes exceeds the spool bound of {self.max_bytes}"
            )
        files = self.pending()
        keep = keep_newest([p.stat().st_size for p in files], self.max_bytes - size)
        for path in (f for f, k in zip(files, keep, strict=True) if not k):
            self._drop(path)
        if not keep.all():
            self._write_counters()
            data = encode_batch(events, key=key, dropped_events=self.dropped_events, health=health)
        path = self.directory / f"{self._seq:016d}-{len(events)}.mpk"
        self._seq += 1
        write_atomic(path, data)
        return path
