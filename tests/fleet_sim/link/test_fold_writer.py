"""The fold writer process: one fold in flight, vectors with each fold, its own checkpoints."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sqlite3

import numpy as np
import pytest

from backend.store import Store
from fleet_sim.link.fold import FoldedRows
from fleet_sim.link.fold_writer import FoldWriterError, InlineFoldWriter, ProcessFoldWriter
from fleet_sim.link.in_process import InProcessLink

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
N_EP, N_SAMPLES = 400, 30


def _link(tmp_path) -> InProcessLink:
    shas = [f"{i:064x}" for i in range(N_SAMPLES)]
    feats = np.arange(N_SAMPLES * 4, dtype=np.float32).reshape(N_SAMPLES, 4)
    store = Store(tmp_path / "backend.sqlite", synchronous="NORMAL")
    return InProcessLink.open(store, ("org-a", "org-b", "org-c"), feats, shas, START)


def _day(link: InProcessLink, day: int, seed: int) -> FoldedRows:
    """A day of random events folded into rows (the samples of `seed`'s half of the catalogue)."""
    rng = np.random.default_rng(seed)
    n = 5000
    samples = rng.integers(0, N_SAMPLES // 2, n) + (seed % 2) * (N_SAMPLES // 2)
    return link.folder().fold(
        ep=rng.integers(0, N_EP, n), sample=samples, model=np.ones(n, np.int64),
        verdict=rng.integers(0, 3, n), t_ms=rng.integers(0, 86_400_000, n) + day * 86_400_000,
        ep_org=np.arange(N_EP) % 3, t_base_ms=int(START.timestamp() * 1000),
    )  # fmt: skip


def _count(path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_a_second_submit_waits_for_the_first_fold_and_its_vectors(tmp_path):
    link = _link(tmp_path)
    one, two = _day(link, 0, 1), _day(link, 1, 2)
    writer = ProcessFoldWriter(link)
    try:
        writer.submit(one, now=START)
        assert link.rows_ingested == 0  # handed over, not waited for
        writer.submit(two, now=START + dt.timedelta(days=1))
        # the first fold's answer was read before the second went: one fold in flight
        assert link.rows_ingested == len(one)
        db = tmp_path / "backend.sqlite"
        # its pairs' vectors came with it, not at the join (counted among its own samples: the
        # second fold, on the other half of the catalogue, may be written by now too)
        pairs = len({(o, s) for o, s in zip(one.org.tolist(), one.sample.tolist(), strict=True)})
        mine = ", ".join(f"X'{s:064x}'" for s in np.unique(one.sample).tolist())
        assert _count(db, f"SELECT count(*) FROM org_vectors WHERE sha256 IN ({mine})") == pairs
        writer.join()
        assert link.rows_ingested == len(one) + len(two)
        assert _count(db, "SELECT count(*) FROM aggregates") == len(one) + len(two)
        every = np.concatenate([one.org * N_SAMPLES + one.sample, two.org * N_SAMPLES + two.sample])
        assert _count(db, "SELECT count(*) FROM org_vectors") == np.unique(every).size
    finally:
        writer.close()
        link.store.close()


def test_the_writer_process_copies_the_wal_back_itself(tmp_path):
    """After a fold, the database file alone (no WAL) holds its rows: nobody else checkpoints."""
    link = _link(tmp_path)
    db = tmp_path / "backend.sqlite"
    before = _count(db, "SELECT count(*) FROM orgs")
    link.store.checkpoint()  # the orgs and the policy: in the file before the writer starts
    one = _day(link, 0, 1)
    writer = ProcessFoldWriter(link)
    try:
        writer.submit(one, now=START)
        writer.join()  # the rows job's checkpoint ran before the join's job
        alone = tmp_path / "copy" / "backend.sqlite"
        alone.parent.mkdir()
        shutil.copyfile(db, alone)  # the file without its -wal
        assert _count(alone, "SELECT count(*) FROM orgs") == before
        assert _count(alone, "SELECT count(*) FROM aggregates") == len(one) > 0
    finally:
        writer.close()
        link.store.close()


def test_the_inline_writer_copies_the_wal_back_after_each_fold(tmp_path):
    link = _link(tmp_path)
    db = tmp_path / "backend.sqlite"
    one = _day(link, 0, 1)
    writer = InlineFoldWriter(link)
    writer.submit(one, now=START)
    alone = tmp_path / "copy" / "backend.sqlite"
    alone.parent.mkdir()
    shutil.copyfile(db, alone)  # the file without its -wal
    assert _count(alone, "SELECT count(*) FROM aggregates") == len(one) > 0
    link.store.close()


def test_a_failing_fold_is_raised_at_the_next_call_with_its_reason(tmp_path):
    link = _link(tmp_path)
    one = _day(link, 0, 1)
    writer = ProcessFoldWriter(link)
    try:
        broken = dataclasses.replace(one, sample=one.sample[:1])  # must be refused
        writer.submit(broken, now=START)
        with pytest.raises(FoldWriterError, match="the fold writer failed: ValueError"):
            writer.join()
    finally:
        writer.close()
        link.store.close()


@pytest.mark.parametrize("step", [65_536, 7])
def test_sketches_in_row_order_keep_each_rows_bytes_one_after_another(tmp_path, step):
    link = _link(tmp_path)
    rows = _day(link, 0, 1)
    link.store.close()
    blob, start = FoldedRows.sketches_in_row_order(rows.sketches, rows.start, rows.size, step)
    assert not np.array_equal(start, rows.start)  # the fold's own layout is not row order
    assert start[0] == 0 and np.array_equal(start[1:], np.cumsum(rows.size[:-1]))
    assert len(blob) == int(rows.size.sum())
    assert dataclasses.replace(rows, sketches=blob, start=start).sketch_list() == rows.sketch_list()
    same = FoldedRows.sketches_in_row_order(blob, start, rows.size, step)
    assert same[0] is blob and same[1] is start  # already in row order: nothing copied


def test_sketches_in_row_order_gathers_bytes_when_sketches_are_not_whole_words():
    blob, start = FoldedRows.sketches_in_row_order(
        b"abcdefghij", np.asarray([5, 0, 8]), np.asarray([3, 5, 2], np.int16), step=2
    )
    assert blob == b"fghabcdeij" and start.tolist() == [0, 3, 8]
