"""Engine parity: rescoring and transition analysis on Spark (local mode) equal the local engine.

Spark starts slowly, so the whole test session shares one SparkSession (`local[2]`, two
shuffle partitions, no UI, a driver JVM tuned for short runs) and one Parquet export of the
session's `history`; `pytest -k spark` selects these tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.analysis.export import ExportResult, export
from backend.analysis.rescore import AsOfRule, RescoreConfig, Stage, run_rescore
from tests.backend.history import END, History, history

__all__ = ["history"]

NOW = END + dt.timedelta(days=2)
ALL = frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS})
# a JVM that lives for a minute: C1 only and the serial collector start and warm up fastest
_TEST_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)


def _java_or_fail() -> None:
    if shutil.which("java") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("java is missing in CI: .ci/run must install openjdk-17-jre-headless")
        pytest.skip("java is not installed (Spark needs it)")


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local SparkSession for the whole test session."""
    _java_or_fail()
    pytest.importorskip("pyspark")
    from backend.analysis.spark import spark_session

    session = spark_session("local[2]", "fleetward-tests", conf=_TEST_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def exported(history: History, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The history's Parquet export, written once (read-only for tests)."""
    out = export(history.store, tmp_path_factory.mktemp("spark") / "export")
    assert out.aggregates > 0 and out.labels > 0 and out.policies > 0
    return out


def test_spark_engine_reproduces_the_local_engine(
    history: History, exported: ExportResult, spark: Any
):
    from backend.analysis.spark import run_rescore_spark

    b1, b2 = history.bundles[1], history.bundles[2]
    recorded = RescoreConfig("recorded", ALL, ((1, b1), (2, b2)))
    configs = [
        RescoreConfig("as-recorded", frozenset()),
        recorded,
        RescoreConfig("v2-everywhere", ALL, ((1, b2), (2, b2))),
        dataclasses.replace(recorded, name="labels-today", labels_as_of=AsOfRule.EVALUATION),
    ]
    local = run_rescore(history.store, configs, now=NOW, batch_rows=97)
    on_spark = run_rescore_spark(exported.out_dir, configs, now=NOW, spark=spark, partitions=2)
    assert on_spark == local
    assert local[1].agreement_with_recorded == 1.0  # endpoint parity, on both engines
    assert local[2].verdicts != local[1].verdicts  # the swap changed something


def test_spark_transition_reproduces_the_local_engine(
    history: History, exported: ExportResult, spark: Any
):
    from backend.analysis.spark import predict_transition_spark
    from backend.analysis.transition import predict_transition

    b1, b2 = history.bundles[1], history.bundles[2]
    local = predict_transition(history.store, b1, b2, now=NOW)
    on_spark = predict_transition_spark(
        exported.out_dir, b1, b2, now=NOW, spark=spark, partitions=2
    )
    assert on_spark.per_org == local.per_org  # predicted new FP alerts, flips, per org
    assert on_spark.shadow_per_org == local.shadow_per_org
    assert on_spark == local  # and every fleet figure, the sweep and the allowlist
    # and the same text: per-org lists in the store's creation order (the export's orgs)
    assert json.dumps(on_spark.to_dict()) == json.dumps(local.to_dict())
    assert on_spark.org_order == local.org_order == tuple(history.orgs)
    assert sum(o.negative_flips for o in local.per_org.values()) > 0  # something to predict
    assert local.shadow_per_org


def test_spark_engine_extracts_features_as_the_local_engine(
    history: History, exported: ExportResult, spark: Any, tmp_path: Path
) -> None:
    """FEATURE_EXTRACTION: a sample found under `samples_dir` is scored on its extracted
    features (here: malicious bytes under benign samples' names), the others on their stored
    vectors, on both engines alike."""
    from backend.analysis.spark import run_rescore_spark

    shas = sorted({r.sha256 for rows in history.store.iter_aggregates() for r in rows})
    bad = [r for r in history.corpus.records if r.label == 1]
    planted = [s for s in shas if s not in history.malicious][: len(bad)]
    for sha, record in zip(planted[::2], bad, strict=False):  # half of them, the rest stored
        (tmp_path / sha).write_bytes(history.corpus.sample_path(record).read_bytes())
    b2 = history.bundles[2]
    stored = RescoreConfig("stored", ALL, ((1, b2), (2, b2)))
    redone = dataclasses.replace(
        stored, name="extracted", stages=ALL | {Stage.FEATURE_EXTRACTION}, samples_dir=tmp_path
    )
    local = run_rescore(history.store, [stored, redone], now=NOW, batch_rows=97)
    on_spark = run_rescore_spark(
        exported.out_dir, [stored, redone], now=NOW, spark=spark, partitions=2
    )
    assert on_spark == local
    assert local[1].verdicts != local[0].verdicts  # the planted bytes changed verdicts


@pytest.mark.parametrize("candidate", [1, 2])
def test_spark_transition_with_a_congruent_candidate_reproduces_the_local_engine(
    history: History, exported: ExportResult, spark: Any, candidate: int
) -> None:
    """The congruent candidate is scored on the old schema's vectors on both engines (as each
    of the two versions in turn, so its scores differ from one of theirs)."""
    from backend.analysis.spark import predict_transition_spark
    from backend.analysis.transition import predict_transition

    b1, b2 = history.bundles[1], history.bundles[2]
    cand = history.bundles[candidate]
    local = predict_transition(history.store, b1, b2, now=NOW, congruent_bundle=cand)
    on_spark = predict_transition_spark(
        exported.out_dir, b1, b2, now=NOW, spark=spark, partitions=2, congruent_bundle=cand
    )
    assert on_spark == local
    assert local != predict_transition(history.store, b1, b2, now=NOW)  # the candidate counts


def test_spark_engine_reads_no_vectors_for_recorded_verdicts_only(
    history: History, exported: ExportResult, spark: Any
) -> None:
    """Configs that rescore nothing skip the scoring stage and still equal the local engine."""
    from backend.analysis.spark import run_rescore_spark

    configs = [
        RescoreConfig("as-recorded", frozenset()),
        RescoreConfig("labels-today", frozenset(), labels_as_of=AsOfRule.EVALUATION),
    ]
    local = run_rescore(history.store, configs, now=NOW, batch_rows=97)
    assert run_rescore_spark(exported.out_dir, configs, now=NOW, spark=spark) == local
    assert local[0].encounters > 0 and local[0].rescored_encounters == 0
