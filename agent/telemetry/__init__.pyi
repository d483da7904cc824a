"""The names `agent.telemetry` re-exports (for type checkers and `agent.reexport`)."""

from .client import (
    ActionReport as ActionReport,
    CheckinInfo as CheckinInfo,
    Credentials as Credentials,
    TelemetryPipe as TelemetryPipe,
    check_in as check_in,
    check_in_if_changed as check_in_if_changed,
    checkin_request as checkin_request,
    enroll as enroll,
    load_credentials as load_credentials,
    parse_checkin as parse_checkin,
    save_credentials as save_credentials,
)
from .columns import (
    TelemetryColumns as TelemetryColumns,
    decode_columns as decode_columns,
)
from .sender import (
    MAX_ANSWER_BYTES as MAX_ANSWER_BYTES,
    FlushReport as FlushReport,
    SenderConfig as SenderConfig,
    TelemetrySender as TelemetrySender,
    send_bounded as send_bounded,
)
from .spool import (
    Spool as Spool,
)
from .wire import (
    CONTENT_TYPE as CONTENT_TYPE,
    FORMAT_VERSION as FORMAT_VERSION,
    HEALTH_COUNTERS as HEALTH_COUNTERS,
    MAX_EVENTS_PER_BATCH as MAX_EVENTS_PER_BATCH,
    Action as Action,
    HealthCount as HealthCount,
    TelemetryBatch as TelemetryBatch,
    TelemetryEvent as TelemetryEvent,
    decode_batch as decode_batch,
    encode_batch as encode_batch,
    make_batches as make_batches,
)
