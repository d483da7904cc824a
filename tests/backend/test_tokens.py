"""Token lifecycle: enroll tokens expire, run out, rotate and revoke; endpoint tokens revoke.

The store rules run over both dialects (the parity fixture); the HTTP rules on a real server on
loopback: a revoked token gets 401 at its very next request, cached or not.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from backend.errors import AuthError, BatchInvalidError, NotFoundError
from backend.store import AggregateStore, Store, TokenKind
from fleetward.cli import main
from tests.backend.conftest import NOW, LiveServer
from tests.backend.store.test_store_postgres import store

__all__ = ["store"]

HOUR = dt.timedelta(hours=1)


def test_enroll_token_with_a_use_limit_enrolls_that_many_endpoints(store: AggregateStore) -> None:
    org = store.create_org("acme", NOW).org_id
    made = store.create_enroll_token(org, NOW, max_uses=2)
    for _ in range(2):
        store.enroll(org, NOW, enroll_token=made.token)
    with pytest.raises(AuthError, match="used up"):
        store.enroll(org, NOW, enroll_token=made.token)
    with pytest.raises(AuthError, match="used up"):
        store.authenticate(made.token, NOW)
    (info,) = [t for t in store.tokens(org) if t.token_id == made.token_id]
    assert (info.uses, info.max_uses, info.revoked_at) == (2, 2, None)


def test_enroll_token_expires(store: AggregateStore) -> None:
    org = store.create_org("acme", NOW).org_id
    made = store.create_enroll_token(org, NOW, expires_at=NOW + HOUR)
    assert store.authenticate(made.token, NOW).kind is TokenKind.ENROLL
    store.enroll(org, NOW + HOUR / 2, enroll_token=made.token)
    with pytest.raises(AuthError, match="expired"):
        store.authenticate(made.token, NOW + HOUR)
    with pytest.raises(AuthError):
        store.enroll(org, NOW + HOUR, enroll_token=made.token)


def test_enroll_token_limits_are_validated(store: AggregateStore) -> None:
    org = store.create_org("acme", NOW).org_id
    with pytest.raises(BatchInvalidError, match="max_uses"):
        store.create_enroll_token(org, NOW, max_uses=0)
    with pytest.raises(BatchInvalidError, match="expires_at"):
        store.create_enroll_token(org, NOW, expires_at=NOW - HOUR)
    with pytest.raises(NotFoundError):
        store.create_enroll_token("org_nope", NOW)


def test_rotation_revokes_the_orgs_other_enroll_tokens_only(store: AggregateStore) -> None:
    first = store.create_org("acme", NOW)
    other = store.create_org("globex", NOW)
    rotated = store.create_enroll_token(first.org_id, NOW, rotate=True)
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(first.enroll_token, NOW)
    with pytest.raises(AuthError):
        store.enroll(first.org_id, NOW, enroll_token=first.enroll_token)
    store.enroll(first.org_id, NOW, enroll_token=rotated.token)
    assert store.authenticate(other.enroll_token, NOW).org_id == other.org_id


def test_revoked_endpoint_token_is_refused_at_once_even_when_cached(
    store: AggregateStore,
) -> None:
    org = store.create_org("acme", NOW).org_id
    creds = store.enroll(org, NOW)
    assert store.authenticate(creds.token).endpoint_id == creds.endpoint_id  # now cached
    assert store.revoke_endpoint(creds.endpoint_id, NOW) == 1
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(creds.token)
    with pytest.raises(NotFoundError):
        store.revoke_endpoint(creds.endpoint_id, NOW)  # nothing active is left
    (ep_info,) = [t for t in store.tokens(org) if t.kind is TokenKind.ENDPOINT]
    assert ep_info.revoked_at == NOW
    with pytest.raises(NotFoundError):
        store.revoke_token(ep_info.token_id, NOW)


def test_api_revocation_gives_401_at_the_next_request(live_server: LiveServer) -> None:
    url, admin = live_server.url, live_server.admin()
    with httpx.Client(timeout=30) as client:
        org, _ = live_server.create_org(client, "acme")
        r = client.post(f"{url}/v1/admin/orgs/{org}/enroll-tokens", json={"max_uses": 1},
                        headers=admin)  # fmt: skip
        assert r.status_code == 201, r.text
        enroll = {"authorization": f"Bearer {r.json()['enroll_token']}"}
        got = client.post(f"{url}/v1/enroll", headers=enroll)
        assert got.status_code == 201
        assert client.post(f"{url}/v1/enroll", headers=enroll).status_code == 401  # used up
        ep = got.json()
        bearer = {"authorization": f"Bearer {ep['token']}"}
        assert client.get(f"{url}/v1/checkin", headers=bearer).status_code == 200
        listed = client.get(f"{url}/v1/admin/orgs/{org}/tokens", headers=admin).json()
        ep_token = next(t for t in listed if t["endpoint_id"] == ep["endpoint_id"])
        assert "token" not in ep_token and ep_token["revoked_at"] is None
        r = client.delete(f"{url}/v1/admin/tokens/{ep_token['token_id']}", headers=admin)
        assert r.status_code == 200 and r.json() == {"revoked": 1}
        assert client.get(f"{url}/v1/checkin", headers=bearer).status_code == 401
        unknown = client.delete(f"{url}/v1/admin/tokens/tok_unknown", headers=admin)
        assert unknown.status_code == 404 and "tok_unknown" in unknown.json()["detail"]
        r = client.post(f"{url}/v1/admin/orgs/{org}/enroll-tokens", json={"max_uses": 0},
                        headers=admin)  # fmt: skip
        assert r.status_code == 422


def test_cli_issues_lists_and_revokes_tokens(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = Store(db)
    org = s.create_org("acme", NOW).org_id
    creds = s.enroll(org, NOW)
    s.close()
    run = CliRunner().invoke
    made = run(main, ["backend", "token", "create-enroll-token", org, "--max-uses", "3",
                      "--rotate", "--db", str(db)])  # fmt: skip
    assert made.exit_code == 0, made.output
    listed = run(main, ["backend", "token", "tokens", org, "--db", str(db)])
    assert listed.exit_code == 0 and listed.output.count("revoked") == 1  # the rotated one
    assert "uses 0/3" in listed.output
    gone = run(main, ["backend", "token", "revoke-endpoint", creds.endpoint_id, "--db", str(db)])
    assert gone.exit_code == 0 and "revoked 1" in gone.output
    again = run(main, ["backend", "token", "revoke-endpoint", creds.endpoint_id, "--db", str(db)])
    assert again.exit_code == 1 and again.output.strip().count("\n") == 0  # one line
    s = Store(db)
    with pytest.raises(AuthError):
        s.authenticate(creds.token)
    s.close()


@pytest.mark.parametrize(
    ("command", "unknown"), [("revoke-token", "tok_unknown"), ("revoke-endpoint", "ep_unknown")]
)
def test_cli_revoke_of_an_unknown_id_says_so_in_one_line_and_exits_1(
    tmp_path: Path, command: str, unknown: str
) -> None:
    db = tmp_path / "b.db"
    Store(db).close()
    refused = CliRunner().invoke(main, ["backend", "token", command, unknown, "--db", str(db)])
    assert refused.exit_code == 1, refused.output
    assert refused.output.strip().count("\n") == 0 and unknown in refused.output
    assert refused.output.startswith("Error: ")  # not "revoked ..."
