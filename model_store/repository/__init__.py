"""The signed update repository: the producer side of TUF, and its command line.

One room for signing (python-tuf's `repository` role): keys, TUF metadata and the targets
agents fetch, `init_repository`, `publish_model` (after the release gate, `model_store.gate`),
`publish_policy`, `rotate_key` and `refresh` (`signing`), and `fleetward repo ...`, the thin
click layer over them (`cli`). `agent` never imports it. The names of `signing` are
re-exported lazily (`agent.reexport`), so `from model_store.repository import publish_model`
keeps working.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
