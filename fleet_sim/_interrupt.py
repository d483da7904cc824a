"""Ctrl-C reaches every process of a run; only the coordinator answers it.

A terminal sends SIGINT to its whole foreground process group: the shard workers, the fold
writer and the prediction's process as well as the coordinator. Each helper would die with a
`KeyboardInterrupt` traceback of its own across the user's terminal, the fold writer possibly
in the middle of a transaction (rolled back, but reported as a crash). The coordinator alone
handles it: its run ends with one line, and its cleanup stops the helpers (`close`, `cancel`).
So each helper ignores SIGINT from its start.
"""

from __future__ import annotations

import signal

__all__ = ["leave_interrupts_to_the_coordinator"]


def leave_interrupts_to_the_coordinator() -> None:
    """Ignore SIGINT in this process (a helper of a run); SIGTERM and SIGKILL still stop it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
