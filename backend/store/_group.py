"""Group commit: batches that arrive while a transaction is committing share the next one.

Why: on PostgreSQL every telemetry batch of an org upserts the same hot rows (the gate's
per-org rollup, the Zipf-popular samples' aggregates), and a row lock is held until COMMIT,
WAL flush included. One transaction per batch made concurrent batches queue on each other's
commits (a row-lock convoy: `Lock/transactionid` was the top wait in `pg_stat_activity` at
~330 batches/s on two replicas). Here the requests of one process form a queue; whichever
thread finds no transaction in progress becomes the leader, takes everything queued (up to
`max_items`) and applies it in one transaction, so a hot row is written once per group and
its lock is taken once per commit, not once per batch. No timer: at low load a group is one
batch and waits for nothing; under load, groups grow with the time a commit takes.

Guarantees (`GroupCommit.submit`):
- a call returns only after the transaction holding its item committed (or raises);
- `apply_group` failing (any exception) is never charged to every item: each item of a group
  of two or more is then applied alone (`apply_one`), so one bad item fails only its own
  call (a group of one gets its error at once);
- at most `leaders` groups are in flight at once (1: one transaction per process at a time).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["GroupCommit", "GroupStats"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class GroupStats:
    """What the committer did: groups, items, groups that fell back to one item each."""

    groups: int = 0
    items: int = 0
    fallbacks: int = 0
    largest: int = 0


@dataclass
class _Slot(Generic[T, R]):
    item: T
    wake: threading.Condition  # on the committer's one lock: this item's thread alone waits on it
    done: bool = False
    result: R | None = None
    error: BaseException | None = None
    taken: bool = field(default=False)


class GroupCommit(Generic[T, R]):
    """A leader/follower queue in front of a transactional `apply_group` (see the module)."""

    def __init__(
        self,
        apply_group: Callable[[Sequence[T]], list[R]],
        apply_one: Callable[[T], R],
        *,
        max_items: int = 256,
        leaders: int = 1,
    ) -> None:
        if max_items < 1 or leaders < 1:
            raise ValueError("max_items and leaders must be positive")
        self._apply_group, self._apply_one = apply_group, apply_one
        self._max_items, self._leaders = max_items, leaders
        self._lock = threading.Lock()
        self._queue: deque[_Slot[T, R]] = deque()
        self._running = 0
        self.stats = GroupStats()

    @property
    def waiting(self) -> int:
        """Items queued for a transaction that has not begun."""
        return len(self._queue)

    def submit(self, item: T) -> R:
        """Apply `item` in some group's transaction; return once that transaction committed.

        A thread waits on its own item's condition: a finished group wakes its items' threads
        and the next queued one (to lead the next group), never every waiting thread.

        Raises:
            Exception: whatever applying `item` alone raised (its group's error is not its own).
        """
        with self._lock:
            slot: _Slot[T, R] = _Slot(item, threading.Condition(self._lock))
            self._queue.append(slot)
            while not slot.done:
                if slot.taken or self._running >= self._leaders:
                    slot.wake.wait()
                    continue
                n = min(self._max_items, len(self._queue))
                group = [self._queue.popleft() for _ in range(n)]
                for s in group:
                    s.taken = True
                self._running += 1
                self._lock.release()
                try:
                    self._run(group)
                finally:
                    self._lock.acquire()
                    self._running -= 1
                    for s in group:
                        s.wake.notify()
                    if self._queue:  # the next group's leader
                        self._queue[0].wake.notify()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # R itself may be None-able

    def _run(self, group: list[_Slot[T, R]]) -> None:
        """Apply a group (the leader's thread, no lock held); every slot ends done."""
        try:
            results = self._apply_group([s.item for s in group])
            if len(results) != len(group):
                raise RuntimeError("apply_group must return one result per item")
        except Exception as exc:
            if len(group) == 1:  # its error is its own
                self._count(1, fallback=False)
                group[0].error, group[0].done = exc, True
                return
            self._count(len(group), fallback=True)  # one item's fault must not fail the others
            for s in group:
                self._one(s)
            return
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: every caller sees it
            for s in group:
                s.error, s.done = exc, True
            raise
        self._count(len(group), fallback=False)
        for s, r in zip(group, results, strict=True):
            s.result, s.done = r, True

    def _one(self, slot: _Slot[T, R]) -> None:
        try:
            slot.result = self._apply_one(slot.item)
        except BaseException as exc:  # handed to that item's caller
            slot.error = exc
        slot.done = True

    def _count(self, n: int, *, fallback: bool) -> None:
        with self._lock:
            self.stats.groups += 1
            self.stats.items += n
            self.stats.fallbacks += int(fallback)
            self.stats.largest = max(self.stats.largest, n)
