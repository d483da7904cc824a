"""Update rings: the pure per-org percentages, ring-by-ring decisions, and a ringed rollout."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.policy import OrgPolicyModel, PolicyDocumentModel, Ring, RingModel
from backend.admin import assign_model, repository_publisher, set_ring
from backend.errors import BatchInvalidError, ConflictError
from backend.rollout.api import RingBody
from backend.rollout.core import (
    ArmCounts,
    Evidence,
    OrgEvidence,
    Rollout,
    RolloutAction,
    RolloutConfig,
    RolloutState,
    apply_decision,
    decide,
)
from backend.rollout.rings import (
    RING_ORDER,
    RingAssignment,
    check_ring_name,
    org_percents,
    ring_plan,
    ring_sequence,
)
from backend.rollout.service import (
    EndpointDayRow,
    decision_log,
    get_rollout,
    record_endpoint_days,
    resume_rollout,
    rollout_status,
    start_rollout,
    tick_rollout,
)
from backend.store import AnyStore, Store, open_store
from tests.backend.conftest import LiveServer

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
PLAN = (
    RingAssignment("p", Ring.PREVIEW),
    RingAssignment("s", Ring.STAGED),
    RingAssignment("b", Ring.BROAD),
    RingAssignment("d", Ring.DELAYED, 48.0),
)


# --- the pure ring rule, row by row --------------------------------------------------------


@pytest.mark.parametrize(
    ("ring", "percent", "broad_done_h", "now_h", "expected"),
    [
        # ring      %    broad done  now   p      s      b      d
        (Ring.PREVIEW, 10, None, 0, (10.0, 0.0, 0.0, 0.0)),
        (Ring.STAGED, 25, None, 30, (100.0, 25.0, 0.0, 0.0)),
        (Ring.BROAD, 50, None, 60, (100.0, 100.0, 50.0, 0.0)),
        # the controller reached delayed, but the 48 h after broad have not passed
        (Ring.DELAYED, 10, 100, 147, (100.0, 100.0, 100.0, 0.0)),
        (Ring.DELAYED, 10, 100, 148, (100.0, 100.0, 100.0, 10.0)),
        # a ring "delayed" with no broad completion recorded never gets the version
        (Ring.DELAYED, 100, None, 10_000, (100.0, 100.0, 100.0, 0.0)),
    ],
)
def test_org_percents_per_ring_row_by_row(
    ring: Ring,
    percent: float,
    broad_done_h: float | None,
    now_h: float,
    expected: tuple[float, ...],
) -> None:
    done = None if broad_done_h is None else T0 + broad_done_h * H
    got = org_percents(PLAN, ring, percent, broad_done_at=done, now=T0 + now_h * H)
    assert tuple(got[o] for o in ("p", "s", "b", "d")) == expected


@given(
    delay_h=st.floats(0, 500),
    done_h=st.floats(0, 500),
    now_h=st.floats(0, 1500),
    percent=st.floats(0, 100),
)
def test_a_delayed_org_never_runs_the_version_before_its_delay_after_broad(
    delay_h: float, done_h: float, now_h: float, percent: float
) -> None:
    plan = (RingAssignment("d", Ring.DELAYED, delay_h),)
    got = org_percents(
        plan, Ring.DELAYED, percent, broad_done_at=T0 + done_h * H, now=T0 + now_h * H
    )
    if T0 + now_h * H < T0 + done_h * H + delay_h * H:
        assert got["d"] == 0.0
    else:
        assert got["d"] == percent


def test_ring_plan_reads_policy_puts_orgs_without_a_ring_on_broad_in_the_order_given() -> None:
    doc = PolicyDocumentModel(
        version=1,
        issued_at=T0,
        default=OrgPolicyModel(),
        orgs={
            "a": OrgPolicyModel(ring=RingModel(name=Ring.PREVIEW)),
            "c": OrgPolicyModel(ring=RingModel(name=Ring.DELAYED, delay_h=48)),
        },
    )
    plan = ring_plan(doc, ["c", "b", "a", "b"])  # the store's creation order, not by id
    assert plan == (
        RingAssignment("c", Ring.DELAYED, 48.0),
        RingAssignment("b", Ring.BROAD),
        RingAssignment("a", Ring.PREVIEW),
    )
    assert ring_sequence(plan) == (Ring.PREVIEW, Ring.BROAD, Ring.DELAYED)  # staged is empty
    assert ring_plan(None, ["x"]) == (RingAssignment("x", Ring.BROAD),)


def test_ring_survives_a_policy_round_trip_and_old_documents_stay_valid() -> None:
    doc = PolicyDocumentModel(
        version=2, issued_at=T0, default=OrgPolicyModel(),
        orgs={"a": OrgPolicyModel(ring=RingModel(name=Ring.DELAYED, delay_h=48))},
    )  # fmt: skip
    again = PolicyDocumentModel.model_validate_json(doc.model_dump_json())
    assert again == doc and again.orgs["a"].ring == RingModel(name=Ring.DELAYED, delay_h=48)
    old = PolicyDocumentModel.model_validate_json(
        '{"version": 1, "issued_at": "2026-11-02T00:00:00Z", "default": {}, "orgs": {"a": {}}}'
    )
    assert old.orgs["a"].ring is None


# --- the gate, ring by ring -----------------------------------------------------------------

CFG = RolloutConfig(
    stages=(50.0, 100.0), hold=dt.timedelta(hours=24), min_endpoint_days=30,
    min_org_endpoint_days=10, inconclusive_looks=2,
)  # fmt: skip


def _ringed(**kw: object) -> Rollout:
    base: dict[str, object] = dict(
        rollout_id=1, to_version=2, from_version=1, org_id=None, salt="s", config=CFG,
        started_at=T0, stage_started_at=T0, rings=PLAN,
    )  # fmt: skip
    base.update(kw)
    return Rollout(**base)  # type: ignore[arg-type]


def _arm(days: float, alerts: int) -> ArmCounts:
    return ArmCounts(endpoints=int(days), endpoint_days=days, alerts=alerts)


def _good(org: str, days: float = 400) -> Evidence:
    can, ctl = _arm(days, int(days) // 2), _arm(days, int(days) // 2)
    return Evidence(can, ctl, (OrgEvidence(org, can, ctl),))


def test_a_rings_last_stage_advances_to_the_next_ring_not_to_completion() -> None:
    r = _ringed()
    d = decide(r, _good("p", 20_000), T0 + 25 * H)
    assert d.action is RolloutAction.ADVANCE and "ring preview done" in d.reason, d.reason
    assert d.ring == "preview"
    after = apply_decision(r, d)
    assert (after.ring, after.stage_index, after.stage_looks) == (Ring.STAGED, 0, 0)
    assert after.broad_done_at is None


def test_leaving_broad_records_its_completion_and_delayed_holds_from_eligibility() -> None:
    r = _ringed(ring_index=2)  # broad
    now = T0 + 100 * H
    d = decide(r, _good("b", 20_000), now)
    assert d.action is RolloutAction.ADVANCE, d.reason
    after = apply_decision(r, d)
    assert after.ring is Ring.DELAYED and after.broad_done_at == now
    assert after.stage_started_at == now + 48 * H  # the stage's clock starts at eligibility
    # the last ring completes the rollout
    d2 = decide(after, _good("d", 20_000), now + 48 * H + 25 * H)
    assert d2.action is RolloutAction.COMPLETE, d2.reason


def test_thin_org_strata_wait_then_pause_instead_of_advancing() -> None:
    # pooled evidence is plenty and non-inferior, but the only org stratum is too small to judge
    can, ctl = _arm(20_000, 10_000), _arm(20_000, 10_000)
    ev = Evidence(can, ctl, (OrgEvidence("p", _arm(5, 2), _arm(5, 2)),))
    r = _ringed()
    d1 = decide(r, ev, T0 + 25 * H)
    assert d1.action is RolloutAction.WAIT and "carry 0%" in d1.reason, d1.reason
    r = apply_decision(r, d1)
    d2 = decide(r, ev, T0 + 49 * H)
    assert d2.action is RolloutAction.PAUSE and "inconclusive" in d2.reason, d2.reason
    paused = apply_decision(r, d2)
    assert paused.state is RolloutState.PAUSED and paused.stage_index == 0
    # a resume grants inconclusive_looks more looks before the next pause
    resumed = replace(paused, state=RolloutState.RUNNING, pause_base_look=paused.stage_looks)
    d3 = decide(resumed, ev, T0 + 73 * H)
    assert d3.action is RolloutAction.WAIT, d3.reason


def test_unringed_rollouts_keep_waiting_when_inconclusive_looks_is_zero() -> None:
    cfg = replace(CFG, inconclusive_looks=0, stages=(10.0, 100.0))
    ev = Evidence(_arm(400, 260), _arm(400, 200))  # a bit worse: neither halt nor advance
    r = _ringed(config=cfg, rings=())
    for k in range(1, 6):
        d = decide(r, ev, T0 + (24 * k + 1) * H)
        assert d.action is RolloutAction.WAIT, d.reason
        r = apply_decision(r, d)


def test_a_worse_org_in_the_ring_halts_even_when_the_pool_is_fine() -> None:
    good = _arm(2000, 1000)
    bad = OrgEvidence("p2", _arm(200, 500), _arm(200, 100))
    ev = Evidence(_arm(2200, 1500), _arm(2200, 1100), (OrgEvidence("p", good, good), bad))
    d = decide(_ringed(), ev, T0 + 2 * H)
    assert d.action is RolloutAction.HALT and d.halted_orgs == ("p2",), d.reason


# --- a ringed rollout against a real store --------------------------------------------------


def _day(t: dt.datetime) -> int:
    return int(t.timestamp()) // 86_400


def _report(store: Store, t: dt.datetime, org: str, version: int, n: int, alerts: int) -> None:
    rows = [
        EndpointDayRow(_day(t), f"{org}-{version}-{i}", version, org, 10, alerts) for i in range(n)
    ]
    record_endpoint_days(store, rows)


def _percents(store: Store, orgs: list[str]) -> list[float]:
    cur = store.current_policy()
    assert cur is not None
    out = []
    for o in orgs:
        over = cur.document.orgs.get(o)
        out.append(over.rollout.percent if over and over.rollout else 0.0)
    return out


@pytest.fixture
def ringed_store(tmp_path: Path, repo_dir: Path) -> tuple[Store, Path, list[str]]:
    store = Store(tmp_path / "b.db")
    orgs = [store.create_org(n, T0).org_id for n in ("pre", "stg", "brd", "dly")]
    publish = repository_publisher(repo_dir)
    assign_model(store, publish, 1, org_id=None, now=T0)
    set_ring(store, publish, Ring.PREVIEW, org_id=orgs[0], now=T0)
    set_ring(store, publish, Ring.STAGED, org_id=orgs[1], now=T0)
    set_ring(store, publish, Ring.DELAYED, org_id=orgs[3], delay_h=48, now=T0)  # orgs[2]: broad
    return store, repo_dir, orgs


def test_set_ring_is_stored_in_signed_policy_and_refuses_a_delay_off_the_delayed_ring(
    ringed_store: tuple[Store, Path, list[str]],
) -> None:
    store, repo, orgs = ringed_store
    cur = store.current_policy()
    assert cur is not None
    assert cur.document.orgs[orgs[3]].ring == RingModel(name=Ring.DELAYED, delay_h=48)
    assert "set ring delayed +48 h" in cur.action
    with pytest.raises(BatchInvalidError, match="only the delayed ring waits"):
        set_ring(store, repository_publisher(repo), Ring.BROAD, org_id=orgs[2], delay_h=5, now=T0)


def test_a_ringed_rollout_goes_ring_by_ring_and_delayed_waits_its_delay_after_broad(
    ringed_store: tuple[Store, Path, list[str]],
) -> None:
    store, repo, orgs = ringed_store
    publish = repository_publisher(repo)
    with pytest.raises(ConflictError, match="fleet-wide"):
        start_rollout(store, publish, 2, now=T0, config=CFG, rings=True, org_id=orgs[0])
    start_rollout(store, publish, 2, now=T0, config=CFG, rings=True, salt="s")
    assert _percents(store, orgs) == [50.0, 0.0, 0.0, 0.0]
    assert rollout_status(store, now=T0)["ring"] == "preview"
    now, seen = T0, []
    for _ in range(12):
        r = get_rollout(store)
        assert r is not None
        if r.state is not RolloutState.RUNNING:
            break
        for org, p in zip(orgs, _percents(store, orgs), strict=True):
            _report(store, now, org, 1, 100, 5)  # control (also the org's not-yet canary)
            if p:
                _report(store, now, org, 2, 100, 5)
        now += 25 * H
        d = tick_rollout(store, publish, now=now)
        assert d is not None
        seen.append((d.action.value, d.ring, _percents(store, orgs)))
        broad_done = get_rollout(store).broad_done_at  # type: ignore[union-attr]
        if broad_done is not None and now < broad_done + 48 * H:
            assert _percents(store, orgs)[3] == 0.0, seen  # delayed: nothing before its delay
    actions = [(a, ring) for a, ring, _ in seen if a != "wait"]
    assert actions == [
        ("advance", "preview"),
        ("advance", "staged"),
        ("advance", "broad"),
        ("complete", "delayed"),
    ], seen
    assert [p for a, _, p in seen if a == "advance"][:2] == [
        [100.0, 50.0, 0.0, 0.0],
        [100.0, 100.0, 50.0, 0.0],
    ]
    delayed = [p[3] for a, ring, p in seen if ring == "delayed"]
    assert delayed[0] == 0.0 and 50.0 in delayed, seen  # it waited, then became eligible
    cur = store.current_policy()
    assert cur is not None and cur.document.default.model_version == 2
    assert _percents(store, orgs) == [0.0] * 4  # the blocks are cleared on completion
    log = decision_log(store)
    assert any(x["ring"] == "delayed" for x in log)


def test_an_inconclusive_ringed_rollout_pauses_and_resumes(
    ringed_store: tuple[Store, Path, list[str]],
) -> None:
    store, repo, orgs = ringed_store
    publish = repository_publisher(repo)
    start_rollout(store, publish, 2, now=T0, config=CFG, rings=True, salt="s")
    now = T0
    for _ in range(2):  # a tiny preview org: pooled evidence suffices, the stratum never does
        _report(store, now, orgs[0], 1, 4, 1)
        _report(store, now, orgs[0], 2, 4, 1)
        now += 25 * H
        tick_rollout(store, publish, now=now)
    r = get_rollout(store)
    assert r is not None and r.state is RolloutState.RUNNING  # too few endpoint-days: waits
    for _ in range(3):
        _report(store, now, orgs[0], 1, 30, 1)
        _report(store, now, orgs[0], 2, 30, 1)
        now += 25 * H
        d = tick_rollout(store, publish, now=now)
        if d is not None and d.action is RolloutAction.PAUSE:
            break
    r = get_rollout(store)
    assert r is not None and r.state is RolloutState.PAUSED, decision_log(store)[-1]["reason"]
    assert _percents(store, orgs) == [50.0, 0.0, 0.0, 0.0]  # paused: the cohort stays
    resumed = resume_rollout(store, now=now)
    assert resumed.state is RolloutState.RUNNING and resumed.ring is Ring.PREVIEW


# --- the ring names: one list, one message -------------------------------------------------


def test_ring_order_holds_every_ring_once() -> None:
    assert sorted(RING_ORDER) == sorted(Ring) and len(set(RING_ORDER)) == len(RING_ORDER)


@pytest.mark.parametrize("body", ['{"ring": "beta"}', '{"ring": "Delayed", "delay_h": 4}',
                                  '{"ring": 3}', '{"ring": null}'])  # fmt: skip
def test_unknown_ring_is_refused_with_a_message_listing_every_ring_delayed_included(
    body: str,
) -> None:
    with pytest.raises(BatchInvalidError) as info:
        RingBody.model_validate_json(body)
    assert str(info.value) == "ring: must be one of " + ", ".join(r.value for r in RING_ORDER)
    assert all(r.value in str(info.value) for r in Ring)
    with pytest.raises(BatchInvalidError, match="delayed"):
        check_ring_name("beta")
    assert [check_ring_name(r.value) for r in Ring] == list(Ring)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"ring": "delayed", "delay_h": -1}', "delay_h: Input should be greater than or equal"),
        ('{"ring": "delayed", "wait": 1}', "wait: Extra inputs are not permitted"),
        ('{"ring": "broad", "delay_h": 2}', "delay_h: Value error, only the delayed ring waits"),
    ],
)
def test_known_ring_with_a_bad_field_is_refused_in_that_rings_words(
    body: str, message: str
) -> None:
    # the union's first error was the other branch's: "ring: Input should be preview,
    # staged or broad" for a delayed ring with a bad wait
    with pytest.raises(BatchInvalidError) as info:
        RingBody.model_validate_json(body)
    assert str(info.value).startswith(message), str(info.value)


# --- the admin API and the CLI set the same ring -------------------------------------------


def test_admin_route_sets_a_ring_and_starts_a_ringed_rollout(live_server: LiveServer) -> None:
    srv = live_server
    with httpx.Client() as client:
        h = srv.admin()
        org, _ = srv.create_org(client, "early")
        assert client.put(f"{srv.url}/v1/admin/model", json={"model_version": 1}, headers=h)
        put = client.put(f"{srv.url}/v1/admin/orgs/{org}/ring", json={"ring": "preview"}, headers=h)
        assert put.status_code == 200, put.text
        assert put.json()["ring"] == "preview"
        bad = client.put(
            f"{srv.url}/v1/admin/orgs/{org}/ring",
            json={"ring": "staged", "delay_h": 4},
            headers=h,
        )
        assert bad.status_code == 422 and "only the delayed ring waits" in bad.text
        assert (
            client.put(
                f"{srv.url}/v1/admin/orgs/nobody/ring", json={"ring": "broad"}, headers=h
            ).status_code
            == 404
        )
        beta = client.put(f"{srv.url}/v1/admin/orgs/{org}/ring", json={"ring": "beta"}, headers=h)
        assert beta.status_code == 422
        assert beta.json()["detail"] == "ring: must be one of preview, staged, broad, delayed"
        started = client.post(
            f"{srv.url}/v1/admin/rollout",
            json={"to_version": 2, "stages": [10, 100], "rings": True},
            headers=h,
        )
        assert started.status_code == 201 and started.json()["ring"] == "preview", started.text
        assert client.get(f"{srv.url}/v1/admin/rollout", headers=h).json()["rings"] == [
            {"ring": "preview", "orgs": [org]}
        ]


def test_cli_set_ring_writes_signed_policy_and_fails_in_one_line(
    tmp_path: Path, repo_dir: Path
) -> None:
    from click.testing import CliRunner

    from backend.cli import backend

    db = tmp_path / "b.db"
    store = Store(db)
    org = store.create_org("late", T0).org_id
    store.close()
    run = CliRunner().invoke
    args = ["--db", str(db), "--repo", str(repo_dir)]
    ok = run(backend, ["org", "set-ring", org, "delayed", "--delay-hours", "48", *args])
    assert ok.exit_code == 0, ok.output
    assert "set ring delayed +48 h" in ok.output
    store = Store(db)
    cur = store.current_policy()
    store.close()
    assert cur is not None and cur.document.orgs[org].ring == RingModel(
        name=Ring.DELAYED, delay_h=48
    )
    unknown = run(backend, ["org", "set-ring", org, "beta", *args])
    assert unknown.exit_code == 2 and all(f"'{r.value}'" in unknown.output for r in Ring)
    bad = run(backend, ["org", "set-ring", org, "broad", "--delay-hours", "3", *args])
    assert bad.exit_code != 0 and "only the delayed ring waits" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    if request.param == "sqlite":
        s: AnyStore = open_store(tmp_path / "b.db", synchronous="NORMAL")
        yield s
        s.close()
        return
    import psycopg

    from backend.store.postgres import PostgresStore

    url = os.environ.get("FLEETWARD_TEST_PG_URL")
    if not url:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("FLEETWARD_TEST_PG_URL is unset in CI")
        pytest.skip("FLEETWARD_TEST_PG_URL is unset (run `.ci/postgres.sh` to start a server)")
    schema = "t_" + secrets.token_hex(6)
    pg = PostgresStore(url, schema=schema)
    try:
        yield pg
    finally:
        pg.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # noqa: S608 - hex name


def test_the_ring_is_kept_with_the_org_in_either_store_and_read_back_as_of(
    any_store: AnyStore,
) -> None:
    def publish(raw: bytes, now: dt.datetime) -> None:
        return None

    org = any_store.create_org("late", T0).org_id
    set_ring(any_store, publish, Ring.DELAYED, org_id=org, delay_h=48, now=T0 + H)  # type: ignore[arg-type]
    set_ring(any_store, publish, Ring.PREVIEW, org_id=org, now=T0 + 3 * H)  # type: ignore[arg-type]
    cur = any_store.current_policy()
    then = any_store.policy_as_of(T0 + 2 * H)
    assert cur is not None and then is not None
    assert ring_plan(cur.document, [org]) == (RingAssignment(org, Ring.PREVIEW),)
    assert ring_plan(then.document, [org]) == (RingAssignment(org, Ring.DELAYED, 48.0),)


def test_cli_rollout_start_rings_names_the_ring(tmp_path: Path, repo_dir: Path) -> None:
    from click.testing import CliRunner

    from backend.rollout.cli import rollout

    db = tmp_path / "b.db"
    store = Store(db)
    org = store.create_org("early", T0).org_id
    publish = repository_publisher(repo_dir)
    assign_model(store, publish, 1, org_id=None, now=T0)
    set_ring(store, publish, Ring.PREVIEW, org_id=org, now=T0)
    store.close()
    run = CliRunner().invoke
    args = ["--db", str(db), "--repo", str(repo_dir)]
    started = run(rollout, ["start", *args, "--to", "2", "--stages", "10,100", "--rings",
                            "--pause-after", "3"])  # fmt: skip
    assert started.exit_code == 0, started.output
    assert "in ring preview" in started.output
    status = run(rollout, ["status", "--db", str(db)])
    assert "ring preview" in status.output, status.output
