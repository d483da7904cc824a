"""SIGKILL during download and install leaves the old or the new model, complete, never a mix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from agent._clock import utc_now
from agent.daemon import Agent
from agent.updater import UpdateClient
from tests.crash_harness import inspect, prepare, run_trials
from tests.tuf_harness import ORG, make_world


def test_sigkill_during_update_leaves_old_or_new_model_complete(tmp_path: Path, bundles) -> None:
    for world in make_world(tmp_path, bundles):
        template, anchor = prepare(world, tmp_path)
        results = run_trials(template, anchor, world.server.url, tmp_path / "trials", n=15, seed=4)
        outcomes = Counter(r.active_version for r in results)
        assert set(outcomes) <= {1, 2}, outcomes
        assert all(r.complete for r in results), results
        assert outcomes[1] + outcomes[2] == 15
        # each killed agent recovers on restart and finishes the update
        for i in (0, len(results) - 1):
            state = tmp_path / "trials" / f"trial-{i}"
            updater = UpdateClient(
                state, world.server.url, org=ORG, trust_anchor=anchor.read_bytes()
            )
            agent = Agent(state, org=ORG, clock=utc_now, updater=updater)
            agent.start()
            assert agent.check_in().ok
            assert inspect(state) == (2, True)
