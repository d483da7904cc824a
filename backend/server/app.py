"""The backend's HTTP surface: a small Starlette app over `Store`, `ingest` and `admin`.

Routes (declared once in `backend.server.api` and `backend.rollout.api`: the handlers parse and
answer with those declarations, and `backend.server._openapi` generates `/openapi.json` from them):
`POST /v1/enroll`, `GET /v1/checkin`, `POST /v1/telemetry` for endpoints; `/v1/admin/...` for
operators (admin token); the TUF repository's `metadata/` and `targets/` under `/tuf/` (never
`keys/`); `/metrics`, `/healthz`; `GET /v1/push`, the push channel (`backend.server.push`).

Check-in and the TUF metadata answer `If-None-Match` with 304 when nothing changed, so an idle
fleet costs a few bytes per check-in. The policy a check-in answers from is this process's
`backend.server.replica.PolicyFeed`, which follows changes other replicas make to the shared store.

Every domain error maps to one status in `ERROR_STATUS`, the single exception-handler table;
bad input is a 4xx with a reason and never a 5xx. A telemetry batch is committed before its
2xx goes out. An endpoint token acts only inside its own org: a batch naming another org or
endpoint is refused (403), and check-in answers only the token's own org.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.decision import Mode
from agent.policy import DEFAULT_POLICY_TARGET, EffectivePolicy, policy_target, resolve_policy
from backend import admin
from backend._clock import monotonic_s, utc_now
from backend.errors import (
    AuthError,
    BackendError,
    BatchInvalidError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    PolicyConflictError,
    PublishError,
    UnsupportedMediaError,
)
from backend.ingest import aggregate_columns, endpoint_day_rows, parse_columns
from backend.server import api
from backend.server._gc import start_freezer
from backend.server._openapi import openapi_document
from backend.server._operation import ErrorBody, Operation
from backend.server._routing import method_not_allowed, not_found, path_routes
from backend.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from backend.server.metrics import Metrics
from backend.server.push import Holder, PushConfig, PushHub, PushRoute, feed_lifespan
from backend.server.replica import PolicyFeed, served_policy_version
from backend.store import AggregateStore, PolicyRecord, Principal, TokenKind, hash_token

__all__ = ["ERROR_STATUS", "AppConfig", "create_app", "serve"]

_SWITCH_INTERVAL_S = 0.001

M = TypeVar("M", bound=BaseModel)

ERROR_STATUS: dict[type[BackendError], int] = {
    ForbiddenError: 403,
    AuthError: 401,
    NotFoundError: 404,
    ConflictError: 409,
    PayloadTooLargeError: 413,
    UnsupportedMediaError: 415,
    BatchInvalidError: 422,
    PublishError: 503,
}


class AppConfig(BaseModel):
    """Limits of one backend instance (bounded, documented defaults)."""

    model_config = ConfigDict(frozen=True)

    max_telemetry_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_json_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)


def _status_for(exc: BackendError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 400


async def _on_backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError)
    status = _status_for(exc)
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    body = ErrorBody(
        error=type(exc).__name__,
        detail=str(exc),
        current_version=exc.current_version if isinstance(exc, PolicyConflictError) else None,
    )
    return Response(
        body.model_dump_json(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over {limit}", limit_bytes=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over {limit} bytes", limit_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _policy_change(record: PolicyRecord) -> api.PolicyChange:
    return api.PolicyChange(
        version=record.version, changed_at=record.changed_at, action=record.action
    )


class _Routes:
    """Request handlers bound to one store, publisher, clock and metrics."""

    def __init__(
        self,
        store: AggregateStore,
        publish: admin.Publish,
        clock: Callable[[], dt.datetime],
        metrics: Metrics,
        config: AppConfig,
    ) -> None:
        self.store, self.publish, self.clock, self.metrics, self.config = (
            store,
            publish,
            clock,
            metrics,
            config,
        )
        self._resolved: dict[tuple[int, str], EffectivePolicy] = {}
        self._checkins: dict[Principal, tuple[bytes, str]] = {}
        self._checkins_version = 0
        self.feed: PolicyFeed | None = None  # set by `create_app`
        self.operations: tuple[Operation, ...] = ()  # what `create_app` mounted
        self._document: bytes | None = None

    def current_policy(self) -> PolicyRecord | None:
        """The policy this process answers from (its feed's, which follows other replicas)."""
        return self.feed.latest() if self.feed is not None else self.store.current_policy()

    def _adopt(self, record: PolicyRecord) -> None:
        """A change made through this process: answer from it and notify at once."""
        if self.feed is not None:
            self.feed.offer(record)

    def authorize(self, request: Request, op: Operation) -> Principal:
        """The caller, if its token is of a kind `op` declares.

        Raises:
            AuthError: no bearer token, or an unknown one.
            ForbiddenError: the token's kind may not call `op`.
        """
        return self._principal(request, *op.tokens)

    def _principal(self, request: Request, *kinds: TokenKind) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("a bearer token is required")
        principal = self.store.authenticate(token.strip(), self.clock())
        if principal.kind not in kinds:
            raise ForbiddenError(f"a {principal.kind.value} token cannot do this")
        return principal

    async def healthz(self, request: Request) -> Response:
        return api.HEALTHZ.reply(api.Health(status="ok"))

    async def openapi(self, request: Request) -> Response:
        if self._document is None:  # generated once, from the operations mounted
            self._document = json.dumps(openapi_document(self.operations)).encode()
        return Response(self._document, media_type="application/json")

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def enroll(self, request: Request) -> Response:
        principal = self.authorize(request, api.ENROLL)
        assert principal.org_id is not None
        token = request.headers["authorization"].partition(" ")[2].strip()
        org_id, now = principal.org_id, self.clock()
        creds = await run_in_threadpool(lambda: self.store.enroll(org_id, now, enroll_token=token))
        made = api.Enrolled(org_id=creds.org_id, endpoint_id=creds.endpoint_id, token=creds.token)
        return api.ENROLL.reply(made, 201)

    async def checkin(self, request: Request) -> Response:
        principal = self.authorize(request, api.CHECKIN)
        assert principal.org_id is not None
        record = self.current_policy()
        # The answer only changes with the policy: render it once per (policy, endpoint),
        # keeping only the current policy's answers.
        version = record.version if record else 0
        if version != self._checkins_version:
            self._checkins, self._checkins_version = {}, version
        cached = self._checkins.get(principal)
        if cached is None:
            body_bytes = self._render_checkin(principal, record)
            etag = '"' + hashlib.blake2b(body_bytes, digest_size=12).hexdigest() + '"'
            cached = (body_bytes, etag)
            if len(self._checkins) > 200_000:
                self._checkins.clear()
            self._checkins[principal] = cached
        body_bytes, etag = cached
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers={"etag": etag})
        return Response(body_bytes, media_type="application/json", headers={"etag": etag})

    def _render_checkin(self, principal: Principal, record: PolicyRecord | None) -> bytes:
        assert principal.org_id is not None
        body = api.Checkin(
            org_id=principal.org_id,
            endpoint_id=principal.endpoint_id,
            policy_version=0,
            mode=Mode.ENFORCE,
            model_version=None,
            shadow_model_version=None,
            tuf_url="/tuf/",
        )
        if record is not None:
            key = (record.version, principal.org_id)
            eff = self._resolved.get(key)
            if eff is None:
                if len(self._resolved) > 100_000:
                    self._resolved.clear()
                eff = self._resolved[key] = resolve_policy(record.document, principal.org_id)
            body = body.model_copy(
                update={
                    "policy_version": eff.policy_version,
                    "mode": eff.mode,
                    "model_version": eff.model_version,
                    "shadow_model_version": eff.shadow_model_version,
                }
            )
        return api.CHECKIN.dump(body)

    def _ingest(self, raw: bytes, principal: Principal) -> api.TelemetryAck:
        batch = parse_columns(raw, max_bytes=self.config.max_telemetry_bytes)
        if batch.org_id != principal.org_id or batch.endpoint_id != principal.endpoint_id:
            raise ForbiddenError("a batch may only carry the sending endpoint's own events")
        # one transaction: ledger, aggregates, vectors and the rollout gate's evidence
        result = self.store.ingest_aggregate(
            aggregate_columns(batch), self.clock(), evidence=endpoint_day_rows(batch)
        )
        if result.duplicate:
            self.metrics.duplicates_dropped.inc()
        else:
            self.metrics.batches_accepted.inc()
            self.metrics.events_ingested.inc(result.events)
            if batch.action:  # only batches carrying actions have the column
                for action, n in Counter(a for a in batch.action if a is not None).items():
                    self.metrics.actions.labels(action).inc(n)
        return api.TelemetryAck(duplicate=result.duplicate, events=result.events)

    async def telemetry(self, request: Request) -> Response:
        try:
            principal = self.authorize(request, api.TELEMETRY)
            media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != api.TELEMETRY.body_media:
                raise UnsupportedMediaError("telemetry must be sent as application/msgpack")
            raw = await _read_body(request, self.config.max_telemetry_bytes)
            body = await run_in_threadpool(self._ingest, raw, principal)
        except BackendError as exc:
            self.metrics.batches_rejected.labels(type(exc).__name__).inc()
            raise
        return api.TELEMETRY.reply(body)

    # --- operator routes -----------------------------------------------------------------

    async def admin_body(self, request: Request, op: Operation, model: type[M]) -> M:
        """Authorize the caller for `op`, then read and validate its JSON body as `model`.

        Raises:
            AuthError, ForbiddenError: see `authorize`.
            PayloadTooLargeError: the body is over `AppConfig.max_json_bytes`.
            BatchInvalidError: the body does not validate.
        """
        self.authorize(request, op)
        limit = max(op.max_body_bytes or 0, self.config.max_json_bytes)
        return op.parse_body(model, await _read_body(request, limit))

    async def list_orgs(self, request: Request) -> Response:
        self.authorize(request, api.LIST_ORGS)
        return api.LIST_ORGS.reply(api.OrgIds(await run_in_threadpool(self.store.org_ids)))

    async def create_org(self, request: Request) -> Response:
        body = await self.admin_body(request, api.CREATE_ORG, api.OrgBody)
        made = await run_in_threadpool(self.store.create_org, body.name, self.clock())
        out = api.OrgMade(org_id=made.org_id, name=made.name, enroll_token=made.enroll_token)
        return api.CREATE_ORG.reply(out, 201)

    async def set_mode(self, request: Request) -> Response:
        body = await self.admin_body(request, api.SET_MODE, api.ModeBody)
        record = await run_in_threadpool(
            lambda: admin.set_mode(
                self.store, self.publish, body.mode, org_id=body.org_id, now=self.clock()
            )
        )
        self._adopt(record)
        return api.SET_MODE.reply(_policy_change(record))

    async def assign_model(self, request: Request) -> Response:
        body = await self.admin_body(request, api.ASSIGN_MODEL, api.ModelBody)
        record = await run_in_threadpool(
            lambda: admin.assign_model(
                self.store,
                self.publish,
                body.model_version,
                shadow_model_version=body.shadow_model_version,
                org_id=body.org_id,
                now=self.clock(),
            )
        )
        self._adopt(record)
        return api.ASSIGN_MODEL.reply(_policy_change(record))

    async def add_entry(self, request: Request) -> Response:
        which = api.ADD_LIST_ENTRY.parse_path(api.ListPath, request.path_params).list
        body = await self.admin_body(request, api.ADD_LIST_ENTRY, api.EntryBody)
        record = await run_in_threadpool(
            lambda: admin.add_list_entry(
                self.store,
                self.publish,
                which,
                body.sha256,
                org_id=body.org_id,
                now=self.clock(),
                reason=body.reason,
                expires_at=body.expires_at,
            )
        )
        self._adopt(record)
        return api.ADD_LIST_ENTRY.reply(_policy_change(record))

    async def remove_entry(self, request: Request) -> Response:
        op = api.REMOVE_LIST_ENTRY
        path = op.parse_path(api.ListEntryPath, request.path_params)
        which, sha = path.list, path.sha256
        self.authorize(request, op)
        org_id = op.parse_query(api.RemoveEntryQuery, request.query_params).org_id
        record = await run_in_threadpool(
            lambda: admin.remove_list_entry(
                self.store, self.publish, which, sha, org_id=org_id, now=self.clock()
            )
        )
        self._adopt(record)
        return api.REMOVE_LIST_ENTRY.reply(_policy_change(record))

    async def get_policy(self, request: Request) -> Response:
        op = api.GET_POLICY
        self.authorize(request, op)
        as_of = op.parse_query(api.PolicyQuery, request.query_params).as_of
        if as_of is None:
            record = self.current_policy()
        else:
            record = await run_in_threadpool(self.store.policy_as_of, as_of)
        if record is None:
            raise NotFoundError("no policy in force at that time")
        out = api.PolicyAt(
            version=record.version,
            changed_at=record.changed_at,
            action=record.action,
            document=record.document,
        )
        return op.reply(out)

    async def get_aggregates(self, request: Request) -> Response:
        op = api.AGGREGATES
        self.authorize(request, op)
        query = op.parse_query(api.AggregateQuery, request.query_params)
        rows = await run_in_threadpool(
            lambda: self.store.aggregates(org_id=query.org_id, day=query.day)
        )
        return op.reply(
            api.AggregateRows(
                [api.AggregateOut.model_validate(r, from_attributes=True) for r in rows]
            )
        )


# --- token lifecycle (operator routes; the rules live in the store) -------------------------


async def _create_enroll_token(request: Request) -> Response:
    routes: _Routes = request.app.state.routes
    body = await routes.admin_body(request, api.CREATE_ENROLL_TOKEN, api.EnrollTokenBody)
    org_id = str(request.path_params["org_id"])
    made = await run_in_threadpool(
        lambda: routes.store.create_enroll_token(
            org_id,
            routes.clock(),
            expires_at=body.expires_at,
            max_uses=body.max_uses,
            rotate=body.rotate,
        )
    )
    out = api.EnrollTokenCreated(
        org_id=made.org_id,
        token_id=made.token_id,
        enroll_token=made.token,
        expires_at=made.expires_at,
        max_uses=made.max_uses,
    )
    return api.CREATE_ENROLL_TOKEN.reply(out, 201)


async def _list_tokens(request: Request) -> Response:
    routes: _Routes = request.app.state.routes
    routes.authorize(request, api.LIST_TOKENS)
    org_id = str(request.path_params["org_id"])
    found = await run_in_threadpool(routes.store.tokens, org_id)
    return api.LIST_TOKENS.reply(
        api.TokenList([api.TokenInfo.model_validate(t, from_attributes=True) for t in found])
    )


async def _revoke_token(request: Request) -> Response:
    routes: _Routes = request.app.state.routes
    routes.authorize(request, api.REVOKE_TOKEN)
    token_id = str(request.path_params["token_id"])
    n = await run_in_threadpool(routes.store.revoke_token, token_id, routes.clock())
    request.app.state.push.revoke_token(token_id)  # other replicas: via their PolicyFeed
    return api.REVOKE_TOKEN.reply(api.Revoked(revoked=n))


async def _revoke_endpoint(request: Request) -> Response:
    routes: _Routes = request.app.state.routes
    routes.authorize(request, api.REVOKE_ENDPOINT_TOKENS)
    endpoint_id = str(request.path_params["endpoint_id"])
    n = await run_in_threadpool(routes.store.revoke_endpoint, endpoint_id, routes.clock())
    request.app.state.push.revoke_endpoint(endpoint_id)  # other replicas: via their PolicyFeed
    return api.REVOKE_ENDPOINT_TOKENS.reply(api.Revoked(revoked=n))


# --- golden labels (analyst route; the pure part is `backend.analysis.labels`) --------------


async def _post_labels(request: Request) -> Response:
    from backend.analysis.labels import import_labels, parse_label_record

    routes: _Routes = request.app.state.routes
    body = await routes.admin_body(request, api.POST_LABELS, api.LabelsBody)
    now = routes.clock()
    changes = [
        parse_label_record(
            item.model_dump(exclude_none=True), default_time=now, where=f"labels.{i}"
        )
        for i, item in enumerate(body.labels)
    ]
    result = await run_in_threadpool(import_labels, routes.store, changes, now=now)
    out = api.LabelsRecorded(
        recorded=result.recorded, samples=result.samples, malicious=result.malicious
    )
    return api.POST_LABELS.reply(out, 201)


class _Static:
    """Static files from `directory`, or 404 while the directory does not exist yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.directory.is_dir():
            await JSONResponse({"error": "NotFound", "detail": "no repository"}, status_code=404)(
                scope, receive, send
            )
            return
        await self.files(scope, receive, send)


class _TargetsGate:
    """`/tuf/targets/`: an org's policy target goes only to that org (docs/adr/0003).

    `policies/<sha256>.default.json` (the fleet-wide default, no org's lists) is open like the
    models; `policies/<sha256>.<org hash>.json` needs an endpoint token of that org or an admin
    token; any other policy file (the combined `policy.json` of older releases) needs an admin
    token. The path is normalised exactly as `StaticFiles` will resolve it.
    """

    def __init__(self, files: _Static, routes: _Routes) -> None:
        self.files, self.routes = files, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self._authorize(Request(scope), self.files.files.get_path(scope))
        await self.files(scope, receive, send)

    def _authorize(self, request: Request, path: str) -> None:
        head, _, name = path.rpartition("/")
        target = f"policies/{name.partition('.')[2]}"  # stored as <sha256>.<name>
        if head == "policies" and target == DEFAULT_POLICY_TARGET:
            return
        if not head.startswith("policies") and not name.endswith("policy.json"):
            return
        principal = self.routes._principal(request, TokenKind.ENDPOINT, TokenKind.ADMIN)
        if principal.kind is TokenKind.ADMIN:
            return
        if head == "policies" and policy_target(principal.org_id) == target:
            return
        raise ForbiddenError("this policy target belongs to another organization")


_LABELS = ("/v1/admin/allowlist", "/v1/admin/blocklist", "/tuf/")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def _route_label(scope: Scope) -> str:
    """The route template a request matched (`/console/orgs/{org_id}`), never the raw path.

    The path is client-chosen: labelling by it let anyone add time series to the unauthenticated
    `/metrics` without bound (`/v1/admin/AAA`, `/etc/passwd`, ...) and printed organizations'
    ids there (`/console/orgs/org_...`). A request no route matched is `other`; inside a mount
    that matched nothing further (static files, the TUF repository) it is the mount's path.
    """
    path = str(scope["path"])
    for prefix in _LABELS:
        if path.startswith(prefix):
            return prefix.rstrip("/")
    route = scope.get("route")
    root = str(scope.get("root_path", ""))
    if isinstance(route, Mount):
        return root or "other"
    if isinstance(route, Route):
        return root + route.path
    return "other"


class _MetricsMiddleware:
    """Counts requests and observes latency per route, status and method."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = monotonic_s()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            key = (scope["path"], scope["method"], status[0])
            children = self._children.get(key)
            if children is None:  # `labels()` takes a lock and builds a key: once per triple
                label = _route_label(scope)
                method = scope["method"] if scope["method"] in _METHODS else "other"
                children = (
                    self.metrics.requests.labels(label, method, str(status[0])),
                    self.metrics.latency.labels(label),
                )
                if len(self._children) < 10_000:  # paths are client-chosen: bound the cache
                    self._children[key] = children
            children[0].inc()
            children[1].observe(monotonic_s() - started)


def create_app(
    store: AggregateStore,
    repo_dir: str | Path | None,
    *,
    publish: admin.Publish | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
    metrics: Metrics | None = None,
    config: AppConfig | None = None,
    rollout_tick_s: float | None = None,
    push: PushConfig | None = None,
) -> Starlette:
    """Build the ASGI app. `publish` defaults to signing into the TUF repository at `repo_dir`.

    `rollout_tick_s` (off by default) runs the rollout controller's tick every that many
    seconds for as long as the app serves (`backend.rollout.ticker`), with time from `clock`.
    `push` bounds the push channels (`backend.server.push.PushConfig`; its defaults when None).
    """
    if publish is None:
        if repo_dir is None:
            raise ValueError("give repo_dir or publish")
        publish = admin.repository_publisher(repo_dir)
    metrics = metrics or Metrics()
    metrics.ingest_waiting.set_function(store.ingest_waiting)
    from backend.rollout.api import ROUTES as rollout_routes  # mounted before /v1/admin/{list}

    r = _Routes(store, publish, clock, metrics, config or AppConfig())
    hub = PushHub(push or PushConfig(), metrics.registry)
    served = None if repo_dir is None else functools.partial(served_policy_version, repo_dir)
    r.feed = feed = PolicyFeed(
        store,
        on_change=hub.on_policy,
        on_revoke=hub.on_revoke,
        served_version=served,
        publish_pending=lambda: admin.publish_pending(store, publish, now=clock()),
    )

    def push_org(request: Request) -> Holder:
        principal = r.authorize(request, api.PUSH)
        assert principal.org_id is not None
        token = request.headers["authorization"].partition(" ")[2].strip()
        return principal.org_id, hash_token(token), principal.endpoint_id

    push_route = PushRoute(hub, feed, push_org, _on_backend_error)
    # mounted in this order: the rollout routes before the `/v1/admin/{list}` catch-all
    handlers: list[tuple[Operation, Any]] = [
        (api.HEALTHZ, r.healthz),
        (api.OPENAPI, r.openapi),
        (api.METRICS, r.metrics_page),
        (api.ENROLL, r.enroll),
        (api.CHECKIN, r.checkin),
        (api.TELEMETRY, r.telemetry),
        (api.PUSH, push_route),
        (api.LIST_ORGS, r.list_orgs),
        (api.CREATE_ORG, r.create_org),
        (api.SET_MODE, r.set_mode),
        (api.ASSIGN_MODEL, r.assign_model),
        (api.GET_POLICY, r.get_policy),
        (api.AGGREGATES, r.get_aggregates),
        (api.POST_LABELS, _post_labels),
        (api.CREATE_ENROLL_TOKEN, _create_enroll_token),
        (api.LIST_TOKENS, _list_tokens),
        (api.REVOKE_TOKEN, _revoke_token),
        (api.REVOKE_ENDPOINT_TOKENS, _revoke_endpoint),
        *rollout_routes,
        (api.ADD_LIST_ENTRY, r.add_entry),
        (api.REMOVE_LIST_ENTRY, r.remove_entry),
    ]
    r.operations = tuple(op for op, _ in handlers)
    # one route per path: a wrong method is 405 naming the path's methods (backend.server._routing)
    routes: list[Route | Mount] = [*path_routes(handlers)]
    if repo_dir is not None:
        root = Path(repo_dir)
        routes += [
            Mount("/tuf/metadata", app=_Static(root / "metadata")),
            Mount("/tuf/targets", app=_TargetsGate(_Static(root / "targets"), r)),
        ]
    from backend.console import create_console  # the operator console (backend/console/)

    routes.append(Mount("/console", app=create_console(store, publish, clock)))
    # a person who opens the server's address in a browser lands on the console, not a JSON 404;
    # not an API operation, so not in the OpenAPI document
    routes.append(Route("/", _to_console, methods=["GET"], include_in_schema=False))
    lifespan = None
    if rollout_tick_s is not None:  # both dialects keep the rollout tables (AggregateStore)
        from backend.rollout.ticker import tick_lifespan

        lifespan = tick_lifespan(store, publish, clock, rollout_tick_s)
    lifespan = feed_lifespan(feed, lifespan)
    app = Starlette(
        routes=routes,
        exception_handlers={
            BackendError: _on_backend_error,
            404: not_found,
            405: method_not_allowed,
        },
        lifespan=lifespan,
    )
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.state.store = store
    app.state.metrics = metrics
    app.state.routes = r
    app.state.push = hub
    return app


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def serve(
    store: AggregateStore,
    repo_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    rollout_tick_s: float | None = 60.0,
    push: PushConfig | None = None,
) -> None:
    """Serve the app on `store` with uvicorn until interrupted, then close it (`backend serve`).

    The caller opens the store (`backend.store.open_store`), so a store that cannot be opened
    is the CLI's one-line error before anything starts.
    `rollout_tick_s`: how often the rollout controller decides on its own (None: never).
    `push`: the push channels' bound and heartbeat (`backend.server.push.PushConfig`).
    """
    import uvicorn

    try:  # a change killed between its COMMIT and its publication is published now
        admin.publish_pending(store, admin.repository_publisher(repo_dir), now=utc_now())
    except PublishError as exc:  # serve anyway: the next change publishes it too
        print(f"warning: {exc}", file=sys.stderr)
    # Ingest decodes and folds in threadpool threads; the event loop answering check-ins needs
    # the GIL back between them. The default 5 ms switch interval let one ingest request hold
    # every check-in waiting; 1 ms keeps the loop's wait short (benchmarks/README.md, Ingest).
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    # Push channels are long-lived heap: frozen, full collections stop walking them (a 0.5 s
    # pause every ~30 s at 10,000 channels; backend.server._gc).
    freezer = start_freezer()
    try:
        uvicorn.run(
            create_app(store, repo_dir, rollout_tick_s=rollout_tick_s, push=push),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,  # push channels never end on their own: cut them
        )
    finally:
        freezer.set()
        store.close()
