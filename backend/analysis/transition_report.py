"""The transition report's core: the one both engines run, from scored pairs to the report.

`backend.analysis.transition.predict_transition` (the local engine: the store, read in bulk or
row by row) and `backend.analysis.spark.predict_transition_spark` (the Spark engine: a Parquet
export) differ only in how they read and score the (org, sample) pairs. Every decision, per-org
figure, sweep point and allowlist entry comes from here, so the two engines cannot disagree on a
rule (`tests/backend/analysis/test_spark.py` holds them equal). The names an engine calls are
public; everything else is private to this module:

- `PairScores`: per (org, sample) pair, each version's score, whether it could be scored, and
  the label flags; `CaseScores` the same per decision case (pairs equal in sample and scores),
  with each pair's case; `OrgRows` the pairs grouped by org;
- `build_report`: decisions (`agent.decision.decide` through `agent.engine.context_for`
  contexts, vectorised by `decide_batch`), per-org and fleet figures, the threshold sweep, the
  transition allowlist and the congruent candidate's figures;
- `shadow_from_rows`: the shadow-mode prediction from aggregate rows;
- `is_schema_changed`: whether the transition allowlist can apply at all;
- the report's values (`TransitionReport`, `OrgTransition`, `SweepPoint`, `CandidateFigures`)
  and its defaults. `backend.analysis.transition` re-exports the values, its public home.

Definitions of every figure are in `backend.analysis.transition`'s docstring and in
`TransitionReport.to_dict()["definitions"]`. Pure: no store, no clock (`now` is an argument).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.bundle import Thresholds
from agent.decision import DENY_VERDICTS, DecisionContext, decide
from agent.engine import context_for
from agent.model import LoadedModel
from agent.policy import EffectivePolicy, ListEntry
from backend import sketch
from backend.analysis._base import VERDICTS, decide_batch
from backend.analysis.labels import LabelBook
from backend.analysis.transition_allowlist import AllowlistCandidate
from backend.analysis.transition_columns import OrgSamplePairs

if TYPE_CHECKING:
    from backend.ingest import AggregateRow

__all__ = [
    "ALLOWLIST_AUTHOR",
    "DEFAULT_ALLOWLIST_TTL",
    "DEFAULT_FP_BUDGET_PER_DAY",
    "CandidateFigures",
    "CaseScores",
    "OrgRows",
    "OrgTransition",
    "PairScores",
    "SweepPoint",
    "TransitionReport",
    "build_report",
    "is_schema_changed",
    "shadow_from_rows",
]

DEFAULT_ALLOWLIST_TTL = dt.timedelta(days=30)
DEFAULT_FP_BUDGET_PER_DAY = 1.0
ALLOWLIST_AUTHOR = "fleetward-transition"
_BLOCKING = DENY_VERDICTS  # the one deny set (agent.decision)


@dataclass(frozen=True, slots=True)
class OrgTransition:
    """One organization's predicted change (see the module docstring for definitions)."""

    org_id: str
    predicted_new_fp_alerts_per_day: float
    endpoints_touched: int
    negative_flips: int
    positive_flips: int
    new_fp_encounters: int
    observation_days: int
    recall_before: float | None
    recall_after: float | None
    new_block_encounters: int = 0
    new_detect_encounters: int = 0
    allowlist_sha256s: tuple[str, ...] = ()
    """This org's transition allowlist: its own negative flips, from its own vectors."""


def _org_json(o: OrgTransition) -> dict[str, Any]:
    """An org's figures plus the 95 % Garwood interval of its predicted new FP alerts/day."""
    from backend.intervals import rate_interval

    out = asdict(o)
    if o.observation_days > 0:
        band = rate_interval(o.new_fp_encounters, o.observation_days)
        out["predicted_new_fp_alerts_per_day_95"] = [band.low, band.high]
    return out


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """The new model alerting at `score >= alert_threshold` (blocking stays at the bundle's)."""

    alert_threshold: float
    max_org_fp_per_day: float
    fleet_fp_per_day: float
    orgs_over_budget: int
    recall: float | None


@dataclass(frozen=True, slots=True)
class CandidateFigures:
    """NFR, recall and predicted surge of one new-version candidate against the old version."""

    name: str
    nfr: float | None
    recall: float | None
    fleet_predicted_new_fp_alerts_per_day: float
    negative_flips: int


@dataclass(frozen=True, slots=True)
class TransitionReport:
    """The prediction for one old -> new version change; `to_dict()` is the JSON twin."""

    old_version: int
    new_version: int
    now: dt.datetime
    per_org: dict[str, OrgTransition]
    fleet_predicted_new_fp_alerts_per_day: float
    fleet_endpoints_touched: int
    transition_allowlist: tuple[ListEntry, ...]
    schema_changed: bool
    recall_before: float | None
    recall_after: float | None
    samples_scored: int
    samples_without_vectors: int
    sweep: tuple[SweepPoint, ...]
    fp_budget_per_day: float
    recommended_alert_threshold: float | None
    allowlisted_fp_alerts_per_day_removed: float
    shadow_per_org: dict[str, OrgTransition] = field(default_factory=dict)
    candidates: tuple[CandidateFigures, ...] = ()
    notes: tuple[str, ...] = ()
    org_order: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """The orgs in the store's creation order: the tie key of every per-org list.

    Pseudonyms are drawn at random, so an order by pseudonym differs between two stores (or
    two simulated runs of one seed) holding the same history; creation order does not. Orgs
    not in it (an export without `orgs.parquet`) follow, by pseudonym. Not a figure: reports
    equal in every figure compare equal whatever their `org_order`.
    """

    def _org_key(self) -> Callable[[str], tuple[int, str]]:
        """The per-org tie key: (creation position, pseudonym)."""
        pos = {o: k for k, o in enumerate(self.org_order)}
        return lambda o: (pos.get(o, len(pos)), o)

    def allowlist_candidates(self) -> tuple[AllowlistCandidate, ...]:
        """The raw transition allowlist as org-scoped candidates: each org's own flips.

        A flip is derived from one org's vectors, so it is a candidate for that org only
        (`backend.admin.add_allowlist_candidates` applies it there); the fleet-wide
        `transition_allowlist` union is never applied as is.
        """
        entry_of = {e.sha256: e for e in self.transition_allowlist}
        key = self._org_key()
        return tuple(
            AllowlistCandidate(entry_of[sha], o.org_id)
            for o in sorted(self.per_org.values(), key=lambda o: key(o.org_id))
            for sha in o.allowlist_sha256s
            if sha in entry_of
        )

    def ranked_orgs(self) -> list[OrgTransition]:
        """Orgs by predicted surge, largest first; ties in `org_order`."""
        key = self._org_key()
        return sorted(
            self.per_org.values(),
            key=lambda o: (-o.predicted_new_fp_alerts_per_day, key(o.org_id)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the report; per-org lists in rank or `org_order`, never dict order."""
        key = self._org_key()
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "now": self.now.isoformat(),
            "schema_changed": self.schema_changed,
            "fleet_predicted_new_fp_alerts_per_day": self.fleet_predicted_new_fp_alerts_per_day,
            "fleet_endpoints_touched": self.fleet_endpoints_touched,
            "recall_before": self.recall_before,
            "recall_after": self.recall_after,
            "samples_scored": self.samples_scored,
            "samples_without_vectors": self.samples_without_vectors,
            "fp_budget_per_day": self.fp_budget_per_day,
            "recommended_alert_threshold": self.recommended_alert_threshold,
            "allowlisted_fp_alerts_per_day_removed": self.allowlisted_fp_alerts_per_day_removed,
            "per_org": [_org_json(o) for o in self.ranked_orgs()],
            "shadow_per_org": [
                asdict(o) for o in sorted(self.shadow_per_org.values(), key=lambda o: key(o.org_id))
            ],
            "sweep": [asdict(p) for p in self.sweep],
            "candidates": [asdict(c) for c in self.candidates],
            "transition_allowlist": [_entry_json(e) for e in self.transition_allowlist],
            "allowlist_candidates": [
                {**_entry_json(c.entry), "scope": c.scope, "org_id": c.org_id}
                for c in self.allowlist_candidates()
            ],
            "notes": list(self.notes),
            "definitions": {
                "per_day": "encounters over the org's observation window (first to last "
                "active aggregate day before now, inclusive) divided by its days",
                "negative_flip": "old version no alert, new version alert, not labelled "
                "malicious as of now",
                "positive_flip": "old version no alert, new version alert, labelled malicious",
                "nfr": "share of labelled encounters the old version got right and the new "
                "one gets wrong",
            },
        }


def _entry_json(e: ListEntry) -> dict[str, Any]:
    return {
        "sha256": e.sha256,
        "reason": e.reason,
        "author": e.author,
        "created_at": e.created_at.isoformat(),
        "expires_at": e.expires_at.isoformat() if e.expires_at else None,
    }


# --- the shared core: scored pairs in, report out ------------------------------------------


def is_schema_changed(old: LoadedModel, new: LoadedModel) -> bool:
    """True when the new version reads other vectors than the old (schema name or length).

    Then the stored vectors are not the ones the new model reads: the transition allowlist does
    not apply, and an engine scores the new version on the new schema's vectors.
    """
    return (old.manifest.feature_schema, old.manifest.vector_length) != (
        new.manifest.feature_schema,
        new.manifest.vector_length,
    )


@dataclass(frozen=True, slots=True)
class PairScores:
    """Per pair: each version's score and whether it could be scored, and the label flags.

    What an engine hands `build_report` (one row per pair of its `OrgSamplePairs`, in the same
    order): a pair not scored by a version (no vector in its schema) has score 0 and `ok_*`
    False. `congruent` is the congruent candidate's (scores, ok), scored on the old schema's
    vectors; `without_vectors` counts the pairs without an old-schema vector. `CaseScores`
    holds the same fields with one row per decision case.
    """

    old: npt.NDArray[np.float64]
    ok_old: npt.NDArray[np.bool_]
    new: npt.NDArray[np.float64]
    ok_new: npt.NDArray[np.bool_]
    congruent: tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]] | None
    malicious: npt.NDArray[np.bool_]
    benign: npt.NDArray[np.bool_]
    without_vectors: int


@dataclass(frozen=True, slots=True)
class OrgRows:
    """Pairs grouped by org, and their distinct samples.

    `build_report` builds it from the pairs when not given one; an engine that needs the
    distinct samples first (to look each sample's label up once) passes its own.

    `index[i]` is pair i's position in `org_days`; org k's pairs are
    `order[starts[k]:starts[k+1]]`, or with `order` None (pairs already in org order, as every
    read gives them) the range `starts[k]:starts[k+1]` itself. `samples[sample_index[i]]` is
    pair i's sample (each distinct sample once, for `decide_batch`'s list lookups).
    """

    index: npt.NDArray[np.intp]
    order: npt.NDArray[np.intp] | None
    starts: npt.NDArray[np.intp]
    samples: tuple[str, ...]
    sample_index: npt.NDArray[np.intp]

    @classmethod
    def of(cls, pairs: OrgSamplePairs) -> OrgRows:
        """Group `pairs` by org (no copy when they are in org order, as every read gives them)."""
        idx = pairs.org_index
        if idx is None:
            pos = {o: k for k, (o, _) in enumerate(pairs.org_days)}
            idx = np.fromiter((pos[o] for o in pairs.org_ids), np.intp, len(pairs.org_ids))
        k = len(pairs.org_days)
        if len(idx) < 2 or bool(np.all(idx[1:] >= idx[:-1])):  # in org order: no copy of idx
            order = None
            found = np.searchsorted(idx, np.arange(k, dtype=idx.dtype))
            starts = np.append(found, len(idx)).astype(np.intp)
        else:
            order = np.argsort(idx, kind="stable").astype(np.intp)
            counts = np.bincount(idx, minlength=k)
            starts = np.concatenate(([0], np.cumsum(counts))).astype(np.intp)
        if pairs.samples is not None and pairs.sample_index is not None:
            return cls(idx, order, starts, pairs.samples, pairs.sample_index)
        code: dict[str, int] = {}
        sample_index = np.fromiter(
            (code.setdefault(s, len(code)) for s in pairs.sha256s), np.intp, len(pairs.sha256s)
        )
        return cls(idx, order, starts, tuple(code), sample_index)

    def rows(self, orgs: Sequence[int]) -> npt.NDArray[np.intp]:
        """The pairs of the orgs at these positions."""
        if self.order is None:
            parts = [np.arange(self.starts[k], self.starts[k + 1]) for k in orgs]
        else:
            parts = [self.order[self.starts[k] : self.starts[k + 1]] for k in orgs]
        return np.concatenate(parts).astype(np.intp) if parts else np.zeros(0, dtype=np.intp)

    def sums(self, mask: npt.NDArray[np.bool_], counts: npt.NDArray[np.int64]) -> list[int]:
        """Per org: the count-weighted sum over the pairs in `mask` (exact integers)."""
        k = len(self.starts) - 1
        if self.order is None:  # each org's pairs are one range: a sum per range, in int64
            out = np.zeros(k, dtype=np.int64)
            held = np.flatnonzero(self.starts[:-1] < self.starts[1:])
            if not len(held):
                return [0] * k
            # a block of orgs at a time, summed in int64: the masked copy is a block's
            cut = np.searchsorted(self.starts[held], np.arange(0, len(mask), _SUM_BLOCK))
            for lo, hi in itertools.pairwise(sorted({*cut.tolist(), len(held)})):
                at = self.starts[held[lo:hi]]
                a, b = int(at[0]), int(self.starts[held[hi - 1] + 1])
                masked = np.where(mask[a:b], counts[a:b], 0)
                out[held[lo:hi]] = np.add.reduceat(masked, at - a, dtype=np.int64)
            return [int(v) for v in out]
        sums = np.bincount(self.index[mask], weights=counts[mask], minlength=k)
        return [int(v) for v in sums.astype(np.int64)]


@dataclass(frozen=True, slots=True)
class CaseScores:
    """The pairs' decision cases: per pair its case; per case its sample, scores and labels.

    `scores` holds the per-pair fields of `PairScores` with one row per case instead.

    A pair's verdict under a context depends only on its sample and its score, so every
    decision is taken once per case and broadcast to the case's pairs (`_alerts`); a
    million-endpoint fleet's 1.85M pairs are a few thousand cases. The columnar read builds
    them from the vectors' digests (`PairColumns.cases`); per-pair scores (the reference read,
    Spark) become cases by `_cases_of`.
    """

    case: npt.NDArray[np.int32]
    sample: npt.NDArray[np.intp]
    scores: PairScores
    pairs_per_case: npt.NDArray[np.int64]


def _cases_of(scores: PairScores, sample_index: npt.NDArray[np.intp]) -> CaseScores:
    """Per-pair scores as cases: pairs equal in sample, every score (bit for bit) and label."""
    n = len(sample_index)

    def bits(a: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)

    cols = [
        np.asarray(sample_index, dtype=np.int64),
        bits(scores.old),
        scores.ok_old.astype(np.int64),
        bits(scores.new),
        scores.ok_new.astype(np.int64),
        scores.malicious.astype(np.int64),
        scores.benign.astype(np.int64),
    ]
    if scores.congruent is not None:
        cols += [bits(scores.congruent[0]), scores.congruent[1].astype(np.int64)]
    if n:
        _, first, inverse, per_case = np.unique(
            np.stack(cols, axis=1),
            axis=0,
            return_index=True,
            return_inverse=True,
            return_counts=True,
        )
    else:
        first, inverse = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        per_case = np.zeros(0, dtype=np.int64)
    cong = scores.congruent
    return CaseScores(
        case=inverse.reshape(-1).astype(np.int32),
        sample=np.asarray(sample_index, dtype=np.intp)[first],
        scores=PairScores(
            scores.old[first],
            scores.ok_old[first],
            scores.new[first],
            scores.ok_new[first],
            (cong[0][first], cong[1][first]) if cong is not None else None,
            malicious=scores.malicious[first],
            benign=scores.benign[first],
            without_vectors=scores.without_vectors,
        ),
        pairs_per_case=per_case.astype(np.int64),
    )


def _pair_sketches(pairs: OrgSamplePairs, rows: npt.NDArray[np.intp]) -> dict[int, bytes]:
    """The merged endpoint sketch of each pair in `rows`."""
    if pairs.sketch_reader is not None:
        return dict(zip(rows.tolist(), pairs.sketch_reader(rows), strict=True))
    return {i: pairs.sketches[i] for i in rows.tolist()}


@dataclass(frozen=True, slots=True)
class _Scored:
    """Per pair: old and new alert flags, new verdict kind, label flags."""

    old_alert: npt.NDArray[np.bool_]
    new_alert: npt.NDArray[np.bool_]
    new_block: npt.NDArray[np.bool_]
    scored: npt.NDArray[np.bool_]
    malicious: npt.NDArray[np.bool_]
    benign: npt.NDArray[np.bool_]


_SUM_BLOCK = 1 << 17
"""Pairs per block of orgs summed at once (`OrgRows.sums`)."""
_ALERT_BY_CODE = np.array([v.is_alert for v in VERDICTS], dtype=bool)
_BLOCK_BY_CODE = np.array([v in _BLOCKING for v in VERDICTS], dtype=bool)


def _alerts(
    pairs: OrgSamplePairs,
    cases: CaseScores,
    scores: npt.NDArray[np.float64],
    scored: npt.NDArray[np.bool_],
    contexts: dict[str, DecisionContext],
    by_org: OrgRows,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Each pair decided with its org's context (`decide`, score None when unscored).

    `scores` and `scored` are per case. Each context decides every case once: scored cases
    through `decide_batch` (one `decide` per distinct kind), unscored ones once per distinct
    sample; each pair then takes its case's verdict under its org's context.
    """
    n = len(cases.case)
    codes = np.zeros(n, dtype=np.int8)
    groups: dict[DecisionContext, list[int]] = {}
    for k, (org, _) in enumerate(pairs.org_days):
        groups.setdefault(contexts[org], []).append(k)
    ok, unscored = np.flatnonzero(scored), np.flatnonzero(~scored)
    if len(unscored):  # without a score the verdict depends on the sample only
        present, inverse = np.unique(cases.sample[unscored], return_inverse=True)
    for ctx, orgs in groups.items():
        table = np.zeros(len(scored), dtype=np.int8)  # per case
        table[ok] = decide_batch(ctx, by_org.samples, cases.sample[ok], scores[ok])
        if len(unscored):
            per_sample = np.fromiter(
                (
                    VERDICTS.index(decide(by_org.samples[j], None, ctx).verdict)
                    for j in present.tolist()
                ),
                np.int8,
                len(present),
            )
            table[unscored] = per_sample[inverse.reshape(-1)]
        if len(groups) == 1:
            codes = table[cases.case]
        elif by_org.order is None:  # each org's pairs are one range
            for k in orgs:
                a, b = int(by_org.starts[k]), int(by_org.starts[k + 1])
                codes[a:b] = table[cases.case[a:b]]
        else:
            rows = by_org.rows(orgs)
            codes[rows] = table[cases.case[rows]]
    return _ALERT_BY_CODE[codes], _BLOCK_BY_CODE[codes]


def _wsum(mask: npt.NDArray[np.bool_], counts: npt.NDArray[np.int64]) -> int:
    return int(counts.sum(where=mask, dtype=np.int64))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _per_org(pairs: OrgSamplePairs, s: _Scored, by_org: OrgRows) -> dict[str, OrgTransition]:
    neg = s.scored & ~s.old_alert & s.new_alert & ~s.malicious
    pos = s.scored & ~s.old_alert & s.new_alert & s.malicious
    mal = s.malicious & s.scored
    k = len(pairs.org_days)
    c = pairs.counts
    enc, mal_n = by_org.sums(neg, c), by_org.sums(mal, c)
    mal_old, mal_new = by_org.sums(mal & s.old_alert, c), by_org.sums(mal & s.new_alert, c)
    new_block, new_detect = by_org.sums(neg & s.new_block, c), by_org.sums(neg & ~s.new_block, c)
    n_neg = np.bincount(by_org.index[neg], minlength=k).tolist()
    n_pos = np.bincount(by_org.index[pos], minlength=k).tolist()
    neg_rows = np.flatnonzero(neg)
    sketches = _pair_sketches(pairs, neg_rows)
    rows_of: list[list[int]] = [[] for _ in range(k)]
    for i, o in zip(neg_rows.tolist(), by_org.index[neg_rows].tolist(), strict=True):
        rows_of[o].append(i)
    out: dict[str, OrgTransition] = {}
    for o, (org, n_days) in enumerate(pairs.org_days):
        touched = sketch.sketch_of(h for i in rows_of[o] for h in _sketch_values(sketches[i]))
        out[org] = OrgTransition(
            org_id=org,
            predicted_new_fp_alerts_per_day=enc[o] / max(n_days, 1),
            endpoints_touched=sketch.estimate(touched),
            negative_flips=n_neg[o],
            positive_flips=n_pos[o],
            new_fp_encounters=enc[o],
            observation_days=n_days,
            recall_before=_ratio(mal_old[o], mal_n[o]),
            recall_after=_ratio(mal_new[o], mal_n[o]),
            new_block_encounters=new_block[o],
            new_detect_encounters=new_detect[o],
            allowlist_sha256s=tuple(sorted({pairs.sha256s[i] for i in rows_of[o]})),
        )
    return out


def _sketch_values(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw), 8)]


def _nfr(s: _Scored, counts: npt.NDArray[np.int64]) -> float | None:
    labelled = s.scored & (s.malicious | s.benign)
    old_right = np.where(s.malicious, s.old_alert, ~s.old_alert)
    new_right = np.where(s.malicious, s.new_alert, ~s.new_alert)
    return _ratio(_wsum(labelled & old_right & ~new_right, counts), _wsum(labelled, counts))


def _sweep_grid(cases: CaseScores) -> npt.NDArray[np.float64]:
    """The sweep's thresholds: quantiles 0.5 .. 1 of the new version's scores of scored pairs.

    One score per pair (a case's score repeated by its pairs): the one per-pair float array of
    the prediction, so `build_report` takes it before any per-pair flag exists.
    """
    scored = cases.scores.ok_old & cases.scores.ok_new
    on_pairs = np.repeat(cases.scores.new[scored], cases.pairs_per_case[scored])
    if not len(on_pairs):  # nothing scored: no sweep (np.quantile refuses an empty array)
        return np.zeros(0, dtype=np.float64)
    q = np.linspace(0.5, 1.0, 21)
    return np.unique(np.round(np.quantile(on_pairs, q, overwrite_input=True), 6))


def _sweep(
    pairs: OrgSamplePairs,
    cases: CaseScores,
    grid: npt.NDArray[np.float64],
    s: _Scored,
    contexts_new: dict[str, DecisionContext],
    budget: float,
    by_org: OrgRows,
) -> tuple[tuple[SweepPoint, ...], float | None]:
    scored = cases.scores.ok_old & cases.scores.ok_new
    if grid.size == 0:
        return (), None
    points = []
    could_flip = s.scored & ~s.old_alert & ~s.malicious  # each point adds only its alerts
    mal = s.scored & s.malicious
    mal_n = _wsum(mal, pairs.counts)
    for t in grid:
        ctxs = {
            org: DecisionContext(
                block_threshold=max(float(t), c.block_threshold),
                detect_threshold=float(t),
                mode=c.mode,
                allowlist=c.allowlist,
                blocklist=c.blocklist,
            )
            for org, c in contexts_new.items()
        }
        alert, _ = _alerts(pairs, cases, cases.scores.new, scored, ctxs, by_org)
        enc = by_org.sums(could_flip & alert, pairs.counts)
        per_org = {org: enc[o] / max(d, 1) for o, (org, d) in enumerate(pairs.org_days)}
        points.append(
            SweepPoint(
                alert_threshold=float(t),
                max_org_fp_per_day=max(per_org.values(), default=0.0),
                fleet_fp_per_day=math.fsum(per_org.values()),
                orgs_over_budget=sum(1 for v in per_org.values() if v > budget),
                recall=_ratio(_wsum(mal & alert, pairs.counts), mal_n),
            )
        )
    ok = [p for p in points if p.orgs_over_budget == 0]
    best = min(ok, key=lambda p: p.alert_threshold).alert_threshold if ok else None
    return tuple(points), best


def _contexts(
    orgs: Iterable[str],
    policies: dict[str, EffectivePolicy | None],
    th: Thresholds,
    now: dt.datetime,
) -> dict[str, DecisionContext]:
    return {org: context_for(policies.get(org), th, now) for org in orgs}


def _candidate(
    name: str,
    s: _Scored,
    per_org: dict[str, OrgTransition],
    counts: npt.NDArray[np.int64],
    mal: npt.NDArray[np.bool_],
) -> CandidateFigures:
    """One candidate's NFR, recall, fleet surge and negative flips against the old version.

    `mal` is the plain new version's scored malicious pairs, so every candidate's recall is
    taken over the same encounters.
    """
    neg = s.scored & ~s.old_alert & s.new_alert & ~s.malicious
    return CandidateFigures(
        name,
        _nfr(s, counts),
        _ratio(_wsum(mal & s.new_alert, counts), _wsum(mal, counts)),
        math.fsum(o.predicted_new_fp_alerts_per_day for o in per_org.values()),
        int(neg.sum()),
    )


def build_report(
    pairs: OrgSamplePairs,
    scores: PairScores | CaseScores,
    old: LoadedModel,
    new: LoadedModel,
    cong: LoadedModel | None,
    policies: dict[str, EffectivePolicy | None],
    shadow: dict[str, OrgTransition],
    *,
    now: dt.datetime,
    fp_budget_per_day: float,
    allowlist_ttl: dt.timedelta,
    by_org: OrgRows | None = None,
    org_order: Sequence[str] = (),
) -> TransitionReport:
    """Decisions, per-org and fleet figures from scored pairs: what every engine shares.

    `by_org` is `OrgRows.of(pairs)` when the caller has it already. Per-pair scores are
    turned into cases first (`_cases_of`); every decision is then taken per case. `org_order`
    (the store's orgs in creation order) orders the report's per-org lists
    (`TransitionReport.org_order`). Fleet figures are exactly rounded sums (`math.fsum`), so
    they do not depend on the order the orgs come in either.
    """
    schema_changed = is_schema_changed(old, new)
    by_org = by_org if by_org is not None else OrgRows.of(pairs)
    cs = scores if isinstance(scores, CaseScores) else _cases_of(scores, by_org.sample_index)
    per = cs.scores  # per case
    grid = _sweep_grid(cs)
    orgs = [o for o, _ in pairs.org_days]
    ctx_old = _contexts(orgs, policies, old.manifest.thresholds, now)
    ctx_new = _contexts(orgs, policies, new.manifest.thresholds, now)
    scored_case = per.ok_old & per.ok_new
    # per pair: one byte per flag (the case column maps each pair to its case's)
    scored, malicious, benign = scored_case[cs.case], per.malicious[cs.case], per.benign[cs.case]
    old_alert, _ = _alerts(pairs, cs, per.old, scored_case, ctx_old, by_org)
    new_alert, new_block = _alerts(pairs, cs, per.new, scored_case, ctx_new, by_org)
    s = _Scored(old_alert, new_alert, new_block, scored, malicious, benign)
    per_org = _per_org(pairs, s, by_org)
    sweep, best = _sweep(pairs, cs, grid, s, ctx_new, fp_budget_per_day, by_org)
    mal = scored & malicious
    neg = scored & ~old_alert & new_alert & ~malicious
    notes: list[str] = []
    allow: tuple[ListEntry, ...] = ()
    removed = 0.0
    if schema_changed:
        notes.append(
            f"feature schema changed ({old.manifest.feature_schema} -> "
            f"{new.manifest.feature_schema}): the transition allowlist does not apply; run the "
            "new version in shadow mode first and predict from its shadow verdicts"
        )
    else:
        shas = sorted({pairs.sha256s[i] for i in np.flatnonzero(neg).tolist()})
        allow = tuple(
            ListEntry(
                sha256=sha,
                reason=f"transition v{old.version}->v{new.version}: new alert on a sample "
                "seen before and not known malicious",
                author=ALLOWLIST_AUTHOR,
                created_at=now,
                expires_at=now + allowlist_ttl,
            )
            for sha in shas
        )
        removed = math.fsum(o.predicted_new_fp_alerts_per_day for o in per_org.values())
        notes.append(
            f"the transition allowlist ({len(allow)} sample(s), expiring after "
            f"{allowlist_ttl.days} days) removes {removed:.2f} predicted new false-positive "
            "alerts per day; it shields only these exact sha256s, none labelled malicious as "
            "of now, so its recall cost on new malware is zero unless one of them is later "
            "confirmed malicious (check_transition measures it after the rollout)"
        )
    candidates = [_candidate(f"v{new.version}", s, per_org, pairs.counts, mal)]
    if cong is not None and per.congruent is not None:
        s_c, ok_c = per.congruent
        c_alert, c_block = _alerts(
            pairs,
            cs,
            s_c,
            ok_c & per.ok_old,
            _contexts(orgs, policies, cong.manifest.thresholds, now),
            by_org,
        )
        c_scored = (ok_c & per.ok_old)[cs.case]
        sc = _Scored(old_alert, c_alert, c_block, c_scored, malicious, benign)
        per_c = _per_org(pairs, sc, by_org)
        candidates.append(_candidate(f"v{cong.version} (congruent)", sc, per_c, pairs.counts, mal))
    neg_sketches = _pair_sketches(pairs, np.flatnonzero(neg))
    touched = sketch.sketch_of(h for v in neg_sketches.values() for h in _sketch_values(v))
    return TransitionReport(
        old_version=old.version,
        new_version=new.version,
        now=now,
        per_org=per_org,
        fleet_predicted_new_fp_alerts_per_day=math.fsum(
            o.predicted_new_fp_alerts_per_day for o in per_org.values()
        ),
        fleet_endpoints_touched=sketch.estimate(touched),
        transition_allowlist=allow,
        schema_changed=schema_changed,
        recall_before=_ratio(_wsum(mal & old_alert, pairs.counts), _wsum(mal, pairs.counts)),
        recall_after=_ratio(_wsum(mal & new_alert, pairs.counts), _wsum(mal, pairs.counts)),
        samples_scored=len(np.unique(cs.sample[scored_case])),
        samples_without_vectors=per.without_vectors,
        sweep=sweep,
        fp_budget_per_day=fp_budget_per_day,
        recommended_alert_threshold=best,
        allowlisted_fp_alerts_per_day_removed=removed,
        shadow_per_org=shadow,
        candidates=tuple(candidates),
        notes=tuple(notes),
        org_order=tuple(org_order),
    )


def shadow_from_rows(
    rows: Iterable[AggregateRow],
    labels: Callable[[], LabelBook],
    new_version: int,
    now: dt.datetime,
    *,
    corrected: bool = False,
) -> dict[str, OrgTransition]:
    """`predict_from_shadow` over aggregate rows (active and shadow, first seen before `now`).

    Labels as known at `now`, or with `corrected` as labelled by `now`.
    """
    shadow_alerts: dict[tuple[str, str, int], list[Any]] = {}
    active_alerts: dict[tuple[str, str, int], int] = {}
    span: dict[str, list[int]] = {}
    for r in rows:
        key = (r.org_id, r.sha256, r.day)
        if r.shadow:
            if r.model_version != new_version:
                continue
            d = span.setdefault(r.org_id, [r.day, r.day])
            d[0], d[1] = min(d[0], r.day), max(d[1], r.day)
            if r.verdict.is_alert:
                cell = shadow_alerts.setdefault(key, [0, b""])
                cell[0] += r.count
                cell[1] = sketch.merge(cell[1], r.endpoints)
        elif r.verdict.is_alert:
            active_alerts[key] = active_alerts.get(key, 0) + r.count
    if not span:
        return {}
    book = labels()
    enc: dict[str, int] = dict.fromkeys(span, 0)
    flips: dict[str, set[str]] = {o: set() for o in span}
    hashes: dict[str, list[int]] = {o: [] for o in span}
    for (o, sha, day), (count, sk) in shadow_alerts.items():
        lb = book.label_as_of(sha, now, corrected=corrected)
        extra = count - active_alerts.get((o, sha, day), 0)
        if extra <= 0 or (lb is not None and lb.is_malicious):
            continue
        enc[o] += extra
        flips[o].add(sha)
        hashes[o].extend(_sketch_values(sk))
    return {
        o: OrgTransition(
            org_id=o,
            predicted_new_fp_alerts_per_day=enc[o] / (d[1] - d[0] + 1),
            endpoints_touched=sketch.estimate(sketch.sketch_of(hashes[o])),
            negative_flips=len(flips[o]),
            positive_flips=0,
            new_fp_encounters=enc[o],
            observation_days=d[1] - d[0] + 1,
            recall_before=None,
            recall_after=None,
        )
        for o, d in sorted(span.items())
    }
