"""The agent's one backoff formula, and the two waits that must take their delay from it."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import httpx
import pytest
import stamina

from agent.decision import Reason, Verdict
from agent.telemetry import SenderConfig, Spool, TelemetryEvent, TelemetrySender
from agent.update.backoff import jittered_backoff_s
from agent.update.push import PushConfig, backoff_s

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("failures", "cap"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (10**6, 8.0)]
)
def test_backoff_draws_between_half_and_all_of_a_doubling_cap(failures, cap):
    rng = random.Random(failures)
    draws = [jittered_backoff_s(failures, initial_s=1.0, max_s=8.0, rng=rng) for _ in range(400)]
    assert all(cap / 2 <= d <= cap for d in draws)
    # jitter, not a fixed delay: both ends of [cap/2, cap] are reached (seeded, so exact)
    assert min(draws) < cap * 0.55 and max(draws) > cap * 0.95


def test_backoff_refuses_bounds_out_of_order():
    with pytest.raises(ValueError, match="initial_s"):
        jittered_backoff_s(1, initial_s=2.0, max_s=1.0, rng=random.Random(0))
    with pytest.raises(ValueError, match="initial_s"):
        jittered_backoff_s(1, initial_s=0.0, max_s=1.0, rng=random.Random(0))


def test_push_reconnect_waits_by_the_shared_formula():
    config = PushConfig(min_backoff_s=2.0, max_backoff_s=30.0)
    for failures in range(1, 8):
        mine, shared = random.Random(failures), random.Random(failures)
        assert backoff_s(failures, config, mine) == jittered_backoff_s(
            failures, initial_s=2.0, max_s=30.0, rng=shared
        )


def test_sender_waits_between_failed_rounds_by_the_shared_formula(tmp_path: Path):
    attempts: list[httpx.Request] = []

    def down(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        return httpx.Response(503)

    config = SenderConfig(round_backoff_initial_s=30.0, round_backoff_max_s=900.0)
    sender = TelemetrySender(
        httpx.Client(transport=httpx.MockTransport(down)),
        "http://backend",
        "tok",
        Spool(tmp_path / "spool", max_bytes=1 << 20),
        config,
        random.Random(7),
    )
    expected_rng = random.Random(7)
    now = NOW
    with stamina.set_testing(True, attempts=2):
        for failures in range(1, 7):
            _put_one(sender)
            report = sender.flush(now)
            assert report.error is not None and report.sent == 0, report
            wait = jittered_backoff_s(failures, initial_s=30.0, max_s=900.0, rng=expected_rng)
            due = now + dt.timedelta(seconds=wait)
            # exactly the shared formula's wait: not due a millisecond early, due on time
            assert not sender.is_due(due - dt.timedelta(milliseconds=1))
            assert sender.is_due(due)
            now = due
    assert attempts, "the fault (503) landed: the sender really tried"


def _put_one(sender: TelemetrySender) -> None:
    if sender.spool.pending():
        return
    sender.spool.put(
        [
            TelemetryEvent(
                "org_1", "ep_1", "ab" * 32, 2, 0.75, Verdict.BLOCK, Reason.SCORE_BLOCK,
                TelemetryEvent.ms(NOW), "static-v1", None, None, None, None,
            )
        ]
    )  # fmt: skip
