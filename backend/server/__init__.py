"""The backend's HTTP server: the Starlette app, its route table and what one serving process holds.

One room for everything `fleetward backend serve` adds on top of the core (`backend.admin`,
`backend.ingest`, `backend.store`): the app and its one exception-handler table (`app`), the
wire contract declared once per operation (`api`, on `_operation`'s `Operation`, with the field
types of `_fields`), the routing that answers 404 and 405 as documented (`_routing`), the
generated `/openapi.json` (`_openapi`), the push channel (`push`), the process's view of the
shared policy (`replica`), its Prometheus metrics (`metrics`) and its garbage-collector policy
(`_gc`). Names are re-exported lazily (`agent.reexport`): importing the package loads neither
starlette nor pydantic until a name is used.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
