"""The console in a real Chromium (Debian's, driven by Playwright) against a real backend.

The backend is the real app on uvicorn on loopback; the agent in the kill-switch flow is the
real `fleetward-agent run --once` enrolled with the org's token, checking in over HTTP and
verifying the signed policy through TUF. Flows: sign in; a page without a session lands on the
login form; flip an org to `off` (with its confirmation step) and see the agent's next check-in
report mode off; add an allowlist entry with an expiry; pause and resume a rollout; a form
whose CSRF field was removed is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from agent.policy import OrgPolicyModel
from tests.backend.conftest import ROOT, LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


def sign_in(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/console/")
    page.get_by_label("Admin token").fill(server.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/console/")


def test_page_without_session_lands_on_login_and_admin_signs_in(
    page: Page, live_server: LiveServer
) -> None:
    p = page
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.goto(f"{live_server.url}/console/rollouts")
    assert p.url == f"{live_server.url}/console/login"
    sign_in(p, live_server)
    assert p.locator("h1").inner_text() == "Fleet overview"
    assert p.locator("#endpoints-online").is_visible()
    assert errors == []  # no CSP violation, no script error


def org_policy(server: LiveServer, org: str) -> OrgPolicyModel:
    record = server.store.current_policy()
    assert record is not None
    return record.document.orgs[org]


def agent_run(server: LiveServer, state: Path, enroll_token: str) -> dict[str, Any]:
    run = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "agent", "run", "--once", "--repo-url", f"{server.url}/tuf",
         "--backend", server.url, "--enroll-token", enroll_token, "--state-dir", str(state),
         "--root", str(server.repo_dir / "metadata" / "1.root.json")],
        capture_output=True, cwd=ROOT, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "check-in ok" in run.stderr, run.stderr
    status = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "agent", "status", "--state-dir", str(state), "--json"],
        capture_output=True, cwd=ROOT, text=True, check=True,
    )  # fmt: skip
    out: dict[str, Any] = json.loads(status.stdout)
    return out


def test_kill_switch_flipped_in_the_browser_reaches_an_enrolled_agent(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    s, p = live_server, page
    with httpx.Client(timeout=30) as client:
        org, enroll_token = s.create_org(client, "acme")
        r = client.put(f"{s.url}/v1/admin/mode", json={"mode": "enforce", "org_id": org},
                       headers=s.admin())  # fmt: skip
        assert r.status_code == 200, r.text
    state = tmp_path / "agent"
    before = agent_run(s, state, enroll_token)
    assert before["mode"] == "enforce"

    sign_in(p, s)
    p.goto(f"{s.url}/console/orgs/{org}")
    p.get_by_label("New mode for this organization").select_option("off")
    p.get_by_role("button", name="Review change").click()
    assert org_policy(s, org).mode == "enforce"  # nothing changed before the confirmation
    p.get_by_role("button", name="Confirm: set off").click()
    p.wait_for_url(f"{s.url}/console/orgs/{org}")
    assert "set mode off" in p.get_by_role("status").inner_text()
    assert p.locator("#mode").inner_text() == "off"

    after = agent_run(s, state, enroll_token)
    assert after["mode"] == "off"
    assert after["policy_version"] == before["policy_version"] + 1


def test_allowlist_entry_with_expiry_is_added_in_the_browser(
    page: Page, live_server: LiveServer
) -> None:
    s, p = live_server, page
    with httpx.Client(timeout=30) as client:
        org, _ = s.create_org(client, "acme")
    sign_in(p, s)
    p.goto(f"{s.url}/console/orgs/{org}")
    sha = "c0ffee" + "00" * 29
    p.get_by_label("sha256").fill(sha)
    p.get_by_label("Reason").fill("in-house build tool")
    p.get_by_label("Expires (UTC, optional)").fill("2027-01-15T10:00")
    p.get_by_role("button", name="Add entry").click()
    p.wait_for_url(f"{s.url}/console/orgs/{org}")
    row = p.locator("#allowlist tbody tr").first
    assert sha in row.inner_text() and "2027-01-15 10:00 UTC" in row.inner_text()
    entry = org_policy(s, org).allowlist[0]
    assert (entry.sha256, entry.reason) == (sha, "in-house build tool")
    assert (
        entry.expires_at is not None and entry.expires_at.isoformat() == "2027-01-15T10:00:00+00:00"
    )


def test_rollout_is_paused_and_resumed_in_the_browser(page: Page, live_server: LiveServer) -> None:
    s, p = live_server, page
    with httpx.Client(timeout=30, headers=s.admin()) as client:
        assert client.put(f"{s.url}/v1/admin/model", json={"model_version": 1}).status_code == 200
        r = client.post(f"{s.url}/v1/admin/rollout", json={"to_version": 2})
        assert r.status_code == 201, r.text
    sign_in(p, s)
    p.goto(f"{s.url}/console/rollouts")
    assert p.locator("#rollout-state").inner_text() == "running"
    p.get_by_role("button", name="Pause").click()
    p.wait_for_url(f"{s.url}/console/rollouts")
    assert p.locator("#rollout-state").inner_text() == "paused"
    p.get_by_role("button", name="Resume").click()
    p.wait_for_url(f"{s.url}/console/rollouts")
    assert p.locator("#rollout-state").inner_text() == "running"
    with httpx.Client(timeout=30, headers=s.admin()) as client:
        log = client.get(f"{s.url}/v1/admin/rollout/decisions").json()
    assert [d["action"] for d in log] == ["start", "pause", "resume"]
    assert "pause" in p.locator("#decision-log").inner_text()


def test_form_without_its_csrf_field_is_refused_in_the_browser(
    page: Page, live_server: LiveServer
) -> None:
    s, p = live_server, page
    with httpx.Client(timeout=30) as client:
        org, _ = s.create_org(client, "acme")
    sign_in(p, s)
    p.goto(f"{s.url}/console/orgs/{org}")
    p.locator("#add-entry input[name=csrf_token]").evaluate("e => e.remove()")
    p.get_by_label("sha256").fill("ab" * 32)
    with p.expect_response(lambda r: r.request.method == "POST") as got:
        p.get_by_role("button", name="Add entry").click()
    assert got.value.status == 403
    assert "CSRF" in p.locator("main").inner_text()
    assert s.store.current_policy() is None


def test_kill_switch_is_usable_with_the_keyboard_alone(page: Page, live_server: LiveServer) -> None:
    s, p = live_server, page
    with httpx.Client(timeout=30) as client:
        org, _ = s.create_org(client, "acme")
    sign_in(p, s)
    p.goto(f"{s.url}/console/orgs/{org}")
    for _ in range(40):  # Tab through the page until the mode field has the focus
        p.keyboard.press("Tab")
        if p.evaluate("document.activeElement.id") == "mode-select":
            break
    assert p.evaluate("document.activeElement.id") == "mode-select"
    assert p.locator("#mode-select").input_value() == "enforce"  # the mode in force
    p.keyboard.press("End")  # the last option: off
    assert p.locator("#mode-select").input_value() == "off"
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Review change"
    p.keyboard.press("Enter")
    p.wait_for_selector("text=Confirm: set off")
    # autofocus lands after the text shows on a loaded machine: wait for it, or Enter is lost
    p.wait_for_function("document.activeElement.textContent === 'Confirm: set off'")
    p.keyboard.press("Enter")  # the confirmation button has the focus
    p.wait_for_url(f"{s.url}/console/orgs/{org}")
    assert p.locator("#mode").inner_text() == "off"
    assert org_policy(s, org).mode == "off"
