"""Operator actions: the kill switch, allow/blocklists, model assignment.

Each function reads the current policy document from the store, builds the next one (version
+1, `issued_at = now`), and hands it to `Store.append_policy`, which records it append-only,
commits, and then signs it into the repository through `publish`: the repository never
announces a version the store does not hold. A version recorded but not yet published (the
process died in between, or `publish` failed) is published by the next change, by
`publish_pending`, which `backend serve` runs at start, and by every serving replica's
reconciliation, which calls it when it finds a version pending (`backend.server.replica`). The HTTP
admin routes and the `fleetward backend` commands call these same functions.

`org_id=None` means fleet-wide (the document's `default`); otherwise the org's override.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.decision import Mode
from agent.policy import OrgPolicyModel, PolicyDocumentModel, Ring, RingModel
from backend.errors import BatchInvalidError, NotFoundError, PolicyConflictError
from backend.store import AggregateStore, PolicyRecord
from backend.validation import check_reason, check_sha256

if TYPE_CHECKING:
    from backend.analysis.transition_allowlist import AllowlistCandidate

__all__ = [
    "ListName",
    "Publish",
    "add_allowlist_candidates",
    "add_list_entry",
    "assign_model",
    "publish_pending",
    "remove_list_entry",
    "repository_publisher",
    "set_mode",
    "set_ring",
]

Publish = Callable[[bytes, dt.datetime], None]
ListName = str  # "allowlist" | "blocklist"
_LISTS = ("allowlist", "blocklist")
_CONFLICT_RETRIES = 3


def repository_publisher(repo_dir: str | Path) -> Publish:
    """A `Publish` that signs the document into the TUF repository at `repo_dir`."""

    def publish(raw: bytes, now: dt.datetime) -> None:
        from model_store.repository import publish_policy  # the signing side, loaded on use

        publish_policy(repo_dir, raw, now=now)

    return publish


def publish_pending(store: AggregateStore, publish: Publish, *, now: dt.datetime) -> int | None:
    """Publish the newest recorded policy version if it is not published yet.

    `backend serve` calls it at start: a process killed between a change's COMMIT and its
    publication left that version recorded only. Returns the version published, or None.

    Raises:
        PublishError: the signed policy could not be published; it stays pending.
    """
    return store.publish_pending_policy(publish, now)


_DocumentChange = Callable[[PolicyDocumentModel], PolicyDocumentModel]


def _scoped(
    org_id: str | None, change: Callable[[OrgPolicyModel], OrgPolicyModel]
) -> _DocumentChange:
    """`change` applied to the fleet default (`org_id` None) or to that org's override."""

    def apply(doc: PolicyDocumentModel) -> PolicyDocumentModel:
        if org_id is None:
            return doc.model_copy(update={"default": change(doc.default)})
        orgs = dict(doc.orgs)
        orgs[org_id] = change(orgs.get(org_id, OrgPolicyModel()))
        return doc.model_copy(update={"orgs": orgs})

    return apply


def _next(store: AggregateStore, now: dt.datetime, change: _DocumentChange) -> PolicyDocumentModel:
    current = store.current_policy()
    doc = (
        current.document
        if current
        else PolicyDocumentModel(
            version=1, issued_at=now, default=OrgPolicyModel(mode=Mode.ENFORCE)
        )
    )
    version = current.version + 1 if current else 1
    return change(doc).model_copy(update={"version": version, "issued_at": now})


def _apply(
    store: AggregateStore,
    publish: Publish,
    org_id: str | None,
    now: dt.datetime,
    actor: str,
    action: str,
    change: Callable[[OrgPolicyModel], OrgPolicyModel],
) -> PolicyRecord:
    if org_id is not None and not store.has_org(org_id):
        raise NotFoundError(f"no organization {org_id!r}")
    return _apply_document(
        store, publish, now, actor, f"{action} ({org_id or 'fleet'})", _scoped(org_id, change)
    )


def _apply_document(
    store: AggregateStore,
    publish: Publish,
    now: dt.datetime,
    actor: str,
    action: str,
    change: _DocumentChange,
) -> PolicyRecord:
    """One policy version: `change` applied to the newest document, compare-and-set."""
    for attempt in range(_CONFLICT_RETRIES + 1):
        # another replica may have changed the policy since this process last read it: the
        # compare-and-set refuses, the store re-reads, and the change is applied to the newest
        doc = PolicyDocumentModel.model_validate(_next(store, now, change).model_dump())
        try:
            return store.append_policy(doc, actor=actor, action=action, now=now, publish=publish)
        except PolicyConflictError:
            if attempt == _CONFLICT_RETRIES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def set_mode(
    store: AggregateStore,
    publish: Publish,
    mode: Mode,
    *,
    org_id: str | None,
    now: dt.datetime,
    actor: str = "operator",
) -> PolicyRecord:
    """Set the mode (the kill switch: `off`) fleet-wide or for one org.

    Raises:
        NotFoundError: no such org.
        PublishError: the version is recorded but not yet published (see the module doc).
    """
    return _apply(
        store,
        publish,
        org_id,
        now,
        actor,
        f"set mode {mode.value}",
        lambda p: p.model_copy(update={"mode": mode}),
    )


def assign_model(
    store: AggregateStore,
    publish: Publish,
    model_version: int | None,
    *,
    org_id: str | None,
    now: dt.datetime,
    shadow_model_version: int | None = None,
    actor: str = "operator",
) -> PolicyRecord:
    """Assign the active (and optionally shadow) model version fleet-wide or for one org.

    Raises:
        NotFoundError: no such org.
        PublishError: the version is recorded but not yet published (see the module doc).
    """
    return _apply(
        store,
        publish,
        org_id,
        now,
        actor,
        f"assign model {model_version} shadow {shadow_model_version}",
        lambda p: p.model_copy(
            update={"model_version": model_version, "shadow_model_version": shadow_model_version}
        ),
    )


def set_ring(
    store: AggregateStore,
    publish: Publish,
    ring: Ring,
    *,
    org_id: str,
    now: dt.datetime,
    delay_h: float = 0.0,
    actor: str = "operator",
) -> PolicyRecord:
    """Put an org on an update ring (`backend.rollout.rings`); `delay_h` counts on `delayed` only.

    The ring is kept with the org in its signed policy override, so it is stored append-only
    with its time (either store), readable "as of" any past time, and reaches the org's agents.

    Raises:
        BatchInvalidError: `delay_h` is given for a ring other than `delayed`, or out of range.
        NotFoundError: no such org.
        PublishError: the version is recorded but not yet published (see the module doc).
    """
    if delay_h and ring is not Ring.DELAYED:
        raise BatchInvalidError(f"delay_h: only the delayed ring waits, not {ring.value}")
    if not 0.0 <= delay_h <= 24.0 * 366:
        raise BatchInvalidError("delay_h: must be between 0 and 8784 hours")
    model = RingModel(name=ring, delay_h=delay_h)
    return _apply(
        store,
        publish,
        org_id,
        now,
        actor,
        f"set ring {ring.value}" + (f" +{delay_h:g} h" if delay_h else ""),
        lambda p: p.model_copy(update={"ring": model}),
    )


def add_list_entry(
    store: AggregateStore,
    publish: Publish,
    which: ListName,
    sha256: str,
    *,
    org_id: str | None,
    now: dt.datetime,
    reason: str = "",
    actor: str = "operator",
    expires_at: dt.datetime | None = None,
) -> PolicyRecord:
    """Add (or replace) a sha256 on the allowlist or blocklist, optionally expiring.

    Raises:
        BatchInvalidError: the sha256, reason or expiry is not valid.
        NotFoundError: no such org.
        PublishError: the version is recorded but not yet published (see the module doc).
    """
    if which not in _LISTS:
        raise ValueError(f"list must be one of {_LISTS}")
    sha256 = check_sha256(sha256)
    reason = check_reason(reason)
    if expires_at is not None and expires_at.tzinfo is None:
        raise BatchInvalidError("expires_at: must carry a UTC offset")
    entry = {
        "sha256": sha256.lower(),
        "reason": reason,
        "author": actor,
        "created_at": now,
        "expires_at": expires_at,
    }

    def change(p: OrgPolicyModel) -> OrgPolicyModel:
        kept = [e.model_dump() for e in getattr(p, which) if e.sha256 != entry["sha256"]]
        return OrgPolicyModel.model_validate({**p.model_dump(), which: [*kept, entry]})

    return _apply(store, publish, org_id, now, actor, f"{which} add {sha256}", change)


def add_allowlist_candidates(
    store: AggregateStore,
    publish: Publish,
    candidates: Iterable[AllowlistCandidate],
    *,
    now: dt.datetime,
    actor: str = "fleetward-transition",
) -> PolicyRecord | None:
    """Apply transition allowlist candidates by their scope, as one policy version.

    A fleet-scoped candidate (`org_id` None: fleet-level evidence) goes on the fleet-wide
    allowlist; an org-scoped one (one org's own evidence) only on that org's allowlist, so
    one org's flip never shields a sample in another org. Entries replace same-sha256 ones.
    Every scope changes in the one version, or none does. Returns it (None: no candidates).

    Raises:
        BatchInvalidError: an entry's sha256 or reason is not valid; nothing changed.
        NotFoundError: a candidate names an org that does not exist; nothing changed.
        PublishError: the version is recorded but not yet published (see the module doc).
    """
    by_scope: dict[str | None, dict[str, dict[str, object]]] = {}
    for c in candidates:
        e = c.entry
        sha = check_sha256(e.sha256).lower()
        by_scope.setdefault(c.org_id, {})[sha] = {
            "sha256": sha,
            "reason": check_reason(e.reason),
            "author": e.author,
            "created_at": e.created_at,
            "expires_at": e.expires_at,
        }
    if not by_scope:
        return None
    scopes = sorted(by_scope, key=lambda o: (o is not None, o or ""))
    for org_id in scopes:
        if org_id is not None and not store.has_org(org_id):
            raise NotFoundError(f"no organization {org_id!r}")

    def add(new: dict[str, dict[str, object]]) -> Callable[[OrgPolicyModel], OrgPolicyModel]:
        def change(p: OrgPolicyModel) -> OrgPolicyModel:
            kept = [e.model_dump() for e in p.allowlist if e.sha256 not in new]
            return OrgPolicyModel.model_validate(
                {**p.model_dump(), "allowlist": [*kept, *new.values()]}
            )

        return change

    changes = [_scoped(org_id, add(by_scope[org_id])) for org_id in scopes]

    def change_all(doc: PolicyDocumentModel) -> PolicyDocumentModel:
        for change in changes:
            doc = change(doc)
        return doc

    count = sum(len(v) for v in by_scope.values())
    where = ", ".join(o or "fleet" for o in scopes)
    action = f"transition allowlist add {count} ({where})"
    return _apply_document(store, publish, now, actor, action, change_all)


def remove_list_entry(
    store: AggregateStore,
    publish: Publish,
    which: ListName,
    sha256: str,
    *,
    org_id: str | None,
    now: dt.datetime,
    actor: str = "operator",
) -> PolicyRecord:
    """Remove a sha256 from the allowlist or blocklist.

    Raises:
        BatchInvalidError: the sha256 is not 64 hex characters.
        NotFoundError: no such org, or the entry is not on that list.
        PublishError: the version is recorded but not yet published (see the module doc).
    """
    if which not in _LISTS:
        raise ValueError(f"list must be one of {_LISTS}")
    sha256 = check_sha256(sha256)
    current = store.current_policy()
    scope = (
        None
        if current is None
        else (current.document.default if org_id is None else current.document.orgs.get(org_id))
    )
    if scope is None or all(e.sha256 != sha256.lower() for e in getattr(scope, which)):
        raise NotFoundError(f"{sha256} is not on the {which} of {org_id or 'the fleet'}")

    def change(p: OrgPolicyModel) -> OrgPolicyModel:
        kept = [e.model_dump() for e in getattr(p, which) if e.sha256 != sha256.lower()]
        return OrgPolicyModel.model_validate({**p.model_dump(), which: kept})

    return _apply(store, publish, org_id, now, actor, f"{which} remove {sha256}", change)
