"""Rescoring throughput, end to end: SQLite aggregates -> stream -> batch ONNX scoring -> decide.

Builds a store with `--rows` aggregate rows: Zipf(1.1) draws from `--samples` distinct samples
over `--orgs` orgs and 30 days, four recorded verdicts, each (org, sample) pair with its own
`static-v1` vector (vectors are per org; a real vector of a small synthetic corpus with noise),
a policy history with an expiring allowlist; trains a small model (or uses `--bundle`), then
runs `backend.analysis.rescore.run_rescore` with a baseline and a threshold experiment over the same
rows. Prints `cores: N`, aggregate rows per minute and distinct samples per minute apart
(`rescore_rows_per_min`, `rescore_distinct_samples_per_min`: the rows and the distinct samples
among them, each over the same wall time, per config), and peak memory.

    .venv/bin/python benchmarks/rescore_bench.py [--rows 200000] [--samples 50000] [--orgs 50]
        [--engine spark [--spark-master local[2]]]

`--engine spark` also exports the store as Parquet and runs `run_rescore_spark` on the same
configs (session start excluded, export timed apart), checks it agrees, and prints its
figures beside the local engine's: wall seconds, the load average before each run, and the CPU
seconds of the whole process tree (this process, the Spark JVM and its Python workers), the
figure to read on a loaded machine. `--spark-runs 2` repeats the job in the same session (the
second run without JVM and worker warm-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.decision import Mode, Verdict  # noqa: E402
from agent.telemetry import TelemetryBatch  # noqa: E402
from backend import admin, sketch  # noqa: E402
from backend.analysis._base import ThresholdOverride  # noqa: E402
from backend.analysis.rescore import RescoreConfig, Stage, run_rescore  # noqa: E402
from backend.ingest import MS_PER_DAY, AggregateRow, FeatureRow  # noqa: E402
from backend.store import Store  # noqa: E402
from model_store.corpus import make_corpus  # noqa: E402
from model_store.train import recipe_for_version, train_model  # noqa: E402

START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)


def tree_cpu_s() -> float:
    """CPU seconds used by this process and every live descendant (and their reaped children).

    Linux /proc only (0.0 elsewhere); Spark's JVM and Python workers are descendants.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent_of: dict[int, list[tuple[int, float]]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        parent_of.setdefault(int(fields[1]), []).append((int(entry), cpu))
    me = os.getpid()
    total = sum(c for kids in parent_of.values() for pid, c in kids if pid == me)
    stack = [me]
    while stack:
        for pid, cpu in parent_of.get(stack.pop(), []):
            total += cpu
            stack.append(pid)
    return total


def load() -> str:
    """The 1-minute load average, as printed beside each figure."""
    return f"{os.getloadavg()[0]:.1f}"


def build(
    root: Path, rows: int, samples: int, n_orgs: int, bundle: Path | None
) -> tuple[Store, Path, int]:
    corpus = make_corpus(root / "corpus", seed=11, size=600)
    if bundle is None:
        recipe = dataclasses.replace(recipe_for_version(2), n_estimators=100)
        bundle = train_model(corpus, recipe, root / "v2", now=START).bundle_dir
    rng = np.random.default_rng(1)
    store = Store(root / "bench.db", synchronous="NORMAL")
    orgs = [store.create_org(f"o{i}", START).org_id for i in range(n_orgs)]
    shas = [f"{i:064x}" for i in range(samples)]
    base = corpus.features[rng.integers(0, len(corpus.features), samples)]
    noise = rng.normal(1.0, 0.01, base.shape).astype(np.float32)
    vecs = (base * noise).astype("<f4")

    def nop(raw: bytes, now: dt.datetime) -> None:
        return None

    admin.set_mode(store, nop, Mode.ENFORCE, org_id=None, now=START)
    admin.add_list_entry(store, nop, "allowlist", shas[0], org_id=None,
                         now=START + dt.timedelta(days=3),
                         expires_at=START + dt.timedelta(days=9))  # fmt: skip
    ep = sketch.sketch_of([sketch.endpoint_hash("e1")])
    chunk = 50_000
    made = 0
    pick = rng.zipf(1.1, size=rows * 2)
    pick = pick[pick <= samples][:rows] - 1
    keyset: set[tuple[int, int, int]] = set()
    rows_buf: list[AggregateRow] = []
    with_vector: set[tuple[int, int]] = set()
    verdicts = (Verdict.ALLOW, Verdict.BLOCK, Verdict.DETECT, Verdict.ALLOWLISTED)
    n_batch = 0
    for i in range(len(pick)):
        day = int(rng.integers(0, 30))
        org = int(rng.integers(0, n_orgs))
        s = int(pick[i])
        while (day, org, s) in keyset:
            s = int(rng.integers(0, samples))
        keyset.add((day, org, s))
        at = (START.timestamp() * 1000) + day * MS_PER_DAY + int(rng.integers(0, MS_PER_DAY))
        d = int(at // MS_PER_DAY)
        verdict = verdicts[int(rng.integers(0, len(verdicts)))]
        rows_buf.append(AggregateRow(d, orgs[org], shas[s], 1, False, verdict,
                                     int(rng.integers(1, 20)), ep, int(at), int(at)))  # fmt: skip
        if len(rows_buf) >= chunk or i == len(pick) - 1:
            by_org: dict[str, list[AggregateRow]] = {}
            for r in rows_buf:
                by_org.setdefault(r.org_id, []).append(r)
            for o, rs in by_org.items():
                n_batch += 1
                k = orgs.index(o)
                feats = []
                for r in rs:  # each (org, sample) pair's own vector, once
                    j = int(r.sha256, 16)
                    if (k, j) not in with_vector:
                        with_vector.add((k, j))
                        feats.append(FeatureRow(r.sha256, "static-v1", vecs[j].tobytes()))
                batch = TelemetryBatch(f"bench-{n_batch:08d}", o, "e1", 0, ())
                store.ingest(batch, rs, feats, START)
            made += len(rows_buf)
            rows_buf = []
    distinct = len({s for _, _, s in keyset})
    return store, bundle, distinct


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--orgs", type=int, default=50)
    ap.add_argument("--batch-rows", type=int, default=65_536)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="spark: also run the PySpark engine over a Parquet export, beside the local figure",
    )
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--spark-runs", type=int, default=1, help="repeat the Spark job in one session")
    args = ap.parse_args()
    spark_s = export_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, bundle, distinct = build(Path(tmp), args.rows, args.samples, args.orgs, args.bundle)
        n_rows = store.stats().aggregate_rows
        print(f"setup_s: {time.perf_counter() - t0:.1f}")
        stages = frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS})
        base = RescoreConfig("baseline", stages, ((1, bundle),))
        exp = RescoreConfig("strict", stages, ((1, bundle),), ThresholdOverride(block=0.99))
        now = START + dt.timedelta(days=40)
        local_load = load()
        c1, t1 = tree_cpu_s(), time.perf_counter()
        summaries = run_rescore(store, [base, exp], now=now, batch_rows=args.batch_rows)
        elapsed = time.perf_counter() - t1
        local_cpu = tree_cpu_s() - c1
        spark_runs: list[tuple[float, float, str]] = []
        if args.engine == "spark":
            from backend.analysis.export import export
            from backend.analysis.spark import run_rescore_spark, spark_session

            t2 = time.perf_counter()
            out = export(store, Path(tmp) / "export")
            export_s = time.perf_counter() - t2
            spark = spark_session(args.spark_master)
            spark.sparkContext.setLogLevel("ERROR")
            for _ in range(args.spark_runs):
                before = load()
                c3, t3 = tree_cpu_s(), time.perf_counter()
                on_spark = run_rescore_spark(out.out_dir, [base, exp], now=now, spark=spark)
                spark_runs.append((time.perf_counter() - t3, tree_cpu_s() - c3, before))
                assert on_spark == summaries, "the engines disagree"
            spark_s = spark_runs[0][0]
            spark.stop()
        store.close()
    assert summaries[0].encounters > 0
    print(f"cores: {os.cpu_count()}")
    print(f"rows: {n_rows}")
    print(f"distinct_samples: {distinct}")
    print(f"orgs: {args.orgs}")
    print("configs: 2")
    print(f"rescore_s: {elapsed:.2f}")
    print(f"rescore_cpu_s: {local_cpu:.1f}")
    print(f"rescore_load_avg: {local_load}")
    print(f"rescore_rows_per_min: {n_rows / elapsed * 60:,.0f}")
    print(f"rescore_distinct_samples_per_min: {distinct / elapsed * 60:,.0f}")
    if spark_s:
        print(f"export_s: {export_s:.2f}")
        print(f"spark_master: {args.spark_master}")
        for i, (wall_s, cpu_s, before) in enumerate(spark_runs):
            tag = "spark_rescore" if i == 0 else f"spark_rescore_run{i + 1}"
            print(f"{tag}_s: {wall_s:.2f}")
            print(f"{tag}_cpu_s: {cpu_s:.1f}")
            print(f"{tag}_load_avg: {before}")
            print(f"{tag}_rows_per_min: {n_rows / wall_s * 60:,.0f}")
            print(f"{tag}_distinct_samples_per_min: {distinct / wall_s * 60:,.0f}")
    print(f"peak_rss_mb: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
