"""The backend's exception tree; `backend.server.app` maps each branch to one HTTP status.

```
BackendError
├── AuthError                401  missing or unknown token
│   └── ForbiddenError       403  a valid token used outside its org or role
├── NotFoundError            404  an org, list entry or policy that does not exist
├── ConflictError            409  a name already taken
│   └── PolicyConflictError  409  the policy changed since it was read (carries the version)
├── BatchInvalidError        422  a telemetry batch or request body that does not validate
├── PayloadTooLargeError     413  a body over the configured limit
├── UnsupportedMediaError    415  a body in a content type the route does not take
└── PublishError             503  the change is recorded; its signed publication failed (retried)
```

Core code (`store.py`, `ingest.py`, `admin.py`) raises these and never builds HTTP responses.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackendError",
    "BatchInvalidError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PolicyConflictError",
    "PublishError",
    "UnsupportedMediaError",
]


class BackendError(Exception):
    """Root of every error the backend raises on purpose."""


class AuthError(BackendError):
    """No token, or a token the backend does not know."""


class ForbiddenError(AuthError):
    """A known token used for something its org or role does not allow."""


class NotFoundError(BackendError):
    """The named thing does not exist."""


class ConflictError(BackendError):
    """The name is already taken."""


class PolicyConflictError(ConflictError):
    """Another change was recorded since this one read the policy (compare-and-set failed).

    `current_version` is the version now in force; the caller re-reads and retries.
    """

    def __init__(self, message: str, *, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class BatchInvalidError(BackendError):
    """A telemetry batch or request body failed validation; the message says why."""


class PayloadTooLargeError(BackendError):
    """The request body is over the limit."""

    def __init__(self, message: str, *, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes


class PublishError(BackendError):
    """Signing the recorded policy into the repository failed.

    The change is recorded (publication follows the COMMIT) and stays pending: every serving
    replica's reconciliation (`backend.server.replica`, within seconds), the next change, or
    `backend.admin.publish_pending` at the next start publishes the newest version.
    """


class UnsupportedMediaError(BackendError):
    """The request body's content type is not the one the route takes."""
