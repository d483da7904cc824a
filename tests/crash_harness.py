"""SIGKILL the agent inside an update and inspect what it left behind.

Each trial runs `fleetward-agent run --once --trace-update` (the agent prints one
"update phase: PHASE TARGET" line as each step of an install starts: download, verification,
install, committed), waits for the phase it aims at to begin for the new model, sleeps a random
fraction of that phase's usual length and sends SIGKILL. The last phase line the agent wrote
before it died says where the kill landed (`landed`), so a trial that ended before the kill or
after the commit is counted as such, not as a kill inside the update.

`run_trials` (random timing) serves benchmarks/crash_bench.py (100 trials). The test
(tests/agent/update/test_crash_safety.py) makes every kill count instead: `paused_trial` starts the
agent with a fault-injection hook (`FLEETWARD_FAULT_PAUSE_UPDATE`) that stops it at one named
update phase and writes its pid to a marker, and kills it there; `dripped_trial` serves the
model one byte at a time and kills the agent mid-download, with part of the file written.
"""

from __future__ import annotations

import dataclasses
import os
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
from tests.tuf_harness import ORG, RepoServer, World, policy_bytes

ROOT = Path(__file__).resolve().parent.parent


WINDOW = ("download", "verification", "install")  # the update window: before the commit
MODEL = "models/v2/model.onnx"


@dataclass(frozen=True)
class TrialResult:
    aim: str  # the phase the kill was timed for
    delay_s: float
    phase: str  # where the kill landed: a WINDOW phase, "after commit", or "exited" (no kill)
    markers: tuple[str, ...]  # the "update phase" lines the agent wrote before it died
    active_version: int | None
    complete: bool  # the active bundle loads and self-tests
    exit_code: int | None

    @property
    def in_window(self) -> bool:
        """The kill interrupted the update before its commit point."""
        return self.phase in WINDOW


def landed(markers: tuple[str, ...], exited: bool) -> str:
    """The phase a kill landed in, from the last "update phase: PHASE TARGET" line it left.

    A kill between the policy's commit and the model's download is inside the window (the
    update is half done): it counts as "install". After the model's commit: "after commit".
    """
    if exited:
        return "exited"
    if not markers:
        return "before update"
    phase, target = markers[-1].split(" ", 1)
    if phase == "committed":
        return "after commit" if target == MODEL else "install"
    if phase == "record":  # the bundle is in place, the install record not yet switched
        return "install"
    return phase


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


def _start_update(
    template: Path, anchor: Path, url: str, dest: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Copy the frozen state to `dest` and start one traced `run --once` on it (stderr piped)."""
    shutil.copytree(template, dest)
    return subprocess.Popen(
        [
            sys.executable, "-m", "agent", "run", "--once", "--trace-update",
            "--repo-url", url, "--org", ORG, "--state-dir", str(dest), "--root", str(anchor),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip


def _finish(proc: subprocess.Popen[bytes], first: str, dest: Path, aim: str) -> TrialResult:
    """SIGKILL `proc`, then read where it was (its phase lines) and what it left in `dest`."""
    exited = proc.poll() is not None
    proc.kill()
    code = proc.wait()
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.stderr.close()
    lines = [first, *rest.decode(errors="replace").splitlines()]
    markers = tuple(
        x.removeprefix("update phase: ") for x in lines if x.startswith("update phase: ")
    )
    version, complete = inspect(dest)
    return TrialResult(aim, 0.0, landed(markers, exited), markers, version, complete, code)


def update_phases(template: Path, anchor: Path, url: str, dest: Path) -> list[str]:
    """The "PHASE TARGET" steps of one whole update, in order (where a kill may be aimed)."""
    proc = _start_update(template, anchor, url, dest)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = err.decode(errors="replace").splitlines()
    return [x.removeprefix("update phase: ") for x in lines if x.startswith("update phase: ")]


def paused_trial(template: Path, anchor: Path, url: str, dest: Path, point: str) -> TrialResult:
    """Stop the agent at update step `point` ("PHASE TARGET") by the fault hook, SIGKILL it
    there, and check the kill landed there: the marker holds the killed process's pid."""
    marker = dest.with_name(dest.name + ".paused")
    proc = _start_update(
        template, anchor, url, dest, {"FLEETWARD_FAULT_PAUSE_UPDATE": f"{point}={marker}"}
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), f"the agent never reached {point!r} (exit {proc.poll()})"
    assert marker.read_text() == str(proc.pid)
    result = _finish(proc, "", dest, point)
    assert result.markers[-1] == point, result.markers  # nothing ran past the pause
    return result


def dripped_trial(
    template: Path, anchor: Path, server: RepoServer, dest: Path, min_bytes: int = 256
) -> tuple[TrialResult, int, int]:
    """Serve the new model one byte at a time, SIGKILL the agent once `min_bytes` of it went
    out, and return the result with the bytes sent and the file's size (the kill landed
    mid-download when 0 < sent < size and the server saw the client hang up)."""
    (model,) = (server.repo_dir / "targets" / "models" / "v2").glob("*.model.onnx")
    server.drip_sent = 0
    server.dripping.clear()
    server.drip_cut.clear()
    server.drip_s[model.name] = 0.001
    try:
        proc = _start_update(template, anchor, server.url, dest)
        deadline = time.monotonic() + 60
        while server.drip_sent < min_bytes and time.monotonic() < deadline:
            time.sleep(0.01)
        sent = server.drip_sent
        result = _finish(proc, "", dest, f"download {MODEL}")
        assert server.drip_cut.wait(10), "the server never saw the agent hang up"
    finally:
        del server.drip_s[model.name]
    return result, sent, model.stat().st_size


def run_trial(
    template: Path, anchor: Path, url: str, dest: Path, aim: str, delay_s: float
) -> TrialResult:
    """Run `fleetward-agent run --once`, SIGKILL it `delay_s` after the `aim` phase of the model
    update began, and record where the kill landed and what it left on disk."""
    proc = _start_update(template, anchor, url, dest)
    assert proc.stderr is not None
    start = f"update phase: {aim} {MODEL}".encode()
    for line in proc.stderr:  # the kill timer starts when the aimed phase starts
        if line.startswith(start):
            break
    time.sleep(delay_s)
    return dataclasses.replace(_finish(proc, start.decode(), dest, aim), delay_s=delay_s)


def calibrate(template: Path, anchor: Path, url: str, dest: Path) -> dict[str, float]:
    """How long each phase of the model update takes here: one update run to its end, timed
    by when its phase lines arrive (the kills are then spread over each phase's length)."""
    proc = _start_update(template, anchor, url, dest)
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    for line in proc.stderr:
        text = line.decode(errors="replace").strip()
        for phase in (*WINDOW, "committed"):
            if text == f"update phase: {phase} {MODEL}":
                seen[phase] = time.monotonic()
    proc.stderr.close()
    assert proc.wait() == 0 and len(seen) == 4, seen
    ends = dict(zip(WINDOW, (*WINDOW[1:], "committed"), strict=True))
    return {p: max(seen[ends[p]] - seen[p], 0.001) for p in WINDOW}


AIM_SHARE = {"download": 0.6, "verification": 0.6, "install": 0.3}


def run_trials(
    template: Path, anchor: Path, url: str, work: Path, n: int, seed: int
) -> list[TrialResult]:
    """`n` trials aimed at the phases of the update window in turn, each killed at a random
    moment within the first part of that phase's calibrated length (`AIM_SHARE`: the kill
    comes a little later than the harness reads the phase line, so it aims early)."""
    length = calibrate(template, anchor, url, work / "calibration")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        aim = WINDOW[i % len(WINDOW)]
        delay = rng.uniform(0.0, AIM_SHARE[aim] * length[aim])
        out.append(run_trial(template, anchor, url, work / f"trial-{i}", aim, delay))
    return out


def phase_counts(results: list[TrialResult]) -> dict[str, int]:
    """Kills per phase, in the order of an update."""
    order = ("before update", *WINDOW, "after commit", "exited")
    return {k: sum(1 for r in results if r.phase == k) for k in order}
