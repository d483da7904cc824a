"""Wrong methods are 405 with the path's documented methods in `Allow`; unknown paths are 404.

An outside probe (schemathesis `--checks all`) found `POST /v1/admin/mode` answered 404 "list:
Input should be 'allowlist' or 'blocklist'" (the `/v1/admin/{list}` catch-all took it) and
`OPTIONS /v1/admin/orgs` answered 405 with `Allow: GET, HEAD` (no POST). Here every documented
path is tried with every method it does not declare, against a real server on loopback.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.backend.conftest import LiveServer

_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_VALUES = {"list": "allowlist", "sha256": "ab" * 32}


def _concrete(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: _VALUES.get(m.group(1), "x"), path)


def _documented(url: str) -> dict[str, set[str]]:
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    return {path: {m.upper() for m in item} for path, item in paths.items()}


def wrong_method_answers(url: str, admin_token: str) -> list[str]:
    """Every (path, undeclared method) that is not 405 with exactly the declared `Allow`."""
    wrong = []
    with httpx.Client(headers={"authorization": f"Bearer {admin_token}"}) as client:
        for path, declared in _documented(url).items():
            for method in _METHODS:
                if method in declared or (method == "HEAD" and "GET" in declared):
                    continue
                r = client.request(method, url + _concrete(path))
                allow = {m.strip() for m in r.headers.get("allow", "").split(",")} - {"HEAD", ""}
                if r.status_code != 405 or allow != declared:
                    wrong.append(f"{method} {path}: {r.status_code} allow={sorted(allow)}")
                elif not r.headers["content-type"].startswith("application/json"):
                    wrong.append(f"{method} {path}: body {r.text}")
    return wrong


def test_every_undeclared_method_is_405_naming_the_declared_methods(
    live_server: LiveServer,
) -> None:
    assert wrong_method_answers(live_server.url, live_server.admin_token) == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v1/admin/mode", "PUT"),
        ("POST", "/v1/admin/policy", "GET"),
        ("DELETE", "/v1/admin/orgs", "GET, POST"),
        ("OPTIONS", "/v1/admin/rollout", "GET, POST"),
        ("PUT", "/v1/admin/allowlist", "POST"),
        ("GET", f"/v1/admin/blocklist/{'ab' * 32}", "DELETE"),
    ],
)
def test_wrong_method_on_a_fixed_admin_path_is_405_not_the_list_catch_all(
    live_server: LiveServer, method: str, path: str, allow: str
) -> None:
    r = httpx.request(method, live_server.url + path, headers=live_server.admin())
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert r.json() == {
        "error": "MethodNotAllowed",
        "detail": f"{method} is not allowed on {path}; allowed: {allow}",
    }


def test_unknown_list_is_404_naming_the_lists(live_server: LiveServer) -> None:
    for method, path in (
        ("POST", "/v1/admin/greylist"),
        ("DELETE", f"/v1/admin/greylist/{'ab' * 32}"),
    ):
        r = httpx.request(method, live_server.url + path, headers=live_server.admin(), json={})
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "NotFoundError"
        assert "list: Input should be 'allowlist' or 'blocklist'" in r.json()["detail"]


def test_unknown_path_is_404_json_naming_the_path(live_server: LiveServer) -> None:
    r = httpx.get(live_server.url + "/v1/nothing/here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "NotFoundError", "detail": "no such path: /v1/nothing/here"}


def test_declared_methods_still_reach_their_handlers(live_server: LiveServer) -> None:
    h = live_server.admin()
    with httpx.Client(headers=h) as client:
        assert client.get(live_server.url + "/v1/admin/orgs").status_code == 200
        assert client.head(live_server.url + "/v1/admin/orgs").status_code == 200
        made = client.post(live_server.url + "/v1/admin/orgs", json={"name": "acme"})
        assert made.status_code == 201, made.text
        added = client.post(live_server.url + "/v1/admin/allowlist", json={"sha256": "ab" * 32})
        assert added.status_code == 200, added.text
        gone = client.delete(live_server.url + f"/v1/admin/allowlist/{'ab' * 32}")
        assert gone.status_code == 200, gone.text
        assert client.get(live_server.url + "/v1/admin/rollout").status_code == 200
