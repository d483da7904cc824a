"""Telemetry: the event wire format, the on-disk spool, sending with retry, and enrollment.

One job a module: `wire` (the bytes, imported by the backend), `spool` (bounded, crash-safe,
oldest dropped first), `sender` (retry, backoff, jitter), `client` (enrollment, check-in,
credentials, and the daemon's `TelemetryPipe`). The public names are re-exported here, lazily
(`agent.reexport`): the backend imports `wire` and must not load httpx with `client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from agent.telemetry.client import (
        ActionReport,
        CheckinInfo,
        Credentials,
        TelemetryPipe,
        check_in,
        check_in_if_changed,
        checkin_request,
        enroll,
        load_credentials,
        parse_checkin,
        save_credentials,
    )
    from agent.telemetry.sender import (
        MAX_ANSWER_BYTES,
        FlushReport,
        SenderConfig,
        TelemetrySender,
        send_bounded,
    )
    from agent.telemetry.spool import Spool
    from agent.telemetry.wire import (
        CONTENT_TYPE,
        FORMAT_VERSION,
        HEALTH_COUNTERS,
        MAX_EVENTS_PER_BATCH,
        Action,
        HealthCount,
        TelemetryBatch,
        TelemetryEvent,
        decode_batch,
        encode_batch,
        make_batches,
    )

__all__ = [
    "CONTENT_TYPE",
    "FORMAT_VERSION",
    "HEALTH_COUNTERS",
    "MAX_ANSWER_BYTES",
    "MAX_EVENTS_PER_BATCH",
    "Action",
    "ActionReport",
    "CheckinInfo",
    "Credentials",
    "FlushReport",
    "HealthCount",
    "SenderConfig",
    "Spool",
    "TelemetryBatch",
    "TelemetryEvent",
    "TelemetryPipe",
    "TelemetrySender",
    "check_in",
    "check_in_if_changed",
    "checkin_request",
    "decode_batch",
    "encode_batch",
    "enroll",
    "load_credentials",
    "make_batches",
    "parse_checkin",
    "save_credentials",
    "send_bounded",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "agent.telemetry.client": [
            "ActionReport",
            "CheckinInfo",
            "Credentials",
            "TelemetryPipe",
            "check_in",
            "check_in_if_changed",
            "checkin_request",
            "enroll",
            "load_credentials",
            "parse_checkin",
            "save_credentials",
        ],
        "agent.telemetry.sender": [
            "MAX_ANSWER_BYTES",
            "FlushReport",
            "SenderConfig",
            "TelemetrySender",
            "send_bounded",
        ],
        "agent.telemetry.spool": ["Spool"],
        "agent.telemetry.wire": [
            "CONTENT_TYPE",
            "FORMAT_VERSION",
            "HEALTH_COUNTERS",
            "MAX_EVENTS_PER_BATCH",
            "Action",
            "HealthCount",
            "TelemetryBatch",
            "TelemetryEvent",
            "decode_batch",
            "encode_batch",
            "make_batches",
        ],
    },
)
