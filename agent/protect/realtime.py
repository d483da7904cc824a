"""Wiring the real-time sources (fanotify protector, inotify watcher) to a running `Agent`.

`agent.protect.protector` and `agent.protect.watch` know nothing of the agent; this module
gives them its decision path, its effective mode (detect_only and the kill switch allow
everything at once), its cache key (`Agent.decision_inputs()`: a change of model, policy or
breaker empties the protector's verdict cache within `POLL_S`), its quarantine folder and its
telemetry (a deadline is reported as an `error` event with reason `deadline`). Where fanotify
cannot be used it says so once, in one line, and watches the protected folders instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from agent.decision import Mode, Reason, Verdict
from agent.engine import effective_mode
from agent.heap import release_free_memory
from agent.protect import fanotify
from agent.protect.protector import ProtectConfig, Protector, ProtectReport, ReportKind
from agent.protect.quarantine import Quarantine, QuarantineRecord
from agent.protect.scan import ScanResult
from agent.telemetry.client import ActionReport
from agent.telemetry.wire import Action

if TYPE_CHECKING:
    from agent.daemon import Agent, EventSource

__all__ = [
    "POLL_S",
    "ProtectSource",
    "RealtimeOptions",
    "protection_note",
    "realtime_sources",
]

POLL_S = 0.1
"""How often a protector checks the agent's decision inputs (model, policy, breaker)."""


@dataclass(frozen=True, slots=True)
class RealtimeOptions:
    """What `fleetward-agent run` asks of real-time control.

    Attributes:
        protect: folders or mounts held with fanotify permission marks.
        protect_open: also answer every open, not only execs.
        deadline_ms: past this an event is answered allow (and reported).
        watch: folders watched on write (inotify); the protected ones are added when fanotify
            is unavailable.
        quarantine: move blocked files into the state directory's quarantine.
    """

    protect: tuple[str, ...] = ()
    protect_open: bool = False
    deadline_ms: float = 250.0
    watch: tuple[str, ...] = ()
    quarantine: bool = True


def protection_note(mode: str | None) -> str:
    """One line for `status` on what real-time protection does in the effective `mode`."""
    if mode in (Mode.DETECT_ONLY.value, Mode.OFF.value):
        return (
            f"real-time protection allows every exec and open (mode {mode}); files still reported"
        )
    return "real-time protection denies block and blocklisted verdicts (when --protect is on)"


class ProtectSource:
    """An `EventSource` holding fanotify marks for an `Agent` (see `agent.protect.protector`)."""

    def __init__(
        self,
        agent: Agent,
        paths: tuple[str, ...],
        *,
        config: ProtectConfig,
        quarantine: Quarantine | None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.agent = agent
        self.paths = paths
        self.config = config
        self.quarantine = quarantine
        self.on_line = on_line
        self.protector: Protector | None = None

    def _mode(self) -> Mode:
        # read without the agent's lock: the reader thread must never wait on a decision
        return effective_mode(self.agent.policy, self.agent.breaker)

    def _on_report(self, report: ProtectReport) -> None:
        if report.quarantined is not None and self.on_line is not None:
            self.on_line(f"quarantined {report.path} as {report.quarantined.id}")
        if not report.allowed:
            self._report_action(report)
        if report.kind is ReportKind.DEADLINE:
            self._report_deadline(report.result)

    def _report_action(self, report: ProtectReport) -> None:
        """Telemetry carries the action: quarantined, or denied when the file stayed."""
        on_event, now = (
            cast(Callable[[object], None] | None, self.agent.on_event),
            self.agent.clock(),
        )
        if on_event is None:
            return
        if report.quarantined is not None:
            on_event(ActionReport.of_record(report.quarantined, Action.QUARANTINED, now))
            return
        d, sha = report.result.decision, report.result.sha256
        if d is not None and sha is not None:
            on_event(
                ActionReport(
                    now, sha, Action.DENIED, d.verdict, d.reason, report.result.model_version
                )
            )

    def _report_deadline(self, result: ScanResult) -> None:
        from agent.daemon import DecisionEvent

        agent = self.agent
        if agent.on_event is None or result.sha256 is None:
            return
        policy = agent.policy
        agent.on_event(
            DecisionEvent(
                observed_at=agent.clock(),
                sha256=result.sha256,
                score=result.decision.score if result.decision else None,
                verdict=Verdict.ERROR,
                reason=Reason.DEADLINE,
                model_version=result.model_version,
                policy_version=policy.policy_version if policy else None,
                mode=self._mode(),
                shadow=(),
                features=b"",
            )
        )

    def run(self, decide_path: Callable[[str], ScanResult], stop: threading.Event) -> None:
        """Hold the marks until `stop`; empty the cache whenever the decision inputs change.

        Raises:
            OSError: fanotify refused the group or a mark.
        """
        protector = Protector(
            decide_path,
            mode=self._mode,
            clock=self.agent.clock,
            config=self.config,
            quarantine=self.quarantine,
            on_report=self._on_report,
        )
        protector.start(self.paths)
        self.protector = protector
        if self.on_line is not None:
            self.on_line(f"real-time protection on {', '.join(self.paths)}")
        try:
            inputs = self.agent.decision_inputs()
            while not stop.wait(POLL_S):
                if protector.failure:  # it failed open; the daemon reports this source stopped
                    raise RuntimeError(f"real-time protection stopped: {protector.failure}")
                now = self.agent.decision_inputs()
                if now != inputs:
                    protector.invalidate()
                    inputs = now
                    release_free_memory()  # a model swap freed a whole session: give it back
        finally:
            protector.stop()


def realtime_sources(
    agent: Agent,
    options: RealtimeOptions,
    *,
    on_line: Callable[[str], None] | None = None,
) -> list[EventSource]:
    """The protector and watcher for `options` (an unavailable fanotify is said once)."""
    say = on_line or (lambda _: None)
    quarantine = Quarantine(agent.state.root / "quarantine") if options.quarantine else None

    def on_quarantine(record: QuarantineRecord) -> None:
        say(f"quarantined {record.original_path} as {record.id}")
        on_event = cast(Callable[[object], None] | None, agent.on_event)
        if on_event is not None:  # telemetry carries the action (`TelemetryPipe.record`)
            on_event(ActionReport.of_record(record, Action.QUARANTINED, agent.clock()))

    sources: list[EventSource] = []
    watch = list(options.watch)
    if options.protect:
        ok, why = fanotify.is_available()
        if ok:
            config = ProtectConfig(
                deadline_ms=options.deadline_ms, protect_open=options.protect_open
            )
            sources.append(
                ProtectSource(
                    agent, options.protect, config=config, quarantine=quarantine, on_line=on_line
                )
            )
        else:
            say(f"real-time control is unavailable ({why}): scanning and watching instead")
            watch += [p for p in options.protect if p not in watch]
    if watch:
        from agent.protect.watch import Watcher  # watchdog loads only when something is watched

        sources.append(
            Watcher(
                watch,
                clock=agent.clock,
                quarantine=quarantine,
                on_quarantine=on_quarantine,
                skip=agent.already_decided,  # decided once, not by the watcher and the scan
            )
        )
    return sources
