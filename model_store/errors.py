"""The model store's exception tree.

```
ModelStoreError
├── CorpusError          a corpus directory that is missing, foreign or inconsistent
├── TrainingError        training, export or ONNX parity failed
└── RepositoryError      the signed update repository (keys, metadata, publishing)
    ├── BundleRefusedError   a bundle that fails its own checks is never signed
    │   └── GateRefusedError     ... nor one the release gate refuses (model_store.gate)
    └── PolicyRefusedError   a policy document that does not validate is never signed
```
"""

from __future__ import annotations

__all__ = [
    "BundleRefusedError",
    "CorpusError",
    "GateRefusedError",
    "ModelStoreError",
    "PolicyRefusedError",
    "RepositoryError",
    "TrainingError",
]


class ModelStoreError(Exception):
    """Root of every error the model store raises on purpose."""


class CorpusError(ModelStoreError):
    """A corpus directory is missing, foreign or inconsistent."""


class TrainingError(ModelStoreError):
    """Training, ONNX export or the ONNX/scikit-learn parity check failed."""


class RepositoryError(ModelStoreError):
    """The signed update repository could not be read, written or signed."""


class BundleRefusedError(RepositoryError):
    """A bundle failed its schema, integrity or self-test check, so it was not published."""

    def __init__(self, reason: str, *, bundle: str = "") -> None:
        super().__init__(f"bundle refused: {reason}")
        self.reason = reason
        self.bundle = bundle


class GateRefusedError(BundleRefusedError):
    """The release gate failed the bundle and no forced reason was given; nothing was signed.

    `failed` names the failed checks; `report_paths` are the saved HTML and JSON reports.
    """

    def __init__(
        self,
        failed: tuple[str, ...],
        detail: str,
        *,
        bundle: str = "",
        report_paths: tuple[str, ...] = (),
    ) -> None:
        super().__init__(f"release gate failed {', '.join(failed)}: {detail}", bundle=bundle)
        self.failed = failed
        self.report_paths = report_paths


class PolicyRefusedError(RepositoryError):
    """A policy document failed validation (or would roll back), so it was not published."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"policy refused: {reason}")
        self.reason = reason
