"""Sending the spool to the backend: retry with backoff and jitter, and back off across rounds.

Each POST is retried with exponential backoff and jitter by stamina (honouring `Retry-After` on
429/503); when a round gives up, the sender backs off across rounds too (`is_due(now)`, the
agent's one formula `agent.update.backoff.jittered_backoff_s`), so a dead backend costs a bounded
number of attempts per hour.

Every answer the agent reads from the backend outside TUF (enrollment, check-in, telemetry
acknowledgements) goes through `send_bounded`: at most `MAX_ANSWER_BYTES` of body are read. The
answers are JSON of well under 1 KiB, and httpx otherwise reads a body whole: one that never
ends (a broken or hostile backend, or anyone on the path of a plain-HTTP URL) would grow the
agent's memory without bound. TUF's own downloads are bounded by python-tuf and
`agent.update.updater.HTTPXFetcher`.
"""

from __future__ import annotations

import datetime as dt
import math
import random as _random
from dataclasses import dataclass, field

import httpx
import stamina

from agent.errors import TransportError
from agent.telemetry.spool import Spool
from agent.telemetry.wire import CONTENT_TYPE
from agent.update.backoff import jittered_backoff_s

__all__ = [
    "MAX_ANSWER_BYTES",
    "FlushReport",
    "SenderConfig",
    "TelemetrySender",
    "send_bounded",
]


MAX_ANSWER_BYTES = 64 * 1024


def send_bounded(
    client: httpx.Client, request: httpx.Request, *, max_bytes: int = MAX_ANSWER_BYTES
) -> httpx.Response:
    """Send `request` and return its answer with at most `max_bytes` of body read.

    Raises:
        httpx.HTTPError: as `httpx.Client.send`.
        TransportError: the body goes on past `max_bytes` (the connection is closed).
    """
    response = client.send(request, stream=True)
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise TransportError(
                    f"{request.method} {request.url.path}: the answer is over {max_bytes} bytes",
                    status_code=response.status_code,
                )
    finally:
        response.close()
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=request
    )


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """How hard the sender tries. Defaults: 4 attempts per batch within 0.5..10 s waits."""

    attempts: int = 4
    wait_initial_s: float = 0.5
    wait_max_s: float = 10.0
    wait_jitter_s: float = 1.0
    round_backoff_initial_s: float = 30.0
    round_backoff_max_s: float = 900.0
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What one `flush` did: batches acknowledged, rejected as malformed, still pending."""

    sent: int
    rejected: int
    pending: int
    attempts: int
    error: str | None = None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), 300.0) if math.isfinite(seconds) else None


@dataclass
class TelemetrySender:
    """Sends the spool to the backend through an injected `httpx.Client`.

    `flush(now)` sends the pending batches oldest first; after a round that gave up it waits
    `round_backoff` (doubling, with jitter, up to the max; `agent.update.backoff`) before `is_due`
    says try again.
    """

    client: httpx.Client
    url: str
    token: str
    spool: Spool
    config: SenderConfig = field(default_factory=SenderConfig)
    rng: _random.Random = field(default_factory=_random.Random)
    attempts: int = 0
    _failures: int = 0
    _next_due: dt.datetime | None = None

    def is_due(self, now: dt.datetime) -> bool:
        """False while backing off after a failed round."""
        return self._next_due is None or now >= self._next_due

    def _post(self, data: bytes) -> httpx.Response:
        self.attempts += 1
        request = self.client.build_request(
            "POST",
            self.url.rstrip("/") + "/v1/telemetry",
            content=data,
            timeout=self.config.timeout_s,
            headers={"content-type": CONTENT_TYPE, "authorization": f"Bearer {self.token}"},
        )
        try:
            response = send_bounded(self.client, request)
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        except TransportError as exc:  # an endless answer: a broken backend, tried again later
            raise _Retryable(str(exc)) from exc
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}", _retry_after(response))
        return response

    def _send_one(self, data: bytes) -> httpx.Response:
        def backoff(exc: Exception) -> bool | float:
            if isinstance(exc, _Retryable):
                return exc.retry_after_s if exc.retry_after_s is not None else True
            return False

        for attempt in stamina.retry_context(
            on=backoff,
            attempts=self.config.attempts,
            timeout=None,
            wait_initial=self.config.wait_initial_s,
            wait_max=self.config.wait_max_s,
            wait_jitter=self.config.wait_jitter_s,
        ):
            with attempt:
                return self._post(data)
        raise AssertionError("unreachable: stamina re-raises after the last attempt")

    def flush(self, now: dt.datetime) -> FlushReport:
        """Send every pending batch, oldest first; stop at the first batch that cannot go.

        Raises:
            TransportError: the backend refused the credentials (401/403); nothing is dropped.
        """
        if not self.is_due(now):
            return FlushReport(0, 0, len(self.spool.pending()), 0, "backing off")
        sent = rejected = 0
        start = self.attempts
        error: str | None = None
        for path in self.spool.pending():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            try:
                response = self._send_one(data)
            except _Retryable as exc:
                error = str(exc)
                break
            if response.status_code in (401, 403):
                raise TransportError(
                    f"backend refused the credentials: HTTP {response.status_code}",
                    status_code=response.status_code,
                )
            if response.is_success:
                sent += 1
            else:
                rejected += 1  # malformed for good: keeping it would block the spool forever
            path.unlink(missing_ok=True)
        if error is None:
            self._failures, self._next_due = 0, None
        else:
            self._failures += 1
            wait_s = jittered_backoff_s(
                self._failures,
                initial_s=self.config.round_backoff_initial_s,
                max_s=self.config.round_backoff_max_s,
                rng=self.rng,
            )
            self._next_due = now + dt.timedelta(seconds=wait_s)
        return FlushReport(sent, rejected, len(self.spool.pending()), self.attempts - start, error)
