"""Org shards as Spark tasks (`local[2]`): the same results as local workers, byte for byte.

The Spark session is started the way `tests/backend/analysis/test_spark.py` starts its own
(same settings), so when both modules run in one session `getOrCreate` hands both the one JVM.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import backend.store.sqlite as sqlite_store
from fleet_sim.link.fold import FoldedRows
from fleet_sim.parallel.shard import ShardWorkerError
from fleet_sim.parallel.spark import SparkEngine, read_folded_rows, write_folded_rows
from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict
from fleetward.cli import main
from tests.fleet_sim.conftest import SCENARIOS
from tests.fleet_sim.parallel.test_shard import SCENARIO, _outcome
from tests.pseudonyms import CountingIds

_TEST_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)


@pytest.fixture(scope="session")
def sim_spark() -> Iterator[Any]:
    """A local[2] SparkSession (the analysis tests' session when they started one first)."""
    if shutil.which("java") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("java is missing in CI: .ci/run must install openjdk-17-jre-headless")
        pytest.skip("java is not installed (Spark needs it)")
    pytest.importorskip("pyspark")
    from backend.analysis.spark import spark_session

    session = spark_session("local[2]", "fleetward-tests", conf=_TEST_CONF)
    yield session
    session.stop()


@pytest.mark.slow
def test_spark_tasks_give_the_local_engines_records_aggregates_and_outcomes(
    small_corpus, sim_bundles, tmp_path, monkeypatch, sim_spark
):
    sc = scenario_from_dict(SCENARIO)
    got = {}
    for name, engine in (("local", None), ("spark", SparkEngine(sim_spark))):
        monkeypatch.setattr(sqlite_store, "secrets", CountingIds())
        out = tmp_path / name
        run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=out, workers=2,
                           engine=engine)  # fmt: skip
        got[name] = _outcome(run, out)
    local, spark = got["local"], got["spark"]
    counters = spark[1]
    assert '"breaker_trips"' in counters and '"push_wakeups"' in counters
    assert local[5] and local[6]  # aggregates and arm_days were written
    for a, b in zip(local, spark, strict=True):
        assert a == b
    # each of the two tasks wrote its folds as Parquet, and Spark reads what the store holds
    parts = tmp_path / "spark" / "main" / "shard-aggregates"
    assert sorted(p.name for p in parts.iterdir()) == ["shard=0", "shard=1"]
    assert all(list((parts / s).glob("fold-*.parquet")) for s in ("shard=0", "shard=1"))
    from pyspark.sql import functions as F  # noqa: N812 - the PySpark idiom

    frame = sim_spark.read.parquet(str(parts))
    by_shard = dict(frame.groupBy("shard").agg(F.sum("count")).collect())
    with sqlite3.connect(tmp_path / "spark" / "main" / "backend.sqlite") as conn:
        (stored,) = conn.execute("SELECT sum(count) FROM aggregates").fetchone()
    assert set(by_shard) == {0, 1} and sum(by_shard.values()) == stored > 0


class _FailingShard(SparkEngine):
    """Asks shard 1 for a method it does not have once the tasks are up (a failing task)."""

    jobs: list[Any]

    def open(self, fleet, seed, workers, out):
        drivers = super().open(fleet, seed, workers, out)
        self.jobs = [d._job for d in drivers]
        drivers[1].send("no_such_method")
        try:
            drivers[1].recv()
        finally:
            for d in drivers:
                d.close()
        return drivers


@pytest.mark.slow
def test_a_failing_shard_task_fails_the_run_and_ends_the_spark_job(
    small_corpus, sim_bundles, tmp_path, sim_spark
):
    sc = scenario_from_dict({**SCENARIO, "days": 0.25})
    engine = _FailingShard(sim_spark)
    with pytest.raises(ShardWorkerError, match="Spark shard task failed: AttributeError"):
        run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=2,
                     engine=engine)  # fmt: skip
    (job,) = set(engine.jobs)
    assert not job.thread.is_alive() and job.error is None  # both tasks returned


def test_folded_rows_survive_parquet_with_their_dtypes_and_sketches(tmp_path):
    rng = np.random.default_rng(3)
    n = 50
    size = rng.integers(0, 40, n).astype(np.int64)
    blob = rng.integers(0, 256, int(size.sum()) + 17, dtype=np.uint8).tobytes()
    # sketches laid out in another order than the rows (as after a day sort), with a gap
    order = rng.permutation(n)
    start = np.zeros(n, np.int64)
    start[order] = 17 + np.r_[0, np.cumsum(size[order])[:-1]]
    rows = FoldedRows(
        day=rng.integers(0, 3, n).astype(np.int64), org=rng.integers(0, 9, n).astype(np.int32),
        sample=rng.integers(0, 900, n).astype(np.int32), model=np.full(n, 2, np.int16),
        verdict=rng.integers(0, 6, n).astype(np.int8), count=rng.integers(1, 99, n),
        first=rng.integers(0, 10**12, n), last=rng.integers(0, 10**12, n),
        sketches=blob, start=start, size=size,
    )  # fmt: skip
    write_folded_rows(rows, tmp_path / "f.parquet")
    back = read_folded_rows(tmp_path / "f.parquet")
    back.check()
    for c in ("day", "org", "sample", "model", "verdict", "count", "first", "last", "size"):
        a, b = getattr(rows, c), getattr(back, c)
        assert a.dtype == b.dtype and np.array_equal(a, b), c
    assert back.sketch_list() == rows.sketch_list()
    assert len(back.sketches) == int(size.sum())  # the gap and the order are gone


def _sim_run(sim_data: Path, out: Path, *extra: str) -> Any:
    args = ["sim", "run", str(SCENARIOS / "kill-switch.toml"), "--endpoints", "100",
            "--data", str(sim_data), "--out", str(out), *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def _one_error_line(r: Any) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert "Traceback" not in r.output
    return lines[-1]


def test_unreachable_spark_master_is_a_one_line_error_with_exit_2(sim_data, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _sim_run(sim_data, tmp_path / "o", "--engine", "spark", "--spark-master",
                 f"spark://127.0.0.1:{port}")  # fmt: skip
    assert r.exit_code == 2, r.output
    line = _one_error_line(r)
    assert "unreachable" in line or "needs" in line  # "needs": no pyspark or Java here
    assert not (tmp_path / "o").exists()


def test_unknown_spark_master_url_is_a_one_line_error_with_exit_2(sim_data, tmp_path):
    r = _sim_run(sim_data, tmp_path / "o", "--engine", "spark", "--spark-master", "bogus://x")
    assert r.exit_code == 2, r.output
    line = _one_error_line(r)
    assert "bad Spark master URL 'bogus://x'" in line or "needs" in line


def test_missing_java_is_a_one_line_error_with_exit_2(sim_data, tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    r = _sim_run(sim_data, tmp_path / "o", "--engine", "spark", "--spark-master", "local[2]")
    assert r.exit_code == 2, r.output
    assert "needs Java" in _one_error_line(r) or "needs pyspark" in r.output


def test_missing_pyspark_is_a_one_line_error_with_exit_2(sim_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # what `import pyspark` sees without it
    r = _sim_run(sim_data, tmp_path / "o", "--engine", "spark")
    assert r.exit_code == 2, r.output
    assert "pip install 'fleetward[spark]'" in _one_error_line(r)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--spark-master", "local[2]"), "--spark-master needs --engine spark"),
        (("--engine", "spark", "--mode", "exact"), "--engine spark runs the cohort mode"),
    ],
)
def test_spark_options_that_do_not_fit_are_usage_errors(sim_data, tmp_path, extra, says):
    r = _sim_run(sim_data, tmp_path / "o", *extra)
    assert r.exit_code == 2 and says in r.output
