"""`backend.server.api`: the documented wire models agree with the agent's side of the wire.

`POST /v1/telemetry` is validated by `agent.telemetry.columns.decode_columns` (for speed), so the
`TelemetryBatchDocument` in `/openapi.json` is documentation; these tests hold it to the agent:
every batch the agent encodes fits it, and at each bound the model states, the model and the
reference decoder accept and refuse the same documents. And every check-in answer the document
allows is one the agent reads, field for field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.decision import Mode, Reason, Verdict
from agent.features import SCHEMA
from agent.telemetry import parse_checkin
from agent.telemetry.wire import (
    Action,
    HealthCount,
    TelemetryEvent,
    decode_batch,
    encode_batch,
)
from backend.server import api
from backend.server.api import TelemetryBatchDocument

_MIN_MS = TelemetryEvent.ms(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
_MAX_MS = TelemetryEvent.ms(dt.datetime(2100, 1, 1, tzinfo=dt.UTC))

events = st.builds(
    TelemetryEvent,
    org_id=st.just("org_1"),
    endpoint_id=st.just("ep_1"),
    sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    model_version=st.integers(0, 2**31 - 1),
    score=st.none() | st.floats(0.0, 1.0),
    verdict=st.sampled_from(Verdict),
    reason=st.sampled_from(Reason),
    observed_at_ms=st.integers(_MIN_MS, _MAX_MS - 1),
    feature_schema=st.none() | st.just(SCHEMA.name),
    features=st.none(),
    action=st.sampled_from(Action),
)


def _doc(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(events, min_size=1, max_size=5),
    dropped=st.integers(0, 2**40),
    health=st.lists(
        st.builds(
            HealthCount,
            model_version=st.integers(0, 2**31 - 1),
            observed_at_ms=st.integers(_MIN_MS, _MAX_MS - 1),
            self_test_failures=st.integers(0, 2**31 - 1),
        ),
        max_size=3,
    ),
)
def test_every_batch_the_agent_encodes_fits_the_documented_model(
    batch: list[TelemetryEvent], dropped: int, health: list[HealthCount]
) -> None:
    raw = encode_batch(batch, dropped_events=dropped, health=health)
    decode_batch(raw)  # the agent's own decoder takes it
    doc = TelemetryBatchDocument.model_validate(_doc(raw))
    assert len(doc.events) == len(batch) and len(doc.health) == len(health)


def _valid() -> dict[str, Any]:
    event = TelemetryEvent(
        "org_1", "ep_1", "ab" * 32, 3, 0.5, Verdict.BLOCK, Reason.SCORE_BLOCK, _MIN_MS
    )
    return dict(_doc(encode_batch([event], key="key-0001")))


def _set_event_field(i: int, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        doc["events"][0][i] = value

    return change


def _set(field: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        doc[field] = value

    return change


# (what is changed, whether the agent's decoder and the model accept it)
BOUNDS = [
    ("observed_at_ms at 2000-01-01", _set_event_field(5, _MIN_MS), True),
    ("observed_at_ms before 2000", _set_event_field(5, _MIN_MS - 1), False),
    ("observed_at_ms at 2100-01-01", _set_event_field(5, _MAX_MS), False),
    ("model_version 2^31 - 1", _set_event_field(1, 2**31 - 1), True),
    ("model_version 2^31", _set_event_field(1, 2**31), False),
    ("score above 1", _set_event_field(2, 1.5), False),
    ("sha256 of 31 bytes", _set_event_field(0, b"x" * 31), False),
    ("unknown verdict", _set_event_field(3, "maybe"), False),
    ("unknown reason", _set_event_field(4, "hunch"), False),
    ("key of 7 characters", _set("key", "k" * 7), False),
    ("key of 128 characters", _set("key", "k" * 128), True),
    ("org with a slash", _set("org", "a/b"), False),
    ("64 health rows", _set("health", [[1, _MIN_MS, 0, 0, 0]] * 64), True),
    ("65 health rows", _set("health", [[1, _MIN_MS, 0, 0, 0]] * 65), False),
    ("format version 2", _set("v", 2), False),
    ("no events", _set("events", []), False),
]


@pytest.mark.parametrize(
    ("change", "accepted"), [b[1:] for b in BOUNDS], ids=[b[0] for b in BOUNDS]
)
def test_model_and_agent_decoder_agree_at_each_documented_bound(
    change: Any, accepted: bool
) -> None:
    doc = _valid()
    doc["events"] = [list(e) for e in doc["events"]]
    change(doc)
    raw = bytes(msgpack.packb(doc, use_bin_type=True))
    try:
        decode_batch(raw)
        decoder_accepts = True
    except ValueError:
        decoder_accepts = False
    try:
        TelemetryBatchDocument.model_validate(_doc(raw))
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert (decoder_accepts, model_accepts) == (accepted, accepted)


_VERSIONS = st.none() | st.integers(1, 2**31 - 1)


@settings(max_examples=60, deadline=None)
@given(
    answer=st.builds(
        api.Checkin,
        org_id=st.text(min_size=1, max_size=20),
        endpoint_id=st.none() | st.text(min_size=1, max_size=20),
        policy_version=st.integers(0, 2**31 - 1),
        mode=st.sampled_from(Mode),
        model_version=_VERSIONS,
        shadow_model_version=_VERSIONS,
        tuf_url=st.just("/tuf/"),
    )
)
def test_the_agent_reads_every_documented_checkin_answer(answer: api.Checkin) -> None:
    response = httpx.Response(200, content=api.CHECKIN.dump(answer))
    info = parse_checkin(response)
    assert (info.policy_version, info.mode) == (answer.policy_version, answer.mode.value)
    assert info.model_version == answer.model_version
    assert info.shadow_model_version == answer.shadow_model_version
