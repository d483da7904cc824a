"""The names `agent.update` re-exports (for type checkers and `agent.reexport`)."""

from .adoption import (
    Adoption as Adoption,
    adopt as adopt,
)
from .atomic import (
    fsync_dir as fsync_dir,
    write_atomic as write_atomic,
)
from .backoff import (
    jittered_backoff_s as jittered_backoff_s,
)
from .push import (
    MAX_LINE_CHARS as MAX_LINE_CHARS,
    PushConfig as PushConfig,
    PushListener as PushListener,
    backoff_s as backoff_s,
    bounded_lines as bounded_lines,
    parse_events as parse_events,
    push_request as push_request,
)
from .updater import (
    HTTPXFetcher as HTTPXFetcher,
    Rejection as Rejection,
    UpdateClient as UpdateClient,
    UpdateConfig as UpdateConfig,
    UpdateOutcome as UpdateOutcome,
    fetch_trust_anchor as fetch_trust_anchor,
    load_installed_policy as load_installed_policy,
    model_target_paths as model_target_paths,
    verify_root as verify_root,
    verify_trust as verify_trust,
)
