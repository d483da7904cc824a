"""The evidence totals: the org arms added field by field, in order, as they always were."""

from __future__ import annotations

from dataclasses import asdict

from hypothesis import given
from hypothesis import strategies as st

from backend.rollout.core import ArmCounts
from backend.rollout.service import _sum

_counts = st.integers(min_value=0, max_value=10**9)
_arms = st.builds(
    ArmCounts,
    endpoints=_counts,
    endpoint_days=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    alerts=_counts,
    self_test_failures=_counts,
    model_errors=_counts,
    breaker_trips=_counts,
)


def _reference(arms: list[ArmCounts]) -> ArmCounts:
    """The fold as first written: each arm's fields added to the running total's, in order."""
    out = ArmCounts()
    for a in arms:
        pairs = zip(asdict(out).values(), asdict(a).values(), strict=True)
        out = ArmCounts(*(x + y for x, y in pairs))
    return out


@given(st.lists(_arms, max_size=30))
def test_sum_of_arms_equals_the_in_order_field_wise_fold_bit_for_bit(arms: list[ArmCounts]) -> None:
    got = _sum(iter(arms))
    want = _reference(arms)
    assert got == want
    assert [type(v) for v in asdict(got).values()] == [type(v) for v in asdict(want).values()]
    assert got.endpoint_days.hex() == want.endpoint_days.hex()


def test_sum_of_no_arms_is_the_empty_arm() -> None:
    assert _sum([]) == ArmCounts()
    assert _sum([ArmCounts(3, 0.1, 1), ArmCounts(2, 0.2)]) == ArmCounts(5, 0.1 + 0.2, 1)
