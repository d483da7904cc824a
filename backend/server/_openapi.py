"""The OpenAPI 3.1 document served at `/openapi.json`, generated from the route table.

Nothing here is written by hand per route: each `backend.server._operation.Operation` the app mounts
gives its path, method, token kinds, parameters, request body and every response, and the
schemas are the pydantic models' own (`models_json_schema`, request models in validation mode,
answers in serialization mode, their `$defs` hoisted into `components/schemas`). The handlers
validate and answer with those same models, so the document cannot drift from the validation.
OpenAPI 3.1 because its schema dialect is pydantic's (JSON Schema 2020-12).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from backend.server._operation import JSON, ErrorBody, Operation, Reply

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "bad request",
    401: "missing or unknown token",
    403: "token not allowed here",
    404: "not found",
    409: "conflict (a policy conflict names the version now in force)",
    413: "body too large",
    415: "wrong content type",
    422: "invalid body or parameter (the detail says why)",
    503: "unavailable (policy not republished, or too many channels)",
}
_PARAM = re.compile(r"{(\w+)}")


def _models(operations: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    keys: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorBody, "serialization"): None}
    for op in operations:
        if op.body is not None:
            keys[op.body, "validation"] = None
        for reply in op.replies.values():
            if reply.model is not None:
                keys[reply.model, "serialization"] = None
    return list(keys)


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without its `null` branch: an absent parameter is the None."""
    branches = schema.get("anyOf")
    if branches is None:
        return schema
    rest = [b for b in branches if b != {"type": "null"}]
    if len(rest) != 1:
        return schema
    out: dict[str, Any] = {k: v for k, v in schema.items() if k != "anyOf"} | rest[0]
    if out.get("default", 0) is None:
        del out["default"]
    return out


def _parameters(op: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    typed: dict[str, dict[str, Any]] = {}
    for where, model in (("path", op.path_params), ("query", op.query)):
        if model is None:
            continue
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            prop = {k: v for k, v in prop.items() if k != "title"}
            param: dict[str, Any] = {"name": name, "in": where, "required": where == "path"}
            if where == "query":
                param["required"] = name in required
            if "description" in prop:
                param["description"] = prop.pop("description")
            param["schema"] = _optional(prop)
            if where == "path":
                typed[name] = param
            else:
                out.append(param)
    path = [
        typed.get(name)
        or {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(op.path)
    ]
    return path + out


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _reply(reply: Reply, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.model is not None:
        out["content"] = _content(reply.media_type, refs[reply.model, "serialization"])
    elif reply.schema is not None:
        out["content"] = _content(reply.media_type, dict(reply.schema))
    return out


def _operation(op: Operation, refs: dict[Any, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.tokens:
        kinds = ", ".join(k.value for k in op.tokens)
        out["description"] = f"Bearer token: {kinds}."
        out["security"] = [{"bearer": []}]
        out["x-token-kinds"] = [k.value for k in op.tokens]
    parameters = _parameters(op, schemas)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        schema = refs[op.body, "validation"]
        if op.body_media != JSON:  # bytes on the wire; the model is the decoded document
            schema = {
                "type": "string",
                "format": "binary",
                "contentMediaType": op.body_media,
                "contentSchema": schema,
            }
        out["requestBody"] = {
            "required": op.body_required,
            "content": _content(op.body_media, schema),
        }
    responses = {str(status): _reply(reply, refs) for status, reply in op.replies.items()}
    codes = {*op.errors, *((401, 403) if op.tokens else ())}
    error = refs[ErrorBody, "serialization"]
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _ERRORS[code],
            "content": _content(JSON, error),
        } | ({"headers": dict(op.error_headers[code])} if code in op.error_headers else {})
    out["responses"] = responses
    return out


def openapi_document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI document of `operations` (a fresh dict each call).

    Raises:
        ValueError: two operations share a method and path, or an operation id.
    """
    ops = list(operations)
    refs, top = models_json_schema(_models(ops), ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    for op in ops:
        item = paths.setdefault(op.path, {})
        method = op.method.lower()
        if method in item or op.operation_id in ids:
            raise ValueError(f"{op.method} {op.path} ({op.operation_id}) is declared twice")
        ids.add(op.operation_id)
        item[method] = _operation(op, dict(refs), schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleetward backend", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    }
