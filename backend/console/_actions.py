"""Every backend call the console makes, in one place.

The console holds no logic of its own: each operator action here is the library function that
the CLI (`fleetward backend ...`, `fleetward rollout ...`) and the JSON API (`/v1/admin/...`)
call, with the same arguments. Keeping them in one small module keeps the console's reach into
the backend narrow and easy to re-point when the backend's modules move.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent.decision import Mode
from agent.policy import EffectivePolicy, PolicyDocumentModel, resolve_policy
from backend import admin
from backend.errors import AuthError, BackendError, BatchInvalidError, ConflictError, NotFoundError
from backend.rollout import service as _rollouts
from backend.rollout.core import ArmCounts, Evidence, Rollout
from backend.store import AggregateStore as Store  # the protocol: either dialect
from backend.store import PolicyRecord, Principal, TokenKind
from backend.validation import check_sha256

__all__ = [
    "AuthError",
    "BackendError",
    "ConflictError",
    "Evidence",
    "Mode",
    "NotFoundError",
    "PolicyDocumentModel",
    "PolicyRecord",
    "Principal",
    "Publish",
    "Rollout",
    "Store",
    "TokenKind",
    "abort_rollout",
    "add_allowlist_candidates",
    "add_list_entry",
    "authenticate",
    "current_policy",
    "decision_log",
    "get_rollout",
    "is_sha256",
    "org_evidence",
    "org_ids",
    "pause_rollout",
    "policy_as_of",
    "remove_list_entry",
    "resolve",
    "resume_rollout",
    "rollout_status",
    "set_mode",
]

Publish = admin.Publish


def is_sha256(value: str) -> bool:
    """A valid sample id by the API's own check (`backend.validation.check_sha256`)."""
    try:
        check_sha256(value)
    except BatchInvalidError:
        return False
    return True


def authenticate(store: Store, token: str) -> Principal:
    """Who a bearer token acts as (the API's check). Raises `AuthError` when unknown."""
    return store.authenticate(token)


def org_ids(store: Store) -> list[str]:
    """Every org's pseudonym (`GET /v1/admin/orgs`)."""
    return store.org_ids()


def current_policy(store: Store) -> PolicyRecord | None:
    """The policy in force now (`GET /v1/admin/policy`)."""
    return store.current_policy()


def policy_as_of(store: Store, when: dt.datetime) -> PolicyRecord | None:
    """The policy in force at `when` (`GET /v1/admin/policy?as_of=`)."""
    return store.policy_as_of(when)


def resolve(doc: PolicyDocumentModel, org_id: str) -> EffectivePolicy:
    """What an endpoint of `org_id` applies: the agent's own `resolve_policy`."""
    return resolve_policy(doc, org_id)


def set_mode(
    store: Store, publish: Publish, mode: Mode, *, org_id: str | None, now: dt.datetime, actor: str
) -> PolicyRecord:
    """The kill switch (`PUT /v1/admin/mode`, `fleetward backend set-mode`)."""
    return admin.set_mode(store, publish, mode, org_id=org_id, now=now, actor=actor)


def add_list_entry(
    store: Store,
    publish: Publish,
    which: str,
    sha256: str,
    *,
    org_id: str | None,
    now: dt.datetime,
    reason: str,
    expires_at: dt.datetime | None,
    actor: str,
) -> PolicyRecord:
    """Allow/blocklist an entry (`POST /v1/admin/{list}`)."""
    return admin.add_list_entry(
        store,
        publish,
        which,
        sha256,
        org_id=org_id,
        now=now,
        reason=reason,
        expires_at=expires_at,
        actor=actor,
    )


def add_allowlist_candidates(
    store: Store,
    publish: Publish,
    candidates: list[dict[str, Any]],
    *,
    now: dt.datetime,
    actor: str,
) -> PolicyRecord | None:
    """Apply saved transition allowlist candidates by scope: `admin.add_allowlist_candidates`.

    Each candidate is a report's `allowlist_candidates` row: the entry, and `org_id` (None for
    fleet-wide). Returns the one policy version written (None when there was nothing to apply).
    """
    from agent.policy import ListEntry
    from backend.analysis.transition_allowlist import AllowlistCandidate

    def when(v: object) -> dt.datetime | None:
        return dt.datetime.fromisoformat(str(v)) if v else None

    cands = [
        AllowlistCandidate(
            ListEntry(
                str(c["sha256"]), str(c.get("reason", "")), str(c.get("author", "")),
                when(c.get("created_at")) or now, when(c.get("expires_at")),
            ),
            c.get("org_id"),
        )
        for c in candidates
    ]  # fmt: skip
    return admin.add_allowlist_candidates(store, publish, cands, now=now, actor=actor)


def remove_list_entry(
    store: Store,
    publish: Publish,
    which: str,
    sha256: str,
    *,
    org_id: str | None,
    now: dt.datetime,
    actor: str,
) -> PolicyRecord:
    """Remove an entry (`DELETE /v1/admin/{list}/{sha256}`)."""
    return admin.remove_list_entry(
        store, publish, which, sha256, org_id=org_id, now=now, actor=actor
    )


def rollout_status(store: Store, now: dt.datetime) -> dict[str, Any]:
    """`GET /v1/admin/rollout`, `fleetward rollout status`."""
    return _rollouts.rollout_status(store, now=now)


def get_rollout(store: Store) -> Rollout | None:
    """The latest rollout, or None."""
    return _rollouts.get_rollout(store)


def decision_log(store: Store) -> list[dict[str, Any]]:
    """The gate's log of the latest rollout (`GET /v1/admin/rollout/decisions`)."""
    return _rollouts.decision_log(store)


def org_evidence(store: Store, rollout: Rollout, now: dt.datetime) -> Evidence:
    """Canary vs control counts of the current stage, per org (what the gate reads)."""
    if rollout.from_version is None:  # `start_rollout` always records one; nothing to compare
        return Evidence(ArmCounts(), ArmCounts())
    since = rollout.stage_started_at or rollout.started_at
    return _rollouts.gather_evidence(store, rollout, since, now, rollout.from_version)


def pause_rollout(store: Store, now: dt.datetime) -> Rollout:
    """`POST /v1/admin/rollout/pause`, `fleetward rollout pause`."""
    return _rollouts.pause_rollout(store, now=now)


def resume_rollout(store: Store, now: dt.datetime) -> Rollout:
    """`POST /v1/admin/rollout/resume`, `fleetward rollout resume`."""
    return _rollouts.resume_rollout(store, now=now)


def abort_rollout(store: Store, publish: Publish, now: dt.datetime) -> Rollout:
    """`POST /v1/admin/rollout/abort`, `fleetward rollout abort`."""
    return _rollouts.abort_rollout(store, publish, now=now)
