"""The encoded bulk path (`Store.ingest_encoded`): what `ingest_columns` writes, appends or not.

Rows of a day after the table's last day go in as plain appends, the rest merge; either way
the aggregates and vectors must equal what the column path writes for the same rows, on a
file store (APSW connection: rows packed into int64 words bound as arrays) and in memory
(stdlib connection: a tuple per row) alike, with the sketches as one bytes object per row or
as one blob, and integers anywhere in SQLite's 64-bit range.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

import apsw
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import sketch
from backend.errors import NotFoundError
from backend.store import EncodedAggregates, Store
from backend.store._encoded import pack
from backend.store.sqlite import _fill_codes, _packed_rows_sql, _stage_words

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SHAS = [bytes([200 - 40 * i]) * 32 for i in range(4)]  # codes not in byte order
VERDICTS = ["detect", "allow", "block"]  # nor are these
VECTORS = [np.full(3, i, "<f4").tobytes() for i in range(3)]
SCHEMA = "static-v1"

# (day, org code, sha code, version, verdict code, count, endpoint hashes, first ms)
Row = tuple[int, int, int, int, int, int, list[int], int]


def _key(r: Row, org_keys: list[int]) -> tuple[object, ...]:
    return (r[0], org_keys[r[1]], SHAS[r[2]], r[3], VERDICTS[r[4]])


def _encoded(
    rows: list[Row],
    orgs: list[str],
    vectors: list[tuple[int, int, int]] = (),
    *,
    one_blob: bool = False,
) -> EncodedAggregates:
    def col(i: int) -> np.ndarray:
        return np.asarray([r[i] for r in rows], np.int64).reshape(-1)

    vec = np.asarray(vectors, np.int64).reshape(-1, 3)
    sketches = [sketch.sketch_of(r[6]) for r in rows]
    blob = {}
    if one_blob:  # backwards in the blob after 3 bytes of something else, as a fold's may be
        at = np.cumsum([3] + [len(b) for b in reversed(sketches)])[:-1][::-1]
        blob = dict(
            sketches=b"xyz" + b"".join(reversed(sketches)),
            sketch_start=np.asarray(at, np.int64).reshape(-1),
            sketch_size=np.asarray([len(b) for b in sketches], np.int32).reshape(-1),
        )
    return EncodedAggregates(
        orgs=orgs, sha256s=SHAS, verdicts=VERDICTS, day=col(0), org=col(1), sha256=col(2),
        model_version=col(3), verdict=col(4), count=col(5),
        endpoints=() if one_blob else sketches, **blob, first_seen_ms=col(7),
        last_seen_ms=col(7) + 10, schema=SCHEMA, vectors=VECTORS, vec_org=vec[:, 0],
        vec_sha256=vec[:, 1], vec_index=vec[:, 2],
    )  # fmt: skip


def _columns(store: Store, key: str, rows: list[Row], orgs: list[str], vectors=()) -> None:
    store.ingest_columns(
        key,
        "sim",
        day=[r[0] for r in rows],
        org_id=[orgs[r[1]] for r in rows],
        sha256=[SHAS[r[2]] for r in rows],
        model_version=[r[3] for r in rows],
        verdict=[VERDICTS[r[4]] for r in rows],
        count=[r[5] for r in rows],
        endpoints=[sketch.sketch_of(r[6]) for r in rows],
        first_seen_ms=[r[7] for r in rows],
        last_seen_ms=[r[7] + 10 for r in rows],
        features=[(orgs[o], SHAS[s], SCHEMA, VECTORS[v]) for o, s, v in vectors],
        now=NOW,
    )


def _open(where: str) -> tuple[Store, list[str], list[int]]:
    store = Store(where, synchronous="NORMAL")  # no fsync per commit: many examples
    orgs = [store.create_org(name, NOW).org_id for name in ("acme", "bravo")]
    keys = [store._orgs[o] for o in orgs]  # noqa: SLF001 - the key order the rows must follow
    return store, orgs, keys


def _table(store: Store) -> list[tuple[object, ...]]:
    return [
        (r.day, r.org_id, r.sha256, r.model_version, r.verdict.value, r.count, r.endpoints,
         r.first_seen_ms, r.last_seen_ms)
        for r in store.aggregates()
    ]  # fmt: skip


def _vectors(store: Store, orgs: list[str]) -> list[bytes | None]:
    return [store.feature_vector(o, s.hex(), SCHEMA) for o in orgs for s in SHAS]


row = st.tuples(
    st.integers(20_000, 20_002),
    st.integers(0, 1),
    st.integers(0, 3),
    st.sampled_from([1, 2, 2**40]),
    st.integers(0, 2),
    st.integers(1, 2**40),
    st.lists(st.integers(0, 2**64 - 1), max_size=80),  # no endpoint: an empty sketch
    st.one_of(st.integers(0, 10**9), st.integers(-(2**63), 2**63 - 11)),  # +10: last seen
)
ref = st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 2))


@settings(max_examples=25, deadline=None)
@given(
    folds=st.lists(st.lists(row, min_size=1, max_size=12), min_size=1, max_size=4),
    refs=st.lists(st.lists(ref, max_size=6), min_size=4, max_size=4),
    one_blob=st.booleans(),
)
def test_encoded_rows_write_what_the_column_path_writes(
    tmp_path_factory, folds, refs, one_blob
) -> None:
    where = tmp_path_factory.mktemp("enc")
    stores = [_open(str(where / "enc.sqlite")), _open(":memory:"), _open(str(where / "col.sqlite"))]
    try:
        for i, (fold, fold_refs) in enumerate(zip(folds, refs, strict=False)):
            for store, orgs, keys in stores:
                unique = sorted({_key(r, keys): r for r in fold}.items())
                rows = [r for _, r in unique]  # key order, each key once (as a fold has)
                if store.path.endswith("col.sqlite"):
                    _columns(store, f"fold-{i}", rows, orgs, fold_refs)
                else:
                    got = store.ingest_encoded(
                        f"fold-{i}", "sim", _encoded(rows, orgs, fold_refs, one_blob=one_blob),
                        now=NOW,
                    )  # fmt: skip
                    assert (got.duplicate, got.rows) == (False, len(rows))
        (enc, orgs_e, _), (mem, orgs_m, _), (col, orgs_c, _) = stores
        names = [dict(zip(o, ("acme", "bravo"), strict=True)) for o in (orgs_e, orgs_m, orgs_c)]
        tables = [
            [(t[0], n[t[1]], *t[2:]) for t in _table(s)]
            for s, n in zip((enc, mem, col), names, strict=True)
        ]
        assert tables[0] == tables[2]
        assert tables[1] == tables[2]
        assert _vectors(enc, orgs_e) == _vectors(col, orgs_c) == _vectors(mem, orgs_m)
    finally:
        for store, _, _ in stores:
            store.close()


@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_replayed_key_counts_once(tmp_path, where) -> None:
    store, orgs, _ = _open(str(tmp_path / "a.sqlite") if where == "file" else ":memory:")
    try:
        rows = [(20_000, 0, 1, 1, 1, 2, [5], 50), (20_000, 0, 0, 1, 1, 3, [5, 9], 100)]
        first = store.ingest_encoded("k", "sim", _encoded(rows, orgs), now=NOW)
        again = store.ingest_encoded("k", "sim", _encoded(rows, orgs), now=NOW)
        assert (first.duplicate, first.rows) == (False, 2)
        assert again.duplicate
        assert [t[5] for t in _table(store)] == [2, 3]  # SHAS[1] sorts before SHAS[0]
    finally:
        store.close()


def test_a_new_day_is_appended_and_an_old_day_merged(tmp_path) -> None:
    store, orgs, _ = _open(str(tmp_path / "a.sqlite"))
    try:
        store.ingest_encoded(
            "a", "sim", _encoded([(20_001, 0, 0, 1, 1, 3, [5], 100)], orgs), now=NOW
        )
        late_and_new = [(20_001, 0, 0, 1, 1, 2, [7], 50), (20_002, 0, 0, 1, 1, 4, [5], 300)]
        store.ingest_encoded("b", "sim", _encoded(late_and_new, orgs), now=NOW)
        assert [(t[0], t[5], t[6], t[7], t[8]) for t in _table(store)] == [
            (20_001, 5, sketch.sketch_of([5, 7]), 50, 110),
            (20_002, 4, sketch.sketch_of([5]), 300, 310),
        ]
    finally:
        store.close()


@pytest.mark.parametrize(
    "rows",
    [
        [(20_001, 0, 0, 1, 1, 1, [5], 1), (20_000, 0, 0, 1, 1, 1, [5], 1)],  # days backwards
        [(20_000, 0, 0, 1, 1, 1, [5], 1), (20_000, 0, 1, 1, 1, 1, [5], 1)],  # SHAS[1] < SHAS[0]
        [(20_000, 0, 0, 1, 0, 1, [5], 1), (20_000, 0, 0, 1, 1, 1, [5], 1)],  # detect > allow
        [(20_000, 0, 0, 1, 1, 1, [5], 1), (20_000, 0, 0, 1, 1, 2, [6], 1)],  # the same key
    ],
)
def test_rows_out_of_key_order_are_refused_and_nothing_is_written(tmp_path, rows) -> None:
    store, orgs, _ = _open(str(tmp_path / "a.sqlite"))
    try:
        with pytest.raises(ValueError, match="strictly increase"):
            store.ingest_encoded("k", "sim", _encoded(rows, orgs), now=NOW)
        assert _table(store) == []
        assert store.stats().batches == 0
    finally:
        store.close()


def test_codes_out_of_range_and_unknown_orgs_are_refused(tmp_path) -> None:
    store, orgs, _ = _open(str(tmp_path / "a.sqlite"))
    try:
        good = [(20_000, 0, 0, 1, 1, 1, [5], 1)]
        with pytest.raises(ValueError, match="sha256 code is out of range"):
            store.ingest_encoded(
                "k", "sim", _encoded([(20_000, 0, 4, 1, 1, 1, [5], 1)], orgs), now=NOW
            )
        with pytest.raises(ValueError, match="vector code is out of range"):
            store.ingest_encoded("k", "sim", _encoded(good, orgs, [(0, 0, 3)]), now=NOW)
        with pytest.raises(NotFoundError):
            store.ingest_encoded("k", "sim", _encoded(good, ["nobody"]), now=NOW)
        short = dataclasses.replace(_encoded(good, orgs), sha256s=[*SHAS[:3], SHAS[3][:31]])
        with pytest.raises(ValueError, match="sha256 is not 32 bytes"):  # read at code x 32
            store.ingest_encoded("k", "sim", short, now=NOW)
        assert _table(store) == []
    finally:
        store.close()


def test_a_new_file_takes_the_page_size_and_an_existing_one_keeps_its_own(tmp_path) -> None:
    path = tmp_path / "a.sqlite"
    Store(path, page_size=16384).close()
    Store(path, page_size=4096).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
    with pytest.raises(ValueError, match="power of two"):
        Store(tmp_path / "b.sqlite", page_size=1000)


@given(
    cols=st.integers(1, 12).flatmap(
        lambda n: st.lists(
            st.lists(
                st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 2**20)),
                min_size=n,
                max_size=n,
            ),
            min_size=1,
            max_size=12,
        )
    )
)
def test_packed_words_give_back_every_column(cols) -> None:
    arrays = [np.asarray(c, np.int64) for c in cols]
    packed = pack(arrays)
    assert len(packed.words) <= len(arrays)
    assert all(w.dtype == np.int64 and w.size == arrays[0].size for w in packed.words)
    for c, f in zip(arrays, packed.fields, strict=True):
        w = [int(x) for x in packed.words[f.word]]
        got = w if f.bits == 64 else [((x >> f.shift) & ((1 << f.bits) - 1)) + f.offset for x in w]
        assert got == c.tolist()
    narrow = sum((max(c) - min(c)).bit_length() <= 20 for c in cols)
    assert len(packed.words) <= len(arrays) - narrow + (narrow + 2) // 3  # 3 narrow a word


def test_pack_refuses_values_sqlite_cannot_hold() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        pack([np.asarray([2**63], np.uint64)])


def test_the_staged_words_are_looked_up_by_rowid_not_scanned() -> None:
    """carray's rowid has no index: a word joined to another carray would be scanned per row."""
    conn = apsw.Connection(":memory:")
    conn.execute(
        "CREATE TABLE aggregates (day, org, sha256, model_version, shadow, verdict, count, "
        "endpoints, first_seen_ms, last_seen_ms)"
    )
    wide = np.asarray([0, 2**61, -(2**62)], np.int64)  # each of these needs a word
    packed = pack([np.arange(3), np.arange(3), np.zeros(3, np.int64), np.ones(3, np.int64),
                   np.zeros(3, np.int64), np.arange(3), np.zeros(3, np.int64),
                   np.zeros(3, np.int64), wide, wide])  # fmt: skip
    assert len(packed.words) == 3
    _fill_codes(conn, "fw_verdict", ["allow"])
    _stage_words(conn, packed)
    sql = _packed_rows_sql(packed, 1, merge=False)
    plan = [
        r[3]
        for r in conn.execute(
            "EXPLAIN QUERY PLAN " + sql, (apsw.carray(packed.words[0]), b"", b"s" * 32)
        )
    ]
    assert plan[0].startswith("SCAN w0 VIRTUAL TABLE")
    assert sorted(p.split(" USING")[0] for p in plan[1:]) == [
        "SEARCH v", "SEARCH w1", "SEARCH w2"
    ]  # fmt: skip
    assert all("INTEGER PRIMARY KEY (rowid=?)" in p for p in plan[1:])
    conn.execute(sql, (apsw.carray(packed.words[0], start=1), b"", b"s" * 32))
    got = conn.execute(
        "SELECT day, count, first_seen_ms, last_seen_ms, sha256 FROM aggregates"
    ).fetchall()
    assert got == [(1, 1, 2**61, 2**61, b"s" * 32), (2, 2, -(2**62), -(2**62), b"s" * 32)]
