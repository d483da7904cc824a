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
a row's time can change that row's result (`tests/backend/analysis/test_rescore.py -k leak`).

Endpoint parity: with the bundles the endpoints ran and no overrides, a rescored verdict equals
the recorded one (`-k parity`). The one input telemetry does not carry is the block-storm
breaker state; rescoring treats the breaker as untripped.

The core (`rescore_batch`, `Tally`) is pure over numpy arrays and frozen values, with no
SQLite, so it can run as a Spark job partitioned by sample; `iter_row_batches` is the thin
loader that streams the store by sample in bounded batches. The core builds no object per row:
orgs, samples and verdicts are `Coded` columns, rows are grouped by decision context, and every
verdict still comes from `agent.decision.decide`, called once per (context, case) through
`backend.analysis._base.decide_batch`.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.decision import Verdict
from agent.features import extract_features
from agent.model import LoadedModel
from backend.analysis._base import (
    ALERT_CODES,
    VERDICT_CODES,
    VERDICTS,
    ContextCache,
    PolicyTimeline,
    ThresholdOverride,
    decide_batch,
    decode_vectors,
    load_model,
    score_vectors,
    to_us,
)
from backend.analysis.labels import LabelBook
from backend.errors import BatchInvalidError

if TYPE_CHECKING:
    from backend.store import AggregateStore

__all__ = [
    "AsOfRule",
    "BatchResult",
    "Coded",
    "RescoreConfig",
    "RescoreConfigError",
    "RescoreSummary",
    "RowBatch",
    "RunInputs",
    "Stage",
    "Tally",
    "iter_row_batches",
    "load_config",
    "read_sample",
    "rescore_batch",
    "run_rescore",
    "score_cache_key",
    "vector_source",
    "verdict_codes",
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
    corrected_labels: bool = False


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
    corrected_labels: bool = False
    """False (default): labels as known then (`known_at`, a backdated import changes no past
    result); True: the corrected truth, every label from its `labelled_at`."""

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
            corrected_labels=m.as_of.corrected_labels,
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

T = TypeVar("T")


class Coded(Sequence[T]):
    """A column of repeated values as a table of distinct values and one code per row.

    Row i is `values[codes[i]]`. Batches carry orgs, samples and verdicts this way so that the
    core works on integer arrays and never builds an object per row; any other sequence is
    accepted too and encoded once (`Coded.encode`).
    """

    __slots__ = ("codes", "values")

    def __init__(self, values: tuple[T, ...], codes: npt.NDArray[np.intp]) -> None:
        self.values = values
        self.codes = codes

    @classmethod
    def encode(cls, items: Sequence[T]) -> Coded[T]:
        """`items` as a `Coded` column (itself when it already is one)."""
        if isinstance(items, Coded):
            return items
        table: dict[T, int] = {}
        codes = np.fromiter((table.setdefault(x, len(table)) for x in items), np.intp, len(items))
        return cls(tuple(table), codes)

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> Coded[T]: ...

    def __getitem__(self, i: int | slice) -> T | Coded[T]:
        if isinstance(i, slice):
            return Coded(self.values, self.codes[i])
        return self.values[int(self.codes[i])]

    def __repr__(self) -> str:
        return f"Coded({len(self.values)} values, {len(self.codes)} rows)"


def verdict_codes(verdicts: Sequence[Verdict]) -> npt.NDArray[np.int8]:
    """Per row, the code of its verdict in `backend.analysis._base.VERDICTS`."""
    col = Coded.encode(verdicts)
    lut = np.array([VERDICT_CODES[v] for v in col.values], dtype=np.int8)
    return lut[col.codes] if len(lut) else np.zeros(len(col), dtype=np.int8)


@dataclass(frozen=True, slots=True)
class RowBatch:
    """A batch of aggregate rows as arrays; `vec_index[i]` is row i's vector (-1: none stored).

    `org_ids`, `sha256s` and `verdicts` are any sequences; the loader passes `Coded` columns.
    """

    org_ids: Sequence[str]
    sha256s: Sequence[str]
    first_seen_ms: npt.NDArray[np.int64]
    days: npt.NDArray[np.int64]
    model_versions: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    verdicts: Sequence[Verdict]
    vectors: npt.NDArray[np.float32]
    vec_index: npt.NDArray[np.int64]
    vec_sha256s: tuple[str, ...]
    first_seen: tuple[dt.datetime, ...] = ()

    def __len__(self) -> int:
        return len(self.sha256s)

    def times_us(self) -> npt.NDArray[np.int64]:
        """Each row's own time in microseconds since the epoch (`first_seen` when given)."""
        if self.first_seen:
            return np.fromiter((to_us(t) for t in self.first_seen), np.int64, len(self))
        return np.asarray(self.first_seen_ms, dtype=np.int64) * 1000

    def time_of(self, i: int) -> dt.datetime:
        """Row i's own time as a datetime."""
        return self.first_seen[i] if self.first_seen else _at(int(self.first_seen_ms[i]))


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

    verdicts: Sequence[Verdict]
    rescored: npt.NDArray[np.bool_]
    label: npt.NDArray[np.int8]  # 1 malicious, 0 benign, -1 unlabelled
    families: Sequence[str]


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def vector_source(cfg: RescoreConfig) -> str:
    """Where `cfg`'s vectors come from: the stored ones, or features extracted from a folder.

    Two configs with the same source score a bundle to the same values, so it is half of the
    score cache's key (`score_cache_key`); an engine that scores ahead (Spark) keys by it too.
    """
    if Stage.FEATURE_EXTRACTION not in cfg.stages or cfg.samples_dir is None:
        return "stored"
    return f"extracted:{cfg.samples_dir}"


def score_cache_key(model: LoadedModel, source: str) -> tuple[str, str]:
    """The key `rescore_batch`'s score cache holds a model's scores of a batch's vectors under."""
    return model.manifest.model_sha256, source


def _features(
    batch: RowBatch, cfg: RescoreConfig, inputs: RunInputs
) -> tuple[npt.NDArray[np.float32], str]:
    source = vector_source(cfg)
    if source == "stored" or cfg.samples_dir is None:
        return batch.vectors, source
    out = batch.vectors.copy()
    for j, sha in enumerate(batch.vec_sha256s):
        data = inputs.read_sample(cfg.samples_dir, sha)
        if data is not None:
            out[j] = extract_features(data)
    return out, source


def _groups(keys: npt.NDArray[np.int64]) -> Iterator[npt.NDArray[np.intp]]:
    """The positions of each distinct key, one array per key."""
    if not len(keys):
        return
    order = np.argsort(keys, kind="stable")
    cuts = np.flatnonzero(np.diff(keys[order])) + 1
    yield from np.split(order, cuts)


def _labels(
    samples: Coded[str], times_us: npt.NDArray[np.int64], cfg: RescoreConfig, inputs: RunInputs
) -> tuple[npt.NDArray[np.int8], Coded[str]]:
    """Per row: its label as of its time (or now) and the family of that label.

    The same search as `LabelBook.label_as_of` (the last change in force at the time: known
    by then, or labelled by then with `cfg.corrected_labels`), over the sample's changes in
    microseconds, once per labelled sample of the batch.
    """
    n = len(samples)
    label = np.full(n, -1, dtype=np.int8)
    fam_values: dict[str, int] = {"unlabelled": 0}
    fam = np.zeros(n, dtype=np.intp)
    if not len(inputs.labels):
        return label, Coded(tuple(fam_values), fam)
    at_now = cfg.labels_as_of is AsOfRule.EVALUATION
    now_us = to_us(inputs.now)
    corrected = cfg.corrected_labels
    for rows in _groups(samples.codes.astype(np.int64)):
        sha = samples.values[int(samples.codes[rows[0]])]
        changes = inputs.labels.changes(sha, corrected=corrected)
        if not changes:
            continue
        edges = np.array(
            [to_us(t) for t in inputs.labels.times(sha, corrected=corrected)], dtype=np.int64
        )
        when = np.full(len(rows), now_us) if at_now else times_us[rows]
        pick = np.searchsorted(edges, when, side="right") - 1
        for k in np.unique(pick[pick >= 0]).tolist():
            c = changes[k]
            hit = rows[pick == k]
            label[hit] = 1 if c.is_malicious else 0
            fam[hit] = fam_values.setdefault(c.family or "unlabelled", len(fam_values))
    return label, Coded(tuple(fam_values), fam)


def _decide_rows(
    batch: RowBatch,
    rows: npt.NDArray[np.intp],
    scores: npt.NDArray[np.float64],
    model: LoadedModel,
    cfg: RescoreConfig,
    inputs: RunInputs,
    contexts: ContextCache,
    times_us: npt.NDArray[np.int64],
) -> npt.NDArray[np.int8]:
    """Verdict codes of `rows` (scored `scores`) under the context each had at its time.

    Rows are grouped by what `ContextCache` keys a context on (org, policy in force, list
    segment); each group gets one context and one `decide_batch`.
    """
    samples = Coded.encode(batch.sha256s)
    orgs = Coded.encode(batch.org_ids)
    fixed: dt.datetime | None = None
    if cfg.as_of is AsOfRule.FIXED and cfg.fixed_at is not None:
        fixed = cfg.fixed_at
    elif cfg.as_of is AsOfRule.EVALUATION:
        fixed = inputs.now
    when_us = np.full(len(rows), to_us(fixed)) if fixed is not None else times_us[rows]
    timeline = contexts.timeline
    org = orgs.codes[rows].astype(np.int64)
    policy = timeline.policy_indexes(when_us)
    pair = org * (len(timeline) + 1) + (policy + 1)
    segment = np.zeros(len(rows), dtype=np.int64)
    for grp in _groups(pair):
        first = int(grp[0])
        segment[grp] = timeline.list_segments(
            int(policy[first]), orgs.values[int(org[first])], when_us[grp]
        )
    out = np.empty(len(rows), dtype=np.int8)
    for grp in _groups(pair * (int(segment.max()) + 1) + segment):
        first = int(grp[0])
        when = fixed if fixed is not None else batch.time_of(int(rows[first]))
        ctx = contexts.context(
            orgs.values[int(org[first])], when, model.manifest.thresholds, cfg.override
        )
        out[grp] = decide_batch(ctx, samples.values, samples.codes[rows[grp]], scores[grp])
    return out


def rescore_batch(
    batch: RowBatch,
    cfg: RescoreConfig,
    inputs: RunInputs,
    contexts: ContextCache,
    score_cache: dict[tuple[str, str], npt.NDArray[np.float64]],
) -> BatchResult:
    """Rescore one batch under `cfg`; `score_cache` (per batch) shares scores across configs.

    Vectorised over the batch: scores per distinct vector, then `decide` through
    `decide_batch` once per (context, case); labels once per labelled sample.
    """
    n = len(batch)
    samples = Coded.encode(batch.sha256s)
    times_us = batch.times_us()
    label, families = _labels(samples, times_us, cfg, inputs)
    codes = verdict_codes(batch.verdicts)
    rescored = np.zeros(n, dtype=bool)
    if not cfg.rescoring:
        return BatchResult(Coded(VERDICTS, codes.astype(np.intp)), rescored, label, families)
    vectors, source = _features(batch, cfg, inputs)
    models = dict(cfg.models)
    versions = np.asarray(batch.model_versions, dtype=np.int64)
    vec_index = np.asarray(batch.vec_index, dtype=np.int64)
    for version in np.unique(versions).tolist():
        path = models.get(int(version))
        if path is None:
            continue
        model = inputs.bundles[path]
        key = score_cache_key(model, source)
        if key not in score_cache:
            score_cache[key] = score_vectors(model, vectors)
        rows = np.flatnonzero((versions == version) & (vec_index >= 0))
        if not len(rows):
            continue
        scores = score_cache[key][vec_index[rows]]
        codes[rows] = _decide_rows(batch, rows, scores, model, cfg, inputs, contexts, times_us)
        rescored[rows] = True
    return BatchResult(Coded(VERDICTS, codes.astype(np.intp)), rescored, label, families)


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
        c = np.asarray(batch.counts, dtype=np.int64)
        codes = verdict_codes(result.verdicts)
        alert = ALERT_CODES[codes]
        agree = codes == verdict_codes(batch.verdicts)
        mal = result.label == 1
        self.encounters += int(c.sum())
        self.rescored += int(c[result.rescored].sum())
        self.agree_with_recorded += int(c[agree].sum())
        self.malicious += int(c[mal].sum())
        self.malicious_alerts += int(c[mal & alert].sum())
        self.not_malicious += int(c[~mal].sum())
        self.not_malicious_alerts += int(c[~mal & alert].sum())
        alerts = np.where(alert, c, 0)
        orgs = Coded.encode(batch.org_ids)
        by_org = _sums(orgs.codes, alerts, len(orgs.values))
        org_rows = np.bincount(orgs.codes, minlength=len(orgs.values))
        for k, org in enumerate(orgs.values):
            if org_rows[k]:
                self.alerts_by_org[org] = self.alerts_by_org.get(org, 0) + by_org[k]
        days = np.asarray(batch.days, dtype=np.int64)
        low = int(days.min())
        span = int(days.max()) - low + 1
        for pair in np.unique(orgs.codes.astype(np.int64) * span + (days - low)).tolist():
            org_code, day = divmod(pair, span)
            self.days_by_org.setdefault(orgs.values[org_code], set()).add(day + low)
        fams = Coded.encode(result.families)
        seen = _sums(fams.codes, c, len(fams.values))
        alerted = _sums(fams.codes, alerts, len(fams.values))
        present = np.bincount(fams.codes, minlength=len(fams.values))
        for k, fam in enumerate(fams.values):
            if present[k]:
                cell = self.by_family.setdefault(fam, [0, 0])
                cell[0] += seen[k]
                cell[1] += alerted[k]
        per_verdict = _sums(codes.astype(np.intp), c, len(VERDICTS))
        present = np.bincount(codes.astype(np.intp), minlength=len(VERDICTS))
        for k in np.flatnonzero(present).tolist():
            v = VERDICTS[k].value
            self.verdicts[v] = self.verdicts.get(v, 0) + per_verdict[k]

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

    def summary(self, name: str, org_order: Sequence[str] = ()) -> RescoreSummary:
        """The frozen figures of this tally, orgs in `org_order` (the store's creation order).

        Org ids are pseudonyms the store draws at random, so their sort order is no order for
        one history; orgs `org_order` does not name come after its own, by id.
        """
        pos = {o: i for i, o in enumerate(org_order)}
        orgs = sorted(self.alerts_by_org, key=lambda o: (pos.get(o, len(pos)), o))
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
            alerts_per_org=tuple((o, self.alerts_by_org[o]) for o in orgs),
            alerts_per_org_per_day=tuple(
                (o, self.alerts_by_org[o] / max(len(self.days_by_org.get(o, ())), 1)) for o in orgs
            ),
            families=tuple(sorted((k, v[0], v[1]) for k, v in self.by_family.items())),
            verdicts=tuple(sorted(self.verdicts.items())),
        )


@dataclass(frozen=True, slots=True)
class RescoreSummary:
    """One config's figures: rescored recall, FP rate, alerts per org, per-family breakdown.

    Count-weighted over encounters. `fp_rate` is alerts among encounters not labelled
    malicious; `families` holds (family, encounters, alerts), family from the labels. The
    per-org figures run in the store's creation order (`Tally.summary`), not by org id.
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


def _sums(codes: npt.NDArray[np.intp], weights: npt.NDArray[np.int64], size: int) -> list[int]:
    """Exact integer sums of `weights` per code (0..size-1)."""
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, codes, weights)
    return [int(x) for x in out.tolist()]


# --- the thin shell: streaming the store --------------------------------------------------------


def iter_row_batches(
    store: AggregateStore,
    *,
    schema: str,
    vector_length: int,
    until: dt.datetime,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[RowBatch]:
    """Stream active (non-shadow) aggregate rows first seen before `until`, with their vectors.

    Rows come by sample (`Store.iter_aggregate_columns`), so a batch reads each of its (org,
    sample) vectors once, each row its own org's; orgs, samples and verdicts arrive as `Coded`
    columns. Memory is bounded by
    `batch_rows` rows and their distinct samples' vectors.
    """
    verdict_lut = {v.value: VERDICT_CODES[v] for v in VERDICTS}
    for cols in store.iter_aggregate_columns(
        shadow=False, until_ms=int(until.timestamp() * 1000), batch_rows=batch_rows
    ):
        n = len(cols)
        raw = b"".join(cols.sha256s)
        if len(raw) != 32 * n:
            raise ValueError("aggregate sample keys must be 32 bytes")
        _, first, sample_of_row = np.unique(
            np.frombuffer(raw, dtype="S32"), return_index=True, return_inverse=True
        )
        shas = tuple(cols.sha256s[i].hex() for i in first.tolist())
        sample_of_row = sample_of_row.reshape(-1).astype(np.intp)
        verdicts = np.fromiter(map(verdict_lut.__getitem__, cols.verdicts), np.intp, n)
        org_keys, org_of_row = np.unique(np.array(cols.org_keys), return_inverse=True)
        org_of_row = org_of_row.reshape(-1).astype(np.intp)
        names = dict(cols.org_names)
        org_names = tuple(names[k] for k in org_keys.tolist())
        # each row reads the vector its own org reported (per-org vectors); a vector shared
        # byte for byte by several orgs is decoded and scored once
        pair_code = org_of_row.astype(np.int64) * len(shas) + sample_of_row
        pairs, row_pair = np.unique(pair_code, return_inverse=True)
        pair_keys = [(org_names[p // len(shas)], shas[p % len(shas)]) for p in pairs.tolist()]
        found = store.feature_vectors(pair_keys, schema)
        distinct: dict[tuple[str, bytes], int] = {}
        vec_of_pair = np.full(len(pair_keys), -1, dtype=np.int64)
        for j, key in enumerate(pair_keys):
            raw_vec = found.get(key)
            if raw_vec is not None:
                vec_of_pair[j] = distinct.setdefault((key[1], raw_vec), len(distinct))
        yield RowBatch(
            org_ids=Coded(org_names, org_of_row),
            sha256s=Coded(shas, sample_of_row),
            first_seen_ms=np.array(cols.first_seen_ms, dtype=np.int64),
            days=np.array(cols.days, dtype=np.int64),
            model_versions=np.array(cols.model_versions, dtype=np.int64),
            counts=np.array(cols.counts, dtype=np.int64),
            verdicts=Coded(VERDICTS, verdicts),
            vectors=decode_vectors([v for _, v in distinct], vector_length),
            vec_index=vec_of_pair[row_pair.reshape(-1)],
            vec_sha256s=tuple(sha for sha, _ in distinct),
        )


def read_sample(root: Path, sha: str) -> bytes | None:
    """A sample's bytes from a samples folder, or None.

    Where feature-extraction rescoring finds what to extract from: the folder flat, fanned out
    by the sha256's first two hex digits, or under `samples/`.
    """
    for p in (root / sha, root / sha[:2] / sha, root / "samples" / sha[:2] / sha):
        if p.is_file():
            return p.read_bytes()
    return None


def run_rescore(
    store: AggregateStore,
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
    inputs = RunInputs(bundles, timeline, LabelBook(store.iter_labels(until=now)), now, read_sample)
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
    order = store.org_ids()
    return tuple(t.summary(c.name, order) for t, c in zip(tallies, configs, strict=True))
