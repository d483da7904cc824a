"""The agent's exception tree.

```
AgentError
├── BundleRejectedError          a bundle the agent refuses to load (the current one stays)
│   ├── ManifestError            manifest.json missing, malformed or inconsistent
│   ├── SchemaMismatchError      the bundle needs a feature schema the agent cannot compute
│   ├── IntegrityError           model.onnx does not match the manifest's sha256
│   └── SelfTestError            canary vectors do not reproduce their expected scores
├── ModelRuntimeError            inference failed or timed out on a loaded model
├── PolicyError                  a policy document that does not validate (or rolls back)
├── QuarantineError              a file cannot be quarantined, restored or deleted
├── UpdateRejectedError          signed-update verification failed; the current state stays
│   ├── MetadataRejectedError    TUF metadata refused: signatures, threshold, rollback, freeze,
│   │                            mix-and-match, oversized metadata
│   └── TargetRejectedError      a target not in signed metadata, too long, or hash mismatch
├── StateError                   the agent's state directory is unusable
│   └── TrustAnchorError         no trusted root, or one that is not a root signed by its
│                                own threshold of root keys (the agent refuses to start)
└── TransportError               the network side (update repository, backend)
    ├── RepositoryUnreachableError   the update repository did not answer (offline)
    │   └── CheckInTimeoutError      a check-in passed its deadline or a download its minimum
    │                                rate (a stalled or dripping mirror): abandoned
    └── SpoolFullError           the telemetry spool hit its byte bound
```

Programmer misuse raises `TypeError`/`ValueError`, outside this tree.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "BundleRejectedError",
    "CheckInTimeoutError",
    "IntegrityError",
    "ManifestError",
    "MetadataRejectedError",
    "ModelRuntimeError",
    "PolicyError",
    "QuarantineError",
    "RepositoryUnreachableError",
    "SchemaMismatchError",
    "SelfTestError",
    "SpoolFullError",
    "StateError",
    "TargetRejectedError",
    "TransportError",
    "TrustAnchorError",
    "UpdateRejectedError",
]


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class BundleRejectedError(AgentError):
    """A bundle failed a check; the agent keeps the model it has."""

    def __init__(self, message: str, *, bundle: str = "") -> None:
        super().__init__(message)
        self.bundle = bundle

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (bundle {self.bundle})" if self.bundle else base


class ManifestError(BundleRejectedError):
    """manifest.json is missing, malformed or inconsistent with the bundle."""


class SchemaMismatchError(BundleRejectedError):
    """The bundle names a feature schema (or vector length) this agent cannot produce."""


class IntegrityError(BundleRejectedError):
    """model.onnx bytes do not hash to the manifest's `model_sha256`."""


class SelfTestError(BundleRejectedError):
    """The canary vectors did not reproduce their expected scores."""

    def __init__(self, message: str, *, bundle: str = "", max_abs_diff: float = 0.0) -> None:
        super().__init__(message, bundle=bundle)
        self.max_abs_diff = max_abs_diff


class ModelRuntimeError(AgentError):
    """A loaded model failed at inference time."""


class PolicyError(AgentError):
    """A policy document failed validation; the reason is the message."""


class QuarantineError(AgentError):
    """A file could not be quarantined, restored or deleted; the reason is the message."""


class UpdateRejectedError(AgentError):
    """A signed update failed verification; the agent keeps its last verified state."""

    def __init__(self, message: str, *, target: str = "") -> None:
        super().__init__(message)
        self.target = target


class MetadataRejectedError(UpdateRejectedError):
    """TUF refused the metadata: signature, threshold, rollback, expiry or mix-and-match."""


class TargetRejectedError(UpdateRejectedError):
    """A target is not in the signed metadata, exceeds its length, or fails its hashes."""


class StateError(AgentError):
    """The agent's state directory cannot be used (no trust anchor, unreadable record)."""


class TrustAnchorError(StateError):
    """No trusted root, or a root that its own threshold of root keys does not sign."""


class TransportError(AgentError):
    """Talking to the update repository or the backend failed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RepositoryUnreachableError(TransportError):
    """The update repository could not be reached; the agent runs on, stale."""


class CheckInTimeoutError(RepositoryUnreachableError):
    """A check-in was abandoned: past its deadline, or a download under the minimum rate."""


class SpoolFullError(TransportError):
    """The telemetry spool reached its byte bound and dropped the oldest batches."""
