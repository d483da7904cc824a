"""The locust load test: a short real run on loopback, and the consistency check's rules."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pytest

from loadtest import AckRecord, Counted, LoadtestConfig, check_consistency, run_loadtest
from loadtest.cli import parse_duration
from loadtest.report import write_report

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def _ack(key: str, events: int, *, dup: bool | None, replay: bool = False, status: int = 200):
    return AckRecord(
        "org", "ep", key, events, replay, status, dup, events if status == 200 else None
    )


def test_importing_loadtest_does_not_patch_the_standard_library():
    assert "gevent" not in sys.modules
    assert "locust" not in sys.modules


def test_consistency_passes_when_each_acknowledged_batch_is_counted_once():
    acks = [
        _ack("k1", 10, dup=False),
        _ack("k1", 10, dup=True, replay=True),
        _ack("k2", 5, dup=False),
    ]
    assert check_consistency(acks, Counted({"org": 15}, 2, 15, 15)) == []


def test_consistency_names_lost_events():
    acks = [_ack("k1", 10, dup=False), _ack("k2", 5, dup=False)]
    problems = check_consistency(acks, Counted({"org": 10}))
    assert problems == ["lost: org org acknowledged 15 events, aggregates count 10"]


def test_consistency_names_a_replay_counted_twice():
    acks = [_ack("k1", 10, dup=False), _ack("k1", 10, dup=False, replay=True)]
    problems = check_consistency(acks, Counted({"org": 20}))
    assert problems[0].startswith("doubled: 1 batches counted as new more than once")
    assert "doubled: org org acknowledged 10 events, aggregates count 20" in problems


def test_consistency_counts_a_batch_acknowledged_only_by_its_replay():
    acks = [_ack("k1", 10, dup=None, status=0), _ack("k1", 10, dup=True, replay=True)]
    assert check_consistency(acks, Counted({"org": 10}, 1, 10)) == []


def test_consistency_names_a_counted_but_unacknowledged_batch():
    acks = [_ack("k1", 10, dup=None, status=0)]
    problems = check_consistency(acks, Counted({"org": 10}, 1, 10))
    assert any(p.startswith("doubled: org org acknowledged 0") for p in problems)
    assert "ledger: 0 batches acknowledged, 1 stored" in problems


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("2m", 120), ("90", 90), ("1.5s", 1.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage():
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_short_loopback_run_is_consistent_and_reported(tmp_path):
    pytest.importorskip("matplotlib")
    config = LoadtestConfig(
        users=5,
        spawn_rate=5,
        duration_s=6,
        checkin_interval_s=0.3,
        batch_events=(20, 80),
        operator_interval_s=1.0,
    )
    result = run_loadtest(config, tmp_path, now=lambda: NOW)
    assert result.mismatches == []
    assert result.failures == 0
    assert result.batches_acknowledged > 0
    assert result.events_counted == result.events_acknowledged > 0
    assert result.checkin_ms["count"] > 0
    names = {r["name"] for r in result.per_route}
    assert {"/v1/checkin", "/v1/telemetry", "/tuf/metadata/timestamp.json"} <= names
    html_path, json_path = write_report(result, tmp_path)
    assert "Consistent" in html_path.read_text()
    assert "data:image/png;base64," in html_path.read_text()
    assert json.loads(json_path.read_text())["consistent"] is True
    assert (tmp_path / "locust.html").exists()


# --- agents at scale (`loadtest.agents`) ---------------------------------------------------


def test_percentile_is_nearest_rank():
    from loadtest.agents import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0


def test_bucket_quantile_reads_a_prometheus_histogram():
    from loadtest.agents import _bucket_quantile

    text = "\n".join(
        [
            'fleetward_http_request_seconds_bucket{le="0.001",route="/v1/checkin"} 90.0',
            'fleetward_http_request_seconds_bucket{le="0.01",route="/v1/checkin"} 99.0',
            'fleetward_http_request_seconds_bucket{le="+Inf",route="/v1/checkin"} 100.0',
            'fleetward_http_request_seconds_bucket{le="0.001",route="/healthz"} 0.0',
        ]
    )
    assert _bucket_quantile(text, "fleetward_http_request_seconds", "/v1/checkin", 0.5) == 1.0
    assert _bucket_quantile(text, "fleetward_http_request_seconds", "/v1/checkin", 0.99) == 10.0


@pytest.mark.slow
def test_simulated_agents_hear_the_kill_switch_and_report_server_usage_apart(tmp_path):
    from loadtest.agents import FleetConfig, run_fleet

    config = FleetConfig(
        agents=30,
        duration_s=10.0,  # a margin for a loaded machine: the run ends at its duration
        interval_s=600.0,  # far longer than the run: only a push notice can bring "off" in time
        ramp_s=1.0,
        kill_switch_at_s=1.0,
        telemetry_share=1.0,
        batch_events=(1, 5),
        orgs=3,
    )
    result = run_fleet(config, tmp_path)
    assert result.errors == {}
    assert result.channels_peak == 30
    assert result.kill_reached == 30  # every agent's check-in answered "off"
    assert result.push_ms["n"] >= 30  # and each one heard the notice first
    assert result.telemetry_batches == result.checkins > 0
    assert result.events >= result.telemetry_batches
    assert result.server is not None and result.server.cpu_s > 0
    assert result.client.cpu_s > 0
    assert result.server_ms["checkin_p99_le"] > 0
    assert result.server_ms["push_delivery_p99_le"] > 0


@pytest.mark.slow
def test_simulated_agents_check_in_conditionally_one_full_answer_each(tmp_path):
    from loadtest.agents import FleetConfig, run_fleet

    config = FleetConfig(
        agents=6, duration_s=3.0, interval_s=0.5, ramp_s=0.5, telemetry_share=0.0, orgs=2
    )
    result = run_fleet(config, tmp_path)
    assert result.errors == {}
    assert result.checkins >= 3 * config.agents  # several check-ins each in 3 s
    # the policy never changed: each agent's first answer is in full, every later one a 304
    # to the ETag it kept (read from the transport's headers)
    assert result.not_modified == result.checkins - config.agents


@pytest.mark.slow
def test_without_push_the_kill_switch_waits_for_the_next_check_in(tmp_path):
    from loadtest.agents import FleetConfig, run_fleet

    config = FleetConfig(
        agents=10,
        duration_s=3.0,
        interval_s=600.0,
        ramp_s=0.5,
        kill_switch_at_s=1.0,
        telemetry_share=0.0,
        push=False,
        orgs=1,
    )
    result = run_fleet(config, tmp_path)
    assert result.channels_peak == 0
    assert result.kill_reached < 10  # a 10-minute interval: few if any came by in 2 s


def test_agents_mode_refuses_a_remote_host_without_an_admin_token_in_one_line(tmp_path):
    from click.testing import CliRunner

    from loadtest.cli import loadtest

    result = CliRunner().invoke(
        loadtest,
        ["--agents", "5", "--host", "http://127.0.0.1:9", "--out", str(tmp_path)],
        env={"FLEETWARD_ADMIN_TOKEN": ""},
    )
    assert result.exit_code == 1
    assert result.output.strip() == "Error: a remote host needs an admin token"


@pytest.mark.slow
def test_agents_mode_command_reports_the_kill_switch_and_writes_json(tmp_path):
    from click.testing import CliRunner

    from loadtest.cli import loadtest

    # an interval far past the run: only the push notice brings "off"; the margin is for a
    # loaded machine (the run ends at its duration, not when the agents are done)
    args = ["--agents", "8", "--interval", "600", "--kill-switch-at", "1", "--duration", "10s"]
    result = CliRunner().invoke(loadtest, [*args, "--orgs", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "kill switch: 8/8 agents off" in result.output
    summary = json.loads((tmp_path / "agents.json").read_text())
    assert summary["agents"] == 8 and summary["errors"] == {}
    assert summary["server_cpu_cores"] is not None
