"""Prevention on the endpoint: where a verdict meets the endpoint's files and acts on them.

One room for each way the agent meets a file and what it does to a blocked one (DESIGN.md,
"Prevention on the endpoint"): `scan` (walking paths and scoring files, for `fleetward-agent
scan` and the daemon's periodic scan), `protector` (answering fanotify permission events on exec
and open with `decide`, over the ctypes binding in `fanotify`; Linux), `watch` (deciding files
written in watched folders, through inotify), `quarantine` (moving a blocked file out of reach
and restoring it exactly) and `realtime` (wiring the protector and the watcher to a running
`agent.daemon.Agent`, or saying once why fanotify cannot be used). The decision itself is
`agent.decision`. The public names are re-exported here, lazily (`agent.reexport`): `scan` must
not load the protector or watchdog.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
