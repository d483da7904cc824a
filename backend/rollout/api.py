"""The `/v1/admin/rollout...` routes and their OpenAPI entries (operator token required).

Kept beside `backend.app` rather than inside it so the rollout controller's HTTP surface lives
with its service (`backend.rollout.service`); `backend.app` mounts `ROUTES` before its
`/v1/admin/{list}` catch-all, and `backend._openapi` merges `openapi_paths()`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.policy import Ring
from backend import admin
from backend.rollout import service as svc
from backend.rollout.core import Rollout, RolloutConfig

if TYPE_CHECKING:
    from backend.app import _Routes

__all__ = ["ROUTES", "openapi_paths"]


_MAX_VERSION = 2**31 - 1  # stored as SQLite/Postgres integers: bigger values are refused (422)
_MAX_SECONDS = 366 * 86_400.0


class _StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int = Field(ge=1, le=_MAX_VERSION)
    stages: list[Annotated[float, Field(gt=0.0, le=100.0)]] = Field(
        default=[1.0, 5.0, 25.0, 100.0], min_length=1, max_length=20
    )
    org_id: str | None = None
    hold_s: float = Field(default=86_400.0, ge=0, le=_MAX_SECONDS)
    max_fp_increase: float = Field(default=0.25, ge=0.0, le=10.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    min_endpoint_days: float = Field(default=30.0, ge=1.0, le=1e12)
    rollback: bool = True
    tick_s: float = Field(default=3600.0, gt=0, le=_MAX_SECONDS)
    rings: bool = False
    inconclusive_looks: int = Field(default=0, ge=0, le=100)


class _RingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ring: Ring
    delay_h: float = Field(default=0.0, ge=0.0, le=24.0 * 366)


class _Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _rollout_json(r: Rollout) -> dict[str, Any]:
    return {
        "rollout_id": r.rollout_id,
        "state": r.state.value,
        "to_version": r.to_version,
        "from_version": r.from_version,
        "org_id": r.org_id,
        "stage_index": r.stage_index,
        "percent": r.percent,
        "ring": r.ring.value if r.ring else None,
    }


def _routes(request: Request) -> _Routes:
    routes: _Routes = request.app.state.routes
    return routes


async def _empty_body(request: Request) -> _Routes:
    r = _routes(request)
    if await request.body():
        await r._admin_body(request, _Empty)
    else:
        r._principal(request, *_admin_kinds())
    return r


def _admin_kinds() -> tuple[Any, ...]:
    from backend.store import TokenKind

    return (TokenKind.ADMIN,)


async def _status(request: Request) -> Response:
    r = _routes(request)
    r._principal(request, *_admin_kinds())
    return JSONResponse(await run_in_threadpool(svc.rollout_status, r.store, now=r.clock()))


async def _decisions(request: Request) -> Response:
    r = _routes(request)
    r._principal(request, *_admin_kinds())
    return JSONResponse(await run_in_threadpool(svc.decision_log, r.store))


async def _start(request: Request) -> Response:
    r = _routes(request)
    body = await r._admin_body(request, _StartBody)
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
        return JSONResponse({"error": "ValidationError", "detail": str(exc)}, status_code=422)
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
    return JSONResponse(_rollout_json(out), status_code=201)


async def _set_ring(request: Request) -> Response:
    r = _routes(request)
    body = await r._admin_body(request, _RingBody)
    org_id = request.path_params["org_id"]
    record = await run_in_threadpool(
        lambda: admin.set_ring(
            r.store, r.publish, body.ring, org_id=org_id, delay_h=body.delay_h, now=r.clock()
        )
    )
    r._adopt(record)
    return JSONResponse(
        {"policy_version": record.version, "org_id": org_id, "ring": body.ring.value,
         "delay_h": body.delay_h}
    )  # fmt: skip


async def _pause(request: Request) -> Response:
    r = await _empty_body(request)
    out = await run_in_threadpool(lambda: svc.pause_rollout(r.store, now=r.clock()))
    return JSONResponse(_rollout_json(out))


async def _resume(request: Request) -> Response:
    r = await _empty_body(request)
    out = await run_in_threadpool(lambda: svc.resume_rollout(r.store, now=r.clock()))
    return JSONResponse(_rollout_json(out))


async def _abort(request: Request) -> Response:
    r = await _empty_body(request)
    out = await run_in_threadpool(lambda: svc.abort_rollout(r.store, r.publish, now=r.clock()))
    return JSONResponse(_rollout_json(out))


async def _tick(request: Request) -> Response:
    r = await _empty_body(request)
    d = await run_in_threadpool(lambda: svc.tick_rollout(r.store, r.publish, now=r.clock()))
    if d is None:
        return JSONResponse({"action": None})
    return JSONResponse(
        {"action": d.action.value, "reason": d.reason, "percent": d.percent,
         "halted_orgs": list(d.halted_orgs)}
    )  # fmt: skip


ROUTES: list[Route] = [
    Route("/v1/admin/rollout", _status, methods=["GET"]),
    Route("/v1/admin/rollout", _start, methods=["POST"]),
    Route("/v1/admin/rollout/decisions", _decisions, methods=["GET"]),
    Route("/v1/admin/rollout/pause", _pause, methods=["POST"]),
    Route("/v1/admin/rollout/resume", _resume, methods=["POST"]),
    Route("/v1/admin/rollout/abort", _abort, methods=["POST"]),
    Route("/v1/admin/rollout/tick", _tick, methods=["POST"]),
    Route("/v1/admin/orgs/{org_id}/ring", _set_ring, methods=["PUT"]),
]

_ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]
_OBJ = {"type": "object"}


def _op(op_id: str, ok: str, codes: tuple[int, ...], body: dict[str, Any] | None = None,
        status: str = "200", answer: dict[str, Any] = _OBJ) -> dict[str, Any]:  # fmt: skip
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    out: dict[str, Any] = {
        "operationId": op_id,
        "security": _ADMIN,
        "responses": {
            status: {"description": ok, "content": {"application/json": {"schema": answer}}},
            **{str(c): {"description": "error", "content": err} for c in codes},
        },
    }
    if body is not None:
        out["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": body}},
        }  # fmt: skip
    return out


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path items of the rollout routes."""
    start = {
        "type": "object",
        "required": ["to_version"],
        "additionalProperties": False,
        "properties": {
            "to_version": {"type": "integer", "minimum": 1, "maximum": _MAX_VERSION},
            "stages": {
                "type": "array",
                "items": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 100},
                "minItems": 1,
                "maxItems": 20,
            },
            "org_id": {"type": "string", "nullable": True},
            "hold_s": {"type": "number", "minimum": 0, "maximum": _MAX_SECONDS},
            "max_fp_increase": {"type": "number", "minimum": 0, "maximum": 10},
            "alpha": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 0.5,
                "exclusiveMaximum": True,
            },
            "min_endpoint_days": {"type": "number", "minimum": 1, "maximum": 1e12},
            "rollback": {"type": "boolean"},
            "rings": {"type": "boolean"},
            "inconclusive_looks": {"type": "integer", "minimum": 0, "maximum": 100},
            "tick_s": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": _MAX_SECONDS,
            },
        },
    }
    ring = {
        "type": "object",
        "required": ["ring"],
        "additionalProperties": False,
        "properties": {
            "ring": {"type": "string", "enum": [r.value for r in Ring]},
            "delay_h": {"type": "number", "minimum": 0, "maximum": 24.0 * 366},
        },
    }
    act = (401, 403, 404, 409)
    return {
        "/v1/admin/rollout": {
            "get": _op("getRollout", "rollout status", (401, 403)),
            "post": _op(
                "startRollout", "rollout started", (*act, 413, 422, 503), start, status="201"
            ),
        },
        "/v1/admin/rollout/decisions": {
            "get": _op(
                "listRolloutDecisions",
                "decision log, oldest first (a list, empty before the first rollout)",
                (401, 403),
                answer={"type": "array", "items": _OBJ},
            ),
        },
        "/v1/admin/rollout/pause": {"post": _op("pauseRollout", "paused", act)},
        "/v1/admin/rollout/resume": {"post": _op("resumeRollout", "resumed", act)},
        "/v1/admin/rollout/abort": {"post": _op("abortRollout", "aborted", (*act, 503))},
        "/v1/admin/rollout/tick": {"post": _op("tickRollout", "decision taken", (*act, 503))},
        "/v1/admin/orgs/{org_id}/ring": {
            "parameters": [
                {"name": "org_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "put": _op("setOrgRing", "ring set", (401, 403, 404, 409, 413, 422, 503), ring),
        },
    }
