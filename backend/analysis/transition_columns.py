"""The transition prediction's columnar read: what each org saw, straight from SQLite.

`backend.analysis.transition.predict_transition` needs, per (org, sample) seen before `now`, the
summed count and the org's observation window, each pair's vector scored under both versions, and
the merged endpoint sketch of the pairs that flip. Read row by row through the store protocol
(`iter_aggregates`, one `AggregateRow` per row and a sketch merge per row, then one vector
per pair held in a dict) that took minutes at a million endpoints and a vector copy per pair.
This module reads the same facts from a SQLite store file in bulk instead:

- pairs: one `GROUP BY org, sample` query, in the (org id, sample) order the reference path
  sorts into, with sample hex strings shared per distinct sample; per pair only its org's
  position, its sample's rank and its count are kept, each in the narrowest integer type that
  holds it (10 bytes a pair at a million endpoints instead of 40), the observation days reduced
  per org as the rows arrive;
- vectors: one scan of the `org_vectors` references per schema, each pair matched with its own
  org's reference only (the per-org rule), and each distinct vector read once by digest. The
  pairs come out as decision cases (`PairCases`: pairs with the same sample and the same vector
  under every schema), so the scores and decisions are per case, a few thousand, and per pair
  there is one int32 case column instead of a score and a flag per version;
- sketches: read and merged only for the pairs asked for (the negatively flipped ones).

Every read goes through `Store.reading`, so on a `Store.snapshot` view the whole prediction reads
one consistent state in one transaction, however much is written meanwhile.

It returns `None` for a store it cannot read this way (PostgreSQL, in-memory SQLite): the caller
then takes the reference path. The decisions and figures are the one core in
`backend.analysis.transition` either way; `tests/backend/analysis/test_transition_columns.py` holds
the two reads' reports equal on random histories.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import compress, repeat
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from backend import sketch
from backend.analysis._base import decode_vectors
from backend.analysis.rescore import Coded
from backend.store import Store

__all__ = ["OrgSamplePairs", "PairCases", "PairColumns", "read_pair_columns"]

_CHUNK = 8_192
"""Rows fetched at a time: a chunk of Python row tuples is ~2 MB, and the heap keeps its peak."""
_COUNT_SLICE = 1 << 18


def _is_file_store(store: object) -> bool:
    path = getattr(store, "path", None)
    return (
        isinstance(store, Store)
        and isinstance(path, str)
        and path not in ("", ":memory:")
        and not path.startswith("file:")
        and Path(path).is_file()
    )


@dataclass(frozen=True, slots=True)
class OrgSamplePairs:
    """What each org saw in its window: one row per (org, sample), count-weighted.

    `sketches` holds each pair's merged endpoint sketch; a loader may instead give
    `sketch_reader`, which returns the sketches of the pairs asked for (only negatively
    flipped pairs ever need one). `org_index` (each pair's position in `org_days`) and
    `samples`/`sample_index` (the distinct samples and each pair's) are derived when the loader
    leaves them out; a loader that has them saves a pass over every pair. The columnar read
    holds `org_index`, `sample_index` and `counts` as narrow integers (int16/int32).
    """

    org_ids: Sequence[str]
    sha256s: Sequence[str]
    counts: npt.NDArray[np.int64]
    sketches: tuple[bytes, ...]
    org_days: tuple[tuple[str, int], ...]
    sketch_reader: Callable[[npt.NDArray[np.intp]], list[bytes]] | None = None
    org_index: npt.NDArray[np.intp] | None = None
    samples: tuple[str, ...] | None = None
    """Each distinct sample once; with `sample_index`, `sha256s[i] == samples[sample_index[i]]`."""
    sample_index: npt.NDArray[np.intp] | None = None


@dataclass(frozen=True, slots=True)
class PairCases:
    """The pairs reduced to their distinct decision cases: (sample, its vector per schema).

    Under one decision context a pair's verdict depends only on its sample and its score, and
    its score only on its own org's vector: pairs with the same sample and the same vector
    (digest) under every schema read are one case, decided and scored once. At a million
    endpoints 1.85M pairs are a few thousand cases, so nothing per pair wider than this `case`
    column is needed to decide them.
    """

    case: npt.NDArray[np.int32]
    """Per pair: its case."""
    sample: npt.NDArray[np.intp]
    """Per case: its sample (index into `OrgSamplePairs.samples`)."""
    rows: tuple[npt.NDArray[np.intp], ...]
    """Per schema read, per case: its vector's row in `matrices[k]` (-1: no vector)."""
    matrices: tuple[npt.NDArray[np.float32], ...]
    """Per schema read: the distinct vectors, in the order of their first reference."""
    pairs_per_case: npt.NDArray[np.int64]
    """Per case: how many pairs it holds."""


@dataclass(frozen=True, slots=True)
class PairColumns:
    """The pairs of one prediction and the means to read their vectors; see `read_pair_columns`."""

    pairs: OrgSamplePairs
    store: Store
    """The store read (every read goes through `Store.reading`: one transaction in a snapshot)."""
    org_keys: npt.NDArray[np.int64]
    """Per org (position in `pairs.org_days`): the store's integer key of the org."""
    samples: tuple[bytes, ...]
    """The distinct samples, raw sha256s sorted (a pair's sample is `pairs.sample_index`)."""
    org_key: int | None

    def cases(self, schemas: Sequence[tuple[str, int]]) -> PairCases:
        """The pairs' decision cases over the vectors of `schemas` ((name, vector length) each).

        Each schema's (org, sample) -> digest references are scanned once; a pair is matched
        with its own org's reference only (the per-org rule), and each distinct vector is read
        once by digest. A reference whose vector row is absent cannot be scored, like a missing
        one.

        Raises:
            ValueError: a stored vector does not hold the schema's length.
        """
        idx, orgs = self.pairs.sample_index, self.pairs.org_index
        assert idx is not None and orgs is not None  # set by read_pair_columns
        n_orgs = len(self.org_keys)
        # pairs are in (org, sample rank) order: org k's are starts[k]:starts[k + 1]
        starts = np.append(
            np.searchsorted(orgs, np.arange(n_orgs, dtype=orgs.dtype)), len(orgs)
        ).astype(np.intp)
        case: npt.NDArray[np.integer[Any]] = idx  # first: a case per sample
        sample = np.arange(len(self.samples), dtype=np.intp)
        rows: list[npt.NDArray[np.intp]] = []
        matrices: list[npt.NDArray[np.float32]] = []
        for schema, length in schemas:
            case, prev, row, mat = self._refine(case, starts, schema, length)
            sample = sample[prev]
            rows = [r[prev] for r in rows]
            rows.append(row)
            matrices.append(mat)
        per_case = np.zeros(len(sample), dtype=np.int64)
        for i in range(0, len(case), _COUNT_SLICE):  # bincount copies its input to intp
            per_case += np.bincount(case[i : i + _COUNT_SLICE], minlength=len(sample))
        return PairCases(
            case.astype(np.int32, copy=False), sample, tuple(rows), tuple(matrices), per_case
        )

    def _pair_of(
        self, starts: npt.NDArray[np.intp], pos: npt.NDArray[np.int64], r: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """The pair of each (org position, sample rank) in a chunk (-1: no such pair).

        The chunk's rows are in org order, so it is a few runs of one org each; each run is
        looked up in that org's pairs (sorted by sample rank).
        """
        idx = self.pairs.sample_index
        assert idx is not None
        at = np.full(len(pos), -1, dtype=np.int64)
        bounds = [0, *(np.flatnonzero(pos[1:] != pos[:-1]) + 1).tolist(), len(pos)]
        for a, b in itertools.pairwise(bounds):
            p = int(pos[a])
            if p < 0:  # an org no pair holds
                continue
            lo, hi = int(starts[p]), int(starts[p + 1])
            mine = idx[lo:hi]
            j = np.searchsorted(mine, r[a:b])
            ok = (j < len(mine)) & (r[a:b] >= 0)
            ok[ok] = mine[j[ok]] == r[a:b][ok]  # a reference no pair holds is skipped
            at[a:b][ok] = lo + j[ok]
        return at

    def _refine(
        self,
        case: npt.NDArray[np.integer[Any]],
        starts: npt.NDArray[np.intp],
        schema: str,
        length: int,
    ) -> tuple[
        npt.NDArray[np.int32], npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]
    ]:
        """Split each case by the digest its pairs reference under `schema`.

        Returns the new per-pair cases, per new case its old case and its vector's row (-1:
        none), and the matrix of distinct vectors.
        """
        n_pairs, n_old = len(case), int(case.max()) + 1 if len(case) else 0
        rank_get = {s: i for i, s in enumerate(self.samples)}.get
        top = int(self.org_keys.max()) + 1 if len(self.org_keys) else 0
        pos_of_key = np.full(top, -1, dtype=np.int64)  # org key -> its position
        pos_of_key[self.org_keys] = np.arange(len(self.org_keys))
        dcode: dict[bytes, int] = {}  # digest -> code, in the order of first reference
        split: dict[int, int] = {}  # old case << 32 | digest code -> new case
        new_case = case.astype(np.int32)  # pairs without a reference: their old case, below
        hit_any = np.zeros(n_pairs, dtype=bool)
        sql = "SELECT org, sha256, digest FROM org_vectors WHERE schema = ?"
        args: list[object] = [schema]
        if self.org_key is not None:
            sql += " AND org = ?"
            args.append(self.org_key)
        with self.store.reading() as conn:
            cur = conn.execute(sql, args)
            while chunk := cur.fetchmany(_CHUNK):
                # columns of the chunk, converted in C (no Python statement per row)
                orgs_c, shas_c, digests_c = zip(*chunk, strict=True)
                m = len(chunk)
                org_c = np.fromiter(orgs_c, np.int64, m)
                pos = np.full(m, -1, dtype=np.int64)
                inside = org_c < len(pos_of_key)  # an org no pair holds: skipped
                pos[inside] = pos_of_key[org_c[inside]]
                r = np.fromiter(map(rank_get, shas_c, repeat(-1)), np.int64, m)
                at = self._pair_of(starts, pos, r)
                hit = at >= 0
                at = at[hit]
                if not len(at):
                    continue
                digs = list(compress(digests_c, hit.tolist()))
                if not dcode.keys() >= set(digs):  # Python steps only for digests not seen yet
                    for d in dict.fromkeys(digs):
                        dcode.setdefault(d, len(dcode))
                keys = (case[at].astype(np.int64) << 32) | np.fromiter(
                    map(dcode.__getitem__, digs), np.int64, len(digs)
                )
                uniq, inverse = np.unique(keys, return_inverse=True)
                known = uniq.tolist()
                if not split.keys() >= set(known):  # and for (case, digest)s not seen yet
                    for k in known:
                        split.setdefault(k, len(split))
                codes = np.fromiter(map(split.__getitem__, known), np.int32, len(known))
                new_case[at] = codes[inverse.reshape(-1)]
                hit_any[at] = True
            # a pair without a reference keeps its old case, numbered after the split ones
            n_split = len(split)
            new_case[~hit_any] += n_split
            del hit_any
            digests = list(dcode)
            found: dict[bytes, bytes] = {}
            for i in range(0, len(digests), 500):
                part = digests[i : i + 500]
                marks = ",".join("?" * len(part))
                found.update(
                    conn.execute(
                        f"SELECT digest, vector FROM vectors WHERE digest IN ({marks})",  # noqa: S608 - placeholders only
                        part,
                    )
                )
        held = np.fromiter((d in found for d in digests), bool, len(digests))
        row_of = np.where(held, np.cumsum(held) - 1, -1).astype(np.intp)  # by digest code
        split_keys = np.fromiter(split, np.int64, n_split)  # in new-case order
        prev = np.concatenate(((split_keys >> 32).astype(np.intp), np.arange(n_old, dtype=np.intp)))
        row = np.concatenate((row_of[split_keys & 0xFFFFFFFF], np.full(n_old, -1, dtype=np.intp)))
        # only the cases some pair holds, renumbered in order
        present = np.zeros(n_split + n_old, dtype=bool)
        for i in range(0, n_pairs, _COUNT_SLICE):  # bincount copies its input to intp
            present |= np.bincount(new_case[i : i + _COUNT_SLICE], minlength=len(present)) > 0
        renumber = (np.cumsum(present) - 1).astype(np.int32)
        for i in range(0, n_pairs, _COUNT_SLICE):  # in place, a slice at a time
            new_case[i : i + _COUNT_SLICE] = renumber[new_case[i : i + _COUNT_SLICE]]
        mat = decode_vectors([bytes(found[d]) for d in digests if d in found], length)
        return new_case, prev[present], row[present], mat

    def has_shadow_rows(self, version: int, until_ms: int) -> bool:
        """Whether any shadow row of `version` was first seen before `until_ms`."""
        sql = (
            "SELECT 1 FROM aggregates WHERE shadow = 1 AND model_version = ? AND first_seen_ms < ?"
        )
        args: list[object] = [version, until_ms]
        if self.org_key is not None:
            sql += " AND org = ?"
            args.append(self.org_key)
        with self.store.reading() as conn:
            return conn.execute(sql + " LIMIT 1", args).fetchone() is not None


def _sketch_reader(
    store: Store,
    until_ms: int,
    org_keys: npt.NDArray[np.int64],
    pairs: OrgSamplePairs,
    samples: tuple[bytes, ...],
    days: range,
) -> Any:
    """Reads the merged sketches of the pairs asked for (rows of `pairs`), each once.

    The pairs asked for (the negatively flipped ones) are few: each day of `days` is looked up
    by primary key per pair (day, org, sample) rather than scanning every aggregate row, and
    merged in the store's key order (day, org, sample, version, verdict).
    """
    cache: dict[int, bytes] = {}
    org_index, sample_index = pairs.org_index, pairs.sample_index
    assert org_index is not None and sample_index is not None

    def read(rows: npt.NDArray[np.intp]) -> list[bytes]:
        need = [i for i in rows.tolist() if i not in cache]
        if need:
            at = np.asarray(need, dtype=np.intp)
            where = {
                (k, samples[j]): i
                for i, k, j in zip(
                    need,
                    org_keys[org_index[at]].tolist(),
                    sample_index[at].tolist(),
                    strict=True,
                )
            }
            merged: dict[int, bytes] = {}
            with store.reading() as conn:  # a snapshot's connection lives on: drop the table
                conn.execute(
                    "CREATE TEMP TABLE want (org INTEGER NOT NULL, sha256 BLOB NOT NULL, "
                    "PRIMARY KEY (org, sha256)) WITHOUT ROWID"
                )
                try:
                    conn.executemany("INSERT INTO want VALUES (?, ?)", list(where))
                    for day in days:  # CROSS JOIN: the few pairs drive, each a key lookup
                        cur = conn.execute(
                            "SELECT a.org, a.sha256, a.endpoints FROM want w "
                            "CROSS JOIN aggregates a ON a.day = ? AND a.org = w.org "
                            "AND a.sha256 = w.sha256 "
                            "WHERE a.shadow = 0 AND a.first_seen_ms < ? "
                            "ORDER BY a.org, a.sha256, a.model_version, a.verdict",
                            (day, until_ms),
                        )
                        for org, sha, endpoints in cur:
                            i = where[(org, sha)]
                            merged[i] = sketch.merge(merged.get(i), endpoints)
                finally:
                    conn.execute("DROP TABLE temp.want")
            for i in need:
                cache[i] = merged.get(i, b"")
        return [cache[i] for i in rows.tolist()]

    return read


def _narrow(a: npt.NDArray[np.integer[Any]], *, least: int = 2) -> npt.NDArray[np.intp]:
    """`a` in the narrowest of int16, int32 and int64 that holds its values (typed as intp).

    Per-pair columns are held for the whole prediction: 2 or 4 bytes a pair instead of 8.
    Indexing and `bincount` take any of them alike; `least` is the fewest bytes to use.
    """
    hi = int(a.max()) if len(a) else 0
    lo = int(a.min()) if len(a) else 0
    for dtype in (np.int16, np.int32):
        if np.dtype(dtype).itemsize < least:
            continue
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return cast("npt.NDArray[np.intp]", a.astype(dtype, copy=False))
    return cast("npt.NDArray[np.intp]", a.astype(np.int64, copy=False))


def read_pair_columns(store: object, now: dt.datetime, org: str | None) -> PairColumns | None:
    """The (org, sample) pairs of active rows first seen before `now`, read in bulk.

    The same pairs, counts and observation windows as the reference row-by-row read
    (`backend.analysis.transition._load_pairs`), in the same order. `None` when `store` is not a
    SQLite store file (the caller then reads row by row). Per pair it holds only its org's
    position, its sample's rank and its count, each as narrow as its values allow; the days
    are reduced per org as the rows arrive.
    """
    if not _is_file_store(store):
        return None
    assert isinstance(store, Store)  # checked by _is_file_store
    until_ms = int(now.timestamp() * 1000)
    with store.reading() as conn:
        org_key: int | None = None
        if org is not None:
            row = conn.execute("SELECT id FROM orgs WHERE org_id = ?", (org,)).fetchone()
            if row is None:
                org_key = -1
            else:
                org_key = int(row[0])
        name_of = dict(conn.execute("SELECT id, org_id FROM orgs").fetchall())
        top = max(name_of, default=0) + 1
        day_lo = np.full(top, np.iinfo(np.int64).max, dtype=np.int64)  # per org key
        day_hi = np.full(top, np.iinfo(np.int64).min, dtype=np.int64)
        sql = (
            "SELECT a.org, a.sha256, sum(a.count), min(a.day), max(a.day) "
            "FROM aggregates a JOIN orgs o ON o.id = a.org "
            "WHERE a.shadow = 0 AND a.first_seen_ms < ?"
        )
        args: list[object] = [until_ms]
        if org_key is not None:
            sql += " AND a.org = ?"
            args.append(org_key)
        cur = conn.execute(sql + " GROUP BY o.org_id, a.sha256 ORDER BY o.org_id, a.sha256", args)
        code: dict[bytes, int] = {}  # raw sha256 -> code in order of first sight
        keys_seen: list[int] = []  # each org's key, in the rows' (org id) order
        index_parts: list[npt.NDArray[np.intp]] = []
        code_parts: list[npt.NDArray[np.intp]] = []
        count_parts: list[npt.NDArray[np.intp]] = []
        while chunk := cur.fetchmany(_CHUNK):
            # columns of the chunk, converted in C (no Python statement per row)
            keys_c, shas_c, counts_c, lo_c, hi_c = zip(*chunk, strict=True)
            if not code.keys() >= set(shas_c):  # Python steps only for samples not seen yet
                for sha in dict.fromkeys(shas_c):
                    code.setdefault(sha, len(code))
            m = len(chunk)
            k = np.fromiter(keys_c, np.int64, m)
            np.minimum.at(day_lo, k, np.fromiter(lo_c, np.int64, m))
            np.maximum.at(day_hi, k, np.fromiter(hi_c, np.int64, m))
            first = np.empty(m, dtype=bool)  # where a new org begins (rows are by org)
            first[0] = not keys_seen or keys_seen[-1] != k[0]
            first[1:] = k[1:] != k[:-1]
            before = len(keys_seen)
            keys_seen.extend(k[first].tolist())
            index_parts.append(_narrow(np.cumsum(first, dtype=np.int64) + (before - 1)))
            code_parts.append(_narrow(np.fromiter(map(code.__getitem__, shas_c), np.int64, m)))
            count_parts.append(_narrow(np.fromiter(counts_c, np.int64, m), least=4))

    def cat(parts: list[npt.NDArray[np.intp]]) -> npt.NDArray[np.intp]:
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        parts.clear()  # each column held once, not as parts and whole
        return _narrow(out)

    org_index, first_code = cat(index_parts), cat(code_parts)
    counts = _narrow(np.concatenate(count_parts) if count_parts else np.zeros(0, np.int64), least=4)
    count_parts.clear()  # counts are summed per org: int32 at least (see `_OrgRows.sums`)
    n = len(org_index)
    samples = tuple(sorted(code))
    by_first = list(code)
    rank_of_code = _narrow(
        np.fromiter(
            map({s: i for i, s in enumerate(samples)}.__getitem__, by_first),
            np.int64,
            len(by_first),
        )
    )
    sample_index = rank_of_code[first_code] if n else np.zeros(0, dtype=np.intp)
    del first_code
    hexes = tuple(s.hex() for s in samples)
    org_keys = np.asarray(keys_seen, dtype=np.int64)
    org_names = [str(name_of[k]) for k in keys_seen]
    org_days = tuple(
        (o, int(b) - int(a) + 1)
        for o, a, b in zip(
            org_names, day_lo[org_keys].tolist(), day_hi[org_keys].tolist(), strict=True
        )
    )
    pairs = OrgSamplePairs(
        # names by code: a pair's org and sample strings without a Python object per pair
        org_ids=Coded(tuple(org_names), org_index),
        sha256s=Coded(hexes, sample_index),
        counts=counts,
        sketches=(),
        org_days=org_days,
        org_index=org_index,
        samples=hexes,
        sample_index=sample_index,
    )
    days = range(int(day_lo[org_keys].min()), int(day_hi[org_keys].max()) + 1) if n else range(0)
    reader = _sketch_reader(store, until_ms, org_keys, pairs, samples, days)
    pairs = replace(pairs, sketch_reader=reader)
    return PairColumns(pairs, store, org_keys, samples, org_key)
