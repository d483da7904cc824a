"""The hand-written OpenAPI 3.0 document served at `/openapi.json`.

Written by hand because the app is plain Starlette; `tests/backend/test_openapi.py` checks
that every route the app serves is documented and every documented route exists, and
schemathesis fuzzes the operations against it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _rollout_paths() -> dict[str, Any]:
    from backend.rollout.api import openapi_paths

    return openapi_paths()


_SHA = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
_ORG = {
    "type": "string",
    "nullable": True,
    "description": "org pseudonym; null or absent = fleet-wide",
}
_ERR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "current_version": {
            "type": "integer",
            "description": "on a policy conflict (409): the version now in force",
        },
    },
    "required": ["error", "detail"],
}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "bad request",
        401: "missing or unknown token",
        403: "token not allowed here",
        404: "not found",
        409: "conflict",
        413: "body too large",
        415: "wrong content type",
        422: "invalid body (the detail says why)",
        503: "policy could not be republished",
    }
    return {str(c): _resp(names[c], {"$ref": "#/components/schemas/Error"}) for c in codes}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_POLICY = {"$ref": "#/components/schemas/PolicyChange"}
_ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_TIME = {"type": "string", "format": "date-time", "nullable": True}


def _push_paths() -> dict[str, Any]:
    """`GET /v1/push`: the server-sent-events notice channel (`backend.push`)."""
    stream = (
        'Server-sent events: `event: policy` with `data: {"policy_version": N}` at once and '
        "on each change to the token's org's policy, `: ping` comments between; the stream "
        "ends cleanly after the server's channel lifetime (the agent reconnects with jitter) "
        "or when the token is revoked."
    )
    event = {  # OpenAPI 3.0: the schema of a text/event-stream describes each event
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["policy"]},
            "data": {"type": "string", "pattern": '^\\{"policy_version": [0-9]+\\}$'},
        },
    }
    refused = {
        "description": "too many channels open; retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    return {
        "/v1/push": {
            "get": {
                "operationId": "push",
                "security": [{"bearer": []}],
                "description": "Hold a notice channel for the endpoint token's org.",
                "responses": {
                    "200": {
                        "description": stream,
                        "content": {"text/event-stream": {"schema": event}},
                    },
                    "503": refused,
                    **_errors(401, 403),
                },
            }
        }
    }


def _token_paths() -> dict[str, Any]:
    """The token lifecycle: enroll tokens with expiry, use limit, rotation; revocation."""
    info = {
        "type": "object",
        "required": ["token_id", "kind", "created_at", "uses"],
        "properties": {
            "token_id": {"type": "string"},
            "kind": {"type": "string", "enum": ["admin", "enroll", "endpoint"]},
            "endpoint_id": {"type": "string", "nullable": True},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": _TIME,
            "max_uses": {"type": "integer", "nullable": True},
            "uses": {"type": "integer"},
            "revoked_at": _TIME,
        },
    }
    revoked = {
        "type": "object",
        "required": ["revoked"],
        "properties": {"revoked": {"type": "integer"}},
    }
    return {
        "/v1/admin/orgs/{org_id}/enroll-tokens": {
            "post": {
                "operationId": "createEnrollToken",
                "security": _ADMIN,
                "parameters": [_path_param("org_id")],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "expires_at": _TIME,
                            "max_uses": {"type": "integer", "nullable": True, "minimum": 1},
                            "rotate": {"type": "boolean"},
                        },
                    }
                ),
                "responses": {
                    "201": _resp(
                        "created (the token is shown once)",
                        {
                            "type": "object",
                            "required": ["org_id", "token_id", "enroll_token"],
                            "properties": {
                                "org_id": {"type": "string"},
                                "token_id": {"type": "string"},
                                "enroll_token": {"type": "string"},
                                "expires_at": _TIME,
                                "max_uses": {"type": "integer", "nullable": True},
                            },
                        },
                    ),
                    **_errors(401, 403, 404, 413, 422),
                },
            }
        },
        "/v1/admin/orgs/{org_id}/tokens": {
            "get": {
                "operationId": "listTokens",
                "security": _ADMIN,
                "parameters": [_path_param("org_id")],
                "responses": {
                    "200": _resp("the org's tokens, no secrets", {"type": "array", "items": info}),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/v1/admin/tokens/{token_id}": {
            "delete": {
                "operationId": "revokeToken",
                "security": _ADMIN,
                "parameters": [_path_param("token_id")],
                "responses": {"200": _resp("revoked", revoked), **_errors(401, 403, 404)},
            }
        },
        "/v1/admin/endpoints/{endpoint_id}/tokens": {
            "delete": {
                "operationId": "revokeEndpointTokens",
                "security": _ADMIN,
                "parameters": [_path_param("endpoint_id")],
                "responses": {"200": _resp("revoked", revoked), **_errors(401, 403, 404)},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call)."""
    list_param = {
        "name": "list",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ["allowlist", "blocklist"]},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "fleetward backend", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERR,
                "PolicyChange": {
                    "type": "object",
                    "required": ["version", "changed_at", "action"],
                    "properties": {
                        "version": {"type": "integer"},
                        "changed_at": {"type": "string", "format": "date-time"},
                        "action": {"type": "string"},
                    },
                },
            },
        },
        "paths": _rollout_paths()
        | _token_paths()
        | _push_paths()
        | {
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {"200": _resp("alive", {"type": "object"})},
                }
            },
            "/v1/enroll": {
                "post": {
                    "operationId": "enroll",
                    "security": [{"bearer": []}],
                    "description": "Trade an enroll token for an endpoint token and pseudonym.",
                    "responses": {
                        "201": _resp(
                            "enrolled",
                            {
                                "type": "object",
                                "required": ["org_id", "endpoint_id", "token"],
                                "properties": {
                                    "org_id": {"type": "string"},
                                    "endpoint_id": {"type": "string"},
                                    "token": {"type": "string"},
                                },
                            },
                        ),
                        **_errors(401, 403),
                    },
                }
            },
            "/v1/checkin": {
                "get": {
                    "operationId": "checkin",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _resp(
                            "what to run",
                            {
                                "type": "object",
                                "required": [
                                    "org_id",
                                    "endpoint_id",
                                    "policy_version",
                                    "mode",
                                    "model_version",
                                ],
                                "properties": {
                                    "org_id": {"type": "string"},
                                    "endpoint_id": {"type": "string"},
                                    "policy_version": {"type": "integer"},
                                    "mode": {"type": "string"},
                                    "model_version": {"type": "integer", "nullable": True},
                                    "shadow_model_version": {"type": "integer", "nullable": True},
                                    "tuf_url": {"type": "string"},
                                },
                            },
                        ),
                        **_errors(401, 403),
                    },
                }
            },
            "/v1/telemetry": {
                "post": {
                    "operationId": "telemetry",
                    "security": [{"bearer": []}],
                    "description": "A msgpack batch (agent.telemetry format); replays count once.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/msgpack": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "200": _resp(
                            "committed (or a replay, acknowledged)",
                            {
                                "type": "object",
                                "required": ["duplicate", "events"],
                                "properties": {
                                    "duplicate": {"type": "boolean"},
                                    "events": {"type": "integer"},
                                },
                            },
                        ),
                        **_errors(401, 403, 404, 413, 415, 422),
                    },
                }
            },
            "/v1/admin/orgs": {
                "get": {
                    "operationId": "listOrgs",
                    "security": _ADMIN,
                    "responses": {
                        "200": _resp(
                            "org pseudonyms", {"type": "array", "items": {"type": "string"}}
                        ),
                        **_errors(401, 403),
                    },
                },
                "post": {
                    "operationId": "createOrg",
                    "security": _ADMIN,
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1, "maxLength": 200}
                            },
                        }
                    ),
                    "responses": {
                        "201": _resp(
                            "created",
                            {
                                "type": "object",
                                "required": ["org_id", "name", "enroll_token"],
                                "properties": {
                                    "org_id": {"type": "string"},
                                    "name": {"type": "string"},
                                    "enroll_token": {"type": "string"},
                                },
                            },
                        ),
                        **_errors(401, 403, 409, 413, 422),
                    },
                },
            },
            "/v1/admin/mode": {
                "put": {
                    "operationId": "setMode",
                    "security": _ADMIN,
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["mode"],
                            "additionalProperties": False,
                            "properties": {
                                "mode": {
                                    "type": "string",
                                    "enum": ["enforce", "detect_only", "off"],
                                },
                                "org_id": _ORG,
                            },
                        }
                    ),
                    "responses": {
                        "200": _resp("new policy version", _POLICY),
                        **_errors(401, 403, 404, 409, 413, 422, 503),
                    },
                }
            },
            "/v1/admin/model": {
                "put": {
                    "operationId": "assignModel",
                    "security": _ADMIN,
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["model_version"],
                            "additionalProperties": False,
                            "properties": {
                                "model_version": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "nullable": True,
                                },
                                "shadow_model_version": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "nullable": True,
                                },
                                "org_id": _ORG,
                            },
                        }
                    ),
                    "responses": {
                        "200": _resp("new policy version", _POLICY),
                        **_errors(401, 403, 404, 409, 413, 422, 503),
                    },
                }
            },
            "/v1/admin/labels": {
                "post": {
                    "operationId": "addLabels",
                    "security": _ADMIN,
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["labels"],
                            "additionalProperties": False,
                            "properties": {
                                "labels": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 10000,
                                    "items": {
                                        "type": "object",
                                        "required": ["sha256", "label"],
                                        "properties": {
                                            "sha256": _SHA,
                                            "label": {
                                                "type": "string",
                                                "enum": ["malicious", "benign"],
                                            },
                                            "source": {
                                                "type": "string",
                                                "enum": ["analyst", "feed", "customer_report"],
                                            },
                                            "labelled_at": {
                                                "type": "string",
                                                "format": "date-time",
                                            },
                                            "family": {"type": "string"},
                                        },
                                    },
                                }
                            },
                        }
                    ),
                    "responses": {
                        "201": _resp(
                            "label changes recorded",
                            {
                                "type": "object",
                                "properties": {
                                    "recorded": {"type": "integer"},
                                    "samples": {"type": "integer"},
                                    "malicious": {"type": "integer"},
                                },
                            },
                        ),
                        **_errors(401, 403, 413, 422),
                    },
                }
            },
            "/v1/admin/{list}": {
                "post": {
                    "operationId": "addListEntry",
                    "security": _ADMIN,
                    "parameters": [list_param],
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["sha256"],
                            "additionalProperties": False,
                            "properties": {
                                "sha256": _SHA,
                                "reason": {"type": "string"},
                                "expires_at": {
                                    "type": "string",
                                    "format": "date-time",
                                    "nullable": True,
                                },
                                "org_id": _ORG,
                            },
                        }
                    ),
                    "responses": {
                        "200": _resp("new policy version", _POLICY),
                        **_errors(401, 403, 404, 409, 413, 422, 503),
                    },
                }
            },
            "/v1/admin/{list}/{sha256}": {
                "delete": {
                    "operationId": "removeListEntry",
                    "security": _ADMIN,
                    "parameters": [
                        list_param,
                        {"name": "sha256", "in": "path", "required": True, "schema": _SHA},
                        {
                            "name": "org_id",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _resp("new policy version", _POLICY),
                        **_errors(401, 403, 404, 409, 422, 503),
                    },
                }
            },
            "/v1/admin/policy": {
                "get": {
                    "operationId": "getPolicy",
                    "security": _ADMIN,
                    "parameters": [
                        {
                            "name": "as_of",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                        }
                    ],
                    "responses": {
                        "200": _resp("the policy in force then", {"type": "object"}),
                        **_errors(401, 403, 404, 422),
                    },
                }
            },
            "/v1/admin/aggregates": {
                "get": {
                    "operationId": "getAggregates",
                    "security": _ADMIN,
                    "parameters": [
                        {
                            "name": "org_id",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "day",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": _resp(
                            "aggregate rows", {"type": "array", "items": {"type": "object"}}
                        ),
                        **_errors(401, 403, 422),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
