"""On-write watching: decide a file dropped or rewritten in a watched folder within a second.

inotify (through watchdog) reports creates, writes, closes and moves under the watched folders,
recursively. Each path waits until it has been quiet for `debounce_s` (a file written in many
chunks is decided once, after its last write), then goes to `decide_path`, the daemon's own
decision path. A `block` or `blocklisted` file is moved into quarantine when one is given.
Where inotify is missing, watchdog falls back to polling, and the daemon's periodic scan of the
same folders still runs.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from agent._clock import monotonic_s
from agent.decision import DENY_VERDICTS
from agent.errors import QuarantineError
from agent.protect.quarantine import Quarantine, QuarantineRecord
from agent.protect.scan import FileStatus, ScanResult

__all__ = ["WatchStats", "Watcher"]


@dataclass(slots=True)
class WatchStats:
    """Counters since start."""

    events: int = 0
    decided: int = 0
    quarantined: int = 0
    errors: int = 0
    last_error: str = field(default="")


class _Handler(FileSystemEventHandler):
    def __init__(self, touch: Callable[[str], None]) -> None:
        self._touch = touch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            if not event.is_directory:
                self._touch(os.fsdecode(event.dest_path))
            return
        if isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
            self._touch(os.fsdecode(event.src_path))


class Watcher:
    """An `EventSource` (see `agent.daemon`) that decides files as they are written.

    Args:
        paths: folders to watch recursively.
        debounce_s: quiet time after the last event before a file is decided (0.01..5 s).
        quarantine: where blocked files go (None: reported and left in place).
        clock: aware UTC time for quarantine records.
        on_quarantine: receives each quarantine record.
        skip: True for a path that needs no decision (already decided unchanged); the agent's
            `Agent.already_decided`, shared with its periodic scan.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        clock: Callable[[], dt.datetime],
        debounce_s: float = 0.2,
        quarantine: Quarantine | None = None,
        on_quarantine: Callable[[QuarantineRecord], None] | None = None,
        skip: Callable[[str], bool] | None = None,
    ) -> None:
        if not 0.01 <= debounce_s <= 5:
            raise ValueError("debounce_s must be within 0.01..5")
        self.paths = tuple(os.path.abspath(os.fspath(p)) for p in paths)
        self.clock = clock
        self.debounce_s = debounce_s
        self.quarantine = quarantine
        self.on_quarantine = on_quarantine
        self.skip = skip
        self.stats = WatchStats()
        self._due: dict[str, float] = {}
        self._cond = threading.Condition()

    def _touch(self, path: str) -> None:
        with self._cond:
            self.stats.events += 1
            self._due[path] = monotonic_s() + self.debounce_s
            self._cond.notify()

    def _take_due(self, stop: threading.Event) -> list[str]:
        """Wait until some path has been quiet for `debounce_s` (or `stop`); return those."""
        with self._cond:
            while not stop.is_set():
                now = monotonic_s()
                due = [p for p, t in self._due.items() if t <= now]
                if due:
                    for p in due:
                        del self._due[p]
                    return due
                wait = min(self._due.values()) - now if self._due else 0.2
                self._cond.wait(timeout=min(max(wait, 0.005), 0.2))
        return []

    def run(self, decide_path: Callable[[str], ScanResult], stop: threading.Event) -> None:
        """Watch until `stop` is set, deciding each written file once it is quiet.

        Raises:
            OSError: a watched folder cannot be watched (missing, inotify limits).
        """
        observer = Observer()
        handler = _Handler(self._touch)
        for path in self.paths:
            observer.schedule(handler, path, recursive=True)
        observer.start()
        try:
            while not stop.is_set():
                for path in self._take_due(stop):
                    self._decide(path, decide_path)
        finally:
            observer.stop()
            observer.join(timeout=5)

    def _decide(self, path: str, decide_path: Callable[[str], ScanResult]) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return  # gone again (a temporary file): nothing to decide
        if not stat.S_ISREG(st.st_mode) or (self.skip is not None and self.skip(path)):
            return
        result = decide_path(path)
        self.stats.decided += 1
        d = result.decision
        if (
            self.quarantine is None
            or result.status is not FileStatus.SCANNED
            or d is None
            or d.verdict not in DENY_VERDICTS
        ):
            return
        try:
            record = self.quarantine.quarantine(
                path,
                verdict=d.verdict.value,
                reason=d.reason.value,
                model_version=result.model_version,
                now=self.clock(),
            )
        except QuarantineError as exc:
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            return
        self.stats.quarantined += 1
        if self.on_quarantine is not None:
            self.on_quarantine(record)
