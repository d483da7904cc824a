"""An org's tokens never read or write another org's data: every route, tried across orgs."""

from __future__ import annotations

import httpx
import pytest

from agent.telemetry import Credentials, encode_batch, enroll
from tests.backend.conftest import LiveServer, make_event

SHA = "ab" * 32


@pytest.fixture
def two_orgs(
    live_server: LiveServer,
) -> tuple[LiveServer, dict[str, str], Credentials, Credentials]:
    with httpx.Client() as client:
        _, enroll_a = live_server.create_org(client, "a")
        _, enroll_b = live_server.create_org(client, "b")
        a = enroll(client, live_server.url, enroll_a)
        b = enroll(client, live_server.url, enroll_b)
    return live_server, {"a": enroll_a, "b": enroll_b}, a, b


# (method, path, json body) of every route an org token must not use.
ADMIN_ROUTES = [
    ("GET", "/v1/admin/orgs", None),
    ("POST", "/v1/admin/orgs", {"name": "evil"}),
    ("PUT", "/v1/admin/mode", {"mode": "off"}),
    ("PUT", "/v1/admin/model", {"model_version": 9}),
    ("POST", "/v1/admin/allowlist", {"sha256": SHA}),
    ("POST", "/v1/admin/blocklist", {"sha256": SHA}),
    ("DELETE", f"/v1/admin/allowlist/{SHA}", None),
    ("DELETE", f"/v1/admin/blocklist/{SHA}", None),
    ("GET", "/v1/admin/policy", None),
    ("GET", "/v1/admin/aggregates", None),
]


def test_org_tokens_cannot_use_any_admin_route(two_orgs) -> None:
    server, enroll_tokens, a, b = two_orgs
    with httpx.Client() as client:
        for token in (a.token, enroll_tokens["a"]):
            for method, path, body in ADMIN_ROUTES:
                for org_param in ({}, {"org_id": b.org_id}):
                    r = client.request(
                        method,
                        server.url + path,
                        params=org_param,
                        json={**body, **org_param} if body is not None else None,
                        headers={"authorization": f"Bearer {token}"},
                    )
                    assert r.status_code == 403, (method, path, r.status_code)
    assert server.store.current_policy() is None


def test_endpoint_cannot_send_events_as_another_org_or_endpoint(two_orgs) -> None:
    server, _, a, b = two_orgs
    url = f"{server.url}/v1/telemetry"
    headers = {"authorization": f"Bearer {a.token}", "content-type": "application/msgpack"}
    with httpx.Client() as client:
        as_b = client.post(
            url, content=encode_batch([make_event(b.org_id, b.endpoint_id)]), headers=headers
        )
        other_ep = client.post(
            url, content=encode_batch([make_event(a.org_id, b.endpoint_id)]), headers=headers
        )
        other_org = client.post(
            url, content=encode_batch([make_event(b.org_id, a.endpoint_id)]), headers=headers
        )
    assert (as_b.status_code, other_ep.status_code, other_org.status_code) == (403, 403, 403)
    assert server.store.aggregates() == []


def test_checkin_and_enroll_only_see_the_tokens_own_org(two_orgs) -> None:
    server, enroll_tokens, a, b = two_orgs
    with httpx.Client() as client:
        r = client.put(
            f"{server.url}/v1/admin/model",
            json={"model_version": 7, "org_id": b.org_id},
            headers=server.admin(),
        )
        assert r.status_code == 200
        seen_a = client.get(
            f"{server.url}/v1/checkin",
            params={"org_id": b.org_id},
            headers={"authorization": f"Bearer {a.token}"},
        ).json()
        seen_b = client.get(
            f"{server.url}/v1/checkin", headers={"authorization": f"Bearer {b.token}"}
        ).json()
        enrolled = client.post(
            f"{server.url}/v1/enroll",
            params={"org_id": b.org_id},
            headers={"authorization": f"Bearer {enroll_tokens['a']}"},
        ).json()
        endpoint_enroll = client.post(
            f"{server.url}/v1/enroll", headers={"authorization": f"Bearer {a.token}"}
        )
        enroll_checkin = client.get(
            f"{server.url}/v1/checkin", headers={"authorization": f"Bearer {enroll_tokens['a']}"}
        )
        enroll_telemetry = client.post(
            f"{server.url}/v1/telemetry",
            content=encode_batch([make_event(a.org_id, a.endpoint_id)]),
            headers={
                "authorization": f"Bearer {enroll_tokens['a']}",
                "content-type": "application/msgpack",
            },
        )
    assert seen_a["org_id"] == a.org_id and seen_a["model_version"] is None
    assert seen_b["org_id"] == b.org_id and seen_b["model_version"] == 7
    assert enrolled["org_id"] == a.org_id
    assert (
        endpoint_enroll.status_code,
        enroll_checkin.status_code,
        enroll_telemetry.status_code,
    ) == (403, 403, 403)


def test_unknown_or_missing_tokens_get_401_everywhere(live_server: LiveServer) -> None:
    routes = [("POST", "/v1/enroll"), ("GET", "/v1/checkin"), ("POST", "/v1/telemetry")]
    routes += [(m, p) for m, p, _ in ADMIN_ROUTES]
    with httpx.Client() as client:
        for method, path in routes:
            for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic abc"}):
                r = client.request(method, live_server.url + path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
