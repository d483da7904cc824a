"""Staged rollout: the statistical gate, cohort stability, the decision log and rollback."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, Targets

from agent.decision import Mode
from agent.policy import (
    DEFAULT_POLICY_TARGET,
    PolicyDocumentModel,
    assigned_version,
    assigned_versions,
    canary_bucket,
    in_canary,
    parse_policy,
    resolve_policy,
)
from backend.admin import assign_model, repository_publisher
from backend.rollout.core import (
    ArmCounts,
    Evidence,
    Metric,
    OrgEvidence,
    RateTest,
    Rollout,
    RolloutAction,
    RolloutConfig,
    RolloutState,
    compare_rates,
    decide,
    holm_named,
)
from backend.rollout.service import (
    ArmDayColumns,
    EndpointDayRow,
    abort_rollout,
    decision_log,
    record_arm_day_columns,
    record_endpoint_days,
    rollout_status,
    start_rollout,
    tick_rollout,
)
from backend.store import AggregateStore
from tests.backend.store.test_store_postgres import store

__all__ = ["store"]

T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
CFG = RolloutConfig(max_fp_increase=0.25, min_endpoint_days=30, min_org_endpoint_days=10)


def _rollout(**kw: object) -> Rollout:
    base = dict(
        rollout_id=1, to_version=2, from_version=1, org_id=None, salt="s", config=CFG,
        started_at=T0, stage_started_at=T0,
    )  # fmt: skip
    base.update(kw)
    return Rollout(**base)  # type: ignore[arg-type]


def _arm(days: float, alerts: int, **kw: int) -> ArmCounts:
    return ArmCounts(endpoints=int(days), endpoint_days=days, alerts=alerts, **kw)


# --- the gate ---------------------------------------------------------------------------------


def test_no_worse_canary_advances_after_hold() -> None:
    ev = Evidence(_arm(400, 200), _arm(20_000, 10_000))
    early = decide(_rollout(), ev, T0 + dt.timedelta(hours=3))
    assert early.action is RolloutAction.WAIT and "holding" in early.reason
    d = decide(_rollout(), ev, T0 + dt.timedelta(hours=25))
    assert d.action is RolloutAction.ADVANCE, d.reason
    ni = d.tests[-1]
    assert ni.noninferior and ni.p_noninferior < ni.alpha


def test_last_stage_completes() -> None:
    ev = Evidence(_arm(10_000, 5_000), _arm(10_000, 5_000))
    d = decide(_rollout(stage_index=3), ev, T0 + dt.timedelta(days=2))
    assert d.action is RolloutAction.COMPLETE and d.next_decision_at is None


def test_much_worse_canary_halts_before_hold() -> None:
    ev = Evidence(_arm(200, 400), _arm(20_000, 10_000))
    d = decide(_rollout(), ev, T0 + dt.timedelta(hours=2))
    assert d.action is RolloutAction.HALT
    overall = d.tests[0]
    assert overall.worse and overall.rate_ratio == pytest.approx(4.0)
    assert overall.p_worse < 1e-10


def test_too_few_endpoint_days_waits_even_when_it_looks_bad() -> None:
    ev = Evidence(_arm(5, 50), _arm(20_000, 10_000))
    d = decide(_rollout(), ev, T0 + dt.timedelta(days=3))
    assert d.action is RolloutAction.WAIT and "too few endpoint-days" in d.reason


def test_slightly_worse_within_noise_waits_not_advances() -> None:
    # ratio 1.2 < 1 + margin, but too little data to show non-inferiority at the margin
    ev = Evidence(_arm(40, 24), _arm(20_000, 10_000))
    d = decide(_rollout(), ev, T0 + dt.timedelta(days=2))
    assert d.action is RolloutAction.WAIT and "not yet shown" in d.reason


def test_per_org_surge_halts_and_names_the_org() -> None:
    good = [OrgEvidence(f"org_{i}", _arm(100, 50), _arm(2_000, 1_000)) for i in range(5)]
    bad = OrgEvidence("org_bad", _arm(100, 400), _arm(2_000, 1_000))
    orgs = (*good, bad)
    canary = ArmCounts(600, 600, 650)
    control = ArmCounts(12_000, 12_000, 6_000)
    d = decide(_rollout(), Evidence(canary, control, orgs), T0 + dt.timedelta(hours=5))
    assert d.action is RolloutAction.HALT
    assert d.halted_orgs == ("org_bad",)
    assert "org_bad" in d.reason


def _org_test(org: str, canary_alerts: int) -> RateTest:
    return compare_rates(
        Metric.ALERTS, org, _arm(5, canary_alerts), _arm(500, 100), margin=0.5, alpha=0.05
    )


def test_holm_names_the_strong_org_and_not_a_nominally_worse_one() -> None:
    # The rollout fleet's halt at salt 18: p 5e-7 (surged), 0.037 (surged), 0.040 (innocent)
    # among 8 orgs. Nominal 0.05 named all three; Holm's second step needs p < 0.05 / 7.
    tests = [_org_test("strong", 12), _org_test("weak", 5)]
    tests += [_org_test(f"quiet{i}", 1) for i in range(6)]
    assert [t.p_worse < 1e-4 for t in tests[:2]] == [True, False]
    assert 0.05 / 7 < tests[1].p_worse < 0.05
    named = holm_named(tests, 0.05)
    assert [t.org_id for t in named] == ["strong"]


def test_holm_names_every_org_past_its_step() -> None:
    tests = [_org_test("a", 12), _org_test("b", 13), _org_test("c", 1)]
    assert [t.org_id for t in holm_named(tests, 0.05)] == ["b", "a"]


def test_holm_names_the_largest_contributor_when_none_passes_a_step() -> None:
    tests = [_org_test("weak", 5)] + [_org_test(f"q{i}", 1) for i in range(7)]
    assert [t.org_id for t in holm_named(tests, 0.05)] == ["weak"]


def test_holm_names_nobody_when_no_org_is_nominally_worse() -> None:
    assert holm_named([_org_test(f"q{i}", 1) for i in range(4)], 0.05) == []


def test_breaker_trips_in_canary_halt() -> None:
    ev = Evidence(_arm(300, 150, breaker_trips=12), _arm(30_000, 15_000, breaker_trips=10))
    d = decide(_rollout(), ev, T0 + dt.timedelta(hours=5))
    assert d.action is RolloutAction.HALT and "breaker_trips" in d.reason


def test_false_halt_rate_is_below_alpha_for_an_equal_canary() -> None:
    rng = np.random.default_rng(7)
    halts = 0
    for _ in range(300):
        c, k = rng.poisson(0.5 * 300), rng.poisson(0.5 * 30_000)
        ev = Evidence(_arm(300, int(c)), _arm(30_000, int(k)))
        halts += decide(_rollout(), ev, T0 + dt.timedelta(hours=1)).action is RolloutAction.HALT
    assert halts / 300 <= CFG.alpha


def test_config_rejects_unsorted_stages() -> None:
    with pytest.raises(ValueError, match="stages"):
        RolloutConfig(stages=(5.0, 1.0))


# --- cohorts ----------------------------------------------------------------------------------


def test_cohort_is_stable_nested_and_near_its_percentage() -> None:
    eps = [f"ep_{i:06d}" for i in range(20_000)]
    at5 = {e for e in eps if in_canary("salt", e, 5.0)}
    at25 = {e for e in eps if in_canary("salt", e, 25.0)}
    assert at5 <= at25
    assert abs(len(at5) / len(eps) - 0.05) < 0.01
    assert abs(len(at25) / len(eps) - 0.25) < 0.015
    assert at5 == {e for e in eps if in_canary("salt", e, 5.0)}  # same answer every time
    assert {e for e in eps if in_canary("other", e, 5.0)} != at5  # a new salt, a new cohort


def test_assigned_version_uses_the_rollout_block_and_old_policies_stay_valid() -> None:
    old = parse_policy(
        b'{"version": 1, "issued_at": "2026-11-01T00:00:00+00:00", '
        b'"default": {"mode": "enforce", "model_version": 1}}'
    )
    eff = resolve_policy(old, "org_a")
    assert eff.rollout is None and assigned_version(eff, "ep_x") == 1
    raw = old.model_dump(mode="json")
    raw["default"]["rollout"] = {"to_version": 2, "from_version": 1, "percent": 50.0, "salt": "a"}
    doc = PolicyDocumentModel.model_validate(raw)
    eff = resolve_policy(doc, "org_a")
    got = {assigned_version(eff, f"ep_{i}") for i in range(50)}
    assert got == {1, 2}
    assert assigned_version(eff, None) == 1


@given(
    percent=st.floats(0, 100),
    from_version=st.one_of(st.none(), st.integers(1, 5)),
    salt=st.text(min_size=1, max_size=8),
)
def test_assigned_versions_is_assigned_version_for_many(percent, from_version, salt) -> None:
    """The vectorized form the fleet simulator uses decides exactly as the agent does."""
    ids = [f"sim{i:08d}" for i in range(300)]
    raw = {
        "version": 2, "issued_at": "2026-11-01T00:00:00+00:00",
        "default": {"mode": "enforce", "model_version": 1, "rollout": {
            "to_version": 7, "from_version": from_version, "percent": percent, "salt": salt}},
    }  # fmt: skip
    eff = resolve_policy(PolicyDocumentModel.model_validate(raw), "org_a")
    buckets = np.asarray([canary_bucket(salt, e) for e in ids])
    assert assigned_versions(eff, buckets).tolist() == [assigned_version(eff, e) for e in ids]
    assert assigned_versions(None, buckets).tolist() == [0] * len(ids)


# --- the shell: store, log, signed policy ----------------------------------------------------


def _signed_policy(repo: Path) -> PolicyDocumentModel:
    targets = Metadata[Targets].from_file(str(repo / "metadata" / "targets.json"))
    info = targets.signed.targets[DEFAULT_POLICY_TARGET]  # the fleet-wide default document
    sha = info.hashes["sha256"]
    folder, _, name = DEFAULT_POLICY_TARGET.rpartition("/")
    raw = (repo / "targets" / folder / f"{sha}.{name}").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == sha
    return parse_policy(raw)


def _fleet(
    store: AggregateStore, day: int, org: str, version: int, n: int, alerts_each: int
) -> None:
    rows = [
        EndpointDayRow(day, f"{org}-{version}-{i}", version, org, 10, alerts_each) for i in range(n)
    ]
    record_endpoint_days(store, rows)


@pytest.fixture
def setup(store: AggregateStore, repo_dir: Path) -> tuple[AggregateStore, Path, list[str]]:
    """The rollout service over each store dialect (SQLite, PostgreSQL): the gate works on both."""
    orgs = [store.create_org(f"o{i}", T0).org_id for i in range(3)]
    publish = repository_publisher(repo_dir)
    assign_model(store, publish, 1, org_id=None, now=T0)
    return store, repo_dir, orgs


def test_halt_rolls_back_in_signed_policy_and_logs_every_decision(
    setup: tuple[AggregateStore, Path, list[str]],
) -> None:
    store, repo, orgs = setup
    publish = repository_publisher(repo)
    r = start_rollout(store, publish, 2, now=T0, config=CFG)
    assert r.state is RolloutState.RUNNING and r.from_version == 1
    signed = _signed_policy(repo)
    assert signed.default.rollout is not None and signed.default.rollout.percent == 1.0
    day = int(T0.timestamp()) // 86_400
    # nothing reported yet: wait
    d0 = tick_rollout(store, publish, now=T0 + dt.timedelta(hours=1))
    assert d0 is not None and d0.action is RolloutAction.WAIT
    for org in orgs:
        _fleet(store, day, org, 1, 200, 1)
    _fleet(store, day, orgs[0], 2, 20, 1)
    _fleet(store, day, orgs[1], 2, 20, 1)
    _fleet(store, day, orgs[2], 2, 20, 9)  # the surge
    d1 = tick_rollout(store, publish, now=T0 + dt.timedelta(hours=2))
    assert d1 is not None and d1.action is RolloutAction.HALT
    assert d1.halted_orgs == (orgs[2],)
    signed = _signed_policy(repo)
    assert signed.default.rollout is None and signed.default.model_version == 1
    assert assigned_version(resolve_policy(signed, orgs[2]), "any-endpoint") == 1
    log = decision_log(store)
    assert [x["action"] for x in log] == ["start", "wait", "halt"]
    halt = log[-1]
    assert halt["halted_orgs"] == [orgs[2]]
    # the logged tests carry exactly the evidence reported above (alerts over endpoint-days,
    # canary vs control) and say why: org 2's alert rate is 9x its control's, the others' 1x
    alerts = {t["org_id"]: t for t in halt["tests"] if t["metric"] == "alerts"}
    keys = ("canary_count", "canary_endpoint_days", "control_count", "control_endpoint_days")
    figures = {k: (*(t[x] for x in keys), t["rate_ratio"]) for k, t in alerts.items()}
    assert figures == {
        None: (220, 60, 600, 600, round(220 / 60, 4)),  # logged to 4 decimals
        orgs[0]: (20, 20, 200, 200, 1.0),
        orgs[1]: (20, 20, 200, 200, 1.0),
        orgs[2]: (180, 20, 200, 200, 9.0),
    }
    assert {k for k, t in alerts.items() if t["worse"]} == {None, orgs[2]}
    assert all(t["p_worse"] < t["alpha"] for t in alerts.values() if t["worse"])
    assert all(t["p_worse"] >= t["alpha"] for t in (alerts[orgs[0]], alerts[orgs[1]]))
    assert halt["at"] == (T0 + dt.timedelta(hours=2)).isoformat()
    assert halt["policy_version"] == signed.version
    status = rollout_status(store, now=T0 + dt.timedelta(hours=3))
    assert status["state"] == "halted" and status["cohort"]["canary_endpoints"] == 60
    assert tick_rollout(store, publish, now=T0 + dt.timedelta(hours=3)) is None
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        store._conn.execute("DELETE FROM rollout_decisions")  # type: ignore[attr-defined]


def test_the_simulators_rollup_alone_drives_the_same_halt(
    setup: tuple[AggregateStore, Path, list[str]],
) -> None:
    store, repo, orgs = setup
    publish = repository_publisher(repo)
    start_rollout(store, publish, 2, now=T0, config=CFG)
    day = int(T0.timestamp()) // 86_400
    # the halt test's fleet as (day, org, model) increments: no per-endpoint rows at all
    cells = [(org, 1, 200, 1) for org in orgs]
    cells += [(orgs[0], 2, 20, 1), (orgs[1], 2, 20, 1), (orgs[2], 2, 20, 9)]
    n = len(cells)
    record_arm_day_columns(
        store,
        ArmDayColumns(
            [day] * n, [c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells],
            [10 * c[2] for c in cells], [c[2] * c[3] for c in cells], [0] * n, [0] * n, [0] * n,
        ),
    )  # fmt: skip
    d = tick_rollout(store, publish, now=T0 + dt.timedelta(hours=2))
    assert d is not None and d.action is RolloutAction.HALT
    assert d.halted_orgs == (orgs[2],)
    assert (d.canary.endpoint_days, d.canary.alerts) == (60.0, 220)
    status = rollout_status(store, now=T0 + dt.timedelta(hours=3))
    assert status["cohort"] == {"canary_endpoints": 60, "control_endpoints": 600}


def test_good_canary_reaches_100_percent(setup: tuple[AggregateStore, Path, list[str]]) -> None:
    store, repo, orgs = setup
    publish = repository_publisher(repo)
    start_rollout(store, publish, 2, now=T0, config=CFG)
    now = T0
    percents = []
    for step in range(3):
        day = int(now.timestamp()) // 86_400
        for org in orgs:
            _fleet(store, day, org, 1, 300, 2)
            _fleet(store, day, org, 2, 300 if step else 30, 2)
        now += dt.timedelta(hours=25)
        d = tick_rollout(store, publish, now=now)
        assert d is not None, step
        percents.append((d.action.value, d.percent))
    assert percents[-1][0] == "complete", percents
    signed = _signed_policy(repo)
    assert signed.default.rollout is None and signed.default.model_version == 2


def test_abort_restores_the_previous_assignment(
    setup: tuple[AggregateStore, Path, list[str]],
) -> None:
    store, repo, _ = setup
    publish = repository_publisher(repo)
    start_rollout(store, publish, 2, now=T0, config=CFG)
    r = abort_rollout(store, publish, now=T0 + dt.timedelta(minutes=5))
    assert r.state is RolloutState.ABORTED
    signed = _signed_policy(repo)
    assert signed.default.rollout is None and signed.default.model_version == 1
    assert signed.default.mode is Mode.ENFORCE


def test_admin_rollout_routes_start_report_and_abort(live_server: object) -> None:
    import httpx

    srv = live_server
    with httpx.Client() as client:
        h = srv.admin()  # type: ignore[attr-defined]
        url = srv.url  # type: ignore[attr-defined]
        assert client.put(f"{url}/v1/admin/model", json={"model_version": 1}, headers=h).is_success
        started = client.post(
            f"{url}/v1/admin/rollout", json={"to_version": 2, "stages": [5, 100]}, headers=h
        )
        assert started.status_code == 201, started.text
        assert started.json()["percent"] == 5.0
        again = client.post(f"{url}/v1/admin/rollout", json={"to_version": 3}, headers=h)
        assert again.status_code == 409
        assert client.post(f"{url}/v1/admin/rollout/pause", headers=h).json()["state"] == "paused"
        assert client.post(f"{url}/v1/admin/rollout/resume", headers=h).json()["state"] == "running"
        tick = client.post(f"{url}/v1/admin/rollout/tick", headers=h).json()
        assert tick["action"] == "wait"
        status = client.get(f"{url}/v1/admin/rollout", headers=h).json()
        assert status["state"] == "running" and status["next_decision_at"]
        aborted = client.post(f"{url}/v1/admin/rollout/abort", headers=h)
        assert aborted.json()["state"] == "aborted"
        log = client.get(f"{url}/v1/admin/rollout/decisions", headers=h).json()
        assert [x["action"] for x in log] == ["start", "pause", "resume", "wait", "abort"]
        assert client.get(f"{url}/v1/admin/rollout").status_code == 401


@settings(deadline=None)  # the first example imports scipy
@given(
    n=st.integers(1, 20_000),
    k_share=st.floats(0.0, 1.0),
    p=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 0.5, 1e-9, 1 - 1e-9])),
)
def test_binomial_tails_equal_scipy_binomtest_bit_for_bit(n: int, k_share: float, p: float) -> None:
    from scipy.stats import binomtest

    from backend.rollout.core import binomial_tails

    k = min(n, int(k_share * (n + 1)))
    greater, less = binomial_tails(k, n, p)
    assert greater == binomtest(k, n, p, alternative="greater").pvalue
    assert less == binomtest(k, n, p, alternative="less").pvalue


def test_binomial_tails_do_not_import_scipy_stats() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from backend.rollout.core import binomial_tails\n"
        "assert binomial_tails(3, 10, 0.2)[0] > 0\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_binomial_tails_reject_impossible_counts() -> None:
    from backend.rollout.core import binomial_tails

    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_tails(11, 10, 0.5)
