"""Labels as of when they were known: a backdated import changes no past result by default.

Every label change stores when the backend received it (`recorded_at`); rescoring and the
transition report read, by default, the labels known at each sample's as-of time. The
corrected truth (labels from their `labelled_at`, however late they arrived) is the explicit
switch `corrected_labels` (`[as_of] corrected_labels = true` in a rescore config).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from backend.analysis.labels import LabelBook, LabelChange, LabelSource, LabelValue
from backend.analysis.rescore import RescoreConfig, Stage, run_rescore
from backend.analysis.transition import predict_transition
from tests.backend.history import END, ROLLOUT, START, History, copy_store, history

__all__ = ["history"]

TODAY = END + dt.timedelta(days=30)
SHA = "ab" * 32


def test_label_book_reads_a_backdated_label_from_when_it_was_known() -> None:
    old = LabelChange(SHA, LabelValue.BENIGN, LabelSource.FEED, START, recorded_at=START)
    late = LabelChange(SHA, LabelValue.MALICIOUS, LabelSource.ANALYST, START, recorded_at=TODAY)
    book = LabelBook([old, late])
    assert late.known_at == TODAY
    assert book.label_as_of(SHA, ROLLOUT) == old
    assert book.label_as_of(SHA, TODAY) == late
    assert book.label_as_of(SHA, ROLLOUT, corrected=True) == late


def test_store_records_arrival_and_answers_as_known(history: History, tmp_path: Path) -> None:
    store = copy_store(history, tmp_path / "copy.db")
    sha = sorted(history.vectors)[0]
    store.append_labels(
        [LabelChange(sha, LabelValue.MALICIOUS, LabelSource.ANALYST, START)], now=TODAY
    )
    got = store.label_as_of(sha, TODAY)
    assert got is not None and got.recorded_at == TODAY and got.labelled_at == START
    assert store.label_as_of(sha, ROLLOUT, corrected=True) == got
    known = store.label_as_of(sha, ROLLOUT)
    assert known is None or known.recorded_at is not None and known.recorded_at <= ROLLOUT
    store.close()


def test_backdated_label_imported_today_leaves_past_results_unchanged(
    history: History, tmp_path: Path
) -> None:
    store = copy_store(history, tmp_path / "copy.db")
    cfg = RescoreConfig(
        "v2", frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS}),
        ((1, history.bundles[2]), (2, history.bundles[2])),
    )  # fmt: skip
    corrected = dataclasses.replace(cfg, name="v2 corrected", corrected_labels=True)
    (before, before_c) = run_rescore(store, [cfg, corrected], now=TODAY)
    transition_before = predict_transition(
        store, history.bundles[1], history.bundles[2], now=ROLLOUT
    )
    # today an analyst reverses every benign sample's label, dated back to the start
    benign = sorted(set(history.vectors) - history.malicious)
    store.append_labels(
        [LabelChange(s, LabelValue.MALICIOUS, LabelSource.ANALYST, START) for s in benign],
        now=TODAY,
    )
    (after, after_c) = run_rescore(store, [cfg, corrected], now=TODAY)
    transition_after = predict_transition(
        store, history.bundles[1], history.bundles[2], now=ROLLOUT
    )
    store.close()
    assert after.to_dict() == before.to_dict()  # the default: as known then
    assert transition_after.to_dict() == transition_before.to_dict()
    # the switch reaches into the past: the corrected truth sees the reversed labels
    assert before_c.to_dict() == before.to_dict() | {"name": "v2 corrected"}
    assert after_c.malicious_encounters > before_c.malicious_encounters
