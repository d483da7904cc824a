"""The prediction's batch decisions and per-sample shortcuts equal the plain per-pair ones.

`backend.analysis.transition_report` (the core both engines share) turns the (org, sample)
pairs into decision cases (pairs equal in sample, scores and labels), decides each case once
per context through `decide_batch` (one `decide` per distinct kind), unscored cases once per
distinct sample, and takes the distinct samples from the bulk read when it has them. Here, on
random pairs, orgs, contexts, list memberships and missing scores, in org order and shuffled,
the flags it derives equal `agent.decision.decide` called pair by pair, whether or not the read
supplied the sample codes.
"""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decision import DENY_VERDICTS, DecisionContext, Mode, decide
from backend.analysis import transition_report
from backend.analysis.transition_columns import OrgSamplePairs
from backend.analysis.transition_report import OrgRows, PairScores, _alerts, _cases_of

_SHAS = [f"{i:064x}" for i in range(12)]
_Case = tuple[
    OrgSamplePairs,
    OrgSamplePairs,
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
    dict[str, DecisionContext],
]


@st.composite
def _cases(draw: st.DrawFn) -> _Case:
    n_orgs = draw(st.integers(1, 5))
    orgs = [f"org-{k}" for k in range(n_orgs)]
    keys = sorted(
        draw(
            st.sets(
                st.tuples(st.sampled_from(orgs), st.sampled_from(_SHAS)), min_size=1, max_size=40
            )
        )
    )
    seen = sorted({o for o, _ in keys})
    n = len(keys)
    grid = [0.0, 0.2, 0.5, 0.7, 0.9, 1.0]
    scores = np.asarray(draw(st.lists(st.sampled_from(grid), min_size=n, max_size=n)))
    scored = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    subset = st.frozensets(st.sampled_from(_SHAS), max_size=4)
    ctx_pool = [
        DecisionContext(
            block_threshold=draw(st.sampled_from(grid)),
            detect_threshold=draw(st.sampled_from([None, *grid])),
            mode=draw(st.sampled_from(list(Mode))),
            allowlist=draw(subset),
            blocklist=draw(subset),
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    contexts = {o: draw(st.sampled_from(ctx_pool)) for o in seen}
    org_ids = tuple(o for o, _ in keys)
    sha256s = tuple(s for _, s in keys)
    if draw(st.booleans()):  # pairs out of org order: the grouping's general path
        perm = draw(st.permutations(range(n)))
        keys = [keys[i] for i in perm]
        scores, scored = scores[perm], scored[perm]
    org_days = tuple((o, 1) for o in seen)
    counts = np.ones(n, dtype=np.int64)
    plain = OrgSamplePairs(org_ids, sha256s, counts, (), org_days)
    samples = tuple(sorted(set(sha256s), reverse=True))  # any table order will do
    index = np.asarray([samples.index(s) for s in sha256s], dtype=np.intp)
    coded = OrgSamplePairs(
        org_ids, sha256s, counts, (), org_days, samples=samples, sample_index=index
    )
    return plain, coded, scores, scored, contexts


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_batch_decisions_equal_decide_pair_by_pair(case: _Case) -> None:
    plain, coded, scores, scored, contexts = case
    want_alert, want_block = [], []
    for i, (org, sha) in enumerate(zip(plain.org_ids, plain.sha256s, strict=True)):
        v = decide(sha, float(scores[i]) if scored[i] else None, contexts[org]).verdict
        want_alert.append(v.is_alert)
        want_block.append(v in DENY_VERDICTS)
    for pairs in (plain, coded):
        by_org = OrgRows.of(pairs)
        no = np.zeros(len(scores), dtype=bool)
        cases = _cases_of(
            PairScores(scores, scored, scores, scored, None, no, no, 0), by_org.sample_index
        )
        assert len(cases.sample) <= len(scores)
        per = cases.scores
        alert, block = _alerts(pairs, cases, per.old, per.ok_old, contexts, by_org)
        assert alert.tolist() == want_alert
        assert block.tolist() == want_block


@settings(max_examples=80, deadline=None)
@given(_cases())
def test_supplied_sample_codes_name_the_same_samples_as_derived_ones(case: _Case) -> None:
    plain, coded, *_ = case
    a, b = OrgRows.of(plain), OrgRows.of(coded)
    assert [a.samples[j] for j in a.sample_index] == list(plain.sha256s)
    assert [b.samples[j] for j in b.sample_index] == list(plain.sha256s)
    assert a.index.tolist() == b.index.tolist() and a.starts.tolist() == b.starts.tolist()
    for by_org in (a, b):  # each org's rows hold exactly its pairs, in order or not
        for k, (org, _) in enumerate(plain.org_days):
            assert [plain.org_ids[i] for i in by_org.rows([k]).tolist()] == [org] * int(
                by_org.starts[k + 1] - by_org.starts[k]
            )
    in_order = list(plain.org_ids) == sorted(plain.org_ids)
    assert (a.order is None) == in_order


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=8),
    st.sampled_from([np.int32, np.int64]),
    st.booleans(),
    st.integers(1, 9),
    st.data(),
)
def test_per_org_sums_equal_plain_sums_in_blocks_and_near_overflow(
    sizes: list[int], dtype: type[np.integer], big: bool, block: int, data: st.DataObject
) -> None:
    """`OrgRows.sums` (org ranges summed a block of orgs at a time, in int64 whatever the
    counts' type) gives each org's exact sum of counts over the mask, in org order or not."""
    org_days = tuple((f"org-{k}", 1) for k in range(len(sizes)))
    org_ids = tuple(o for (o, _), size in zip(org_days, sizes, strict=True) for _ in range(size))
    n = len(org_ids)
    hi = np.iinfo(np.int32).max // 2 if big else 50  # big: an org's sum overflows int32
    counts = np.asarray(data.draw(st.lists(st.integers(0, hi), min_size=n, max_size=n)), dtype)
    mask = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if data.draw(st.booleans()):  # out of org order: the bincount path
        perm = data.draw(st.permutations(range(n)))
        org_ids, counts, mask = tuple(org_ids[i] for i in perm), counts[perm], mask[perm]
    pairs = OrgSamplePairs(org_ids, ("0" * 64,) * n, counts, (), org_days)
    want = [
        sum(int(c) for o2, c, m in zip(org_ids, counts, mask, strict=True) if o2 == o and m)
        for o, _ in org_days
    ]
    with patch.object(transition_report, "_SUM_BLOCK", block):
        assert OrgRows.of(pairs).sums(mask, counts) == want
