"""Transition analysis: the false-positive surge a model version change would cause, per org.

A new version is better on average and still makes mistakes of its own; after an update a
customer can be flooded with new alerts on software only they run. Before a rollout,
`predict_transition` scores every sample each organization has seen (the aggregates and the
stored feature vectors) under the old and the new version, decides both with the org's current
policy through `agent.engine.context_for` / `agent.decision.decide`, and weights each flip by
how often the org encountered the sample.

Definitions (also in `TransitionReport.to_dict()["definitions"]`):
- negative flip: a sample an org saw that the old version does not alert on and the new one
  does (block, detect or blocklisted), and that is not labelled malicious as of `now`;
- positive flip: the same change on a sample labelled malicious as of `now`;
- observation window of an org: the UTC days from its first to its last active (non-shadow)
  aggregate row before `now`, inclusive;
- predicted new false-positive alerts per day: the org's encounters of negatively flipped
  samples over its observation window (sum of aggregate counts) divided by the window's days.
  It assumes the coming days look like the window and every endpoint runs the new version;
- endpoints touched: distinct endpoints (from the aggregates' sketches) that reported a
  negatively flipped sample in the window;
- recall on historical attacks: share of encounters of samples labelled malicious as of `now`
  that alert, count-weighted;
- NFR (negative flip rate, Yan et al. 2021): share of labelled encounters the old version got
  right and the new one gets wrong.

Mitigations: (1) the transition allowlist, the negatively flipped samples as `ListEntry` rows
with an expiry, ready to publish with the policy (only when the feature schema is unchanged:
the stored vectors then are the ones the new model reads). Vectors are per org: each
(org, sample) pair is scored on the vector that org's own endpoints reported, so one org's
reports never change another's figures, and `OrgTransition.allowlist_sha256s` is each org's
own list. `TransitionReport.allowlist_candidates()` scopes each flip to its org; the
fleet-wide `transition_allowlist` is only the union for display and is never applied as is: an
entry goes fleet-wide only on fleet-level evidence (`backend.analysis.transition_allowlist`),
applied by scope through `backend.admin.add_allowlist_candidates`. Labels are those known at `now`
unless `corrected_labels` (`backend.analysis.labels`); (2) shadow mode: when the schema
changed the report recommends a shadow phase, and `predict_from_shadow` computes the same
prediction from the shadow verdicts that endpoints reported (aggregates with `shadow=True`);
(3) congruent training (`fleetward model train --congruent-with`): given a congruent candidate,
the report sets its NFR and recall beside the plain one's.

The store is only read at the edge (`_load_pairs`, or in bulk `read_pair_columns`) and the
pairs scored here; the prediction itself is `backend.analysis.transition_report.build_report`
over arrays and frozen values, the core this engine shares with the Spark engine
(`backend.analysis.spark`). Every decision is taken once per decision case (`CaseScores`:
pairs equal in sample and scores, a few thousand at a million endpoints) and broadcast to the
pairs through one case column, so the pairs cost a few bytes each rather than a score and a
flag per version each (memory: the prediction runs beside the fleet simulator's shards). The
report's values (`TransitionReport`, `OrgTransition`, ...) are defined there and re-exported
here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.heap import release_free_memory
from agent.model import LoadedModel
from agent.policy import EffectivePolicy, resolve_policy
from backend import sketch
from backend.analysis._base import decode_vectors, load_model, score_vectors
from backend.analysis.labels import LabelBook
from backend.analysis.transition_columns import OrgSamplePairs, PairCases, read_pair_columns
from backend.analysis.transition_report import (
    DEFAULT_ALLOWLIST_TTL,
    DEFAULT_FP_BUDGET_PER_DAY,
    CandidateFigures,
    CaseScores,
    OrgRows,
    OrgTransition,
    PairScores,
    SweepPoint,
    TransitionReport,
    build_report,
    is_schema_changed,
    shadow_from_rows,
)

if TYPE_CHECKING:
    from backend.store import AggregateStore

__all__ = [
    "CandidateFigures",
    "OrgTransition",
    "SweepPoint",
    "TransitionCheck",
    "TransitionReport",
    "check_transition",
    "predict_from_shadow",
    "predict_transition",
]


def _score_pairs(
    pairs: OrgSamplePairs,
    vectors: dict[tuple[str, str], npt.NDArray[np.float32]],
    model: LoadedModel,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each (org, sample) pair scored on its own org's vector; each distinct vector once."""
    distinct: dict[bytes, int] = {}
    rows: list[npt.NDArray[np.float32]] = []
    pos = np.full(len(pairs.sha256s), -1, dtype=np.int64)
    for i, key in enumerate(zip(pairs.org_ids, pairs.sha256s, strict=True)):
        vec = vectors.get(key)
        if vec is None:
            continue
        raw = vec.tobytes()
        j = distinct.get(raw)
        if j is None:
            j = distinct[raw] = len(rows)
            rows.append(vec)
        pos[i] = j
    by_vector = score_vectors(model, np.stack(rows)) if rows else np.zeros(0)
    ok = pos >= 0
    scores = np.zeros(len(pos), dtype=np.float64)
    scores[ok] = by_vector[pos[ok]]
    return scores, ok


# --- the edge: reading the store -------------------------------------------------------------


def _load_pairs(
    store: AggregateStore, now: dt.datetime, org: str | None, *, shadow: bool
) -> OrgSamplePairs:
    acc: dict[tuple[str, str], list[Any]] = {}
    span: dict[str, list[int]] = {}
    for batch in store.iter_aggregates(
        org_id=org, shadow=shadow, until_ms=int(now.timestamp() * 1000)
    ):
        for r in batch:
            cell = acc.get((r.org_id, r.sha256))
            if cell is None:
                acc[(r.org_id, r.sha256)] = [r.count, r.endpoints]
            else:
                cell[0] += r.count
                cell[1] = sketch.merge(cell[1], r.endpoints)
            d = span.get(r.org_id)
            if d is None:
                span[r.org_id] = [r.day, r.day]
            else:
                d[0], d[1] = min(d[0], r.day), max(d[1], r.day)
    keys = sorted(acc)
    return OrgSamplePairs(
        org_ids=tuple(k[0] for k in keys),
        sha256s=tuple(k[1] for k in keys),
        counts=np.asarray([acc[k][0] for k in keys], dtype=np.int64),
        sketches=tuple(acc[k][1] for k in keys),
        org_days=tuple((o, d[1] - d[0] + 1) for o, d in sorted(span.items())),
    )


def _load_vectors(
    store: AggregateStore, keys: Sequence[tuple[str, str]], model: LoadedModel
) -> dict[tuple[str, str], npt.NDArray[np.float32]]:
    """The vectors of (org, sample) pairs, each read from its own org's reports only."""
    out: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
    uniq = sorted(set(keys))
    for i in range(0, len(uniq), 20_000):
        found = store.feature_vectors(uniq[i : i + 20_000], model.manifest.feature_schema)
        found_keys = sorted(found)
        mat = decode_vectors([found[k] for k in found_keys], model.manifest.vector_length)
        out.update(zip(found_keys, mat, strict=True))
    return out


def _policies(
    store: AggregateStore, orgs: Iterable[str], now: dt.datetime
) -> dict[str, EffectivePolicy | None]:
    record = store.policy_as_of(now)
    return {o: resolve_policy(record.document, o) if record else None for o in orgs}


def predict_transition(
    store: AggregateStore,
    old_bundle: Path,
    new_bundle: Path,
    *,
    now: dt.datetime,
    org: str | None = None,
    fp_budget_per_day: float = DEFAULT_FP_BUDGET_PER_DAY,
    allowlist_ttl: dt.timedelta = DEFAULT_ALLOWLIST_TTL,
    congruent_bundle: Path | None = None,
    columnar: bool = True,
    corrected_labels: bool = False,
) -> TransitionReport:
    """Predict the per-org false-positive surge of moving from `old_bundle` to `new_bundle`.

    Reads the active aggregates first seen before `now` (one org, or all), the stored feature
    vectors, the labels as of `now` and the policy in force at `now`; scores each distinct
    sample once per version with batched onnxruntime; decides with the agent's own functions.
    "Per day" is defined in the module docstring (count over the org's observation window
    divided by its days).

    Labels are those the backend knew at `now` (`known_at`, the default: what an operator
    deciding at `now` had); `corrected_labels=True` reads the corrected truth instead, every
    label from its `labelled_at` (backdated labels included), as `backend.analysis.labels`
    defines it.

    A SQLite store file is read in bulk (`backend.analysis.transition_columns`); `columnar=False`,
    and any other store, read row by row through the store protocol: the reference the bulk read is
    tested against. Both feed the same decisions and figures.

    Raises:
        BundleRejectedError: a bundle does not load or fails its self-test.
    """
    old, new = load_model(old_bundle), load_model(new_bundle)
    cong = load_model(congruent_bundle) if congruent_bundle is not None else None
    book = LabelBook(store.iter_labels(until=now))
    schema_changed = is_schema_changed(old, new)
    cols = read_pair_columns(store, now, org) if columnar else None
    scores: PairScores | CaseScores
    if cols is not None:  # the bulk read of a SQLite file (same pairs, same scores)
        # the read's temporaries go back to the system before the next phase allocates its
        # own: a process that keeps freed memory (the simulator) would hold both at once
        release_free_memory()
        pairs = cols.pairs
        schemas = [(old.manifest.feature_schema, old.manifest.vector_length)]
        if schema_changed:
            schemas.append((new.manifest.feature_schema, new.manifest.vector_length))
        cases = cols.cases(schemas)  # each pair's case: its sample and vectors
        release_free_memory()
        by_sample = OrgRows.of(pairs)  # each distinct sample's label is looked up once
        mal_of, benign_of = _label_flags(book, by_sample.samples, now, corrected_labels)
        per_case = cases.pairs_per_case
        scores = CaseScores(
            cases.case,
            cases.sample,
            PairScores(
                *_case_scores(old, cases, 0),
                *_case_scores(new, cases, 1 if schema_changed else 0),
                _case_scores(cong, cases, 0) if cong else None,
                malicious=mal_of[cases.sample],
                benign=benign_of[cases.sample],
                without_vectors=int(per_case[cases.rows[0] < 0].sum()),
            ),
            pairs_per_case=per_case,
        )
        del cases, per_case
    else:  # the reference: row by row through the store protocol
        pairs = _load_pairs(store, now, org, shadow=False)
        keys = list(zip(pairs.org_ids, pairs.sha256s, strict=True))
        vec_old = _load_vectors(store, keys, old)
        vec_new = vec_old if not schema_changed else _load_vectors(store, keys, new)
        s_old, s_new = _score_pairs(pairs, vec_old, old), _score_pairs(pairs, vec_new, new)
        s_cong = _score_pairs(pairs, vec_old, cong) if cong else None
        without_vectors = len(set(keys) - set(vec_old))
        by_sample = OrgRows.of(pairs)  # each distinct sample's label is looked up once
        mal_of, benign_of = _label_flags(book, by_sample.samples, now, corrected_labels)
        scores = PairScores(
            *s_old,
            *s_new,
            s_cong,
            malicious=mal_of[by_sample.sample_index],
            benign=benign_of[by_sample.sample_index],
            without_vectors=without_vectors,
        )
    no_shadow = cols is not None and not cols.has_shadow_rows(
        new.version, int(now.timestamp() * 1000)
    )
    return build_report(
        pairs,
        scores,
        old,
        new,
        cong,
        _policies(store, dict(pairs.org_days), now),
        {}
        if no_shadow
        else predict_from_shadow(
            store, new.version, now=now, org=org, corrected_labels=corrected_labels
        ),
        now=now,
        fp_budget_per_day=fp_budget_per_day,
        allowlist_ttl=allowlist_ttl,
        by_org=by_sample,
        org_order=store.org_ids(),  # ties in creation order, not pseudonym order
    )


def _label_flags(
    book: LabelBook, samples: Sequence[str], now: dt.datetime, corrected: bool
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per sample: labelled malicious, labelled benign (as of `now`)."""
    labels = [book.label_as_of(s, now, corrected=corrected) for s in samples]
    mal_of = np.asarray([lb is not None and lb.is_malicious for lb in labels], dtype=bool)
    benign_of = np.asarray([lb is not None and not lb.is_malicious for lb in labels], dtype=bool)
    return mal_of, benign_of


def _case_scores(
    model: LoadedModel, cases: PairCases, schema: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each case's score under `model` on its vector of `cases`' schema `schema` (0 if none)."""
    row, mat = cases.rows[schema], cases.matrices[schema]
    by_vector = score_vectors(model, mat) if len(mat) else np.zeros(0)
    ok = row >= 0
    out = np.zeros(len(row), dtype=np.float64)
    out[ok] = by_vector[row[ok]]
    return out, ok


def predict_from_shadow(
    store: AggregateStore,
    new_version: int,
    *,
    now: dt.datetime,
    org: str | None = None,
    corrected_labels: bool = False,
) -> dict[str, OrgTransition]:
    """The same per-org prediction from shadow telemetry of `new_version` (mitigation 2).

    Endpoints running the candidate in shadow report its verdicts as `shadow=True` aggregate
    rows beside their active rows. Per (org, sample, day): new false-positive encounters =
    shadow alert encounters minus active alert encounters (at least 0), for samples not
    labelled malicious as of `now`; per day = their sum over the org's shadow window (first to
    last day with shadow rows, inclusive) divided by its days. Works whatever the feature
    schema, since the endpoints computed the new model's features themselves.
    """
    rows = (
        r
        for batch in store.iter_aggregates(org_id=org, until_ms=int(now.timestamp() * 1000))
        for r in batch
    )
    return shadow_from_rows(
        rows,
        lambda: LabelBook(store.iter_labels(until=now)),
        new_version,
        now,
        corrected=corrected_labels,
    )


# --- checking a prediction after the fact -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransitionCheck:
    """What actually happened after the rollout, beside the prediction."""

    actual_new_fp_alerts_per_day: dict[str, float]
    fleet_actual_new_fp_alerts_per_day: float
    malicious_encounters_after: int
    malicious_encounters_allowlisted: int

    @property
    def allowlist_recall_cost(self) -> float:
        """Share of post-transition malicious encounters the transition allowlist would shield."""
        if not self.malicious_encounters_after:
            return 0.0
        return self.malicious_encounters_allowlisted / self.malicious_encounters_after


def check_transition(
    report: TransitionReport,
    store: AggregateStore,
    *,
    since: dt.datetime,
    until: dt.datetime,
    labels_as_of: dt.datetime,
) -> TransitionCheck:
    """Measure, after a rollout, the new false-positive alerts the report predicted.

    Actual new false-positive alerts of an org: encounters in active rows of
    `report.new_version` first seen in [since, until) that alert, on samples not labelled
    malicious as of `labels_as_of` and on which the old version raised no alert in that org
    before `since`; per day = over the days of [since, until). Also measures what the
    transition allowlist would cost: the malicious encounters of that period on its samples.
    """
    book = LabelBook(store.iter_labels(until=labels_as_of))
    shielded = {e.sha256 for e in report.transition_allowlist}
    since_ms, until_ms = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    old_alerts: set[tuple[str, str]] = set()
    for batch in store.iter_aggregates(shadow=False, until_ms=since_ms):
        for r in batch:
            if r.model_version == report.old_version and r.verdict.is_alert:
                old_alerts.add((r.org_id, r.sha256))
    days = max((until - since) / dt.timedelta(days=1), 1e-9)
    per_org: dict[str, float] = {}
    mal_total = mal_allow = 0
    for batch in store.iter_aggregates(shadow=False, until_ms=until_ms):
        for r in batch:
            if r.first_seen_ms < since_ms or r.model_version != report.new_version:
                continue
            lb = book.label_as_of(r.sha256, labels_as_of)
            if lb is not None and lb.is_malicious:
                mal_total += r.count
                mal_allow += r.count if r.sha256 in shielded else 0
            elif r.verdict.is_alert and (r.org_id, r.sha256) not in old_alerts:
                per_org[r.org_id] = per_org.get(r.org_id, 0.0) + r.count / days
    return TransitionCheck(per_org, sum(per_org.values()), mal_total, mal_allow)
