"""The memory sampler `sim_bench.py` runs beside a simulation, as a process of its own.

Kept apart from `sim_bench.py` so that it starts without importing the simulator (its imports and
memory are not the simulation's), and left out of the tree it samples.

Usage (by `sim_bench.TreeRss`): python benchmarks/_tree_sampler.py ROOT_PID EVERY_S; close its
stdin to have it print its peaks as one JSON line and exit.
"""

from __future__ import annotations

import json
import os
import select
import sys
from pathlib import Path

__all__ = ["SAMPLERS", "children", "sample_tree"]

SAMPLERS: set[int] = set()  # left out of the tree they sample (`_children`)


def sample_tree(root: int, every_s: float) -> None:
    """The sampler process: sample `root`'s tree until stdin closes, then print the peaks."""
    os.nice(10)
    me = os.getpid()
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    peak = peak_pss = 0.0
    ticks = pss_reads = 0
    at_peak: list[str] = []
    while not select.select([sys.stdin], [], [], every_s)[0]:
        tree = [p for p in (root, *children(root)) if p != me]
        ticks += 1
        rss = sum(_statm_rss_pages(p) for p in tree) * page_mb
        peak = max(peak, rss)
        if rss > peak_pss:  # else the PSS sum, at most the RSS sum, cannot be a new peak
            pss_reads += 1
            each = [(_pss_mb(p), _role(p, root)) for p in tree]
            if sum(mb for mb, _ in each) > peak_pss:
                peak_pss = sum(mb for mb, _ in each)
                at_peak = [f"{role} {mb:.0f}" for mb, role in sorted(each, reverse=True)]
    sys.stdout.write(json.dumps(
        {"peak_mb": peak, "peak_pss_mb": peak_pss, "ticks": ticks, "pss_reads": pss_reads,
         "at_peak": at_peak}
    ))  # fmt: skip


def _role(pid: int, root: int) -> str:
    """What a process of the tree is, for the breakdown at the peak."""
    if pid == root:
        return "coordinator"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "gone"
    if comm == "fw-prediction":  # fleet_sim.rollout.prediction.COMM
        return "prediction"
    return "fold writer" if "fold_writer" in cmd else "shard worker"


def _statm_rss_pages(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (a Spark JVM's Python daemon and workers are grandchildren)."""
    out: list[int] = []
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that forked it
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    for c in kids:
        if c not in SAMPLERS:
            out += [c, *children(c)]
    return out


def _pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (the forked workers' world) split between sharers."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


if __name__ == "__main__":
    sample_tree(int(sys.argv[1]), float(sys.argv[2]))
