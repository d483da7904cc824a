"""The route table mounted as Starlette routes: one route per path, 405 and 404 as documented.

Starlette answers a wrong method from the *first* route whose path matches, so with one route
per operation `DELETE /v1/admin/orgs` named only `GET` in its `Allow` header (the `POST` route
came later), and the `/v1/admin/{list}` catch-all took `POST /v1/admin/mode` for a list called
"mode" and answered 404. Here every path is one `PathRoute` carrying all its operations'
methods (its 405 names exactly the methods the OpenAPI document gives the path), and a path
whose parameters do not validate against the operations' `path_params` model (an unknown list)
does not match at all, so the router goes on to the path that does (405) or answers 404.

The 404 and 405 answers are `ErrorBody` JSON like every other error, and a 404 says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.errors import BatchInvalidError
from backend.server._operation import JSON, ErrorBody, Operation

__all__ = ["PathRoute", "method_not_allowed", "not_found", "path_routes"]

_MISMATCH = "fleetward.path_mismatch"  # scope key: why a path's parameters named nothing


def _asgi(handler: Callable[..., Any]) -> ASGIApp:
    """A `func(request) -> response` handler as ASGI; an ASGI object as it is."""
    route = Route("/", handler)
    return route.app


class PathRoute(Route):
    """One path and every operation declared on it, dispatched by method.

    `allowed`: the declared methods (sorted; `HEAD` answers wherever `GET` does, as Starlette's
    own routes do). A request whose path parameters fail the path's `path_params` model does
    not match this route.
    """

    def __init__(self, path: str, operations: Iterable[tuple[Operation, Callable[..., Any]]]):
        ops = list(operations)
        models = {op.path_params for op, _ in ops}
        if len(models) != 1 or any(op.path != path for op, _ in ops):
            raise ValueError(f"{path}: operations disagree on the path or its parameters")
        self.path_model: type[BaseModel] | None = models.pop()
        self.handlers: dict[str, ASGIApp] = {op.method: _asgi(h) for op, h in ops}
        if "GET" in self.handlers:
            self.handlers.setdefault("HEAD", self.handlers["GET"])
        self.allowed = ", ".join(sorted(op.method for op, _ in ops))
        super().__init__(path, self._dispatch, methods=list(self.handlers))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, refused (`Match.NONE`) when the path parameters do not validate."""
        match, child = super().matches(scope)
        if match is Match.NONE or self.path_model is None:
            return match, child
        try:
            self.path_model.model_validate(child["path_params"])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            scope.setdefault(_MISMATCH, f"{where}: {first['msg']}")
            return Match.NONE, {}
        except BatchInvalidError as exc:  # a `backend.validation` rule (a malformed sha256)
            scope.setdefault(_MISMATCH, str(exc))
            return Match.NONE, {}
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The method's handler, or 405 naming the path's methods in `Allow`."""
        if scope["method"] not in self.handlers:
            raise HTTPException(status_code=405, headers={"Allow": self.allowed})
        await self.handlers[scope["method"]](scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handlers[scope["method"]](scope, receive, send)  # pragma: no cover


def path_routes(handlers: Iterable[tuple[Operation, Callable[..., Any]]]) -> list[PathRoute]:
    """One `PathRoute` per path, in the order each path first appears in `handlers`."""
    by_path: dict[str, list[tuple[Operation, Callable[..., Any]]]] = {}
    for op, handler in handlers:
        by_path.setdefault(op.path, []).append((op, handler))
    return [PathRoute(path, ops) for path, ops in by_path.items()]


def _error(status: int, error: str, detail: str, headers: Mapping[str, str] | None) -> Response:
    body = ErrorBody(error=error, detail=detail).model_dump_json(exclude_none=True)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def not_found(request: Request, exc: Exception) -> Response:
    """404 as `ErrorBody`: the path parameter that named nothing, or no such path."""
    assert isinstance(exc, HTTPException)
    why = request.scope.get(_MISMATCH)
    if exc.detail and exc.detail != "Not Found":
        why = str(exc.detail)
    detail = why or f"no such path: {request.url.path}"
    return _error(404, "NotFoundError", detail, exc.headers)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 as `ErrorBody`, its `Allow` header kept."""
    assert isinstance(exc, HTTPException)
    allow = (exc.headers or {}).get("Allow", "")
    detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
    return _error(405, "MethodNotAllowed", detail, exc.headers)
