"""Aggregate rows in a bulk producer's form: integer codes into small tables, no SQL here.

A day of a simulated million-endpoint fleet folds into about 800 thousand aggregate rows, and
the same thousand org ids, few thousand sample hashes and six verdict names repeat on every
row. `EncodedAggregates` carries them once (`orgs`, `sha256s`, `verdicts`) with one integer
column of codes per row, as numpy arrays; the store maps each table once (an org id to its
key: a thousand lookups, not a million) and turns the codes into parameter rows with one
`take` per column. The feature vectors reported with the rows come the same way: each distinct
vector once (`vectors`) and one (org, sample, vector) code triple per reference.

`check` holds the shape (lengths, codes in range); `is_key_ordered` holds what lets the store
append instead of merge: rows strictly increasing in the aggregates table's key (day, org key,
sha256 bytes, model version, verdict name), hence distinct.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["EncodedAggregates"]

Codes = npt.NDArray[np.integer[Any]]
_NONE: Codes = np.zeros(0, np.int64)


def _ranks(values: Sequence[Any]) -> npt.NDArray[np.int64]:
    """Each value's rank in sorted order (what SQLite's key comparison sees)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values))
    return rank


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), object)
    out[:] = list(values)
    return out


@dataclass(frozen=True, slots=True)
class EncodedAggregates:
    """Aggregate rows (not shadow) as code columns into `orgs`, `sha256s` and `verdicts`.

    Row i is (day[i], orgs[org[i]], sha256s[sha256[i]], model_version[i],
    verdicts[verdict[i]], count[i], endpoints[i], first_seen_ms[i], last_seen_ms[i]);
    `sha256s` are the 32 raw bytes, `endpoints` each row's sketch (`backend.sketch`).
    Vector references: org `orgs[vec_org[j]]` reports sample `sha256s[vec_sha256[j]]` with
    vector `vectors[vec_index[j]]` (float32 bytes) under feature schema `schema`.
    """

    orgs: Sequence[str]
    sha256s: Sequence[bytes]
    verdicts: Sequence[str]
    day: Codes
    org: Codes
    sha256: Codes
    model_version: Codes
    verdict: Codes
    count: Codes
    endpoints: Sequence[bytes]
    first_seen_ms: Codes
    last_seen_ms: Codes
    schema: str = ""
    vectors: Sequence[bytes] = ()
    vec_org: Codes = field(default_factory=lambda: _NONE)
    vec_sha256: Codes = field(default_factory=lambda: _NONE)
    vec_index: Codes = field(default_factory=lambda: _NONE)

    def __len__(self) -> int:
        return int(self.day.size)

    def check(self) -> None:
        """Raise ValueError unless every column has one entry per row and codes are in range."""
        n = len(self)
        cols = (self.org, self.sha256, self.model_version, self.verdict, self.count)
        if any(c.size != n for c in (*cols, self.first_seen_ms, self.last_seen_ms)):
            raise ValueError("encoded aggregates: columns of different lengths")
        if len(self.endpoints) != n:
            raise ValueError("encoded aggregates: one sketch per row needed")
        m = self.vec_org.size
        if self.vec_sha256.size != m or self.vec_index.size != m:
            raise ValueError("encoded aggregates: vector columns of different lengths")
        for codes, table, name in (
            (self.org, self.orgs, "org"),
            (self.sha256, self.sha256s, "sha256"),
            (self.verdict, self.verdicts, "verdict"),
            (self.vec_org, self.orgs, "vector org"),
            (self.vec_sha256, self.sha256s, "vector sha256"),
            (self.vec_index, self.vectors, "vector"),
        ):
            if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(table)):
                raise ValueError(f"encoded aggregates: a {name} code is out of range")

    def is_key_ordered(self, org_keys: npt.NDArray[np.int64]) -> bool:
        """True when rows strictly increase in the table's key, orgs mapped to `org_keys`."""
        n = len(self)
        if n < 2:
            return True
        key = (
            self.day,
            org_keys[self.org],
            _ranks(self.sha256s)[self.sha256],
            self.model_version,
            _ranks(self.verdicts)[self.verdict],
        )
        later = np.zeros(n - 1, bool)
        same = np.ones(n - 1, bool)
        for col in key:
            c = np.asarray(col, np.int64)
            d = c[1:] - c[:-1]
            later |= same & (d > 0)
            same &= d == 0
        return bool(later.all())

    def params(
        self, org_keys: npt.NDArray[np.int64], lo: int, hi: int
    ) -> Iterator[tuple[Any, ...]]:
        """Rows lo..hi as (day, org key, sha256, version, verdict, count, sketch, first, last)."""
        k = slice(lo, hi)
        return zip(
            self.day[k].tolist(),
            org_keys[self.org[k]].tolist(),
            _objects(self.sha256s)[self.sha256[k]].tolist(),
            self.model_version[k].tolist(),
            _objects(self.verdicts)[self.verdict[k]].tolist(),
            self.count[k].tolist(),
            self.endpoints[lo:hi],
            self.first_seen_ms[k].tolist(),
            self.last_seen_ms[k].tolist(),
            strict=True,
        )

    def vector_refs(
        self, org_keys: npt.NDArray[np.int64], digests: Sequence[bytes]
    ) -> tuple[list[tuple[int, bytes, str, bytes]], list[int]]:
        """(org key, sha256, schema, digest) per reference, and the vectors they point at.

        `digests[i]` is the content key of `vectors[i]`. The first reference of each (org,
        sample) wins, as everywhere; sorted in `org_vectors` key order, the references fill
        the table's B-tree page by page instead of at random.
        """
        if not self.vec_org.size:
            return [], []
        ok = org_keys[self.vec_org]
        sha_rank = _ranks(self.sha256s)[self.vec_sha256]
        order = np.lexsort((sha_rank, ok))  # stable: the first reported stays first
        o, r = ok[order], sha_rank[order]
        first = np.r_[True, (o[1:] != o[:-1]) | (r[1:] != r[:-1])]
        order = order[first]
        vec = self.vec_index[order]
        refs = list(
            zip(
                ok[order].tolist(),
                _objects(self.sha256s)[self.vec_sha256[order]].tolist(),
                repeat(self.schema),
                _objects(digests)[vec].tolist(),
                strict=False,
            )
        )
        return refs, np.unique(vec).tolist()
