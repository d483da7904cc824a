"""Fuzzing: schemathesis against `/openapi.json` and random msgpack documents.

Every operation with every kind of token (admin, enroll, endpoint, none): no 5xx, every status
and content type is a documented one, and every response body matches its schema (the schema
generated from the pydantic model the handler answers with, `backend.server._openapi`). The test
also checks the fuzzing reached the success answers of each kind of token, so the body checks ran on
more than error bodies.

Bounded to a few seconds here; `benchmarks/api_fuzz.py` runs the same with many more examples.
"""

from __future__ import annotations

import os

import httpx
import msgpack
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agent.telemetry import encode_batch, enroll
from tests.backend.conftest import LiveServer, make_event

EXAMPLES = int(os.environ.get("FLEETWARD_FUZZ_EXAMPLES", "12"))


@schemathesis.serializer("application/msgpack")
def _msgpack_passthrough(ctx: object, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes(msgpack.packb(value, use_bin_type=True))


def _tokens(server: LiveServer) -> dict[str, str]:
    with httpx.Client() as client:
        _, enroll_token = server.create_org(client, "fuzz")
        creds = enroll(client, server.url, enroll_token)
    return {"enroll": enroll_token, "endpoint": creds.token, "admin": server.admin_token}


def test_schemathesis_finds_no_server_errors_and_responses_match_the_schema(
    live_server: LiveServer,
) -> None:
    tokens = _tokens(live_server)
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    failures: list[str] = []
    answered: set[tuple[str, str | None, int]] = set()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        run = _fuzz_operation(operation, tokens, live_server.url, failures, answered)
        run()
    documented = httpx.get(live_server.url + "/openapi.json").json()["paths"]
    # schemathesis leaves out the document's own location, GET /openapi.json
    assert operations == sum(len(item) for item in documented.values()) - 1 >= 27
    assert failures == []
    ok = {(label, kind) for label, kind, status in answered if 200 <= status < 300}
    for kind, must in {
        "admin": {"GET /v1/admin/orgs", "POST /v1/admin/orgs", "GET /v1/admin/rollout"},
        "enroll": {"POST /v1/enroll"},
        "endpoint": {"GET /v1/checkin", "GET /v1/push"},
        None: {"GET /healthz", "GET /metrics"},
    }.items():
        assert {(label, kind) for label in must} <= ok, (kind, sorted(ok, key=str))
    assert len({label for label, kind in ok if kind == "admin"}) >= 12, sorted(ok, key=str)
    refused = {(label, kind) for label, kind, status in answered if status in (401, 403)}
    assert ("POST /v1/admin/orgs", "endpoint") in refused
    assert ("GET /v1/checkin", None) in refused


def _fuzz_operation(
    operation,
    tokens: dict[str, str],
    base_url: str,
    failures: list[str],
    answered: set[tuple[str, str | None, int]],
):
    """Every example with every kind of token (and none): no 5xx, bodies as documented."""

    # derandomized: the same examples on every run, so what the coverage asserts below can
    # reach does not depend on the draw (the outside fuzzing probes draw afresh)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        for kind in ("admin", "enroll", "endpoint", None):
            headers = {"authorization": f"Bearer {tokens[kind]}"} if kind else {}
            response = case.call(base_url=base_url, headers=headers)
            answered.add((f"{case.method} {operation.path}", kind, response.status_code))
            try:
                case.validate_response(
                    response,
                    checks=[
                        not_a_server_error,
                        status_code_conformance,
                        content_type_conformance,
                        response_schema_conformance,
                    ],
                )
            except Exception as exc:  # noqa: BLE001 - every check failure is collected
                failures.append(
                    f"{case.method} {case.path} ({kind or 'no'} token): {response.status_code} "
                    f"{type(exc).__name__}: {str(exc)[:300]}"
                )

    return run


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(st.text(max_size=8), children, max_size=8)
    ),
    max_leaves=40,
)


@settings(
    max_examples=EXAMPLES * 5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(doc=msgpack_values, mutate_event=st.integers(0, 10), value=msgpack_values)
def test_random_msgpack_never_causes_a_server_error(
    live_server: LiveServer, doc, mutate_event, value
) -> None:
    tokens = getattr(live_server, "_fuzz_tokens", None) or _tokens_once(live_server)
    headers = {
        "authorization": f"Bearer {tokens['endpoint']}",
        "content-type": "application/msgpack",
    }
    base = msgpack.unpackb(encode_batch([make_event(tokens["org"], tokens["endpoint_id"])]))
    base["events"][0][mutate_event] = value
    with httpx.Client() as client:
        for body in (msgpack.packb(doc, use_bin_type=True), msgpack.packb(base, use_bin_type=True)):
            r = client.post(live_server.url + "/v1/telemetry", content=body, headers=headers)
            assert r.status_code < 500, r.text


def _tokens_once(server: LiveServer) -> dict[str, str]:
    with httpx.Client() as client:
        _, enroll_token = server.create_org(client, "msgpack-fuzz")
        creds = enroll(client, server.url, enroll_token)
    tokens = {"endpoint": creds.token, "org": creds.org_id, "endpoint_id": creds.endpoint_id}
    server._fuzz_tokens = tokens  # type: ignore[attr-defined]
    return tokens
