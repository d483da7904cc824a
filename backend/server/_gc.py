"""Garbage-collector policy of a `backend serve` process that holds many push channels.

Why: each open push channel is a few hundred long-lived objects (its tasks, event, scope and
connection). CPython's full collection walks every tracked object; with 10,000 channels one took
0.5-0.75 s, and under check-in and telemetry load one ran about every 30 s (requests in flight
promoted to the old generation feed its 25 % growth rule). Every check-in that arrived meanwhile
waited: the client-side check-in p99 was that pause (490 ms at 10,000 channels; 40 ms with the
heap frozen; benchmarks/README.md, "Fleet capacity and the kill switch").

`HeapFreezer.step` moves everything alive to the permanent generation (`gc.freeze`), so a full
collection only walks what is younger than the last step. A freeze splices lists (O(1)), so a
step every second costs nothing; a 10-s step still left 0.1-0.2 s pauses while channels opened.
Cyclic garbage among frozen objects (a channel that closed after it was frozen) is reclaimed
only once thawed: every `thaw_every` steps, `gc.unfreeze` hands everything back and one
deliberate full collection reclaims it (one pause of the old kind, once a thaw period). Leak
bound: the cyclic garbage of one thaw period.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass

__all__ = ["HeapFreezer", "start_freezer"]


@dataclass
class HeapFreezer:
    """Freeze the heap at each step; thaw and collect every `thaw_every`-th step.

    Attributes:
        thaw_every: steps between thaws (3600: once an hour at the 1-s step of `start_freezer`).
        steps: steps taken so far.
    """

    thaw_every: int = 3600
    steps: int = 0

    def __post_init__(self) -> None:
        if self.thaw_every < 2:
            raise ValueError("thaw_every must be >= 2")

    def step(self) -> str:
        """One step: `"frozen"`, or `"thawed"` (unfrozen and fully collected)."""
        self.steps += 1
        if self.steps % self.thaw_every == 0:
            gc.unfreeze()
            gc.collect()
            return "thawed"
        gc.freeze()
        return "frozen"


def start_freezer(every_s: float = 1.0, thaw_every: int = 3600) -> threading.Event:
    """Run `HeapFreezer(thaw_every).step` every `every_s` in a daemon thread.

    Returns the event that stops it; stopping thaws the heap (the process keeps no frozen
    garbage past the server's life).
    """
    if every_s <= 0:
        raise ValueError("every_s must be positive")
    stop = threading.Event()
    freezer = HeapFreezer(thaw_every)

    def loop() -> None:
        while not stop.wait(every_s):
            freezer.step()
        gc.unfreeze()

    threading.Thread(target=loop, name="gc-freezer", daemon=True).start()
    return stop
