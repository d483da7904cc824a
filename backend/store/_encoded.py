"""Aggregate rows in a bulk producer's form: integer codes into small tables, no SQL here.

A day of a simulated million-endpoint fleet folds into about 800 thousand aggregate rows, and
the same thousand org ids, few thousand sample hashes and six verdict names repeat on every
row. `EncodedAggregates` carries them once (`orgs`, `sha256s`, `verdicts`) with one integer
column of codes per row, as numpy arrays; the store maps each table once (an org id to its
key: a thousand lookups, not a million) and turns the codes into parameter rows with one
`take` per column. The feature vectors reported with the rows come the same way: each distinct
vector once (`vectors`) and one (org, sample, vector) code triple per reference.

The sketches may come as one blob with each row's (start, size) instead of one bytes object
per row (`sketches`, `sketch_start`, `sketch_size`: the fold keeps them so).

`check` holds the shape (lengths, codes in range); `is_key_ordered` holds what lets the store
append instead of merge: rows strictly increasing in the aggregates table's key (day, org key,
sha256 bytes, model version, verdict name), hence distinct.

`pack` is how the rows reach SQLite without a Python object per row: integer columns packed
as bit fields into as few int64 words as their value ranges allow, each word one numpy array
that the store binds as an array (APSW's `carray`) and SQL unpacks with a shift and a mask.
A row of the simulator's fold (ten integer columns, 139 bits) takes three words.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["EncodedAggregates", "Field", "Packed", "pack"]

Codes = npt.NDArray[np.integer[Any]]
_NONE: Codes = np.zeros(0, np.int64)


def _ranks(values: Sequence[Any]) -> npt.NDArray[np.int64]:
    """Each value's rank in sorted order (what SQLite's key comparison sees)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values))
    return rank


_WORD_BITS = 62  # bit fields of a word: sums stay non-negative int64, shifts stay arithmetic


@dataclass(frozen=True, slots=True)
class Field:
    """Where one column sits in `Packed.words`: ((word >> shift) & (2**bits - 1)) + offset.

    `bits` 64 marks a column too wide to pack, stored as itself in a word of its own.
    """

    word: int
    shift: int
    bits: int
    offset: int


@dataclass(frozen=True, slots=True)
class Packed:
    """Integer columns as bit fields of int64 words (`pack`); `fields` in the columns' order."""

    words: list[npt.NDArray[np.int64]]
    fields: list[Field]


def pack(columns: Sequence[Codes]) -> Packed:
    """Pack equally long integer columns into as few int64 words as their ranges allow.

    Each column keeps (value - its minimum) in as many bits as its range needs; columns go
    widest first into the first word with room (first-fit decreasing), at most 62 bits a word.
    """
    n = int(columns[0].size) if columns else 0
    spans: list[tuple[int, int]] = []
    for c in columns:
        if c.size != n:
            raise ValueError("pack: columns of different lengths")
        lo, hi = (int(c.min()), int(c.max())) if n else (0, 0)
        if lo < -(2**63) or hi >= 2**63:
            raise ValueError("pack: a value outside SQLite's 64-bit integers")
        spans.append((lo, (hi - lo).bit_length()))
    used: list[int] = []  # bits taken in each word; a raw column's word is full
    fields: list[Field | None] = [None] * len(columns)
    for i in sorted(range(len(columns)), key=lambda i: -spans[i][1]):
        lo, bits = spans[i]
        if bits > _WORD_BITS:
            fields[i] = Field(len(used), 0, 64, 0)
            used.append(64)
            continue
        w = next((w for w, u in enumerate(used) if u + bits <= _WORD_BITS), len(used))
        if w == len(used):
            used.append(0)
        fields[i] = Field(w, used[w], bits, lo)
        used[w] += bits
    words = [np.zeros(n, np.int64) for _ in used]
    for c, f in zip(columns, fields, strict=True):
        assert f is not None
        if f.bits == 64:
            words[f.word] = np.ascontiguousarray(c, np.int64)
        elif f.bits:
            words[f.word] |= (np.asarray(c, np.int64) - f.offset) << f.shift
    return Packed(words, [f for f in fields if f is not None])


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), object)
    out[:] = list(values)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedAggregates:
    """Aggregate rows (not shadow) as code columns into `orgs`, `sha256s` and `verdicts`.

    Row i is (day[i], orgs[org[i]], sha256s[sha256[i]], model_version[i],
    verdicts[verdict[i]], count[i], sketch i, first_seen_ms[i], last_seen_ms[i]);
    `sha256s` are the 32 raw bytes, sketch i (`backend.sketch`) is `endpoints[i]`, or
    `sketches[sketch_start[i]:sketch_start[i] + sketch_size[i]]` when `sketch_size` is given.
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
    endpoints: Sequence[bytes] = ()
    sketches: bytes = b""
    sketch_start: Codes = field(default_factory=lambda: _NONE)
    sketch_size: Codes = field(default_factory=lambda: _NONE)
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
        """Raise ValueError unless the rows are well formed.

        Every column has one entry per row, codes are in range and every sample hash is 32
        bytes (the store reads a code's hash at code x 32 of them end to end).
        """
        n = len(self)
        if any(len(s) != 32 for s in self.sha256s):
            raise ValueError("encoded aggregates: a sha256 is not 32 bytes")
        cols = (self.org, self.sha256, self.model_version, self.verdict, self.count)
        if any(c.size != n for c in (*cols, self.first_seen_ms, self.last_seen_ms)):
            raise ValueError("encoded aggregates: columns of different lengths")
        if self._one_blob():
            if self.sketch_start.size != n or self.sketch_size.size != n:
                raise ValueError("encoded aggregates: one sketch per row needed")
            start, size = self.sketch_start, self.sketch_size
            if n and (
                int(start.min()) < 0
                or int(size.min()) < 0
                or int((start.astype(np.int64) + size).max()) > len(self.sketches)
            ):
                raise ValueError("encoded aggregates: a sketch lies outside the sketch bytes")
        elif len(self.endpoints) != n:
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

    def _one_blob(self) -> bool:
        return bool(self.sketch_size.size) or (not self.endpoints and bool(self.sketch_start.size))

    def sketch_blob(self) -> tuple[bytes, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The sketches as one blob and each row's (start, size) in it."""
        if self._one_blob():
            start = np.asarray(self.sketch_start, np.int64)
            return self.sketches, start, np.asarray(self.sketch_size, np.int64)
        size = np.fromiter(map(len, self.endpoints), np.int64, len(self.endpoints))
        start = np.zeros(size.size, np.int64)
        np.cumsum(size[:-1], out=start[1:])
        return b"".join(self.endpoints), start, size

    def _sketches(self, lo: int, hi: int) -> Sequence[bytes]:
        if not self._one_blob():
            return self.endpoints[lo:hi]
        b = self.sketches
        starts = self.sketch_start[lo:hi].tolist()
        return [b[a : a + k] for a, k in zip(starts, self.sketch_size[lo:hi].tolist(), strict=True)]

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
            self._sketches(lo, hi),
            self.first_seen_ms[k].tolist(),
            self.last_seen_ms[k].tolist(),
            strict=True,
        )

    def packed(
        self,
        org_keys: npt.NDArray[np.int64],
        sketch_start: npt.NDArray[np.int64],
        sketch_size: npt.NDArray[np.int64],
    ) -> Packed:
        """The rows packed (`pack`), sketch start and size from `sketch_blob`.

        Columns: day, org key, sha256 code, version, verdict code, count, sketch start,
        sketch size, first seen, last seen.
        """
        return pack(
            (
                self.day,
                org_keys[self.org],
                self.sha256,
                self.model_version,
                self.verdict,
                self.count,
                sketch_start,
                sketch_size,
                self.first_seen_ms,
                self.last_seen_ms,
            )
        )

    def _first_refs(self, org_keys: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """The reference indices to write: the first of each (org, sample), in key order."""
        ok = org_keys[self.vec_org]
        sha_rank = _ranks(self.sha256s)[self.vec_sha256]
        n_s = max(len(self.sha256s), 1)
        if int(ok.min()) >= 0 and int(ok.max()) < (2**62) // n_s:  # one int64 key: 3-4x faster
            key = ok * n_s + sha_rank
            order = np.argsort(key, kind="stable")  # stable: the first reported stays first
            k = key[order]
            first = np.r_[True, k[1:] != k[:-1]]
        else:
            order = np.lexsort((sha_rank, ok))  # stable too
            o, r = ok[order], sha_rank[order]
            first = np.r_[True, (o[1:] != o[:-1]) | (r[1:] != r[:-1])]
        return order[first]

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
        order = self._first_refs(org_keys)
        vec = self.vec_index[order]
        refs = list(
            zip(
                org_keys[self.vec_org[order]].tolist(),
                _objects(self.sha256s)[self.vec_sha256[order]].tolist(),
                repeat(self.schema),
                _objects(digests)[vec].tolist(),
                strict=False,
            )
        )
        return refs, np.unique(vec).tolist()

    def packed_refs(self, org_keys: npt.NDArray[np.int64]) -> tuple[Packed, list[int]]:
        """`vector_refs` packed (`pack`) as (org key, sha256 code, vector code) columns."""
        if not self.vec_org.size:
            return pack((_NONE, _NONE, _NONE)), []
        order = self._first_refs(org_keys)
        vec = self.vec_index[order]
        cols = (org_keys[self.vec_org[order]], self.vec_sha256[order], vec)
        return pack(cols), np.unique(vec).tolist()
