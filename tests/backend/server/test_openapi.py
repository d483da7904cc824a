"""The OpenAPI document is generated from the route table the app mounts and validates with.

`backend.server._openapi` turns each `backend.server._operation.Operation` into a path item; these
tests hold the generated document to the running Starlette app's routes (both ways) and to the
pydantic models the handlers parse and answer with, and check that a handler cannot answer
with a model its operation does not declare. The fuzzing that checks live answers against the
document is `test_api_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from backend.errors import BatchInvalidError, NotFoundError
from backend.rollout import api as rollout_api
from backend.server import api
from backend.server._openapi import openapi_document
from backend.server._operation import ErrorBody, Operation, Reply
from backend.server.app import create_app
from backend.store import TokenKind, open_store

_REF = "#/components/schemas/"


def _no_publish(document: bytes, now: dt.datetime) -> None:
    raise AssertionError("nothing is published in these tests")


async def _get_json(app: Any, path: str) -> Any:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return (await client.get(path)).json()


def _operations_of(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_operation_is_a_route(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "routes.db")
    try:
        app = create_app(store, tmp_path / "repo", publish=_no_publish)
        document = asyncio.run(_get_json(app, "/openapi.json"))
    finally:
        store.close()
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema
        for method in (route.methods or set()) - {"HEAD"}
    }
    # the one route left out: `/` sends a browser to the console
    assert [r.path for r in app.routes if isinstance(r, Route) and not r.include_in_schema] == ["/"]
    assert _operations_of(document) == served
    assert len(served) >= 28
    # the mounts are the TUF repository and the console (HTML), not JSON operations
    mounts = {getattr(r, "path", None) for r in app.routes if not isinstance(r, Route)}
    assert mounts == {"/tuf/metadata", "/tuf/targets", "/console"}


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema["$ref"]
    assert ref.startswith(_REF), ref
    found: dict[str, Any] = document["components"]["schemas"][ref.removeprefix(_REF)]
    return found


def _own_schema(model: Any, mode: str) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(ref_template=_REF + "{model}", mode=mode)
    schema.pop("$defs", None)
    return schema


ALL = (*api.OPERATIONS, *rollout_api.OPERATIONS)


@pytest.mark.parametrize("op", ALL, ids=lambda op: op.operation_id)
def test_documented_schemas_are_the_models_the_handlers_use(op: Operation) -> None:
    document = openapi_document(ALL)
    item = document["paths"][op.path][op.method.lower()]
    if op.body is not None:
        content = item["requestBody"]["content"][op.body_media]["schema"]
        if op.body_media != "application/json":
            assert content["format"] == "binary"
            content = content["contentSchema"]
        assert _resolve(document, content) == _own_schema(op.body, "validation")
    for status, reply in op.replies.items():
        answer = item["responses"][str(status)]
        if reply.model is None:
            assert ("content" in answer) == (reply.schema is not None)
            continue
        schema = answer["content"]["application/json"]["schema"]
        assert _resolve(document, schema) == _own_schema(reply.model, "serialization")
    errors = {s for s in item["responses"] if s not in {str(c) for c in op.replies}}
    expected = {*op.errors, *((401, 403) if op.tokens else ())}
    assert errors == {str(c) for c in expected}
    for status in errors:
        schema = item["responses"][status]["content"]["application/json"]["schema"]
        assert _resolve(document, schema) == _own_schema(ErrorBody, "serialization")
    assert ("security" in item) == bool(op.tokens)
    assert item.get("x-token-kinds", []) == [k.value for k in op.tokens]


def test_query_and_path_parameters_come_from_their_models() -> None:
    document = openapi_document(ALL)
    aggregates = document["paths"]["/v1/admin/aggregates"]["get"]["parameters"]
    day = next(p for p in aggregates if p["name"] == "day")
    assert day["in"] == "query" and not day["required"]
    assert day["schema"]["type"] == "integer"
    assert day["schema"]["minimum"] == 0 and day["schema"]["exclusiveMaximum"] == 2**31
    remove = document["paths"]["/v1/admin/{list}/{sha256}"]["delete"]["parameters"]
    assert [(p["name"], p["in"]) for p in remove] == [
        ("list", "path"),
        ("sha256", "path"),
        ("org_id", "query"),
    ]
    assert remove[0]["schema"]["enum"] == ["allowlist", "blocklist"]


def test_reply_refuses_a_model_or_status_the_operation_does_not_declare() -> None:
    with pytest.raises(TypeError, match="declares no Revoked answer for 200"):
        api.HEALTHZ.reply(api.Revoked(revoked=1))
    with pytest.raises(TypeError, match="declares no Health answer for 201"):
        api.HEALTHZ.reply(api.Health(status="ok"), 201)
    assert api.HEALTHZ.reply(api.Health(status="ok")).body == b'{"status":"ok"}'


def test_parsing_with_a_model_other_than_the_declared_one_is_refused() -> None:
    with pytest.raises(TypeError, match="declares body OrgBody, not ModeBody"):
        api.CREATE_ORG.parse_body(api.ModeBody, b'{"mode": "off"}')
    with pytest.raises(TypeError, match="declares query PolicyQuery"):
        api.GET_POLICY.parse_query(api.AggregateQuery, {})
    with pytest.raises(TypeError, match="takes application/msgpack"):
        api.TELEMETRY.parse_body(api.TelemetryBatchDocument, b"{}")


def test_parse_errors_are_domain_errors_naming_the_field() -> None:
    with pytest.raises(BatchInvalidError, match=r"^mode: Input should be"):
        api.SET_MODE.parse_body(api.ModeBody, b'{"mode": "sometimes"}')
    with pytest.raises(BatchInvalidError, match=r"^day: Input should be greater than"):
        api.AGGREGATES.parse_query(api.AggregateQuery, {"day": "-1"})
    with pytest.raises(BatchInvalidError, match=r"^as_of: Input should have timezone"):
        api.GET_POLICY.parse_query(api.PolicyQuery, {"as_of": "2026-01-01T00:00:00"})
    with pytest.raises(NotFoundError, match=r"^list: "):
        api.ADD_LIST_ENTRY.parse_path(api.ListPath, {"list": "greylist"})
    empty = rollout_api.PAUSE.body
    assert empty is not None and not rollout_api.PAUSE.body_required
    assert rollout_api.PAUSE.parse_body(empty, b"") == empty()


def test_an_operation_declared_twice_is_refused() -> None:
    twin = Operation("GET", "/healthz", "healthz2", "again", (), {200: Reply("ok", api.Health)})
    with pytest.raises(ValueError, match="declared twice"):
        openapi_document((api.HEALTHZ, twin))


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi_document(ALL)
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any structural error
    broken = openapi_document(ALL)
    broken["paths"]["/healthz"]["get"]["responses"]["200"].pop("description")
    with pytest.raises(Exception, match="description"):
        validate(broken)


def test_operations_with_tokens_document_bearer_security_and_their_kinds() -> None:
    document = openapi_document(ALL)
    checkin = document["paths"]["/v1/checkin"]["get"]
    assert checkin["security"] == [{"bearer": []}]
    assert checkin["x-token-kinds"] == [TokenKind.ENDPOINT.value]
    assert "security" not in document["paths"]["/healthz"]["get"]
    assert document["openapi"] == "3.1.0"
