"""`/openapi.json` states the rules the server checks, taken from the same source as the check.

An outside probe (schemathesis `--checks all`) found schema-valid bodies refused with 422: the
sha256 pattern, the name length, `max_uses >= 1`, `tick_s` (a timedelta of 5e-324 s is zero),
the label enum and the ring's delay were checked by the server and absent from the document.
Each is asserted here in the document a live server serves, and the patterns are held to the
checks they come from.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backend import validation
from backend.analysis.labels import LabelSource, LabelValue
from backend.errors import BatchInvalidError
from backend.server import api
from backend.validation import NAME_PATTERN, SHA256_PATTERN, check_org_name
from tests.backend.conftest import LiveServer


@pytest.fixture
def document(live_server: LiveServer) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(live_server.url + "/openapi.json").json()
    return doc


def _prop(doc: dict[str, Any], model: str, field: str) -> dict[str, Any]:
    prop: dict[str, Any] = doc["components"]["schemas"][model]["properties"][field]
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    return {**prop, **branches[0]}


def test_document_states_the_value_rules_the_server_checks(document: dict[str, Any]) -> None:
    name = _prop(document, "OrgBody", "name")
    assert (name["minLength"], name["maxLength"], name["pattern"]) == (1, 200, NAME_PATTERN)
    assert _prop(document, "EntryBody", "sha256")["pattern"] == SHA256_PATTERN
    assert _prop(document, "EntryBody", "reason")["maxLength"] == 1000
    uses = _prop(document, "EnrollTokenBody", "max_uses")
    assert (uses["type"], uses["minimum"], uses["maximum"]) == ("integer", 1, 1_000_000_000)
    assert _prop(document, "StartBody", "tick_s")["minimum"] == 0.001
    assert _prop(document, "StartBody", "stages")["uniqueItems"] is True
    assert _prop(document, "LabelItem", "sha256")["pattern"] == SHA256_PATTERN
    label = _prop(document, "LabelItem", "label")["enum"]
    assert set(label) == {v.value for v in LabelValue} | {"1", "0"}
    assert set(_prop(document, "LabelItem", "source")["enum"]) == {s.value for s in LabelSource}
    assert _prop(document, "PromptRing", "delay_h")["maximum"] == 0
    assert _prop(document, "DelayedRing", "ring")["const"] == "delayed"
    remove = document["paths"]["/v1/admin/{list}/{sha256}"]["delete"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in remove}
    assert by_name["sha256"]["pattern"] == SHA256_PATTERN
    assert by_name["list"]["enum"] == ["allowlist", "blocklist"]


def _ranges(pred: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        if pred(chr(code)):
            if out and out[-1][1] == code - 1:
                out[-1] = (out[-1][0], code)
            else:
                out.append((code, code))
    return out


def test_name_pattern_ranges_are_the_running_pythons_unicode_categories() -> None:
    def control(c: str) -> bool:
        return unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")

    assert _ranges(control) == list(validation._CONTROL_RANGES)
    assert _ranges(lambda c: c.isspace() and not control(c)) == list(validation._SPACE_RANGES)


_NAMES = st.text(
    st.sampled_from("a Z9\t\n\x00\x7f\u00a0\u200b\u2028\u202e\u3000\ufeff\U000e0001\U0001f600")
    | st.characters(),
    max_size=210,
)


@settings(max_examples=400, deadline=None)
@given(name=_NAMES)
def test_the_schema_admits_exactly_the_names_the_check_accepts(name: str) -> None:
    try:
        check_org_name(name)
        accepted = True
    except BatchInvalidError:
        accepted = False
    assert accepted == (1 <= len(name) <= 200 and re.fullmatch(NAME_PATTERN, name) is not None)
    try:
        api.OrgBody.model_validate({"name": name})
        assert accepted
    except ValidationError as exc:  # the check's refusal, located at the field
        assert not accepted
        assert exc.errors()[0]["loc"] == ("name",)


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ('{"max_uses": 3}', True),
        ('{"max_uses": 3.0}', True),  # an integer in JSON Schema
        ('{"max_uses": "3"}', False),
        ('{"rotate": 0}', False),
        ('{"expires_at": 0}', False),
        ('{"max_uses": 0}', False),
    ],
)
def test_request_bodies_take_only_the_json_types_the_schema_names(body: str, ok: bool) -> None:
    try:
        api.EnrollTokenBody.model_validate_json(body)
        assert ok, body
    except ValidationError:
        assert not ok, body


def test_server_refuses_a_tick_of_zero_length_with_422_and_takes_stages_in_order(
    live_server: LiveServer,
) -> None:
    url, h = live_server.url + "/v1/admin/rollout", live_server.admin()
    r = httpx.post(url, json={"to_version": 2, "tick_s": 5e-324}, headers=h)
    assert r.status_code == 422 and "tick_s" in r.json()["detail"]
    r = httpx.post(url, json={"to_version": 2, "stages": [5, 5]}, headers=h)
    assert r.status_code == 422 and "distinct" in r.json()["detail"]
    from backend.rollout.api import StartBody

    assert StartBody.model_validate({"to_version": 2, "stages": [50, 5]}).stages == [5.0, 50.0]
