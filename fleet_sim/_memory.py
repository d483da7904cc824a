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

from agent.heap import release_free_memory, set_malloc_thresholds

__all__ = ["keep_freed_memory", "trim_freed_memory"]

_done = False


def keep_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds for this process once; True when it applied.

    The binding is the agent's (`agent.heap`); the simulator only picks larger thresholds.
    """
    global _done
    if not _done:
        _done = set_malloc_thresholds(
            mmap_threshold_bytes=mmap_threshold, trim_threshold_bytes=trim_threshold
        )
    return _done


def trim_freed_memory() -> bool:
    """Give the heap's free memory back to the system now (glibc's `malloc_trim`)."""
    return release_free_memory()
