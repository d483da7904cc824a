"""Validation of operator input in the core: names, sizes and ids, one rule and one message each.

The HTTP routes and the `fleetward backend` commands call the same core functions, which call
these, so both refuse the same things with the same one-line message (`BatchInvalidError`,
HTTP 422, a `ClickException` on the command line). Pydantic at the HTTP edge checks only the
shape of a body (types, unknown fields); what a value may be is decided here.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from backend.errors import BatchInvalidError

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_REASON_CHARS",
    "check_org_name",
    "check_reason",
    "check_sha256",
    "check_token_limits",
]

MAX_NAME_CHARS = 200
MAX_REASON_CHARS = 1000
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def check_org_name(name: str) -> str:
    """An organization name: 1 to 200 printable characters, not only spaces.

    Raises:
        BatchInvalidError: it is not; the message says why.
    """
    if not name.strip() or len(name) > MAX_NAME_CHARS:
        raise BatchInvalidError(f"name: must be 1 to {MAX_NAME_CHARS} characters, not blank")
    if not _printable(name):
        raise BatchInvalidError("name: must not contain control characters")
    return name


def check_sha256(value: str) -> str:
    """A sample id: 64 hex characters; returned lower-case.

    Raises:
        BatchInvalidError: it is not.
    """
    if not _SHA256.fullmatch(value):
        raise BatchInvalidError("sha256: must be 64 hex characters")
    return value.lower()


def check_reason(reason: str) -> str:
    """A list entry's reason: at most 1000 characters.

    Raises:
        BatchInvalidError: it is longer.
    """
    if len(reason) > MAX_REASON_CHARS:
        raise BatchInvalidError(f"reason: must be at most {MAX_REASON_CHARS} characters")
    return reason


def check_token_limits(
    expires_at: dt.datetime | None, max_uses: int | None, now: dt.datetime
) -> None:
    """An enroll token's limits: an expiry with a UTC offset after `now`, a use limit >= 1.

    Raises:
        BatchInvalidError: a limit is not valid.
    """
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
        raise BatchInvalidError("expires_at: must be a time with a UTC offset, after now")
    if max_uses is not None and not 1 <= max_uses <= 1_000_000_000:
        raise BatchInvalidError("max_uses: must be between 1 and 1000000000")
