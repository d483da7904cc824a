"""SIGKILL the agent at random moments of a check-in and inspect what it left behind.

Shared by tests/agent/test_crash_safety.py (about 15 trials) and benchmarks/crash_bench.py (100).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agent._internal.install import StateDir
from agent.errors import AgentError
from agent.model import load_bundle
from model_store.repository import publish_model, publish_policy
from tests.tuf_harness import ORG, World, policy_bytes

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TrialResult:
    delay_s: float
    active_version: int | None
    complete: bool  # the active bundle loads and self-tests
    exit_code: int | None


def prepare(world: World, tmp: Path) -> tuple[Path, Path]:
    """Freeze the agent state at v1, then publish v2 and a policy assigning it."""
    template = tmp / "template-state"
    shutil.copytree(world.state, template)
    now = world.agent.clock()
    publish_model(world.repo, world.bundles[2], now=now)
    publish_policy(world.repo, policy_bytes(2, model_version=2), now=now)
    anchor = tmp / "root.json"
    anchor.write_bytes((world.repo / "metadata" / "1.root.json").read_bytes())
    return template, anchor


def inspect(state_dir: Path) -> tuple[int | None, bool]:
    """The active version the record names, and whether that bundle is complete and self-tests."""
    record = StateDir(state_dir).read_record()
    if record.active is None:
        return None, False
    try:
        loaded = load_bundle(StateDir(state_dir).bundle_dir(record.active))
    except AgentError:
        return record.active.version, False
    return record.active.version, loaded.version == record.active.version


def run_trial(template: Path, anchor: Path, url: str, dest: Path, delay_s: float) -> TrialResult:
    shutil.copytree(template, dest)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--once",
            "--repo-url",
            url,
            "--org",
            ORG,
            "--state-dir",
            str(dest),
            "--root",
            str(anchor),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the kill timer starts when the check-in starts
        if b"check-in started" in line:
            break
    time.sleep(delay_s)
    proc.kill()
    code = proc.wait()
    proc.stderr.close()
    version, complete = inspect(dest)
    return TrialResult(delay_s, version, complete, code)


def run_trials(
    template: Path, anchor: Path, url: str, work: Path, n: int, seed: int, max_delay_s: float = 0.3
) -> list[TrialResult]:
    rng = random.Random(seed)
    return [
        run_trial(template, anchor, url, work / f"trial-{i}", rng.uniform(0.0, max_delay_s))
        for i in range(n)
    ]
