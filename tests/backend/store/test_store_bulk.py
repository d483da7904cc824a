"""The bulk fold path (`Store.ingest_columns`): once per key, merging like every other path.

A file store writes bulk folds through its second (APSW) connection, an in-memory store
through the stdlib one; both must leave the same aggregates, count a replayed key once and
merge rows that already exist (counts add, sketches unite, first/last widen).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import sketch
from backend.store import Store

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SHAS = [bytes([i]) * 32 for i in range(4)]


def _cols(rows: list[tuple[int, int, int, str, int, list[int], int]]) -> dict[str, list]:
    """(day, sha index, version, verdict, count, endpoint hashes, time) -> ingest_columns."""
    return {
        "day": [r[0] for r in rows],
        "org_id": ["acme"] * len(rows),
        "sha256": [SHAS[r[1]] for r in rows],
        "model_version": [r[2] for r in rows],
        "verdict": [r[3] for r in rows],
        "count": [r[4] for r in rows],
        "endpoints": [sketch.sketch_of(r[5]) for r in rows],
        "first_seen_ms": [r[6] for r in rows],
        "last_seen_ms": [r[6] + 10 for r in rows],
    }


def _open(where: str) -> Store:
    store = Store(where)
    store.create_org("acme", NOW)
    return store


def _table(store: Store) -> list[tuple]:
    return [
        (r.day, r.sha256, r.model_version, r.verdict.value, r.count,
         sketch.estimate(r.endpoints), r.endpoints, r.first_seen_ms, r.last_seen_ms)
        for r in store.aggregates()
    ]  # fmt: skip


def _org(store: Store) -> str:
    return store.org_ids()[0]


row = st.tuples(
    st.integers(20_000, 20_001),
    st.integers(0, 3),
    st.integers(1, 2),
    st.sampled_from(["allow", "detect", "block"]),
    st.integers(1, 50),
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=80),
    st.integers(0, 10**9),
)


@settings(max_examples=25, deadline=None)
@given(folds=st.lists(st.lists(row, min_size=1, max_size=12), min_size=1, max_size=4))
def test_file_and_memory_stores_fold_alike_and_merge(tmp_path_factory, folds) -> None:
    disk = _open(str(tmp_path_factory.mktemp("bulk") / "a.sqlite"))
    mem = _open(":memory:")
    try:
        for i, fold in enumerate(folds):
            # one fold holds each key once (the simulator's folds do); later folds may repeat it
            unique = list({(r[0], r[1], r[2], r[3]): r for r in fold}.values())
            for store in (disk, mem):
                cols = _cols(unique)
                cols["org_id"] = [_org(store)] * len(unique)
                store.ingest_columns(f"fold-{i}", "sim", **cols, features=[], now=NOW)
        assert _table(disk) == _table(mem)
        # counts add up across folds
        assert sum(r[4] for r in _table(disk)) == sum(
            r[4] for fold in folds for r in {(r[0], r[1], r[2], r[3]): r for r in fold}.values()
        )
    finally:
        disk.close()
        mem.close()


@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_replayed_fold_counts_once(tmp_path, where) -> None:
    store = _open(str(tmp_path / "a.sqlite") if where == "file" else ":memory:")
    try:
        cols = _cols([(20_000, 0, 1, "block", 3, [5, 9], 100), (20_000, 1, 1, "allow", 2, [5], 50)])
        cols["org_id"] = [_org(store)] * 2
        first = store.ingest_columns("k", "sim", **cols, features=[], now=NOW)
        again = store.ingest_columns("k", "sim", **cols, features=[], now=NOW)
        assert (first.duplicate, first.rows) == (False, 2)
        assert again.duplicate
        assert [r[4] for r in _table(store)] == [3, 2]
    finally:
        store.close()


def test_columns_of_different_lengths_are_refused(tmp_path) -> None:
    store = _open(str(tmp_path / "a.sqlite"))
    try:
        cols = _cols([(20_000, 0, 1, "block", 3, [5], 100)])
        cols["org_id"] = [_org(store)]
        cols["count"] = [1, 2]
        with pytest.raises(ValueError, match="different lengths"):
            store.ingest_columns("k", "sim", **cols, features=[], now=NOW)
        assert _table(store) == []
    finally:
        store.close()
