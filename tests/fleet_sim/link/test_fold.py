"""The cohort fold's own parts (the fold as a whole is held to the wire path in
test_in_process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleet_sim.link.fold as fold
from agent.verdict_codes import VERDICTS
from backend import sketch
from fleet_sim.link.fold import EventFolder, FoldedRows

T0 = 1_793_491_200_000  # 2026-11-01 UTC, in ms


def _parts(
    events: list[Any], cuts: list[int]
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """The events (ep, sample, model, verdict, t_ms) as fold columns, and cut into parts at
    `cuts`."""
    arr = np.asarray(events, np.int64).reshape(-1, 5)
    cols: dict[str, np.ndarray] = {
        "ep": arr[:, 0].astype(np.int32), "sample": arr[:, 1].astype(np.int16),
        "model": arr[:, 2].astype(np.int16), "verdict": arr[:, 3].astype(np.int8),
        "t_ms": arr[:, 4].astype(np.uint32),
    }  # fmt: skip
    bounds = sorted({0, len(events), *[c for c in cuts if c < len(events)]})
    return cols, [
        {k: v[a:b] for k, v in cols.items()} for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def test_endpoint_hashes_are_the_sketch_hashes_of_the_endpoint_ids() -> None:
    folder = EventFolder([f"{i:064x}" for i in range(3)], n_orgs=2, e_lo=5)
    rank = folder.ranks(1_204)
    want = [sketch.endpoint_hash(f"sim{e:08d}") for e in range(5, 1_205)]
    assert folder._hash.tolist() == want  # noqa: SLF001 - the values sketches are made of
    assert sorted(want) == [want[i] for i in rank.argsort()]
    folder.ranks(1_300)  # grows lazily, keeping what it had
    assert folder._hash.tolist()[:1_200] == want  # noqa: SLF001


@settings(max_examples=30, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 29),  # endpoint
            st.integers(0, 5),  # sample
            st.integers(1, 2),  # model version
            st.integers(0, 2),  # verdict code
            st.integers(0, 2 * 86_400_000),  # ms after the start
        ),
        min_size=1,
        max_size=200,
    ),
    cuts=st.lists(st.integers(0, 200), max_size=6),
    chunk=st.sampled_from([7, 50, 10**6]),
)
def test_folding_parts_equals_folding_them_joined(events, cuts, chunk) -> None:
    """`fold_parts` (no joined copy of the events) makes the rows `fold` makes of them joined,
    whatever the parts and the chunk size."""
    cols, parts = _parts(events, cuts)
    ep_org = np.arange(30) % 3
    folder = EventFolder([f"{i:064x}" for i in range(6)], n_orgs=3)
    was = fold.FOLD_CHUNK_EVENTS
    fold.FOLD_CHUNK_EVENTS = chunk
    try:
        got = folder.fold_parts(parts, ep_org=ep_org, t_base_ms=T0)
    finally:
        fold.FOLD_CHUNK_EVENTS = was
    want = folder.fold(**cols, ep_org=ep_org, t_base_ms=T0)
    for c in ("day", "org", "sample", "model", "verdict", "count", "first", "last"):
        assert getattr(got, c).tolist() == getattr(want, c).tolist(), c
    assert got.sketch_list() == want.sketch_list()
    assert len(want) <= len(events)


DAY_MS = 86_400_000


Event = tuple[int, int, int, int, int]  # endpoint, sample, model, verdict code, t_ms


def _reference(
    events: list[Event], shas: list[str], ep_org: np.ndarray, t_base: int
) -> dict[str, list[Any]]:
    """The rows, one event at a time in plain Python, each sketch by `backend.sketch`."""
    rows: dict[tuple[Any, ...], list[Any]] = {}
    for e, s, m, v, t in events:
        ms = t_base + t
        key = (ms // DAY_MS, int(ep_org[e]), shas[s], m, VERDICTS[v].value)
        r = rows.setdefault(key, [0, set(), ms, ms, s, v])
        r[0] += 1
        r[1].add(sketch.endpoint_hash(f"sim{e:08d}"))
        r[2], r[3] = min(r[2], ms), max(r[3], ms)
    out = sorted(rows.items())  # the aggregates table's order: sha256 and verdict names
    return {
        "day": [k[0] for k, _ in out], "org": [k[1] for k, _ in out],
        "sample": [r[4] for _, r in out], "model": [k[3] for k, _ in out],
        "verdict": [r[5] for _, r in out], "count": [r[0] for _, r in out],
        "first": [r[2] for _, r in out], "last": [r[3] for _, r in out],
        "sketches": [sketch.sketch_of(r[1]) for _, r in out],
    }  # fmt: skip


def _events(n_ep: int, n_samples: int, max_size: int) -> st.SearchStrategy[list[Event]]:
    return st.lists(
        st.tuples(
            st.integers(0, n_ep - 1),  # endpoint (less e_lo)
            st.integers(0, n_samples - 1),
            st.integers(0, 3),  # model version
            st.integers(0, len(VERDICTS) - 1),  # verdict code
            st.integers(0, 3 * DAY_MS),  # ms after the first midnight
        ),
        max_size=max_size,
    )


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    e_lo=st.sampled_from([0, 5]),
    wide=st.booleans(),  # many endpoints in few rows: rows past K endpoints
    cuts=st.lists(st.integers(0, 400), max_size=6),
    chunk=st.sampled_from([1, 7, 10**6]),
    key_bits=st.sampled_from([63, 36]),  # 36: the events sorted in many slices
)
def test_fold_makes_the_rows_and_sketches_of_backend_sketch(
    data, e_lo, wide, cuts, chunk, key_bits
) -> None:
    """Each row (day, org, sample, model, verdict) in the table's order, with its count,
    first and last time, and its sketch as `backend.sketch.sketch_of` makes it, whatever the
    parts (empty, one event, duplicates), chunk size and number of key slices."""
    n_ep, n_samples = (150, 2) if wide else (12, 6)
    events = data.draw(_events(n_ep, n_samples, 400 if wide else 60))
    events = [(e + e_lo, *rest) for e, *rest in events]
    shas = data.draw(
        st.lists(
            st.text("0123456789abcdef", min_size=64, max_size=64),
            min_size=6,
            max_size=6,
            unique=True,
        )
    )
    ep_org = np.asarray(
        data.draw(st.lists(st.integers(0, 2), min_size=e_lo + n_ep, max_size=e_lo + n_ep))
    )
    t_base = T0 + data.draw(st.integers(0, DAY_MS - 1))
    cols, parts = _parts(events, cuts)
    parts.append({k: v[:0] for k, v in cols.items()})  # an empty part
    folder = EventFolder(shas, n_orgs=3, e_lo=e_lo)
    was = fold.FOLD_CHUNK_EVENTS, fold._KEY_BITS  # noqa: SLF001 - knobs with no public setting
    fold.FOLD_CHUNK_EVENTS, fold._KEY_BITS = chunk, key_bits  # noqa: SLF001
    released: list[int] = []  # the parts handed over: emptied once their keys are written
    try:
        got = folder.fold_parts(
            parts, ep_org=ep_org, t_base_ms=t_base, released=lambda: released.append(len(parts))
        )
    finally:
        fold.FOLD_CHUNK_EVENTS, fold._KEY_BITS = was  # noqa: SLF001
    assert released == ([0] if events else []) and (parts == [] or not events)
    got.check()
    want = _reference(events, shas, ep_org, t_base)
    for c in ("day", "org", "sample", "model", "verdict", "count", "first", "last"):
        assert getattr(got, c).tolist() == want[c], c
    assert got.sketch_list() == want["sketches"]
    if events:  # narrow columns, as before
        assert got.day.dtype == np.int32 and got.model.dtype == np.int16
        assert got.verdict.dtype == np.int8 and got.count.dtype == np.int32


def test_a_fold_past_k_endpoints_keeps_the_k_smallest_hashes() -> None:
    """A row of 200 endpoints: its sketch holds K hashes, the smallest, so it estimates."""
    ep = np.arange(200, dtype=np.int32)
    zeros = np.zeros(200, np.int16)
    folder = EventFolder(["a" * 64], n_orgs=1)
    rows = folder.fold(
        ep=ep, sample=zeros, model=zeros + 1, verdict=zeros.astype(np.int8),
        t_ms=np.arange(200, dtype=np.uint32), ep_org=np.zeros(200, np.int32), t_base_ms=T0,
    )  # fmt: skip
    [one] = rows.sketch_list()
    assert one == sketch.sketch_of(sketch.endpoint_hash(f"sim{e:08d}") for e in range(200))
    assert len(one) == 8 * sketch.K and rows.count.tolist() == [200]
    assert (rows.first.tolist(), rows.last.tolist()) == ([T0], [T0 + 199])


def test_keys_too_wide_for_int64_sort_in_slices_with_the_same_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With room for 2 (day, sample, model, verdict) values a key, the events of 3 days and 6
    samples go in many sorts, and the rows are those of the reference."""
    rng = np.random.default_rng(7)
    n = 500
    events = list(
        zip(
            rng.integers(0, 150, n).tolist(), rng.integers(0, 6, n).tolist(),
            rng.integers(1, 3, n).tolist(), rng.integers(0, 2, n).tolist(),
            rng.integers(0, 3 * DAY_MS, n).tolist(), strict=True,
        )
    )  # fmt: skip
    arr = np.asarray(events, np.int64)
    shas = [f"{(i * 7919) % 13:064x}" for i in range(6)]
    ep_org = np.arange(150) % 3
    sorts: list[tuple[int, int]] = []  # each sort's u range
    real = fold._Layout.keys  # noqa: SLF001 - counting the sorts

    def keys(self: Any, parts: Any, lo: int, hi: int) -> Any:
        sorts.append((lo, hi))
        return real(self, parts, lo, hi)

    monkeypatch.setattr(fold._Layout, "keys", keys)  # noqa: SLF001
    monkeypatch.setattr(fold, "_KEY_BITS", 27 + 8 + 1)  # 150 endpoints: 8 bits; 2 u values
    got = EventFolder(shas, n_orgs=3).fold(
        ep=arr[:, 0], sample=arr[:, 1], model=arr[:, 2], verdict=arr[:, 3], t_ms=arr[:, 4],
        ep_org=ep_org, t_base_ms=T0,
    )  # fmt: skip
    assert len(sorts) > 10 and all(hi - lo <= 2 for lo, hi in sorts)
    want = _reference(events, shas, ep_org, T0)
    for c in ("day", "org", "sample", "model", "verdict", "count", "first", "last"):
        assert getattr(got, c).tolist() == want[c], c
    assert got.sketch_list() == want["sketches"]


def test_concat_of_org_parts_is_the_fold_of_them_all_and_empties_the_list() -> None:
    rng = np.random.default_rng(3)
    n = 600
    ep = rng.integers(0, 30, n).astype(np.int32)
    ep_org = np.arange(30) // 10
    cols = {
        "ep": ep, "sample": rng.integers(0, 6, n).astype(np.int16),
        "model": np.ones(n, np.int16), "verdict": rng.integers(0, 3, n).astype(np.int8),
        "t_ms": rng.integers(0, 86_400_000, n).astype(np.uint32),
    }  # fmt: skip
    folder = EventFolder([f"{i:064x}" for i in range(6)], n_orgs=3)
    whole = folder.fold(**cols, ep_org=ep_org, t_base_ms=T0)
    parts = [
        folder.fold(**{k: v[sel] for k, v in cols.items()}, ep_org=ep_org, t_base_ms=T0)
        for sel in (ep_org[ep] == 0, ep_org[ep] > 0)
    ]
    got = FoldedRows.concat(parts)
    assert parts == []  # handed over: each part's columns go as they are joined
    for c in ("day", "org", "sample", "model", "verdict", "count", "first", "last"):
        assert getattr(got, c).tolist() == getattr(whole, c).tolist(), c
    assert got.sketch_list() == whole.sketch_list()
