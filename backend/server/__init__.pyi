"""The names `backend.server` re-exports (for type checkers and `agent.reexport`)."""

from .app import (
    ERROR_STATUS as ERROR_STATUS,
    AppConfig as AppConfig,
    create_app as create_app,
    serve as serve,
)
from .metrics import (
    Metrics as Metrics,
)
from .push import (
    PushConfig as PushConfig,
    PushHub as PushHub,
    orgs_touched as orgs_touched,
)
from .replica import (
    PolicyFeed as PolicyFeed,
    PolicySource as PolicySource,
    served_policy_version as served_policy_version,
)
