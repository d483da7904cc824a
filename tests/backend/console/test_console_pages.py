"""What the console's read pages show, against figures written through the backend's own calls:
the overview's tiles from the rollout gate's rollup and the endpoints table, plots as images
behind the session, rollout state, and saved transition reports (written by
`write_transition_report`) with their allowlist candidates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

from agent.policy import ListEntry
from backend.analysis import OrgTransition, SweepPoint, TransitionReport, write_transition_report
from backend.rollout.service import ArmDayColumns, record_arm_day_columns
from tests.backend.conftest import NOW
from tests.backend.console.conftest import ConsoleEnv

DAY = int(NOW.timestamp() * 1000) // 86_400_000


def tile(html: str, ident: str) -> str:
    found = re.search(rf'id="{ident}">([^<]*)<', html)
    assert found, ident
    return found.group(1)


def test_overview_counts_enrolled_endpoints_and_sums_the_health_rollup(
    console: ConsoleEnv,
) -> None:
    acme = console.store.create_org("acme", NOW).org_id
    globex = console.store.create_org("globex", NOW).org_id
    for org in (acme, acme, globex):
        console.store.enroll(org, NOW)
    cols = ArmDayColumns(
        day=[DAY - 1, DAY, DAY], org_id=[acme, acme, globex], model_version=[1, 1, 2],
        endpoint_days=[2, 2, 1], events=[100, 43_200, 0], alerts=[1, 2, 0],
        self_test_failures=[0, 0, 3], model_errors=[0, 0, 0], breaker_trips=[4, 1, 0],
    )  # fmt: skip
    record_arm_day_columns(console.store, cols)
    console.login()
    page = console.client.get("/console/").text
    assert tile(page, "orgs-count") == "2"
    assert tile(page, "endpoints-online") == "0"  # no telemetry yet: enrolled, not online
    assert "of 3 enrolled" in page
    assert tile(page, "breaker-trips") == "5"
    assert tile(page, "self-test-failures") == "3"
    assert tile(page, "events-per-s") == "1.00"  # 43,200 events by 12:00 UTC
    assert "<td>v1</td><td>2</td>" in page and "<td>v2</td><td>1</td>" in page


def test_plots_are_svg_images_behind_the_session_and_scoped_to_their_org(
    console: ConsoleEnv,
) -> None:
    acme = console.store.create_org("acme", NOW)
    globex = console.store.create_org("globex", NOW).org_id
    cols = ArmDayColumns(
        day=[DAY, DAY], org_id=[acme.org_id, globex], model_version=[1, 1],
        endpoint_days=[1, 1], events=[10, 20], alerts=[0, 0],
        self_test_failures=[0, 0], model_errors=[0, 0], breaker_trips=[0, 0],
    )  # fmt: skip
    record_arm_day_columns(console.store, cols)
    console.login()
    fleet_keys = re.findall(
        r"/console/plots/([0-9a-f]+)\.svg", console.client.get("/console/").text
    )
    assert len(fleet_keys) == 3
    img = console.client.get(f"/console/plots/{fleet_keys[0]}.svg")
    assert img.status_code == 200 and img.headers["content-type"] == "image/svg+xml"
    assert img.content.lstrip().startswith(b"<?xml") and b"<script" not in img.content
    org_page = console.client.get(f"/console/orgs/{globex}").text
    globex_key = re.findall(r"/console/plots/([0-9a-f]+)\.svg", org_page)[0]
    assert console.client.get("/console/plots/" + "0" * 32 + ".svg").status_code == 404

    console.client.cookies.clear()
    assert (
        console.client.get(f"/console/plots/{globex_key}.svg", follow_redirects=False).status_code
        == 303
    )
    console.login(acme.enroll_token)  # read-only for acme: neither globex's nor the fleet's
    assert console.client.get(f"/console/plots/{globex_key}.svg").status_code == 403
    assert console.client.get(f"/console/plots/{fleet_keys[0]}.svg").status_code == 403


def _report() -> TransitionReport:
    a, b = "org_aaaa000000000001", "org_bbbb000000000002"
    orgs = {
        a: OrgTransition(a, 4.5, 12, 3, 1, 45, 10, 0.9, 0.95, allowlist_sha256s=("ef" * 32,)),
        b: OrgTransition(b, 0.25, 2, 1, 0, 5, 20, None, None),
    }
    entry = ListEntry("ef" * 32, "transition v1->v2 negative flip", "fleetward-transition",
                      NOW, NOW + dt.timedelta(days=30))  # fmt: skip
    sweep = (SweepPoint(0.5, 9.0, 12.0, 2, 0.97), SweepPoint(0.8, 0.9, 1.2, 0, 0.91))
    return TransitionReport(
        old_version=1, new_version=2, now=NOW, per_org=orgs,
        fleet_predicted_new_fp_alerts_per_day=4.75, fleet_endpoints_touched=14,
        transition_allowlist=(entry,), schema_changed=False, recall_before=0.9,
        recall_after=0.95, samples_scored=40, samples_without_vectors=0, sweep=sweep,
        fp_budget_per_day=1.0, recommended_alert_threshold=0.8,
        allowlisted_fp_alerts_per_day_removed=4.0,
    )  # fmt: skip


def test_saved_transition_report_shows_per_org_forecast_sweep_and_candidates(
    console: ConsoleEnv, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    write_transition_report(_report(), reports / "v1-to-v2")
    console.login()
    listing = console.client.get("/console/transitions").text
    assert 'href="/console/transitions/v1-to-v2"' in listing
    page = console.client.get("/console/transitions/v1-to-v2").text
    assert page.index("org_aaaa000000000001") < page.index("org_bbbb000000000002")
    assert "<td>4.50</td>" in page and "ef" * 32 in page
    # org a's own flip is offered for org a's allowlist only, never fleet-wide
    assert 'action="/console/transitions/v1-to-v2/allowlist"' in page
    assert 'name="org_id" value="org_aaaa000000000001"' in page
    assert "Allowlist for org_aaaa000000000001" in page and "Allowlist fleet-wide" not in page
    assert len(re.findall(r"/console/plots/[0-9a-f]+\.svg", page)) == 2
    saved = console.client.get("/console/transitions/v1-to-v2/report")
    assert saved.status_code == 200 and "Transition v1 -&gt; v2" in saved.text
    assert "script-src" not in saved.headers["content-security-policy"]  # default-src 'none'
    assert console.client.get("/console/transitions/../etc").status_code == 404


def test_org_viewer_sees_only_its_row_of_a_transition_report(
    console: ConsoleEnv, tmp_path: Path
) -> None:
    acme = console.store.create_org("acme", NOW)
    mine = OrgTransition(acme.org_id, 2.0, 3, 2, 0, 20, 10, None, None)
    report = dataclasses.replace(_report(), per_org={**_report().per_org, acme.org_id: mine})
    write_transition_report(report, tmp_path / "reports" / "r1")
    console.login(acme.enroll_token)
    page = console.client.get("/console/transitions/r1").text
    assert acme.org_id in page and "org_aaaa000000000001" not in page
    assert "Allowlist fleet-wide" not in page and "Allowlist for" not in page
    assert console.client.get("/console/transitions/r1/report").status_code == 403


def test_rollouts_page_shows_the_gates_tests_with_p_values_and_per_org_evidence(
    console: ConsoleEnv,
) -> None:
    from backend import admin
    from backend.rollout import service as svc
    from backend.rollout.core import RolloutConfig

    org = console.store.create_org("acme", NOW).org_id
    publish = console.app.state.routes.publish
    admin.assign_model(console.store, publish, 1, org_id=None, now=NOW)
    config = RolloutConfig(hold=dt.timedelta(0), min_endpoint_days=5, min_org_endpoint_days=5)
    svc.start_rollout(console.store, publish, 2, now=NOW, config=config)
    cols = ArmDayColumns(
        day=[DAY, DAY], org_id=[org, org], model_version=[2, 1], endpoint_days=[20, 80],
        events=[2_000, 8_000], alerts=[60, 20], self_test_failures=[0, 0], model_errors=[0, 0],
        breaker_trips=[0, 0],
    )  # fmt: skip
    record_arm_day_columns(console.store, cols)
    decision = svc.tick_rollout(console.store, publish, now=NOW + dt.timedelta(hours=1))
    assert decision is not None and decision.action.value == "halt"  # 3.0 vs 0.25 alerts/day
    console.login()
    page = console.client.get("/console/rollouts").text
    assert tile(page, "rollout-state") == "halted"
    worst = next(t for t in decision.tests if t.worse and t.org_id is None)
    assert f"p(worse) {worst.p_worse:.4g}" in page
    assert (
        f'<a href="/console/orgs/{org}">{org}</a></td><td>20.0</td><td>60</td><td>80.0</td>' in page
    )


def test_allowlisting_a_candidate_applies_it_to_its_own_org_only(
    console: ConsoleEnv, tmp_path: Path
) -> None:
    acme = console.store.create_org("acme", NOW).org_id
    globex = console.store.create_org("globex", NOW).org_id
    sha = "ef" * 32
    flip = OrgTransition(acme, 2.0, 3, 1, 0, 20, 10, None, None, allowlist_sha256s=(sha,))
    quiet = OrgTransition(globex, 0.0, 0, 0, 0, 0, 10, None, None)
    write_transition_report(
        dataclasses.replace(_report(), per_org={acme: flip, globex: quiet}),
        tmp_path / "reports" / "r2",
    )
    csrf = console.login()
    assert f"Allowlist for {acme}" in console.client.get("/console/transitions/r2").text
    # the scope comes from the saved report: asking for globex finds no such candidate
    forged = console.client.post(
        "/console/transitions/r2/allowlist",
        data={"sha256": sha, "org_id": globex, "csrf_token": csrf},
    )
    assert forged.status_code == 404 and console.store.current_policy() is None
    console.client.post(
        "/console/transitions/r2/allowlist",
        data={"sha256": sha, "org_id": acme, "csrf_token": csrf},
    )
    record = console.store.current_policy()
    assert record is not None
    doc = record.document
    assert [e.sha256 for e in doc.orgs[acme].allowlist] == [sha]
    assert not doc.default.allowlist and globex not in doc.orgs
