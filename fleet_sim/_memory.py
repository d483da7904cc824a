"""Keep freed memory in the process heap while the cohort engine runs (glibc only).

Each 15-minute step allocates a few dozen arrays of about a megabyte. glibc serves blocks that
large with `mmap` and gives them back on free, so every temporary costs its page faults again:
on the 2-core VMs this project runs on, a step's gathers and arithmetic took twice as long as
with the memory kept (`python benchmarks/sim_bench.py`, see `benchmarks/README.md`). Raising
glibc's mmap and trim thresholds keeps such blocks in the heap for reuse; day-sized arrays (a
fold's columns) stay above the mmap threshold and still go back to the system when freed.
Elsewhere than glibc this does nothing. A shard worker folds a day's events now and then, and
keeping what that fold freed would hold hundreds of megabytes per worker until the end, so it
gives it back after each fold (`trim_freed_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory", "trim_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when it applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = int(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) == 1
        ok = int(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    _done = bool(ok)
    return _done


def trim_freed_memory() -> bool:
    """Give the heap's free memory back to the system now (glibc's `malloc_trim`)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False
