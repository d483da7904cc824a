"""Agents' health counters reach the rollout gate through the telemetry route."""

from __future__ import annotations

import httpx

from agent.telemetry import HealthCount, TelemetryEvent, encode_batch
from backend.rollout.service import _arms
from tests.backend.conftest import NOW, make_event


def test_telemetry_route_records_events_and_health_per_endpoint_day(live_server):
    with httpx.Client() as client:
        org, enroll = live_server.create_org(client, "acme")
        r = client.post(
            f"{live_server.url}/v1/enroll", headers={"authorization": f"Bearer {enroll}"}
        )
        assert r.status_code == 201, r.text
        ep, token = r.json()["endpoint_id"], r.json()["token"]
        events = [make_event(org, ep, version=2), make_event(org, ep, version=2)]
        health = (
            HealthCount(2, TelemetryEvent.ms(NOW), breaker_trips=1, model_errors=2),
            HealthCount(3, TelemetryEvent.ms(NOW), self_test_failures=1),
        )
        raw = encode_batch(events, key="h" * 16, health=health)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/msgpack"}
        for _ in range(2):  # the retry is a duplicate: counted once
            r = client.post(f"{live_server.url}/v1/telemetry", content=raw, headers=headers)
            assert r.status_code == 200, r.text
    day = TelemetryEvent.ms(NOW) // 86_400_000
    v2 = _arms(live_server.store, 2, day, day, None)[org]
    v3 = _arms(live_server.store, 3, day, day, None)[org]
    assert (v2.endpoint_days, v2.breaker_trips, v2.model_errors) == (1.0, 1, 2)
    assert (v3.endpoint_days, v3.self_test_failures) == (1.0, 1)
