"""Training, threshold calibration, ONNX export and bundling of `static-v1` models.

Gradient-boosted trees (scikit-learn's `GradientBoostingClassifier`, which skl2onnx converts
exactly; `HistGradientBoostingClassifier` fails to convert with skl2onnx 1.20 + onnx 1.23) on the
corpus's cached vectors. Synthetic samples are split by a hash of their sha256 into train
(60 %), calibration (20 %) and test (20 %); real benign files by a hash of their source folder
(leave-folder-out), so the held-out false-positive rate measures transfer to folders the model
never saw rather than memorisation. A sample lands in the same split for every version, and v1
and v2 are compared on the same test samples. Customers' in-house software is left out of
training and calibration (the vendor never has it), but stays in the all-era test figures.

Thresholds are calibrated twice, on held-out real benign files and on held-out synthetic
benign samples, and the stricter (higher) threshold wins: the block threshold at the target
false-positive rate, `detect` at `detect_fpr_factor` times it. The manifest records the test
split's false-positive rate on real and on synthetic benign separately, and the TPR on
synthetic malware. Neither threshold goes below `alert_floor` (0.5): an alert needs the model
to call a file more likely malicious than not, whatever the calibration sets allow.

Every tree's leaves hold at least `min_samples_leaf` (20) training samples. Without that bound a
depth-3/4 tree could split off a handful of samples on one byte or character share, and which
real text or data file (a packed `caniuse-lite` table, a base64-laden script) then landed near
0.5 changed with the corpus draw; over seeds 7-12 the bound took the dogfood probes' blocks from
14 to 6 (v1) and 7 to 5 (v2) at no cost in held-out TPR (10 and 40 did not help: see
benchmarks/README.md, Dogfood).

A version's recipe says which eras it may learn from: v1 was trained before the era-2 families
existed, v2 after. v2 is therefore better on recall and makes false positives of its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.bundle import Calibration, Canary, Manifest, Thresholds, write_bundle
from agent.features import SCHEMA
from agent.model import ONNXScorer
from model_store.corpus import FIELD_ONLY_FAMILIES, Corpus
from model_store.errors import TrainingError

__all__ = [
    "MODEL_ID",
    "PARITY_TOLERANCE",
    "CongruentResult",
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "calibrate_threshold",
    "congruent_weights",
    "evaluate",
    "recipe_for_version",
    "split_of",
    "strictest_threshold",
    "train_congruent",
    "train_model",
]

MODEL_ID = "static-gbt"
PARITY_TOLERANCE = 1e-4
N_CANARIES = 8


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """A training recipe; defaults come from `recipe_for_version`."""

    version: int
    eras: tuple[int, ...] = (1,)
    seed: int = 1
    n_estimators: int = 120
    max_depth: int = 3
    learning_rate: float = 0.1
    subsample: float = 0.8
    max_features: float = 0.3
    # A leaf holds at least this many training samples (module docstring).
    min_samples_leaf: int = 20
    target_fpr: float = 0.001
    detect_fpr_factor: float = 10.0
    # An alert needs the model to call a file more likely malicious than not, whatever the
    # calibration sets allow: a floor under both thresholds.
    alert_floor: float = 0.5
    # Customers' in-house software never reaches the vendor's lab: it is seen only in the
    # field, through telemetry, which is exactly where a new version's surprises come from.
    exclude_families: tuple[str, ...] = FIELD_ONLY_FAMILIES
    sample_weight: tuple[float, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, object]:
        """The recipe as recorded in the manifest (without per-sample weights)."""
        out = asdict(self)
        out.pop("sample_weight")
        out["eras"] = list(self.eras)
        out["exclude_families"] = list(self.exclude_families)
        return out


def recipe_for_version(version: int, *, target_fpr: float = 0.001) -> TrainConfig:
    """v1: era-1 data, shallower trees. v2 and later: all eras, deeper trees, another seed."""
    if version < 1:
        raise ValueError("version must be >= 1")
    if version == 1:
        return TrainConfig(
            version=1, eras=(1,), seed=1, n_estimators=100, max_depth=3, target_fpr=target_fpr
        )
    return TrainConfig(
        version=version,
        eras=(1, 2),
        seed=version,
        n_estimators=150,
        max_depth=4,
        target_fpr=target_fpr,
    )


def split_of(sha256: str, folder: str = "") -> str:
    """'train', 'calib' or 'test', stable per sample across versions.

    With a `folder` (real files), the whole folder lands in one split: leave-folder-out.
    """
    key = hashlib.sha256(folder.encode()).hexdigest() if folder else sha256
    bucket = int(key[:8], 16) % 10
    return "train" if bucket < 6 else ("calib" if bucket < 8 else "test")


def strictest_threshold(benign_sets: list[npt.NDArray[np.float64]], target_fpr: float) -> float:
    """The highest of the thresholds calibrated on each non-empty set of benign scores."""
    found = [calibrate_threshold(s, target_fpr) for s in benign_sets if s.size]
    return max(found) if found else 0.5


def calibrate_threshold(benign_scores: npt.NDArray[np.float64], target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on `benign_scores` is at most `target_fpr`.

    A score blocks when `score >= threshold`; so the threshold sits just above the
    (k+1)-th highest benign score, k = floor(target_fpr * n).
    """
    s = np.sort(np.asarray(benign_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        return 0.5
    k = int(np.floor(target_fpr * s.size))
    if k >= s.size:
        return 0.0
    return float(min(np.nextafter(np.float32(s[k]), np.float32(2.0)), 1.0))


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Detection figures of one model at one threshold on one set of samples."""

    tpr: float
    fpr: float
    n_malicious: int
    n_benign: int
    false_positives: int


def evaluate(
    scores: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], threshold: float
) -> EvalResult:
    """TPR and FPR of `score >= threshold`."""
    pos = labels == 1
    hits = scores >= threshold
    n_mal, n_ben = int(pos.sum()), int((~pos).sum())
    fps = int((hits & ~pos).sum())
    return EvalResult(
        tpr=float((hits & pos).sum() / n_mal) if n_mal else 0.0,
        fpr=fps / n_ben if n_ben else 0.0,
        n_malicious=n_mal,
        n_benign=n_ben,
        false_positives=fps,
    )


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What `train_model` produced and measured."""

    bundle_dir: Path
    manifest: Manifest
    holdout: EvalResult
    test_all_eras: EvalResult
    parity_max_abs_diff: float
    holdout_real: EvalResult
    holdout_synthetic: EvalResult


def _to_onnx(model: object, n_features: int) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # skl2onnx lists the opsets in a set's order, which follows the process's string hash seed;
    # sorted, one model gives the same bytes (and `model_sha256`) in every process.
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    return bytes(onx.SerializeToString())


def train_model(
    corpus: Corpus,
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    now: dt.datetime,
) -> TrainResult:
    """Train, calibrate, export, check parity, pick canaries and write a bundle to `out`.

    Raises:
        TrainingError: too little data, or ONNX and scikit-learn disagree beyond 1e-4.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    splits = np.asarray([split_of(r.sha256, r.folder) for r in corpus.records])
    families = np.asarray([r.family for r in corpus.records])
    real = np.asarray([r.is_real for r in corpus.records], dtype=bool)
    in_eras = np.isin(corpus.eras, config.eras) & ~np.isin(families, config.exclude_families)
    y = corpus.labels
    X = corpus.features
    train = (splits == "train") & in_eras
    calib = (splits == "calib") & in_eras
    test = splits == "test"
    if train.sum() < 20 or len(set(y[train].tolist())) < 2 or (calib & (y == 0)).sum() < 5:
        raise TrainingError(
            "corpus too small for training: need both labels and a calibration split"
        )
    weights = np.asarray(config.sample_weight, dtype=np.float64) if config.sample_weight else None
    clf = GradientBoostingClassifier(
        n_estimators=config.n_estimators,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        subsample=config.subsample,
        max_features=config.max_features,
        min_samples_leaf=config.min_samples_leaf,
        random_state=config.seed,
    )
    clf.fit(X[train], y[train], sample_weight=None if weights is None else weights[train])
    model_bytes = _to_onnx(clf, X.shape[1])
    scorer = ONNXScorer(model_bytes, vector_length=X.shape[1])
    onnx_scores = scorer.score_batch(X).astype(np.float64)
    eval_rows = calib | test
    sk_scores = clf.predict_proba(X[eval_rows])[:, 1]
    parity = float(np.max(np.abs(sk_scores - onnx_scores[eval_rows])))
    if parity >= PARITY_TOLERANCE:
        raise TrainingError(
            f"ONNX and scikit-learn disagree by {parity:.2e} (limit {PARITY_TOLERANCE})"
        )
    benign_sets = [onnx_scores[calib & (y == 0) & real], onnx_scores[calib & (y == 0) & ~real]]
    block = strictest_threshold(benign_sets, config.target_fpr)
    block = max(block, config.alert_floor)
    detect = min(
        max(
            strictest_threshold(benign_sets, config.target_fpr * config.detect_fpr_factor),
            config.alert_floor,
        ),
        block,
    )
    holdout = evaluate(onnx_scores[test & in_eras], y[test & in_eras], block)
    test_all = evaluate(onnx_scores[test], y[test], block)
    held_real = evaluate(onnx_scores[test & real], y[test & real], block)
    held_synth = evaluate(onnx_scores[test & in_eras & ~real], y[test & in_eras & ~real], block)
    detect_real = evaluate(onnx_scores[test & real], y[test & real], detect)
    canaries = _pick_canaries(X[test], onnx_scores[test])
    fingerprint = hashlib.sha256(
        (corpus.fingerprint(train) + json.dumps(config.to_dict(), sort_keys=True)).encode()
    ).hexdigest()
    manifest = Manifest(
        model_id=MODEL_ID,
        version=config.version,
        feature_schema=SCHEMA.name,
        vector_length=SCHEMA.vector_length,
        thresholds=Thresholds(block=block, detect=detect),
        calibration=Calibration(
            target_fpr=config.target_fpr,
            holdout_tpr=holdout.tpr,
            holdout_fpr=holdout.fpr,
            holdout_size=holdout.n_benign + holdout.n_malicious,
        ),
        training_fingerprint=fingerprint,
        created_at=now,
        model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        canaries=canaries,
        extra={
            "recipe": config.to_dict(),
            "parity_max_abs_diff": parity,
            "holdout": {
                "split": "test (real benign: leave-folder-out)",
                "real_benign_files": held_real.n_benign,
                "real_benign_fpr_block": held_real.fpr,
                "real_benign_fpr_alert": detect_real.fpr,
                "synthetic_benign": held_synth.n_benign,
                "synthetic_benign_fpr_block": held_synth.fpr,
                "synthetic_malware": held_synth.n_malicious,
                "synthetic_malware_tpr_block": held_synth.tpr,
                "calibration_real_benign": int(benign_sets[0].size),
                "calibration_synthetic_benign": int(benign_sets[1].size),
            },
        },
    )
    bundle_dir = write_bundle(out, model_bytes, manifest)
    return TrainResult(bundle_dir, manifest, holdout, test_all, parity, held_real, held_synth)


def _pick_canaries(
    X: npt.NDArray[np.float32], scores: npt.NDArray[np.float64]
) -> tuple[Canary, ...]:
    """Vectors spread over the score range, so a tampered tree shows in at least one of them."""
    if X.shape[0] == 0:
        raise TrainingError("no test samples to draw canaries from")
    order = np.argsort(scores, kind="stable")
    picks = sorted({int(order[int(q * (order.size - 1))]) for q in np.linspace(0, 1, N_CANARIES)})
    return tuple(
        Canary(vector=tuple(float(v) for v in X[i]), expected_score=float(scores[i])) for i in picks
    )


# --- congruent training (positive-congruent training, Yan et al., CVPR 2021, for trees) ------


def congruent_weights(
    corpus: Corpus, reference_bundle: str | os.PathLike[str], *, boost: float = 4.0
) -> tuple[float, ...]:
    """Per-sample weights that up-weight what the reference version got right.

    Trees have no logits to distil, so the focal-distillation idea becomes a sample weight:
    a sample the reference model decided correctly at its own alert threshold (the detect
    threshold when set, else block) weighs `boost`, every other sample 1. The new version
    then pays more for breaking the reference's correct answers, which lowers the negative
    flip rate at a small cost in fit elsewhere. Returns one weight per corpus record.

    Raises:
        TrainingError: the reference bundle does not load or needs another feature schema.
    """
    from agent.errors import AgentError
    from agent.model import load_bundle

    if boost < 1.0:
        raise ValueError("boost must be >= 1")
    try:
        ref = load_bundle(reference_bundle, timeout_s=600.0)
    except AgentError as exc:
        raise TrainingError(f"reference bundle: {exc}") from exc
    scores = ref.scorer.score_batch(corpus.features).astype(np.float64)
    th = ref.manifest.thresholds
    alert = scores >= (th.detect if th.detect is not None else th.block)
    right = alert == (corpus.labels == 1)
    return tuple(float(w) for w in np.where(right, boost, 1.0))


@dataclass(frozen=True, slots=True)
class CongruentResult:
    """A congruent training run beside the plain one, and each one's NFR against the reference.

    NFR (negative flip rate, Yan et al., CVPR 2021) on the held-out test split (the release
    gate's golden set): the share of its samples the reference decided right, at its alert
    threshold, that the new model decides wrong at its own (`model_store.gate`).
    """

    congruent: TrainResult
    plain: TrainResult
    reference_version: int
    samples: int
    nfr_congruent: float
    nfr_plain: float


def train_congruent(
    corpus: Corpus,
    config: TrainConfig,
    out: str | os.PathLike[str],
    reference_bundle: str | os.PathLike[str],
    *,
    now: dt.datetime,
    boost: float = 4.0,
) -> CongruentResult:
    """Train `config` congruent with `reference_bundle` into `out`, and plain for comparison.

    The plain model (same recipe, no weights) is trained into a temporary directory and
    discarded; only its figures and its NFR are kept (its `bundle_dir` no longer exists).

    Raises:
        TrainingError: as `train_model`, or the reference bundle does not load.
    """
    import tempfile

    from agent.model import load_bundle
    from model_store.gate import negative_flip_rate

    weights = congruent_weights(corpus, reference_bundle, boost=boost)
    congruent = train_model(corpus, replace(config, sample_weight=weights), out, now=now)
    with tempfile.TemporaryDirectory(prefix="fleetward-plain-") as tmp:
        plain = train_model(corpus, replace(config, sample_weight=()), Path(tmp) / "plain", now=now)
        test = np.asarray(  # the release gate's golden set (`model_store.gate.load_golden`)
            [
                split_of(r.sha256, r.folder) == "test" and r.family not in FIELD_ONLY_FAMILIES
                for r in corpus.records
            ]
        )
        malicious = corpus.labels[test] == 1

        def alerts(bundle: str | os.PathLike[str]) -> npt.NDArray[np.bool_]:
            m = load_bundle(bundle, timeout_s=600.0)
            th = m.manifest.thresholds
            scores = m.scorer.score_batch(corpus.features[test])
            return np.asarray(scores >= (th.detect if th.detect is not None else th.block))

        ref_alert = alerts(reference_bundle)
        ref_version = load_bundle(reference_bundle, timeout_s=600.0).version
        return CongruentResult(
            congruent=congruent,
            plain=plain,
            reference_version=ref_version,
            samples=int(test.sum()),
            nfr_congruent=negative_flip_rate(malicious, ref_alert, alerts(congruent.bundle_dir)),
            nfr_plain=negative_flip_rate(malicious, ref_alert, alerts(plain.bundle_dir)),
        )
