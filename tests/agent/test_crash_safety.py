"""SIGKILL inside an update (download, verification, install) leaves the old or the new model,
complete, never a mix; and the kills did land inside the update (the harness checks where)."""

from __future__ import annotations

from pathlib import Path

from agent._clock import utc_now
from agent.daemon import Agent
from agent.updater import UpdateClient
from tests.crash_harness import WINDOW, inspect, landed, phase_counts, prepare, run_trials
from tests.tuf_harness import ORG, make_world

TRIALS = 15


def test_landed_reads_the_last_phase_line() -> None:
    assert landed((), exited=False) == "before update"
    assert landed(("download metadata",), exited=False) == "download"
    assert landed(("committed policies/acme.json",), exited=False) == "install"
    assert landed(("install models/v2/model.onnx",), exited=False) == "install"
    assert landed(("committed models/v2/model.onnx",), exited=False) == "after commit"
    assert landed(("download models/v2/model.onnx",), exited=True) == "exited"


def test_sigkill_inside_update_leaves_old_or_new_model_complete(tmp_path: Path, bundles) -> None:
    for world in make_world(tmp_path, bundles):
        template, anchor = prepare(world, tmp_path)
        results = run_trials(template, anchor, world.server.url, tmp_path / "trials", TRIALS, 4)
        counts = phase_counts(results)
        # the fault landed: most kills interrupted the update, in more than one of its phases
        inside = [r for r in results if r.in_window]
        assert len(inside) >= TRIALS * 2 // 3, counts
        assert sum(1 for p in WINDOW if counts[p]) >= 2, counts
        # and none of them left a mix
        assert all(r.active_version in (1, 2) and r.complete for r in results), results
        assert all(r.active_version == 1 for r in inside if r.phase != "install"), results
        # a killed agent recovers on restart and finishes the update
        for r in (inside[0], inside[-1]):
            state = tmp_path / "trials" / f"trial-{results.index(r)}"
            updater = UpdateClient(
                state, world.server.url, org=ORG, trust_anchor=anchor.read_bytes()
            )
            agent = Agent(state, org=ORG, clock=utc_now, updater=updater)
            agent.start()
            assert agent.check_in().ok
            assert inspect(state) == (2, True)
