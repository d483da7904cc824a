"""Engine parity: rescoring on Spark (local mode) gives the local engine's figures exactly.

One Spark session for the module (Spark starts slowly); `pytest -k spark` selects it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from backend.export import export
from backend.rescore import AsOfRule, RescoreConfig, Stage, run_rescore
from tests.backend.history import END, History, history

__all__ = ["history"]

NOW = END + __import__("datetime").timedelta(days=2)
ALL = frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS})


def _java_or_fail() -> None:
    if shutil.which("java") is None:
        import os

        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("java is missing in CI: .ci/run must install openjdk-17-jre-headless")
        pytest.skip("java is not installed (Spark needs it)")


@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_spark_engine_reproduces_the_local_engine(history: History, tmp_path: Path):
    _java_or_fail()
    pytest.importorskip("pyspark")
    from backend.spark_engine import run_rescore_spark, spark_session

    b1, b2 = history.bundles[1], history.bundles[2]
    recorded = RescoreConfig("recorded", ALL, ((1, b1), (2, b2)))
    configs = [
        RescoreConfig("as-recorded", frozenset()),
        recorded,
        RescoreConfig("v2-everywhere", ALL, ((1, b2), (2, b2))),
        dataclasses.replace(recorded, name="labels-today", labels_as_of=AsOfRule.EVALUATION),
    ]
    local = run_rescore(history.store, configs, now=NOW, batch_rows=97)
    out = export(history.store, tmp_path / "export")
    assert out.aggregates > 0 and out.labels > 0 and out.policies > 0
    spark = spark_session("local[2]")
    try:
        on_spark = run_rescore_spark(out.out_dir, configs, now=NOW, spark=spark, partitions=2)
    finally:
        spark.stop()
    assert on_spark == local
    assert local[1].agreement_with_recorded == 1.0  # endpoint parity, on both engines
    assert local[2].verdicts != local[1].verdicts  # the swap changed something
