"""The console's access rules without a browser: redirects, session cookie, CSRF, headers,
read-only org logins. The real backend app (console mounted) on a real store and TUF repo."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie

import pytest
from itsdangerous import TimestampSigner

from agent.decision import Mode
from backend.store import TokenKind
from tests.backend.conftest import NOW
from tests.backend.console.conftest import SECRET, ConsoleEnv, csrf_of

PAGES = ["/console/", "/console/orgs", "/console/orgs/fleet", "/console/rollouts",
         "/console/transitions", "/console/orgs/org_0123456789abcdef"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_303_to_the_login_form_without_a_session(
    console: ConsoleEnv, path: str
) -> None:
    r = console.client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login"


def test_the_servers_address_sends_a_browser_to_the_console(console: ConsoleEnv) -> None:
    r = console.client.get("/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/console/")
    assert console.client.post("/", follow_redirects=False).status_code == 405


def test_pages_carry_csp_without_inline_scripts_and_refuse_framing(console: ConsoleEnv) -> None:
    console.login()
    for path in ("/console/login", "/console/", "/console/orgs/fleet"):
        h = console.client.get(path).headers
        csp = {d.split()[0]: d.split()[1:] for d in h["content-security-policy"].split("; ")}
        assert csp["script-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
    page = console.client.get("/console/").text
    assert "<script>" not in page and " on" + "click=" not in page


def test_session_cookie_is_signed_httponly_samesite_strict_and_expires(
    console: ConsoleEnv,
) -> None:
    page = console.client.get("/console/login")
    raw = page.headers["set-cookie"]
    morsel = SimpleCookie(raw)["fleetward_console"]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/console"
    assert int(morsel["max-age"]) == 8 * 3600


def test_admin_token_signs_in_and_a_wrong_token_is_refused(console: ConsoleEnv) -> None:
    page = console.client.get("/console/login")
    bad = console.client.post(
        "/console/login", data={"token": "fwad_nope", "csrf_token": csrf_of(page.text)}
    )
    assert bad.status_code == 401
    assert console.client.get("/console/", follow_redirects=False).status_code == 303
    console.login()
    home = console.client.get("/console/", follow_redirects=False)
    assert home.status_code == 200
    assert "Endpoints online" in home.text


def test_login_without_the_csrf_token_is_refused(console: ConsoleEnv) -> None:
    console.client.get("/console/login")
    r = console.client.post("/console/login", data={"token": console.admin_token})
    assert r.status_code == 403
    assert console.client.get("/console/", follow_redirects=False).status_code == 303


def test_form_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    console: ConsoleEnv,
) -> None:
    org = console.store.create_org("acme", NOW).org_id
    csrf = console.login()
    url = f"/console/orgs/{org}/mode"
    wrong = ("y" if csrf[0] == "x" else "x") + csrf[1:]  # differs from csrf whatever it starts with
    assert wrong != csrf
    for data in ({"mode": "off", "confirm": "yes"},
                 {"mode": "off", "confirm": "yes", "csrf_token": wrong}):  # fmt: skip
        r = console.client.post(url, data=data, follow_redirects=False)
        assert r.status_code == 403
    assert console.store.current_policy() is None
    ok = console.client.post(
        url, data={"mode": "off", "confirm": "yes", "csrf_token": csrf}, follow_redirects=False
    )
    assert ok.status_code == 303
    record = console.store.current_policy()
    assert record is not None and record.document.orgs[org].mode is Mode.OFF


def test_kill_switch_asks_for_confirmation_before_publishing(console: ConsoleEnv) -> None:
    org = console.store.create_org("acme", NOW).org_id
    csrf = console.login()
    ask = console.client.post(f"/console/orgs/{org}/mode", data={"mode": "off", "csrf_token": csrf})
    assert ask.status_code == 200
    assert "Confirm: set off" in ask.text
    assert console.store.current_policy() is None
    done = console.client.post(
        f"/console/orgs/{org}/mode", data={"mode": "off", "confirm": "yes", "csrf_token": csrf}
    )
    assert done.status_code == 200  # followed the 303 back to the org page
    assert "policy v1: set mode off" in done.text
    history = console.store.policy_history()
    assert [h.actor for h in history] == ["console:admin"]


def test_allowlist_entry_with_expiry_is_added_and_removed_by_the_admin_calls(
    console: ConsoleEnv,
) -> None:
    org = console.store.create_org("acme", NOW).org_id
    csrf = console.login()
    sha = "ab" * 32
    console.client.post(
        f"/console/orgs/{org}/lists/add",
        data={"which": "allowlist", "sha256": sha, "reason": "in-house tool",
              "expires_at": "2026-12-24T08:30", "csrf_token": csrf},
    )  # fmt: skip
    record = console.store.current_policy()
    assert record is not None
    (entry,) = record.document.orgs[org].allowlist
    assert entry.sha256 == sha and entry.reason == "in-house tool"
    assert (
        entry.expires_at is not None and entry.expires_at.isoformat() == "2026-12-24T08:30:00+00:00"
    )
    page = console.client.get(f"/console/orgs/{org}").text
    assert sha in page and "2026-12-24 08:30 UTC" in page
    bad = console.client.post(
        f"/console/orgs/{org}/lists/add",
        data={"which": "allowlist", "sha256": "xyz", "csrf_token": csrf},
    )
    assert "sha256 must be 64 hex characters" in bad.text
    console.client.post(
        f"/console/orgs/{org}/lists/remove",
        data={"which": "allowlist", "sha256": sha, "csrf_token": csrf},
    )
    record = console.store.current_policy()
    assert record is not None and record.document.orgs[org].allowlist == []


def test_policy_as_of_a_past_time_shows_the_mode_then(console: ConsoleEnv) -> None:
    import datetime as dt

    from backend import admin

    org = console.store.create_org("acme", NOW).org_id
    publish = console.app.state.routes.publish
    admin.set_mode(console.store, publish, Mode.DETECT_ONLY, org_id=org, now=NOW)
    admin.set_mode(console.store, publish, Mode.OFF, org_id=org, now=NOW + dt.timedelta(hours=2))
    console.login()
    then = console.client.get(f"/console/orgs/{org}", params={"as_of": "2026-11-01T13:00"}).text
    assert 'id="as-of-mode">detect_only<' in then
    later = console.client.get(f"/console/orgs/{org}", params={"as_of": "2026-11-01T15:00"}).text
    assert 'id="as-of-mode">off<' in later
    before = console.client.get(f"/console/orgs/{org}", params={"as_of": "2026-10-01T00:00"}).text
    assert "No policy was in force at that time." in before


def test_org_enroll_token_login_is_read_only_and_sees_only_its_org(console: ConsoleEnv) -> None:
    mine = console.store.create_org("acme", NOW)
    other = console.store.create_org("globex", NOW).org_id
    assert console.store.authenticate(mine.enroll_token).kind is TokenKind.ENROLL
    csrf = console.login(mine.enroll_token)
    home = console.client.get("/console/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == f"/console/orgs/{mine.org_id}"
    page = console.client.get(f"/console/orgs/{mine.org_id}")
    assert page.status_code == 200 and "read-only" in page.text and "Review change" not in page.text
    assert console.client.get(f"/console/orgs/{other}").status_code == 403
    r = console.client.post(
        f"/console/orgs/{mine.org_id}/mode",
        data={"mode": "off", "confirm": "yes", "csrf_token": csrf},
    )
    assert r.status_code == 403
    assert console.store.current_policy() is None


def test_expired_session_cookie_is_refused(console: ConsoleEnv) -> None:
    console.login()
    value = console.client.cookies.get("fleetward_console")
    assert value is not None
    payload = TimestampSigner(SECRET).unsign(value).split(b".")[0]

    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return super().get_timestamp() - 9 * 3600

    console.client.cookies.clear()
    console.client.cookies.set("fleetward_console", Old(SECRET).sign(payload).decode(),
                               domain="testserver.local", path="/console")  # fmt: skip
    assert console.client.get("/console/", follow_redirects=False).status_code == 303
    fresh = TimestampSigner(SECRET).sign(payload).decode()
    console.client.cookies.clear()
    console.client.cookies.set(
        "fleetward_console", fresh, domain="testserver.local", path="/console"
    )
    assert console.client.get("/console/", follow_redirects=False).status_code == 200
    assert json.loads(__import__("base64").b64decode(payload))["who"]["admin"] is True


def test_sign_out_needs_the_csrf_token_and_ends_the_session(console: ConsoleEnv) -> None:
    csrf = console.login()
    assert console.client.post("/console/logout", data={}).status_code == 403
    assert console.client.get("/console/", follow_redirects=False).status_code == 200
    out = console.client.post("/console/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert console.client.get("/console/", follow_redirects=False).status_code == 303
