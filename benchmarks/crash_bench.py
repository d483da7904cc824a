"""Crash-safety benchmark: SIGKILL `fleetward-agent run --once` inside an update.

Each trial aims its kill at one phase of the model update (download, verification, install,
in turn) and the harness records where it landed (tests/crash_harness.py). Prints
`crash_trials`, `crash_kills_<phase>` for each phase (before update, download, verification,
install, after commit, exited), `crash_kills_in_update_window` (the goal: 100 of 100),
`crash_mixed_states` (must be 0), how many trials ended on the old and the new model, and
`cores`. Usage: .venv/bin/python benchmarks/crash_bench.py [--trials 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_store.corpus import make_corpus  # noqa: E402
from model_store.train import recipe_for_version, train_model  # noqa: E402
from tests.crash_harness import phase_counts, prepare, run_trials  # noqa: E402
from tests.tuf_harness import make_world  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = make_corpus(tmp / "corpus", seed=3, size=400)
        now = dt.datetime.now(tz=dt.UTC)
        bundles = {}
        for v in (1, 2):
            recipe = dataclasses.replace(recipe_for_version(v), n_estimators=40)
            bundles[v] = train_model(corpus, recipe, tmp / f"v{v}", now=now).bundle_dir
        for world in make_world(tmp / "world", bundles):
            template, anchor = prepare(world, tmp)
            results = run_trials(
                template, anchor, world.server.url, tmp / "trials", n=args.trials, seed=args.seed
            )
    ends = Counter(r.active_version for r in results)
    mixed = sum(1 for r in results if r.active_version not in (1, 2) or not r.complete)
    print(f"crash_trials: {len(results)}")
    for phase, n in phase_counts(results).items():
        print(f"crash_kills_{phase.replace(' ', '_')}: {n}")
    print(f"crash_kills_in_update_window: {sum(1 for r in results if r.in_window)}")
    print(f"crash_mixed_states: {mixed}")
    print(f"crash_ended_old: {ends[1]}")
    print(f"crash_ended_new: {ends[2]}")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
