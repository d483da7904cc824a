"""Scores for every catalog sample from the real ONNX bundles, batched and cached.

The simulator never invents a score: each model version's scores come from its bundle loaded
by `agent.model.load_bundle` (schema, integrity and canary self-test checked) and run with
`score_batch` over the samples' cached `static-v1` vectors. Scores are computed once per
(bundle, corpus) and cached in memory and, when a cache directory is given, on disk as `.npy`
keyed by the model's sha256 and the corpus fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.bundle import Thresholds
from agent.model import load_bundle

__all__ = ["ModelScores", "score_catalog"]

_MEMO: dict[tuple[str, str], npt.NDArray[np.float32]] = {}


@dataclass(frozen=True, slots=True)
class ModelScores:
    """One bundle's scores over the catalog (row order of the features) and its thresholds."""

    version: int
    scores: npt.NDArray[np.float32]
    thresholds: Thresholds
    model_sha256: str


def _fingerprint(features: npt.NDArray[np.float32]) -> str:
    return hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest()[:24]


def score_catalog(
    bundle_dir: str | Path,
    features: npt.NDArray[np.float32],
    *,
    cache_dir: str | Path | None = None,
    batch: int = 4096,
) -> ModelScores:
    """Load `bundle_dir` with the agent's loader and score every row of `features`.

    Raises:
        agent.errors.BundleRejectedError: the bundle fails the agent's checks.
    """
    model = load_bundle(bundle_dir)
    key = (model.manifest.model_sha256, _fingerprint(features))
    scores = _MEMO.get(key)
    path = Path(cache_dir) / f"scores-{key[0][:16]}-{key[1]}.npy" if cache_dir else None
    if scores is None and path is not None and path.exists():
        scores = np.load(path)
    if scores is None:
        parts = [
            model.scorer.score_batch(features[i : i + batch])
            for i in range(0, features.shape[0], batch)
        ]
        scores = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, scores)
    _MEMO[key] = scores
    return ModelScores(
        model.manifest.version, scores, model.manifest.thresholds, model.manifest.model_sha256
    )
