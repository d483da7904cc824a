"""The `/v1/admin/rollout...` routes: their declarations (`OPERATIONS`) and handlers.

Kept beside `backend.server.app` rather than inside it so the rollout controller's HTTP surface
lives with its service (`backend.rollout.service`). `backend.server.app` mounts `ROUTES` before
its `/v1/admin/{list}` catch-all; `backend.server._openapi` documents them from the same
`Operation`s (their request and response models) the handlers parse and answer with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    RootModel,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from agent.policy import Ring
from backend import admin
from backend.errors import BatchInvalidError
from backend.rollout import service as svc
from backend.rollout.core import Rollout, RolloutAction, RolloutConfig, RolloutState
from backend.rollout.rings import check_ring_name
from backend.server._operation import Integral, Operation, Reply, Time
from backend.store import AggregateStore, PolicyRecord, Principal, TokenKind

__all__ = [
    "OPERATIONS",
    "ROUTES",
    "ArmCountsOut",
    "Cohort",
    "DecisionLog",
    "DecisionOut",
    "DelayedRing",
    "NoRollout",
    "PromptRing",
    "RingBody",
    "RingOrgs",
    "RingSet",
    "RolloutOut",
    "RolloutStatus",
    "RolloutStatusOut",
    "StartBody",
    "TickOut",
]


_MAX_VERSION = 2**31 - 1  # stored as SQLite/Postgres integers: bigger values are refused (422)
_MAX_SECONDS = 366 * 86_400.0
_ADMIN = (TokenKind.ADMIN,)
_MIN_TICK_S = 1e-3  # a tick is a timedelta: far below a microsecond it is zero, and refused


def _increasing(stages: list[float]) -> list[float]:
    """The stages in increasing order (the schema states them unique; order is not a rule)."""
    if len(set(stages)) != len(stages):
        raise ValueError("stages must be distinct")
    return sorted(stages)


_STAGES = Annotated[
    list[Annotated[float, Field(gt=0.0, le=100.0)]],
    AfterValidator(_increasing),
    Field(
        default=[1.0, 5.0, 25.0, 100.0],
        min_length=1,
        max_length=20,
        json_schema_extra={"uniqueItems": True},
        description="distinct percentages, taken in increasing order",
    ),
]


class StartBody(BaseModel):
    """`POST /v1/admin/rollout`: the target version and the gate's settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    to_version: Annotated[int, Field(ge=1, le=_MAX_VERSION), Integral]
    stages: _STAGES
    org_id: str | None = None
    hold_s: float = Field(default=86_400.0, ge=0, le=_MAX_SECONDS)
    max_fp_increase: float = Field(default=0.25, ge=0.0, le=10.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    min_endpoint_days: float = Field(default=30.0, ge=1.0, le=1e12)
    rollback: bool = True
    tick_s: float = Field(default=3600.0, ge=_MIN_TICK_S, le=_MAX_SECONDS)
    rings: bool = False
    inconclusive_looks: Annotated[int, Field(ge=0, le=100), Integral] = 0


def _no_wait(delay_h: float) -> float:
    if delay_h != 0:
        raise ValueError("only the delayed ring waits (backend.admin.set_ring)")
    return delay_h


class DelayedRing(BaseModel):
    """The `delayed` ring: it waits `delay_h` hours after `broad` completed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ring: Literal[Ring.DELAYED]
    delay_h: float = Field(default=0.0, ge=0.0, le=24.0 * 366)


class PromptRing(BaseModel):
    """Any other ring: only the delayed ring waits (`backend.admin.set_ring`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ring: Literal[Ring.PREVIEW, Ring.STAGED, Ring.BROAD]
    delay_h: Annotated[
        float,
        AfterValidator(_no_wait),
        WithJsonSchema({"type": "number", "minimum": 0, "maximum": 0}),
    ] = Field(default=0.0, description="only the delayed ring waits")


class RingBody(RootModel[PromptRing | DelayedRing]):
    """`PUT /v1/admin/orgs/{org_id}/ring`: a ring, and for `delayed` its wait.

    A plain union (`anyOf`): the branches' `ring` values do not overlap, and schemathesis'
    negative data for a discriminated `oneOf` produced bodies that are valid ones.

    A refused body is refused in the words of the branch its `ring` names: an unknown ring
    lists every ring (`backend.rollout.rings.check_ring_name`), a known one gives that
    branch's first error (the union's first error was the other branch's list of rings).
    """

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_in_the_named_branch(
        cls, data: Any, handler: ModelWrapValidatorHandler[RingBody]
    ) -> RingBody:
        try:
            return handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict) or "ring" not in data:
                raise
            ring = check_ring_name(data["ring"])  # raises, listing every ring, when unknown
            branch = (DelayedRing if ring is Ring.DELAYED else PromptRing).__name__
            for err in exc.errors():
                if err["loc"][:1] == (branch,):
                    where = ".".join(str(p) for p in err["loc"][1:]) or "body"
                    raise BatchInvalidError(f"{where}: {err['msg']}") from None
            raise


class _Empty(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RolloutOut(_Out):
    """A rollout after an operator's action."""

    rollout_id: int
    state: RolloutState
    to_version: int
    from_version: int | None
    org_id: str | None
    stage_index: int
    percent: float
    ring: Ring | None


class ArmCountsOut(_Out):
    """One arm's exposure and event counts (`backend.rollout.core.ArmCounts`)."""

    endpoints: int = 0
    endpoint_days: float = 0.0
    alerts: int = 0
    self_test_failures: int = 0
    model_errors: int = 0
    breaker_trips: int = 0


class DecisionOut(_Out):
    """One logged decision or operator action, with the figures it was taken on."""

    at: Time
    action: RolloutAction
    stage_index: int
    percent: float
    reason: str
    canary: ArmCountsOut = ArmCountsOut()
    control: ArmCountsOut = ArmCountsOut()
    tests: list[dict[str, Any]] = Field(default=[], description="rate tests (RateTest.to_dict)")
    halted_orgs: list[str] = []
    ring: str | None = None
    next_decision_at: Time | None = None
    policy_version: int | None


class DecisionLog(RootModel[list[DecisionOut]]):
    """The latest rollout's decisions, oldest first (empty before the first rollout)."""


class RingOrgs(_Out):
    """The orgs of one ring."""

    ring: Ring
    orgs: list[str]


class Cohort(_Out):
    """Cohort sizes at the last evaluation."""

    canary_endpoints: int
    control_endpoints: int


class RolloutStatus(RolloutOut):
    """The latest rollout: state, stage, cohorts, last decision, next decision time."""

    stages: list[float]
    rings: list[RingOrgs]
    broad_done_at: Time | None
    stage_started_at: Time | None
    hold_s: float
    max_fp_increase: float
    looks: int
    reason: str
    cohort: Cohort
    last_decision: DecisionOut | None
    next_decision_at: Time | None
    decisions: int
    as_of: Time


class NoRollout(_Out):
    """Before the first rollout."""

    rollout: None


class RolloutStatusOut(RootModel[RolloutStatus | NoRollout]):
    """The latest rollout, or `{"rollout": null}`."""


class TickOut(_Out):
    """What a tick decided (`action` null: nothing to decide)."""

    action: RolloutAction | None
    reason: str | None = None
    percent: float | None = None
    halted_orgs: list[str] = []


class RingSet(_Out):
    """An org's ring, set."""

    policy_version: int
    org_id: str
    ring: Ring
    delay_h: float


_ACT = (404, 409)
STATUS = Operation(
    "GET", "/v1/admin/rollout", "getRollout", "The latest rollout's status.", _ADMIN,
    {200: Reply("rollout status", RolloutStatusOut)},
)  # fmt: skip
START = Operation(
    "POST", "/v1/admin/rollout", "startRollout", "Start a staged rollout.", _ADMIN,
    {201: Reply("rollout started", RolloutOut)}, errors=(*_ACT, 413, 422, 503), body=StartBody,
)  # fmt: skip
DECISIONS = Operation(
    "GET", "/v1/admin/rollout/decisions", "listRolloutDecisions",
    "The latest rollout's decision log, oldest first.", _ADMIN,
    {200: Reply("decision log (a list, empty before the first rollout)", DecisionLog)},
)  # fmt: skip


def _action(path: str, op_id: str, summary: str, answer: type[BaseModel], *more: int) -> Operation:
    return Operation(
        "POST", path, op_id, summary, _ADMIN, {200: Reply(summary, answer)},
        errors=(*_ACT, 413, 422, *more), body=_Empty, body_required=False,
    )  # fmt: skip


PAUSE = _action("/v1/admin/rollout/pause", "pauseRollout", "Pause the rollout.", RolloutOut)
RESUME = _action("/v1/admin/rollout/resume", "resumeRollout", "Resume it.", RolloutOut)
ABORT = _action("/v1/admin/rollout/abort", "abortRollout", "Abort it.", RolloutOut, 503)
TICK = _action("/v1/admin/rollout/tick", "tickRollout", "Decide now.", TickOut, 503)
SET_RING = Operation(
    "PUT", "/v1/admin/orgs/{org_id}/ring", "setOrgRing", "Put an org in an update ring.",
    _ADMIN, {200: Reply("ring set", RingSet)}, errors=(404, 409, 413, 422, 503), body=RingBody,
)  # fmt: skip


def _rollout_out(r: Rollout) -> RolloutOut:
    return RolloutOut(
        rollout_id=r.rollout_id, state=r.state, to_version=r.to_version,
        from_version=r.from_version, org_id=r.org_id, stage_index=r.stage_index,
        percent=r.percent, ring=r.ring,
    )  # fmt: skip


M = TypeVar("M", bound=BaseModel)


class _AppRoutes(Protocol):
    """What these handlers use of the app's request state (`backend.server.app`'s `app.state`).

    `app.state.routes`, stated here rather than imported, so `backend.server.app`, which mounts
    `ROUTES`, and this module do not depend on each other.
    """

    store: AggregateStore
    publish: admin.Publish
    clock: Callable[[], dt.datetime]

    def authorize(self, request: Request, op: Operation) -> Principal: ...

    async def admin_body(self, request: Request, op: Operation, model: type[M]) -> M: ...

    def _adopt(self, record: PolicyRecord) -> None: ...


def _routes(request: Request) -> _AppRoutes:
    routes: _AppRoutes = request.app.state.routes
    return routes


async def _status(request: Request) -> Response:
    r = _routes(request)
    r.authorize(request, STATUS)
    found = await run_in_threadpool(svc.rollout_status, r.store, now=r.clock())
    return STATUS.reply(RolloutStatusOut.model_validate(found))


async def _decisions(request: Request) -> Response:
    r = _routes(request)
    r.authorize(request, DECISIONS)
    log = await run_in_threadpool(svc.decision_log, r.store)
    return DECISIONS.reply(DecisionLog.model_validate(log))


async def _start(request: Request) -> Response:
    r = _routes(request)
    body = await r.admin_body(request, START, StartBody)
    try:
        config = RolloutConfig(
            stages=tuple(body.stages),
            hold=dt.timedelta(seconds=body.hold_s),
            max_fp_increase=body.max_fp_increase,
            alpha=body.alpha,
            min_endpoint_days=body.min_endpoint_days,
            min_org_endpoint_days=max(1.0, body.min_endpoint_days / 3),
            rollback=body.rollback,
            tick=dt.timedelta(seconds=body.tick_s),
            inconclusive_looks=body.inconclusive_looks,
        )
    except ValueError as exc:
        raise BatchInvalidError(str(exc)) from None
    out = await run_in_threadpool(
        lambda: svc.start_rollout(
            r.store,
            r.publish,
            body.to_version,
            now=r.clock(),
            config=config,
            org_id=body.org_id,
            rings=body.rings,
        )  # fmt: skip
    )
    return START.reply(_rollout_out(out), 201)


async def _set_ring(request: Request) -> Response:
    r = _routes(request)
    body = (await r.admin_body(request, SET_RING, RingBody)).root
    org_id = str(request.path_params["org_id"])
    record = await run_in_threadpool(
        lambda: admin.set_ring(
            r.store, r.publish, body.ring, org_id=org_id, delay_h=body.delay_h, now=r.clock()
        )
    )
    r._adopt(record)
    return SET_RING.reply(
        RingSet(policy_version=record.version, org_id=org_id, ring=body.ring, delay_h=body.delay_h)
    )


async def _pause(request: Request) -> Response:
    r = _routes(request)
    await r.admin_body(request, PAUSE, _Empty)
    out = await run_in_threadpool(lambda: svc.pause_rollout(r.store, now=r.clock()))
    return PAUSE.reply(_rollout_out(out))


async def _resume(request: Request) -> Response:
    r = _routes(request)
    await r.admin_body(request, RESUME, _Empty)
    out = await run_in_threadpool(lambda: svc.resume_rollout(r.store, now=r.clock()))
    return RESUME.reply(_rollout_out(out))


async def _abort(request: Request) -> Response:
    r = _routes(request)
    await r.admin_body(request, ABORT, _Empty)
    out = await run_in_threadpool(lambda: svc.abort_rollout(r.store, r.publish, now=r.clock()))
    return ABORT.reply(_rollout_out(out))


async def _tick(request: Request) -> Response:
    r = _routes(request)
    await r.admin_body(request, TICK, _Empty)
    d = await run_in_threadpool(lambda: svc.tick_rollout(r.store, r.publish, now=r.clock()))
    if d is None:
        return TICK.reply(TickOut(action=None))
    return TICK.reply(
        TickOut(action=d.action, reason=d.reason, percent=d.percent,
                halted_orgs=list(d.halted_orgs))
    )  # fmt: skip


ROUTES: tuple[tuple[Operation, Callable[[Request], Awaitable[Response]]], ...] = (
    (STATUS, _status),
    (START, _start),
    (DECISIONS, _decisions),
    (PAUSE, _pause),
    (RESUME, _resume),
    (ABORT, _abort),
    (TICK, _tick),
    (SET_RING, _set_ring),
)
OPERATIONS: tuple[Operation, ...] = tuple(op for op, _ in ROUTES)
