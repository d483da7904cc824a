"""The cohort fold's own parts (the fold as a whole is held to the wire path in
test_backend_link)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fleet_sim.fold as fold
from backend import sketch
from fleet_sim.fold import EventFolder

T0 = 1_793_491_200_000  # 2026-11-01 UTC, in ms


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
    arr = np.asarray(events, np.int64)
    cols = {
        "ep": arr[:, 0].astype(np.int32), "sample": arr[:, 1].astype(np.int16),
        "model": arr[:, 2].astype(np.int16), "verdict": arr[:, 3].astype(np.int8),
        "t_ms": arr[:, 4].astype(np.uint32),
    }  # fmt: skip
    bounds = sorted({0, len(events), *[c for c in cuts if c < len(events)]})
    parts = [{k: v[a:b] for k, v in cols.items()} for a, b in zip(bounds, bounds[1:], strict=False)]
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
