"""The names `fleet_sim.link` re-exports (for type checkers and `agent.reexport`)."""

from .fold import (
    FOLD_CHUNK_EVENTS as FOLD_CHUNK_EVENTS,
    EventFolder as EventFolder,
    FoldedRows as FoldedRows,
)
from .fold_writer import (
    PROCESS_MIN_ENDPOINTS as PROCESS_MIN_ENDPOINTS,
    SIM_STORE_SYNCHRONOUS as SIM_STORE_SYNCHRONOUS,
    STORE_BUSY_TIMEOUT_MS as STORE_BUSY_TIMEOUT_MS,
    FoldWriter as FoldWriter,
    InlineFoldWriter as InlineFoldWriter,
    ProcessFoldWriter as ProcessFoldWriter,
    fold_writer_for as fold_writer_for,
    writes_in_a_process as writes_in_a_process,
)
from .http import (
    MAX_ENDPOINTS as MAX_ENDPOINTS,
    HTTPLink as HTTPLink,
    RemoteBackend as RemoteBackend,
)
from .in_process import (
    InProcessLink as InProcessLink,
)
