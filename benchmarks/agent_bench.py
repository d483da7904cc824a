"""Agent speed figures: feature MB/s on one core, score latency, batch throughput, scan RSS.

Usage: python benchmarks/agent_bench.py [--data fleetward-data] [--size 1500]
Builds (or reuses) the corpus and v2 bundle under --data, then prints one `name: value unit`
line per figure, with the machine's core count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from agent.features import extract_features
from agent.model import load_bundle
from model_store.corpus import load_corpus, make_corpus
from model_store.train import recipe_for_version, train_model


def _ensure(data: Path, size: int) -> tuple[Path, Path]:
    corpus_dir, bundle = data / "corpus", data / "bundles" / "v2"
    if not (corpus_dir / "corpus.json").exists():
        make_corpus(corpus_dir, seed=7, size=size)
    if not (bundle / "manifest.json").exists():
        train_model(
            load_corpus(corpus_dir), recipe_for_version(2), bundle, now=dt.datetime.now(tz=dt.UTC)
        )
    return corpus_dir, bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fleetward-data")
    ap.add_argument("--size", type=int, default=2500)
    args = ap.parse_args()
    corpus_dir, bundle = _ensure(Path(args.data), args.size)
    corpus = load_corpus(corpus_dir)
    print(f"cores: {os.cpu_count()}")

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    blobs = [corpus.sample_path(r).read_bytes() for r in corpus.records]
    total = sum(len(b) for b in blobs)
    for b in blobs[:20]:
        extract_features(b)
    started = time.perf_counter()
    for b in blobs:
        extract_features(b)
    elapsed = time.perf_counter() - started
    print(f"samples: {len(blobs)} files, {total / 1e6:.1f} MB")
    print(f"feature_throughput: {total / elapsed / 1e6:.1f} MB/s")

    model = load_bundle(bundle)
    vectors = corpus.features
    for v in vectors[:200]:
        model.scorer.score(v)
    lat = []
    for v in vectors[:5000]:
        t0 = time.perf_counter_ns()
        model.scorer.score(v)
        lat.append(time.perf_counter_ns() - t0)
    lat_us = np.asarray(lat) / 1000.0
    print(f"score_p50: {np.percentile(lat_us, 50):.1f} us")
    print(f"score_p99: {np.percentile(lat_us, 99):.1f} us")
    batch = np.ascontiguousarray(np.resize(vectors, (max(4096, len(vectors)), vectors.shape[1])))
    t0 = time.perf_counter()
    for start in range(0, len(batch), 1024):
        model.scorer.score_batch(batch[start : start + 1024])
    print(f"batch_scores_per_s: {len(batch) / (time.perf_counter() - t0):.0f} scores/s")

    del blobs
    # The child reports its own high-water mark (VmHWM) at exit: ru_maxrss of children would
    # also count the pages this process had when it forked.
    wrapper = (
        "import atexit, sys\n"
        "hwm = lambda: [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
        "atexit.register(lambda: sys.stderr.write(hwm()))\n"
        "from agent.cli import main\n"
        "sys.argv = ['fleetward-agent'] + sys.argv[1:]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            "scan",
            str(corpus_dir / "samples"),
            "--bundle",
            str(bundle),
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        text=True,
    )
    hwm = [line for line in proc.stderr.splitlines() if line.startswith("VmHWM")]
    rss_mb = int(hwm[-1].split()[1]) / 1024.0 if hwm else float("nan")
    print(f"scan_exit_code: {proc.returncode}")
    print(f"scan_peak_rss: {rss_mb:.1f} MB")


if __name__ == "__main__":
    main()
