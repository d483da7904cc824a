"""Where the 100k x 3 d cohort run's time goes: wall seconds inside each part, and the budget.

Runs `sim_bench.cohort` (the same scenario, timer and prediction beside the run) with the
simulator's parts wrapped in timers: the store's writes (`Store.ingest_encoded`), the steps
(`Shard.advance`), the folds (`Shard._fold`, `Shard.take`), the operator's actions
(`Fleet.apply`: the rollout start's flush and the prediction's start), the hourly barriers
(`Fleet.hourly`) and the rest. With one in-process shard (the default below 200k endpoints)
those run one after another in the coordinator, so each figure is that part's share of the
wall; they nest where the code does (the operator's actions hold the flush's take and writes).
Prints `cores: N`, one line per part and run, and the two-core budget: the run's CPU
(coordinator and prediction) halved is the shortest wall the same work could take on two cores,
kept busy throughout.

Usage: .venv/bin/python benchmarks/sim_parts_bench.py [--endpoints 100000] [--days 3] [--runs 2]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sim_bench

PARTS = (
    ("store writes", "backend.store.sqlite", "Store.ingest_encoded"),
    ("steps", "fleet_sim.parallel.shard", "Shard.advance"),
    ("folds", "fleet_sim.parallel.shard", "Shard._fold"),
    ("flush take", "fleet_sim.parallel.shard", "Shard.take"),
    ("operator actions", "fleet_sim.control", "Fleet.apply"),
    ("hourly barriers", "fleet_sim.control", "Fleet.hourly"),
    ("whole arm", "fleet_sim.run", "run_arm"),
)


def _wrap(seconds: dict[str, float], label: str, module: str, attr: str) -> Callable[[], None]:
    """Time every call of `module.attr` into `seconds[label]`; returns the undo."""
    owner: Any = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    orig = getattr(owner, name)

    @functools.wraps(orig)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - t

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, orig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", type=int, default=100_000)
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--data", type=Path, default=Path("fleetward-data"))
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_at_start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for run in range(args.runs):
        seconds: dict[str, float] = defaultdict(float)
        undo = [_wrap(seconds, *p) for p in PARTS]
        try:
            wall, cpu, _events, timings, _loop = sim_bench.cohort(
                args.data, args.endpoints, args.orgs, args.days, 1.0, True, None
            )
        finally:
            for u in undo:
                u()
        size = f"{args.endpoints}x{args.days:g}d"
        for label, _m, _a in PARTS:
            print(f"run{run}_{size} {label}: {seconds[label]:.2f} s")
        pred = timings.get("prediction_beside_cpu_ms", 0) / 1000
        print(f"run{run}_{size} wall: {wall:.2f} s, cpu {cpu:.2f} s (prediction {pred:.2f} s)")
        print(
            f"run{run}_{size} two_core_floor: {cpu / 2:.2f} s (the run's CPU over two cores, both"
            " busy throughout)"
        )


if __name__ == "__main__":
    main()
