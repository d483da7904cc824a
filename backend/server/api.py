"""The backend's HTTP contract: every core operation's models, token kinds and statuses, once.

Each `Operation` below is what `backend.server.app` mounts (`Operation.route`), what its handler
parses the body and query with (`Operation.parse_body`, `Operation.parse_query`) and serialises
its answer through (`Operation.reply`, which refuses a model the operation does not declare),
and what `backend.server._openapi.openapi_document` turns into `/openapi.json`. The rollout routes
declare theirs beside their handlers (`backend.rollout.api`). So the document and the
validation cannot drift: there is one declaration for both.

Pydantic here checks the shape of a body (types, unknown fields, bounds the storage needs)
and carries every rule the server checks a value against (a name, a sha256, a token limit, a
label): the rule itself is `backend.validation`'s (or the enum's), shared with the command
line, and the fields here use its patterns and bounds, so `/openapi.json` states it. A body
the document allows is never refused for its value (an outside fuzzer checks this).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from agent.decision import Mode, Reason, Verdict
from agent.policy import PolicyDocumentModel
from agent.telemetry.wire import CONTENT_TYPE, FORMAT_VERSION, MAX_EVENTS_PER_BATCH, Action
from backend.server._fields import HexSha256, OrgName
from backend.server._fields import Reason as ReasonText
from backend.server._operation import Integral, Operation, Reply, Time
from backend.store import TokenKind
from backend.validation import MAX_USES

__all__ = [
    "ADD_LIST_ENTRY",
    "AGGREGATES",
    "ASSIGN_MODEL",
    "CHECKIN",
    "CREATE_ENROLL_TOKEN",
    "CREATE_ORG",
    "ENROLL",
    "GET_POLICY",
    "HEALTHZ",
    "LIST_ORGS",
    "LIST_TOKENS",
    "METRICS",
    "OPENAPI",
    "OPERATIONS",
    "POST_LABELS",
    "PUSH",
    "REMOVE_LIST_ENTRY",
    "REVOKE_ENDPOINT_TOKENS",
    "REVOKE_TOKEN",
    "SET_MODE",
    "TELEMETRY",
    "AggregateOut",
    "AggregateQuery",
    "AggregateRows",
    "Checkin",
    "EnrollTokenBody",
    "EnrollTokenCreated",
    "Enrolled",
    "EntryBody",
    "Health",
    "LabelItem",
    "LabelsBody",
    "LabelsRecorded",
    "ListEntryPath",
    "ListPath",
    "ModeBody",
    "ModelBody",
    "OrgBody",
    "OrgIds",
    "OrgMade",
    "PolicyAt",
    "PolicyChange",
    "PolicyQuery",
    "RemoveEntryQuery",
    "Revoked",
    "TelemetryAck",
    "TelemetryBatchDocument",
    "TokenInfo",
    "TokenList",
]

_ADMIN = (TokenKind.ADMIN,)
_ENDPOINT = (TokenKind.ENDPOINT,)
# the agent decoder's bounds (agent.telemetry.wire), held to it by tests/backend/server/test_api.py
_MIN_MS = 946_684_800_000  # 2000-01-01
_MAX_MS = 4_102_444_800_000  # 2100-01-01
_MAX_HEALTH = 64
_MODEL_VERSION = Annotated[int, Field(ge=1, lt=2**31), Integral]
_SHA256_HEX = Annotated[HexSha256, Field(description="64 hex characters (backend.validation)")]


class _Body(BaseModel):
    """A request body: unknown fields and values of another JSON type are refused (422).

    Strict, as the schema is: `0` is no time, `false` no number, `"3"` no integer (`3.0` is
    one in JSON Schema: `backend.server._operation.Integral`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Params(BaseModel):
    """Query or path parameters: others are ignored."""

    model_config = ConfigDict(frozen=True)


class _Out(BaseModel):
    """A response body: exactly these fields (the schema says `additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)


# --- request bodies and queries ---------------------------------------------------------------


class OrgBody(_Body):
    """`POST /v1/admin/orgs`."""

    name: OrgName = Field(description="no control characters, not only spaces")


class ModeBody(_Body):
    """`PUT /v1/admin/mode`: the kill switch, fleet-wide or for one org."""

    mode: Mode
    org_id: str | None = Field(default=None, description="org pseudonym; null = fleet-wide")


class ModelBody(_Body):
    """`PUT /v1/admin/model`: the assigned (and shadow) model version."""

    model_version: _MODEL_VERSION | None
    shadow_model_version: _MODEL_VERSION | None = None
    org_id: str | None = Field(default=None, description="org pseudonym; null = fleet-wide")


class EntryBody(_Body):
    """`POST /v1/admin/{list}`: one allowlist or blocklist entry."""

    sha256: _SHA256_HEX
    reason: ReasonText = ""
    expires_at: AwareDatetime | None = None
    org_id: str | None = Field(default=None, description="org pseudonym; null = fleet-wide")


class ListPath(_Params):
    """The `{list}` path parameter: anything else is 404."""

    list: Literal["allowlist", "blocklist"]


class ListEntryPath(ListPath):
    """`/v1/admin/{list}/{sha256}`: a path naming no list, or no sha256, is 404."""

    sha256: _SHA256_HEX


class RemoveEntryQuery(_Params):
    """`DELETE /v1/admin/{list}/{sha256}?org_id=`."""

    org_id: str | None = Field(default=None, description="org pseudonym; absent = fleet-wide")


class PolicyQuery(_Params):
    """`GET /v1/admin/policy?as_of=`."""

    as_of: AwareDatetime | None = Field(default=None, description="absent: the policy now")


class AggregateQuery(_Params):
    """`GET /v1/admin/aggregates?org_id=&day=`."""

    org_id: str | None = None
    day: int | None = Field(default=None, ge=0, lt=2**31, description="days since 1970-01-01")


class EnrollTokenBody(_Body):
    """`POST /v1/admin/orgs/{org_id}/enroll-tokens`."""

    expires_at: AwareDatetime | None = Field(
        default=None,
        description="must be after the server's now (a rule relative to its clock, which the "
        "schema cannot state: an earlier time is refused with 422)",
    )
    max_uses: Annotated[int, Field(ge=1, le=MAX_USES), Integral] | None = None
    rotate: bool = Field(default=False, description="revoke the org's other enroll tokens")


_MAX_LABELS = 1_000
_MAX_FAMILY = 200
# A body of _MAX_LABELS labels at their longest, every character \u-escaped, fits under the
# route's body limit, so a body the schema allows is never refused as too large (413).
_MAX_LABELS_BYTES = 4 * 1024 * 1024


class LabelItem(BaseModel):
    """One golden label (`backend.analysis.labels.parse_label_record` reads it)."""

    model_config = ConfigDict(frozen=True, strict=True)

    sha256: _SHA256_HEX
    label: Literal["malicious", "benign", "1", "0"] = Field(description="1 is malicious, 0 benign")
    # backend.analysis.labels.LabelSource's values (a test holds them equal; importing the
    # analysis package here would load it into every process that serves the API)
    source: Literal["analyst", "feed", "customer_report"] | None = Field(
        default=None, description="absent: analyst"
    )
    labelled_at: AwareDatetime | None = Field(default=None, description="absent: now")
    family: str | None = Field(default=None, max_length=_MAX_FAMILY)


class LabelsBody(_Body):
    """`POST /v1/admin/labels`."""

    labels: list[LabelItem] = Field(min_length=1, max_length=_MAX_LABELS)


_SHA_BYTES = Annotated[bytes, Field(min_length=32, max_length=32, description="raw sha256")]
_VERSION = Annotated[int, Field(ge=0, lt=2**31)]
_MS = Annotated[int, Field(ge=_MIN_MS, lt=_MAX_MS, description="ms since the epoch, UTC")]
_SCORE = Annotated[float, Field(ge=0.0, le=1.0)]
_EVENT = tuple[
    _SHA_BYTES,
    _VERSION,
    _SCORE | None,
    Verdict,
    Reason,
    _MS,
    str | None,
    bytes | None,
    _VERSION | None,
    _SCORE | None,
    Verdict | None,
]
_ACTED_EVENT = tuple[
    _SHA_BYTES,
    _VERSION,
    _SCORE | None,
    Verdict,
    Reason,
    _MS,
    str | None,
    bytes | None,
    _VERSION | None,
    _SCORE | None,
    Verdict | None,
    Action,
]
_COUNT = Annotated[int, Field(ge=0, lt=2**31)]


class TelemetryBatchDocument(BaseModel):
    """The msgpack document of `POST /v1/telemetry` (`agent.telemetry.wire`, decoded).

    Documentation of the wire format for readers of `/openapi.json`: the route validates the
    bytes with `agent.telemetry.decode_columns`, column by column, for speed (the reason, sha256
    and feature fields have rules this schema only names). A test holds this model to the
    agent's encoder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(description=f"format version ({FORMAT_VERSION})")
    key: str = Field(pattern=r"^[A-Za-z0-9_.:-]{8,128}$", description="idempotency key")
    org: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    endpoint: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    dropped: int = Field(default=0, ge=0, lt=2**63)
    events: list[_EVENT | _ACTED_EVENT] = Field(
        min_length=1,
        max_length=MAX_EVENTS_PER_BATCH,
        description=(
            "[sha256, model_version, score, verdict, reason, observed_at_ms, feature_schema, "
            "features (float32 LE), shadow_model_version, shadow_score, shadow_verdict"
            "[, action]]"
        ),
    )
    health: list[tuple[_VERSION, _MS, _COUNT, _COUNT, _COUNT]] = Field(
        default_factory=list,
        max_length=_MAX_HEALTH,
        description="[model_version, observed_at_ms, self_test_failures, model_errors, "
        "breaker_trips]",
    )


# --- response bodies --------------------------------------------------------------------------


class Health(_Out):
    """`GET /healthz`."""

    status: Literal["ok"]


class Enrolled(_Out):
    """An endpoint's pseudonyms and its own token (shown once)."""

    org_id: str
    endpoint_id: str
    token: str


class Checkin(_Out):
    """What an endpoint runs: its org's resolved policy."""

    org_id: str
    endpoint_id: str | None
    policy_version: int
    mode: Mode
    model_version: int | None
    shadow_model_version: int | None
    tuf_url: str


class TelemetryAck(_Out):
    """A committed batch, or a replay acknowledged (`duplicate`)."""

    duplicate: bool
    events: int


class OrgIds(RootModel[list[str]]):
    """Org pseudonyms."""


class OrgMade(_Out):
    """A new organization and its enroll token (shown once)."""

    org_id: str
    name: str
    enroll_token: str


class PolicyChange(_Out):
    """The policy version a change produced."""

    version: int
    changed_at: Time
    action: str


class PolicyAt(_Out):
    """The signed policy document in force at a time."""

    version: int
    changed_at: Time
    action: str
    document: PolicyDocumentModel


class AggregateOut(_Out):
    """One aggregate row: (day, org, sample, model version, shadow, verdict) and its counts."""

    day: int
    org_id: str
    sha256: str
    model_version: int | None
    shadow: bool
    verdict: Verdict
    count: int
    distinct_endpoints: int
    first_seen_ms: int
    last_seen_ms: int


class AggregateRows(RootModel[list[AggregateOut]]):
    """Aggregate rows."""


class LabelsRecorded(_Out):
    """How many label changes were recorded, for how many samples, how many malicious."""

    recorded: int
    samples: int
    malicious: int


class EnrollTokenCreated(_Out):
    """A new enroll token (shown once)."""

    org_id: str
    token_id: str
    enroll_token: str
    expires_at: Time | None
    max_uses: int | None


class TokenInfo(_Out):
    """A token's facts, never its secret."""

    token_id: str
    kind: TokenKind
    endpoint_id: str | None
    created_at: Time
    expires_at: Time | None
    max_uses: int | None
    uses: int
    revoked_at: Time | None


class TokenList(RootModel[list[TokenInfo]]):
    """An org's tokens."""


class Revoked(_Out):
    """How many tokens a revocation ended."""

    revoked: int


# --- the operations ---------------------------------------------------------------------------

_POLICY_ERRORS = (404, 409, 413, 422, 503)
_SSE_EVENT: dict[str, Any] = {  # a text/event-stream schema describes each event
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["policy"]},
        "data": {"type": "string", "pattern": '^\\{"policy_version": [0-9]+\\}$'},
    },
}

HEALTHZ = Operation("GET", "/healthz", "healthz", "Liveness.", (), {200: Reply("alive", Health)})
OPENAPI = Operation(
    "GET",
    "/openapi.json",
    "openapi",
    "This document.",
    (),
    {200: Reply("the OpenAPI document", schema={"type": "object"})},
)
METRICS = Operation(
    "GET",
    "/metrics",
    "metrics",
    "Prometheus metrics.",
    (),
    {200: Reply("Prometheus text", media_type="text/plain", schema={"type": "string"})},
)
ENROLL = Operation(
    "POST",
    "/v1/enroll",
    "enroll",
    "Trade an enroll token for an endpoint token and pseudonym.",
    (TokenKind.ENROLL,),
    {201: Reply("enrolled", Enrolled)},
    errors=(404,),
)
CHECKIN = Operation(
    "GET",
    "/v1/checkin",
    "checkin",
    "What the endpoint runs (answers If-None-Match with 304).",
    _ENDPOINT,
    {200: Reply("what to run", Checkin), 304: Reply("unchanged since the ETag given")},
)
TELEMETRY = Operation(
    "POST",
    "/v1/telemetry",
    "telemetry",
    "A msgpack batch of the token's own endpoint; a replayed key counts once.",
    _ENDPOINT,
    {200: Reply("committed (or a replay, acknowledged)", TelemetryAck)},
    errors=(404, 413, 415, 422),
    body=TelemetryBatchDocument,
    body_media=CONTENT_TYPE,
)
PUSH = Operation(
    "GET",
    "/v1/push",
    "push",
    "Hold a notice channel for the endpoint token's org.",
    _ENDPOINT,
    {
        200: Reply(
            'server-sent events: `event: policy` with `data: {"policy_version": N}` at once and '
            "on each change to the org's policy, `: ping` comments between; the stream ends "
            "after the channel lifetime or when the token is revoked",
            media_type="text/event-stream",
            schema=_SSE_EVENT,
        ),
    },
    errors=(503,),
    error_headers={503: {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}},
)
LIST_ORGS = Operation(
    "GET", "/v1/admin/orgs", "listOrgs", "Org pseudonyms.", _ADMIN, {200: Reply("orgs", OrgIds)}
)
CREATE_ORG = Operation(
    "POST",
    "/v1/admin/orgs",
    "createOrg",
    "Create an organization and its first enroll token.",
    _ADMIN,
    {201: Reply("created (the token is shown once)", OrgMade)},
    errors=(409, 413, 422),
    body=OrgBody,
)
SET_MODE = Operation(
    "PUT",
    "/v1/admin/mode",
    "setMode",
    "The kill switch: enforce, detect_only or off.",
    _ADMIN,
    {200: Reply("new policy version", PolicyChange)},
    errors=_POLICY_ERRORS,
    body=ModeBody,
)
ASSIGN_MODEL = Operation(
    "PUT",
    "/v1/admin/model",
    "assignModel",
    "Assign the model (and shadow model) version.",
    _ADMIN,
    {200: Reply("new policy version", PolicyChange)},
    errors=_POLICY_ERRORS,
    body=ModelBody,
)
GET_POLICY = Operation(
    "GET",
    "/v1/admin/policy",
    "getPolicy",
    "The policy in force now or at `as_of`.",
    _ADMIN,
    {200: Reply("the policy in force then", PolicyAt)},
    errors=(404, 422),
    query=PolicyQuery,
)
AGGREGATES = Operation(
    "GET",
    "/v1/admin/aggregates",
    "getAggregates",
    "Aggregate rows, optionally of one org and one day.",
    _ADMIN,
    {200: Reply("aggregate rows", AggregateRows)},
    errors=(422,),
    query=AggregateQuery,
)
POST_LABELS = Operation(
    "POST",
    "/v1/admin/labels",
    "addLabels",
    "Record golden labels.",
    _ADMIN,
    {201: Reply("label changes recorded", LabelsRecorded)},
    errors=(413, 422),
    body=LabelsBody,
    max_body_bytes=_MAX_LABELS_BYTES,
)
CREATE_ENROLL_TOKEN = Operation(
    "POST",
    "/v1/admin/orgs/{org_id}/enroll-tokens",
    "createEnrollToken",
    "A new enroll token with an optional expiry and use limit (or a rotation).",
    _ADMIN,
    {201: Reply("created (the token is shown once)", EnrollTokenCreated)},
    errors=(404, 413, 422),
    body=EnrollTokenBody,
)
LIST_TOKENS = Operation(
    "GET",
    "/v1/admin/orgs/{org_id}/tokens",
    "listTokens",
    "The org's tokens, no secrets.",
    _ADMIN,
    {200: Reply("tokens", TokenList)},
    errors=(404,),
)
REVOKE_TOKEN = Operation(
    "DELETE",
    "/v1/admin/tokens/{token_id}",
    "revokeToken",
    "Revoke one token.",
    _ADMIN,
    {200: Reply("revoked", Revoked)},
    errors=(404,),
)
REVOKE_ENDPOINT_TOKENS = Operation(
    "DELETE",
    "/v1/admin/endpoints/{endpoint_id}/tokens",
    "revokeEndpointTokens",
    "Revoke every token of one endpoint.",
    _ADMIN,
    {200: Reply("revoked", Revoked)},
    errors=(404,),
)
ADD_LIST_ENTRY = Operation(
    "POST",
    "/v1/admin/{list}",
    "addListEntry",
    "Add an allowlist or blocklist entry.",
    _ADMIN,
    {200: Reply("new policy version", PolicyChange)},
    errors=_POLICY_ERRORS,
    body=EntryBody,
    path_params=ListPath,
)
REMOVE_LIST_ENTRY = Operation(
    "DELETE",
    "/v1/admin/{list}/{sha256}",
    "removeListEntry",
    "Remove an allowlist or blocklist entry.",
    _ADMIN,
    {200: Reply("new policy version", PolicyChange)},
    errors=(404, 409, 422, 503),
    query=RemoveEntryQuery,
    path_params=ListEntryPath,
)

OPERATIONS: tuple[Operation, ...] = (
    HEALTHZ,
    OPENAPI,
    METRICS,
    ENROLL,
    CHECKIN,
    TELEMETRY,
    PUSH,
    LIST_ORGS,
    CREATE_ORG,
    SET_MODE,
    ASSIGN_MODEL,
    GET_POLICY,
    AGGREGATES,
    POST_LABELS,
    CREATE_ENROLL_TOKEN,
    LIST_TOKENS,
    REVOKE_TOKEN,
    REVOKE_ENDPOINT_TOKENS,
    ADD_LIST_ENTRY,
    REMOVE_LIST_ENTRY,
)
