"""The cohort mode's fold: delivered events into aggregate rows, in numpy, with no store.

A row is (day, org, sample, model, verdict) with its count, its distinct endpoints' sketch
(exactly as `backend.sketch` builds it) and its first and last time; rows come out in the
aggregates table's key order (day, org, sha256 bytes, model, verdict name). The fold is a
function of the multiset of events (value sorts), so events split by org (a shard's
`EventFolder` sees only its own orgs' endpoints) fold into the same rows, which
`FoldedRows.concat` joins in the table's order. Writing them is `InProcessLink.write_rows`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.verdict_codes import VERDICTS
from backend import sketch

__all__ = ["FOLD_CHUNK_EVENTS", "EventFolder", "FoldedRows"]

FOLD_CHUNK_EVENTS = 1_000_000  # events sorted at once (bounds the sorts' temporaries)
_MS_PER_DAY = 86_400_000
# verdict codes <-> their names' order (the aggregates table sorts verdicts by name)
_VERDICT_OF_RANK = np.asarray(sorted(range(len(VERDICTS)), key=lambda c: VERDICTS[c].value))
_VERDICT_RANK = np.argsort(_VERDICT_OF_RANK)
Arr = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class FoldedRows:
    """Aggregate rows as columns; row i's sketch is `sketches[start[i]:start[i] + size[i]]`.

    The sketches stay one blob (reordering or joining rows moves two integer columns, never
    the bytes); `sketch_list` cuts it once, for the store.
    """

    day: Arr
    org: Arr
    sample: Arr
    model: Arr
    verdict: Arr
    count: Arr
    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]
    sketches: bytes
    start: npt.NDArray[np.int64]
    size: Arr

    def __len__(self) -> int:
        return int(self.count.size)

    def check(self) -> None:
        """Raise ValueError unless every column (and the sketch ends) has one entry per row."""
        n = len(self)
        if any(getattr(self, c).size != n for c in (*_COLS, "start", "size")):
            raise ValueError("folded rows: columns of different lengths")
        if n and int((self.start + self.size).max()) > len(self.sketches):
            raise ValueError("folded rows: a sketch lies past the sketch bytes")

    def sketch_list(self, lo: int = 0, hi: int | None = None) -> list[bytes]:
        """The sketches of rows lo..hi (default: all), each as its own bytes."""
        b, k = self.sketches, slice(lo, hi)
        return [
            b[a : a + n] for a, n in zip(self.start[k].tolist(), self.size[k].tolist(), strict=True)
        ]

    @staticmethod
    def concat(parts: Sequence[FoldedRows]) -> FoldedRows:
        """Parts in org order, each in key order, as one set of rows in the table's key order.

        Parts never share a row (rows hold their org, and parts split by org); only rows of
        several days need a (stable) sort by day to walk the table's B-tree in order.
        """
        return _join([p for p in parts if len(p)])


def _join(parts: list[FoldedRows]) -> FoldedRows:
    """`FoldedRows.concat` of `parts`, emptying the list.

    Column by column, each part's copy of a column is let go once the column is joined (when
    nobody else holds the parts, as in `EventFolder.fold_parts`), so joining a day's rows
    holds one column twice, not every one.
    """
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        rows = parts.pop()
    else:
        blobs = [p.sketches for p in parts]
        offs = np.cumsum([0, *[len(b) for b in blobs[:-1]]]).tolist()
        cols = [{c: getattr(p, c) for c in _ALL} for p in parts]
        parts.clear()
        for d, o in zip(cols, offs, strict=True):
            d["start"] = d["start"] + o
        joined = {c: np.concatenate([d.pop(c) for d in cols]) for c in _ALL}
        rows = _rows(joined, b"".join(blobs), joined["start"], joined["size"])
        del blobs, joined
    if rows.day.min() == rows.day.max():
        return rows
    order = np.argsort(rows.day, kind="stable")
    return _rows(
        {c: getattr(rows, c)[order] for c in _COLS},
        rows.sketches,
        rows.start[order],
        rows.size[order],
    )


_COLS = ("day", "org", "sample", "model", "verdict", "count", "first", "last")
_ALL = (*_COLS, "start", "size")
_EVENT_COLS = ("ep", "sample", "model", "verdict", "t_ms")


def _rows(
    cols: dict[str, Arr], sketches: bytes, start: npt.NDArray[np.int64], size: Arr
) -> FoldedRows:
    return FoldedRows(
        day=cols["day"], org=cols["org"], sample=cols["sample"], model=cols["model"],
        verdict=cols["verdict"], count=cols["count"], first=cols["first"], last=cols["last"],
        sketches=sketches, start=start, size=size,
    )  # fmt: skip


_NONE = np.zeros(0, np.int64)
_EMPTY = _rows({c: _NONE for c in _COLS}, b"", _NONE, _NONE)


def _joined(cols: list[npt.NDArray[np.integer[Any]]]) -> npt.NDArray[np.integer[Any]]:
    return cols[0] if len(cols) == 1 else np.concatenate(cols)


def _endpoint_hashes(lo: int, hi: int) -> npt.NDArray[np.uint64]:
    """`sketch.endpoint_hash` of the simulated endpoints lo..hi-1 (ids `sim%08d`).

    The same blake2b digests, read as big-endian words by numpy instead of one Python int
    each (a million endpoints: about 40 % less time).
    """
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(b"sim%08d" % e, digest_size=8).digest() for e in range(lo, hi)])
    return np.frombuffer(digests, ">u8").astype(np.uint64)


class EventFolder:
    """Folds the events of endpoints `e_lo` onwards (a shard's, or every endpoint).

    Each endpoint's sketch hash is computed once (lazily, as far as the largest endpoint
    seen); ordering a row's endpoints by their rank in hash order orders them by hash, so
    one integer sort yields every row's sketch, and a rank among a shard's own endpoints
    orders them as a rank among all would.
    """

    def __init__(self, sha256: Sequence[str], n_orgs: int, e_lo: int = 0) -> None:
        self.n_orgs = n_orgs
        self.n_samples = len(sha256)
        self.e_lo = e_lo
        rank = np.empty(len(sha256), np.int64)
        order = np.argsort(np.asarray(sha256))
        rank[order] = np.arange(len(sha256))
        self.sha_rank = rank
        self.sha_rank32 = rank.astype(np.int32)
        self.sample_of_rank = order
        self._hash = np.zeros(0, np.uint64)
        self._rank = np.zeros(0, np.int64)
        self._hash_by_rank = np.zeros(0, np.uint64)

    def ranks(self, max_ep: int) -> npt.NDArray[np.int64]:
        """Rank in hash order of endpoints e_lo..max_ep (index: endpoint - e_lo)."""
        have = self._hash.size
        need = max_ep - self.e_lo + 1
        if need > have:
            lo = self.e_lo + have
            self._hash = np.concatenate([self._hash, _endpoint_hashes(lo, max_ep + 1)])
            by_rank = np.argsort(self._hash, kind="stable")
            self._rank = np.empty(self._hash.size, np.int64)
            self._rank[by_rank] = np.arange(self._hash.size)
            self._hash_by_rank = self._hash[by_rank]
        return self._rank

    def fold(
        self,
        *,
        ep: npt.NDArray[np.integer[Any]],
        sample: npt.NDArray[np.integer[Any]],
        model: npt.NDArray[np.integer[Any]],
        verdict: npt.NDArray[np.integer[Any]],
        t_ms: npt.NDArray[np.integer[Any]],
        ep_org: npt.NDArray[np.integer[Any]],
        t_base_ms: int = 0,
    ) -> FoldedRows:
        """Events (any integer dtypes; time `t_base_ms + t_ms`, org `ep_org[ep]`) into rows.

        Events go in chunks of about `FOLD_CHUNK_EVENTS` (whole (org, sample) groups, which no row
        spans, so a heavy org does not make one huge chunk and the sorts' temporaries stay
        chunk-sized); the chunks' rows are joined in key order.

        Raises:
            ValueError: the columns differ in length, or the key space overflows.
        """
        cols = {"ep": ep, "sample": sample, "model": model, "verdict": verdict, "t_ms": t_ms}
        return self.fold_parts([cols], ep_org=ep_org, t_base_ms=t_base_ms)

    def fold_parts(
        self,
        parts: Sequence[Mapping[str, npt.NDArray[np.integer[Any]]]],
        *,
        ep_org: npt.NDArray[np.integer[Any]],
        t_base_ms: int = 0,
    ) -> FoldedRows:
        """Events given in parts (each a mapping of `fold`'s five columns) into rows.

        The rows `fold` makes of the parts joined, without joining them: a simulated day of a
        million endpoints is about 180 MB of events, and a joined copy would double that at the
        fold, the run's memory peak. Each chunk gathers its own events from every part.

        Raises:
            ValueError: a part's columns differ in length, or the key space overflows.
        """
        parts = [p for p in parts if p["ep"].size]
        if any(p[c].size != p["ep"].size for p in parts for c in _EVENT_COLS):
            raise ValueError("fold: columns of different lengths")
        if not parts:
            return _EMPTY
        n_models = max(int(p["model"].max()) for p in parts) + 1
        day0 = (t_base_ms + min(int(p["t_ms"].min()) for p in parts)) // _MS_PER_DAY
        rank = self.ranks(max(int(p["ep"].max()) for p in parts))
        n_s = self.n_samples
        org32 = np.asarray(ep_org, np.int32)
        ends = np.cumsum([p["ep"].size for p in parts])
        n = int(ends[-1])
        group = np.empty(n, np.int32)  # filled part by part: a day of events makes every
        for p, a, b in zip(parts, np.r_[0, ends[:-1]], ends, strict=True):  # temporary count
            g = group[a:b]
            np.take(org32, p["ep"], out=g)
            g *= np.int32(n_s)
            g += self.sha_rank32[p["sample"]]
        per_group = np.cumsum(np.bincount(group, minlength=self.n_orgs * n_s))
        step = FOLD_CHUNK_EVENTS  # read at each call: a test makes it tiny
        cut = np.unique(np.searchsorted(per_group, np.arange(0, n, step), "right"))
        del per_group
        chunk_of = np.repeat(
            np.arange(cut.size, dtype=np.int16 if cut.size < 2**15 else np.int32),
            np.diff(np.r_[0, cut[1:], self.n_orgs * n_s]),
        )
        chunk = chunk_of[group] if cut.size > 1 else None
        del group, g, chunk_of  # g: a view that would keep `group` alive
        out: list[FoldedRows] = []
        for i in range(max(1, cut.size)):
            if chunk is None:
                c = {k: _joined([p[k] for p in parts]) for k in _EVENT_COLS}
            else:
                sel = np.flatnonzero(chunk == i)
                at = np.searchsorted(sel, ends)  # sel[at[j-1]:at[j]] falls in part j
                picks = [
                    (p, sel[a:b] - (e - p["ep"].size))
                    for p, a, b, e in zip(parts, np.r_[0, at[:-1]], at, ends, strict=True)
                    if b > a
                ]
                del sel
                c = {k: np.concatenate([p[k][s] for p, s in picks]) for k in _EVENT_COLS}
            e = c["ep"]
            tm = t_base_ms + np.asarray(c["t_ms"], np.int64)
            out.append(
                self._fold_part(
                    tm // _MS_PER_DAY - day0, ep_org[e], c["sample"], c["model"], c["verdict"],
                    rank[np.asarray(e, np.int64) - self.e_lo], tm, n_models, day0,
                )
            )  # fmt: skip
            del c, e, tm
        return _join(out)

    def _fold_part(
        self,
        day: npt.NDArray[np.int64],
        org: npt.NDArray[np.integer[Any]],
        sample: npt.NDArray[np.integer[Any]],
        model: npt.NDArray[np.integer[Any]],
        verdict: npt.NDArray[np.integer[Any]],
        rank: npt.NDArray[np.int64],
        t_ms: npt.NDArray[np.int64],
        n_models: int,
        day0: int,
    ) -> FoldedRows:
        """Fold one org chunk's events (`day` relative to `day0`) into rows.

        Two value sorts (SIMD-fast, unlike an argsort) do it: (row, endpoint hash rank) gives
        each row's count (its run length) and its distinct endpoints in hash order (the first
        K join the sketch); (row, time) gives its first and last time (the run's ends). Both
        runs of a row sit at the same positions, since both sorts order by row first. The row
        key orders rows as the aggregates table does (day, org, sha256 bytes, model, verdict
        name), so the rows come out in the table's key order.
        """
        n_s, n_o = self.n_samples, self.n_orgs
        nv = len(VERDICTS)
        row = (
            ((day * n_o + org) * n_s + self.sha_rank[sample]) * n_models + model
        ) * nv + _VERDICT_RANK[verdict]
        # (row, rank) and (row, time) packed by shifts: no integer division over the events
        rb = max(1, int(self._hash.size - 1).bit_length())
        t0 = int(t_ms.min())
        tb = max(1, (int(t_ms.max()) - t0).bit_length())
        if (int(row.max()) + 1).bit_length() + max(rb, tb) > 62:
            raise ValueError("fold key space overflows int64; fold more often")
        key = np.sort((row << rb) | rank)
        row_s = key >> rb
        new_row = np.r_[True, row_s[1:] != row_s[:-1]]
        starts = np.flatnonzero(new_row)
        n = key.size
        counts = np.diff(np.r_[starts, n])
        # distinct (row, endpoint) pairs in hash order; rank within the row < K joins the sketch
        pair = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        p_row = row_s[pair]
        p_start = np.flatnonzero(np.r_[True, p_row[1:] != p_row[:-1]])
        k_in_row = np.arange(pair.size) - np.repeat(p_start, np.diff(np.r_[p_start, pair.size]))
        keep = k_in_row < sketch.K
        p_hash = self._hash_by_rank[key[pair[keep]] & ((1 << rb) - 1)]
        p_row = p_row[keep]
        row_key = row_s[starts]
        del key, row_s, new_row, pair, k_in_row, keep
        tk = np.sort((row << tb) | (t_ms - t0))
        t_mask = (1 << tb) - 1
        first = (tk[starts] & t_mask) + t0
        last = (tk[np.r_[starts[1:], n] - 1] & t_mask) + t0
        del tk, row
        bounds = np.r_[0, np.flatnonzero(p_row[1:] != p_row[:-1]) + 1, p_row.size] * 8
        rest, vr = np.divmod(row_key, nv)
        rest, mdl = np.divmod(rest, n_models)
        rest, sr = np.divmod(rest, n_s)
        dy, og = np.divmod(rest, n_o)
        return FoldedRows(  # narrow columns: two days of rows wait in memory, for the writer
            day=(dy + day0).astype(np.int32),
            org=og.astype(np.int32),
            sample=self.sample_of_rank[sr].astype(np.int32),
            model=mdl.astype(np.int16),
            verdict=_VERDICT_OF_RANK[vr].astype(np.int8),
            count=counts.astype(np.int32),
            first=first,
            last=last,
            sketches=p_hash.astype(">u8").tobytes(),
            start=bounds[:-1].astype(np.int64),
            size=np.diff(bounds).astype(np.int32),
        )
