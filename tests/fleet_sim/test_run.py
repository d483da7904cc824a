"""`run_scenario`: how many shards a run gets when none is asked for; the prediction beside it."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal

import pytest

import backend.analysis.transition as transition
import backend.store.sqlite as sqlite_store
import fleet_sim.parallel.shard as shard
from agent.errors import IntegrityError
from fleet_sim.rollout.prediction import PROCESS_NAME, PendingPrediction
from fleet_sim.run import SHARDS_MIN_ENDPOINTS, default_workers, run_scenario
from fleet_sim.scenario import ScenarioError, ScenarioModel, scenario_from_dict
from tests.fleet_sim.parallel.test_shard import SCENARIO as SHARD_SCENARIO
from tests.fleet_sim.parallel.test_shard import _outcome
from tests.pseudonyms import CountingIds


def _half_day_rollout(name: str, *, predict: bool, initial: int = 1) -> ScenarioModel:
    """300 endpoints in 20 orgs for half a day; a v1 -> v2 rollout starts at 6 h."""
    return scenario_from_dict(
        {
            "name": name,
            "seed": 2,
            "days": 0.5,
            "world": {"orgs": 20, "endpoints": 300, "scans_per_hour": 4.0},
            "models": {
                "initial": initial,
                "bundles": [{"version": 1, "bundle": "v1"}, {"version": 2, "bundle": "v2"}],
            },
            "timeline": [
                {"at": "6h", "do": "start_rollout", "version": 2, "stages": [10, 100],
                 "stage_hours": 3, "predict": predict},
            ],
        }
    )  # fmt: skip


def test_default_workers_is_one_shard_below_the_threshold_and_the_cores_from_it() -> None:
    assert default_workers(SHARDS_MIN_ENDPOINTS - 1, cores=8) == 1
    assert default_workers(1_000, cores=8) == 1
    assert default_workers(SHARDS_MIN_ENDPOINTS, cores=8) == 8
    assert default_workers(10 * SHARDS_MIN_ENDPOINTS, cores=2) == 2
    assert default_workers(SHARDS_MIN_ENDPOINTS, cores=0) == 1


@pytest.mark.parametrize(("asked", "used"), [(None, 1), (1, 1), (3, 3)])
def test_run_scenario_passes_asked_workers_and_picks_by_size_when_none(
    small_corpus, sim_bundles, tmp_path, monkeypatch, asked, used
) -> None:
    seen: list[int] = []
    real = shard.run_cohort

    def spy(*args, **kwargs):
        seen.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(shard, "run_cohort", spy)
    sc = scenario_from_dict(
        {
            "name": "workers",
            "seed": 2,
            "days": 0.25,
            "world": {"orgs": 20, "endpoints": 300},
            "models": {"initial": 1, "bundles": [{"version": 1, "bundle": "v1"}]},
        }
    )
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=asked)
    assert seen == [used]
    assert run.events > 0


@pytest.mark.parametrize("predict", [False, True])
def test_rollout_start_folds_delivered_events_only_for_the_prediction(
    small_corpus, sim_bundles, tmp_path, monkeypatch, predict
) -> None:
    takes: list[int] = []
    real = shard.Shard.take

    def spy(self, s):
        takes.append(1)
        return real(self, s)

    monkeypatch.setattr(shard.Shard, "take", spy)
    sc = _half_day_rollout("flush", predict=predict)
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=1)
    assert run.arms["main"].recorder.rollouts  # the rollout started
    assert len(takes) == (1 if predict else 0)


def _prediction_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == PROCESS_NAME]


def test_prediction_beside_the_run_gives_the_inline_prediction_reports_and_store(
    small_corpus, sim_bundles, tmp_path, monkeypatch
) -> None:
    # the shard test's world: a rollout with the prediction at 12 h, then two days and a half
    # of folds (the start's partial day merged again), policies and evidence
    sc = scenario_from_dict(SHARD_SCENARIO)
    real = transition.predict_transition
    passed = multiprocessing.get_context("fork").Event()  # shared with the forked prediction
    read_late = tmp_path / "read-late"

    def late(*args, **kwargs):  # runs in the prediction's process: it reads only once the run
        assert passed.wait(120)  # has written on for a day (set by the run, in this process)
        read_late.touch()
        return real(*args, **kwargs)

    def progress(_arm: str, t: float, _total: float, _events: int) -> None:
        if t >= 1.5 * 86_400:
            passed.set()

    got = {}
    for beside in (False, True):
        monkeypatch.setattr(sqlite_store, "secrets", CountingIds())
        if beside:
            passed.clear()
            monkeypatch.setattr(transition, "predict_transition", late)
        out = tmp_path / ("beside" if beside else "inline")
        run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=out, workers=1,
                           prediction_beside=beside, progress=progress)  # fmt: skip
        got[beside] = _outcome(run, out)
        assert not _prediction_processes()  # joined when the run ended
        timings = run.arms["main"].recorder.timings
        assert ("prediction_beside_cpu_ms" in timings) is beside
    assert read_late.exists()  # it read a day after its start at 12 h
    report = json.loads(got[False][0])
    prediction = report["arms"]["main"]["rollouts"][0]["prediction"]
    assert prediction and any(v > 0 for v in prediction.values())  # a real forecast, not {}
    assert len(prediction) > 1
    for a, b in zip(got[False], got[True], strict=True):
        assert a == b


def test_a_failed_run_leaves_no_prediction_process_never_begun(
    small_corpus, sim_bundles, tmp_path
) -> None:
    # the rollout asks for a prediction (so one is forked when the arm begins) but fails to
    # start: v2 is already the running version
    sc = _half_day_rollout("no-prediction", predict=True, initial=2)
    forked: list[int] = []
    real = PendingPrediction.__init__

    def spy(self: PendingPrediction) -> None:
        real(self)
        forked.append(self._proc.pid)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PendingPrediction, "__init__", spy)
        with pytest.raises(ScenarioError, match="model 2 is already assigned"):
            run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=1)
    assert len(forked) == 1  # the fault landed after the prediction's process was forked
    assert not _prediction_processes()


def test_prediction_process_killed_fails_the_run_with_its_exit_instead_of_hanging(
    small_corpus, sim_bundles, tmp_path, monkeypatch
) -> None:
    killed = tmp_path / "killed"

    def die(*_args, **_kwargs):  # runs in the prediction's process
        killed.touch()
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(transition, "predict_transition", die)
    sc = _half_day_rollout("killed-prediction", predict=True)
    with pytest.raises(RuntimeError, match=r"the transition prediction's process died \(-9\)"):
        run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "o", workers=1)
    assert killed.exists()  # the kill landed in the prediction's process, after its snapshot
    assert not _prediction_processes()


def test_prediction_failing_beside_the_run_fails_the_run_with_its_message(
    small_corpus, sim_bundles, tmp_path, monkeypatch
) -> None:
    v2 = tmp_path / "v2"
    shutil.copytree(sim_bundles["v2"], v2)
    model = v2 / "model.onnx"
    tampered: list[float] = []

    def tamper_before_the_rollout(_arm: str, t: float, _total: float, _events: int) -> None:
        if t >= 3 * 3600 and not tampered:  # scored at the run's start, read again at 6 h
            raw = bytearray(model.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            model.write_bytes(bytes(raw))
            tampered.append(t)

    sc = _half_day_rollout("failing-prediction", predict=True)
    with pytest.raises(IntegrityError, match="model.onnx does not match the manifest's sha256"):
        run_scenario(
            sc, corpus=small_corpus, bundles={"v1": sim_bundles["v1"], "v2": v2},
            out=tmp_path / "out", workers=1, progress=tamper_before_the_rollout,
        )  # fmt: skip
    assert tampered and tampered[0] < 6 * 3600  # the fault landed before the prediction read
    assert not _prediction_processes()
