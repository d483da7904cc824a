"""`run_scenario`: the library call behind `fleetward sim run` (and the demo's simulation).

For each arm of the scenario it opens a fresh backend store in the output directory, creates
the world's orgs, publishes the initial policy, builds the world from the scenario's seed, and
runs the chosen mode. Every arm uses the same world and the same encounter random stream
(common random numbers), so arms differ only by their actions. The corpus and the v1/v2
bundles come from a data directory, built on first use (`ensure_assets`).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

from backend.errors import BackendError
from backend.store import Store
from fleet_sim._clock import SimClock, wall_s
from fleet_sim.control import (
    DecisionTables,
    Fleet,
    FleetModel,
    ModelRegistry,
    Recorder,
    n_days,
)
from fleet_sim.link.fold_writer import (
    SIM_STORE_SYNCHRONOUS,
    STORE_BUSY_TIMEOUT_MS,
)
from fleet_sim.link.http import MAX_ENDPOINTS, HTTPLink, RemoteBackend
from fleet_sim.link.in_process import InProcessLink
from fleet_sim.result.outcomes import ArmRun, OutcomeResult, check_outcomes
from fleet_sim.rollout.controller import ArmDayTally, ControllerRollout
from fleet_sim.rollout.prediction import PendingPrediction, forecast
from fleet_sim.scenario import ScenarioError, ScenarioModel, StartRollout
from fleet_sim.scoring import score_catalog
from fleet_sim.world import World, build_world
from model_store.corpus import Corpus, load_corpus, make_corpus
from model_store.train import recipe_for_version, train_model

if TYPE_CHECKING:
    from backend.analysis.transition_allowlist import AllowlistCandidate
    from fleet_sim.parallel.shard import ShardEngine

__all__ = ["SHARDS_MIN_ENDPOINTS", "SimRun", "default_workers", "ensure_assets", "run_scenario"]

Progress = Callable[[str, float, float, int], None]

# Below this many endpoints one shard in this process beats forked workers: each worker
# builds its own decision tables and canary buckets, and every step and hourly barrier is a
# round trip over a pipe, which at 100k endpoints cost ~3 s more CPU than the half of the
# steps a second worker takes off (benchmarks/README.md, "Fixed costs at 100k").
SHARDS_MIN_ENDPOINTS = 250_000


@dataclass(frozen=True, slots=True)
class SimRun:
    """A finished run: per-arm records and stores, and the checked outcomes."""

    scenario: ScenarioModel
    mode: str
    arms: dict[str, ArmRun]
    stores: dict[str, Path]
    outcomes: list[OutcomeResult]
    wall_s: float
    events: int
    bundles: dict[int, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every outcome passed."""
        return all(o.passed for o in self.outcomes)

    @property
    def failed(self) -> list[OutcomeResult]:
        """The outcomes that failed."""
        return [o for o in self.outcomes if not o.passed]


def ensure_assets(
    root: str | Path,
    *,
    size: int = 3000,  # the size `fleetward demo` builds: one set of default assets
    seed: int = 7,
    now: dt.datetime,
    progress: Callable[[str], None] | None = None,
) -> tuple[Corpus, dict[str, Path]]:
    """The corpus and the v1/v2 bundles under `root`, built when missing (reused otherwise)."""
    base = Path(root)
    cpath = base / "corpus"
    if (cpath / "corpus.json").exists():
        corpus = load_corpus(cpath)
    else:
        if progress:
            progress(f"generating corpus ({size} samples)")
        corpus = make_corpus(cpath, seed=seed, size=size)
    bundles: dict[str, Path] = {}
    for version in (1, 2):
        out = base / "bundles" / f"v{version}"
        if not (out / "manifest.json").exists():
            if progress:
                progress(f"training v{version}")
            train_model(corpus, recipe_for_version(version), out, now=now)
        bundles[f"v{version}"] = out
    return corpus, bundles


def default_workers(n_endpoints: int, cores: int | None = None) -> int:
    """The shard count when none is asked for (results are the same for any count).

    One below `SHARDS_MIN_ENDPOINTS`, else the core count (`cores`, default `os.cpu_count()`).
    """
    if n_endpoints < SHARDS_MIN_ENDPOINTS:
        return 1
    return max(1, cores if cores is not None else os.cpu_count() or 1)


def _registry(
    scenario: ScenarioModel, corpus: Corpus, bundles: Mapping[str, Path], cache: Path
) -> ModelRegistry:
    models = {}
    for b in scenario.models.bundles:
        path = bundles.get(b.bundle, Path(b.bundle))
        if not (Path(path) / "manifest.json").exists():
            raise ScenarioError(f"model v{b.version}: no bundle at {path}")
        ms = score_catalog(path, corpus.features, cache_dir=cache)
        bias = b.bias_for(ms.thresholds.block, ms.thresholds.detect)
        scores = np.clip(ms.scores + np.float32(bias), 0.0, 1.0).astype(np.float32)
        models[b.version] = FleetModel(
            b.version, scores, ms.thresholds, b.signed, b.self_test_fail_share, str(path)
        )
    return ModelRegistry(models, scenario.baseline_version)


def _predictor(
    store: Store, registry: ModelRegistry
) -> Callable[[int, int, dt.datetime, bool], Sequence[AllowlistCandidate]]:
    """The transition allowlist candidates, each with its scope (fleet or one org).

    Without `evidence`, each org's raw flips, scoped to that org; with it, the benign-evidence
    rules' candidates (`backend.analysis.transition_allowlist`: fleet-wide only on fleet-level
    evidence).
    """

    def predict(
        old: int, new: int, now: dt.datetime, evidence: bool = True
    ) -> Sequence[AllowlistCandidate]:
        try:
            mod = importlib.import_module("backend.analysis.transition")
        except ImportError as exc:
            raise ScenarioError(f"the transition predictor is not available: {exc}") from exc
        report = mod.predict_transition(
            store, Path(registry[old].bundle_dir), Path(registry[new].bundle_dir), now=now
        )
        if not evidence:
            return tuple(report.allowlist_candidates())
        from backend.analysis.transition_allowlist import evidence_allowlist

        flips = [e.sha256 for e in report.transition_allowlist]
        return evidence_allowlist(store, flips, now=now).candidates

    return predict


def _forecast(
    store: Store, registry: ModelRegistry, old: int, new: int, now: dt.datetime
) -> dict[str, float]:
    """`prediction.forecast` between two of the scenario's model versions."""
    return forecast(store, Path(registry[old].bundle_dir), Path(registry[new].bundle_dir), now)


def _rollout_starter(
    fleet: Fleet,
    store: Store,
    registry: ModelRegistry,
    spare: list[PendingPrediction] | None = None,
    pending: list[PendingPrediction] | None = None,
) -> Callable[[StartRollout, float], ControllerRollout]:
    """Starts a rollout; with `spare`, its prediction runs beside the run in the next of them.

    The one begun moves to `pending`. Without `spare` (or when none is left), the prediction
    runs inline while the simulation waits (the reference).
    """
    link = fleet.link

    def start(action: StartRollout, t: float) -> ControllerRollout:
        now = fleet.clock.at(t)
        org_id = None
        if action.org is not None:
            if action.org not in link.org_names:
                raise ScenarioError(f"start_rollout: no org {action.org!r} in the world")
            org_id = link.org_ids[link.org_names.index(action.org)]
        cur = store.current_policy()
        old = cur.document.default.model_version if cur is not None else None
        prediction: dict[str, float] = {}
        beside: PendingPrediction | None = None
        if action.predict and old is not None and old != action.version:
            if fleet.flush_hook is not None:  # the prediction reads the aggregates so far
                fleet.flush_hook(t)
            if not spare or pending is None:
                prediction = _forecast(store, registry, old, action.version, now)
            else:  # its snapshot is taken here, before the rollout writes its first policy
                beside = spare.pop(0)
                pending.append(beside)
                beside.begin(
                    store.path, STORE_BUSY_TIMEOUT_MS, Path(registry[old].bundle_dir),
                    Path(registry[action.version].bundle_dir), now,
                )  # fmt: skip
        try:
            rollout = ControllerRollout.begin(
                action, t, store=store, publish=link.publish, clock=fleet.clock, org_id=org_id,
                org_names=dict(zip(link.org_ids, link.org_names, strict=True)),
                policy_version=lambda: link.policy_version, prediction=prediction,
                salt=f"sim-{fleet.world.seed}-v{action.version}",
            )  # fmt: skip
        except BackendError as exc:
            raise ScenarioError(f"start_rollout v{action.version}: {exc}") from exc
        if beside is not None:
            beside.record = rollout.record  # filled when the run ends (`run_arm`)
        return rollout

    return start


def _open_link(
    store: Store,
    world: World,
    corpus: Corpus,
    clock: SimClock,
    remote: RemoteBackend | None,
    stack: ExitStack,
    arm_dir: Path,
) -> InProcessLink:
    """The in-process link, or (`--backend URL`) one whose endpoints also talk to the server."""
    if remote is None:
        return InProcessLink.open(
            store, world.org_names, corpus.features, world.catalog.sha256, clock.at(0)
        )
    if world.n_endpoints > MAX_ENDPOINTS:
        raise ScenarioError(
            f"--backend drives at most {MAX_ENDPOINTS} endpoints over HTTP "
            f"(the world has {world.n_endpoints}); use --endpoints"
        )
    client = stack.enter_context(httpx.Client(timeout=remote.timeout_s))
    return HTTPLink.open_remote(
        store, world.org_names, corpus.features, world.catalog.sha256, clock.at(0),
        remote=remote, client=client, spool_dir=arm_dir / "spool", name_prefix=f"{arm_dir.name}/",
    )  # fmt: skip


def run_arm(
    scenario: ScenarioModel,
    arm: str,
    *,
    corpus: Corpus,
    world: World,
    registry: ModelRegistry,
    out: Path,
    mode: str,
    progress: Progress | None = None,
    remote: RemoteBackend | None = None,
    workers: int | None = 1,
    engine: ShardEngine | None = None,
    prediction_beside: bool = True,
) -> tuple[ArmRun, Path, int]:
    """Run one arm; returns its records, its store path and the encounters simulated.

    `workers` None: `default_workers` for the world's size. `prediction_beside`: see
    `run_scenario`.
    """
    arm_dir = out / arm
    if arm_dir.exists():
        shutil.rmtree(arm_dir)
    arm_dir.mkdir(parents=True)
    db = arm_dir / "backend.sqlite"
    # the predictions beside the run: forked now, before the store is opened (see
    # `rollout.prediction`), one for each rollout start that asks for one
    spare = [
        PendingPrediction()
        for a in (scenario.actions(arm) if prediction_beside else ())
        if isinstance(a, StartRollout) and a.predict
    ]
    pending: list[PendingPrediction] = []  # those begun
    try:  # a scratch store written in bulk: 16 KiB pages append the daily folds ~15 % faster
        store = Store(
            db,
            synchronous=SIM_STORE_SYNCHRONOUS,
            page_size=16384,
            busy_timeout_ms=STORE_BUSY_TIMEOUT_MS,
        )
    except BaseException:
        for p in spare:
            p.cancel()
        raise
    clock = SimClock(scenario.start)
    stack = ExitStack()
    try:
        link = _open_link(store, world, corpus, clock, remote, stack, arm_dir)
        link.init_policy(
            scenario.models.initial,
            clock.at(0),
            breaker_max_blocks=world.spec.breaker_max_blocks,
        )
        unknown = [c.samples for c, m in zip(world.campaigns, scenario.campaigns, strict=True)
                   if not m.labelled]  # fmt: skip
        link.load_labels(
            world.catalog.reported_label, clock.at(0),
            skip=np.concatenate(unknown) if unknown else None,
        )  # fmt: skip
        rec = Recorder(n_days(scenario.days), world.n_orgs, world.n_endpoints)
        fleet = Fleet(
            world=world,
            link=link,
            registry=registry,
            clock=clock,
            recorder=rec,
            tables=DecisionTables(world.catalog.sha256, world.catalog.label, registry),
            predictor=_predictor(store, registry),
            keep_evidence=scenario.endpoint_days,
        )
        if scenario.endpoint_days:
            fleet.tally = ArmDayTally(clock.epoch_day, world.ep_org, world.n_orgs)
        fleet.rollout_starter = _rollout_starter(fleet, store, registry, spare, pending)
        actions = scenario.actions(arm)
        total = scenario.days * 86_400.0

        def tick(t: float, events: int) -> None:
            if progress is not None:
                progress(arm, t, total, events)

        if mode == "cohort":
            from fleet_sim.parallel.shard import run_cohort

            events = run_cohort(
                fleet, actions, days=scenario.days, seed=(scenario.seed, 1),
                workers=default_workers(world.n_endpoints) if workers is None else workers,
                progress=tick, engine=engine, out=arm_dir,
            )  # fmt: skip
        elif mode == "exact":
            from fleet_sim.exact import run_exact

            rng = np.random.default_rng([scenario.seed, 1])
            events = run_exact(fleet, actions, days=scenario.days, rng=rng, progress=tick)
        else:
            raise ScenarioError(f"unknown mode {mode!r} (cohort or exact)")
        if isinstance(link, HTTPLink):
            rec.count("backend_events_sent", link.events_sent)
            rec.count("backend_batches_sent", link.batches_sent)
            rec.count("backend_checkins", link.checkins_sent)
        for p in pending:  # the run's error if one failed
            p.fill()
            rec.time("prediction_beside_wall_ms", p.wall_s)
            rec.time("prediction_beside_cpu_ms", p.cpu_s)
        for p in spare:  # never begun (the action did not predict)
            p.cancel()
    except BaseException as exc:
        for p in pending + spare:  # joined before the store closes; a failed run waits no longer
            err = p.cancel()
            if err is not None and err is not exc:
                exc.add_note(f"the transition prediction beside the run failed too: {err!r}")
        raise
    finally:
        stack.close()
        store.close()
    return ArmRun(arm, world, rec), db, events


def run_scenario(
    scenario: ScenarioModel,
    *,
    corpus: Corpus,
    bundles: Mapping[str, Path],
    out: str | Path,
    mode: str = "cohort",
    progress: Progress | None = None,
    remote: RemoteBackend | None = None,
    workers: int | None = 1,
    engine: ShardEngine | None = None,
    prediction_beside: bool = True,
) -> SimRun:
    """Run every arm of `scenario` and check its outcomes.

    With `remote`, every simulated endpoint also enrolls with, checks in with and sends its
    telemetry to that running server over HTTP (exact mode only; `fleet_sim.link.http`).
    The cohort mode splits the fleet by org over `workers` processes (`fleet_sim.parallel.shard`),
    with the same results for any number (None: `default_workers` for the world's size); the
    exact mode runs in one process. `engine` runs
    those shards elsewhere (`fleet_sim.parallel.spark.SparkEngine`), with the same results.

    The transition prediction at a rollout start (`predict`) reads a snapshot of the store taken
    there and runs in a process of its own while the simulation goes on (nothing the run decides
    reads it; `fleet_sim.rollout.prediction`); its per-org forecast joins the rollout's record
    when the arm ends, and its failure fails the run. `prediction_beside=False` runs it inline
    while the simulation waits: the same results (the reference the concurrent one is tested
    against).

    Raises:
        ScenarioError: the scenario cannot run (unknown bundle, campaign family, mode, a
            remote backend that refuses or cannot be reached).
    """
    if remote is not None and mode != "exact":
        raise ScenarioError("--backend runs the exact mode (real agent batches per endpoint)")
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    started = wall_s()
    registry = _registry(scenario, corpus, bundles, base / ".scores")
    world = build_world(
        scenario.world,
        corpus,
        seed=scenario.seed,
        days=scenario.days,
        campaigns=scenario.campaigns,
    )
    arms: dict[str, ArmRun] = {}
    stores: dict[str, Path] = {}
    events = 0
    for arm in scenario.arms:
        run, db, n = run_arm(
            scenario,
            arm.name,
            corpus=corpus,
            world=world,
            registry=registry,
            out=base,
            mode=mode,
            progress=progress,
            remote=remote,
            workers=workers,
            engine=engine,
            prediction_beside=prediction_beside,
        )
        arms[arm.name], stores[arm.name] = run, db
        events += n
    results = check_outcomes(scenario.outcomes, arms)
    return SimRun(
        scenario,
        mode,
        arms,
        stores,
        results,
        wall_s() - started,
        events,
        {v: m.bundle_dir for v, m in registry.models.items()},
    )
