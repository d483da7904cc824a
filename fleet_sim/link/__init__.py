"""How the simulated fleet reaches the backend, and what it writes there.

The fleet's side of the backend in one room: the in-process link that owns the run's real store
(`in_process.InProcessLink`: operator actions through `backend.admin`, telemetry into the
aggregates), the HTTP link that also talks to a running server (`http.HTTPLink`), the cohort
mode's fold of delivered events into aggregate rows (`fold`) and the writer that puts those
rows into the store, inline or in a process of its own (`fold_writer`). Names are re-exported
lazily (`agent.reexport`), so the fold writer process (`python -m fleet_sim.link.fold_writer`)
loads neither httpx nor pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from fleet_sim.link.fold import FOLD_CHUNK_EVENTS, EventFolder, FoldedRows
    from fleet_sim.link.fold_writer import (
        PROCESS_MIN_ENDPOINTS,
        SIM_STORE_SYNCHRONOUS,
        STORE_BUSY_TIMEOUT_MS,
        FoldWriter,
        InlineFoldWriter,
        ProcessFoldWriter,
        fold_writer_for,
        writes_in_a_process,
    )
    from fleet_sim.link.http import MAX_ENDPOINTS, HTTPLink, RemoteBackend
    from fleet_sim.link.in_process import InProcessLink

__all__ = [
    "FOLD_CHUNK_EVENTS",
    "MAX_ENDPOINTS",
    "PROCESS_MIN_ENDPOINTS",
    "SIM_STORE_SYNCHRONOUS",
    "STORE_BUSY_TIMEOUT_MS",
    "EventFolder",
    "FoldWriter",
    "FoldedRows",
    "HTTPLink",
    "InProcessLink",
    "InlineFoldWriter",
    "ProcessFoldWriter",
    "RemoteBackend",
    "fold_writer_for",
    "writes_in_a_process",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "fleet_sim.link.fold": ["FOLD_CHUNK_EVENTS", "EventFolder", "FoldedRows"],
        "fleet_sim.link.fold_writer": [
            "PROCESS_MIN_ENDPOINTS",
            "SIM_STORE_SYNCHRONOUS",
            "STORE_BUSY_TIMEOUT_MS",
            "FoldWriter",
            "InlineFoldWriter",
            "ProcessFoldWriter",
            "fold_writer_for",
            "writes_in_a_process",
        ],
        "fleet_sim.link.http": ["MAX_ENDPOINTS", "HTTPLink", "RemoteBackend"],
        "fleet_sim.link.in_process": ["InProcessLink"],
    },
)
