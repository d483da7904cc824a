"""Trust and updates: the check-in path from a signed repository to an installed model.

One room for how a model and a policy reach the endpoint (DESIGN.md, "Signed distribution"):
`updater` (python-tuf's `Updater`, the schema check, the self-test, the atomic install and the
last-known-good fallback; its docstring lists the invariants), `adoption` (the one rule for
taking a check-in's result, shared with the simulator), `push` (the hint that wakes a check-in
at once), `backoff` (the one jittered formula for waits stamina cannot take) and `atomic` (the
one crash-safe file write the install and the other rooms' bookkeeping use). The install
bookkeeping itself is private to the agent (`agent._internal.install`); the bundle contract it
checks is `agent.bundle`. The public names are re-exported here, lazily (`agent.reexport`).
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
