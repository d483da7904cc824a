"""Telemetry carries the quarantine action (issue 16 item 3), old batches without it stay valid.

The end-to-end test runs `fleetward-agent run --protect --backend` on real fanotify, a signed
policy from a real TUF repository and the real backend on loopback: the denied exec reaches the
backend as an event with action `quarantined`, and `quarantine restore` as `restored`.
"""

from __future__ import annotations

import errno
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import msgpack
import pytest

from agent._clock import utc_now
from agent.decision import Reason, Verdict
from agent.protect import fanotify as fan
from agent.telemetry import Action, TelemetryEvent, decode_batch, encode_batch
from agent.telemetry.columns import decode_columns
from backend.ingest import aggregate, aggregate_columns, endpoint_day_rows
from model_store.repository import init_repository, publish_model, publish_policy
from tests.agent.protect.test_realtime import EVIL, ROOT, AgentProc, _cli, _exec, _policy, _wait_for
from tests.backend.conftest import LiveServer, live_server, repo_dir  # noqa: F401 - fixtures
from tests.tuf_harness import serving

AT_MS = 1_780_000_000_000


def _event(action: Action = Action.NONE, sha: str = "ab" * 32) -> TelemetryEvent:
    return TelemetryEvent(
        "org1", "ep1", sha, 3, 0.97, Verdict.BLOCK, Reason.SCORE_BLOCK, AT_MS, action=action
    )


def test_an_action_round_trips_and_a_batch_without_actions_keeps_its_11_field_bytes() -> None:
    events = [_event(), _event(Action.QUARANTINED, "cd" * 32), _event(Action.RESTORED)]
    raw = encode_batch(events, key="k" * 16)
    assert decode_batch(raw).events == tuple(events)
    assert decode_columns(raw).to_events() == tuple(events)
    assert decode_columns(raw).action == (None, "quarantined", "restored")
    plain = msgpack.unpackb(encode_batch([_event()], key="k" * 16))
    assert [len(row) for row in plain["events"]] == [11]  # old format: no twelfth field
    assert decode_columns(encode_batch([_event()], key="k" * 16)).actions == (None,)


def test_action_events_stay_out_of_aggregates_and_rollout_evidence() -> None:
    decision = _event()
    acted = [decision, _event(Action.RESTORED), _event(Action.DELETED, "cd" * 32)]
    alone = decode_columns(encode_batch([decision], key="k" * 16))
    mixed = decode_columns(encode_batch(acted, key="k" * 16))
    assert aggregate_columns(mixed).rows == aggregate_columns(alone).rows
    assert aggregate_columns(mixed).events == 3  # received, counted in the ledger
    assert endpoint_day_rows(mixed) == endpoint_day_rows(alone)  # one alert, not two
    assert [r.count for r in aggregate(acted)[0]] == [1]
    only = decode_columns(encode_batch(acted[1:], key="k" * 16))
    assert aggregate_columns(only).rows == [] and endpoint_day_rows(only) == []
    quarantined = decode_columns(encode_batch([decision, _event(Action.QUARANTINED)], key="k" * 16))
    assert aggregate_columns(quarantined).rows == aggregate_columns(alone).rows  # not a decision
    assert endpoint_day_rows(quarantined) == endpoint_day_rows(alone)


@pytest.mark.parametrize("bad", ["quarantine", "", 7, None, b"deleted", {"a": 1}])
def test_a_bad_action_gets_422_with_the_reason(live_server: LiveServer, bad: object) -> None:  # noqa: F811
    with httpx.Client(timeout=10) as client:
        _org, enroll = live_server.create_org(client, "a")
        r = client.post(
            f"{live_server.url}/v1/enroll", headers={"authorization": f"Bearer {enroll}"}
        )
        creds = r.json()
        doc = msgpack.unpackb(
            encode_batch(
                [
                    TelemetryEvent(
                        creds["org_id"], creds["endpoint_id"], "ab" * 32, 1, 0.5,
                        Verdict.ALLOW, Reason.SCORE_BELOW, AT_MS,
                    )
                ],
                key="k" * 16,
            )
        )  # fmt: skip
        doc["events"][0].append(bad)
        r = client.post(
            f"{live_server.url}/v1/telemetry",
            content=msgpack.packb(doc, use_bin_type=True),
            headers={
                "authorization": f"Bearer {creds['token']}",
                "content-type": "application/msgpack",
            },
        )
        assert r.status_code == 422, r.text
        assert "events[0]" in r.text and "action" in r.text
        metrics = client.get(f"{live_server.url}/metrics").text
        assert "fleetward_telemetry_actions_total{" not in metrics  # nothing counted


def _actions(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        m[1]: float(m[2])
        for m in re.finditer(
            r'^fleetward_telemetry_actions_total\{action="(\w+)"\} (\S+)$', text, re.M
        )
    }


@pytest.mark.skipif(not fan.is_available()[0], reason=fan.is_available()[1])
def test_a_protected_denial_reaches_the_backend_as_quarantined_and_restore_as_restored(
    tmp_path: Path,
    bundles: dict[int, Path],
    live_server: LiveServer,  # noqa: F811
) -> None:
    now = utc_now()
    repo = tmp_path / "agent-repo"
    init_repository(repo, now=now)
    publish_model(repo, bundles[1], now=now)
    publish_policy(repo, _policy(1), now=now)
    protected = tmp_path / "protected"
    protected.mkdir()
    evil = protected / "dropper.sh"
    evil.write_bytes(EVIL)
    evil.chmod(0o755)
    state = tmp_path / "state"
    with httpx.Client(timeout=10) as client:
        _org, enroll = live_server.create_org(client, "protected")
    with serving(repo) as tuf:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "agent", "run",
                "--repo-url", tuf.url,
                "--backend", live_server.url,
                "--enroll-token", enroll,
                "--state-dir", str(state),
                "--root", str(repo / "metadata" / "1.root.json"),
                "--interval", "0.2",
                "--protect", str(protected),
                "--json",
                "--deadline-ms", "5000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )  # fmt: skip
        agent = AgentProc(proc, state)
        try:
            _wait_for(lambda: agent.status().get("policy_version") == 1)
            _wait_for(lambda: any("real-time protection on" in line for line in agent.lines))
            assert _actions(live_server.url) == {}
            assert _exec(evil) == -errno.EPERM
            _wait_for(lambda: _actions(live_server.url).get("quarantined") == 1.0)
            [record] = agent.records()
            _cli("quarantine", "restore", record["id"], "--state-dir", str(state))
            assert evil.read_bytes() == EVIL
            assert _actions(live_server.url) == {"quarantined": 1.0, "restored": 1.0}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                assert stream is not None
                stream.close()
