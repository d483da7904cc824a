"""The rollout gate names and lists orgs the same way whatever pseudonyms the store drew.

The store draws each org's id at random (`secrets`), so an order by id is a new order for every
store. The gate lists orgs (its tests, `halted_orgs`, the reason) and breaks exact p-value ties
in the order of the evidence (`Evidence.by_org`), which the shell fills in the store's creation
order. Here the draws are replaced by counters running up (ids in creation order) and down (the
reverse), the two extremes of that randomness, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import backend.store.postgres as postgres_store
import backend.store.sqlite as sqlite_store
from backend._clock import utc_now
from backend.admin import Publish, assign_model, repository_publisher
from backend.rollout.core import (
    ArmCounts,
    Evidence,
    Metric,
    OrgEvidence,
    RateTest,
    Rollout,
    RolloutAction,
    RolloutConfig,
    RolloutDecision,
    compare_rates,
    decide,
    holm_named,
)
from backend.rollout.service import (
    ArmDayColumns,
    _figures,
    record_arm_day_columns,
    start_rollout,
    tick_rollout,
)
from backend.store import AnyStore, open_store
from model_store.repository import init_repository
from tests.backend.store.test_store_postgres import _require_pg_url
from tests.pseudonyms import CountingIds

T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
DAY = int(T0.timestamp()) // 86_400
CFG = RolloutConfig(max_fp_increase=0.25, min_endpoint_days=30, min_org_endpoint_days=10)
HOUR = dt.timedelta(hours=1)
NAMES = [f"o{i}" for i in range(8)]


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], AnyStore]]:
    """Fresh stores of one dialect (each PostgreSQL one in its own schema, dropped after)."""
    made: list[tuple[AnyStore, str | None]] = []

    def make() -> AnyStore:
        if request.param == "sqlite":
            s: AnyStore = open_store(tmp_path / f"b{len(made)}.db", synchronous="NORMAL")
            made.append((s, None))
            return s
        schema = "t_" + secrets.token_hex(6)
        pg = postgres_store.PostgresStore(_require_pg_url(), schema=schema)
        made.append((pg, schema))
        return pg

    yield make
    for s, schema in made:
        s.close()
        if schema is not None:
            import psycopg

            with psycopg.connect(_require_pg_url(), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")  # noqa: S608 - our own name


def _fleet(
    make: Callable[[], AnyStore], tmp_path: Path, step: int
) -> tuple[AnyStore, list[str], Publish]:
    """A store with orgs o0..o7 created in order, ids drawn by `step`, all on model 1."""
    store = make()
    with pytest.MonkeyPatch.context() as mp:
        for module in (sqlite_store, postgres_store):
            mp.setattr(module, "secrets", CountingIds(step))
        ids = [store.create_org(name, T0).org_id for name in NAMES]
    assert ids == sorted(ids, reverse=step < 0)  # the draws were replaced
    repo = tmp_path / f"repo{step}"
    init_repository(repo, now=utc_now())  # TUF expiries are relative to real time
    publish = repository_publisher(repo)
    assign_model(store, publish, 1, org_id=None, now=T0)
    return store, ids, publish


def _halt(
    make: Callable[[], AnyStore], tmp_path: Path, step: int, canary_alerts: list[int]
) -> tuple[RolloutDecision, dict[str, str]]:
    """The controller's first decision over eight orgs created o0..o7 with ids drawn by `step`.

    Each org: 200 control endpoint-days with 200 alerts, 20 canary ones with `canary_alerts`.
    Returns the decision and each id's org name.
    """
    store, ids, publish = _fleet(make, tmp_path, step)
    start_rollout(store, publish, 2, now=T0, config=CFG, salt="s")
    cells = [(o, 1, 200, 200) for o in ids] + [
        (o, 2, 20, a) for o, a in zip(ids, canary_alerts, strict=True)
    ]
    n = len(cells)
    record_arm_day_columns(
        store,
        ArmDayColumns(
            [DAY] * n, [c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells],
            [10 * c[2] for c in cells], [c[3] for c in cells], [0] * n, [0] * n, [0] * n,
        ),
    )  # fmt: skip
    d = tick_rollout(store, publish, now=T0 + dt.timedelta(hours=2))
    assert d is not None and d.action is RolloutAction.HALT, d and d.reason
    return d, dict(zip(ids, NAMES, strict=True))


def _named(d: RolloutDecision, names: dict[str, str]) -> str:
    """The decision's reason and logged figures, each org id replaced by its name."""
    text = json.dumps({"reason": d.reason, "figures": json.loads(_figures(d))})
    for o, name in names.items():
        text = text.replace(o, name)
    return text


def test_orgs_surging_alone_are_halted_and_listed_in_creation_order(new_store, tmp_path):
    # o1 and o4 surge (p ~ 1e-12 each); the others are as the control
    alerts = [25, 60, 25, 25, 60, 25, 25, 25]
    got = {step: _halt(new_store, tmp_path, step, alerts) for step in (1, -1)}
    for d, names in got.values():
        assert [names[o] for o in d.halted_orgs] == ["o1", "o4"]
        alerts_tested = [names[t.org_id] for t in d.tests if t.org_id]
        assert alerts_tested == NAMES
        reason = _named(d, names)
        assert reason.index("alerts in o1 ") < reason.index("alerts in o4 ")
        assert "; orgs: o1, o4" in reason
    assert _named(*got[1]) == _named(*got[-1])  # the same text, byte for byte


def test_a_pooled_halt_names_the_first_created_org_of_an_exact_tie(new_store, tmp_path):
    # No org passes Holm's first step (p = 0.0095 >= 0.05 / 8) nor its own halt test, the pooled
    # one does (ratio 1.8): the tied o2 and o5 (equal counts, equal p) are the largest
    # contributors, and the one named is the first created, whatever the ids' sort order says.
    alerts = [35, 34, 39, 35, 34, 39, 35, 34]
    got = {step: _halt(new_store, tmp_path, step, alerts) for step in (1, -1)}
    for d, names in got.values():
        own = [t for t in d.tests if t.org_id and t.alpha < CFG.alpha]  # each org's halt test
        assert len(own) == 8 and not [t for t in own if t.worse]
        tied = [t.p_worse for t in own if names[t.org_id or ""] in ("o2", "o5")]
        assert tied[0] == tied[1] == min(t.p_worse for t in own)
        assert 0.05 / 8 <= tied[0] < 0.05  # nominally worse, short of Holm's first step
        assert [names[o] for o in d.halted_orgs] == ["o2"]
        assert _named(d, names).count("; orgs: o2") == 1
    assert _named(*got[1]) == _named(*got[-1])


# --- the pure core: the order is the evidence's ----------------------------------------------


def _arm(days: float, alerts: int) -> ArmCounts:
    return ArmCounts(int(days), days, alerts)


def _org_test(org: str, canary_alerts: int) -> RateTest:
    return compare_rates(
        Metric.ALERTS, org, _arm(5, canary_alerts), _arm(500, 100), margin=0.5, alpha=0.05
    )


def test_holm_breaks_an_exact_tie_by_the_order_it_was_given_not_by_org_id():
    quiet = [_org_test(f"q{i}", 1) for i in range(6)]
    for first, second in (("zz", "aa"), ("aa", "zz")):
        tests = [_org_test(first, 5), *quiet, _org_test(second, 5)]
        assert tests[0].p_worse == tests[-1].p_worse and tests[0].worse
        assert [t.org_id for t in holm_named(tests, 0.05)] == [first]


def test_decide_lists_halted_orgs_in_the_evidences_order():
    good = _arm(100, 50), _arm(2_000, 1_000)
    bad = _arm(100, 400), _arm(2_000, 1_000)
    by_org = (
        OrgEvidence("org_z", *bad), OrgEvidence("org_m", *good), OrgEvidence("org_a", *bad),
    )  # fmt: skip
    for orgs in (by_org, by_org[::-1]):
        ev = Evidence(ArmCounts(300, 300.0, 850), ArmCounts(6_000, 6_000.0, 3_000), orgs)
        d = decide(Rollout(1, 2, 1, None, "s", CFG, T0, stage_started_at=T0), ev, T0 + HOUR * 5)
        want = [o.org_id for o in orgs if o.org_id != "org_m"]
        assert list(d.halted_orgs) == want
        assert d.reason.endswith(f"; orgs: {', '.join(want)}")


def test_a_ringed_rollout_plans_its_orgs_in_creation_order(new_store, tmp_path):
    """The ring plan a ringed rollout stores (and `rollout status` lists) follows the store's
    creation order: with ids sorted, the two draws' plans listed the orgs in reverse."""
    plans = {}
    for step in (1, -1):
        store, ids, publish = _fleet(new_store, tmp_path, step)
        r = start_rollout(store, publish, 2, now=T0, config=CFG, salt="s", rings=True)
        names = dict(zip(ids, NAMES, strict=True))
        plans[step] = [names[a.org_id] for a in r.rings]
    assert plans[1] == plans[-1] == NAMES
