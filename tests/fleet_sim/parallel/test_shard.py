"""Org shards: the cohort mode gives the same results on 1, 2 and 3 workers, byte for byte."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import pickle
import sqlite3
import threading

import numpy as np
import pytest

import backend.store.sqlite as sqlite_store
import fleet_sim.parallel.shard as shard_module
from fleet_sim.cohort.engine import rng_blocks
from fleet_sim.link.fold import FoldedRows
from fleet_sim.parallel.shard import Shard, ShardWorkerError, recv_reply, send_reply, shard_ranges
from fleet_sim.result.report import report_dict
from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict
from tests.pseudonyms import CountingIds

# a world that exercises every fleet-wide path: a staged rollout with the transition prediction
# at its start (a flush) and a block-storming candidate (breaker trips, health evidence, the
# gate's ticks), push, a campaign, a backend outage, an allowlist change and an org kill switch
SCENARIO = {
    "name": "shards",
    "seed": 5,
    "days": 3,
    "endpoint_days": True,
    "world": {
        "orgs": 14,
        "endpoints": 1200,
        "scans_per_hour": 6.0,
        "malware_share": 0.01,
        "breaker_max_blocks": 3,
    },
    "models": {
        "initial": 1,
        "bundles": [
            {"version": 1, "bundle": "v1"},
            {"version": 2, "bundle": "v2", "score_bias_from": "block", "score_bias": 0.0},
        ],
    },
    "campaigns": [{"name": "c", "family": "loader_v2", "start": "1d", "per_endpoint_per_day": 2}],
    "timeline": [
        {"at": "12h", "do": "start_rollout", "version": 2, "stages": [10, 50, 100],
         "stage_hours": 6, "min_endpoint_days": 5, "predict": True},
        {"at": "1d2h", "do": "backend_outage", "until": "1d5h"},
        {"at": "1d12h", "do": "allowlist_add", "sha256": ["0" * 64]},
        {"at": "2d", "do": "kill_switch", "org": "org-0003"},
    ],
}  # fmt: skip


def _rows(path, table):
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5").fetchall()  # noqa: S608


def _outcome(run, tmp):
    data = report_dict(run)
    data.pop("wall_s")
    rec = run.arms["main"].recorder
    arrays = {
        name: getattr(rec, name).tolist()
        for name in ("enc", "mal_enc", "alerts", "fp_alerts", "new_fp", "mal_alerts")
    }
    tracked = {v: seen.tolist() for v, (_t, seen) in rec.tracked.items()}
    installed = {v: np.flatnonzero(a).tolist() for v, a in rec.installed.items()}
    return (
        json.dumps(data, sort_keys=False),
        json.dumps(rec.counters),
        json.dumps(arrays),
        json.dumps(tracked),
        json.dumps(installed),
        _rows(tmp / "main" / "backend.sqlite", "aggregates"),
        _rows(tmp / "main" / "backend.sqlite", "arm_days"),
    )


@pytest.mark.parametrize("evidence", ["throughout", "rollout", "spool"])
def test_one_two_and_three_workers_give_identical_records_aggregates_and_outcomes(
    small_corpus, sim_bundles, tmp_path, monkeypatch, evidence
):
    # evidence during the rollout only: the hourly barriers before and after it are posted,
    # and with at most 4 calls posted ahead the coordinator takes answers at the bound too;
    # "spool": endpoints spool at most 4 events through the outage, so the spool bound's
    # filter (per-endpoint counts, newest kept) runs in every shard
    world = {**SCENARIO["world"], **({"spool_max_events": 4} if evidence == "spool" else {})}
    sc = scenario_from_dict({**SCENARIO, "endpoint_days": evidence != "rollout", "world": world})
    if evidence == "rollout":
        monkeypatch.setattr(shard_module, "_POSTED_MAX", 4)
    got = {}
    for workers in (1, 2, 3):
        monkeypatch.setattr(sqlite_store, "secrets", CountingIds())
        out = tmp_path / f"w{workers}"
        run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=out,
                           workers=workers)  # fmt: skip
        got[workers] = _outcome(run, out)
        w = run.arms["main"].world
        assert len(shard_ranges(w.org_first, w.org_size, workers)) == workers  # really split
    one = got[1]
    rec_counters = json.loads(one[1])
    # the world did what the test is about (else identity would be cheap)
    assert rec_counters["breaker_trips"] > 0
    assert rec_counters["push_wakeups"] > 0
    assert rec_counters["checkins_failed"] > 0
    if evidence == "spool":
        assert rec_counters["events_dropped"] > 0  # the bound did drop events
    assert one[5] and one[6]
    assert "halt" in one[0] or "advance" in one[0]
    for workers in (2, 3):
        for a, b in zip(one, got[workers], strict=True):
            assert a == b, f"workers={workers} differs"


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 40])
def test_shards_are_whole_contiguous_blocks_covering_every_org(workers):
    size = np.asarray([500, 3, 7, 120, 1, 1, 60, 900, 2, 40, 8, 11, 5, 300], np.int64)
    first = np.r_[0, np.cumsum(size)[:-1]]
    blocks = rng_blocks(first, size)
    ranges = shard_ranges(first, size, workers)
    assert ranges[0][0] == 0 and ranges[-1][1] == size.size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    starts = {a for a, _ in blocks}
    assert all(lo in starts and lo < hi for lo, hi in ranges)
    assert len(ranges) == min(workers, len(blocks))


@pytest.mark.parametrize("seed", range(6))
def test_shard_split_minimises_the_largest_shard_over_every_contiguous_split(seed):
    rng = np.random.default_rng(seed)
    size = np.sort((rng.pareto(1.2, 40) + 1.0) * 100).astype(np.int64)[::-1].copy()
    first = np.r_[0, np.cumsum(size)[:-1]]
    blocks = rng_blocks(first, size)
    block_size = [int(size[a:b].sum()) for a, b in blocks]
    for workers in (2, 3, 4):
        got = max(int(size[a:b].sum()) for a, b in shard_ranges(first, size, workers))
        best = min(
            max(sum(block_size[a:b]) for a, b in zip((0, *cuts), (*cuts, len(blocks)), strict=True))
            for cuts in itertools.combinations(range(1, len(blocks)), workers - 1)
        )
        assert got == best


def test_a_failing_worker_surfaces_as_shard_worker_error_with_its_message(
    small_corpus, sim_bundles, tmp_path, monkeypatch
):
    real = Shard.advance
    failed = []

    def failing(self, s, t0, fold_upto, prune):
        # the second shard, at a step whose answer the coordinator does not wait for
        if self.engine.e_lo > 0 and t0 == 7200.0 and fold_upto is None:
            failed.append(t0)  # in the worker's copy: the message below proves it ran there
            raise RuntimeError(f"injected at t0={t0:g}")
        return real(self, s, t0, fold_upto, prune)

    monkeypatch.setattr(Shard, "advance", failing)
    sc = scenario_from_dict({**SCENARIO, "days": 0.25})
    with pytest.raises(ShardWorkerError, match=r"failed: RuntimeError: injected at t0=7200$"):
        run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path, workers=2)
    assert failed == []  # it failed in the worker process, not in this one


def test_a_reply_crosses_a_pipe_with_its_arrays_dtypes_and_bytes():
    rng = np.random.default_rng(1)
    n = 300
    rows = FoldedRows(
        day=np.zeros(n, np.int16), org=rng.integers(0, 9, n).astype(np.int32),
        sample=rng.integers(0, 900, n).astype(np.int32), model=np.full(n, 2, np.int16),
        verdict=rng.integers(0, 6, n).astype(np.int8), count=rng.integers(1, 99, n),
        first=rng.integers(0, 10**12, n), last=rng.integers(0, 10**12, n),
        sketches=rng.bytes(8 * n), start=np.arange(n, dtype=np.int64) * 8,
        size=np.full(n, 8, np.int16),
    )  # fmt: skip
    strided = np.arange(20, dtype=np.int64)[::3]  # not contiguous: goes in the pickle itself
    a, b = multiprocessing.Pipe()
    with a, b:
        send_reply(a, ("ok", (rows, strided, {}, None)))
        status, (got, got_strided, empty, none) = recv_reply(b)
    assert status == "ok" and empty == {} and none is None
    assert got_strided.tolist() == strided.tolist()
    assert got.sketches == rows.sketches
    for c in (
        "day",
        "org",
        "sample",
        "model",
        "verdict",
        "count",
        "first",
        "last",
        "start",
        "size",
    ):
        mine, theirs = getattr(rows, c), getattr(got, c)
        assert theirs.dtype == mine.dtype and np.array_equal(theirs, mine)
        assert theirs.flags.writeable


def test_a_reply_sends_a_folds_sketch_blob_out_of_band_and_gives_it_back_as_bytes():
    n = 1 << 16
    rows = FoldedRows(
        *[np.arange(n, dtype=np.int64)] * 8, sketches=np.random.default_rng(2).bytes(16 * n),
        start=np.arange(n, dtype=np.int64) * 16, size=np.full(n, 16, np.int16),
    )  # fmt: skip
    a, b = multiprocessing.Pipe()
    with a, b:  # a megabyte fills the pipe: sent from a thread while this one reads
        sender = threading.Thread(target=send_reply, args=(a, ("ok", rows)))
        sender.start()
        assert b.poll(30)  # (a failing sender: fail here, not at the suite's timeout)
        sizes = pickle.loads(b.recv_bytes())
        head = b.recv_bytes()
        buffers = [np.empty(k, np.uint8) for k in sizes]
        for buf in buffers:
            assert b.poll(30)
            b.recv_bytes_into(buf)
        sender.join()
    assert len(rows.sketches) in sizes and len(head) < 2000  # the blob is not in the pickle
    status, got = pickle.loads(head, buffers=buffers)
    assert status == "ok" and type(got.sketches) is bytes and got.sketches == rows.sketches
    assert got.sketch_list(0, 9) == rows.sketch_list(0, 9)
