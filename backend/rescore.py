"""Time-travel rescoring: replay recorded decisions with changed features, models, thresholds.

A rescore run is a config (TOML, validated with pydantic at the edge, then a frozen
`RescoreConfig`). Its unit is an aggregate row: (org, sample, model version, verdict, day) with
its count, first seen at `first_seen_ms` (the sample's own time).

Stages, in pipeline order; a config lists the stages to redo, and a listed stage makes every
later one run too (a config is "downstream-closed", checked at load):
- `FEATURE_EXTRACTION`: recompute vectors with `agent.features.extract_features` from the
  sample bytes under `samples_dir` (`<sha256>` or `<sha[:2]>/<sha256>`); otherwise, and for
  samples without bytes, the stored vector per (sample, schema) is reused.
- `MODEL_SCORING`: score with the bundle the config maps to the row's recorded model version
  (`[models]`, e.g. `1 = "bundles/v2"` replaces v1 by v2). Rows whose version is not mapped
  keep their recorded verdict and are counted as not rescored.
- `DETECTION_DECISIONS`: decide with `agent.engine.context_for` (policy as of the row's time,
  allow/blocklists active then, the bundle's thresholds) plus the config's threshold
  overrides, through `agent.decision.decide`. Aggregates keep no scores, so a decision-only
  run recomputes the recorded scores from the recorded bundles (`[models]` then names them):
  scoring is deterministic, so these are the scores the endpoints had.
- No stage: the recorded verdicts, as they are (a cheap "what happened" baseline).
Stages skip what they need not redo: stored vectors are reused unless features are redone,
and scores are computed once per (bundle, feature source) per batch and shared by every
config of the run (a threshold-only experiment costs no inference).

Time travel: with `as_of.rule = "sample_time"` (default) every input that changes over time
is read as of each row's first-seen time: the policy (mode, lists with their expiry,
threshold overrides) and, with `as_of.labels = "sample_time"`, its label; `"evaluation"` reads
labels as of the run's `now` (what is known today). `rule = "fixed"` reads the policy as of
`as_of.at` for every row. Rows first seen at or after `now` are left out. Nothing dated after
a row's time can change that row's result (`tests/backend/test_rescore.py -k leak`).

Endpoint parity: with the bundles the endpoints ran and no overrides, a rescored verdict equals
the recorded one (`-k parity`). The one input telemetry does not carry is the block-storm
breaker state; rescoring treats the breaker as untripped.

The core (`rescore_batch`, `Tally`) is pure over numpy arrays and frozen values, with no
SQLite, so it can run as a Spark job partitioned by sample; `iter_row_batches` is the thin
loader that streams the store in bounded batches.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.decision import Verdict, decide
from agent.features import extract_features
from agent.model import LoadedModel
from backend._analysis import (
    ContextCache,
    PolicyTimeline,
    ThresholdOverride,
    decode_vectors,
    figure_png,
    html_page,
    html_table,
    load_model,
    score_vectors,
)
from backend.errors import BatchInvalidError
from backend.labels import LabelBook

if TYPE_CHECKING:
    from backend.store import Store

__all__ = [
    "AsOfRule",
    "BatchResult",
    "RescoreConfig",
    "RescoreConfigError",
    "RescoreSummary",
    "RowBatch",
    "RunInputs",
    "Stage",
    "Tally",
    "iter_row_batches",
    "load_config",
    "rescore_batch",
    "run_rescore",
    "write_rescore_report",
]

DEFAULT_BATCH_ROWS = 65_536


class Stage(StrEnum):
    """The stages of the detection stack, in pipeline order."""

    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"
    MODEL_SCORING = "MODEL_SCORING"
    DETECTION_DECISIONS = "DETECTION_DECISIONS"


_ORDER = (Stage.FEATURE_EXTRACTION, Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS)


class AsOfRule(StrEnum):
    """When time-varying inputs are read: at each row's own time, at a fixed time, or now."""

    SAMPLE_TIME = "sample_time"
    FIXED = "fixed"
    EVALUATION = "evaluation"


class RescoreConfigError(BatchInvalidError):
    """A rescore config file is invalid; the message names the field."""


class _Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    block: float | None = Field(default=None, ge=0.0, le=1.0)
    detect: float | None = Field(default=None, ge=0.0, le=1.0)


class _AsOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: AsOfRule = AsOfRule.SAMPLE_TIME
    at: dt.datetime | None = None
    labels: AsOfRule = AsOfRule.SAMPLE_TIME


class RescoreConfigModel(BaseModel):
    """The TOML form of a rescore config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200)
    stages: list[Stage] = Field(default_factory=lambda: list(_ORDER[1:]))
    models: dict[str, str] = Field(default_factory=dict)
    thresholds: _Thresholds = Field(default_factory=_Thresholds)
    as_of: _AsOf = Field(default_factory=_AsOf)
    samples_dir: str | None = None


@dataclass(frozen=True, slots=True)
class RescoreConfig:
    """A validated rescore run: stages to redo, bundles per recorded version, overrides, as-of."""

    name: str
    stages: frozenset[Stage]
    models: tuple[tuple[int, Path], ...] = ()
    override: ThresholdOverride = ThresholdOverride()
    as_of: AsOfRule = AsOfRule.SAMPLE_TIME
    fixed_at: dt.datetime | None = None
    labels_as_of: AsOfRule = AsOfRule.SAMPLE_TIME
    samples_dir: Path | None = None

    def __post_init__(self) -> None:
        ran = [s in self.stages for s in _ORDER]
        if any(ran) and not all(ran[ran.index(True) :]):
            raise ValueError("stages must include every stage after the first one listed")
        if self.as_of is AsOfRule.FIXED and self.fixed_at is None:
            raise ValueError("as_of.rule = 'fixed' needs as_of.at")
        if Stage.FEATURE_EXTRACTION in self.stages and self.samples_dir is None:
            raise ValueError("FEATURE_EXTRACTION needs samples_dir")

    @property
    def rescoring(self) -> bool:
        """False for the recorded-verdicts baseline (no stage listed)."""
        return bool(self.stages)


def load_config(path: str | Path) -> RescoreConfig:
    """Read and validate a rescore TOML file (paths in it are relative to the file).

    Raises:
        RescoreConfigError: unreadable, not TOML, or invalid (the message names the field).
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
        m = RescoreConfigModel.model_validate(raw)
        base = p.parent
        models = tuple(sorted((int(k), (base / v).resolve()) for k, v in m.models.items()))
        return RescoreConfig(
            name=m.name,
            stages=frozenset(m.stages),
            models=models,
            override=ThresholdOverride(m.thresholds.block, m.thresholds.detect),
            as_of=m.as_of.rule,
            fixed_at=m.as_of.at,
            labels_as_of=m.as_of.labels,
            samples_dir=(base / m.samples_dir).resolve() if m.samples_dir else None,
        )
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RescoreConfigError(f"{p}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        raise RescoreConfigError(f"{p}: {where}: {first['msg']}") from None
    except ValueError as exc:
        raise RescoreConfigError(f"{p}: {exc}") from None


# --- the pure core -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowBatch:
    """A batch of aggregate rows as arrays; `vec_index[i]` is row i's vector (-1: none stored)."""

    org_ids: tuple[str, ...]
    sha256s: tuple[str, ...]
    first_seen_ms: npt.NDArray[np.int64]
    days: npt.NDArray[np.int64]
    model_versions: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    verdicts: tuple[Verdict, ...]
    vectors: npt.NDArray[np.float32]
    vec_index: npt.NDArray[np.int64]
    vec_sha256s: tuple[str, ...]
    first_seen: tuple[dt.datetime, ...] = ()

    def __len__(self) -> int:
        return len(self.sha256s)


@dataclass(frozen=True, slots=True)
class RunInputs:
    """What every batch of a run shares: bundles, policy history, labels, evaluation time."""

    bundles: Mapping[Path, LoadedModel]
    timeline: PolicyTimeline
    labels: LabelBook
    now: dt.datetime
    read_sample: Callable[[Path, str], bytes | None] = field(default=lambda d, s: None)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per row: the verdict after rescoring, whether it was rescored, and its label then."""

    verdicts: tuple[Verdict, ...]
    rescored: npt.NDArray[np.bool_]
    label: npt.NDArray[np.int8]  # 1 malicious, 0 benign, -1 unlabelled
    families: tuple[str, ...]


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _features(
    batch: RowBatch, cfg: RescoreConfig, inputs: RunInputs
) -> tuple[npt.NDArray[np.float32], str]:
    if Stage.FEATURE_EXTRACTION not in cfg.stages or cfg.samples_dir is None:
        return batch.vectors, "stored"
    out = batch.vectors.copy()
    for j, sha in enumerate(batch.vec_sha256s):
        data = inputs.read_sample(cfg.samples_dir, sha)
        if data is not None:
            out[j] = extract_features(data)
    return out, f"extracted:{cfg.samples_dir}"


def rescore_batch(
    batch: RowBatch,
    cfg: RescoreConfig,
    inputs: RunInputs,
    contexts: ContextCache,
    score_cache: dict[tuple[str, str], npt.NDArray[np.float64]],
) -> BatchResult:
    """Rescore one batch under `cfg`; `score_cache` (per batch) shares scores across configs."""
    n = len(batch)
    label = np.full(n, -1, dtype=np.int8)
    families = []
    times = batch.first_seen or tuple(_at(int(ms)) for ms in batch.first_seen_ms.tolist())
    for i in range(n):
        t = inputs.now if cfg.labels_as_of is AsOfRule.EVALUATION else times[i]
        lb = inputs.labels.label_as_of(batch.sha256s[i], t)
        if lb is not None:
            label[i] = 1 if lb.is_malicious else 0
        families.append(lb.family if lb is not None and lb.family else "unlabelled")
    if not cfg.rescoring:
        return BatchResult(batch.verdicts, np.zeros(n, dtype=bool), label, tuple(families))
    vectors, source = _features(batch, cfg, inputs)
    models = dict(cfg.models)
    scores: dict[int, npt.NDArray[np.float64]] = {}
    for version in np.unique(batch.model_versions).tolist():
        path = models.get(int(version))
        if path is None:
            continue
        model = inputs.bundles[path]
        key = (model.manifest.model_sha256, source)
        if key not in score_cache:
            score_cache[key] = score_vectors(model, vectors)
        scores[int(version)] = score_cache[key]
    verdicts: list[Verdict] = []
    rescored = np.zeros(n, dtype=bool)
    for i in range(n):
        version = int(batch.model_versions[i])
        j = int(batch.vec_index[i])
        if version not in scores or j < 0:
            verdicts.append(batch.verdicts[i])
            continue
        model = inputs.bundles[models[version]]
        if cfg.as_of is AsOfRule.FIXED and cfg.fixed_at is not None:
            when = cfg.fixed_at
        elif cfg.as_of is AsOfRule.EVALUATION:
            when = inputs.now
        else:
            when = times[i]
        ctx = contexts.context(batch.org_ids[i], when, model.manifest.thresholds, cfg.override)
        verdicts.append(decide(batch.sha256s[i], float(scores[version][j]), ctx).verdict)
        rescored[i] = True
    return BatchResult(tuple(verdicts), rescored, label, tuple(families))


@dataclass
class Tally:
    """A mergeable accumulator of count-weighted metrics (one per config and partition)."""

    encounters: int = 0
    rescored: int = 0
    malicious: int = 0
    malicious_alerts: int = 0
    not_malicious: int = 0
    not_malicious_alerts: int = 0
    agree_with_recorded: int = 0
    alerts_by_org: dict[str, int] = field(default_factory=dict)
    days_by_org: dict[str, set[int]] = field(default_factory=dict)
    by_family: dict[str, list[int]] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)

    def add(self, batch: RowBatch, result: BatchResult) -> None:
        """Fold one batch's results in (vectorised over the batch)."""
        n = len(batch)
        if not n:
            return
        c = batch.counts
        alert = np.fromiter((v.is_alert for v in result.verdicts), bool, n)
        agree = np.fromiter(
            (a is b for a, b in zip(result.verdicts, batch.verdicts, strict=True)), bool, n
        )
        mal = result.label == 1
        self.encounters += int(c.sum())
        self.rescored += int(c[result.rescored].sum())
        self.agree_with_recorded += int(c[agree].sum())
        self.malicious += int(c[mal].sum())
        self.malicious_alerts += int(c[mal & alert].sum())
        self.not_malicious += int(c[~mal].sum())
        self.not_malicious_alerts += int(c[~mal & alert].sum())
        orgs = np.asarray(batch.org_ids)
        for org in np.unique(orgs).tolist():
            m = orgs == org
            self.alerts_by_org[org] = self.alerts_by_org.get(org, 0) + int(c[m & alert].sum())
            self.days_by_org.setdefault(org, set()).update(np.unique(batch.days[m]).tolist())
        fams = np.asarray(result.families)
        for fam in np.unique(fams).tolist():
            m = fams == fam
            cell = self.by_family.setdefault(fam, [0, 0])
            cell[0] += int(c[m].sum())
            cell[1] += int(c[m & alert].sum())
        names = np.asarray([v.value for v in result.verdicts])
        for v in np.unique(names).tolist():
            self.verdicts[v] = self.verdicts.get(v, 0) + int(c[names == v].sum())

    def merge(self, other: Tally) -> Tally:
        """Combine two partitions' tallies (for a partitioned run)."""
        out = Tally(
            self.encounters + other.encounters,
            self.rescored + other.rescored,
            self.malicious + other.malicious,
            self.malicious_alerts + other.malicious_alerts,
            self.not_malicious + other.not_malicious,
            self.not_malicious_alerts + other.not_malicious_alerts,
            self.agree_with_recorded + other.agree_with_recorded,
        )
        for src in (self, other):
            for k, v in src.alerts_by_org.items():
                out.alerts_by_org[k] = out.alerts_by_org.get(k, 0) + v
            for k, d in src.days_by_org.items():
                out.days_by_org.setdefault(k, set()).update(d)
            for k, f in src.by_family.items():
                cell = out.by_family.setdefault(k, [0, 0])
                cell[0] += f[0]
                cell[1] += f[1]
            for k, n in src.verdicts.items():
                out.verdicts[k] = out.verdicts.get(k, 0) + n
        return out

    def summary(self, name: str) -> RescoreSummary:
        """The frozen figures of this tally."""
        return RescoreSummary(
            name=name,
            encounters=self.encounters,
            rescored_encounters=self.rescored,
            recall=self.malicious_alerts / self.malicious if self.malicious else None,
            fp_rate=self.not_malicious_alerts / self.not_malicious if self.not_malicious else None,
            malicious_encounters=self.malicious,
            agreement_with_recorded=(
                self.agree_with_recorded / self.encounters if self.encounters else None
            ),
            alerts_per_org=tuple(sorted(self.alerts_by_org.items())),
            alerts_per_org_per_day=tuple(
                sorted(
                    (o, a / max(len(self.days_by_org.get(o, ())), 1))
                    for o, a in self.alerts_by_org.items()
                )
            ),
            families=tuple(sorted((k, v[0], v[1]) for k, v in self.by_family.items())),
            verdicts=tuple(sorted(self.verdicts.items())),
        )


@dataclass(frozen=True, slots=True)
class RescoreSummary:
    """One config's figures: rescored recall, FP rate, alerts per org, per-family breakdown.

    Count-weighted over encounters. `fp_rate` is alerts among encounters not labelled
    malicious; `families` holds (family, encounters, alerts), family from the labels.
    """

    name: str
    encounters: int
    rescored_encounters: int
    recall: float | None
    fp_rate: float | None
    malicious_encounters: int
    agreement_with_recorded: float | None
    alerts_per_org: tuple[tuple[str, int], ...]
    alerts_per_org_per_day: tuple[tuple[str, float], ...]
    families: tuple[tuple[str, int, int], ...]
    verdicts: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "encounters": self.encounters,
            "rescored_encounters": self.rescored_encounters,
            "recall": self.recall,
            "fp_rate": self.fp_rate,
            "malicious_encounters": self.malicious_encounters,
            "agreement_with_recorded": self.agreement_with_recorded,
            "alerts_per_org": dict(self.alerts_per_org),
            "alerts_per_org_per_day": dict(self.alerts_per_org_per_day),
            "families": {f: {"encounters": e, "alerts": a} for f, e, a in self.families},
            "verdicts": dict(self.verdicts),
        }


# --- the thin shell: streaming the store --------------------------------------------------------


def iter_row_batches(
    store: Store,
    *,
    schema: str,
    vector_length: int,
    until: dt.datetime,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[RowBatch]:
    """Stream active (non-shadow) aggregate rows first seen before `until`, with their vectors.

    Memory is bounded by `batch_rows` rows and their distinct samples' vectors.
    """
    for rows in store.iter_aggregates(
        shadow=False, until_ms=int(until.timestamp() * 1000), batch_rows=batch_rows
    ):
        shas = [r.sha256 for r in rows]
        found = store.feature_vectors(shas, schema)
        keys = sorted(found)
        index = {k: j for j, k in enumerate(keys)}
        yield RowBatch(
            org_ids=tuple(r.org_id for r in rows),
            sha256s=tuple(shas),
            first_seen_ms=np.fromiter((r.first_seen_ms for r in rows), np.int64, len(rows)),
            days=np.fromiter((r.day for r in rows), np.int64, len(rows)),
            model_versions=np.fromiter((r.model_version for r in rows), np.int64, len(rows)),
            counts=np.fromiter((r.count for r in rows), np.int64, len(rows)),
            verdicts=tuple(r.verdict for r in rows),
            vectors=decode_vectors([found[k] for k in keys], vector_length),
            vec_index=np.fromiter((index.get(s, -1) for s in shas), np.int64, len(rows)),
            vec_sha256s=tuple(keys),
            first_seen=tuple(_at(r.first_seen_ms) for r in rows),
        )


def _read_sample(root: Path, sha: str) -> bytes | None:
    for p in (root / sha, root / sha[:2] / sha, root / "samples" / sha[:2] / sha):
        if p.is_file():
            return p.read_bytes()
    return None


def run_rescore(
    store: Store,
    configs: Sequence[RescoreConfig],
    *,
    now: dt.datetime,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_batch: Callable[[RowBatch, Sequence[BatchResult]], None] | None = None,
) -> tuple[RescoreSummary, ...]:
    """Run every config over the same rows (one pass over the store), returning their figures.

    Raises:
        BundleRejectedError: a configured bundle does not load or fails its self-test.
    """
    paths = sorted({p for c in configs for _, p in c.models})
    bundles = {p: load_model(p) for p in paths}
    schemas = {(m.manifest.feature_schema, m.manifest.vector_length) for m in bundles.values()}
    if len(schemas) > 1:
        raise ValueError(f"bundles of one run must share a feature schema, got {sorted(schemas)}")
    schema, length = schemas.pop() if schemas else ("static-v1", 0)
    if not length:
        from agent.features import SCHEMA

        schema, length = SCHEMA.name, SCHEMA.vector_length
    timeline = PolicyTimeline((r.changed_at, r.document) for r in store.policy_history())
    inputs = RunInputs(
        bundles, timeline, LabelBook(store.iter_labels(until=now)), now, _read_sample
    )
    contexts = ContextCache(timeline)
    tallies = [Tally() for _ in configs]
    for batch in iter_row_batches(
        store, schema=schema, vector_length=length, until=now, batch_rows=batch_rows
    ):
        cache: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        results = [rescore_batch(batch, c, inputs, contexts, cache) for c in configs]
        for tally, result in zip(tallies, results, strict=True):
            tally.add(batch, result)
        if on_batch is not None:
            on_batch(batch, results)
    return tuple(t.summary(c.name) for t, c in zip(tallies, configs, strict=True))


# --- the report ----------------------------------------------------------------------------------


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _f(x: float | None, d: int = 4) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def write_rescore_report(
    baseline: RescoreSummary, experiment: RescoreSummary, out_dir: str | Path
) -> Path:
    """Write `rescore.html` (plots inline) and `rescore.json`, baseline vs experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "baseline": baseline.to_dict(),
        "experiment": experiment.to_dict(),
        "delta": {
            "recall": _delta(baseline.recall, experiment.recall),
            "fp_rate": _delta(baseline.fp_rate, experiment.fp_rate),
            "alerts_per_org": {
                o: dict(experiment.alerts_per_org).get(o, 0)
                - dict(baseline.alerts_per_org).get(o, 0)
                for o in sorted(
                    set(dict(baseline.alerts_per_org)) | set(dict(experiment.alerts_per_org))
                )
            },
        },
    }
    (out / "rescore.json").write_text(json.dumps(doc, indent=2))
    images = []
    orgs = sorted(set(dict(baseline.alerts_per_org)) | set(dict(experiment.alerts_per_org)))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    x = np.arange(len(orgs))
    ax.bar(
        x - 0.2,
        [dict(baseline.alerts_per_org_per_day).get(o, 0) for o in orgs],
        0.4,
        label=baseline.name,
    )
    ax.bar(
        x + 0.2,
        [dict(experiment.alerts_per_org_per_day).get(o, 0) for o in orgs],
        0.4,
        label=experiment.name,
    )
    ax.set_xticks(x, [o[-8:] for o in orgs], rotation=70, fontsize=7)
    ax.set_ylabel("alerts / day")
    ax.legend()
    images.append(figure_png(fig))
    fams = sorted({f for f, _, _ in baseline.families} | {f for f, _, _ in experiment.families})
    rate = {
        s.name: {f: (a / e if e else 0.0) for f, e, a in s.families} for s in (baseline, experiment)
    }
    fig, ax = plt.subplots(figsize=(9, 3.5))
    x = np.arange(len(fams))
    ax.bar(x - 0.2, [rate[baseline.name].get(f, 0) for f in fams], 0.4, label=baseline.name)
    ax.bar(x + 0.2, [rate[experiment.name].get(f, 0) for f in fams], 0.4, label=experiment.name)
    ax.set_xticks(x, fams, rotation=70, fontsize=7)
    ax.set_ylabel("alert rate per encounter")
    ax.legend()
    images.append(figure_png(fig))
    headline = html_table(
        ["", baseline.name, experiment.name, "delta"],
        [
            (
                "rescored recall",
                _f(baseline.recall),
                _f(experiment.recall),
                _f(_delta(baseline.recall, experiment.recall)),
            ),
            (
                "FP rate",
                _f(baseline.fp_rate, 5),
                _f(experiment.fp_rate, 5),
                _f(_delta(baseline.fp_rate, experiment.fp_rate), 5),
            ),
            ("encounters", baseline.encounters, experiment.encounters, ""),
            (
                "rescored encounters",
                baseline.rescored_encounters,
                experiment.rescored_encounters,
                "",
            ),
            (
                "agreement with recorded verdicts",
                _f(baseline.agreement_with_recorded),
                _f(experiment.agreement_with_recorded),
                "",
            ),
        ],
    )
    per_org = html_table(
        ["org", f"{baseline.name} alerts", f"{experiment.name} alerts", "delta"],
        [
            (
                o,
                dict(baseline.alerts_per_org).get(o, 0),
                dict(experiment.alerts_per_org).get(o, 0),
                dict(experiment.alerts_per_org).get(o, 0) - dict(baseline.alerts_per_org).get(o, 0),
            )
            for o in orgs
        ],
    )
    fam_b = {f: (e, a) for f, e, a in baseline.families}
    fam_e = {f: (e, a) for f, e, a in experiment.families}
    per_fam = html_table(
        ["family", "encounters", f"{baseline.name} alerts", f"{experiment.name} alerts", "delta"],
        [
            (
                f,
                fam_b.get(f, (0, 0))[0],
                fam_b.get(f, (0, 0))[1],
                fam_e.get(f, (0, 0))[1],
                fam_e.get(f, (0, 0))[1] - fam_b.get(f, (0, 0))[1],
            )
            for f in fams
        ],
    )
    page = out / "rescore.html"
    page.write_text(
        html_page(
            f"Rescore: {baseline.name} vs {experiment.name}",
            [("Headline", headline), ("Alerts per org", per_org), ("Per family", per_fam)],
            images,
        )
    )
    return page
