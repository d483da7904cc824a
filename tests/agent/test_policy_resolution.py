"""What a policy resolution depends on: `resolution_key` and `list_span` against the rule itself.

Callers that resolve one document for many orgs and instants (the fleet simulator) resolve
once per `resolution_key` and build a decision context once per `list_span`; these tests hold
both to `resolve_policy` and `context_for` row by row on random documents.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bundle import Thresholds
from agent.engine import context_for
from agent.policy import (
    PolicyDocumentModel,
    list_span,
    resolution_key,
    resolve_policy,
)

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
ORGS = ("org-a", "org-b", "org-c", "org-d", "org-e")
SHAS = ("aa" * 32, "bb" * 32, "cc" * 32)
THRESHOLDS = Thresholds(block=0.8, detect=0.5)
MINUTES = range(-90, 12 * 60 + 90, 5)  # the instants each example checks, around every edge


def _at(minute: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute)


# list entries start and expire on the hour, so entries share edges and some never apply
_entry = st.builds(
    lambda sha, start, length: {
        "sha256": sha,
        "created_at": _at(60 * start),
        "expires_at": None if length is None else _at(60 * (start + length)),
    },
    st.sampled_from(SHAS),
    st.integers(0, 12),
    st.none() | st.integers(-1, 6),
)
_settings = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["enforce", "detect_only", "off"]),
        "model_version": st.integers(1, 3),
        "allowlist": st.lists(_entry, max_size=4),
        "blocklist": st.lists(_entry, max_size=3),
        "thresholds": st.fixed_dictionaries(
            {}, optional={"block": st.sampled_from([0.6, 0.9]), "detect": st.just(0.4)}
        ),
    },
)
_documents = st.builds(
    lambda default, orgs: PolicyDocumentModel.model_validate(
        {"version": 3, "issued_at": T0, "default": default, "orgs": orgs}
    ),
    _settings,
    st.dictionaries(st.sampled_from(ORGS[:3]), _settings, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(doc=_documents)
def test_orgs_with_equal_resolution_keys_resolve_to_equal_policies_and_contexts(
    doc: PolicyDocumentModel,
) -> None:
    keys = {org: resolution_key(doc, org) for org in ORGS}
    assert keys["org-e"] is None  # an org the document never names obeys the default alone
    for a in ORGS:
        for b in ORGS:
            if keys[a] != keys[b]:
                continue
            pa, pb = resolve_policy(doc, a), resolve_policy(doc, b)
            assert pa == pb, (a, b)
            for m in MINUTES[::6]:
                assert context_for(pa, THRESHOLDS, _at(m)) == context_for(pb, THRESHOLDS, _at(m))


@settings(max_examples=200, deadline=None)
@given(doc=_documents, org=st.sampled_from(ORGS), now_min=st.sampled_from(MINUTES))
def test_the_decision_context_is_the_same_throughout_a_list_span(
    doc: PolicyDocumentModel, org: str, now_min: int
) -> None:
    policy = resolve_policy(doc, org)
    now = _at(now_min)
    since, until = list_span(policy, now)
    assert (since is None or since <= now) and (until is None or now < until)
    at_now = context_for(policy, THRESHOLDS, now)
    for m in MINUTES:
        t = _at(m)
        if (since is None or since <= t) and (until is None or t < until):
            assert context_for(policy, THRESHOLDS, t) == at_now, (t, since, until)


@settings(max_examples=200, deadline=None)
@given(doc=_documents, org=st.sampled_from(ORGS), now_min=st.sampled_from(MINUTES))
def test_a_list_span_ends_where_some_entry_starts_or_expires(
    doc: PolicyDocumentModel, org: str, now_min: int
) -> None:
    # the span is as wide as it can be: a memo keyed by it misses only where the rule changes
    policy = resolve_policy(doc, org)
    entries = (*policy.allowlist, *policy.blocklist)
    now = _at(now_min)
    since, until = list_span(policy, now)

    def active(t: dt.datetime) -> list[bool]:
        return [e.is_active(t) for e in entries]

    if until is not None:
        assert active(until) != active(now)
    if since is not None:
        assert active(since - dt.timedelta(microseconds=1)) != active(now)


def test_without_a_policy_the_span_is_open_and_a_named_org_is_its_own_key() -> None:
    doc: Any = PolicyDocumentModel.model_validate(
        {"version": 1, "issued_at": T0, "default": {}, "orgs": {"org-a": {"mode": "off"}}}
    )
    assert list_span(None, T0) == (None, None)
    assert list_span(resolve_policy(doc, "org-b"), T0) == (None, None)
    assert resolution_key(doc, "org-a") == "org-a"
    assert resolution_key(doc, "org-b") is None
