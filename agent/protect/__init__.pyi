"""The names `agent.protect` re-exports (for type checkers and `agent.reexport`)."""

from .protector import (
    ProtectConfig as ProtectConfig,
    ProtectReport as ProtectReport,
    ProtectStats as ProtectStats,
    Protector as Protector,
    ReportKind as ReportKind,
)
from .quarantine import (
    PHASES as PHASES,
    Quarantine as Quarantine,
    QuarantineRecord as QuarantineRecord,
)
from .realtime import (
    POLL_S as POLL_S,
    ProtectSource as ProtectSource,
    RealtimeOptions as RealtimeOptions,
    protection_note as protection_note,
    realtime_sources as realtime_sources,
)
from .scan import (
    MAX_FILE_BYTES as MAX_FILE_BYTES,
    FileStatus as FileStatus,
    ScanResult as ScanResult,
    ScanSummary as ScanSummary,
    Scanner as Scanner,
    iter_files as iter_files,
    read_sample as read_sample,
)
from .watch import (
    WatchStats as WatchStats,
    Watcher as Watcher,
)
