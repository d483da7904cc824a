"""The one adoption rule and the one spool drop rule, as the daemon and the simulator use them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.telemetry.spool import keep_newest
from agent.update.adoption import adopt

# (policy, model, offered policy, offered model, signed, self-test ok) ->
# (model after, install, refused unsigned, refused self-test, breaker reset)
RULES = [
    ((1, 1, 1, 1, True, True), (1, False, False, False, False)),  # nothing new
    ((1, 1, 2, 1, True, True), (1, False, False, False, True)),  # new policy: reset
    ((1, 1, 1, 2, True, True), (2, True, False, False, True)),  # new model installed: reset
    ((1, 1, 2, 2, False, True), (1, False, True, False, True)),  # unsigned: refused
    ((1, 1, 1, 2, False, True), (1, False, True, False, False)),  # refused, nothing changed
    ((1, 1, 1, 2, True, False), (1, False, False, True, False)),  # self-test fails: refused
    ((1, 1, 1, 2, False, False), (1, False, True, False, False)),  # unsigned comes first
    ((1, 3, 2, 0, True, True), (3, False, False, False, True)),  # no assignment: keep model
]


@pytest.mark.parametrize(("given_", "expected"), RULES)
def test_adoption_rule_table(given_: tuple, expected: tuple) -> None:
    pol, mdl, opol, omdl, signed, ok = given_
    got = adopt(
        policy=pol,
        model=mdl,
        offered_policy=opol,
        offered_model=omdl,
        signed=signed,
        self_test_ok=ok,
    )
    assert int(got.policy) == opol
    actual = (
        int(got.model),
        bool(got.install),
        bool(got.refused_unsigned),
        bool(got.refused_self_test),
        bool(got.reset_breaker),
    )
    assert actual == expected


@given(st.lists(st.tuples(*[st.integers(0, 3)] * 4, st.booleans(), st.booleans()), max_size=30))
def test_adoption_over_arrays_equals_adoption_one_by_one(rows: list[tuple]) -> None:
    cols = [np.asarray([r[i] for r in rows], dtype=bool if i >= 4 else np.int64) for i in range(6)]
    many = adopt(
        policy=cols[0],
        model=cols[1],
        offered_policy=cols[2],
        offered_model=cols[3],
        signed=cols[4],
        self_test_ok=cols[5],
    )
    for i, (pol, mdl, opol, omdl, signed, ok) in enumerate(rows):
        one = adopt(
            policy=pol,
            model=mdl,
            offered_policy=opol,
            offered_model=omdl,
            signed=signed,
            self_test_ok=ok,
        )
        assert int(one.model) == many.model[i]
        assert bool(one.install) == many.install[i]
        assert bool(one.reset_breaker) == many.reset_breaker[i]
        assert bool(one.refused_self_test) == many.refused_self_test[i]


def test_spool_rule_keeps_the_newest_that_fit() -> None:
    assert keep_newest([1, 1, 1, 1, 1], 3).tolist() == [False, False, True, True, True]
    assert keep_newest([5, 1, 1, 2], 3).tolist() == [False, False, True, True]
    assert keep_newest([4], 3).tolist() == [False]
    assert keep_newest([], 3).tolist() == []


def test_spool_rule_is_per_group_and_by_order() -> None:
    keep = keep_newest(
        np.ones(6), 2, group=[0, 1, 0, 1, 0, 0], order=[1.0, 5.0, 3.0, 2.0, 2.0, 0.0]
    )
    assert keep.tolist() == [False, True, True, True, True, False]


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(0, 200))
def test_spool_rule_drops_a_prefix_and_the_rest_fits(sizes: list[int], room: int) -> None:
    keep = keep_newest(sizes, room)
    n_drop = int((~keep).sum())
    assert keep.tolist() == [False] * n_drop + [True] * (len(sizes) - n_drop)  # oldest first
    assert sum(sizes[n_drop:]) <= room
    if n_drop:
        assert sum(sizes[n_drop - 1 :]) > room  # nothing more could have stayed
