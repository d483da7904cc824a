"""Fleet simulator throughput: cohort mode at scale vs a naive SimPy baseline.

Prints `cores: N` and one `name: value unit` per line:
- cohort mode at the target size (default 1,000,000 endpoints across 1,000 orgs x 30 days) with
  the policy, a staged rollout (the rollout hook), an allowlist change, an org kill switch and
  telemetry folded into the backend's aggregates: endpoint-days per wall second, wall seconds,
  peak RSS of the simulation and of its fold writer process (`fleet_sim.link.fold_writer`);
- the same at 100k endpoints x 3 days, and a naive SimPy baseline (one process per endpoint,
  each scan a timeout plus a table lookup, nothing else) at the same size, and their ratio.

Both sides of the ratio are timed the same way, whole run against whole run: the cohort's timer
starts before it loads the shipped corpus and bundles and ends when `run_scenario` returns
(catalogue scoring, world, backend store with orgs, policy and labels, every step, fold and
write, the rollout controller, the outcome checks); the naive timer starts before it builds its
verdict table, environment and one process per endpoint and ends when `env.run` returns. Module
imports at process start are outside both (lazy imports inside a run are inside its timer). The
loops alone are compared too: the cohort's first to last step against `env.run`.

`--engine spark [--spark-master local[2]]` runs the shards as Spark tasks
(`fleet_sim.parallel.spark`); CPU and memory then cover the whole process tree (the Spark JVM and
its Python workers included, sampled from /proc), and the session's start is timed apart.

Usage: .venv/bin/python benchmarks/sim_bench.py [--endpoints 1000000] [--days 30] [--data DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import simpy
from _tree_sampler import SAMPLERS, children

from fleet_sim.run import default_workers, ensure_assets, run_scenario
from fleet_sim.scenario import scenario_from_dict


def scenario(endpoints: int, orgs: int, days: float, scans: float, predict: bool) -> dict:
    d = days
    return {
        "name": "bench",
        "seed": 1,
        "days": d,
        "world": {"orgs": orgs, "endpoints": endpoints, "scans_per_hour": scans},
        "models": {
            "initial": 1,
            "bundles": [{"version": 1, "bundle": "v1"}, {"version": 2, "bundle": "v2"}],
        },
        "timeline": [
            {
                "at": d * 0.15,
                "do": "start_rollout",
                "version": 2,
                "stages": [1, 5, 25, 100],
                "stage_hours": 24 * d * 0.1,
                "predict": predict,
            },
            {"at": d * 0.5, "do": "allowlist_add", "sha256": ["0" * 64]},
            {"at": d * 0.7, "do": "kill_switch", "org": "org-0001"},
        ],
    }


class PredictionTimer:
    """Wall and CPU seconds spent in `backend.analysis.transition.predict_transition` inline.

    The simulator looks the function up at each rollout start, so wrapping the module's
    attribute for the duration of a run times every prediction it makes in this process
    (`--predict-inline`). A prediction beside the run runs in a process of its own
    (`fleet_sim.rollout.prediction`), which reports its figures in the run's timings.
    """

    def __init__(self) -> None:
        self.calls, self.wall_s, self.cpu_s = 0, 0.0, 0.0

    def __enter__(self) -> PredictionTimer:
        import backend.analysis.transition as mod

        self._mod, self._orig = mod, mod.predict_transition

        def timed(*args, **kwargs):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return self._orig(*args, **kwargs)
            finally:
                self.calls += 1
                self.wall_s += time.perf_counter() - t
                self.cpu_s += time.thread_time() - c

        mod.predict_transition = timed
        return self

    def __exit__(self, *exc: object) -> None:
        self._mod.predict_transition = self._orig


def naive(endpoints: int, days: float, scans_per_hour: float, seed: int = 1) -> tuple[float, float]:
    """One SimPy process per endpoint: exponential waits between scans, a verdict lookup.

    Returns the wall seconds of the whole run (building its world: the verdict table, the
    environment and one process per endpoint; then `env.run`), the span the cohort's timer
    covers, and of `env.run` alone (its loop).
    """
    t = time.perf_counter()
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    table = rng.random(4096) < 0.01
    rate = scans_per_hour / 3600.0
    alerts = [0]

    def endpoint():
        while True:
            yield env.timeout(rng.exponential(1.0 / rate))
            if table[int(rng.integers(0, 4096))]:
                alerts[0] += 1

    for _ in range(endpoints):
        env.process(endpoint())
    loop = time.perf_counter()
    env.run(until=days * 86400.0)
    end = time.perf_counter()
    return end - t, end - loop


def cohort(
    data: Path,
    endpoints: int,
    orgs: int,
    days: float,
    scans: float,
    predict: bool,
    workers: int | None,
    engine: Any = None,
    beside: bool = True,
) -> tuple[float, float, int, dict[str, int], float]:
    """Wall and CPU seconds of one cohort run, the encounters it simulated, its wall-clock timings
    (`Recorder.timings`), and
    the wall seconds of its simulation loop alone (first to last step, setup excluded).

    The timer covers the whole run: loading the shipped corpus and bundles (`ensure_assets`),
    then `run_scenario` (scoring the catalogue, building the world, the backend store with its
    orgs, policy and labels, the steps, folds and writes, the rollout controller and what it
    imports on first use, the outcome checks). Module imports at process start are outside
    both sides' timers. CPU is the whole process tree's: this process, its shard workers and
    its fold writer."""
    steps: list[float] = []

    def progress(_arm: str, _t: float, _total: float, _events: int) -> None:
        steps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp, PredictionTimer() as pt:
        t, cpu, kids = time.perf_counter(), time.process_time(), _children_cpu()
        tree0 = _tree_cpu() if engine is not None else 0.0
        corpus, bundles = ensure_assets(data, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
        sc = scenario_from_dict(scenario(endpoints, orgs, days, scans, predict))
        run = run_scenario(
            sc, corpus=corpus, bundles=bundles, out=tmp, progress=progress, workers=workers,
            engine=engine, prediction_beside=beside,
        )  # fmt: skip
        wall, own = time.perf_counter() - t, time.process_time() - cpu
        kids = _children_cpu() - kids
        if engine is not None:  # the JVM and its Python workers live on: read them in /proc
            kids = _tree_cpu() - tree0 - own
        cpu = own + kids
        shards = workers or default_workers(endpoints)
        print(f"cohort_{endpoints}x{days:g}d_workers: {shards}")
        print(
            f"cohort_{endpoints}x{days:g}d_cpu: coordinator {own:.1f} s, shard workers and "
            f"fold writer {kids:.1f} s"
        )
        db = sorted(Path(tmp).rglob("backend.sqlite*"))
        print(f"store_bytes_{endpoints}x{days:g}d: {sum(f.stat().st_size for f in db):,}")
    if pt.calls:
        print(
            f"transition_prediction_{endpoints}x{days:g}d: {pt.calls} call(s) inline, "
            f"{pt.wall_s:.1f} s wall (cpu {pt.cpu_s:.1f} s)",
            flush=True,
        )
    timings = run.arms["main"].recorder.timings
    if "prediction_beside_wall_ms" in timings:
        print(
            f"transition_prediction_{endpoints}x{days:g}d: beside in its process, "
            f"{timings['prediction_beside_wall_ms'] / 1000:.1f} s wall "
            f"(cpu {timings['prediction_beside_cpu_ms'] / 1000:.1f} s)",
            flush=True,
        )
    loop = steps[-1] - steps[0] if len(steps) > 1 else wall
    return wall, cpu, run.events, dict(run.arms["main"].recorder.timings), loop


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _tree_cpu() -> float:
    """CPU seconds of this process and every live descendant (and what they reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [os.getpid(), *children(os.getpid())]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


class TreeRss:
    """Samples the resident memory of this process's tree from a sampler process of its own.

    `peak_mb` adds resident sets (pages shared by forked workers counted in each);
    `peak_pss_mb` adds proportional set sizes (each shared page counted once in all).

    The sampler is a separate, niced process, not a thread of the simulation: reading
    `/proc/PID/smaps_rollup` walks every page table of the process it reads, and doing it for the
    whole tree every 0.2 s from a thread of the coordinator cost 27-31 s of the coordinator's CPU
    in a 1M x 30 d run (py-spy, Dec 2), which the bench then reported as the simulator's. RSS
    (`/proc/PID/statm`, cheap) is read at every tick; since a process's PSS never exceeds its
    RSS, the tree's PSS is read only at ticks where the RSS sum exceeds the largest PSS sum seen
    (the peak cannot be missed at a tick that is skipped). The sampler is left out of the tree.
    """

    def __init__(self, every_s: float = 0.2) -> None:
        self.peak_mb = 0.0
        self.peak_pss_mb = 0.0
        self.ticks = 0
        self.pss_reads = 0
        self.at_peak: list[str] = []
        self.every_s = every_s
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> TreeRss:
        self._proc = subprocess.Popen(  # noqa: S603 - this script, this interpreter
            [sys.executable, str(Path(__file__).with_name("_tree_sampler.py")),
             str(os.getpid()), str(self.every_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        SAMPLERS.add(self._proc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        self._proc.stdin.close()  # the sampler's signal to report and stop
        got = json.loads(self._proc.stdout.read())
        self._proc.wait(timeout=60)
        self.peak_mb, self.peak_pss_mb = got["peak_mb"], got["peak_pss_mb"]
        self.ticks, self.pss_reads = got["ticks"], got["pss_reads"]
        self.at_peak = list(got["at_peak"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", type=int, default=1_000_000)
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--scans-per-hour", type=float, default=1.0)
    ap.add_argument("--data", default="fleetward-data")
    ap.add_argument("--compare-endpoints", type=int, default=100_000)
    ap.add_argument("--compare-days", type=float, default=3)
    ap.add_argument(
        "--predict",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the transition prediction at rollout start (off by default: it reads every "
        "aggregate row so far and dominated the run; the scenarios keep it on)",
    )
    ap.add_argument(
        "--predict-inline",
        action="store_true",
        help="with --predict: run the prediction inline while the shards wait (the reference), "
        "not in a process on a store snapshot beside the run (fleet_sim.run.run_scenario's "
        "prediction_beside)",
    )
    ap.add_argument(
        "--skip-compare", action="store_true", help="skip the 100k cohort + naive comparison"
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, each simulating a shard of the orgs (default: the core count, "
        "one below fleet_sim.run.SHARDS_MIN_ENDPOINTS)",
    )
    ap.add_argument("--engine", choices=["local", "spark"], default="local")
    ap.add_argument("--spark-master", default=None, help="default: local[WORKERS]")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_at_start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"predict_at_rollout_start: {args.predict}"
          + (" (inline)" if args.predict and args.predict_inline else ""))  # fmt: skip
    print(f"workers: {args.workers or 'auto (fleet_sim.run.default_workers)'}")
    print(f"engine: {args.engine}")
    engine = None
    if args.engine == "spark":
        from fleet_sim.parallel.spark import SparkEngine

        t = time.perf_counter()
        engine = SparkEngine.start(args.spark_master or f"local[{args.workers or os.cpu_count()}]")
        engine.spark.sparkContext.parallelize([0], 1).count()  # JVM and a Python worker up
        print(f"spark_session_start: {time.perf_counter() - t:.1f} s ({engine.slots} slots)")
        args.workers = args.workers or engine.slots  # as `fleetward sim run --engine spark`
    data = Path(args.data)
    n, d = args.compare_endpoints, args.compare_days
    if not args.skip_compare:
        wall_c, cpu_c, _, _, loop_c = cohort(
            data, n, min(args.orgs, n), d, args.scans_per_hour, args.predict, args.workers,
            engine, not args.predict_inline,
        )  # fmt: skip
        print(f"cohort_{n}x{d:g}d_wall: {wall_c:.1f} s (cpu {cpu_c:.1f} s)")
        print(f"cohort_{n}x{d:g}d_rate: {n * d / wall_c:,.0f} endpoint-days/s (whole run)")
        print(f"cohort_{n}x{d:g}d_loop: {loop_c:.1f} s, {n * d / loop_c:,.0f} endpoint-days/s")
        print(f"load_average_before_naive: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        cpu_n = time.process_time()
        wall_n, loop_n = naive(n, d, args.scans_per_hour)
        cpu_n = time.process_time() - cpu_n
        print(f"naive_simpy_{n}x{d:g}d_wall: {wall_n:.1f} s (cpu {cpu_n:.1f} s; whole run: "
              f"table, environment, {n:,} processes, env.run)")  # fmt: skip
        print(f"naive_simpy_{n}x{d:g}d_loop: {loop_n:.1f} s (env.run alone)")
        print(f"naive_simpy_{n}x{d:g}d_rate: {n * d / wall_n:,.0f} endpoint-days/s (whole run)")
        print(f"cohort_vs_naive_ratio_whole_run: {wall_n / wall_c:.1f} x (wall, whole run "
              "against whole run)")  # fmt: skip
        print(f"cohort_vs_naive_ratio_cpu: {cpu_n / cpu_c:.1f} x (whole runs' cpu; the "
              "cohort's includes its workers and writer)")  # fmt: skip
        print(f"cohort_vs_naive_ratio_loop: {loop_n / loop_c:.1f} x (loop vs loop)", flush=True)
    n, d = args.endpoints, args.days
    with TreeRss() as tree:
        wall, cpu, events, ctr, loop = cohort(
            data, n, args.orgs, d, args.scans_per_hour, args.predict, args.workers, engine,
            not args.predict_inline,
        )  # fmt: skip
    print(f"cohort_{n}x{d:g}d_wall: {wall:.1f} s (cpu {cpu:.1f} s)")
    if "fold_writer_cpu_ms" in ctr:
        print(
            f"cohort_{n}x{d:g}d_fold_writer: cpu {ctr['fold_writer_cpu_ms'] / 1000:.1f} s, "
            f"simulation waited {ctr['fold_writer_wait_ms'] / 1000:.1f} s for it"
        )
    print(f"cohort_{n}x{d:g}d_rate: {n * d / wall:,.0f} endpoint-days/s")
    print(f"cohort_{n}x{d:g}d_loop: {loop:.1f} s (setup excluded)")
    print(f"cohort_{n}x{d:g}d_scans: {events / wall:,.0f} scans/s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak_rss: {rss:.0f} MB")
    print(f"peak_rss_children: {child:.0f} MB (the largest child: a shard worker or the writer)")
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"cpu_children: {kids.ru_utime + kids.ru_stime:.1f} s (shard workers, fold writer)")
    print(f"peak_rss_sum: {rss + child:.0f} MB (both peaks added: an upper bound)")
    if tree.peak_mb:
        print(
            f"peak_rss_tree_sampled: {tree.peak_mb:.0f} MB (every process at once, shared "
            "pages counted in each)"
        )
        print(
            f"peak_pss_tree_sampled: {tree.peak_pss_mb:.0f} MB (every process at once, "
            "shared pages counted once)"
        )
        print(f"peak_pss_by_process: {', '.join(tree.at_peak)} (MB)")
        print(
            f"memory_sampler: {tree.ticks} ticks of {tree.every_s:g} s, PSS read at "
            f"{tree.pss_reads} (a separate niced process, benchmarks/_tree_sampler.py)"
        )
    print(f"load_average_at_end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
