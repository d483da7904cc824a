"""The model bundle contract: `manifest.json` beside `model.onnx`, and the checks that need no keys.

A bundle directory holds exactly two files. The manifest names the model, its monotonic integer
version, the feature schema and vector length it needs, its thresholds, its calibration facts, the
training-data fingerprint, the sha256 of `model.onnx`, and canary vectors with their expected
scores. Unknown manifest fields are kept, so re-serialising a manifest gives back the same
bytes (a newer producer must not be silently rewritten by an older agent).

Signing lives in `model_store`; verification of signatures lives in `agent.update.updater`.
This module checks the bundle's internal consistency: schema, integrity hash, and (through
`agent.model`) the canary self-test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import IntegrityError, ManifestError, SchemaMismatchError
from agent.features import is_supported_schema

__all__ = [
    "MANIFEST_NAME",
    "MODEL_NAME",
    "Calibration",
    "Canary",
    "Manifest",
    "Thresholds",
    "check_bundle",
    "file_sha256",
    "read_manifest",
    "write_bundle",
]

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Scores at or above `block` block; at or above `detect` (if set, lower) alert only."""

    block: float
    detect: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.block <= 1.0:
            raise ValueError(f"block threshold {self.block} outside [0, 1]")
        if self.detect is not None and not 0.0 <= self.detect <= self.block:
            raise ValueError(f"detect threshold {self.detect} must be in [0, block]")


@dataclass(frozen=True, slots=True)
class Calibration:
    """What calibration promised and measured on the held-out split."""

    target_fpr: float
    holdout_tpr: float
    holdout_fpr: float
    holdout_size: int


@dataclass(frozen=True, slots=True)
class Canary:
    """One self-test vector and the score the producer's ONNX runtime gave it."""

    vector: tuple[float, ...]
    expected_score: float

    def to_dict(self) -> dict[str, Any]:
        """Serialise with the vector as base64 little-endian float32 (exact and compact)."""
        raw = np.asarray(self.vector, dtype="<f4").tobytes()
        return {"vector_b64": base64.b64encode(raw).decode(), "expected_score": self.expected_score}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Canary:
        """Parse the form written by `to_dict`."""
        raw = base64.b64decode(data["vector_b64"], validate=True)
        vec = np.frombuffer(raw, dtype="<f4")
        return cls(
            vector=tuple(float(x) for x in vec), expected_score=float(data["expected_score"])
        )

    def as_array(self) -> npt.NDArray[np.float32]:
        """The canary vector as float32."""
        return np.asarray(self.vector, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything an agent needs to know about a bundle before it trusts its model."""

    model_id: str
    version: int
    feature_schema: str
    vector_length: int
    thresholds: Thresholds
    calibration: Calibration
    training_fingerprint: str
    created_at: dt.datetime
    model_sha256: str
    canaries: tuple[Canary, ...]
    canary_tolerance: float = 1e-5
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"version must be a positive integer, got {self.version}")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")

    _KNOWN = frozenset(
        {
            "format", "model_id", "version", "feature_schema", "vector_length", "thresholds",
            "calibration", "training_fingerprint", "created_at", "model_sha256", "canaries",
            "canary_tolerance",
        }
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; unknown fields read earlier are written back unchanged."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "format": FORMAT_VERSION,
                "model_id": self.model_id,
                "version": self.version,
                "feature_schema": self.feature_schema,
                "vector_length": self.vector_length,
                "thresholds": {"block": self.thresholds.block, "detect": self.thresholds.detect},
                "calibration": {
                    "target_fpr": self.calibration.target_fpr,
                    "holdout_tpr": self.calibration.holdout_tpr,
                    "holdout_fpr": self.calibration.holdout_fpr,
                    "holdout_size": self.calibration.holdout_size,
                },
                "training_fingerprint": self.training_fingerprint,
                "created_at": self.created_at.isoformat(),
                "model_sha256": self.model_sha256,
                "canaries": [c.to_dict() for c in self.canaries],
                "canary_tolerance": self.canary_tolerance,
            }
        )
        return out

    def to_bytes(self) -> bytes:
        """Canonical bytes: sorted keys, no spaces; the same manifest always hashes the same."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse and validate a manifest.

        Raises:
            ManifestError: a field is missing or has the wrong type or range.
        """
        try:
            if data.get("format") != FORMAT_VERSION:
                raise ManifestError(f"unsupported manifest format {data.get('format')!r}")
            th = data["thresholds"]
            cal = data["calibration"]
            created = dt.datetime.fromisoformat(data["created_at"])
            return cls(
                model_id=str(data["model_id"]),
                version=_int(data["version"], "version"),
                feature_schema=str(data["feature_schema"]),
                vector_length=_int(data["vector_length"], "vector_length"),
                thresholds=Thresholds(
                    block=float(th["block"]),
                    detect=None if th.get("detect") is None else float(th["detect"]),
                ),
                calibration=Calibration(
                    target_fpr=float(cal["target_fpr"]),
                    holdout_tpr=float(cal["holdout_tpr"]),
                    holdout_fpr=float(cal["holdout_fpr"]),
                    holdout_size=_int(cal["holdout_size"], "holdout_size"),
                ),
                training_fingerprint=str(data["training_fingerprint"]),
                created_at=created,
                model_sha256=str(data["model_sha256"]),
                canaries=tuple(Canary.from_dict(c) for c in data["canaries"]),
                canary_tolerance=float(data.get("canary_tolerance", 1e-5)),
                extra={k: v for k, v in data.items() if k not in cls._KNOWN},
            )
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"invalid manifest: {type(exc).__name__}: {exc}") from exc


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Read `manifest.json` from a bundle directory.

    Raises:
        ManifestError: the file is missing, not JSON, or not a valid manifest.
    """
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ManifestError("bundle has no manifest.json", bundle=str(bundle_dir)) from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"unreadable manifest: {exc}", bundle=str(bundle_dir)) from exc
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object", bundle=str(bundle_dir))
    return Manifest.from_dict(data)


def check_bundle(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Check schema and integrity of a bundle (not the self-test, which needs a runtime).

    Raises:
        ManifestError: manifest missing or invalid.
        SchemaMismatchError: the agent cannot compute the bundle's feature schema.
        IntegrityError: model.onnx is missing or does not match `model_sha256`.
    """
    manifest = read_manifest(bundle_dir)
    if not is_supported_schema(manifest.feature_schema, manifest.vector_length):
        raise SchemaMismatchError(
            f"bundle needs feature schema {manifest.feature_schema!r} "
            f"({manifest.vector_length} floats), which this agent cannot compute",
            bundle=str(bundle_dir),
        )
    for canary in manifest.canaries:
        if len(canary.vector) != manifest.vector_length:
            raise ManifestError("canary vector has the wrong length", bundle=str(bundle_dir))
    model_path = Path(bundle_dir) / MODEL_NAME
    if not model_path.is_file():
        raise IntegrityError("bundle has no model.onnx", bundle=str(bundle_dir))
    actual = file_sha256(model_path)
    if actual != manifest.model_sha256:
        raise IntegrityError(
            f"model.onnx sha256 {actual[:12]}… does not match "
            f"manifest {manifest.model_sha256[:12]}…",
            bundle=str(bundle_dir),
        )
    return manifest


def write_bundle(
    bundle_dir: str | os.PathLike[str], model_bytes: bytes, manifest: Manifest
) -> Path:
    """Write `model.onnx` and `manifest.json` into a new directory (producer side helper)."""
    out = Path(bundle_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_NAME).write_bytes(model_bytes)
    (out / MANIFEST_NAME).write_bytes(manifest.to_bytes())
    return out
