"""One HTTP operation declared once: route, token kinds, request and response models.

An `Operation` is a row of the route table (`backend.server.api.OPERATIONS`, `backend.rollout.api`).
`backend.server.app` mounts it (`route`), its handler parses with it (`parse_body`, `parse_query`,
`parse_path`) and answers through it (`reply`, `dump`), and `backend.server._openapi` generates the
OpenAPI document from the same rows. A handler that parses a model other than the one declared,
or answers with a model (or status) the operation does not declare, fails loudly (`TypeError`,
a programming error) instead of drifting from the document.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from starlette.responses import Response
from starlette.routing import Route

from backend.errors import BatchInvalidError, NotFoundError
from backend.store import TokenKind

__all__ = ["JSON", "ErrorBody", "Integral", "Operation", "Reply", "Time"]

JSON = "application/json"
M = TypeVar("M", bound=BaseModel)

Time = Annotated[
    dt.datetime,
    PlainSerializer(dt.datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A time in an answer, as `isoformat()` writes it (`+00:00`, the form the API always used)."""


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integral = BeforeValidator(_integral)
"""An integer of a strict request body as JSON Schema has it: `3.0` is one, `"3"` is not.

Put it after the bounds, `Annotated[int, Field(ge=1), Integral]`, so the schema states them
as `minimum`/`maximum` (before them, pydantic writes its own `ge` keys).
"""


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of a domain error (`backend.server.app`'s exception-handler table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: str
    detail: str
    current_version: int | None = None  # on a policy conflict (409): the version now in force


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented answer: a pydantic `model` for JSON, or a plain `schema` for other media.

    Neither: an answer without a body (304).
    """

    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON
    schema: Mapping[str, Any] | None = None


def _where(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


@dataclass(frozen=True, slots=True)
class Operation:
    """A method and path, who may call it, what it takes and what it answers.

    `tokens`: the bearer token kinds allowed (empty: no token needed; 401 and 403 are then not
    documented). `errors`: the statuses of domain errors it may answer besides 401/403, each
    an `ErrorBody`. `body` is parsed from JSON unless `body_media` says otherwise (the msgpack
    telemetry batch: the model documents the decoded document, the route decodes the bytes).
    """

    method: str
    path: str
    operation_id: str
    summary: str
    tokens: tuple[TokenKind, ...]
    replies: Mapping[int, Reply]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_media: str = JSON
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    error_headers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    max_body_bytes: int | None = None  # None: the app's `AppConfig.max_json_bytes`

    def route(self, endpoint: Callable[..., Any]) -> Route:
        """The Starlette route of this operation, answered by `endpoint`."""
        return Route(self.path, endpoint, methods=[self.method])

    def _expect(self, model: type[BaseModel], declared: type[BaseModel] | None, what: str) -> None:
        if model is not declared:
            raise TypeError(
                f"{self.operation_id} declares {what} {getattr(declared, '__name__', None)}, "
                f"not {model.__name__}"
            )

    def parse_body(self, model: type[M], raw: bytes) -> M:
        """Validate a JSON body as the declared `body` model (an empty optional body is `{}`).

        Raises:
            BatchInvalidError: it does not validate; the message names the first bad field.
        """
        self._expect(model, self.body, "body")
        if self.body_media != JSON:
            raise TypeError(f"{self.operation_id} takes {self.body_media}, not JSON")
        if not raw and not self.body_required:
            raw = b"{}"
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise BatchInvalidError(_where(exc)) from None

    def parse_query(self, model: type[M], params: Mapping[str, str]) -> M:
        """Validate the query parameters as the declared `query` model.

        Raises:
            BatchInvalidError: a parameter does not validate.
        """
        self._expect(model, self.query, "query")
        try:
            return model.model_validate(dict(params))
        except ValidationError as exc:
            raise BatchInvalidError(_where(exc)) from None

    def parse_path(self, model: type[M], params: Mapping[str, Any]) -> M:
        """Validate the path parameters as the declared `path_params` model.

        Raises:
            NotFoundError: a parameter names nothing that exists (an unknown list, say).
        """
        self._expect(model, self.path_params, "path parameters")
        try:
            return model.model_validate(dict(params))
        except ValidationError as exc:
            raise NotFoundError(_where(exc)) from None

    def dump(self, body: BaseModel, status: int = 200) -> bytes:
        """The JSON bytes of `body`, which must be the model declared for `status`."""
        declared = self.replies.get(status)
        if declared is None or type(body) is not declared.model:
            raise TypeError(
                f"{self.operation_id} declares no {type(body).__name__} answer for {status}"
            )
        return body.model_dump_json().encode()

    def reply(
        self, body: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        """A JSON response of `body` (see `dump`)."""
        return Response(
            self.dump(body, status), status_code=status, media_type=JSON, headers=headers
        )
