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
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from agent._internal.install import InstallRecord, StateDir, write_atomic
from agent.breaker import BreakerState, reset
from agent.decision import Decision, Mode, Reason, Verdict
from agent.engine import ShadowScore, ShadowVerdict, effective_mode, evaluate
from agent.errors import AgentError, BundleRejectedError, PolicyError, StateError
from agent.features import extract_features
from agent.model import LoadedModel, load_bundle
from agent.policy import EffectivePolicy, resolve_policy
from agent.scan import FileStatus, ScanResult, iter_files, read_sample
from agent.updater import UpdateClient, load_installed_policy

__all__ = [
    "Agent",
    "AgentConfig",
    "CheckInResult",
    "DecisionEvent",
    "Notice",
    "NoticeKind",
    "read_status",
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
        old_policy, old_active = self._policy_version(), self.record.active
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
        if self._policy_version() != old_policy or record.active != old_active:
            self.breaker = reset()
        self._status.serving_model_version = self.active.version if self.active else None

    # --- check-in ------------------------------------------------------------------------

    def check_in(self) -> CheckInResult:
        """One update check; never raises for repository or verification problems."""
        now = self.clock()
        self._status.checkins += 1
        self._status.last_checkin_at = _iso(now)
        if self.updater is None:
            return CheckInResult(now, ok=False, changed=False, error_kind="NoUpdater")
        try:
            outcome = self.updater.check_in(now)
        except AgentError as exc:
            kind = type(exc).__name__
            self._error(now, kind, str(exc))
            offline = kind == "RepositoryUnreachableError"
            self._notice(now, NoticeKind.OFFLINE if offline else NoticeKind.REJECTED, str(exc))
            self._save()
            return CheckInResult(now, ok=False, changed=False, error_kind=kind, error=str(exc))
        changed = outcome.record != self.record
        if changed:
            self._load(outcome.record, now)
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
        self, sha256: str, vector: npt.NDArray[np.float32], now: dt.datetime
    ) -> DecisionEvent:
        """Score, decide and report one sample given its features (the simulator's entry)."""
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
        event = self.decide_vector(sha, extract_features(data, total_size=size), now)
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
        self._status.scans += 1
        inputs = (
            self._status.serving_model_version,
            self._policy_version(),
            self.breaker.is_tripped,
        )
        for path, early in iter_files(paths):
            if early is not None:
                yield early
                continue
            if only_changed:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                key = (st.st_size, st.st_mtime_ns, *inputs)
                if self._seen.get(path) == key:
                    continue
                self._seen[path] = key
            yield self.scan_file(path, now)
        self._save()

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
