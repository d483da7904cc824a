"""The long fuzzing run: schemathesis against `/openapi.json` of a real server, plus random msgpack.

The suite runs a bounded version (`tests/backend/server/test_api_fuzz.py`, a dozen examples per
operation); this one runs hundreds per operation, each with every kind of bearer token (admin,
enroll, endpoint) and none, against `python -m backend serve` on loopback, and counts every 5xx
and every answer outside the document (undocumented status or content type, a body that does
not match the schema generated from its response model). `GET /v1/push` (a channel that lasts
an hour) is fuzzed the same way but read only to its status and first bytes (`fuzz_push`).
Prints one `name: value` per line; exits non-zero when any 5xx or violation was seen.

    .venv/bin/python benchmarks/api_fuzz_bench.py [--examples 300] [--msgpack 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.decision import Reason, Verdict  # noqa: E402
from agent.telemetry import TelemetryEvent, encode_batch, enroll  # noqa: E402
from backend.store import Store  # noqa: E402
from model_store.repository import init_repository  # noqa: E402


@schemathesis.serializer("application/msgpack")
def _msgpack_passthrough(ctx: object, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes(msgpack.packb(value, use_bin_type=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tally:
    """Examples sent and server errors seen (with the first few, for the report)."""

    def __init__(self) -> None:
        self.requests = 0
        self.examples = 0
        self.errors: list[str] = []
        self.violations: list[str] = []
        self.push_statuses: dict[int, int] = {}  # GET /v1/push answers by status


_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz_operation(
    operation: Any, tokens: dict[str, str], url: str, examples: int, tally: Tally
) -> None:
    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        tally.examples += 1
        for kind in (*tokens, None):
            headers = {"authorization": f"Bearer {tokens[kind]}"} if kind else {}
            response = case.call(base_url=url, headers=headers)
            tally.requests += 1
            if response.status_code >= 500:
                tally.errors.append(
                    f"{case.method} {case.path}: {response.status_code} {response.text[:200]}"
                )
            try:
                case.validate_response(response, checks=_CHECKS)
            except Exception as exc:  # noqa: BLE001 - every violation is counted and shown
                tally.violations.append(
                    f"{case.method} {case.path} ({kind or 'no'} token): "
                    f"{response.status_code} {str(exc).splitlines()[0][:200]}"
                )

    run()


# header values a client can send (Latin-1 without control characters) and query parameters
# (requests refuses a value that starts with white space: stripped)
_header_text = st.text(
    st.characters(codec="latin-1", exclude_categories=("Cc",)), min_size=0, max_size=60
).map(str.strip)
_query = st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=4)
_push_headers = st.fixed_dictionaries(
    {},
    optional={
        name: _header_text
        for name in ("last-event-id", "accept", "cache-control", "if-none-match", "user-agent")
    },
)


def fuzz_push(
    operation: Any, tokens: dict[str, str], url: str, examples: int, tally: Tally
) -> None:
    """`GET /v1/push`: fuzzed query and headers, each answer read to its status and first bytes.

    The document declares no parameter for it (the token is its only input), so schemathesis
    alone would send one request again and again: random query parameters, the headers an SSE
    client or a proxy sends (`Last-Event-ID`, `Accept`, ...) with random values, and a random
    bearer token go with each case. The channel lasts an hour on `backend serve`, so
    `case.call` (which reads the whole body) cannot be used: the request is streamed, the
    status and the first chunk read (a 200 sends its `event: policy` at once), and the channel
    closed. Counted as `fuzz_operation` counts: a 5xx is an error; a status the document does
    not list, or a 200 that is not an event stream starting with the policy event, is an
    answer outside the document.
    """
    documented = {str(code) for code in operation.definition.raw.get("responses", {})}
    session = requests.Session()  # what `case.call` sends with: it sends what h11 would refuse

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(), query=_query, extra=_push_headers, bogus=_header_text)
    def run(case: Any, query: dict[str, str], extra: dict[str, str], bogus: str) -> None:
        tally.examples += 1
        for kind in (*tokens, "random", None):
            headers = dict(extra)
            if kind is not None:
                headers["authorization"] = f"Bearer {tokens.get(kind, bogus)}"
            kw = case.as_transport_kwargs(base_url=url, headers=headers)
            kw["params"] = {**(kw.get("params") or {}), **query}
            with session.request(**kw, stream=True, timeout=(10.0, 5.0)) as r:
                first = next(r.iter_content(chunk_size=None), b"")
            tally.requests += 1
            tally.push_statuses[r.status_code] = tally.push_statuses.get(r.status_code, 0) + 1
            what = f"GET /v1/push ({kind or 'no'} token): {r.status_code}"
            if r.status_code >= 500:
                tally.errors.append(f"{what} {first[:200]!r}")
            elif str(r.status_code) not in documented:
                tally.violations.append(f"{what}: status not in the document")
            elif r.status_code == 200 and (
                not r.headers.get("content-type", "").startswith("text/event-stream")
                or not first.startswith(b"event: policy")
            ):
                tally.violations.append(f"{what}: {r.headers.get('content-type')} {first[:80]!r}")

    try:
        run()
    finally:
        session.close()


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


def fuzz_msgpack(url: str, creds: Any, examples: int, tally: Tally) -> None:
    """Random documents, and a valid batch with one event field replaced by a random value."""
    headers = {"authorization": f"Bearer {creds.token}", "content-type": "application/msgpack"}
    event = TelemetryEvent(
        creds.org_id,
        creds.endpoint_id,
        "ab" * 32,
        1,
        0.1,
        Verdict.ALLOW,
        Reason.SCORE_BELOW,
        TelemetryEvent.ms(dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
    )
    base = msgpack.unpackb(encode_batch([event]))
    client = httpx.Client(timeout=30)

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(doc=msgpack_values, field=st.integers(0, 10), value=msgpack_values)
    def run(doc: Any, field: int, value: Any) -> None:
        tally.examples += 1
        mutated = {**base, "events": [list(base["events"][0])]}
        mutated["events"][0][field] = value
        for body in (msgpack.packb(doc, use_bin_type=True), msgpack.packb(mutated)):
            r = client.post(url + "/v1/telemetry", content=body, headers=headers)
            tally.requests += 1
            if r.status_code >= 500:
                tally.errors.append(f"POST /v1/telemetry (msgpack): {r.status_code} {r.text[:200]}")

    try:
        run()
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=300, help="examples per API operation")
    ap.add_argument("--msgpack", type=int, default=2000, help="random msgpack documents")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fw-fuzz-"))
    db, repo = tmp / "fuzz.db", tmp / "repo"
    init_repository(repo, now=dt.datetime.now(dt.UTC))  # TUF expiries are relative to real time
    store = Store(db)
    admin = store.create_admin_token(dt.datetime.now(dt.UTC))
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "backend", "serve", "--db", str(db), "--repo", str(repo),
         "--port", str(port), "--synchronous", "NORMAL"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    tally, rejected, operations = Tally(), [], 0
    skipped: list[str] = []
    started = time.perf_counter()
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        with httpx.Client() as client:
            made = client.post(
                url + "/v1/admin/orgs",
                json={"name": "fuzz"},
                headers={"authorization": f"Bearer {admin}"},
            ).json()
            creds = enroll(client, url, made["enroll_token"])
        tokens = {"enroll": made["enroll_token"], "endpoint": creds.token, "admin": admin}
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        for result in schema.get_all_operations():
            try:
                operation = result.ok()  # type: ignore[union-attr]
            except Exception as exc:  # a schema entry schemathesis refuses: report, go on
                rejected.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            path = operation.path
            operations += 1
            # a push channel lasts an hour on `backend serve`: read to its first bytes only
            fuzz = fuzz_push if path == "/v1/push" else fuzz_operation
            try:
                fuzz(operation, tokens, url, args.examples, tally)
            except Exception as exc:
                if not type(exc).__module__.startswith("schemathesis"):
                    raise  # transport errors and the like: the server is in trouble
                # an entry the schema validator refuses (reported; the suite test fails on it)
                first = str(exc).splitlines()[0]
                rejected.append(f"{operation.method.upper()} {path}: {type(exc).__name__}: {first}")
        fuzz_msgpack(url, creds, args.msgpack, tally)
        alive = httpx.get(url + "/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait()
    print(f"cores: {os.cpu_count()}")
    print(f"operations: {operations}")
    print(f"operations_skipped: {len(skipped)} {' '.join(skipped)}")
    print(f"operations_rejected_by_schemathesis: {len(rejected)}")
    for line in rejected:
        print(f"  rejected: {line}")
    print(f"examples: {tally.examples}")
    by_status = " ".join(f"{k}={v}" for k, v in sorted(tally.push_statuses.items()))
    print(f"push_requests_by_status: {by_status}")
    print(f"requests: {tally.requests}")
    print(f"server_errors_5xx: {len(tally.errors)}")
    for line in tally.errors[:10]:
        print(f"  5xx: {line}")
    print(f"answers_outside_the_document: {len(tally.violations)}")
    for line in tally.violations[:10]:
        print(f"  violation: {line}")
    print(f"server_alive_after: {alive}")
    print(f"seconds: {time.perf_counter() - started:.0f} s")
    sys.exit(1 if tally.errors or tally.violations or not alive else 0)


if __name__ == "__main__":
    main()
