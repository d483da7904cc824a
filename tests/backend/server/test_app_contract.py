"""The HTTP contract against a real uvicorn server: enroll, check in, telemetry, admin."""

from __future__ import annotations

import datetime as dt

import httpx
import msgpack
import numpy as np

from agent.decision import Verdict
from agent.features import VECTOR_LENGTH
from agent.telemetry import check_in, encode_batch, enroll
from backend._clock import utc_now
from tests.backend.conftest import NOW, LiveServer, make_event


def _endpoint(server: LiveServer, client: httpx.Client, name: str):
    _, enroll_token = server.create_org(client, name)
    return enroll(client, server.url, enroll_token)


def test_enroll_gives_pseudonymous_endpoint_credentials(live_server: LiveServer) -> None:
    with httpx.Client() as client:
        org_id, token = live_server.create_org(client, "acme")
        creds = enroll(client, live_server.url, token)
    assert creds.org_id == org_id and creds.org_id.startswith("org_")
    assert creds.endpoint_id.startswith("ep_") and "acme" not in creds.endpoint_id
    assert creds.token != token


def test_checkin_reports_policy_version_and_assigned_model(live_server: LiveServer) -> None:
    with httpx.Client() as client:
        creds = _endpoint(live_server, client, "acme")
        assert check_in(client, creds).policy_version == 0
        r = client.put(
            f"{live_server.url}/v1/admin/model",
            json={"model_version": 2, "org_id": creds.org_id},
            headers=live_server.admin(),
        )
        assert r.status_code == 200, r.text
        info = check_in(client, creds)
    assert info.policy_version == 1 and info.model_version == 2 and info.mode == "enforce"


def test_telemetry_batch_lands_in_aggregates_and_replay_counts_once(
    live_server: LiveServer,
) -> None:
    vector = np.arange(VECTOR_LENGTH, dtype=np.float32).tobytes()
    with httpx.Client() as client:
        creds = _endpoint(live_server, client, "acme")
        sha = "ab" * 32
        events = [
            make_event(creds.org_id, creds.endpoint_id, sha, verdict=Verdict.BLOCK, features=vector)
        ] * 3
        raw = encode_batch(events, key="batch-0001")
        headers = {"authorization": f"Bearer {creds.token}", "content-type": "application/msgpack"}
        first = client.post(f"{live_server.url}/v1/telemetry", content=raw, headers=headers)
        again = client.post(f"{live_server.url}/v1/telemetry", content=raw, headers=headers)
        metrics = client.get(f"{live_server.url}/metrics").text
    assert first.status_code == 200 and first.json() == {"duplicate": False, "events": 3}
    assert again.status_code == 200 and again.json()["duplicate"] is True
    rows = live_server.store.aggregates(org_id=creds.org_id)
    assert [(r.sha256, r.verdict, r.count, r.distinct_endpoints) for r in rows] == [
        (sha, Verdict.BLOCK, 3, 1)
    ]
    assert live_server.store.feature_vector(creds.org_id, sha, "static-v1") == vector
    assert "fleetward_telemetry_duplicate_batches_total 1.0" in metrics
    assert "fleetward_telemetry_events_ingested_total 3.0" in metrics


def test_telemetry_rejects_bad_input_with_4xx_and_reason(live_server: LiveServer) -> None:
    with httpx.Client() as client:
        creds = _endpoint(live_server, client, "acme")
        url, auth = f"{live_server.url}/v1/telemetry", {"authorization": f"Bearer {creds.token}"}
        mp = {**auth, "content-type": "application/msgpack"}
        good = msgpack.unpackb(encode_batch([make_event(creds.org_id, creds.endpoint_id)]))
        bad_verdict = {
            **good,
            "events": [[*good["events"][0][:3], "maybe", *good["events"][0][4:]]],
        }
        cases = {
            "garbage": (client.post(url, content=b"\xc1\xc1", headers=mp), 422),
            "not a map": (client.post(url, content=msgpack.packb([1, 2]), headers=mp), 422),
            "bad verdict": (client.post(url, content=msgpack.packb(bad_verdict), headers=mp), 422),
            "json": (client.post(url, json={"a": 1}, headers=auth), 415),
            "too big": (client.post(url, content=b"\0" * (9 * 1024 * 1024), headers=mp), 413),
            "no token": (
                client.post(url, content=b"", headers={"content-type": "application/msgpack"}),
                401,
            ),
        }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert response.json()["detail"], name
    assert "unknown verdict" in cases["bad verdict"][0].json()["detail"]


def test_policy_history_reads_back_as_of_a_time(live_server: LiveServer) -> None:
    with httpx.Client() as client:
        h = live_server.admin()
        assert (
            client.put(
                f"{live_server.url}/v1/admin/mode", json={"mode": "detect_only"}, headers=h
            ).status_code
            == 200
        )
        between = utc_now()
        r = client.post(
            f"{live_server.url}/v1/admin/allowlist",
            json={
                "sha256": "cd" * 32,
                "reason": "in-house",
                "expires_at": "2030-01-01T00:00:00+00:00",
            },
            headers=h,
        )
        assert r.status_code == 200, r.text
        then = client.get(
            f"{live_server.url}/v1/admin/policy", params={"as_of": between.isoformat()}, headers=h
        )
        now = client.get(f"{live_server.url}/v1/admin/policy", headers=h)
        before = client.get(
            f"{live_server.url}/v1/admin/policy",
            params={"as_of": "2001-01-01T00:00:00+00:00"},
            headers=h,
        )
        removed = client.delete(f"{live_server.url}/v1/admin/allowlist/{'cd' * 32}", headers=h)
        missing = client.delete(f"{live_server.url}/v1/admin/allowlist/{'cd' * 32}", headers=h)
    assert then.json()["version"] == 1 and then.json()["document"]["default"]["allowlist"] == []
    assert (
        now.json()["version"] == 2
        and now.json()["document"]["default"]["allowlist"][0]["sha256"] == "cd" * 32
    )
    assert before.status_code == 404
    assert removed.status_code == 200 and removed.json()["version"] == 3
    assert missing.status_code == 404


def test_operator_change_republishes_signed_policy_served_under_tuf(
    live_server: LiveServer,
) -> None:
    with httpx.Client() as client:
        r = client.put(
            f"{live_server.url}/v1/admin/mode", json={"mode": "off"}, headers=live_server.admin()
        )
        assert r.status_code == 200, r.text
        timestamp = client.get(f"{live_server.url}/tuf/metadata/timestamp.json")
        root = client.get(f"{live_server.url}/tuf/metadata/1.root.json")
        keys = client.get(f"{live_server.url}/tuf/keys/")
    assert timestamp.status_code == 200 and root.status_code == 200
    assert keys.status_code == 404
    targets = sorted(p.name for p in (live_server.repo_dir / "targets" / "policies").iterdir())
    assert [t.partition(".")[2] for t in targets] == ["default.json"], targets
    assert not list((live_server.repo_dir / "targets").glob("*policy.json"))  # no combined doc


def test_observed_day_is_the_utc_day_of_the_event(live_server: LiveServer) -> None:
    with httpx.Client() as client:
        creds = _endpoint(live_server, client, "acme")
        late = NOW.replace(hour=23, minute=59)
        raw = encode_batch(
            [
                make_event(creds.org_id, creds.endpoint_id, "ef" * 32, at=late),
                make_event(
                    creds.org_id, creds.endpoint_id, "ef" * 32, at=late + dt.timedelta(minutes=2)
                ),
            ]
        )
        r = client.post(
            f"{live_server.url}/v1/telemetry",
            content=raw,
            headers={
                "authorization": f"Bearer {creds.token}",
                "content-type": "application/msgpack",
            },
        )
    assert r.status_code == 200
    days = [r.day for r in live_server.store.aggregates(org_id=creds.org_id)]
    assert days == [late.date().toordinal() - dt.date(1970, 1, 1).toordinal()] * 1 + [days[0] + 1]
