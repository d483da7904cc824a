"""The validation rules of `backend.validation` as pydantic field types for the HTTP models.

Kept apart from the rules so that the store, which calls the rules, imports no pydantic: a
process that only writes aggregates (the simulator's fold writer) never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from backend.errors import BatchInvalidError
from backend.validation import (
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    NAME_PATTERN,
    SHA256_PATTERN,
    check_org_name,
    check_reason,
    check_sha256,
)

__all__ = ["HexSha256", "OrgName", "Reason"]

# The check is `backend.validation`'s function (so the API and the command line refuse by the
# same rule, in the same words) and the schema is built from the same constants. Inside a model
# the rule's `BatchInvalidError` becomes a pydantic error, so the 422 names where the value was
# (`labels.1.sha256: must be 64 hex characters`, not a bare `sha256: ...` that leaves the
# client to guess which of its rows).


def _in_model(check: Callable[[str], str]) -> AfterValidator:
    def validate(value: str) -> str:
        try:
            return check(value)
        except BatchInvalidError as exc:
            # the rule's words without its own field prefix: pydantic's location replaces it
            rule = str(exc).split(": ", 1)[-1]
            raise PydanticCustomError("fleetward_rule", "{rule}", {"rule": rule}) from None

    return AfterValidator(validate)


OrgName = Annotated[
    str,
    _in_model(check_org_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_CHARS,
            "pattern": NAME_PATTERN,
        }
    ),
]
HexSha256 = Annotated[
    str,
    _in_model(check_sha256),
    WithJsonSchema({"type": "string", "pattern": SHA256_PATTERN}),
]
Reason = Annotated[
    str,
    _in_model(check_reason),
    WithJsonSchema({"type": "string", "maxLength": MAX_REASON_CHARS}),
]
