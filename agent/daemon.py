"""The agent's long-lived state machine: check in, keep verified state, scan, fall back.

`Agent` owns one state directory. It reads its `clock` once per unit of work (a check-in, a
scan) and hands `now` to the pure core (`agent.engine.evaluate`, `agent.breaker`).

Fail-safes it implements:
- Offline or refused update: the last verified model and policy stay in force; scanning goes on;
  the error and the staleness (time since the last successful update) are recorded.
- Runtime model failure (inference error, timeout, malformed output): switch to the
  last-known-good bundle; if that fails too, fail open with `error` verdicts; record it.
- Block storm: the breaker downgrades enforce to detect_only until new policy or a new model.
- Shadow models score beside the active one; their verdicts reach `on_event` only.

Telemetry hook: `on_event` receives each `DecisionEvent` (sha256, score, verdict, reason, model
version, shadow verdicts, feature vector bytes, observed_at); `on_notice` receives `Notice`s.

The run loop (`Daemon`, `run`; `fleetward-agent run` is a thin layer over `run`):
- decisions first: the calling thread decides (it polls `watch` folders every
  `scan_interval_s`); check-ins and telemetry flushes run in one background thread, so a
  stalled mirror or backend never delays a decision. A check-in is bounded anyway (the
  fetcher's deadline and minimum transfer rate, `agent.update.updater.UpdateConfig`); the network
  part of a check-in never holds the agent's lock, only the adoption of its result does.
- THE SEAM for real-time sources (a fanotify protector, an inotify watcher): pass objects with
  `run(decide_path, stop)` (the `EventSource` protocol) in `Daemon(sources=...)`. Each runs in
  its own thread until `stop` is set; `decide_path(path)` scores, decides and reports one file
  at once and returns its `ScanResult` (thread-safe, never raises for file problems). A
  verdict cache is valid while `Agent.decision_inputs()` is unchanged (model, policy,
  breaker). A source that fails is reported once (`on_line`) and the loop goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from agent._internal.install import InstallRecord, StateDir, write_atomic
from agent.breaker import BreakerState, reset
from agent.decision import Decision, Mode, Reason, Verdict
from agent.engine import ShadowScore, ShadowVerdict, effective_mode, evaluate
from agent.errors import (
    AgentError,
    BundleRejectedError,
    PolicyError,
    RepositoryUnreachableError,
    StateError,
)
from agent.features import extract_features
from agent.model import LoadedModel, load_bundle
from agent.policy import EffectivePolicy, resolve_policy
from agent.protect.scan import FileStatus, ScanResult, iter_files, read_sample
from agent.signature import is_test_signature
from agent.update.adoption import adopt
from agent.update.updater import UpdateClient, UpdateConfig, UpdateOutcome, load_installed_policy

if TYPE_CHECKING:
    from agent.protect.realtime import RealtimeOptions
    from agent.telemetry import TelemetryPipe
    from agent.update.updater import HTTPXFetcher

__all__ = [
    "Agent",
    "AgentConfig",
    "CheckInResult",
    "Daemon",
    "DaemonConfig",
    "DecisionEvent",
    "EventSource",
    "Notice",
    "NoticeKind",
    "RunOptions",
    "read_status",
    "run",
    "update_config",
]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Agent timing: check-in every `interval_s` seconds, +-`jitter` (fraction) at random."""

    interval_s: float = 300.0
    jitter: float = 0.1
    max_file_bytes: int = 1 << 30


class NoticeKind(StrEnum):
    """Things the agent reports besides decisions."""

    UPDATED = "updated"
    REJECTED = "rejected"
    OFFLINE = "offline"
    BREAKER_TRIPPED = "breaker_tripped"
    MODEL_FALLBACK = "model_fallback"
    FAIL_OPEN = "fail_open"
    SELF_TEST_FAILED = "self_test_failed"


_HEALTH: dict[NoticeKind, str] = {
    NoticeKind.SELF_TEST_FAILED: "self_test_failures",
    NoticeKind.MODEL_FALLBACK: "model_errors",
    NoticeKind.FAIL_OPEN: "model_errors",
    NoticeKind.BREAKER_TRIPPED: "breaker_trips",
}
_MODEL_TARGET = re.compile(r"models/v(\d+)/")


@dataclass(frozen=True, slots=True)
class Notice:
    """One reportable agent event; `model_version` names the model it concerns, if any."""

    at: dt.datetime
    kind: NoticeKind
    detail: str
    model_version: int | None = None

    @property
    def health_counter(self) -> str | None:
        """The telemetry health counter this notice adds to (`agent.telemetry.HealthCount`).

        Only notices about a known model version count: the rollout gate compares versions.
        """
        return _HEALTH.get(self.kind) if self.model_version is not None else None


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    """One decision, as telemetry needs it (no paths, user or host names)."""

    observed_at: dt.datetime
    sha256: str
    score: float | None
    verdict: Verdict
    reason: Reason
    model_version: int | None
    policy_version: int | None
    mode: Mode
    shadow: tuple[ShadowVerdict, ...]
    features: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the feature bytes."""
        return {
            "observed_at": self.observed_at.isoformat(),
            "sha256": self.sha256,
            "score": self.score,
            "verdict": self.verdict.value,
            "reason": self.reason.value,
            "model_version": self.model_version,
            "policy_version": self.policy_version,
            "mode": self.mode.value,
            "shadow": [
                {"model_version": s.model_version, "score": s.score, "verdict": s.verdict.value}
                for s in self.shadow
            ],
        }


@dataclass(frozen=True, slots=True)
class CheckInResult:
    """What one check-in did: `ok` when the repository answered with valid metadata."""

    at: dt.datetime
    ok: bool
    changed: bool
    error_kind: str = ""
    error: str = ""
    rejections: tuple[str, ...] = ()


@dataclass(slots=True)
class _Status:
    org: str = ""
    checkins: int = 0
    last_checkin_at: str | None = None
    last_successful_update_at: str | None = None
    last_error: dict[str, str] | None = None
    scans: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    serving_model_version: int | None = None
    breaker: dict[str, Any] = field(default_factory=dict)


def _iso(t: dt.datetime) -> str:
    return t.isoformat()


class Agent:
    """An endpoint agent on one state directory.

    Args:
        state_dir: where installs and bookkeeping live (see `agent._internal.install`).
        org: the organization whose policy applies.
        clock: returns an aware UTC datetime; read once per check-in and per scan.
        updater: the update client; None for an agent that never checks in (scan only).
        on_event: receives every `DecisionEvent` (the telemetry hook).
        on_notice: receives every `Notice`.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        org: str,
        clock: Callable[[], dt.datetime],
        updater: UpdateClient | None = None,
        on_event: Callable[[DecisionEvent], None] | None = None,
        on_notice: Callable[[Notice], None] | None = None,
        config: AgentConfig | None = None,
    ) -> None:
        self.state = StateDir(state_dir)
        self.org = org
        self.clock = clock
        self.updater = updater
        self.on_event = on_event
        self.on_notice = on_notice
        self.config = config or AgentConfig()
        self.record = InstallRecord()
        self.policy: EffectivePolicy | None = None
        self.active: LoadedModel | None = None
        self.fallback: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.breaker = BreakerState()
        self._status = _Status()
        self._seen: dict[str, tuple[Any, ...]] = {}
        # Check-ins run beside decisions (agent.daemon.Daemon): the lock guards the in-memory
        # model, policy, breaker and bookkeeping; the network part of a check-in runs outside.
        self._lock = threading.RLock()

    # --- state ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the installed state (recovering from any crash) and the bookkeeping."""
        self.state.ensure()
        try:
            raw = json.loads(self.state.status_path.read_bytes())
            self._status = _Status(**raw)
        except (OSError, ValueError, TypeError):
            self._status = _Status()
        try:
            record = self.state.read_record()
        except StateError as exc:
            self._error(self.clock(), "StateError", str(exc))
            record = InstallRecord()
        self.state.cleanup(record)
        self._load(record, self.clock())
        saved = self._status.breaker
        if saved.get("tripped_at") and saved.get("policy_version") == self._policy_version():
            self.breaker = BreakerState(
                tripped_at=dt.datetime.fromisoformat(saved["tripped_at"]), reason=saved["reason"]
            )
        self._save()

    def _policy_version(self) -> int | None:
        return self.policy.policy_version if self.policy else None

    def _load(self, record: InstallRecord, now: dt.datetime) -> None:
        """Bring the in-memory models and policy in line with `record`."""
        self.record = record
        try:
            doc = load_installed_policy(self.state, record)
            self.policy = resolve_policy(doc, self.org) if doc else None
        except (StateError, PolicyError) as exc:
            self._notice(now, NoticeKind.REJECTED, f"installed policy unusable: {exc}")
        self.active = self.fallback = self.shadow = None
        for ref, slot in (
            (record.active, "active"),
            (record.last_known_good, "fallback"),
            (record.shadow, "shadow"),
        ):
            if ref is None:
                continue
            try:
                setattr(self, slot, load_bundle(self.state.bundle_dir(ref)))
            except BundleRejectedError as exc:
                detail = f"{slot} bundle v{ref.version}: {exc}"
                self._notice(now, NoticeKind.MODEL_FALLBACK, detail, ref.version)
        if self.active is None and self.fallback is not None:
            self.active, self.fallback = self.fallback, None
        self._status.serving_model_version = self.active.version if self.active else None

    # --- check-in ------------------------------------------------------------------------

    def check_in(self) -> CheckInResult:
        """One update check; never raises for repository or verification problems."""
        now = self.clock()
        with self._lock:
            self._status.checkins += 1
            self._status.last_checkin_at = _iso(now)
        if self.updater is None:
            return CheckInResult(now, ok=False, changed=False, error_kind="NoUpdater")
        try:
            outcome = self.updater.check_in(now)  # the network: never under the lock
        except AgentError as exc:
            kind = type(exc).__name__
            offline = isinstance(exc, RepositoryUnreachableError)
            with self._lock:
                self._error(now, kind, str(exc))
                self._notice(now, NoticeKind.OFFLINE if offline else NoticeKind.REJECTED, str(exc))
                self._save()
            return CheckInResult(now, ok=False, changed=False, error_kind=kind, error=str(exc))
        with self._lock:
            return self._adopt(outcome, now)

    def _adopt(self, outcome: UpdateOutcome, now: dt.datetime) -> CheckInResult:
        """Take a check-in's result in: the one adoption rule (`agent.update.adoption.adopt`)."""
        old, new = self.record, outcome.record
        rule = adopt(
            policy=old.policy.version if old.policy else 0,
            model=old.active.version if old.active else 0,
            offered_policy=new.policy.version if new.policy else 0,
            offered_model=outcome.assigned_model or 0,
            signed=outcome.model_refusal != "unsigned",
            self_test_ok=outcome.model_refusal != "self_test",
        )
        changed = new != old
        if changed:
            self._load(new, now)
        if rule.reset_breaker:
            self.breaker = reset()
            active = self.record.active.version if self.record.active else None
            detail = f"model v{active}, policy v{self._policy_version()}"
            self._notice(now, NoticeKind.UPDATED, detail)
        self._status.last_successful_update_at = _iso(now)
        rejected = tuple(f"{r.target}: {r.kind}: {r.message}" for r in outcome.rejections)
        for r in outcome.rejections:
            self._error(now, r.kind, f"{r.target}: {r.message}")
            found = _MODEL_TARGET.search(r.target)
            version = int(found.group(1)) if found else None
            kind = NoticeKind.SELF_TEST_FAILED if r.kind == "SelfTestError" else NoticeKind.REJECTED
            self._notice(now, kind, f"{r.target}: {r.message}", version)
        self._save()
        first = outcome.rejections[0] if outcome.rejections else None
        return CheckInResult(
            now,
            ok=True,
            changed=changed,
            error_kind=first.kind if first else "",
            error=first.message if first else "",
            rejections=rejected,
        )

    def next_delay_s(self, rng: random.Random) -> float:
        """Seconds until the next check-in: the interval with +-jitter."""
        j = self.config.jitter
        return self.config.interval_s * (1.0 + rng.uniform(-j, j))

    # --- scoring and deciding ------------------------------------------------------------

    def _score(
        self, vector: npt.NDArray[np.float32], now: dt.datetime
    ) -> tuple[float | None, int | None]:
        while self.active is not None:
            try:
                score = float(self.active.scorer.score_batch(vector.reshape(1, -1))[0])
                return score, self.active.version
            except Exception as exc:  # any inference failure: fall back, never crash the scan
                failed = self.active.version
                self.active, self.fallback = self.fallback, None
                kind = NoticeKind.MODEL_FALLBACK if self.active else NoticeKind.FAIL_OPEN
                self._error(now, "ModelRuntimeError", f"model v{failed} failed: {exc}")
                self._notice(now, kind, f"model v{failed} failed at run time: {exc}", failed)
                self._status.serving_model_version = self.active.version if self.active else None
        return None, None

    def decide_vector(
        self,
        sha256: str,
        vector: npt.NDArray[np.float32],
        now: dt.datetime,
        *,
        test_signature: bool = False,
    ) -> DecisionEvent:
        """Score, decide and report one sample given its features (the simulator's entry).

        `test_signature`: the file is the built-in test file (`agent.signature`).
        Thread-safe: event sources (a real-time protector, a watcher) may call it from their
        own threads while a check-in runs.
        """
        with self._lock:
            return self._decide_vector(sha256, vector, now, test_signature)

    def decision_inputs(self) -> tuple[int | None, int | None, bool]:
        """What a cached decision depends on: (serving model, policy version, breaker tripped).

        A verdict cache (e.g. a fanotify protector's) is valid while this tuple is unchanged.
        """
        with self._lock:
            return (
                self._status.serving_model_version,
                self._policy_version(),
                self.breaker.is_tripped,
            )

    def _decide_vector(
        self,
        sha256: str,
        vector: npt.NDArray[np.float32],
        now: dt.datetime,
        test_signature: bool = False,
    ) -> DecisionEvent:
        score, version = self._score(vector, now)
        shadows = []
        if self.shadow is not None:
            try:
                batch = vector.reshape(1, -1)
                sscore: float | None = float(self.shadow.scorer.score_batch(batch)[0])
            except Exception:  # a failing shadow is reported as an error verdict, nothing more
                sscore = None
            thresholds = self.shadow.manifest.thresholds
            shadows.append(ShadowScore(self.shadow.version, sscore, thresholds))
        ev = evaluate(
            sha256,
            score,
            policy=self.policy,
            thresholds=self.active.manifest.thresholds if self.active else None,
            breaker=self.breaker,
            now=now,
            shadow=shadows,
            test_signature=test_signature,
        )
        self.breaker = ev.breaker
        if ev.breaker_tripped_now:
            self._notice(now, NoticeKind.BREAKER_TRIPPED, ev.breaker.reason, version)
        event = DecisionEvent(
            observed_at=now,
            sha256=sha256,
            score=ev.decision.score,
            verdict=ev.decision.verdict,
            reason=ev.decision.reason,
            model_version=version,
            policy_version=self._policy_version(),
            mode=effective_mode(self.policy, self.breaker),
            shadow=ev.shadow,
            features=np.asarray(vector, dtype="<f4").tobytes(),
        )
        counts = self._status.verdicts
        counts[event.verdict.value] = counts.get(event.verdict.value, 0) + 1
        if self.on_event is not None:
            self.on_event(event)
        return event

    def scan_file(self, path: str, now: dt.datetime) -> ScanResult:
        """Read, featurise and decide one file; never raises for file-level problems."""
        try:
            sha, data, size = read_sample(path, max_file_bytes=self.config.max_file_bytes)
        except OSError as exc:
            return ScanResult(path, FileStatus.ERROR, exc.strerror or str(exc))
        event = self.decide_vector(
            sha,
            extract_features(data, total_size=size),
            now,
            test_signature=is_test_signature(data, size),
        )
        return ScanResult(
            path,
            FileStatus.SCANNED,
            sha256=sha,
            size=size,
            truncated=size > len(data),
            decision=Decision(event.verdict, event.reason, event.score),
            model_version=event.model_version,
        )

    def scan(self, paths: Iterable[str], *, only_changed: bool = False) -> Iterator[ScanResult]:
        """Scan paths recursively, with one `now` for the whole scan.

        `only_changed` skips files already decided under the same model, policy and breaker.
        """
        now = self.clock()
        with self._lock:
            self._status.scans += 1
        inputs = self.decision_inputs()
        for path, early in iter_files(paths):
            if early is not None:
                yield early
                continue
            if only_changed and self.already_decided(path, inputs):
                continue
            yield self.scan_file(path, now)
        with self._lock:
            self._save()

    def already_decided(
        self, path: str, inputs: tuple[int | None, int | None, bool] | None = None
    ) -> bool:
        """True when `path` is gone or was decided unchanged; otherwise record it as decided.

        Unchanged: same size and mtime, same model, policy and breaker (`inputs`, default now).
        `scan(only_changed=True)` and the on-write watcher (`agent.protect.realtime`) share it, so a
        file dropped in a watched folder is decided once, not by both.
        """
        try:
            st = os.stat(path)
        except OSError:
            return True
        key = (st.st_size, st.st_mtime_ns, *(inputs or self.decision_inputs()))
        if self._seen.get(path) == key:
            return True
        self._seen[path] = key
        return False

    # --- bookkeeping ---------------------------------------------------------------------

    def _error(self, now: dt.datetime, kind: str, message: str) -> None:
        self._status.last_error = {"at": _iso(now), "kind": kind, "message": message}

    def _notice(
        self, now: dt.datetime, kind: NoticeKind, detail: str, model_version: int | None = None
    ) -> None:
        if self.on_notice is not None:
            self.on_notice(Notice(now, kind, detail, model_version))

    def _save(self) -> None:
        b = self.breaker
        self._status.breaker = {
            "tripped_at": _iso(b.tripped_at) if b.tripped_at else None,
            "reason": b.reason,
            "policy_version": self._policy_version(),
        }
        self._status.org = self.org
        data = json.dumps(asdict(self._status), sort_keys=True, indent=1).encode()
        write_atomic(self.state.status_path, data)


def read_status(state_dir: str | os.PathLike[str], now: dt.datetime) -> dict[str, Any]:
    """The agent's status from its state directory (the install record is the truth).

    Raises:
        StateError: the state directory holds no readable install record.
    """
    state = StateDir(state_dir)
    if not state.root.is_dir():
        raise StateError(f"{state_dir} is not an agent state directory")
    record = state.read_record()
    try:
        book = json.loads(state.status_path.read_bytes())
    except (OSError, ValueError):
        book = {}
    policy_version = mode = None
    try:
        doc = load_installed_policy(state, record)
    except (StateError, PolicyError):
        doc = None
    org = book.get("org")
    if doc is not None:
        policy_version = doc.version
        mode = resolve_policy(doc, org or "").mode.value
    breaker = book.get("breaker") or {}
    tripped = bool(breaker.get("tripped_at")) and breaker.get("policy_version") == policy_version
    last_ok = book.get("last_successful_update_at")
    staleness = (now - dt.datetime.fromisoformat(last_ok)).total_seconds() if last_ok else None
    return {
        "active_model_version": record.active.version if record.active else None,
        "last_known_good_version": (
            record.last_known_good.version if record.last_known_good else None
        ),
        "shadow_model_version": record.shadow.version if record.shadow else None,
        "serving_model_version": book.get("serving_model_version"),
        "policy_version": policy_version,
        "mode": mode,
        "effective_mode": ("detect_only" if tripped and mode == "enforce" else mode),
        "breaker_tripped": tripped,
        "breaker_reason": breaker.get("reason", "") if tripped else "",
        "last_checkin_at": book.get("last_checkin_at"),
        "last_successful_update_at": last_ok,
        "staleness_s": staleness,
        "last_error": book.get("last_error"),
        "checkins": book.get("checkins", 0),
        "scans": book.get("scans", 0),
        "verdicts": book.get("verdicts", {}),
    }


# --- the run loop ----------------------------------------------------------------------------


class EventSource(Protocol):
    """A real-time source of files to decide (fanotify protector, inotify watcher).

    `run` blocks until `stop` is set, calling `decide_path` for each file it wants decided
    (from its own thread); the result says what was decided.
    """

    def run(self, decide_path: Callable[[str], ScanResult], stop: threading.Event) -> None:
        """Feed paths to `decide_path` until `stop` is set."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The run loop's cadence.

    Attributes:
        watch: folders polled for new or changed files every `scan_interval_s`.
        scan_interval_s: seconds between polls of `watch` (1 s; decisions never wait on the
            network, so this alone bounds how long a dropped file waits without a watcher).
        once: one check-in, one scan, one telemetry flush, then return (tests, cron).
    """

    watch: tuple[str, ...] = ()
    scan_interval_s: float = 1.0
    once: bool = False


class Daemon:
    """Run an `Agent`: scanning in the calling thread, check-ins beside it, sources in theirs.

    Args:
        agent: a started `Agent`.
        config: cadence and watched folders.
        flush: sends telemetry (called after each check-in in the network thread); returns a
            line to report, or raises `AgentError`.
        on_result: receives each `ScanResult` decided (from any thread).
        on_line: receives one-line progress reports ("check-in started", failures).
        sources: real-time `EventSource`s, each run in its own thread.
        rng: jitter of the check-in interval.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        config: DaemonConfig | None = None,
        flush: Callable[[dt.datetime], str] | None = None,
        on_result: Callable[[ScanResult], None] | None = None,
        on_line: Callable[[str], None] | None = None,
        sources: Iterable[EventSource] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.agent = agent
        self.config = config or DaemonConfig()
        self._flush = flush
        self._on_result = on_result
        self._on_line = on_line
        self.sources = tuple(sources)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._out = threading.Lock()
        self._wake = threading.Event()  # set by `check_in_soon` (a push notice)

    def check_in_soon(self, version: int | None = None) -> None:
        """Wake the check-in loop now (a push notice said a newer policy is out)."""
        self._wake.set()

    def _say(self, line: str) -> None:
        if self._on_line is not None:
            with self._out:
                self._on_line(line)

    def _report(self, result: ScanResult) -> None:
        if self._on_result is not None:
            with self._out:
                self._on_result(result)

    def decide_path(self, path: str) -> ScanResult:
        """Decide one file now and report it (the entry for `EventSource`s; thread-safe)."""
        result = self.agent.scan_file(path, self.agent.clock())
        self._report(result)
        return result

    def check_in_once(self) -> CheckInResult:
        """One check-in, reported as one line when it starts and one when it ends."""
        self._say("check-in started")
        result = self.agent.check_in()
        if result.ok:
            note = "; ".join(result.rejections) or ("updated" if result.changed else "up to date")
            self._say(f"check-in ok: {note} ({self._serving()})")
        else:
            self._say(f"check-in failed: {result.error_kind}: {result.error}")
        return result

    def _serving(self) -> str:
        """What the endpoint runs after a check-in, and why nothing when nothing.

        A first install against a backend whose operator has not assigned a model yet decides
        every file with the error verdict (allowed): the line says so and names the fix.
        """
        a = self.agent
        if a.policy is None:
            return (
                "no signed policy for this org yet: files are allowed with the error verdict "
                "until an operator assigns a model (fleetward backend assign-model N)"
            )
        p = a.policy
        if a.active is None:
            model = (
                "the policy assigns no model: files are allowed with the error verdict"
                if p.model_version is None
                else f"model v{p.model_version} assigned, none installed: files are allowed "
                "with the error verdict"
            )
        else:
            model = f"model v{a.active.version}"
        return f"policy v{p.policy_version}, mode {p.mode.value}, {model}"

    def flush_telemetry(self) -> None:
        """Send buffered telemetry (if any hook was given), reported as one line."""
        if self._flush is not None:
            try:
                self._say(self._flush(self.agent.clock()))
            except AgentError as exc:
                self._say(f"telemetry failed: {exc}")

    def scan_watched(self) -> int:
        """Decide new or changed files under the watched folders; returns how many."""
        n = 0
        for result in self.agent.scan(self.config.watch, only_changed=True):
            self._report(result)
            n += 1
        return n

    def _network_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.check_in_once()
                self.flush_telemetry()
            except Exception as exc:  # supervisor: report and go on
                self._say(f"check-in crashed: {type(exc).__name__}: {exc}")
            # a push notice (`check_in_soon`) cuts the wait short; `run` sets it on stop too
            self._wake.wait(self.agent.next_delay_s(self._rng))
            self._wake.clear()

    def _source_loop(self, source: EventSource, stop: threading.Event) -> None:
        try:
            source.run(self.decide_path, stop)
        except Exception as exc:  # supervisor: a failed source is reported, scanning goes on
            self._say(f"{type(source).__name__} stopped: {type(exc).__name__}: {exc}")

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set (or one round with `config.once`)."""
        if self.config.once:
            self.check_in_once()
            self.scan_watched()
            self.flush_telemetry()
            return
        threads = [
            threading.Thread(
                target=self._network_loop, args=(stop,), name="agent-check-in", daemon=True
            )
        ]
        for i, source in enumerate(self.sources):
            threads.append(
                threading.Thread(
                    target=self._source_loop,
                    args=(source, stop),
                    name=f"agent-source-{i}",
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        try:
            while not stop.is_set():
                if self.config.watch:
                    try:
                        self.scan_watched()
                    except Exception as exc:  # supervisor: report, go on scanning
                        self._say(f"scan failed: {type(exc).__name__}: {exc}")
                stop.wait(self.config.scan_interval_s)
        finally:
            stop.set()
            self._wake.set()
            for thread in threads:  # a check-in is bounded by its deadline; do not hang on it
                thread.join(timeout=1.0)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `fleetward-agent run` is given (see its help for each option)."""

    repo_url: str
    state_dir: Path
    org: str | None = None
    backend_url: str | None = None
    enroll_token: str | None = None
    root_file: Path | None = None
    trust_on_first_use: bool = False
    interval_s: float = 300.0
    # --protect and on-write --watch (agent.protect.realtime)
    realtime: RealtimeOptions | None = None
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    trace_update: bool = False  # one "update phase: PHASE TARGET" line per step (crash tests)


def update_config(**given: float | None) -> UpdateConfig:
    """An `UpdateConfig` with the given bounds, the documented defaults for those left None."""
    return UpdateConfig(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


# Fault injection for the crash test (tests/agent/update/test_crash_safety.py): with
# `--trace-update`, this variable set to "PHASE TARGET=MARKER" makes the agent, on reaching that
# update phase, write its pid to the MARKER file (aside, then renamed) and wait, so the test's
# SIGKILL lands at exactly that point of the update.
_FAULT_PAUSE_ENV = "FLEETWARD_FAULT_PAUSE_UPDATE"


def _phase_tracer(say: Callable[[str], None], pause: str) -> Callable[[str, str], None]:
    """An `on_phase` that prints "update phase: PHASE TARGET" and pauses where `pause` says."""
    aim, _, marker = pause.partition("=")

    def on_phase(phase: str, target: str) -> None:
        say(f"update phase: {phase} {target}")
        if marker and f"{phase} {target}" == aim:
            aside = Path(marker + ".tmp")
            aside.write_text(str(os.getpid()))
            aside.replace(marker)
            threading.Event().wait(60.0)

    return on_phase


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's lock (one agent per state directory)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(state_dir / ".lock", "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"another agent is running on {state_dir}") from None
        yield


def run(
    options: RunOptions,
    *,
    stop: threading.Event,
    clock: Callable[[], dt.datetime],
    on_line: Callable[[str], None] | None = None,
    on_result: Callable[[ScanResult], None] | None = None,
    sources: Iterable[EventSource] = (),
) -> None:
    """Enroll if asked, start the agent on its state directory and run it until `stop`.

    Raises:
        TrustAnchorError: no root, or the shipped or cached root is not a root signed by its
            own threshold of root keys (checked before enrollment or any check-in).
        StateError: another agent holds the state directory.
        TransportError: enrollment failed.
        ValueError: neither an org nor a backend was given, or a first enrollment lacks a token.
    """
    from agent.update.updater import fetch_trust_anchor, verify_trust

    with _state_lock(options.state_dir):
        anchor = options.root_file.read_bytes() if options.root_file else None
        first_run = not (options.state_dir / "tuf" / "root_history").is_dir()
        if anchor is None and options.trust_on_first_use and first_run:
            anchor = fetch_trust_anchor(options.repo_url)
        verify_trust(options.state_dir, anchor)  # refuse a bad or missing root (docs/adr/0004)
        pipe = (
            _telemetry_pipe(options.state_dir, options.backend_url, options.enroll_token)
            if options.backend_url
            else None
        )
        org = pipe.creds.org_id if pipe else options.org
        if org is None:
            raise ValueError("give --org, or --backend (the org then comes from enrollment)")
        updater = UpdateClient(
            options.state_dir,
            options.repo_url,
            org=org,
            trust_anchor=anchor,
            endpoint_id=pipe.creds.endpoint_id if pipe else None,  # places it in cohorts
            fetcher=_repo_fetcher(options.repo_url, pipe),
            config=options.update,
        )
        if options.trace_update and on_line is not None:
            updater.on_phase = _phase_tracer(on_line, os.environ.get(_FAULT_PAUSE_ENV, ""))

        def on_notice(notice: Notice) -> None:
            if on_line is not None:
                on_line(f"{notice.kind.value}: {notice.detail}")
            if pipe is not None:
                pipe.notice(notice)

        agent = Agent(
            options.state_dir,
            org=org,
            clock=clock,
            updater=updater,
            on_event=pipe.record if pipe else None,
            on_notice=on_notice,
            config=AgentConfig(interval_s=options.interval_s),
        )
        agent.start()

        def flush(now: dt.datetime) -> str:
            assert pipe is not None
            report = pipe.flush(now)
            return f"telemetry: {report.sent} sent, {report.pending} pending"

        if options.realtime is not None and not options.daemon.once:
            from agent.protect.realtime import realtime_sources

            sources = (*sources, *realtime_sources(agent, options.realtime, on_line=on_line))
        listener = None
        if pipe is not None and not options.daemon.once:  # the push channel (agent.update.push)
            import httpx

            from agent.update.push import PushListener

            listener = PushListener(
                httpx.Client(follow_redirects=False),
                pipe.creds.backend_url,
                pipe.creds.token,
                known_version=lambda: agent.policy.policy_version if agent.policy else None,
                on_version=lambda _version: None,  # bound to the daemon just below
                rng=random.Random(),  # noqa: S311 - reconnect jitter, not a secret
                on_line=on_line,
            )
            sources = (*sources, listener)
        daemon = Daemon(
            agent,
            config=options.daemon,
            flush=flush if pipe is not None else None,
            on_result=on_result,
            on_line=on_line,
            sources=sources,
        )
        if listener is not None:
            listener.on_version = daemon.check_in_soon
        daemon.run(stop)


def _telemetry_pipe(state_dir: Path, backend_url: str, enroll_token: str | None) -> TelemetryPipe:
    """Enroll once (credentials saved in the state dir), then a spool and sender for telemetry.

    Raises:
        ValueError: no saved credentials and no enroll token.
    """
    import httpx

    from agent.telemetry import (
        Spool,
        TelemetryPipe,
        TelemetrySender,
        enroll,
        load_credentials,
        save_credentials,
    )

    client = httpx.Client(timeout=10)
    creds = load_credentials(state_dir)
    if creds is None:
        if not enroll_token:
            raise ValueError("first run with --backend needs --enroll-token")
        creds = enroll(client, backend_url, enroll_token)
        save_credentials(state_dir, creds)
    sender = TelemetrySender(client, creds.backend_url, creds.token, Spool(state_dir / "spool"))
    return TelemetryPipe(sender, creds)


def _repo_fetcher(repo_url: str, pipe: TelemetryPipe | None) -> HTTPXFetcher | None:
    """A fetcher carrying this endpoint's token when the repository is the backend's own.

    The backend serves an org's policy target only to that org's endpoints (docs/adr/0003);
    the token is never sent to any other host.
    """
    if pipe is None or not repo_url.startswith(pipe.creds.backend_url.rstrip("/") + "/"):
        return None
    import httpx

    from agent.update.updater import HTTPXFetcher

    client = httpx.Client(
        timeout=10,
        follow_redirects=False,
        headers={"authorization": f"Bearer {pipe.creds.token}"},
    )
    return HTTPXFetcher(client)
