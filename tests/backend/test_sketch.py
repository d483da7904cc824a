"""The distinct-endpoint sketch: merging two sketches is the sketch of the union."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backend import sketch

hashes = st.lists(st.integers(0, 2**64 - 1), max_size=3 * sketch.K)


@settings(max_examples=300, deadline=None)
@given(a=hashes, b=hashes, shared=st.integers(0, 5))
def test_merge_is_the_sketch_of_the_union(a, b, shared):
    b = b + a[:shared]  # overlapping endpoints count once
    merged = sketch.merge(sketch.sketch_of(a), sketch.sketch_of(b))
    assert merged == sketch.sketch_of(a + b)
    assert sketch.merge(sketch.sketch_of(b), sketch.sketch_of(a)) == merged


@given(a=hashes)
def test_sketch_keeps_the_k_smallest_distinct_hashes_big_endian(a):
    got = sketch.sketch_of(a)
    want = sorted(set(a))[: sketch.K]
    assert got == b"".join(h.to_bytes(8, "big") for h in want)
    assert sketch.estimate(got) == len(want) or len(want) == sketch.K


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text(max_size=20), max_size=30))
def test_endpoint_hashes_in_batch_are_endpoint_hash_of_each_id(ids: list[str]) -> None:
    assert sketch.endpoint_hashes(ids).tolist() == [sketch.endpoint_hash(i) for i in ids]
