"""The cohort fold's own parts (the fold as a whole is held to the wire path in
test_backend_link)."""

from __future__ import annotations

from backend import sketch
from fleet_sim.fold import EventFolder


def test_endpoint_hashes_are_the_sketch_hashes_of_the_endpoint_ids() -> None:
    folder = EventFolder([f"{i:064x}" for i in range(3)], n_orgs=2, e_lo=5)
    rank = folder.ranks(1_204)
    want = [sketch.endpoint_hash(f"sim{e:08d}") for e in range(5, 1_205)]
    assert folder._hash.tolist() == want  # noqa: SLF001 - the values sketches are made of
    assert sorted(want) == [want[i] for i in rank.argsort()]
    folder.ranks(1_300)  # grows lazily, keeping what it had
    assert folder._hash.tolist()[:1_200] == want  # noqa: SLF001
