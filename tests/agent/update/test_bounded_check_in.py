"""Bounded check-ins, decisions first: a mirror that drips bytes delays no decision.

A real loopback mirror (`tests.tuf_harness.RepoServer` with `drip_s`) sends `timestamp.json`
one byte at a time; the agent's `HTTPXFetcher` must abandon the download (deadline, minimum
rate), and a file dropped into the watched folder during the stall must be decided at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent._clock import utc_now
from agent.daemon import Agent
from agent.errors import CheckInTimeoutError
from agent.update.updater import UpdateClient, UpdateConfig
from tests.tuf_harness import ORG, World, make_world, serving, trust_anchor

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def world(tmp_path: Path, bundles: dict[int, Path]):
    yield from make_world(tmp_path, bundles)


def _client(world: World, url: str, config: UpdateConfig) -> UpdateClient:
    return UpdateClient(
        world.state, url, org=ORG, trust_anchor=trust_anchor(world.repo), config=config
    )


def test_download_under_the_minimum_rate_is_abandoned(world: World) -> None:
    with serving(world.repo) as mirror:
        mirror.drip_s["timestamp.json"] = 0.05  # 20 B/s
        config = UpdateConfig(deadline_s=60.0, min_bytes_per_s=1000.0, rate_grace_s=0.5)
        started = time.monotonic()
        with pytest.raises(CheckInTimeoutError, match="under the minimum 1000 B/s"):
            _client(world, mirror.url, config).check_in(utc_now())
        assert time.monotonic() - started < 5.0  # not the ~30 s the whole file would take
        assert mirror.dripping.is_set() and 0 < mirror.drip_sent


def test_check_in_past_its_deadline_is_abandoned(world: World) -> None:
    with serving(world.repo) as mirror:
        mirror.drip_s["timestamp.json"] = 0.05
        config = UpdateConfig(deadline_s=1.0, min_bytes_per_s=0.0)
        started = time.monotonic()
        with pytest.raises(CheckInTimeoutError, match="deadline passed"):
            _client(world, mirror.url, config).check_in(utc_now())
        assert time.monotonic() - started < 5.0
        assert mirror.dripping.is_set()


def test_abandoned_check_in_keeps_verified_state_and_is_reported(world: World) -> None:
    before = world.status()
    with serving(world.repo) as mirror:
        mirror.drip_s["timestamp.json"] = 0.05
        config = UpdateConfig(deadline_s=1.0)
        agent = Agent(
            world.state, org=ORG, clock=utc_now, updater=_client(world, mirror.url, config)
        )
        agent.start()
        result = agent.check_in()
    assert not result.ok and result.error_kind == "CheckInTimeoutError"
    after = world.status()
    assert after["last_error"]["kind"] == "CheckInTimeoutError"
    assert after["active_model_version"] == before["active_model_version"] == 1
    assert agent.scan_file(str(world.sample), utc_now()).model_version == 1


def test_file_dropped_during_a_stalled_check_in_is_decided_within_a_second(
    world: World, tmp_path: Path
) -> None:
    watch = tmp_path / "incoming"
    watch.mkdir()
    with serving(world.repo) as mirror:
        mirror.drip_s["timestamp.json"] = 0.25  # a ~1.5 KB file would take minutes
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "agent", "run",
                "--repo-url", mirror.url, "--org", ORG, "--state-dir", str(world.state),
                "--interval", "600", "--scan-interval", "0.1", "--watch", str(watch),
                "--check-in-deadline", "6", "--json",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
        )  # fmt: skip
        out: list[tuple[float, str]] = []
        err: list[tuple[float, str]] = []

        def read(stream, into: list[tuple[float, str]]) -> None:
            for line in stream:
                into.append((time.monotonic(), line))

        readers = [
            threading.Thread(target=read, args=(proc.stdout, out), daemon=True),
            threading.Thread(target=read, args=(proc.stderr, err), daemon=True),
        ]
        for r in readers:
            r.start()
        try:
            assert mirror.dripping.wait(60), "the check-in never reached the dripping mirror"
            dropped = watch / "dropped.bin"
            dropped.write_bytes(b"\x7fELF" + bytes(range(256)) * 16)
            dropped_at = time.monotonic()
            deadline = dropped_at + 30
            while not any("dropped.bin" in line for _, line in out):
                assert time.monotonic() < deadline, "the dropped file was never decided"
                time.sleep(0.02)
            decided_at = next(t for t, line in out if "dropped.bin" in line)
            # the fault landed: the mirror was still dripping when the decision came out
            assert not mirror.drip_cut.is_set()
            assert not any("check-in failed" in line for _, line in err)
            assert decided_at - dropped_at < 1.0
            decision = json.loads(next(line for _, line in out if "dropped.bin" in line))
            assert decision["model_version"] == 1  # decided with the verified model, not fail-open
            while not any("check-in failed" in line for _, line in err):
                assert time.monotonic() < deadline, "the stalled check-in was never abandoned"
                time.sleep(0.05)
            assert mirror.drip_cut.wait(10)  # the running agent hung up on the mirror
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            for r in readers:
                r.join(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
    assert proc.returncode == 0
    failed = [line for _, line in err if "check-in failed" in line]
    assert failed[0].startswith("check-in failed: CheckInTimeoutError: check-in abandoned")
