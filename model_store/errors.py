"""The model store's exception tree.

```
ModelStoreError
├── CorpusError          a corpus directory that is missing, foreign or inconsistent
├── TrainingError        training, export or ONNX parity failed
└── RepositoryError      the signed update repository (keys, metadata, publishing)
```
"""

from __future__ import annotations

__all__ = ["CorpusError", "ModelStoreError", "RepositoryError", "TrainingError"]


class ModelStoreError(Exception):
    """Root of every error the model store raises on purpose."""


class CorpusError(ModelStoreError):
    """A corpus directory is missing, foreign or inconsistent."""


class TrainingError(ModelStoreError):
    """Training, ONNX export or the ONNX/scikit-learn parity check failed."""


class RepositoryError(ModelStoreError):
    """The signed update repository could not be read, written or signed."""
