"""The canary bucket rule: one endpoint at a time (the agent) and many at once (the simulator)."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent.policy import canary_bucket, canary_buckets, in_canary


def _spec(salt: str, endpoint_id: str) -> int:
    """The rule as written in `in_canary`'s docstring, computed here independently."""
    digest = hashlib.sha256(f"{salt}:{endpoint_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def test_canary_bucket_keeps_its_published_values() -> None:
    """Cohorts must not move between releases: agents of two versions share one rollout."""
    assert canary_bucket("salt", "ep_000001") == 4012
    assert canary_bucket("sim-1-v2", "sim00000000") == 5078
    assert canary_bucket("sim-1-v2", "sim00999999") == 3007
    assert canary_bucket("é", "ü-ep") == 1840  # UTF-8, salt and id alike


@given(
    salt=st.text(max_size=12),
    ids=st.lists(st.text(max_size=20), max_size=40),
)
def test_canary_buckets_equal_the_rule_row_by_row(salt: str, ids: list[str]) -> None:
    got = canary_buckets(salt, ids)
    assert got.dtype == np.int16 and got.shape == (len(ids),)
    assert got.tolist() == [_spec(salt, e) for e in ids]
    assert got.tolist() == [canary_bucket(salt, e) for e in ids]
    assert [in_canary(salt, e, 37.5) for e in ids] == (got < 3750).tolist()


def test_canary_buckets_of_a_generator_and_of_nothing() -> None:
    ids = [f"sim{i:08d}" for i in range(1_000)]
    assert canary_buckets("s", (e for e in ids)).tolist() == [_spec("s", e) for e in ids]
    assert canary_buckets("s", []).shape == (0,)
