"""The transition prediction alone, on the store a simulated run holds at its rollout start.

Inside `sim_bench.py --predict` the prediction (`backend.analysis.transition.predict_transition`)
runs on the coordinator while the shards wait, so its CPU is on the run's critical path. Timing
it inside the run mixes it with the simulation and the fold writer; this bench captures the store
at the moment the simulator calls the prediction (a SQLite backup of the file plus the call's
arguments), then times the call alone on that copy, as often as asked, and prints a digest of the
report's JSON so two trees can be checked to give the same report.

The memory figure is the call's own: the process's resident set sampled every 5 ms from
`/proc/self/statm` while the call runs, its peak minus the resident set just before the call
(numpy buffers, SQLite's page cache and onnxruntime's arenas included, which `tracemalloc` would
miss in part). `--like-coordinator` runs the call the way the simulator does at a rollout start:
in a thread, after `keep_freed_memory` (the coordinator's malloc thresholds). `--tracemalloc`
adds the peak of Python-side allocations (numpy's included), at a cost in CPU.

Usage:
  .venv/bin/python benchmarks/transition_bench.py capture DIR [--endpoints 1000000] [--days 30]
  .venv/bin/python benchmarks/transition_bench.py time DIR [--repeat 3] [--profile]
      [--like-coordinator] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import json
import os
import pstats
import resource
import sqlite3
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sim_bench  # noqa: E402

from backend.store import Store  # noqa: E402
from fleet_sim.run import ensure_assets, run_scenario  # noqa: E402
from fleet_sim.scenario import scenario_from_dict  # noqa: E402


class _Captured(Exception):
    """Raised out of the run once the store is captured (the rest of the run is not needed)."""


def capture(out: Path, endpoints: int, orgs: int, days: float, data: Path, workers: int) -> None:
    import backend.analysis.transition as mod

    out.mkdir(parents=True, exist_ok=True)

    def grab(store: Store, old: Path, new: Path, *, now: dt.datetime, **kw: object) -> None:
        with sqlite3.connect(store.path) as src, sqlite3.connect(out / "store.sqlite") as dst:
            src.backup(dst)
        meta = {"old": str(old), "new": str(new), "now": now.isoformat(), "kw": sorted(kw)}
        (out / "call.json").write_text(json.dumps(meta))
        raise _Captured

    mod.predict_transition = grab  # type: ignore[assignment]
    corpus, bundles = ensure_assets(data, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    sc = scenario_from_dict(sim_bench.scenario(endpoints, orgs, days, 1.0, True))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_scenario(
                sc,
                corpus=corpus,
                bundles=bundles,
                out=tmp,
                workers=workers,
                prediction_beside=False,
            )  # raised here, not in a thread at the end
        except _Captured:
            print(f"captured: {out / 'store.sqlite'} ({(out / 'store.sqlite').stat().st_size:,} B)")
            return
    raise SystemExit("the run made no prediction")


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sampled_peak_rss_mb(call: Callable[[], object], *, in_thread: bool) -> tuple[object, float]:
    """`call()`'s result and the peak resident set (MB) sampled every 5 ms while it ran."""
    done = threading.Event()
    peak = [_rss_mb()]

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[object] = []
    try:
        if in_thread:  # like the simulator: the prediction in a thread of its own
            worker = threading.Thread(target=lambda: out.append(call()))
            worker.start()
            worker.join()
            if not out:
                raise SystemExit("the prediction failed in its thread")
        else:
            out.append(call())
    finally:
        done.set()
        sampler.join()
    return out[0], max(peak[0], _rss_mb())


def time_call(
    src: Path, repeat: int, profile: bool, *, like_coordinator: bool, trace: bool
) -> None:
    from backend.analysis.transition import TransitionReport, predict_transition

    if like_coordinator:
        from fleet_sim._memory import keep_freed_memory

        keep_freed_memory()
    meta = json.loads((src / "call.json").read_text())
    store = Store(str(src / "store.sqlite"))
    now = dt.datetime.fromisoformat(meta["now"])
    rss0 = _rss_mb()
    for _ in range(repeat):
        prof = cProfile.Profile(time.process_time) if profile else None
        before = _rss_mb()
        if trace:
            tracemalloc.start()
        t, c = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        report, peak = _sampled_peak_rss_mb(
            lambda: predict_transition(store, Path(meta["old"]), Path(meta["new"]), now=now),
            in_thread=like_coordinator,
        )
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        traced = ""
        if trace:
            traced = f", Python-side peak {tracemalloc.get_traced_memory()[1] / 2**20:.0f} MB"
            tracemalloc.stop()
        assert isinstance(report, TransitionReport)
        digest = hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True).encode()).hexdigest()
        print(
            f"transition_prediction_alone: {wall:.2f} s wall, cpu {cpu:.2f} s, "
            f"load {os.getloadavg()[0]:.1f}, report sha256 {digest[:16]}, "
            f"RSS during the call +{peak - before:.0f} MB (peak {peak:.0f}, before {before:.0f}, "
            f"after {_rss_mb():.0f}){traced}; "
            f"peak RSS {_peak_rss_mb():.0f} MB (before the first call {rss0:.0f} MB)",
            flush=True,
        )
        del report
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
            prof = None


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("dir", type=Path)
    c.add_argument("--endpoints", type=int, default=1_000_000)
    c.add_argument("--orgs", type=int, default=1000)
    c.add_argument("--days", type=float, default=30)
    c.add_argument("--data", type=Path, default=Path("fleetward-data"))
    c.add_argument("--workers", type=int, default=2)
    t = sub.add_parser("time")
    t.add_argument("dir", type=Path)
    t.add_argument("--repeat", type=int, default=1)
    t.add_argument("--profile", action="store_true")
    t.add_argument("--like-coordinator", action="store_true")
    t.add_argument("--tracemalloc", action="store_true")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    if args.cmd == "capture":
        capture(args.dir, args.endpoints, args.orgs, args.days, args.data, args.workers)
    else:
        time_call(
            args.dir,
            args.repeat,
            args.profile,
            like_coordinator=args.like_coordinator,
            trace=args.tracemalloc,
        )


if __name__ == "__main__":
    main()
