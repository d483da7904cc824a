"""Push notice of a new policy: a bounded registry of open channels and the `/v1/push` route.

Why: agents check in every few minutes, so a kill switch waited for the next check-in. An
agent now holds one long-lived server-sent-events channel; when the policy its org obeys
changes, the backend writes `event: policy` / `data: {"policy_version": N}` on it and the
agent checks in at once. The notice says only "go check": the agent fetches and verifies
everything through TUF (or its check-in) as before, so a forged or replayed notice costs at
most one extra check-in.

Guarantees:
- Tokens: only an endpoint token opens a channel (401 without a valid one, 403 for another
  kind of token); a channel is registered under the token's org alone.
- Org isolation: `orgs_touched` compares the old and new documents; a change to one org's
  override notifies that org's channels only, a fleet-wide change notifies every org.
- Bounded: at most `PushConfig.max_channels` channels are open; past that a request gets 503
  with `Retry-After` (seconds, jittered by the agent). The count is the gauge
  `fleetward_push_channels` on `/metrics` and the bound `fleetward_push_channels_limit`,
  with notices sent and channels refused. Each replica has its own bound and its own count
  (its `/metrics` shows them): behind a balancer the fleet holds the sum.
- A comment line every `heartbeat_s` keeps idle proxies from closing the channel and lets
  both sides notice a dead peer. A channel ends cleanly after `lifetime_s` (1 h): the agent
  reconnects with jitter, so after a scale-out the channels spread over the new replicas,
  and a probe (or a test client) with a short lifetime reads a complete response. On
  connect the current version is sent at once, so an agent that missed a notice while
  reconnecting checks in.

- Revocation: a channel ends when its token is revoked, through this process (at once) or
  through another replica (when the feed reads the revocation log: within its poll or
  NOTIFY latency). A reconnect with the revoked token then gets 401.

Across replicas the notices come from `backend.server.replica.PolicyFeed`: a change made through
replica A reaches agents connected to replica B within the feed's poll or NOTIFY latency,
and only once it is signed into the repository B serves (never at the COMMIT alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from agent.policy import PolicyDocumentModel
from backend._clock import monotonic_s
from backend.errors import BackendError
from backend.server.replica import PolicyFeed
from backend.store import PolicyRecord, token_id_of

__all__ = [
    "Holder",
    "PushConfig",
    "PushHub",
    "PushRoute",
    "feed_lifespan",
    "orgs_touched",
]

_FLEET_FIELDS = frozenset({"version", "issued_at", "orgs"})


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Limits of the push channels of one backend process.

    Attributes:
        max_channels: open channels at most (20,000; each holds one socket and one task).
        heartbeat_s: seconds between keep-alive comments on an idle channel (25 s).
        retry_after_s: the `Retry-After` a refused agent is told (30 s).
        lifetime_s: seconds after which a channel ends cleanly and the agent reconnects (1 h).
    """

    max_channels: int = 20_000
    heartbeat_s: float = 25.0
    retry_after_s: int = 30
    lifetime_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_channels <= 1_000_000:
            raise ValueError("max_channels must be 1..1000000")
        if not 0 < self.heartbeat_s <= 3600 or not 1 <= self.retry_after_s <= 3600:
            raise ValueError("heartbeat_s must be in (0, 3600] and retry_after_s 1..3600")
        if not 0 < self.lifetime_s <= 86_400:
            raise ValueError("lifetime_s must be in (0, 86400]")


def orgs_touched(
    old: PolicyDocumentModel | None, new: PolicyDocumentModel
) -> frozenset[str] | None:
    """Which orgs' policy differs between `old` and `new`: None means every org.

    Conservative: anything outside the per-org overrides (the default, any later top-level
    field) counts as fleet-wide.
    """
    if old is None:
        return None
    if old.model_dump(exclude=set(_FLEET_FIELDS)) != new.model_dump(exclude=set(_FLEET_FIELDS)):
        return None
    return frozenset(
        o for o in old.orgs.keys() | new.orgs.keys() if old.orgs.get(o) != new.orgs.get(o)
    )


Holder = tuple[str, str, str | None]
"""Who holds a channel: (org id, token hash, endpoint id)."""


@dataclass(eq=False, slots=True)
class _Channel:
    org_id: str
    token_hash: str = ""
    endpoint_id: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    closed: bool = False
    notified_s: float = 0.0


class PushHub:
    """The open channels of one process, by org, bounded (call only on the event loop)."""

    def __init__(self, config: PushConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self._by_org: dict[str, set[_Channel]] = {}
        self._open = 0
        self.gauge = Gauge("fleetward_push_channels", "Push channels open now", registry=registry)
        self.limit = Gauge(
            "fleetward_push_channels_limit",
            "Push channels this process opens at most (PushConfig.max_channels)",
            registry=registry,
        )
        self.limit.set(config.max_channels)
        self.sent = Counter(
            "fleetward_push_notices", "Policy notices written to push channels", registry=registry
        )
        self.refused = Counter(
            "fleetward_push_refused", "Push channels refused at the bound", registry=registry
        )
        self.revoked = Counter(
            "fleetward_push_revoked", "Push channels ended because their token was revoked",
            registry=registry,
        )  # fmt: skip
        self.delay = Histogram(
            "fleetward_push_delivery_seconds",
            "From a policy change reaching this process to its notice written on a channel",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
            registry=registry,
        )

    @property
    def open_channels(self) -> int:
        """How many channels are open."""
        return self._open

    def open(
        self, org_id: str, version: int, token_hash: str = "", endpoint_id: str | None = None
    ) -> _Channel | None:
        """Register a channel for `org_id` (held by `token_hash`), or None at the bound."""
        if self._open >= self.config.max_channels:
            self.refused.inc()
            return None
        channel = _Channel(org_id, token_hash, endpoint_id, version=version)
        self._by_org.setdefault(org_id, set()).add(channel)
        self._open += 1
        self.gauge.set(self._open)
        return channel

    def close(self, channel: _Channel) -> None:
        """Unregister a channel (idempotent)."""
        group = self._by_org.get(channel.org_id)
        if group is None or channel not in group:
            return
        group.discard(channel)
        if not group:
            del self._by_org[channel.org_id]
        self._open -= 1
        self.gauge.set(self._open)

    def notify(self, orgs: frozenset[str] | None, version: int) -> int:
        """Tell the channels of `orgs` (None: all) that `version` is out; returns how many."""
        groups = (
            self._by_org.values()
            if orgs is None
            else (self._by_org[o] for o in orgs if o in self._by_org)
        )
        n, now = 0, monotonic_s()
        for group in groups:
            for channel in group:
                if version > channel.version:
                    channel.version, channel.notified_s = version, now
                    channel.wake.set()
                    n += 1
        return n

    def end_where(self, holds: Callable[[_Channel], bool]) -> int:
        """End every open channel for which `holds(channel)`; returns how many."""
        ended = [c for group in self._by_org.values() for c in group if holds(c) and not c.closed]
        for channel in ended:
            channel.closed = True
            channel.wake.set()
        self.revoked.inc(len(ended))
        return len(ended)

    def on_revoke(self, token_hashes: frozenset[str]) -> None:
        """`PolicyFeed.on_revoke`: end the channels of tokens revoked (by any replica)."""
        self.end_where(lambda c: c.token_hash in token_hashes)

    def revoke_token(self, token_id: str) -> int:
        """End the channels of the token with public id `token_id` (revoked here)."""
        return self.end_where(lambda c: token_id_of(c.token_hash) == token_id)

    def revoke_endpoint(self, endpoint_id: str) -> int:
        """End the channels of `endpoint_id` (its tokens were revoked here)."""
        return self.end_where(lambda c: c.endpoint_id == endpoint_id)

    def on_policy(self, old: PolicyRecord | None, new: PolicyRecord) -> None:
        """`PolicyFeed.on_change`: notify the orgs whose policy the change touched."""
        self.notify(orgs_touched(old.document if old else None, new.document), new.version)


def _event(version: int) -> bytes:
    return b"event: policy\ndata: " + json.dumps({"policy_version": version}).encode() + b"\n\n"


class PushRoute:
    """`GET /v1/push`: the server-sent-events channel (a raw ASGI app; see the module doc).

    `authenticate(request)` returns who holds the channel (`Holder`: org id, token hash,
    endpoint id) or raises `AuthError` / `ForbiddenError`; `render_error` turns those into
    the app's error response.
    """

    def __init__(
        self,
        hub: PushHub,
        feed: PolicyFeed,
        authenticate: Callable[[Request], Holder],
        render_error: Callable[[Request, BackendError], Any],
    ) -> None:
        self.hub, self.feed = hub, feed
        self.authenticate, self.render_error = authenticate, render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, register within the bound, then stream notices until disconnect."""
        request = Request(scope, receive)
        try:
            # In a worker thread: a token's first request to this process reads the store, which
            # on a busy PostgreSQL blocked every channel and check-in of the loop for seconds.
            org_id, token_hash, endpoint_id = await run_in_threadpool(self.authenticate, request)
        except BackendError as exc:
            response = await self.render_error(request, exc)
            await response(scope, receive, send)
            return
        current = self.feed.latest()
        version = current.version if current else 0
        channel = self.hub.open(org_id, version, token_hash, endpoint_id)
        if channel is None:
            retry = str(self.hub.config.retry_after_s)
            body = b'{"error":"ChannelLimitError","detail":"too many push channels open"}'
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", retry.encode()),
                (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        watcher = asyncio.create_task(self._watch_disconnect(receive, channel))
        try:
            await self._stream(send, channel)
        except OSError:
            pass  # the peer went away mid-write
        finally:
            channel.closed = True
            self.hub.close(channel)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_disconnect(self, receive: Receive, channel: _Channel) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        channel.closed = True
        channel.wake.set()

    async def _stream(self, send: Send, channel: _Channel) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no")]})  # fmt: skip
        sent = channel.version
        await send({"type": "http.response.body", "body": _event(sent), "more_body": True})
        heartbeat = self.hub.config.heartbeat_s
        ends_s = monotonic_s() + self.hub.config.lifetime_s
        while not channel.closed:
            left = ends_s - monotonic_s()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(min(heartbeat, left)):
                    await channel.wake.wait()
            except TimeoutError:
                if heartbeat < left:
                    await send(
                        {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                    )
                continue
            channel.wake.clear()
            if channel.closed:
                break
            if channel.version > sent:
                sent = channel.version
                await send({"type": "http.response.body", "body": _event(sent), "more_body": True})
                self.hub.sent.inc()
                self.hub.delay.observe(monotonic_s() - channel.notified_s)
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def feed_lifespan(
    feed: PolicyFeed, inner: Callable[[Any], contextlib.AbstractAsyncContextManager[None]] | None
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A Starlette lifespan that runs `feed.run` (and `inner`, if any) while the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        try:
            if inner is None:
                yield
            else:
                async with inner(app):
                    yield
        finally:
            stop.set()
            await task

    return lifespan
