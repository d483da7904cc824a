"""An org's tokens never read or write another org's data: every route, tried across orgs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agent._clock import utc_now
from agent._internal.install import StateDir
from agent.errors import RepositoryUnreachableError
from agent.policy import policy_target
from agent.telemetry import Credentials, encode_batch, enroll
from agent.update.push import parse_events
from agent.update.updater import HTTPXFetcher, UpdateClient, load_installed_policy
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


SHA_A, SHA_B = "aa" * 32, "bb" * 32


@contextmanager
def _updater(
    server: LiveServer, state: Path, creds: Credentials, token: str | None
) -> Iterator[UpdateClient]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    fetcher = HTTPXFetcher(httpx.Client(headers=headers, timeout=10))
    try:
        yield UpdateClient(
            state,
            f"{server.url}/tuf",
            org=creds.org_id,
            trust_anchor=(server.repo_dir / "metadata" / "1.root.json").read_bytes(),
            fetcher=fetcher,
        )
    finally:
        fetcher.close()


def test_endpoint_cannot_read_another_orgs_lists(two_orgs, tmp_path: Path) -> None:
    """Real TUF over loopback HTTP: org A's endpoint gets A's lists, never B's (docs/adr/0003)."""
    server, _, a, b = two_orgs
    with httpx.Client() as client:
        for org, lst, sha in ((a, "allowlist", SHA_A), (b, "blocklist", SHA_B)):
            body = {"sha256": sha, "reason": f"secret of {org.org_id}", "org_id": org.org_id}
            r = client.post(f"{server.url}/v1/admin/{lst}", json=body, headers=server.admin())
            assert r.status_code in (200, 201), r.text

    # the agent of org A, with its own token, installs its org's document and nothing of B's
    state = tmp_path / "agent-a"
    with _updater(server, state, a, a.token) as updater:
        outcome = updater.check_in(utc_now())
    assert outcome.is_clean and outcome.policy_changed
    raw = StateDir(state).policy_path(outcome.record.policy).read_bytes()  # type: ignore[arg-type]
    doc = load_installed_policy(StateDir(state), outcome.record)
    assert doc is not None and set(doc.orgs) == {a.org_id}
    assert [e.sha256 for e in doc.orgs[a.org_id].allowlist] == [SHA_A]
    assert SHA_B.encode() not in raw and b.org_id.encode() not in raw

    # what an endpoint of A can reach by hand: metadata names no org, B's file is refused
    with httpx.Client(base_url=f"{server.url}/tuf") as client:
        targets = client.get("/metadata/targets.json")
        assert targets.status_code == 200
        assert a.org_id not in targets.text and b.org_id not in targets.text
        name_b = policy_target(b.org_id)
        sha = targets.json()["signed"]["targets"][name_b]["hashes"]["sha256"]
        folder, _, base = name_b.rpartition("/")
        path_b = f"/targets/{folder}/{sha}.{base}"
        as_a = {"authorization": f"Bearer {a.token}"}
        assert client.get(path_b, headers=as_a).status_code == 403
        assert client.get(
            path_b.replace("/policies/", "//policies/"), headers=as_a
        ).status_code in (
            403,
            404,
        )
        assert client.get(path_b).status_code == 401
        as_b = client.get(path_b, headers={"authorization": f"Bearer {b.token}"})
        assert as_b.status_code == 200 and SHA_B in as_b.text and SHA_A not in as_b.text
        assert client.get(path_b, headers=server.admin()).status_code == 200


def test_endpoint_without_its_token_gets_no_org_policy_and_no_default_instead(
    two_orgs, tmp_path: Path
) -> None:
    """Refused (401) on its org's target, the agent installs nothing: no fallback to default."""
    server, _, a, _ = two_orgs
    with httpx.Client() as client:
        body = {"sha256": SHA_A, "org_id": a.org_id}
        r = client.post(f"{server.url}/v1/admin/allowlist", json=body, headers=server.admin())
        assert r.status_code in (200, 201), r.text
    with (
        _updater(server, tmp_path / "agent-a", a, None) as updater,
        pytest.raises(RepositoryUnreachableError) as refused,
    ):
        updater.check_in(utc_now())
    assert refused.value.status_code == 401
    assert StateDir(tmp_path / "agent-a").read_record().policy is None


# Operations an org-scoped token may use, and what each must show: only the token's own org.
# Every other operation in /openapi.json is an operator's (admin token) and must answer 403.
_ORG_OPERATIONS = {
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("POST", "/v1/enroll"),
    ("GET", "/v1/checkin"),
    ("POST", "/v1/telemetry"),
    ("GET", "/v1/push"),
}


def _fill(path: str, b: Credentials, b_token_id: str) -> str:
    """An operation's path with org B's ids in every parameter (what an attacker would try)."""
    values = {
        "org_id": b.org_id,
        "endpoint_id": b.endpoint_id,
        "token_id": b_token_id,
        "list": "allowlist",
        "sha256": SHA,
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {path}: extend _fill"
    return path


def test_every_openapi_operation_with_every_org_token_stays_inside_its_org(two_orgs) -> None:
    server, enroll_tokens, a, b = two_orgs
    b_tokens = server.store.tokens(b.org_id)
    b_token_id = next(t.token_id for t in b_tokens if t.endpoint_id == b.endpoint_id)
    with httpx.Client() as client:
        spec = client.get(f"{server.url}/openapi.json").json()
        operations = [
            (method.upper(), path)
            for path, item in spec["paths"].items()
            for method in item
            if method != "parameters"
        ]
        assert len(operations) >= 25
        tokens = {"enroll": enroll_tokens["a"], "endpoint": a.token}
        for kind, token in tokens.items():
            headers = {"authorization": f"Bearer {token}"}
            for method, path in operations:
                url = server.url + _fill(path, b, b_token_id)
                if (method, path) in _ORG_OPERATIONS:
                    continue  # checked one by one below and in the tests above
                body = {"org_id": b.org_id, "name": "evil", "mode": "off", "sha256": SHA}
                r = client.request(
                    method,
                    url,
                    params={"org_id": b.org_id},
                    json=body if method in ("POST", "PUT") else None,
                    headers=headers,
                )
                assert r.status_code == 403, (kind, method, path, r.status_code, r.text)
        # the org-scoped operations answer for the token's own org only, whatever is asked
        seen = client.get(
            f"{server.url}/v1/checkin",
            params={"org_id": b.org_id},
            headers={"authorization": f"Bearer {a.token}"},
        ).json()
        assert seen["org_id"] == a.org_id and seen["endpoint_id"] == a.endpoint_id
        made = client.post(
            f"{server.url}/v1/enroll",
            params={"org_id": b.org_id},
            headers={"authorization": f"Bearer {enroll_tokens['a']}"},
        ).json()
        assert made["org_id"] == a.org_id
        forged = client.post(
            f"{server.url}/v1/telemetry",
            content=encode_batch([make_event(b.org_id, b.endpoint_id)]),
            headers={"authorization": f"Bearer {a.token}", "content-type": "application/msgpack"},
        )
        assert forged.status_code == 403
        metrics = client.get(f"{server.url}/metrics").text
        assert b.org_id not in metrics and b.endpoint_id not in metrics
    # org B is untouched: its tokens active, no policy, no aggregates, its endpoint still works
    assert [t.revoked_at for t in server.store.tokens(b.org_id)] == [None] * len(b_tokens)
    assert server.store.current_policy() is None
    assert server.store.aggregates(org_id=b.org_id) == []
    assert server.store.authenticate(b.token).org_id == b.org_id
    assert server.store.org_ids() == [a.org_id, b.org_id]


def test_push_channel_opens_for_an_endpoint_token_and_only_on_its_own_org(
    two_orgs: tuple[LiveServer, dict[str, str], Credentials, Credentials],
) -> None:
    server, enroll_tokens, a, b = two_orgs
    with httpx.Client(timeout=10) as client:
        for token in (enroll_tokens["a"], server.admin_token):
            r = client.get(
                f"{server.url}/v1/push",
                params={"org_id": b.org_id},
                headers={"authorization": f"Bearer {token}"},
            )
            assert r.status_code == 403, r.text
        assert client.get(f"{server.url}/v1/push").status_code == 401
        # org a's endpoint asking for org b's channel gets its own (the token decides); the
        # live server ends channels after half a second, so this is a whole response
        r = client.get(
            f"{server.url}/v1/push",
            params={"org_id": b.org_id},
            headers={"authorization": f"Bearer {a.token}"},
        )
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert list(parse_events(r.text.splitlines())) == [0]
        assert b.org_id not in r.text and b.endpoint_id not in r.text
