"""The names `backend` re-exports (for type checkers and `agent.reexport`)."""

from .server import (
    AppConfig as AppConfig,
    create_app as create_app,
    serve as serve,
)
from .store import (
    Store as Store,
)
