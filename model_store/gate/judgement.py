"""The release gate's judgement: pure checks over what a candidate bundle did on the golden set.

CrowdStrike's channel file 291 (July 2024) reached millions of hosts because nothing between
"it was built" and "it was signed" compared the content with what the sensor produced (21 input
fields expected, 20 supplied). A fleetward bundle passes this gate before it is signed
(`model_store.repository.publish_model`), and is refused, unless forced with a recorded reason,
when any check fails:

- `schema`: the manifest's feature schema and vector length are the ones `agent.features`
  produces, and the ONNX model's input takes exactly that many floats;
- `canary`: the canary vectors score as the manifest says, within the smaller of the
  manifest's tolerance and `GateConfig.max_canary_tolerance`, with at least `min_canaries`;
- `fp_ceiling_real` / `fp_ceiling_synthetic`: the alert false-positive rate (score >= the
  detect threshold, else block) on golden real and on golden synthetic benign files;
- `detection_floor`: the block true-positive rate on golden malware;
- `score_shift`: the mean absolute score change against the current published model on the
  whole golden set (mean |Δscore|; see `PairStats` for why not KS);
- `org_surge`: the largest per-org predicted new false-positive alerts per day of moving from
  the current model to the candidate (the backend's transition prediction), when a store is
  given.

A check that cannot be measured for lack of evidence (too few golden samples, a failed schema
check upstream) fails: thin evidence never publishes. A check that does not apply (no current
model to compare with, no store given) passes with a reason saying it did not run.

This module reads no files and no clock: `model_store.gate.run` gathers the inputs, and
`model_store.gate.report` renders the report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from agent.decision import DecisionContext
from agent.verdict_codes import ALERT_CODES, BLOCK_CODE, decide_batch

__all__ = [
    "CHECKS",
    "CanaryFacts",
    "GateCheck",
    "GateConfig",
    "GateInputs",
    "GateReport",
    "GoldenLabels",
    "ModelScores",
    "PairStats",
    "SchemaFacts",
    "ScoreHistogram",
    "check_schema",
    "judge",
    "ks_statistic",
    "negative_flip_rate",
    "surge_pairs",
]

CHECKS = (
    "schema",
    "canary",
    "fp_ceiling_real",
    "fp_ceiling_synthetic",
    "detection_floor",
    "score_shift",
    "org_surge",
)
_BINS = 20


@dataclass(frozen=True, slots=True)
class GateConfig:
    """The gate's bounds. Defaults are documented and bounded; `__post_init__` checks ranges.

    Attributes:
        max_alert_fpr_real: ceiling on the alert FPR over golden real benign files (0.01: the
            training recipe targets 0.001 at block and 0.01 at detect on held-out real files).
        max_alert_fpr_synthetic: ceiling on the alert FPR over golden synthetic benign samples,
            customers' in-house tools included (0.03; v2 measured 0.009 on the default corpus,
            seed 7, and 0.015 on the tests' small one).
        min_block_tpr: floor on the block TPR over golden malware, every era (0.6; v1, which
            never saw era-2 malware, measured 0.87 on the default corpus, 0.81 on the small).
        max_mean_abs_score_shift: bound on mean |score_new - score_old| over the golden set
            against the current model (0.05; v1 -> v2 measured 0.017 and 0.0095).
        max_org_new_fp_alerts_per_day: per-org budget on predicted new false-positive alerts
            per day (1.0, the transition report's default budget).
        min_real_benign / min_synthetic_benign / min_malware: evidence floors; fewer golden
            samples than these fail the check that needs them.
        max_canary_tolerance: the canary check never accepts a looser tolerance than this,
            whatever the manifest says (1e-4, the training parity limit).
        min_canaries: fewer canary vectors than this fail the canary check (4).
    """

    max_alert_fpr_real: float = 0.01
    max_alert_fpr_synthetic: float = 0.03
    min_block_tpr: float = 0.6
    max_mean_abs_score_shift: float = 0.05
    max_org_new_fp_alerts_per_day: float = 1.0
    min_real_benign: int = 50
    min_synthetic_benign: int = 50
    min_malware: int = 20
    max_canary_tolerance: float = 1e-4
    min_canaries: int = 4

    def __post_init__(self) -> None:
        for name in (
            "max_alert_fpr_real",
            "max_alert_fpr_synthetic",
            "min_block_tpr",
            "max_mean_abs_score_shift",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.max_org_new_fp_alerts_per_day < 0:
            raise ValueError("max_org_new_fp_alerts_per_day must be >= 0")
        if not 0.0 < self.max_canary_tolerance <= 0.01:
            raise ValueError("max_canary_tolerance must be in (0, 0.01]")
        for name in ("min_real_benign", "min_synthetic_benign", "min_malware", "min_canaries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One check: whether it passed, what was measured (None: not measured) and its bound."""

    name: str
    passed: bool
    value: float | None
    bound: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class SchemaFacts:
    """What the bundle claims and what the agent's code and the model actually take."""

    manifest_schema: str
    manifest_vector_length: int
    model_input_length: int | None  # None: the ONNX input width is symbolic
    agent_schema: str
    agent_vector_length: int  # the length `agent.features` produced on golden files


@dataclass(frozen=True, slots=True)
class CanaryFacts:
    """The manifest's canary scores and what the model gave for the same vectors."""

    expected: tuple[float, ...]
    got: tuple[float, ...]
    manifest_tolerance: float


@dataclass(frozen=True, slots=True)
class GoldenLabels:
    """Per golden sample: malicious or not, real file or generated (same order as scores)."""

    malicious: npt.NDArray[np.bool_]
    real: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ModelScores:
    """One model's scores on the golden set and its thresholds."""

    version: int
    scores: npt.NDArray[np.float64]
    block: float
    detect: float | None

    def verdict_codes(self) -> npt.NDArray[np.int8]:
        """Each golden sample's verdict under these thresholds, by the agent's one `decide`.

        No lists and no policy on a golden set, so the sample's identity cannot matter.
        """
        ctx = DecisionContext(block_threshold=self.block, detect_threshold=self.detect)
        rows = np.zeros(self.scores.size, dtype=np.intp)
        return decide_batch(ctx, ("",), rows, self.scores)

    def alerts(self) -> npt.NDArray[np.bool_]:
        """Which golden samples the model alerts on (`Verdict.is_alert`)."""
        return ALERT_CODES[self.verdict_codes()]


@dataclass(frozen=True, slots=True)
class GateInputs:
    """Everything the gate judges; `new` is None when the schema check made scoring impossible."""

    candidate_version: int
    schema: SchemaFacts
    golden: GoldenLabels
    canary: CanaryFacts | None = None
    new: ModelScores | None = None
    old: ModelScores | None = None
    org_surge: tuple[tuple[str, float], ...] | None = None  # (org, new FP alerts/day)
    old_skipped: str = "no current model published"  # why `old` is None
    org_surge_skipped: str = "no backend store given"  # why `org_surge` is None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PairStats:
    """Old vs new version on the golden set.

    `mean_abs_score_shift` is the gated statistic. The two-sample KS statistic is reported
    but not gated: it is rank-based, and golden scores crowd near 0, so it flags moves of
    1e-4 as loudly as real ones (v1 -> v2 measured KS 0.82 with mean |Δscore| 0.017 on the
    default corpus).
    `nfr` (negative flip rate, Yan et al., CVPR 2021): share of golden samples the old
    version decided right and the new one decides wrong, each at its own alert threshold;
    `pfr` the converse; `flip_share` the share whose alert decision changed.
    """

    old_version: int
    new_version: int
    samples: int
    mean_abs_score_shift: float
    ks: float
    flip_share: float
    nfr: float
    pfr: float
    negative_flips: int
    positive_flips: int


@dataclass(frozen=True, slots=True)
class ScoreHistogram:
    """Score histograms on the golden set (shared bin edges), for the report's plot."""

    edges: tuple[float, ...]
    new_benign: tuple[int, ...]
    new_malicious: tuple[int, ...]
    old_benign: tuple[int, ...] = ()
    old_malicious: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GateReport:
    """The gate's verdict on one candidate; `to_dict()` is the JSON twin of the HTML report."""

    candidate_version: int
    current_version: int | None
    now: dt.datetime
    config: GateConfig
    checks: tuple[GateCheck, ...]
    golden_real_benign: int
    golden_synthetic_benign: int
    golden_malware: int
    pair: PairStats | None
    histogram: ScoreHistogram | None
    worst_orgs: tuple[tuple[str, float], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the failed checks, in gate order."""
        return tuple(c.name for c in self.checks if not c.passed)

    def check(self, name: str) -> GateCheck:
        """The check called `name`.

        Raises:
            KeyError: no such check.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (plain types only)."""
        return {
            "candidate_version": self.candidate_version,
            "current_version": self.current_version,
            "now": self.now.isoformat(),
            "passed": self.passed,
            "failed": list(self.failed),
            "checks": [asdict(c) for c in self.checks],
            "golden": {
                "real_benign": self.golden_real_benign,
                "synthetic_benign": self.golden_synthetic_benign,
                "malware": self.golden_malware,
            },
            "pair": None if self.pair is None else asdict(self.pair),
            "histogram": None
            if self.histogram is None
            else {k: list(v) for k, v in asdict(self.histogram).items()},
            "worst_orgs": [{"org_id": o, "new_fp_alerts_per_day": v} for o, v in self.worst_orgs],
            "config": asdict(self.config),
            "notes": list(self.notes),
            "definitions": {
                "alert": "score >= the detect threshold (else block)",
                "fp_ceiling": "alert false-positive rate on golden benign, real and synthetic",
                "detection_floor": "share of golden malware scoring >= the block threshold",
                "score_shift": "mean |score_new - score_old| over the golden set",
                "nfr": "share of golden samples the old version got right (at its alert "
                "threshold) that the new one gets wrong (Yan et al., CVPR 2021)",
                "org_surge": "largest per-org predicted new false-positive alerts per day "
                "(backend transition prediction)",
            },
        }


# --- statistics ------------------------------------------------------------------------------


def negative_flip_rate(
    malicious: npt.NDArray[np.bool_],
    old_alert: npt.NDArray[np.bool_],
    new_alert: npt.NDArray[np.bool_],
) -> float:
    """NFR (Yan et al., CVPR 2021): share of samples old got right and new gets wrong.

    The denominator is every sample (as in the paper), so NFR <= the new error rate.
    """
    n = malicious.size
    if n == 0:
        return 0.0
    old_right = old_alert == malicious
    new_right = new_alert == malicious
    return float(np.count_nonzero(old_right & ~new_right)) / n


def ks_statistic(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    if a.size == 0 or b.size == 0:
        return 0.0
    xs = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), xs, side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), xs, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _pair(golden: GoldenLabels, old: ModelScores, new: ModelScores) -> PairStats:
    old_alert = old.alerts()
    new_alert = new.alerts()
    mal = golden.malicious
    n = int(mal.size)
    neg = int(np.count_nonzero((old_alert == mal) & (new_alert != mal)))
    pos = int(np.count_nonzero((old_alert != mal) & (new_alert == mal)))
    return PairStats(
        old_version=old.version,
        new_version=new.version,
        samples=n,
        mean_abs_score_shift=float(np.mean(np.abs(new.scores - old.scores))) if n else 0.0,
        ks=ks_statistic(old.scores, new.scores),
        flip_share=float(np.count_nonzero(old_alert != new_alert)) / n if n else 0.0,
        nfr=negative_flip_rate(mal, old_alert, new_alert),
        pfr=pos / n if n else 0.0,
        negative_flips=neg,
        positive_flips=pos,
    )


def _histogram(golden: GoldenLabels, new: ModelScores, old: ModelScores | None) -> ScoreHistogram:
    edges = np.linspace(0.0, 1.0, _BINS + 1)

    def counts(s: npt.NDArray[np.float64]) -> tuple[int, ...]:
        return tuple(int(c) for c in np.histogram(np.clip(s, 0.0, 1.0), bins=edges)[0])

    mal = golden.malicious
    return ScoreHistogram(
        edges=tuple(float(e) for e in edges),
        new_benign=counts(new.scores[~mal]),
        new_malicious=counts(new.scores[mal]),
        old_benign=counts(old.scores[~mal]) if old is not None else (),
        old_malicious=counts(old.scores[mal]) if old is not None else (),
    )


# --- the checks ------------------------------------------------------------------------------


def check_schema(s: SchemaFacts) -> GateCheck:
    """The `schema` check alone (the shell asks it before scoring anything)."""
    problems = []
    if s.manifest_schema != s.agent_schema:
        problems.append(
            f"manifest names schema {s.manifest_schema!r}, agent has {s.agent_schema!r}"
        )
    if s.manifest_vector_length != s.agent_vector_length:
        problems.append(
            f"manifest says {s.manifest_vector_length} floats, agent.features produces "
            f"{s.agent_vector_length}"
        )
    if s.model_input_length is not None and s.model_input_length != s.agent_vector_length:
        problems.append(
            f"the ONNX model takes {s.model_input_length} floats, agent.features produces "
            f"{s.agent_vector_length}"
        )
    return GateCheck(
        "schema",
        not problems,
        float(
            s.model_input_length if s.model_input_length is not None else s.manifest_vector_length
        ),
        float(s.agent_vector_length),
        "; ".join(problems) or f"{s.agent_schema}, {s.agent_vector_length} floats everywhere",
    )


def _canary_check(c: CanaryFacts | None, cfg: GateConfig) -> GateCheck:
    bound = cfg.max_canary_tolerance
    if c is None:
        return GateCheck("canary", False, None, bound, "not run: the schema check failed")
    bound = min(c.manifest_tolerance, cfg.max_canary_tolerance)
    if len(c.expected) < cfg.min_canaries:
        return GateCheck(
            "canary", False, None, bound, f"{len(c.expected)} canaries (< {cfg.min_canaries})"
        )
    diff = float(np.max(np.abs(np.asarray(c.got) - np.asarray(c.expected))))
    ok = diff <= bound
    return GateCheck(
        "canary",
        ok,
        diff,
        bound,
        f"{len(c.expected)} canaries, largest deviation {diff:.3g}"
        + ("" if ok else f" exceeds {bound:.1g}"),
    )


def _rate_check(
    name: str,
    hits: npt.NDArray[np.bool_] | None,
    bound: float,
    minimum: int,
    *,
    what: str,
    ceiling: bool,
) -> GateCheck:
    if hits is None:
        return GateCheck(name, False, None, bound, "not run: the schema check failed")
    n = int(hits.size)
    if n < minimum:
        return GateCheck(name, False, None, bound, f"only {n} golden {what} (< {minimum})")
    k = int(np.count_nonzero(hits))
    rate = k / n
    ok = rate <= bound if ceiling else rate >= bound
    cmp = ("<=" if ok else ">") if ceiling else (">=" if ok else "<")
    return GateCheck(name, ok, rate, bound, f"{k} of {n} golden {what}: {rate:.4f} {cmp} {bound}")


def _shift_check(pair: PairStats | None, inputs: GateInputs, cfg: GateConfig) -> GateCheck:
    bound = cfg.max_mean_abs_score_shift
    if inputs.new is None:
        return GateCheck("score_shift", False, None, bound, "not run: the schema check failed")
    if pair is None:
        return GateCheck("score_shift", True, None, bound, f"not run: {inputs.old_skipped}")
    v = pair.mean_abs_score_shift
    ok = v <= bound
    return GateCheck(
        "score_shift",
        ok,
        v,
        bound,
        f"mean |Δscore| v{pair.old_version} -> v{pair.new_version} over {pair.samples} golden "
        f"samples: {v:.4f} {'<=' if ok else '>'} {bound}",
    )


def _surge_check(
    surge: tuple[tuple[str, float], ...] | None, inputs: GateInputs, cfg: GateConfig
) -> GateCheck:
    bound = cfg.max_org_new_fp_alerts_per_day
    if surge is None:
        if inputs.new is None:
            return GateCheck("org_surge", False, None, bound, "not run: the schema check failed")
        return GateCheck("org_surge", True, None, bound, f"not run: {inputs.org_surge_skipped}")
    if not surge:
        return GateCheck("org_surge", True, 0.0, bound, "no org has telemetry to predict from")
    over = sorted(((v, o) for o, v in surge if v > bound), reverse=True)
    worst = max(v for _, v in surge)
    if over:
        names = ", ".join(f"{o} ({v:.2f}/day)" for v, o in over[:5])
        more = f" and {len(over) - 5} more" if len(over) > 5 else ""
        return GateCheck(
            "org_surge",
            False,
            worst,
            bound,
            f"{len(over)} org(s) over {bound} predicted new FP alerts/day: {names}{more}",
        )
    return GateCheck(
        "org_surge", True, worst, bound, f"largest per-org surge {worst:.2f}/day of {len(surge)}"
    )


def judge(inputs: GateInputs, config: GateConfig, *, now: dt.datetime) -> GateReport:
    """Run every check over `inputs` and return the report (nothing is raised for a failure).

    Raises:
        ValueError: array lengths of the golden labels and the scores disagree.
    """
    g = inputs.golden
    mal, real = g.malicious, g.real
    for m in (inputs.new, inputs.old):
        if m is not None and m.scores.shape != mal.shape:
            raise ValueError("scores and golden labels differ in length")
    new = inputs.new
    schema = check_schema(inputs.schema)
    codes = None if new is None else new.verdict_codes()
    alert = None if codes is None else ALERT_CODES[codes]
    blocked = None if codes is None else codes == BLOCK_CODE
    pair = _pair(g, inputs.old, new) if new is not None and inputs.old is not None else None
    checks = (
        schema,
        _canary_check(inputs.canary, config),
        _rate_check(
            "fp_ceiling_real",
            None if alert is None else alert[real & ~mal],
            config.max_alert_fpr_real,
            config.min_real_benign,
            what="real benign files alert",
            ceiling=True,
        ),
        _rate_check(
            "fp_ceiling_synthetic",
            None if alert is None else alert[~real & ~mal],
            config.max_alert_fpr_synthetic,
            config.min_synthetic_benign,
            what="synthetic benign samples alert",
            ceiling=True,
        ),
        _rate_check(
            "detection_floor",
            None if blocked is None else blocked[mal],
            config.min_block_tpr,
            config.min_malware,
            what="malware samples block",
            ceiling=False,
        ),
        _shift_check(pair, inputs, config),
        _surge_check(inputs.org_surge, inputs, config),
    )
    assert tuple(c.name for c in checks) == CHECKS
    worst = tuple(sorted(inputs.org_surge or (), key=lambda ov: (-ov[1], ov[0]))[:10])
    return GateReport(
        candidate_version=inputs.candidate_version,
        current_version=None if inputs.old is None else inputs.old.version,
        now=now,
        config=config,
        checks=checks,
        golden_real_benign=int(np.count_nonzero(real & ~mal)),
        golden_synthetic_benign=int(np.count_nonzero(~real & ~mal)),
        golden_malware=int(np.count_nonzero(mal)),
        pair=pair,
        histogram=None if new is None else _histogram(g, new, inputs.old),
        worst_orgs=worst,
        notes=inputs.notes,
    )


def surge_pairs(per_org: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """Per-org predictions as the sorted pairs `GateInputs.org_surge` takes."""
    return tuple(sorted((str(o), float(v)) for o, v in per_org.items()))
