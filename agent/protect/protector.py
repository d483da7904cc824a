"""Real-time execution control on Linux: answer fanotify permission events with `decide`.

`Protector` holds fanotify marks on the protected directories (every subdirectory at start) or
mounts, for `FAN_OPEN_EXEC_PERM` (and `FAN_OPEN_PERM` with `protect_open`), and answers each
permission event before the kernel lets the exec or open go on: a `block` or `blocklisted`
verdict denies (the process gets EPERM) and quarantines the file; every other verdict allows.

Threads and the "never worse than no agent" rules:
- The reader thread never scores. It answers at once: events of this process (the agent never
  blocks itself), every event while the mode is not `enforce` (detect_only and the kill switch
  allow everything, the file is still decided and reported), and cache hits. Anything else goes
  to a bounded queue; a full queue is answered allow and counted (`overflow`).
- Every queued event has a deadline (`deadline_ms`, default 250 ms): the reader answers allow
  when it passes, counts it, and the worker reports the late decision as `deadline`.
- Workers decide through the caller's `decide(path)` (the daemon's own scan path, so the same
  `agent.decision.decide`). The path is checked against the opened file (device, inode, size,
  mtime) before and after; if it changed meanwhile, the file the kernel opened is decided
  through `/proc/self/fd/N` instead, so a swapped path cannot smuggle in a verdict.
- The cache is keyed by (device, inode, size, mtime in ns). A `FAN_MODIFY`/`FAN_CLOSE_WRITE` on
  the file drops its entries; `invalidate()` (policy or model change) drops them all, and a
  decision started before an invalidation is not cached.
- If the process dies the kernel closes the group and lets every waiting event through.
"""

from __future__ import annotations

import datetime as dt
import errno
import heapq
import itertools
import os
import queue
import select
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from agent._clock import monotonic_s
from agent.decision import DENY_VERDICTS, Mode
from agent.errors import QuarantineError
from agent.heap import set_malloc_thresholds
from agent.protect import fanotify as fan
from agent.protect.quarantine import Quarantine, QuarantineRecord
from agent.protect.scan import FileStatus, ScanResult

__all__ = [
    "ProtectConfig",
    "ProtectReport",
    "ProtectStats",
    "Protector",
    "ReportKind",
]
"""The verdicts that deny an exec or open; every other verdict allows."""

_READ_BYTES = 24 * 1024
_STOP = object()


@dataclass(frozen=True, slots=True)
class ProtectConfig:
    """How the protector answers.

    Attributes:
        deadline_ms: past this, a queued event is answered allow (1..60000 ms).
        queue_size: events waiting for a worker; beyond it, allow and count (1..65536).
        workers: threads deciding in parallel (1..16).
        protect_open: also hold `FAN_OPEN_PERM` (every open, not only exec).
        cache_size: verdicts kept; the cache is emptied when it fills (16..10**7).
        fixed_malloc_thresholds: at start, fix the process's malloc thresholds so that a
            decision's temporaries are reused instead of faulted in anew each time
            (`agent.heap`: about 2 ms less per 1 MiB file decided, at most 8 MiB kept).
    """

    deadline_ms: float = 250.0
    queue_size: int = 256
    workers: int = 1
    protect_open: bool = False
    cache_size: int = 100_000
    fixed_malloc_thresholds: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.deadline_ms <= 60_000:
            raise ValueError("deadline_ms must be within 1..60000")
        if not 1 <= self.queue_size <= 65_536 or not 1 <= self.workers <= 16:
            raise ValueError("queue_size must be within 1..65536 and workers within 1..16")
        if not 16 <= self.cache_size <= 10**7:
            raise ValueError("cache_size must be within 16..10**7")


class ReportKind(StrEnum):
    """What a report is about."""

    DECIDED = "decided"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class ProtectReport:
    """One decided permission event, for telemetry and the console.

    `allowed` is what the kernel was told; `kind` is `deadline` when the answer went out
    (allow) before the decision; `quarantined` is the record when the file was moved away.
    """

    kind: ReportKind
    path: str
    pid: int
    result: ScanResult
    allowed: bool
    quarantined: QuarantineRecord | None = None
    error: str = ""


@dataclass(slots=True)
class ProtectStats:
    """Counters since start (read them from any thread; they only grow)."""

    events: int = 0
    allowed: int = 0
    denied: int = 0
    cache_hits: int = 0
    own: int = 0
    passthrough: int = 0
    deadline: int = 0
    overflow: int = 0
    invalidations: int = 0
    quarantined: int = 0
    errors: int = 0
    marks: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counters."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Pending:
    fd: int
    pid: int
    key: tuple[int, int, int, int]
    generation: int
    deadline_s: float
    answered: bool = False
    late: bool = False
    closed: bool = field(default=False)


Decide = Callable[[str], ScanResult]


class Protector:
    """Answers fanotify permission events on the protected paths.

    Args:
        decide: decides one file by path (the daemon's scan path); called from worker threads.
        mode: the effective mode now (read on every event; anything but enforce allows at once).
        config: deadline, queue, workers, open events.
        quarantine: where denied files go (None: they are denied and left in place).
        clock: aware UTC time for quarantine records.
        on_report: receives every decided event, from a worker thread.

    Raises:
        OSError: from `start`, when fanotify is unavailable or a path cannot be marked.
    """

    def __init__(
        self,
        decide: Decide,
        *,
        mode: Callable[[], Mode],
        clock: Callable[[], dt.datetime],
        config: ProtectConfig | None = None,
        quarantine: Quarantine | None = None,
        on_report: Callable[[ProtectReport], None] | None = None,
    ) -> None:
        self.decide = decide
        self.mode = mode
        self.clock = clock
        self.config = config or ProtectConfig()
        self.quarantine = quarantine
        self.on_report = on_report
        self.stats = ProtectStats()
        self._pid = os.getpid()
        self._fan_fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int, _Pending]] = []
        self._seq = itertools.count()
        self._cache: dict[tuple[int, int], tuple[int, int, bool]] = {}
        self._generation = 0
        self._queue: queue.Queue[_Pending | object] = queue.Queue(self.config.queue_size)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self.failure = ""
        """Why the reader stopped on its own (the group is closed then: everything is allowed)."""

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def mask(self) -> int:
        """The event mask held on each mark."""
        perm = fan.FAN_OPEN_EXEC_PERM | (fan.FAN_OPEN_PERM if self.config.protect_open else 0)
        return perm | fan.FAN_MODIFY | fan.FAN_CLOSE_WRITE

    def start(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Mark the paths and start the reader and the workers.

        A mount point is marked as a whole mount; a directory and each directory below it are
        marked for events on their children (folders created later are marked as inotify
        reports them, within milliseconds; protect a mount point to leave no such window); a
        file is marked itself.

        Raises:
            OSError: fanotify refused (not root, no kernel support) or a path is unusable.
        """
        self._fan_fd = fan.fanotify_init(
            fan.FAN_CLOEXEC | fan.FAN_NONBLOCK | fan.FAN_CLASS_CONTENT, os.O_RDONLY
        )
        if self.config.fixed_malloc_thresholds:
            set_malloc_thresholds()
        trees: list[str] = []
        try:
            for path in paths:
                if self._mark(os.path.abspath(os.fspath(path))):
                    trees.append(os.path.abspath(os.fspath(path)))
        except OSError:
            os.close(self._fan_fd)
            self._fan_fd = -1
            raise
        if trees:
            self._observer = self._watch_new_folders(trees)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._threads = [threading.Thread(target=self._read_loop, name="fanotify-reader")]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"fanotify-worker-{i}")
            for i in range(self.config.workers)
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    def _mark(self, path: str) -> bool:
        """Mark one path; True when it is a folder tree (not a mount, not a file)."""
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode) and os.path.ismount(path):
            fan.fanotify_mark(self._fan_fd, fan.FAN_MARK_ADD | fan.FAN_MARK_MOUNT, self.mask, path)
            self.stats.marks += 1
            return False
        if not stat.S_ISDIR(st.st_mode):
            fan.fanotify_mark(self._fan_fd, fan.FAN_MARK_ADD, self.mask, path)
            self.stats.marks += 1
            return False
        self._mark_tree(path)
        return True

    def _mark_tree(self, path: str) -> None:
        mask = self.mask | fan.FAN_EVENT_ON_CHILD
        for current, dirs, _ in os.walk(path):
            fan.fanotify_mark(self._fan_fd, fan.FAN_MARK_ADD, mask, current)
            self.stats.marks += 1
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(current, d))]

    def _watch_new_folders(self, trees: list[str]) -> BaseObserver:
        """Mark folders created (or moved in) under the protected trees as they appear."""
        protector = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if not event.is_directory or event.event_type not in ("created", "moved"):
                    return
                target = event.dest_path if event.event_type == "moved" else event.src_path
                try:
                    protector._mark_tree(os.fsdecode(target))
                except OSError:  # gone again, or the group is closed
                    pass

        observer = Observer()
        for tree in trees:  # folder events only: an exec or a read must not wake this thread
            observer.schedule(
                Handler(), tree, recursive=True, event_filter=[DirCreatedEvent, DirMovedEvent]
            )
        observer.daemon = True
        observer.start()
        return observer

    def stop(self) -> None:
        """Stop answering: the group is closed and the kernel allows whatever is waiting."""
        if self._wake_w < 0:
            return
        self._stopping.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        os.write(self._wake_w, b"x")
        for _ in range(self.config.workers):
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            if self._fan_fd >= 0:
                os.close(self._fan_fd)  # the kernel answers allow for any event still waiting
                self._fan_fd = -1
            for p in self._pending.values():
                if not p.closed:
                    os.close(p.fd)
                    p.closed = True
            self._pending.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    def invalidate(self) -> None:
        """Forget every cached verdict (call on each policy or model change)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1
            self.stats.invalidations += 1

    # --- the reader: never scores --------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._read_events()
        except Exception as exc:  # the reader must not die holding marks: fail open
            self.stats.errors += 1
            self.failure = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if self._fan_fd >= 0:
                    os.close(self._fan_fd)  # the kernel allows what waits, and asks no more
                    self._fan_fd = -1

    def _read_events(self) -> None:
        poller = select.poll()
        poller.register(self._fan_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            timeout_ms = self._expire(monotonic_s())
            poller.poll(timeout_ms)
            try:
                data = os.read(self._fan_fd, _READ_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            for event in fan.iter_events(data):
                self._on_event(event)

    def _expire(self, now_s: float) -> int | None:
        """Answer allow for every queued event past its deadline; ms until the next one."""
        if not self._deadlines:  # only this (the reader) thread adds to or pops from them
            return None
        with self._lock:
            while self._deadlines:
                when, _, p = self._deadlines[0]
                if p.answered or p.closed:
                    heapq.heappop(self._deadlines)
                    continue
                if when > now_s:
                    return max(1, int((when - now_s) * 1000) + 1)
                heapq.heappop(self._deadlines)
                p.late = True
                self._answer_locked(p, allow=True)
                self.stats.deadline += 1
        return None

    def _on_event(self, event: fan.Event) -> None:
        mask, fd, pid = event
        if fd == fan.FAN_NOFD:
            if mask & fan.FAN_Q_OVERFLOW:
                self.invalidate()  # writes may have gone unseen
            return
        if not mask & fan.PERMISSION_EVENTS:
            self._forget(fd)
            os.close(fd)
            return
        stats = self.stats
        stats.events += 1
        if pid == self._pid:
            stats.own += 1
            self._reply_now(fd, allow=True)
            return
        try:
            st = os.fstat(fd)
        except OSError:
            self._reply_now(fd, allow=True)
            return
        passthrough = self.mode() is not Mode.ENFORCE
        if not passthrough:  # the hot path: a cache hit is answered here, without the lock
            cached = self._cache.get((st.st_dev, st.st_ino))
            if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
                stats.cache_hits += 1
                self._reply_now(fd, allow=cached[2])
                return
        if not stat.S_ISREG(st.st_mode):
            self._reply_now(fd, allow=True)
            return
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            p = _Pending(
                fd,
                pid,
                key,
                self._generation,
                monotonic_s() + self.config.deadline_ms / 1000.0,
            )
            self._pending[fd] = p
            if passthrough:
                self.stats.passthrough += 1
                self._answer_locked(p, allow=True)
            try:
                self._queue.put_nowait(p)
            except queue.Full:
                if not p.answered:
                    self.stats.overflow += 1
                    self._answer_locked(p, allow=True)
                self._close_locked(p)
                return
            if not p.answered:
                heapq.heappush(self._deadlines, (p.deadline_s, next(self._seq), p))

    def _forget(self, fd: int) -> None:
        """A write to the file: drop its cached verdicts."""
        try:
            st = os.fstat(fd)
        except OSError:
            return
        with self._lock:
            self._cache.pop((st.st_dev, st.st_ino), None)

    def _reply_now(self, fd: int, *, allow: bool) -> None:
        self._respond(fd, allow)
        os.close(fd)

    def _respond(self, fd: int, allow: bool) -> None:
        if allow:  # counted first: a waiting process may look as soon as it is answered
            self.stats.allowed += 1
        else:
            self.stats.denied += 1
        try:
            fan.respond(self._fan_fd, fd, allow)
        except OSError as exc:  # ENOENT: the kernel no longer waits for it
            if exc.errno not in (errno.ENOENT, errno.EBADF):
                raise

    def _answer_locked(self, p: _Pending, *, allow: bool) -> bool:
        if p.answered or p.closed:
            return False
        p.answered = True
        self._respond(p.fd, allow)
        return True

    def _close_locked(self, p: _Pending) -> None:
        if not p.closed:
            p.closed = True
            self._pending.pop(p.fd, None)
            os.close(p.fd)

    # --- workers: decide, answer, quarantine, report --------------------------------------

    def _work_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or not isinstance(item, _Pending):
                return
            try:
                self._work(item)
            except Exception as exc:  # a worker must never die: allow, count, report
                self.stats.errors += 1
                with self._lock:
                    self._answer_locked(item, allow=True)
                    self._close_locked(item)
                if self.on_report is not None:
                    err = ScanResult("", FileStatus.ERROR, str(exc))
                    self.on_report(
                        ProtectReport(ReportKind.DECIDED, "", item.pid, err, True, error=str(exc))
                    )

    @staticmethod
    def _same_file(path: str, p: _Pending) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == p.key

    def _work(self, p: _Pending) -> None:
        if self._stopping.is_set():
            return
        proc_path = f"/proc/self/fd/{p.fd}"
        try:
            path = os.readlink(proc_path)
        except OSError:
            path = ""
        result = self.decide(path) if path and self._same_file(path, p) else None
        if result is None or not self._same_file(path, p):
            # renamed, replaced or deleted meanwhile: decide the very file the kernel opened
            result = self.decide(proc_path)
            result = ScanResult(
                path,
                result.status,
                result.note,
                result.sha256,
                result.size,
                result.truncated,
                result.decision,
                result.model_version,
            )
        deny = result.decision is not None and result.decision.verdict in DENY_VERDICTS
        with self._lock:
            # cached before the kernel is answered: the next exec of the file, which the answer
            # lets happen, must find the verdict (the reader looks it up without the lock)
            if p.generation == self._generation and result.status is FileStatus.SCANNED:
                if len(self._cache) >= self.config.cache_size:
                    self._cache.clear()
                dev, ino, size, mtime_ns = p.key
                self._cache[(dev, ino)] = (size, mtime_ns, not deny)
            answered_now = self._answer_locked(p, allow=not deny)
            allowed = not deny if answered_now else True
            self._close_locked(p)
        record, error = None, ""
        if deny and allowed is False and self.quarantine is not None and path:
            d = result.decision
            assert d is not None
            try:
                record = self.quarantine.quarantine(
                    path,
                    verdict=d.verdict.value,
                    reason=d.reason.value,
                    model_version=result.model_version,
                    now=self.clock(),
                )
                self.stats.quarantined += 1
            except QuarantineError as exc:
                error = str(exc)
                self.stats.errors += 1
        if self.on_report is not None:
            kind = ReportKind.DEADLINE if p.late else ReportKind.DECIDED
            self.on_report(ProtectReport(kind, path, p.pid, result, allowed, record, error))
