"""`/metrics` labels requests by the route they matched, never by the client-chosen path.

An outside probe found the unauthenticated `/metrics` labelling each short path as it came:
any client could add time series without bound (`/v1/admin/AAA`, `/etc/passwd`, made-up
methods) and read organizations' ids there (`/console/orgs/org_...`).
"""

from __future__ import annotations

import re

import httpx

from tests.backend.conftest import LiveServer


def _labels(metrics: str) -> set[tuple[str, str]]:
    found = re.findall(r'fleetward_http_requests_total\{method="([^"]*)",route="([^"]*)"', metrics)
    return {(route, method) for method, route in found}


def test_made_up_paths_and_methods_add_no_series(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as client:
        client.get("/healthz")
        before = _labels(client.get("/metrics").text)
        for i in range(60):
            client.get(f"/probe{i}")
            client.get(f"/v1/admin/junk{i}")
            client.request(f"VERB{i}", "/healthz")
            client.get(f"/console/nothing{i}")
        after = _labels(client.get("/metrics").text)
    added = after - before
    assert added <= {
        ("other", "GET"),
        ("/v1/admin/{list}", "GET"),
        ("/healthz", "other"),
        ("/console", "GET"),
        ("/metrics", "GET"),
    }, sorted(added)
    assert not any("probe" in r or "junk" in r or "nothing" in r for r, _ in after)
    # the requests landed: an unknown /v1/admin/junk matches no route (backend.server._routing)
    assert ("other", "GET") in added


def test_console_pages_are_labelled_by_template_not_by_org(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as client:
        org_id, _ = live_server.create_org(client, "acme")
        client.get(f"/console/orgs/{org_id}")
        client.get(f"/v1/admin/orgs/{org_id}/tokens", headers=live_server.admin())
        metrics = client.get("/metrics").text
    assert org_id not in metrics
    routes = {route for route, _ in _labels(metrics)}
    assert {"/console/orgs/{org_id}", "/v1/admin/orgs/{org_id}/tokens"} <= routes
