"""Loading a bundle into onnxruntime, the canary self-test, and scoring.

Invariants:
- The bytes that are hashed are the bytes that are loaded (read once, no re-open between the
  integrity check and the session), so a file swapped under the agent cannot slip through.
- A model that fails to load, has the wrong input width, or misses its canary scores is refused
  with a `BundleRejectedError`; nothing is returned half-checked.
- One onnxruntime session per model, single-threaded: an endpoint agent must stay light.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent._clock import monotonic_s
from agent.bundle import MODEL_NAME, Manifest, read_manifest
from agent.errors import (
    BundleRejectedError,
    IntegrityError,
    ModelRuntimeError,
    SchemaMismatchError,
    SelfTestError,
)
from agent.features import is_supported_schema

__all__ = ["LoadedModel", "ONNXScorer", "load_bundle", "self_test"]


class ONNXScorer:
    """Scores float32 feature vectors with one onnxruntime session (probability of malice)."""

    def __init__(self, model_bytes: bytes, *, vector_length: int, timeout_s: float = 1.0) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # No arena and no memory-pattern plan: a run allocates what it needs and frees it, so a
        # larger model's peak is not held for the agent's lifetime (for the test bundles the
        # session's ~18 MB is onnxruntime's own code, which no option moves).
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        self._session = ort.InferenceSession(
            model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"model has {len(inputs)} inputs, expected 1")
        shape = inputs[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != vector_length):
            raise ValueError(f"model input shape {shape} does not take {vector_length} floats")
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "probabilities" if "probabilities" in outputs else outputs[-1]
        self._input = inputs[0].name
        self._outputs = [self._output]
        self.vector_length = vector_length
        self.timeout_s = timeout_s

    def score_batch(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Scores in [0, 1] for a (n, vector_length) float32 batch.

        Raises:
            ModelRuntimeError: inference failed, returned non-finite scores, or exceeded the
                timeout (the late result is discarded rather than trusted).
        """
        batch = np.ascontiguousarray(vectors, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.vector_length:
            raise ValueError(f"expected (n, {self.vector_length}) vectors, got {batch.shape}")
        started = monotonic_s()
        try:
            probs = self._session.run(self._outputs, {self._input: batch})[0]
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelRuntimeError(f"inference failed: {exc}") from exc
        if monotonic_s() - started > self.timeout_s:
            raise ModelRuntimeError(f"inference exceeded {self.timeout_s}s")
        scores = np.asarray(probs, dtype=np.float32)
        scores = scores[:, 1] if scores.ndim == 2 else scores.reshape(-1)
        if scores.shape[0] != batch.shape[0] or not np.all(np.isfinite(scores)):
            raise ModelRuntimeError("model returned malformed scores")
        return scores

    def score(self, vector: npt.NDArray[np.float32]) -> float:
        """Score one vector; the hot path of a scan."""
        probs = self._session.run(self._outputs, {self._input: vector.reshape(1, -1)})[0]
        value = float(probs[0, 1] if probs.ndim == 2 else probs[0])
        if not 0.0 <= value <= 1.0:
            raise ModelRuntimeError(f"model returned score {value}")
        return value


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A bundle that passed schema, integrity and self-test checks, ready to score."""

    manifest: Manifest
    scorer: ONNXScorer
    path: Path

    @property
    def version(self) -> int:
        """The bundle's monotonic integer version."""
        return self.manifest.version


def self_test(manifest: Manifest, scorer: ONNXScorer, *, bundle: str = "") -> float:
    """Run the canary vectors and return the largest deviation from their expected scores.

    Raises:
        SelfTestError: a canary deviates by more than the manifest's tolerance, or no canaries.
    """
    if not manifest.canaries:
        raise SelfTestError("bundle has no canary vectors to self-test with", bundle=bundle)
    vectors = np.stack([c.as_array() for c in manifest.canaries])
    expected = np.asarray([c.expected_score for c in manifest.canaries], dtype=np.float64)
    try:
        got = scorer.score_batch(vectors).astype(np.float64)
    except ModelRuntimeError as exc:
        raise SelfTestError(f"self-test could not run: {exc}", bundle=bundle) from exc
    diff = float(np.max(np.abs(got - expected)))
    if diff > manifest.canary_tolerance:
        raise SelfTestError(
            f"self-test failed: canary scores differ by {diff:.3g} "
            f"(tolerance {manifest.canary_tolerance:.1g})",
            bundle=bundle,
            max_abs_diff=diff,
        )
    return diff


def load_bundle(bundle_dir: str | os.PathLike[str], *, timeout_s: float = 1.0) -> LoadedModel:
    """Load a bundle directory, refusing it unless every check passes.

    Raises:
        ManifestError: manifest missing or invalid.
        SchemaMismatchError: the agent cannot compute the bundle's feature schema.
        IntegrityError: model.onnx missing or not matching the manifest's sha256.
        SelfTestError: the canary self-test failed.
        BundleRejectedError: onnxruntime could not load the model.
    """
    path = Path(bundle_dir)
    manifest = read_manifest(path)
    if not is_supported_schema(manifest.feature_schema, manifest.vector_length):
        raise SchemaMismatchError(
            f"bundle needs feature schema {manifest.feature_schema!r} "
            f"({manifest.vector_length} floats), which this agent cannot compute",
            bundle=str(path),
        )
    try:
        model_bytes = (path / MODEL_NAME).read_bytes()
    except OSError as exc:
        raise IntegrityError(f"cannot read model.onnx: {exc}", bundle=str(path)) from exc
    if hashlib.sha256(model_bytes).hexdigest() != manifest.model_sha256:
        raise IntegrityError("model.onnx does not match the manifest's sha256", bundle=str(path))
    try:
        scorer = ONNXScorer(model_bytes, vector_length=manifest.vector_length, timeout_s=timeout_s)
    except Exception as exc:  # any onnxruntime load failure means: refuse the bundle
        raise BundleRejectedError(f"model does not load: {exc}", bundle=str(path)) from exc
    self_test(manifest, scorer, bundle=str(path))
    return LoadedModel(manifest=manifest, scorer=scorer, path=path)
