"""The cohort mode's fold: delivered events into aggregate rows, in numpy, with no store.

A row is (day, org, sample, model, verdict) with its count, its distinct endpoints' sketch
(exactly as `backend.sketch` builds it) and its first and last time; rows come out in the
aggregates table's key order (day, org, sha256 bytes, model, verdict name). The fold is a
function of the multiset of events (value sorts), so events split by org (a shard's
`EventFolder` sees only its own orgs' endpoints) fold into the same rows, which
`FoldedRows.concat` joins in the table's order. Writing them is `InProcessLink.write_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.verdict_codes import VERDICTS
from backend import sketch

__all__ = ["FOLD_CHUNK_EVENTS", "EventFolder", "FoldedRows"]

FOLD_CHUNK_EVENTS = 1_000_000  # events sorted at once (bounds the sorts' temporaries)
_MS_PER_DAY = 86_400_000
_TB = 27  # bits of a key's time of day (ms; 2**27 > 86,400,000)
_T_MASK = (1 << _TB) - 1
_KEY_BITS = 63  # of a sort key (int64, non-negative); read at each fold: a test lowers it
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
    def sketches_in_row_order(
        sketches: bytes, start: npt.NDArray[np.int64], size: Arr, step: int = 65_536
    ) -> tuple[bytes, npt.NDArray[np.int64]]:
        """Rows' sketches laid out in row order: the new blob and starts (or the same ones).

        Row i's sketch is `sketches[start[i]:start[i] + size[i]]`; in the new blob each row's
        sketch comes right after the one before. Gathered `step` rows at a time (temporaries of
        that size). A fold lays the sketches out in its own order, so a slice of rows can span
        the whole blob; a writer that binds a slice's bytes (`Store.ingest_encoded`: SQLite
        copies them) would copy the day's blob once per slice. In row order a slice's sketches
        are its own.
        """
        n = size.size
        size64 = size.astype(np.int64)
        at = np.zeros(n, np.int64)
        np.cumsum(size64[:-1], out=at[1:])
        if np.array_equal(at, start):
            return sketches, start
        words = not (size64 % 8).any() and not (start % 8).any() and len(sketches) % 8 == 0
        unit = 8 if words else 1  # a sketch is hash words: gather words, not bytes
        src = np.frombuffer(sketches, np.uint64 if unit == 8 else np.uint8)
        out = np.empty(int(size64.sum()) // unit, src.dtype)
        for lo in range(0, n, step):
            a, k = at[lo] // unit, size64[lo : lo + step] // unit
            idx = np.repeat(start[lo : lo + step] // unit - at[lo : lo + step] // unit, k)
            idx += np.arange(a, a + idx.size)
            src.take(idx, out=out[a : a + idx.size])
        return out.tobytes(), at

    @staticmethod
    def concat(parts: Sequence[FoldedRows]) -> FoldedRows:
        """Parts in org order, each in key order, as one set of rows in the table's key order.

        Parts never share a row (rows hold their org, and parts split by org); only rows of
        several days need a (stable) sort by day to walk the table's B-tree in order. A list
        given is emptied, so that each part's columns can go as they are joined (`_join`; the
        coordinator's day of rows from its shards: else held twice at the join).
        """
        rows = [p for p in parts if len(p)]
        if isinstance(parts, list):
            parts.clear()
        return _join(rows)


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
    """`sketch.endpoint_hash` of the simulated endpoints lo..hi-1 (the world's pseudonyms)."""
    from fleet_sim.world import endpoint_ids  # the world's module: only where shards fold

    return sketch.endpoint_hashes(endpoint_ids(lo, hi))


class EventFolder:
    """Folds the events of endpoints `e_lo` onwards (a shard's, or every endpoint).

    Each endpoint's sketch hash is computed once (lazily, as far as the largest endpoint
    seen), and so is its position: endpoints ordered by org, then by hash. A fold sorts one
    int64 key per event, (day, sample, model and verdict, endpoint position, time of day):
    a row (day, org, sample, model, verdict) is a run of the sorted keys (an org's positions
    are contiguous) holding its distinct endpoints in hash order (its sketch: the first K)
    and each endpoint's times in order (its first and last time: the ends). One value sort
    (SIMD-fast, unlike an argsort) yields every row; a stable sort of the rows by (day, org)
    puts them in the aggregates table's key order.
    """

    def __init__(self, sha256: Sequence[str], n_orgs: int, e_lo: int = 0) -> None:
        self.n_orgs = n_orgs
        self.n_samples = len(sha256)
        self.e_lo = e_lo
        rank = np.empty(len(sha256), np.int64)
        order = np.argsort(np.asarray(sha256))
        rank[order] = np.arange(len(sha256))
        self.sha_rank = rank
        self.sample_of_rank = order
        self._hash = np.zeros(0, np.uint64)
        self._rank = np.zeros(0, np.int64)
        self._pos: _Positions | None = None

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
        return self._rank

    def positions(self, max_ep: int, ep_org: npt.NDArray[np.integer[Any]]) -> _Positions:
        """The endpoints' positions (by org, then hash) as far as `max_ep`, kept between folds.

        Made again only when more endpoints get hashed, or for another org array.
        """
        rank = self.ranks(max_ep)
        p = self._pos
        if p is None or p.n != rank.size or p.ep_org is not ep_org:
            lo = self.e_lo
            org = np.asarray(ep_org[lo : lo + rank.size], np.int64)
            order = np.lexsort((rank, org))
            e_term = np.zeros(lo + rank.size, np.int64)  # by endpoint id; below e_lo: unread
            e_term[lo + order] = np.arange(rank.size) << _TB
            p = self._pos = _Positions(
                n=rank.size, pb=max(1, (rank.size - 1).bit_length()), ep_org=ep_org,
                e_term=e_term, org_of_pos=org[order].astype(np.int32),
                hash_of_pos=self._hash[order].astype(">u8"),
            )  # fmt: skip
        return p

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
        released: Callable[[], object] | None = None,
    ) -> FoldedRows:
        """Events given in parts (each a mapping of `fold`'s five columns) into rows.

        The rows `fold` makes of the parts joined, without joining them: a simulated day of a
        million endpoints is about 180 MB of events, and a joined copy would double that at the
        fold, the run's memory peak. The keys are written part by part (cache-sized steps:
        table lookups and adds) into one int64 array, the only event-sized temporary; sorted,
        it is read in chunks of about `FOLD_CHUNK_EVENTS` keys (whole rows), so the chunks'
        temporaries stay chunk-sized. Should the keys of all events overflow int64, events
        go in slices of their (day, sample, model, verdict) range, each sorted on its own.

        With `released`, `parts` (then a list the caller hands over) is emptied once the last
        keys are written, before the sort, and `released()` is called: the events (a day of a
        1M-endpoint shard: ~80 MB) can go before the sort's and the rows' memory is taken
        (e.g. `fleet_sim._memory.trim_freed_memory`, when nobody else holds them).

        Raises:
            ValueError: a part's columns differ in length, or the key space overflows.
            TypeError: `released` with parts that are not a list.
        """
        if released is not None and not isinstance(parts, list):
            raise TypeError("fold_parts: `released` takes the parts as a list (emptied)")
        owned = parts if isinstance(parts, list) and released is not None else None
        parts = [p for p in parts if p["ep"].size]
        if any(p[c].size != p["ep"].size for p in parts for c in _EVENT_COLS):
            raise ValueError("fold: columns of different lengths")
        if not parts:
            return _EMPTY
        lay = _Layout.of(self, parts, ep_org, t_base_ms)
        got: list[list[Arr]] = []
        blobs: list[Arr] = []  # big-endian words
        slices = lay.slices()
        for lo, hi in slices:
            key = lay.keys(parts, lo, hi)
            if owned is not None and released is not None and hi == slices[-1][1]:
                parts.clear()  # the events' last use
                owned.clear()
                released()
            key.sort()
            step = FOLD_CHUNK_EVENTS  # read at each call: a test makes it tiny
            for a, b in lay.chunks(key, step):
                cols, blob = self._fold_part(key[a:b], lay)
                cols[0] += lo  # the rows' u (day, sample, model, verdict) in the whole range
                got.append(cols)
                blobs.append(blob)
            del key
        sketches = b"".join(b.data for b in blobs)
        del blobs
        cols = []
        for _ in range(len(got[0])):  # column by column, each chunk's copy let go once joined
            cols.append(np.concatenate([c.pop(0) for c in got]))
        del got
        return lay.rows(cols, sketches)

    def _fold_part(self, key: npt.NDArray[np.int64], lay: _Layout) -> tuple[list[Arr], Arr]:
        """One chunk of whole rows of sorted keys: the rows' columns and sketches.

        A key's pair (key // ms per day: u and endpoint position) starts a new distinct
        endpoint of a row where it changes, a new row where u or the endpoint's org does. A
        row's count is its run's length, its sketch the hashes of its first K pairs, its first
        and last times of day the least and the most in its run.
        Columns: u, org, count, first, last (times of day) and hashes in the sketch.
        """
        t = key >> _TB  # each event's pair (then, below, its time of day)
        new = np.empty(key.size, bool)
        new[0] = True
        np.not_equal(t[1:], t[:-1], out=new[1:])
        pair_at = np.flatnonzero(new)
        pq = t.take(pair_at)
        del new
        pb = lay.pos.pb
        u = pq >> pb
        pos = pq & ((1 << pb) - 1)
        del pq
        org = lay.pos.org_of_pos.take(pos)
        new = np.empty(pos.size, bool)  # the pairs that start a row
        new[0] = True
        np.not_equal(u[1:], u[:-1], out=new[1:])
        new[1:] |= org[1:] != org[:-1]
        ps = np.flatnonzero(new)  # each row's first pair
        del new
        pe = np.empty_like(ps)
        pe[:-1] = ps[1:]
        pe[-1] = pos.size
        keep_end = np.minimum(pe, ps + sketch.K)
        kept = pos
        if not (keep_end == pe).all():  # rows past K endpoints keep their first K
            flip = np.zeros(pos.size + 1, np.int8)  # +1 where a row's pairs start, -1 after K
            flip[ps] = 1
            flip[keep_end] -= 1
            kept = pos[np.cumsum(flip[:-1], dtype=np.int8).view(bool)]
        hashes = lay.pos.hash_of_pos.take(kept)
        del kept, pos, pe
        starts = pair_at.take(ps)  # each row's first event
        del pair_at
        np.bitwise_and(key, _T_MASK, out=t)
        return [  # narrow: a day of rows waits in memory until the fold's end
            u.take(ps),
            org.take(ps),
            np.diff(starts, append=key.size).astype(np.int32),
            np.minimum.reduceat(t, starts).astype(np.int32),  # times of day (< 2**27)
            np.maximum.reduceat(t, starts).astype(np.int32),
            (keep_end - ps).astype(np.int16),
        ], hashes


@dataclass(slots=True)
class _Positions:
    """A shard's endpoints by (org, hash): each endpoint's key term, and back."""

    n: int  # endpoints hashed (e_lo onwards)
    pb: int  # bits of a position
    ep_org: Any  # the org array these were made for
    e_term: npt.NDArray[np.int64]  # endpoint id -> its position << _TB
    org_of_pos: npt.NDArray[np.int64]
    hash_of_pos: npt.NDArray[Any]  # big-endian words, as sketches store them


@dataclass(slots=True)
class _Layout:
    """One fold's keys: (u << position bits | endpoint position) << 27 | time of day (ms).

    u = ((day - day0) * n_samples + sha256 rank) * n_mv + model and verdict slot. The slots
    are the (model, verdict) pairs present, in (model, verdict name) order, so the keys are
    as narrow as the fold's events allow.
    """

    folder: EventFolder
    pos: _Positions
    t_base_ms: int
    day0: int
    m_slot: npt.NDArray[np.int64]  # model -> its part of the slot (its index * verdicts)
    v_slot: npt.NDArray[np.int64]  # verdict code -> its part (its index in name order)
    mv_code: npt.NDArray[np.int64]  # slot -> model * nv + verdict rank
    n_u: int
    per_slice: int  # u values one sort's keys can hold
    t_range: list[tuple[int, int]]  # each part's earliest and latest t_ms
    mv_part: list[tuple[int | None, int | None]]  # each part's one model and verdict part

    @property
    def u_d(self) -> int:
        return int(self.mv_code.size) * self.folder.n_samples

    @staticmethod
    def of(
        folder: EventFolder,
        parts: Sequence[Mapping[str, npt.NDArray[np.integer[Any]]]],
        ep_org: npt.NDArray[np.integer[Any]],
        t_base_ms: int,
    ) -> _Layout:
        pos = folder.positions(max(int(p["ep"].max()) for p in parts), ep_org)
        nv = len(VERDICTS)
        models = np.zeros(max(int(p["model"].max()) for p in parts) + 1, bool)
        ranks = np.zeros(nv, bool)  # verdicts by name
        one: list[tuple[int | None, int | None]] = []
        t_range = []
        for p in parts:  # the parts' ranges of models and verdicts (a superset: cheap)
            m, v, t = p["model"], p["verdict"], p["t_ms"]
            t_range.append((int(t.min()), int(t.max())))
            m_lo, m_hi, v_lo, v_hi = int(m.min()), int(m.max()), int(v.min()), int(v.max())
            models[m_lo : m_hi + 1] = True
            ranks[_VERDICT_RANK[v_lo : v_hi + 1]] = True
            one.append((m_lo if m_lo == m_hi else None, v_lo if v_lo == v_hi else None))
        m_used, r_used = np.flatnonzero(models), np.flatnonzero(ranks)
        m_slot = np.full(models.size, -1, np.int64)
        m_slot[m_used] = np.arange(m_used.size) * r_used.size
        r_slot = np.full(nv, -1, np.int64)
        r_slot[r_used] = np.arange(r_used.size)
        v_slot = r_slot[_VERDICT_RANK]
        mv_code = (m_used[:, None] * nv + r_used[None, :]).ravel()
        day0 = (t_base_ms + min(a for a, _ in t_range)) // _MS_PER_DAY
        n_days = (t_base_ms + max(b for _, b in t_range)) // _MS_PER_DAY - day0 + 1
        if pos.pb + _TB >= _KEY_BITS:
            raise ValueError("fold key space overflows int64; fold more often")
        return _Layout(
            folder=folder, pos=pos, t_base_ms=t_base_ms, day0=day0, m_slot=m_slot,
            v_slot=v_slot, mv_code=mv_code, n_u=n_days * int(mv_code.size) * folder.n_samples,
            per_slice=1 << (_KEY_BITS - pos.pb - _TB), t_range=t_range,
            mv_part=[
                (None if m is None else int(m_slot[m]), None if v is None else int(v_slot[v]))
                for m, v in one
            ],
        )  # fmt: skip

    def slices(self) -> list[tuple[int, int]]:
        """The u ranges sorted apart: all at once unless their keys would overflow int64."""
        step = self.per_slice
        return [(lo, min(lo + step, self.n_u)) for lo in range(0, self.n_u, step)]

    def keys(
        self, parts: Sequence[Mapping[str, npt.NDArray[np.integer[Any]]]], lo: int, hi: int
    ) -> npt.NDArray[np.int64]:
        """The keys (less u = lo) of the events with lo <= u < hi, part by part."""
        whole = lo == 0 and hi == self.n_u
        n_mv = int(self.mv_code.size)
        unit = 1 << (self.pos.pb + _TB)  # per u
        m_tab, v_tab = self.m_slot * unit, self.v_slot * unit
        day_unit = self.u_d * unit - _MS_PER_DAY  # per day: its u, less its start in ms
        s_tab = self.folder.sha_rank * (n_mv * unit)
        const = self.t_base_ms - self.day0 * _MS_PER_DAY - lo * unit
        key = np.empty(sum(p["ep"].size for p in parts) if whole else 0, np.int64)
        some, a = [], 0
        for p, (t_lo, t_hi), (m_one, v_one) in zip(parts, self.t_range, self.mv_part, strict=True):
            ep, t, sample = p["ep"], p["t_ms"], p["sample"]
            d_lo = (self.t_base_ms + t_lo) // _MS_PER_DAY - self.day0
            day = (
                d_lo
                if d_lo == (self.t_base_ms + t_hi) // _MS_PER_DAY - self.day0
                else (t.astype(np.int64) + self.t_base_ms) // _MS_PER_DAY - self.day0
            )  # events of several days: spooled ones, delivered late
            if whole:
                k = key[a : a + ep.size]
                a += ep.size
                np.take(self.pos.e_term, ep, out=k, mode="clip")  # clip: unbuffered (ids valid)
                k += s_tab.take(sample, mode="clip")
                mv: Any = 0
                if m_one is None:
                    k += m_tab.take(p["model"], mode="clip")
                else:
                    mv += m_one
                if v_one is None:
                    k += v_tab.take(p["verdict"], mode="clip")
                else:
                    mv += v_one
            else:  # a slice: the events whose u is in it
                mv = self.m_slot.take(p["model"]) if m_one is None else m_one
                mv = mv + (self.v_slot.take(p["verdict"]) if v_one is None else v_one)
                u = self.folder.sha_rank.take(sample) * n_mv + mv + day * self.u_d
                sel = (u >= lo) & (u < hi)
                if not sel.any():
                    continue
                ep, t, sample = ep[sel], t[sel], sample[sel]
                mv = mv if isinstance(mv, int) else mv[sel]
                day = day if isinstance(day, int) else day[sel]
                k = self.pos.e_term.take(ep)
                k += s_tab.take(sample)
            k += t
            k += mv * unit + day * day_unit + const
            if not whole:
                some.append(k)
        return key if whole else np.concatenate(some) if some else key

    def chunks(self, key: npt.NDArray[np.int64], step: int) -> list[tuple[int, int]]:
        """The sorted `key` cut into runs of about `step` keys, each of whole rows."""
        out, a, n = [], 0, key.size
        while a < n:
            b = a + step
            if b < n:  # on past the row of key b - 1: to its u's next org
                q, pb = int(key[b - 1]) >> _TB, self.pos.pb
                org = self.pos.org_of_pos[q & ((1 << pb) - 1)]
                nxt = int(np.searchsorted(self.pos.org_of_pos, org, "right"))
                b = int(np.searchsorted(key, (((q >> pb) << pb) + nxt) << _TB))
            else:
                b = n
            out.append((a, b))
            a = b
        return out

    def rows(self, cols: list[Arr], sketches: bytes) -> FoldedRows:
        """The chunks' rows, in (u, org) order, in the table's order (day, org, sample, ...).

        Takes the list's columns (emptying it): each is let go once used.
        """
        u, org, n_hash = cols[0], cols[1], cols[5]
        u_d = self.u_d
        one_day = int(u[0]) // u_d == int(u[-1]) // u_d  # u ascends
        day_org = org if one_day else u // u_d * self.folder.n_orgs + org
        narrow = np.int16 if int(day_org.max()) < 2**15 else np.int64  # int16: a radix sort
        order = np.argsort(day_org.astype(narrow), kind="stable")
        del day_org
        start = np.zeros(u.size, np.int64)  # each row's sketch in the blob (chunk order)
        np.cumsum(n_hash[:-1], out=start[1:])
        start *= 8
        start = start.take(order)
        size = n_hash.take(order).astype(np.int32)
        size *= 8
        org = org.take(order)
        count = cols[2].take(order)
        first = cols[3].take(order).astype(np.int64)
        last = cols[4].take(order).astype(np.int64)
        u = u.take(order)
        cols.clear()
        del order, n_hash
        if one_day:
            d = int(u[0]) // u_d
            u -= d * u_d
            day = np.full(u.size, d + self.day0, np.int32)
            first += (d + self.day0) * _MS_PER_DAY
            last += (d + self.day0) * _MS_PER_DAY
        else:
            d_arr, u = np.divmod(u, u_d)
            day = d_arr.astype(np.int32)
            del d_arr
            day += self.day0
            day_ms = day * np.int64(_MS_PER_DAY)
            first += day_ms
            last += day_ms
            del day_ms
        sr, slot = np.divmod(u, int(self.mv_code.size))
        del u
        sample = self.folder.sample_of_rank.astype(np.int32).take(sr)
        del sr
        mdl, vr = np.divmod(self.mv_code.take(slot), len(VERDICTS))
        del slot
        return FoldedRows(  # narrow columns: two days of rows wait in memory, for the writer
            day=day, org=org.astype(np.int32), sample=sample, model=mdl.astype(np.int16),
            verdict=_VERDICT_OF_RANK.astype(np.int8).take(vr), count=count, first=first,
            last=last, sketches=sketches, start=start, size=size,
        )  # fmt: skip
