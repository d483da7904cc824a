"""Health counters in telemetry: optional on the wire, counted from the daemon's notices."""

from __future__ import annotations

import datetime as dt

import msgpack
import pytest

from agent.daemon import Notice, NoticeKind
from agent.decision import Reason, Verdict
from agent.telemetry import (
    Credentials,
    HealthCount,
    Spool,
    TelemetryEvent,
    TelemetryPipe,
    TelemetrySender,
    decode_batch,
    encode_batch,
)
from agent.telemetry.columns import decode_columns

NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def _event(version: int = 1) -> TelemetryEvent:
    return TelemetryEvent(
        "org_a", "ep_a", "ab" * 32, version, 0.2, Verdict.ALLOW, Reason.SCORE_BELOW,
        TelemetryEvent.ms(NOW), "static-v1", None,
    )  # fmt: skip


def test_health_round_trips_through_both_decoders():
    health = (HealthCount(3, TelemetryEvent.ms(NOW), self_test_failures=2, breaker_trips=1),)
    raw = encode_batch([_event()], key="k" * 16, health=health)
    assert decode_batch(raw).health == health
    assert decode_columns(raw).health == health


def test_a_batch_without_health_is_byte_for_byte_the_old_format():
    raw = encode_batch([_event()], key="k" * 16)
    assert "health" not in msgpack.unpackb(raw)
    assert decode_batch(raw).health == () and decode_columns(raw).health == ()


@pytest.mark.parametrize("bad", [[[3, 0, 1, 0, 0]], [[3, TelemetryEvent.ms(NOW), -1, 0, 0]],
                                 [[3, TelemetryEvent.ms(NOW), 1, 0]], "x"])  # fmt: skip
def test_rejects_malformed_health(bad):
    doc = msgpack.unpackb(encode_batch([_event()], key="k" * 16))
    doc["health"] = bad
    raw = msgpack.packb(doc, use_bin_type=True)
    with pytest.raises(ValueError, match="health"):
        decode_batch(raw)
    with pytest.raises(ValueError, match="health"):
        decode_columns(raw)


def test_pipe_counts_health_notices_into_the_next_batch(tmp_path):
    import httpx

    spool = Spool(tmp_path / "spool")
    with httpx.Client() as client:
        sender = TelemetrySender(client, "http://127.0.0.1:9", "t", spool)
        pipe = TelemetryPipe(sender, Credentials("http://127.0.0.1:9", "org_a", "ep_a", "t"))
        pipe.notice(Notice(NOW, NoticeKind.SELF_TEST_FAILED, "models/v3/x: bad", 3))
        pipe.notice(Notice(NOW, NoticeKind.BREAKER_TRIPPED, "storm", 2))
        pipe.notice(Notice(NOW, NoticeKind.BREAKER_TRIPPED, "storm", 2))
        pipe.notice(Notice(NOW, NoticeKind.UPDATED, "model v2", 2))  # not health
        pipe.notice(Notice(NOW, NoticeKind.FAIL_OPEN, "no model"))  # no version: not counted
        # what flush() spools before sending (the send itself needs a server)
        pipe.spool_put([_event(2)], pipe._take_health())
        assert pipe._take_health() == ()  # counted once
    (path,) = spool.pending()
    got = {h.model_version: h for h in decode_batch(path.read_bytes()).health}
    assert got[3].self_test_failures == 1 and got[2].breaker_trips == 2
    assert sum(h.model_errors for h in got.values()) == 0
