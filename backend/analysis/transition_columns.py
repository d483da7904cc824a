"""The transition prediction's columnar read: what each org saw, straight from SQLite.

`backend.analysis.transition.predict_transition` needs, per (org, sample) seen before `now`, the
summed count and the org's observation window, each pair's vector scored under both versions, and
the merged endpoint sketch of the pairs that flip. Read row by row through the store protocol
(`iter_aggregates`, one `AggregateRow` per row and a sketch merge per row, then one vector
per pair held in a dict) that took minutes at a million endpoints and a vector copy per pair.
This module reads the same facts from a SQLite store file in bulk instead:

- pairs: one `GROUP BY org, sample` query, in the (org id, sample) order the reference path
  sorts into, with sample hex strings shared per distinct sample;
- vectors: one scan of the org's `org_vectors` references for a schema, then each distinct
  vector read once by digest and scored once, every pair pointing at its own org's vector (the
  per-org rule holds: a pair is only ever matched with a reference of its own org);
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from backend import sketch
from backend.analysis._base import decode_vectors, score_vectors
from backend.analysis.rescore import Coded
from backend.store import Store

if TYPE_CHECKING:
    from agent.model import LoadedModel

__all__ = ["OrgSamplePairs", "PairColumns", "read_pair_columns"]

_CHUNK = 65_536


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
    leaves them out; a loader that has them saves a pass over every pair.
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
class PairColumns:
    """The pairs of one prediction and the means to score them; see `read_pair_columns`."""

    pairs: OrgSamplePairs
    store: Store
    """The store read (every read goes through `Store.reading`: one transaction in a snapshot)."""
    org_keys: npt.NDArray[np.int64]
    """Per pair: the store's integer key of its org."""
    sample_rank: npt.NDArray[np.int64]
    """Per pair: the rank of its sample among `samples` (sorted raw sha256s)."""
    samples: tuple[bytes, ...]
    org_key: int | None
    vectors: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = field(
        default_factory=dict
    )
    """Per schema: each pair's row in the matrix of distinct vectors, and the matrix."""

    def scores(
        self, model: LoadedModel, vectors_of: LoadedModel
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Each pair's score under `model`, on its own org's vector of `vectors_of`'s schema.

        Returns the scores and whether each pair had a vector (unscored pairs score 0).

        Raises:
            ValueError: a stored vector does not hold the schema's length.
        """
        schema = vectors_of.manifest.feature_schema
        got = self.vectors.get(schema)
        if got is None:
            got = self.vectors[schema] = self._read_vectors(
                schema, vectors_of.manifest.vector_length
            )
        pos, mat = got
        by_vector = score_vectors(model, mat) if len(mat) else np.zeros(0)
        ok = pos >= 0
        scores = np.zeros(len(pos), dtype=np.float64)
        scores[ok] = by_vector[pos[ok]]
        return scores, ok

    def _read_vectors(
        self, schema: str, length: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Per pair the row of its own org's vector in the matrix of distinct vectors (-1: none).

        One scan of the schema's (org, sample) -> digest references, then each distinct vector
        read once by its digest (vectors are stored once by content), so reading and memory
        follow the distinct vectors, not the pairs.
        """
        n_samples = len(self.samples)
        rank = {s: i for i, s in enumerate(self.samples)}
        want = self.org_keys * n_samples + self.sample_rank
        n_pairs = len(want)
        order = np.argsort(want, kind="stable")
        sorted_want = want[order]
        del want  # every per-pair temporary goes as soon as it is used: 1.85M pairs at 1M x 4.5 d
        rank_get = rank.get
        distinct: dict[bytes, int] = {}
        sql = "SELECT org, sha256, digest FROM org_vectors WHERE schema = ?"
        args: list[object] = [schema]
        if self.org_key is not None:
            sql += " AND org = ?"
            args.append(self.org_key)
        found: dict[bytes, bytes] = {}
        key_parts: list[npt.NDArray[np.int64]] = []
        which_parts: list[npt.NDArray[np.int64]] = []
        with self.store.reading() as conn:
            cur = conn.execute(sql, args)
            while chunk := cur.fetchmany(_CHUNK):
                # columns of the chunk, converted in C (no Python statement per row)
                orgs_c, shas_c, digests_c = zip(*chunk, strict=True)
                r = np.fromiter(map(rank_get, shas_c, repeat(-1)), np.int64, len(chunk))
                for d in dict.fromkeys(digests_c):
                    distinct.setdefault(d, len(distinct))
                w = np.fromiter(map(distinct.__getitem__, digests_c), np.int64, len(chunk))
                ok = r >= 0  # a reference to a sample no pair holds is skipped
                key_parts.append(np.fromiter(orgs_c, np.int64, len(chunk))[ok] * n_samples + r[ok])
                which_parts.append(w[ok])
            empty = np.zeros(0, dtype=np.int64)
            keys = np.concatenate(key_parts) if key_parts else empty
            codes = np.concatenate(which_parts) if which_parts else empty
            key_parts.clear()
            which_parts.clear()
            by_code = list(distinct)
            referenced = np.unique(codes)  # digests a pair's sample refers to, read once each
            digests = [by_code[j] for j in referenced.tolist()]
            renumber_refs = np.full(len(by_code), -1, dtype=np.int64)
            renumber_refs[referenced] = np.arange(len(referenced))
            which = renumber_refs[codes]
            del codes
            for i in range(0, len(digests), 500):
                part = digests[i : i + 500]
                marks = ",".join("?" * len(part))
                found.update(
                    conn.execute(
                        f"SELECT digest, vector FROM vectors WHERE digest IN ({marks})",  # noqa: S608 - placeholders only
                        part,
                    )
                )
        # a reference whose vector row is absent cannot be scored (-1), like a missing one
        present = np.asarray([d in found for d in digests], dtype=bool)
        renumber = np.where(present, np.cumsum(present) - 1, -1).astype(np.int64)
        pos = np.full(n_pairs, -1, dtype=np.int64)
        if len(keys):
            at = np.searchsorted(sorted_want, keys)
            hit = at < len(sorted_want)
            hit[hit] = sorted_want[at[hit]] == keys[hit]
            del keys, sorted_want
            at, which = at[hit], which[hit]
            del hit
            pos[order[at]] = renumber[which]
            del at, which, order
        vectors = [bytes(found[d]) for d in digests if d in found]
        return pos, decode_vectors(vectors, length)

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
    sample_rank: npt.NDArray[np.int64],
    samples: tuple[bytes, ...],
) -> Any:
    cache: dict[int, bytes] = {}

    def read(rows: npt.NDArray[np.intp]) -> list[bytes]:
        need = [i for i in rows.tolist() if i not in cache]
        if need:
            where = {(int(org_keys[i]), samples[int(sample_rank[i])]): i for i in need}
            merged: dict[int, bytes] = {}
            with store.reading() as conn:  # a snapshot's connection lives on: drop the table
                conn.execute(
                    "CREATE TEMP TABLE want (org INTEGER NOT NULL, sha256 BLOB NOT NULL, "
                    "PRIMARY KEY (org, sha256)) WITHOUT ROWID"
                )
                try:
                    conn.executemany("INSERT INTO want VALUES (?, ?)", list(where))
                    cur = conn.execute(
                        "SELECT a.org, a.sha256, a.endpoints FROM aggregates a "
                        "JOIN want w ON w.org = a.org AND w.sha256 = a.sha256 "
                        "WHERE a.shadow = 0 AND a.first_seen_ms < ? "
                        "ORDER BY a.day, a.org, a.sha256, a.model_version, a.verdict",
                        (until_ms,),
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


def read_pair_columns(store: object, now: dt.datetime, org: str | None) -> PairColumns | None:
    """The (org, sample) pairs of active rows first seen before `now`, read in bulk.

    The same pairs, counts and observation windows as the reference row-by-row read
    (`backend.analysis.transition._load_pairs`), in the same order. `None` when `store` is not a
    SQLite store file (the caller then reads row by row).
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
        key_parts: list[npt.NDArray[np.int64]] = []
        code_parts: list[npt.NDArray[np.int64]] = []
        count_parts: list[npt.NDArray[np.int64]] = []
        lo_parts: list[npt.NDArray[np.int64]] = []
        hi_parts: list[npt.NDArray[np.int64]] = []
        while chunk := cur.fetchmany(_CHUNK):
            # columns of the chunk, converted in C (no Python statement per row)
            keys_c, shas_c, counts_c, lo_c, hi_c = zip(*chunk, strict=True)
            for sha in dict.fromkeys(shas_c):
                code.setdefault(sha, len(code))
            m = len(chunk)
            key_parts.append(np.fromiter(keys_c, np.int64, m))
            code_parts.append(np.fromiter(map(code.__getitem__, shas_c), np.int64, m))
            count_parts.append(np.fromiter(counts_c, np.int64, m))
            lo_parts.append(np.fromiter(lo_c, np.int64, m))
            hi_parts.append(np.fromiter(hi_c, np.int64, m))
        name_of = dict(conn.execute("SELECT id, org_id FROM orgs").fetchall())

    def cat(parts: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        parts.clear()  # each column held once, not as parts and whole (a pair is ~40 bytes)
        return out

    org_keys, first_code, counts = cat(key_parts), cat(code_parts), cat(count_parts)
    lo, hi = cat(lo_parts), cat(hi_parts)
    n = len(org_keys)
    samples = tuple(sorted(code))
    by_first = list(code)
    rank_of_code = np.fromiter(
        map({s: i for i, s in enumerate(samples)}.__getitem__, by_first), np.int64, len(by_first)
    )
    sample_rank = rank_of_code[first_code] if n else np.zeros(0, dtype=np.int64)
    del first_code
    hexes = tuple(s.hex() for s in samples)
    first = np.ones(n, dtype=bool)
    if n:
        first[1:] = org_keys[1:] != org_keys[:-1]
    starts = np.flatnonzero(first)
    org_index = (np.cumsum(first) - 1).astype(np.intp)
    days_lo = np.minimum.reduceat(lo, starts) if n else lo
    days_hi = np.maximum.reduceat(hi, starts) if n else hi
    del lo, hi
    org_names = [str(name_of[int(k)]) for k in org_keys[starts].tolist()]
    org_days = tuple(
        (o, int(b) - int(a) + 1) for o, a, b in zip(org_names, days_lo, days_hi, strict=True)
    )
    sample_index = sample_rank.astype(np.intp, copy=False)
    pairs = OrgSamplePairs(
        # names by code: a pair's org and sample strings without a Python object per pair
        org_ids=Coded(tuple(org_names), org_index),
        sha256s=Coded(hexes, sample_index),
        counts=counts,
        sketches=(),
        org_days=org_days,
        sketch_reader=_sketch_reader(store, until_ms, org_keys, sample_rank, samples),
        org_index=org_index,
        samples=hexes,
        sample_index=sample_index,
    )
    return PairColumns(pairs, store, org_keys, sample_rank, samples, org_key)
