"""The agent daemon: kill switch end to end, offline operation, runtime fallback, status."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent._clock import utc_now
from agent.cli import main as agent_cli
from agent.daemon import Agent, Daemon, DecisionEvent, Notice, NoticeKind
from agent.decision import Mode, Reason, Verdict
from agent.errors import ModelRuntimeError
from agent.update.updater import UpdateClient
from model_store.repository import init_repository, publish_model, publish_policy
from tests.tuf_harness import ORG, World, make_world, policy_bytes, serving, trust_anchor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path: Path, bundles: dict[int, Path]):
    yield from make_world(tmp_path, bundles)


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_published_model_and_kill_switch_reach_a_running_agent(tmp_path: Path, bundles) -> None:
    now = utc_now()
    repo = tmp_path / "repo"
    init_repository(repo, now=now)
    publish_model(repo, bundles[1], now=now)
    publish_policy(repo, policy_bytes(1, model_version=1, breaker={"enabled": False}), now=now)
    watch = tmp_path / "incoming"
    watch.mkdir()
    (watch / "a.bin").write_bytes(b"\x7fELF" + bytes(range(256)) * 32)
    state = tmp_path / "state"
    with serving(repo) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "--repo-url",
                server.url,
                "--org",
                ORG,
                "--state-dir",
                str(state),
                "--root",
                str(repo / "metadata" / "1.root.json"),
                "--interval",
                "0.2",
                "--scan-interval",
                "0.1",
                "--watch",
                str(watch),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            text=True,
        )
        lines: list[str] = []
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()

        def decided(reason: Reason) -> bool:
            return any(json.loads(x)["reason"] == reason.value for x in list(lines))

        try:

            def status() -> dict:
                out = CliRunner().invoke(agent_cli, ["status", "--state-dir", str(state), "--json"])
                return json.loads(out.output) if out.exit_code == 0 else {}

            _wait_for(lambda: status().get("active_model_version") == 1)
            publish_model(repo, bundles[2], now=utc_now())
            publish_policy(repo, policy_bytes(2, model_version=2), now=utc_now())
            _wait_for(lambda: status().get("active_model_version") == 2)
            assert status()["last_known_good_version"] == 1
            # the kill switch: a signed policy with mode off; it applies within one check-in
            publish_policy(repo, policy_bytes(3, model_version=2, mode="off"), now=utc_now())
            before = status()["checkins"]
            _wait_for(lambda: status().get("mode") == "off")
            assert status()["checkins"] <= before + 2
            _wait_for(lambda: decided(Reason.MODE_OFF))  # the running agent applies it
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            reader.join(timeout=30)
            proc.stdout.close()
        assert proc.returncode == 0
        decisions = [json.loads(line) for line in lines if line.startswith("{")]
        assert decisions[-1]["reason"] == Reason.MODE_OFF.value
        assert {d["model_version"] for d in decisions} >= {1, 2}


def test_offline_agent_keeps_verified_state_and_reports_staleness(world: World) -> None:
    world.server.down = True
    result = world.agent.check_in()
    assert not result.ok and result.error_kind == "RepositoryUnreachableError"
    status = world.status()
    assert status["active_model_version"] == 1 and status["policy_version"] == 1
    assert status["staleness_s"] is not None and status["staleness_s"] >= 0
    assert world.scan_sample().model_version == 1


def test_runtime_model_failure_falls_back_to_last_known_good_then_fails_open(world: World) -> None:
    publish_model(world.repo, world.bundles[2], now=utc_now())
    publish_policy(world.repo, policy_bytes(2, model_version=2), now=utc_now())
    assert world.agent.check_in().changed
    notices: list[Notice] = []
    world.agent.on_notice = notices.append

    class Broken:
        def score_batch(self, _):
            raise ModelRuntimeError("inference timed out")

    assert world.agent.active is not None and world.agent.fallback is not None
    object.__setattr__(world.agent.active, "scorer", Broken())
    assert world.scan_sample().model_version == 1  # last-known-good took over
    assert notices[-1].kind is NoticeKind.MODEL_FALLBACK
    object.__setattr__(world.agent.active, "scorer", Broken())
    result = world.scan_sample()
    assert result.decision is not None and result.decision.verdict is Verdict.ERROR
    assert notices[-1].kind is NoticeKind.FAIL_OPEN
    assert world.status()["last_error"]["kind"] == "ModelRuntimeError"


def test_shadow_model_verdicts_reach_telemetry_only(world: World) -> None:
    publish_model(world.repo, world.bundles[2], now=utc_now())
    publish_policy(world.repo, policy_bytes(2, model_version=1, shadow=2), now=utc_now())
    events: list[DecisionEvent] = []
    world.agent.on_event = events.append
    assert world.agent.check_in().changed
    assert world.status()["shadow_model_version"] == 2
    scanned = world.scan_sample()
    assert scanned.model_version == 1
    assert events[-1].model_version == 1
    assert [s.model_version for s in events[-1].shadow] == [2]
    assert len(events[-1].features) > 0


def test_block_storm_switches_endpoint_to_detect_only(world: World, tmp_path: Path) -> None:
    publish_policy(
        world.repo,
        policy_bytes(
            2,
            model_version=1,
            breaker={"max_blocks": 3, "window_min": 10},
            thresholds={"block": 0.0},
        ),
        now=utc_now(),
    )
    assert world.agent.check_in().changed
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    verdicts = [
        world.agent.decide_vector(f"{i:064x}", _vector(), t0 + dt.timedelta(seconds=i)).verdict
        for i in range(6)
    ]
    assert verdicts == [Verdict.BLOCK] * 4 + [Verdict.DETECT] * 2
    assert world.agent.breaker.is_tripped
    world.agent._save()
    status = world.status()
    assert status["breaker_tripped"] and status["effective_mode"] == Mode.DETECT_ONLY.value
    # a restart does not re-arm enforcement under the same policy
    assert world.new_agent().breaker.is_tripped


def _vector():
    import numpy as np

    from agent.features import SCHEMA

    return np.zeros(SCHEMA.vector_length, dtype=np.float32)


def test_agent_without_any_install_fails_open(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "state", org=ORG, clock=utc_now)
    agent.start()
    sample = tmp_path / "x.bin"
    sample.write_bytes(b"hello")
    (result,) = agent.scan([str(sample)])
    assert result.decision is not None and result.decision.verdict is Verdict.ERROR


def test_status_json_has_the_documented_keys(world: World) -> None:
    out = CliRunner().invoke(agent_cli, ["status", "--state-dir", str(world.state), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    for key in (
        "active_model_version",
        "last_known_good_version",
        "policy_version",
        "mode",
        "last_successful_update_at",
        "last_error",
    ):
        assert key in data
    assert data["mode"] == "enforce"


def _check_in_line(agent: Agent) -> str:
    lines: list[str] = []
    Daemon(agent, on_line=lines.append).check_in_once()
    assert lines[0] == "check-in started"
    return lines[1]


@pytest.mark.parametrize(
    ("policy", "serving_note"),
    [
        (
            None,
            "no signed policy for this org yet: files are allowed with the error verdict until "
            "an operator assigns a model (fleetward backend assign-model N)",
        ),
        (
            policy_bytes(1, model_version=None),
            "policy v1, mode enforce, the policy assigns no model: files are allowed with the "
            "error verdict",
        ),
    ],
    ids=["no policy", "no model assigned"],
)
def test_check_in_line_says_why_nothing_is_served(
    tmp_path: Path, bundles, policy: bytes | None, serving_note: str
) -> None:
    """A first install against a repository with a model the operator has not assigned: every
    file is allowed with the error verdict, and the check-in line says why."""
    now = utc_now()
    repo = tmp_path / "repo"
    init_repository(repo, now=now)
    publish_model(repo, bundles[1], now=now)
    if policy is not None:
        publish_policy(repo, policy, now=now)
    with serving(repo) as server:
        state = tmp_path / "state"
        updater = UpdateClient(state, server.url, org=ORG, trust_anchor=trust_anchor(repo))
        agent = Agent(state, org=ORG, clock=utc_now, updater=updater)
        agent.start()
        changed = "up to date" if policy is None else "updated"
        assert _check_in_line(agent) == f"check-in ok: {changed} ({serving_note})"
        assert agent.active is None


def test_check_in_line_names_the_policy_mode_and_model_it_serves(world: World) -> None:
    assert (
        _check_in_line(world.agent) == "check-in ok: up to date (policy v1, mode enforce, model v1)"
    )
    publish_policy(world.repo, policy_bytes(2, mode="detect_only"), now=utc_now())
    assert _check_in_line(world.agent) == (
        "check-in ok: updated (policy v2, mode detect_only, model v1)"
    )
