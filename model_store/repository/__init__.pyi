"""The names `model_store.repository` re-exports (for type checkers and `agent.reexport`)."""

from .signing import (
    EXPIRY as EXPIRY,
    GATE_REPORTS_DIR as GATE_REPORTS_DIR,
    KEYS_DIR as KEYS_DIR,
    METADATA_DIR as METADATA_DIR,
    ROLES as ROLES,
    ROOT_KEY_COUNT as ROOT_KEY_COUNT,
    ROOT_THRESHOLD as ROOT_THRESHOLD,
    TARGETS_DIR as TARGETS_DIR,
    PublishResult as PublishResult,
    RepoVersions as RepoVersions,
    RotateResult as RotateResult,
    init_repository as init_repository,
    model_target_paths as model_target_paths,
    publish_model as publish_model,
    publish_policy as publish_policy,
    publish_targets as publish_targets,
    read_versions as read_versions,
    refresh as refresh,
    rotate_key as rotate_key,
)
