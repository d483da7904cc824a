"""The release gate's I/O shell: golden sets from a corpus, bundles scored, the backend asked.

`model_store.gate.judgement` judges; this module gathers what it judges. The golden set is the
corpus's held-out test split (`model_store.train.split_of`: synthetic samples by sha256, real benign
files by whole source folder), which no version trains or calibrates on, so every version is judged
on the same unseen samples: real benign files, synthetic benign samples (customers' in-house tools
included) and malware of every era. Its vectors come from the corpus's feature cache; a few golden
files are re-extracted with `agent.features` to measure the vector length the agent's code produces
now and to catch a stale cache.

The backend is an optional extra and is restructuring: `backend_surge_predictor` imports it
only when called and looks its public names up on the `backend` package first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.bundle import MODEL_NAME, Manifest, read_manifest
from agent.errors import AgentError, BundleRejectedError, ModelRuntimeError
from agent.features import SCHEMA, extract_features
from agent.model import ONNXScorer, load_bundle
from model_store.corpus import FIELD_ONLY_FAMILIES, load_corpus
from model_store.errors import BundleRefusedError, CorpusError, ModelStoreError
from model_store.gate.judgement import (
    CanaryFacts,
    GateConfig,
    GateInputs,
    GateReport,
    GoldenLabels,
    ModelScores,
    SchemaFacts,
    check_schema,
    judge,
    surge_pairs,
)
from model_store.train import split_of

__all__ = [
    "GOLDEN_SPLIT",
    "GoldenSet",
    "SurgePredictor",
    "backend_surge_predictor",
    "load_golden",
    "run_gate",
]

GOLDEN_SPLIT = "test"
_SCHEMA_PROBES = 4
_SCORE_TIMEOUT_S = 600.0  # batch scoring of a whole golden set, not an endpoint's hot path

SurgePredictor = Callable[[Path, Path, dt.datetime], Mapping[str, float]]
"""(current bundle, candidate bundle, now) -> predicted new FP alerts per day, per org."""


@dataclass(frozen=True, slots=True)
class GoldenSet:
    """The golden samples of a corpus: vectors, labels, and where their bytes are."""

    root: Path
    features: npt.NDArray[np.float32]
    malicious: npt.NDArray[np.bool_]
    real: npt.NDArray[np.bool_]
    paths: tuple[Path, ...]
    agent_vector_length: int

    @property
    def labels(self) -> GoldenLabels:
        """The labels `model_store.gate.judgement` judges with."""
        return GoldenLabels(malicious=self.malicious, real=self.real)


def load_golden(corpus_dir: str | os.PathLike[str]) -> GoldenSet:
    """The held-out split of the corpus at `corpus_dir`, without customers' in-house software.

    Re-extracts a few golden files with `agent.features` and compares them with the cache.

    Raises:
        CorpusError: not a corpus, no golden samples, or the feature cache does not match what
            `agent.features` computes now (remake the corpus).
    """
    corpus = load_corpus(corpus_dir)
    # the vendor's own held-out samples: customers' in-house software never reaches the lab
    # (FIELD_ONLY_FAMILIES); what a new version does to it is the org_surge check's to judge
    mask = np.asarray(
        [
            split_of(r.sha256, r.folder) == GOLDEN_SPLIT and r.family not in FIELD_ONLY_FAMILIES
            for r in corpus.records
        ],
        dtype=bool,
    )
    if not mask.any():
        raise CorpusError(f"{corpus_dir}: no golden ({GOLDEN_SPLIT} split) samples")
    records = [r for r, m in zip(corpus.records, mask, strict=True) if m]
    features = corpus.features[mask]
    paths = tuple(corpus.sample_path(r) for r in records)
    # generated samples (they live in the corpus) first, then one real file; a real file
    # whose bytes changed since the corpus was made (a package upgrade) is no probe
    probes = [i for i, r in enumerate(records) if not r.is_real][:_SCHEMA_PROBES]
    probes += [i for i, r in enumerate(records) if r.is_real]
    lengths: set[int] = set()
    real_probed = False
    for i in probes:
        record = records[i]
        if record.is_real and real_probed:
            break
        try:
            data = paths[i].read_bytes()
        except OSError as exc:
            if record.is_real:
                continue
            raise CorpusError(f"golden sample {paths[i]} is unreadable: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != record.sha256:
            if record.is_real:
                continue
            raise CorpusError(f"golden sample {paths[i]} changed since the corpus was made")
        vec = extract_features(data)
        lengths.add(int(vec.shape[0]))
        real_probed = real_probed or record.is_real
        if vec.shape == features[i].shape and not np.array_equal(vec, features[i]):
            raise CorpusError(
                f"{corpus_dir}: cached features differ from agent.features for {paths[i].name}; "
                "the feature code changed since the corpus was made"
            )
    if not lengths:
        raise CorpusError(f"{corpus_dir}: no golden sample could be re-extracted")
    if len(lengths) != 1:
        raise CorpusError(f"agent.features produced vectors of lengths {sorted(lengths)}")
    return GoldenSet(
        root=Path(corpus_dir),
        features=features,
        malicious=np.asarray([r.is_malicious for r in records], dtype=bool),
        real=np.asarray([r.is_real for r in records], dtype=bool),
        paths=paths,
        agent_vector_length=lengths.pop(),
    )


def _refused(bundle_dir: Path, why: str) -> BundleRefusedError:
    return BundleRefusedError(why, bundle=str(bundle_dir))


def _read_candidate(bundle_dir: Path) -> tuple[Manifest, bytes, ort.InferenceSession]:
    try:
        manifest = read_manifest(bundle_dir)
        model_bytes = (bundle_dir / MODEL_NAME).read_bytes()
    except AgentError as exc:
        raise _refused(bundle_dir, str(exc)) from exc
    except OSError as exc:
        raise _refused(bundle_dir, f"cannot read {MODEL_NAME}: {exc}") from exc
    if hashlib.sha256(model_bytes).hexdigest() != manifest.model_sha256:
        raise _refused(bundle_dir, "model.onnx does not match the manifest's sha256")
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise _refused(bundle_dir, f"model does not load: {exc}") from exc
    return manifest, model_bytes, session


def _input_length(session: ort.InferenceSession) -> int | None:
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        return -1  # never a schema's length: the schema check fails and says so
    width = inputs[0].shape[1]
    return width if isinstance(width, int) else None


def _scores(model: ONNXScorer, x: npt.NDArray[np.float32], bundle: Path) -> npt.NDArray[np.float64]:
    try:
        return model.score_batch(x).astype(np.float64)
    except ModelRuntimeError as exc:
        raise _refused(bundle, f"scoring the golden set failed: {exc}") from exc


def run_gate(
    bundle_dir: str | os.PathLike[str],
    *,
    golden: GoldenSet,
    now: dt.datetime,
    current_bundle: str | os.PathLike[str] | None = None,
    surge: SurgePredictor | None = None,
    config: GateConfig | None = None,
) -> GateReport:
    """Score the candidate (and the current model) on `golden` and judge it.

    `current_bundle` is the published model the candidate replaces (None for the first one);
    `surge`, when given, predicts the per-org false-positive surge of that replacement.

    Raises:
        BundleRefusedError: the bundle cannot be judged at all (unreadable manifest, model
            bytes not matching the manifest, a model onnxruntime cannot load); a forced
            publish cannot override these.
        ModelStoreError: the current bundle does not load, or the surge prediction failed.
    """
    path = Path(bundle_dir)
    cfg = config or GateConfig()
    manifest, model_bytes, session = _read_candidate(path)
    schema = SchemaFacts(
        manifest_schema=manifest.feature_schema,
        manifest_vector_length=manifest.vector_length,
        model_input_length=_input_length(session),
        agent_schema=SCHEMA.name,
        agent_vector_length=golden.agent_vector_length,
    )
    del session
    if any(len(c.vector) != manifest.vector_length for c in manifest.canaries):
        raise _refused(path, "a canary vector's length differs from the manifest's vector_length")
    fits = check_schema(schema).passed and golden.features.shape[1] == schema.agent_vector_length
    if not fits:
        inputs = GateInputs(manifest.version, schema, golden.labels)
        return judge(inputs, cfg, now=now)
    scorer = ONNXScorer(
        model_bytes, vector_length=manifest.vector_length, timeout_s=_SCORE_TIMEOUT_S
    )
    canary = None
    if manifest.canaries:
        got = _scores(scorer, np.stack([c.as_array() for c in manifest.canaries]), path)
        canary = CanaryFacts(
            expected=tuple(c.expected_score for c in manifest.canaries),
            got=tuple(float(v) for v in got),
            manifest_tolerance=manifest.canary_tolerance,
        )
    else:
        canary = CanaryFacts((), (), manifest.canary_tolerance)
    new = ModelScores(
        manifest.version,
        _scores(scorer, golden.features, path),
        manifest.thresholds.block,
        manifest.thresholds.detect,
    )
    old = None
    old_skipped = "no current model published"
    org_surge = None
    skipped = "no backend store given"
    if current_bundle is None:
        skipped = "no current model published"
    else:
        try:
            current = load_bundle(current_bundle, timeout_s=_SCORE_TIMEOUT_S)
        except BundleRejectedError as exc:
            raise ModelStoreError(f"the current published model does not load: {exc}") from exc
        if (current.manifest.feature_schema, current.manifest.vector_length) == (
            SCHEMA.name,
            golden.agent_vector_length,
        ):
            th = current.manifest.thresholds
            cur = _scores(current.scorer, golden.features, Path(current_bundle))
            old = ModelScores(current.version, cur, th.block, th.detect)
        else:
            old_skipped = (
                f"current v{current.version} needs schema {current.manifest.feature_schema}, "
                "which the golden vectors are not"
            )
        if surge is not None:
            org_surge = surge_pairs(surge(Path(current_bundle), path, now))
    inputs = GateInputs(
        manifest.version,
        schema,
        golden.labels,
        canary=canary,
        new=new,
        old=old,
        old_skipped=old_skipped,
        org_surge=org_surge,
        org_surge_skipped=skipped,
    )
    return judge(inputs, cfg, now=now)


def _backend_name(name: str, *modules: str) -> Any:
    """A public backend name: from the `backend` package if it re-exports it, else `modules`."""
    for module in ("backend", *modules):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ModelStoreError(
        f"the backend's {name} is not importable: install the backend extra "
        "(pip install 'fleetward[backend]')"
    )


def backend_surge_predictor(
    db: str | os.PathLike[str], *, fp_budget_per_day: float | None = None
) -> SurgePredictor:
    """A `SurgePredictor` over the backend store at `db` (SQLite path or PostgreSQL URL).

    Each call opens the store, runs the backend's `predict_transition` (every org, its policy
    in force at `now`) and closes the store.

    Raises:
        ModelStoreError: (when called) the backend extra is missing, or the prediction failed.
    """
    target = os.fspath(db)

    def predict(current: Path, candidate: Path, now: dt.datetime) -> Mapping[str, float]:
        open_store = _backend_name("open_store", "backend.store")
        predict_transition = _backend_name("predict_transition", "backend.analysis")
        store = open_store(target)
        try:
            kwargs: dict[str, Any] = {"now": now}
            if fp_budget_per_day is not None:
                kwargs["fp_budget_per_day"] = fp_budget_per_day
            report = predict_transition(store, current, candidate, **kwargs)
        except AgentError as exc:
            raise ModelStoreError(f"transition prediction failed: {exc}") from exc
        finally:
            store.close()
        return {org: float(o.predicted_new_fp_alerts_per_day) for org, o in report.per_org.items()}

    return predict
