"""The cohort's spool bound: which events a small spool keeps, against the agent's own rule.

An agent spools its telemetry between check-ins and, past `spool_max_events`, drops the oldest
(`agent.telemetry.spool.keep_newest`). The tests run one world twice through a backend outage,
once with a spool no endpoint fills and once with a 4-event spool, and compare what the second
run delivers with what the rule keeps of the first run's events. Delivered events feed nothing
back (no rollout, no evidence), so both runs draw the same encounters (checked); only the
bound differs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.telemetry.spool import keep_newest
from backend.store import Store
from fleet_sim._clock import SimClock
from fleet_sim.cohort.engine import CohortEngine
from fleet_sim.control import DecisionTables, Fleet, FleetModel, ModelRegistry, Recorder
from fleet_sim.link.in_process import InProcessLink
from fleet_sim.scenario import WorldModel
from fleet_sim.scoring import score_catalog
from fleet_sim.world import QUARTER_S, World, build_world
from model_store.corpus import Corpus

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
DAYS = 1.0
OUTAGE = (6 * 3600.0, 9.5 * 3600.0)  # three and a half hours: every endpoint's spool fills up
CAP = 4
Rows = dict[str, npt.NDArray[np.int64]]
COLUMNS = ("ep", "t_ms", "sample", "model", "verdict")


@dataclass
class _DeliveryLog(Fleet):
    """The fleet, noting the events of each delivery as the engine reports them."""

    deliveries: list[Rows] = field(default_factory=list)

    def report_events(
        self,
        t: npt.NDArray[np.float64],
        eps: npt.NDArray[np.integer],
        models: npt.NDArray[np.integer],
        verdicts: npt.NDArray[np.integer],
    ) -> None:
        got = {"ep": eps, "t_ms": np.multiply(t, 1000), "model": models, "verdict": verdicts}
        self.deliveries.append({c: np.asarray(v).astype(np.int64) for c, v in got.items()})
        super().report_events(t, eps, models, verdicts)


@dataclass(frozen=True)
class _Run:
    world: World
    delivered: Rows  # what waits for the fold (`take_delivered`), every delivery together
    deliveries: list[Rows]  # what each delivery reported, in order
    recorder: Recorder


def _world(corpus: Corpus, cap: int) -> World:
    # servers only, no offline spells, no push: an endpoint's check-ins are its schedule, and
    # each gets through unless the backend is down (then the spool waits for the next one)
    spec = WorldModel(
        orgs=6, endpoints=400, laptop_share=0.0, offline_spells_per_week=0.0,
        checkin_minutes=(20.0, 40.0), scans_per_hour=8.0, push=False, spool_max_events=cap,
    )  # fmt: skip
    return build_world(spec, corpus, seed=11, days=DAYS)


def _run(corpus: Corpus, bundle: Path, out: Path, cap: int) -> _Run:
    """One cohort run of `DAYS` through the outage, stepped as `parallel.shard` steps it."""
    world = _world(corpus, cap)
    clock = SimClock(START)
    model = score_catalog(bundle, corpus.features, cache_dir=out.parent / "scores")
    registry = ModelRegistry(
        {1: FleetModel(1, model.scores, model.thresholds, True, 0.0, str(bundle))}, 1
    )
    store = Store(out / "backend.sqlite")
    try:
        link = InProcessLink.open(
            store, world.org_names, corpus.features, world.catalog.sha256, clock.at(0)
        )
        link.init_policy(1, clock.at(0))
        rec = Recorder(1, world.n_orgs, world.n_endpoints)
        tables = DecisionTables(world.catalog.sha256, world.catalog.label, registry)
        fleet = _DeliveryLog(world=world, link=link, registry=registry, clock=clock,
                             recorder=rec, tables=tables)  # fmt: skip
        engine = CohortEngine(fleet, seed=(11, 1))
        horizon = DAYS * 86_400.0
        t = 0.0
        while t < horizon:
            if t == OUTAGE[0]:
                link.outages.append(OUTAGE)
            engine.step(t)
            t += QUARTER_S
        engine.finish(horizon)
        parts = engine.take_delivered()
    finally:
        store.close()
    rows = {c: np.concatenate([p[c] for p in parts]).astype(np.int64) for c in COLUMNS}
    return _Run(world, rows, fleet.deliveries, rec)


def _sorted(rows: Rows, columns: tuple[str, ...] = COLUMNS) -> npt.NDArray[np.int64]:
    table = np.stack([rows[c] for c in columns], axis=1)
    return table[np.lexsort(table.T[::-1])]


def _newest(rows: Rows, group: npt.NDArray[np.int64]) -> Rows:
    """What the agent's rule keeps of `rows`: per `group` (one spool each), the newest `CAP`."""
    keep = keep_newest(np.ones(group.size, np.int64), CAP, order=rows["t_ms"], group=group)
    return {c: v[keep] for c, v in rows.items()}


def _checkin_of(world: World, rows: Rows) -> npt.NDArray[np.int64]:
    """The index of the check-in that sends each event: its first at or after it, the backend up.

    Check-ins are `phase + k * interval` (every endpoint here is always online); one inside the
    outage fails, and the spool waits for the first one after it.
    """
    ep = rows["ep"]
    ph, iv = world.ep_phase_s[ep], world.ep_checkin_s[ep]
    k = np.ceil((rows["t_ms"] / 1000.0 - ph) / iv)
    c = ph + k * iv
    down = (c >= OUTAGE[0]) & (c < OUTAGE[1])
    return np.where(down, np.ceil((OUTAGE[1] - ph) / iv), k).astype(np.int64)


@pytest.fixture(scope="module")
def runs(
    small_corpus: Corpus, bundles: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[_Run, _Run]:
    base = tmp_path_factory.mktemp("spool")
    (base / "free").mkdir()
    (base / "bound").mkdir()
    free = _run(small_corpus, bundles[1], base / "free", 1_000_000)
    bound = _run(small_corpus, bundles[1], base / "bound", CAP)
    # the same encounters and deliveries in both runs: only the bound differs
    assert np.array_equal(free.recorder.enc, bound.recorder.enc)
    assert free.recorder.counters["events_generated"] == bound.recorder.counters["events_generated"]
    assert free.recorder.counters.get("events_dropped", 0) == 0
    # the fault landed: the bound dropped events
    assert bound.recorder.counters["events_dropped"] > 0
    return free, bound


def test_a_small_spool_keeps_each_checkin_s_newest_events_by_the_agent_s_rule(
    runs: tuple[_Run, _Run],
) -> None:
    # the agent sends at each check-in the newest events spooled since its last one that got
    # through (the exact mode's rule too: `fleet_sim.exact`)
    free, bound = runs
    k = _checkin_of(free.world, free.delivered)
    group = free.delivered["ep"] * (int(k.max()) + 1) + k
    assert np.bincount(group).max() > CAP  # the outage overfilled spools
    want = _newest(free.delivered, group)
    assert np.array_equal(_sorted(bound.delivered), _sorted(want))
    # the drops add up: those of the rule, and the spools still full at the end
    pending = free.recorder.counters["events_pending_at_end"]
    at_end = pending - bound.recorder.counters["events_pending_at_end"]
    dropped = free.delivered["ep"].size - want["ep"].size
    assert dropped + at_end == bound.recorder.counters["events_dropped"]
    # what each delivery reported is what waits for the fold, and all of it
    assert bound.recorder.counters["events_delivered"] == bound.delivered["ep"].size
    every = {c: np.concatenate([d[c] for d in bound.deliveries]) for c in bound.deliveries[0]}
    assert np.array_equal(_sorted(every, tuple(every)), _sorted(bound.delivered, tuple(every)))
