"""`decode_columns` accepts, refuses and reads exactly what the reference `decode_batch` does."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decision import Reason, Verdict
from agent.features import VECTOR_LENGTH
from agent.telemetry import decode_batch
from agent.telemetry.columns import decode_columns

_GOOD_MS = 1_790_000_000_000
_VECTOR = b"\0" * (4 * VECTOR_LENGTH)

# values that break (or sometimes satisfy) each of the 11 fields of an event row
_ODD: list[object] = [
    None,
    True,
    -1,
    0,
    1,
    2**31,
    2**40,
    1.5,
    math.nan,
    math.inf,
    0.5,
    "allow",
    "block",
    "score_below",
    "static-v1",
    "nope",
    b"\x01" * 32,
    b"\x01" * 31,
    _VECTOR,
    b"",
    [],
    {"a": 1},
    _GOOD_MS,
    10,
]


@st.composite
def rows(draw: st.DrawFn) -> list[list[object]]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        shadow = draw(st.booleans())
        out.append(
            [
                bytes([i]) * 32,
                draw(st.integers(0, 5)),
                draw(st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0, 1]))),
                draw(st.sampled_from([v.value for v in Verdict])),
                draw(st.sampled_from([r.value for r in Reason])),
                _GOOD_MS + draw(st.integers(-(10**9), 10**9)),
                draw(st.sampled_from(["static-v1", None])),
                None,
                4 if shadow else None,
                0.25 if shadow else None,
                draw(st.sampled_from([v.value for v in Verdict])) if shadow else None,
            ]
        )
        if out[-1][6] is not None and draw(st.booleans()):
            out[-1][7] = _VECTOR
    for _ in range(draw(st.integers(0, 2))):  # break some fields
        row = draw(st.sampled_from(out))
        row[draw(st.integers(0, 10))] = draw(st.sampled_from(_ODD))
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.integers(0, n - 1))] = draw(st.sampled_from([[1, 2], "x", 3]))  # type: ignore[list-item]
    return out


def _doc(events: list[list[object]]) -> bytes:
    doc = {"v": 1, "key": "key-00000001", "org": "org_a", "endpoint": "ep_a", "events": events}
    return bytes(msgpack.packb(doc, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(events=rows())
def test_columns_accept_and_refuse_exactly_as_the_reference_decoder(
    events: list[list[object]],
) -> None:
    raw = _doc(events)
    try:
        ref = decode_batch(raw)
    except ValueError as exc:
        with pytest.raises(ValueError) as info:
            decode_columns(raw)
        assert str(info.value) == str(exc)
        return
    got = decode_columns(raw)
    assert got.to_events() == ref.events
    assert (got.key, got.org_id, got.endpoint_id) == (ref.key, ref.org_id, ref.endpoint_id)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (0, b"\x01" * 31, "sha256 must be 32 raw bytes"),
        (2, math.nan, "score must be a number in [0, 1]"),
        (3, "maybe", "unknown verdict or reason"),
        (5, 5, "observed_at_ms must be an integer"),
        (7, b"\0" * 8, "features must be"),
        (8, 4, "shadow model version and shadow verdict go together"),
    ],
)
def test_refusal_names_the_first_bad_event_and_field(
    field: int, value: object, reason: str
) -> None:
    good = [
        b"\x02" * 32,
        1,
        0.5,
        "allow",
        "score_below",
        _GOOD_MS,
        "static-v1",
        None,
        None,
        None,
        None,
    ]
    bad = list(good)
    bad[field] = value
    with pytest.raises(ValueError, match=r"^events\[2\]: ") as info:
        decode_columns(_doc([good, good, bad, bad]))
    assert reason in str(info.value)
