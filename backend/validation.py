"""Validation of operator input in the core: names, sizes and ids, one rule and one message each.

The HTTP routes and the `fleetward backend` commands call the same core functions, which call
these, so both refuse the same things with the same one-line message (`BatchInvalidError`,
HTTP 422, a `ClickException` on the command line).

The rules are stated once, as patterns and bounds (`SHA256_PATTERN`, `NAME_PATTERN`,
`MAX_USES`, ...): the checks below match against them, and the pydantic models of the HTTP
API (`backend.server.api`, through the field types of `backend.server._fields`) carry the same
constants, so `/openapi.json` states what the server checks (an outside fuzzer found
schema-valid bodies refused with 422 while the schema said nothing). This module imports no
pydantic: the store calls it, and a process that only writes the store (the simulator's fold
writer) loads none.
"""

from __future__ import annotations

import datetime as dt
import re

from backend.errors import BatchInvalidError

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_REASON_CHARS",
    "MAX_USES",
    "NAME_PATTERN",
    "SHA256_PATTERN",
    "check_org_name",
    "check_reason",
    "check_sha256",
    "check_token_limits",
]

MAX_NAME_CHARS = 200
MAX_REASON_CHARS = 1000
MAX_USES = 1_000_000_000
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
"""A sample id: 64 hex characters (either case; stored lower-case)."""

# Unicode categories Cc, Cf, Zl and Zp (control, format, line and paragraph separators) as
# code point ranges, and the white space outside them (`str.isspace`): written out because
# JSON Schema patterns have no `\p{..}`; tests/backend/test_validation.py recomputes both from
# `unicodedata` so they cannot drift from the running Python's Unicode tables.
_CONTROL_RANGES = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
_SPACE_RANGES = (
    (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x202F, 0x202F),
    (0x205F, 0x205F), (0x3000, 0x3000),
)  # fmt: skip


def _char(code: int) -> str:
    # \uXXXX reads the same in ECMA-262, Python and Rust patterns; astral code points are
    # given as themselves (ECMA-262 without the u flag has no escape for them)
    return f"\\u{code:04X}" if code <= 0xFFFF else chr(code)


def _class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in ranges)


_NOT_CONTROL = f"[^{_class(_CONTROL_RANGES)}]"
_NOT_CONTROL_OR_SPACE = f"[^{_class(_CONTROL_RANGES)}{_class(_SPACE_RANGES)}]"
NAME_PATTERN = f"^{_NOT_CONTROL}*{_NOT_CONTROL_OR_SPACE}{_NOT_CONTROL}*$"
"""An organization name: no control or format characters, not only white space."""

_SHA256 = re.compile(SHA256_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_CONTROL = re.compile(f"[{_class(_CONTROL_RANGES)}]")


def check_org_name(name: str) -> str:
    """An organization name: 1 to 200 printable characters, not only spaces.

    Raises:
        BatchInvalidError: it is not; the message says why.
    """
    if _CONTROL.search(name):
        raise BatchInvalidError("name: must not contain control characters")
    if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        raise BatchInvalidError(f"name: must be 1 to {MAX_NAME_CHARS} characters, not blank")
    return name


def check_sha256(value: str) -> str:
    """A sample id: 64 hex characters; returned lower-case.

    Raises:
        BatchInvalidError: it is not.
    """
    if not _SHA256.fullmatch(value):  # `$` in a fullmatch: no trailing newline slips through
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
    if max_uses is not None and not 1 <= max_uses <= MAX_USES:
        raise BatchInvalidError(f"max_uses: must be between 1 and {MAX_USES}")
