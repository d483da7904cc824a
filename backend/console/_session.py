"""Who is looking at the console, the CSRF token of their session, and the secure headers.

The session lives in a signed cookie (Starlette's `SessionMiddleware`, itsdangerous'
`TimestampSigner`): HttpOnly, `SameSite=Strict`, scoped to the console's path and expiring
after `ConsoleConfig.session_ttl_s`; the signature's timestamp is checked on every request, so
an old cookie is refused even if a browser kept it. It holds the viewer (admin, or read-only for
one org) and a random CSRF token; every form carries that token and a POST without it, or with
another, is refused with 403 (a synchronizer token; SameSite=Strict is the second fence).
"""

from __future__ import annotations

import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "SecureHeaders",
    "Viewer",
    "csrf_token",
    "is_valid_csrf",
    "read_form",
    "sign_in",
    "viewer_of",
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in operator: an admin, or a read-only viewer of one org (`org_id`)."""

    admin: bool
    org_id: str | None = None

    @property
    def label(self) -> str:
        """How pages name the viewer."""
        return "admin" if self.admin else f"read-only: {self.org_id}"

    def may_see(self, org_id: str | None) -> bool:
        """Admins see everything; an org viewer only its own org."""
        return self.admin or (org_id is not None and org_id == self.org_id)


def _session(request: Request) -> dict[str, Any]:
    session: dict[str, Any] = request.session
    return session


def viewer_of(request: Request) -> Viewer | None:
    """The session's viewer, or None when nobody is signed in."""
    who = _session(request).get("who")
    if not isinstance(who, dict):
        return None
    if who.get("admin") is True:
        return Viewer(True)
    org = who.get("org")
    return Viewer(False, org) if isinstance(org, str) else None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use, for the login form too)."""
    session = _session(request)
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def is_valid_csrf(request: Request, form: dict[str, str]) -> bool:
    """True when the form's `csrf_token` is the session's (compared in constant time)."""
    expected = _session(request).get("csrf")
    given = form.get("csrf_token", "")
    return isinstance(expected, str) and bool(given) and secrets.compare_digest(expected, given)


def sign_in(request: Request, viewer: Viewer) -> None:
    """Start a fresh session for `viewer` with a new CSRF token (no fixation of the old one)."""
    session = _session(request)
    session.clear()
    session["who"] = {"admin": viewer.admin, "org": viewer.org_id}
    session["csrf"] = secrets.token_urlsafe(32)


async def read_form(request: Request) -> dict[str, str] | None:
    """An `application/x-www-form-urlencoded` body as a dict (last value wins), bounded in size.

    Returns None for another content type or a body over 64 KiB.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


class SecureHeaders:
    """Adds CSP (no inline scripts, no framing), nosniff, no referrer, no-store to responses.

    A response that sets its own `content-security-policy` (a saved report page) keeps it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
