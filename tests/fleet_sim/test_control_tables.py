"""`Fleet.table`'s memo gives every org the table its own policy gives at its own time.

The memo shares a decision table between orgs with the same `agent.policy.resolution_key` and
between instants of one `agent.policy.list_span`; the test looks tables up in random orders of
orgs and times, through documents with org overrides and list entries that start and expire
at different hours, and holds each against the table built for that org and time alone.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decision import Verdict, decide
from agent.engine import context_for
from agent.policy import PolicyDocumentModel
from agent.verdict_codes import ALERT_CODES
from backend.store import Store
from fleet_sim._clock import SimClock
from fleet_sim.control import (
    DecisionTables,
    Fleet,
    FleetModel,
    ModelRegistry,
    Recorder,
    verdict_code,
)
from fleet_sim.link.in_process import InProcessLink
from fleet_sim.scenario import WorldModel
from fleet_sim.scoring import score_catalog
from fleet_sim.world import World, build_world
from model_store.corpus import Corpus

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
HOURS = 12
N_ORGS = 14


def _at(h: float) -> dt.datetime:
    return START + dt.timedelta(hours=h)


class _Setup:
    """A world, its backend link with three policy versions, and its two models."""

    def __init__(self, corpus: Corpus, bundles: dict[int, Path], out: Path) -> None:
        spec = WorldModel(orgs=N_ORGS, endpoints=140)
        self.world: World = build_world(spec, corpus, seed=5, days=1.0)
        self.clock = SimClock(START)
        models = {}
        for v, path in bundles.items():
            sc = score_catalog(path, corpus.features, cache_dir=out / "scores")
            models[v] = FleetModel(v, sc.scores, sc.thresholds, True, 0.0, str(path))
        self.registry = ModelRegistry(models, 1)
        self.store = Store(out / "backend.sqlite")
        w = self.world
        self.link = InProcessLink.open(
            self.store, w.org_names, corpus.features, w.catalog.sha256, self.clock.at(0)
        )
        self.link.init_policy(1, self.clock.at(0))
        self.versions = [1, *(self._publish(i) for i in range(2))]
        # tables built so far, shared by the fleets (the memo under test is each fleet's own)
        # and by the lookups made without it
        self.tables = DecisionTables(w.catalog.sha256, w.catalog.label, self.registry)
        self.alone = DecisionTables(w.catalog.sha256, w.catalog.label, self.registry)

    def _samples(self, verdict: Verdict, n: int) -> list[str]:
        """`n` catalog samples model 1 gives `verdict` under no policy (what a list changes)."""
        t = DecisionTables(self.world.catalog.sha256, self.world.catalog.label, self.registry)
        codes = t.verdict[t.index(1, None, START)]
        picked = np.flatnonzero(codes == verdict_code(verdict))[:n]
        assert picked.size == n
        return [self.world.catalog.sha256[i] for i in picked.tolist()]

    def _publish(self, i: int) -> int:
        """A document whose lists start and expire at different hours, fleet-wide and per org."""
        alarming, quiet = self._samples(Verdict.BLOCK, 6), self._samples(Verdict.ALLOW, 4)

        def entry(sha: str, start_h: float, end_h: float | None) -> dict[str, Any]:
            end = None if end_h is None else _at(end_h)
            return {"sha256": sha, "created_at": _at(start_h), "expires_at": end}

        ids = self.link.org_ids
        default = {
            "mode": "enforce",
            "model_version": 1,
            "allowlist": [entry(alarming[0], 0, 3 + i), entry(alarming[1], 2, 7),
                          entry(alarming[2], 5, None)],
            "blocklist": [entry(quiet[0], 4, 9 - i)],
        }  # fmt: skip
        orgs = {
            ids[1]: {"allowlist": [entry(alarming[3], 1, 6)], "thresholds": {"block": 0.99}},
            ids[2 + i]: {"mode": "detect_only", "blocklist": [entry(quiet[1], 3, 8)]},
        }
        doc = PolicyDocumentModel.model_validate(
            {"version": 2 + i, "issued_at": START, "default": default, "orgs": orgs}
        )
        rec = self.store.append_policy(
            doc, actor="test", action="lists", now=START, publish=self.link.publish
        )
        return rec.version

    def fleet(self) -> Fleet:
        w = self.world
        return Fleet(
            world=w,
            link=self.link,
            registry=self.registry,
            clock=self.clock,
            recorder=Recorder(1, w.n_orgs, w.n_endpoints),
            tables=self.tables,
        )


@pytest.fixture(scope="module")
def setup(
    small_corpus: Corpus, bundles: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    s = _Setup(small_corpus, bundles, tmp_path_factory.mktemp("tables"))
    yield s
    s.store.close()


_lookups = st.lists(
    st.tuples(
        st.integers(0, 2),  # which policy version
        st.integers(0, N_ORGS - 1),
        st.sampled_from([1, 2]),  # model
        st.integers(0, HOURS * 4),  # quarter
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lookups=_lookups)
def test_every_lookup_gets_the_table_of_its_own_org_and_time(
    setup: _Setup, lookups: list[tuple[int, int, int, int]]
) -> None:
    fleet, alone = setup.fleet(), setup.alone
    first: dict[tuple[int, int, int], float] = {}
    for which, org, model, q in lookups:
        pv, t = setup.versions[which], q * 900.0
        got = fleet.tables.verdict[fleet.table(pv, org, model, t)]
        # an org keeps the table of its first lookup of a (policy, model): the cohort builds
        # it as of the org's first switch to the pair
        t0 = first.setdefault((pv, org, model), t)
        eff = setup.link.effective(pv, org)
        want = alone.verdict[alone.index(model, eff, setup.clock.at(t0))]
        assert np.array_equal(got, want), (pv, org, model, t0)


def test_the_lists_change_the_tables_over_the_day_and_orgs_without_overrides_share_them(
    setup: _Setup,
) -> None:
    pv = setup.versions[1]  # overrides for orgs 1 and 2
    alone = setup.alone
    hours = range(HOURS)
    by_hour = {h: alone.index(1, setup.link.effective(pv, 0), _at(h)) for h in hours}
    assert len(set(by_hour.values())) >= 5  # the entries' starts and expiries took effect
    fleet = setup.fleet()
    n = len(fleet.tables.verdict)
    plain = [o for o in range(N_ORGS) if o not in (1, 2)]
    for h in hours:  # each hour, a first lookup by another org the document does not name
        org = plain[h]
        idx = fleet.table(pv, org, 1, h * 3600.0)
        assert np.array_equal(fleet.tables.verdict[idx], alone.verdict[by_hour[h]])
    # a table per span at most, shared by those orgs, not one per (org, hour)
    assert len(fleet._spans[pv, None, 1]) == len(set(by_hour.values()))
    assert len(fleet.tables.verdict) - n <= 2 * len(set(by_hour.values()))


def _decided(scores: Any, sha256: Any, ctx: Any) -> Any:
    """`agent.decision.decide` of each sample, as verdict codes (the rule, asked directly)."""
    pairs = zip(sha256, scores.tolist(), strict=True)
    return np.asarray([verdict_code(decide(s, float(x), ctx).verdict) for s, x in pairs])


def test_each_model_and_context_is_decided_once_and_the_tables_are_decide_per_sample(
    setup: _Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleet_sim.control as control

    calls: list[Any] = []
    batch = control.decide_batch

    def counted(ctx: Any, sha256s: Any, index: Any, scores: Any) -> Any:
        calls.append((ctx, len(index)))
        return batch(ctx, sha256s, index, scores)

    monkeypatch.setattr(control, "decide_batch", counted)
    reg, w = setup.registry, setup.world
    t = DecisionTables(w.catalog.sha256, w.catalog.label, reg)
    pairs = set()
    for which in range(3):
        for org in (0, 1, 2):
            eff = setup.link.effective(setup.versions[which], org)
            for h in (0, 5):
                for model in (2, 1):  # model 2 first: its table decides the baseline too
                    idx = t.index(model, eff, _at(h))
                    for tripped, i in ((False, idx), (True, t.tripped_twin[idx])):
                        ctx = context_for(
                            eff, reg[model].thresholds, _at(h), breaker_tripped=tripped
                        )
                        bctx = context_for(eff, reg[1].thresholds, _at(h), breaker_tripped=tripped)
                        pairs |= {(model, ctx), (1, bctx)}
                        want = _decided(reg[model].scores, w.catalog.sha256, ctx)
                        base = _decided(reg[1].scores, w.catalog.sha256, bctx)
                        assert np.array_equal(t.verdict[i], want)
                        new = ALERT_CODES[want] & ~ALERT_CODES[base]
                        assert np.array_equal(t.new_alert[i], new)
    # every (model, context) pair met was decided once (the whole catalogue), not once per table
    assert len(calls) == len(pairs)
    assert all(n == len(w.catalog.sha256) for _, n in calls)
