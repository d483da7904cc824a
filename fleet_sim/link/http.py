"""`--backend URL`: the simulated fleet's telemetry reaches a running `fleetward backend serve`.

`HTTPLink` is an `InProcessLink` whose endpoints also talk to a real server over HTTP with the
agent's own code, the way a deployed agent does:
- each world org is created on the server through the admin API (`POST /v1/admin/orgs`), which
  hands back the org's enroll token;
- each simulated endpoint enrolls with `agent.telemetry.enroll` the first time it has telemetry
  to send, and keeps its own credentials (org and endpoint pseudonyms, bearer token);
- at each of its flushes the endpoint checks in (`agent.telemetry.check_in`), puts its events
  in its own `agent.telemetry.Spool` (one file per batch, each with a fresh idempotency key)
  and sends the spool with `agent.telemetry.TelemetrySender`.

What stays in-process: the operator timeline and the policy the simulated endpoints obey come
from the sim's own store (so a scenario's decisions do not depend on what else the server
holds), and every batch is also folded into that store, so the sim's in-run analyses (the
transition prediction, the rollout evidence) read the same telemetry. The remote server's
aggregates receive exactly the events the sim counts as sent (`events_sent`).

This is for small fleets: one HTTP request per check-in and per batch (`MAX_ENDPOINTS`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt

from agent.errors import AgentError
from agent.telemetry import (
    Credentials,
    Spool,
    TelemetryEvent,
    TelemetrySender,
    check_in,
    enroll,
)
from backend.store import Store
from fleet_sim.link.in_process import InProcessLink
from fleet_sim.scenario import ScenarioError

__all__ = ["MAX_ENDPOINTS", "HTTPLink", "RemoteBackend"]

MAX_ENDPOINTS = 2000


@dataclass(frozen=True, slots=True)
class RemoteBackend:
    """Where the server is and the admin token that may create orgs on it."""

    url: str
    admin_token: str
    timeout_s: float = 30.0


@dataclass
class _Agent:
    creds: Credentials
    sender: TelemetrySender


@dataclass
class HTTPLink(InProcessLink):
    """The in-process link plus a real server that receives every endpoint's telemetry."""

    remote: RemoteBackend | None = None
    client: httpx.Client | None = None
    spool_dir: Path | None = None
    enroll_tokens: list[str] = field(default_factory=list)
    remote_org_ids: list[str] = field(default_factory=list)
    events_sent: int = 0
    batches_sent: int = 0
    checkins_sent: int = 0
    _agents: dict[tuple[int, str], _Agent] = field(default_factory=dict)

    @classmethod
    def open_remote(
        cls,
        store: Store,
        org_names: Sequence[str],
        features: npt.NDArray[np.float32],
        sha256: Sequence[str],
        now: dt.datetime,
        *,
        remote: RemoteBackend,
        client: httpx.Client,
        spool_dir: Path,
        name_prefix: str = "",
    ) -> HTTPLink:
        """Create the world's orgs in `store` and on the server; return the link.

        Raises:
            ScenarioError: the server refused the admin token or is unreachable.
        """
        link = cls(store, tuple(org_names), features, tuple(sha256))
        link.org_ids = [store.create_org(name, now).org_id for name in org_names]
        link.remote, link.client, link.spool_dir = remote, client, spool_dir
        url = remote.url.rstrip("/")
        for name in org_names:
            try:
                r = client.post(
                    f"{url}/v1/admin/orgs",
                    json={"name": name_prefix + name},
                    headers={"authorization": f"Bearer {remote.admin_token}"},
                    timeout=remote.timeout_s,
                )
            except httpx.HTTPError as exc:
                raise ScenarioError(f"--backend {url}: {exc}") from exc
            if r.status_code != 201:
                raise ScenarioError(
                    f"--backend {url}: creating org {name!r} failed: HTTP {r.status_code}"
                )
            body = r.json()
            link.remote_org_ids.append(str(body["org_id"]))
            link.enroll_tokens.append(str(body["enroll_token"]))
        return link

    def _agent(self, org_id: str, endpoint_id: str) -> _Agent:
        org = self.org_ids.index(org_id)
        key = (org, endpoint_id)
        agent = self._agents.get(key)
        if agent is None:
            assert self.remote is not None and self.client is not None
            assert self.spool_dir is not None
            creds = enroll(self.client, self.remote.url, self.enroll_tokens[org])
            spool = Spool(self.spool_dir / endpoint_id)
            sender = TelemetrySender(self.client, creds.backend_url, creds.token, spool)
            agent = self._agents[key] = _Agent(creds, sender)
        return agent

    def send_events(self, events: Sequence[TelemetryEvent], dropped: int, now: dt.datetime) -> int:
        """One endpoint's flush: check in, spool the batch, send the spool; fold it in-process.

        The events are re-addressed to the endpoint's enrolled pseudonyms (the server only
        accepts a batch from the endpoint its token names).

        Raises:
            ScenarioError: the server refused the endpoint or a batch could not be delivered.
        """
        if not events:
            return 0
        accepted = super().send_events(events, dropped, now)
        try:
            agent = self._agent(events[0].org_id, events[0].endpoint_id)
            assert self.client is not None
            check_in(self.client, agent.creds)
            self.checkins_sent += 1
            mine = [
                dataclasses.replace(
                    e, org_id=agent.creds.org_id, endpoint_id=agent.creds.endpoint_id
                )
                for e in events
            ]
            agent.sender.spool.put(mine)
            report = agent.sender.flush(now)
        except AgentError as exc:
            raise ScenarioError(f"--backend: {exc}") from exc
        if report.pending or report.rejected:
            raise ScenarioError(
                f"--backend: {report.pending} batch(es) not delivered, {report.rejected} "
                f"rejected ({report.error or 'see the server log'})"
            )
        self.events_sent += len(events)
        self.batches_sent += report.sent
        return accepted
