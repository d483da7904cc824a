"""SIGKILL inside an update (download, verification, install) leaves the old or the new model,
complete, never a mix; and every kill landed where it was aimed (the harness proves it).

Each update step the agent traces is a kill point: a fault-injection hook stops the agent at
that step and writes its pid to a marker, and the kill lands there (every kill counts, none is
left to timing). One more kill lands mid-download: the model is served a byte at a time and the
agent is killed with part of it written.
"""

from __future__ import annotations

from pathlib import Path

from agent._clock import utc_now
from agent.daemon import Agent
from agent.update.updater import UpdateClient
from tests.crash_harness import (
    MODEL,
    dripped_trial,
    inspect,
    landed,
    paused_trial,
    prepare,
    update_phases,
)
from tests.tuf_harness import ORG, make_world


def test_landed_reads_the_last_phase_line() -> None:
    assert landed((), exited=False) == "before update"
    assert landed(("download metadata",), exited=False) == "download"
    assert landed(("committed policies/acme.json",), exited=False) == "install"
    assert landed(("install models/v2/model.onnx",), exited=False) == "install"
    assert landed(("record models/v2/model.onnx",), exited=False) == "install"
    assert landed(("committed models/v2/model.onnx",), exited=False) == "after commit"
    assert landed(("download models/v2/model.onnx",), exited=True) == "exited"


def test_sigkill_inside_update_leaves_old_or_new_model_complete(tmp_path: Path, bundles) -> None:
    for world in make_world(tmp_path, bundles):
        template, anchor = prepare(world, tmp_path)
        url, work = world.server.url, tmp_path / "trials"
        steps = update_phases(template, anchor, url, work / "whole")
        # every step from the first one past the metadata to the model's commit, exclusive:
        # policy download .. policy commit, model download .. bundle in place, record not yet
        first = next(i for i, s in enumerate(steps) if s != "download metadata")
        points = steps[first : steps.index(f"committed {MODEL}")]
        assert {s.split(" ")[0] for s in points} >= {
            "download", "verification", "install", "committed", "record"
        }, steps  # fmt: skip
        results = {p: paused_trial(template, anchor, url, work / f"at-{i}", p)
                   for i, p in enumerate(points)}  # fmt: skip
        dripped, sent, size = dripped_trial(template, anchor, world.server, work / "drip")
        assert 0 < sent < size, (sent, size)  # mid-download: part of the model went out
        assert dripped.markers[-1] == f"download {MODEL}", dripped.markers
        every = [*results.values(), dripped]
        # every kill landed inside the update, before the model's commit, and left v1 whole
        assert all(r.phase in ("download", "verification", "install") for r in every), every
        assert all((r.active_version, r.complete) == (1, True) for r in every), every
        # a killed agent recovers on restart and finishes the update, wherever it was killed
        for state in [work / f"at-{i}" for i in range(len(points))] + [work / "drip"]:
            updater = UpdateClient(
                state, world.server.url, org=ORG, trust_anchor=anchor.read_bytes()
            )
            agent = Agent(state, org=ORG, clock=utc_now, updater=updater)
            agent.start()
            assert agent.check_in().ok
            assert inspect(state) == (2, True), state
