"""The endpoint's side of the backend: enrollment, check-in, credentials, the telemetry pipe.

`TelemetryPipe` is the daemon's telemetry hook: it turns decisions into wire events (pseudonyms
only), counts health notices, spools batches and sends them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.decision import Reason, Verdict
from agent.errors import SpoolFullError, TransportError
from agent.features import SCHEMA
from agent.protect.quarantine import QuarantineRecord
from agent.telemetry.sender import FlushReport, TelemetrySender, send_bounded
from agent.telemetry.wire import (
    _MAX_HEALTH,
    HEALTH_COUNTERS,
    Action,
    HealthCount,
    TelemetryEvent,
    make_batches,
)
from agent.update.atomic import write_atomic

__all__ = [
    "ActionReport",
    "CheckinInfo",
    "Credentials",
    "TelemetryPipe",
    "check_in",
    "check_in_if_changed",
    "checkin_request",
    "enroll",
    "load_credentials",
    "parse_checkin",
    "save_credentials",
]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What enrollment gives an endpoint: its pseudonyms and its own bearer token."""

    backend_url: str
    org_id: str
    endpoint_id: str
    token: str


@dataclass(frozen=True, slots=True)
class CheckinInfo:
    """The backend's answer to a check-in: what policy and model the endpoint should run."""

    policy_version: int
    mode: str
    model_version: int | None
    shadow_model_version: int | None


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if not response.is_success:
        raise TransportError(
            f"{what} failed: HTTP {response.status_code} {response.text[:200]}",
            status_code=response.status_code,
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise TransportError(f"{what}: the backend answered with invalid JSON") from exc
    if not isinstance(body, dict):
        raise TransportError(f"{what}: the backend answered with a non-object")
    return body


def enroll(client: httpx.Client, url: str, enroll_token: str) -> Credentials:
    """Trade an org's enroll token for this endpoint's own credentials.

    Raises:
        TransportError: the backend is unreachable or refused the token.
    """
    try:
        response = send_bounded(
            client,
            client.build_request(
                "POST",
                url.rstrip("/") + "/v1/enroll",
                headers={"authorization": f"Bearer {enroll_token}"},
            ),
        )
    except httpx.HTTPError as exc:
        raise TransportError(f"enroll: {exc}") from exc
    body = _json(response, "enroll")
    try:
        return Credentials(
            url.rstrip("/"), str(body["org_id"]), str(body["endpoint_id"]), str(body["token"])
        )
    except KeyError as exc:
        raise TransportError(f"enroll: the answer lacks {exc}") from exc


def checkin_request(creds: Credentials, etag: str | None = None) -> tuple[str, dict[str, str]]:
    """The check-in's URL and headers; with `etag` the backend answers 304 if nothing changed."""
    headers = {"authorization": f"Bearer {creds.token}"}
    if etag is not None:
        headers["if-none-match"] = etag
    return creds.backend_url + "/v1/checkin", headers


def check_in(client: httpx.Client, creds: Credentials) -> CheckinInfo:
    """Ask the backend which policy version and model this endpoint should run.

    Raises:
        TransportError: the backend is unreachable or answered with an error.
    """
    info, _etag = check_in_if_changed(client, creds, None)
    assert info is not None  # no etag sent: never a 304
    return info


def check_in_if_changed(
    client: httpx.Client, creds: Credentials, etag: str | None
) -> tuple[CheckinInfo | None, str | None]:
    """A conditional check-in: (None, etag) when the answer is still the one tagged `etag`.

    Raises:
        TransportError: the backend is unreachable or answered with an error.
    """
    url, headers = checkin_request(creds, etag)
    try:
        response = send_bounded(client, client.build_request("GET", url, headers=headers))
    except httpx.HTTPError as exc:
        raise TransportError(f"check-in: {exc}") from exc
    if response.status_code == 304 and etag is not None:
        return None, etag
    return parse_checkin(response), response.headers.get("etag")


def parse_checkin(response: httpx.Response) -> CheckinInfo:
    """Read a (non-304) check-in answer.

    Raises:
        TransportError: the backend answered with an error or a malformed body.
    """
    body = _json(response, "check-in")
    try:
        return CheckinInfo(
            int(body["policy_version"]),
            str(body["mode"]),
            None if body.get("model_version") is None else int(body["model_version"]),
            None if body.get("shadow_model_version") is None else int(body["shadow_model_version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransportError(f"check-in: malformed answer ({exc})") from exc


def save_credentials(state_dir: str | os.PathLike[str], creds: Credentials) -> Path:
    """Write the credentials to `state_dir/credentials.json` (mode 0600, atomically)."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "credentials.json"
    doc = {
        "backend_url": creds.backend_url,
        "org_id": creds.org_id,
        "endpoint_id": creds.endpoint_id,
        "token": creds.token,
    }
    write_atomic(path, json.dumps(doc).encode(), mode=0o600)
    return path


def load_credentials(state_dir: str | os.PathLike[str]) -> Credentials | None:
    """The saved credentials, or None when this endpoint has not enrolled yet."""
    path = Path(state_dir) / "credentials.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(doc["backend_url"], doc["org_id"], doc["endpoint_id"], doc["token"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TransportError(f"unreadable credentials file {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ActionReport:
    """Something done to a decided file (quarantined, restored, deleted, denied).

    Given to the telemetry hook (`Agent.on_event`, `TelemetryPipe.record`) beside the
    `DecisionEvent`s: the pipe sets the action on the buffered event of the same sample, or
    sends an event of its own (its verdict, reason and model version) when there is none,
    as for `quarantine restore` long after the decision.
    """

    observed_at: dt.datetime
    sha256: str
    action: Action
    verdict: Verdict
    reason: Reason
    model_version: int | None

    @classmethod
    def of_record(cls, record: QuarantineRecord, action: Action, now: dt.datetime) -> ActionReport:
        """The report of `action` on a quarantined file, from its quarantine record."""
        return cls(
            now,
            record.sha256,
            action,
            Verdict(record.verdict),
            Reason(record.reason),
            record.model_version,
        )


class TelemetryPipe:
    """The daemon's telemetry hook: buffer decisions, spool them as batches, flush to the backend.

    `record` is the `Agent(on_event=...)` callback (it takes the daemon's `DecisionEvent`);
    `notice` takes the daemon's `Notice`s and counts the health ones (self-test failures, model
    errors, breaker trips: `Notice.health_counter`); `flush(now)` spools what was buffered,
    the health counts riding in the first batch, and sends the spool when the sender is due.
    Health counts wait for a batch with events (a batch never travels empty).
    """

    def __init__(
        self, sender: TelemetrySender, creds: Credentials, *, max_events: int = 1000
    ) -> None:
        self.sender, self.creds, self.max_events = sender, creds, max_events
        self._buffer: list[TelemetryEvent] = []
        self._health: dict[tuple[int, int], list[int]] = {}
        self._lock = threading.Lock()  # decisions record while the network thread flushes

    def notice(self, notice: Any) -> None:
        """Count a daemon `Notice` that reports agent health (others are ignored)."""
        counter = getattr(notice, "health_counter", None)
        version = getattr(notice, "model_version", None)
        if counter not in HEALTH_COUNTERS or version is None:
            return
        at_ms = TelemetryEvent.ms(notice.at)
        with self._lock:
            cell = self._health.setdefault((int(version), at_ms // 86_400_000), [at_ms, 0, 0, 0])
            cell[1 + HEALTH_COUNTERS.index(counter)] += 1

    def _take_health(self) -> tuple[HealthCount, ...]:
        rows = [HealthCount(v, c[0], c[1], c[2], c[3]) for (v, _d), c in self._health.items()]
        self._health = {}
        return tuple(rows[:_MAX_HEALTH])

    def record(self, event: Any) -> None:
        """Turn one daemon `DecisionEvent` (or `ActionReport`) into a `TelemetryEvent`."""
        if isinstance(event, ActionReport):
            self.record_action(event)
            return
        shadow = event.shadow[0] if event.shadow else None
        row = TelemetryEvent(
            self.creds.org_id,
            self.creds.endpoint_id,
            event.sha256,
            event.model_version or 0,
            event.score,
            event.verdict,
            event.reason,
            TelemetryEvent.ms(event.observed_at),
            SCHEMA.name,
            event.features or None,
            shadow.model_version if shadow else None,
            shadow.score if shadow else None,
            shadow.verdict if shadow else None,
        )
        with self._lock:
            self._buffer.append(row)

    def record_action(self, report: ActionReport) -> None:
        """Carry an action as an event of its own, never on the decision's event.

        An action is not a decision: the backend leaves every action event out of the
        aggregates and the rollout evidence. Riding on the decision's buffered event would
        count the decision twice whenever a flush fell between the decision and its action.
        """
        with self._lock:
            self._buffer.append(
                TelemetryEvent(
                    self.creds.org_id,
                    self.creds.endpoint_id,
                    report.sha256,
                    report.model_version or 0,
                    None,
                    report.verdict,
                    report.reason,
                    TelemetryEvent.ms(report.observed_at),
                    None,
                    action=report.action,
                )
            )

    def flush(self, now: dt.datetime) -> FlushReport:
        """Spool the buffered events, then send the spool if the sender is due.

        Raises:
            TransportError: the backend refused the credentials.
        """
        with self._lock:
            buffered, self._buffer = self._buffer, []
        for batch in make_batches(buffered, max_events=self.max_events):
            with self._lock:
                health = self._take_health() if self._health else ()
            try:
                self.spool_put(batch, health)
            except SpoolFullError:
                continue  # counted by the spool; reported in the next batch
        return self.sender.flush(now)

    def spool_put(
        self, batch: Sequence[TelemetryEvent], health: Sequence[HealthCount] = ()
    ) -> None:
        """Store one batch (with any health counts) in the sender's spool."""
        self.sender.spool.put(batch, health)
