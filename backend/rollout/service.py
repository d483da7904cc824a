"""The rollout controller's shell: its tables, the evidence it reads, the policy it publishes.

`backend.rollout.core` decides; this module stores and acts. It reads the gate's evidence from
two tables the store writes in each batch's one ingest transaction (`Store.ingest_aggregate`,
`backend.ingest.endpoint_day_rows`):

- `endpoint_days` (day, endpoint, model version) -> org, events, alerts, self-test failures,
  model errors, breaker trips: the per-endpoint-day health counters, the ledger behind the
  rollup. Arms are told apart by the model version actually reported.
- `arm_days` (day, model version, org) -> endpoint-days and the summed counters: the rollup the
  gate reads. The controller ticks hourly and must not scan per-endpoint rows at a million
  endpoints, so every write to `endpoint_days` adds into `arm_days` in the same transaction,
  and a tick reads days x orgs rows. The simulator writes the rollup alone
  (`record_arm_day_columns`), without the per-endpoint ledger.

It owns two tables of its own, created on first use:

- `rollouts`: each rollout and its current state (the only mutable row: state moves forward).
- `rollout_decisions`: every decision and operator action with its figures and time,
  append-only; `rollout status` and the simulator's report read it.

Assignment reaches agents only through signed policy: `start` and each advance write the
`rollout` block (`agent.policy.RolloutModel`) with the stage's percentage; a halt with rollback
or an abort removes it (every endpoint back on `from_version`), completion assigns `to_version`
to everyone. Agents pick their version with `agent.policy.assigned_version` at their next
check-in, so a halt stops the spread within one check-in interval.

A ringed rollout (`rings=True`) reads each org's ring from signed policy at the start
(`backend.rollout.rings.ring_plan`) and writes a `rollout` block into every org's own override with
the percentage `backend.rollout.rings.org_percents` gives it at that moment (the fleet default keeps
`from_version` until the last ring completes); evidence is gathered from the current ring's orgs
that run the version, and each tick republishes when a `delayed` org becomes eligible.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from operator import attrgetter
from typing import Any

from agent.policy import OrgPolicyModel, PolicyDocumentModel, Ring, RolloutModel
from backend.admin import Publish
from backend.errors import ConflictError, NotFoundError
from backend.ingest import MS_PER_DAY
from backend.rollout.core import (
    ArmCounts,
    Evidence,
    OrgEvidence,
    Rollout,
    RolloutAction,
    RolloutConfig,
    RolloutDecision,
    RolloutState,
    apply_decision,
    decide,
)
from backend.rollout.rings import RingAssignment, org_percents, ring_plan
from backend.store import AggregateStore

__all__ = [
    "ArmDayColumns",
    "EndpointDayRow",
    "abort_rollout",
    "decision_log",
    "gather_evidence",
    "get_rollout",
    "pause_rollout",
    "record_arm_day_columns",
    "record_endpoint_days",
    "resume_rollout",
    "rollout_status",
    "start_rollout",
    "tick_rollout",
]


_ACTIVE = (RolloutState.RUNNING, RolloutState.PAUSED)


@dataclass(frozen=True, slots=True)
class EndpointDayRow:
    """Counts for one endpoint on one day under one model version (added on conflict)."""

    day: int
    endpoint_id: str
    model_version: int
    org_id: str
    events: int = 0
    alerts: int = 0
    self_test_failures: int = 0
    model_errors: int = 0
    breaker_trips: int = 0


def _iso(t: dt.datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return t.astimezone(dt.UTC).isoformat()


# --- per-endpoint-day counters ---------------------------------------------------------------


def _evidence_key() -> str:
    return "evidence-" + secrets.token_hex(12)


def _evidence_time(rows: Sequence[tuple[Any, ...]], day_at: int) -> dt.datetime:
    """When evidence written without a batch is recorded: the end of its latest day."""
    last = max((int(r[day_at]) for r in rows), default=0)
    return dt.datetime.fromtimestamp((last + 1) * MS_PER_DAY / 1000, dt.UTC)


def record_endpoint_days(store: AggregateStore, rows: Iterable[EndpointDayRow]) -> int:
    """Add endpoint-day counters (summing into existing rows); returns rows written.

    One transaction of the store's ingest operation, the same that writes a batch's evidence.
    """
    params = [
        (int(r.day), str(r.endpoint_id), int(r.model_version), str(r.org_id), int(r.events),
         int(r.alerts), int(r.self_test_failures), int(r.model_errors), int(r.breaker_trips))
        for r in rows
    ]  # fmt: skip
    store.record_evidence(_evidence_key(), endpoint_days=params, now=_evidence_time(params, 0))
    return len(params)


@dataclass(frozen=True, slots=True)
class ArmDayColumns:
    """Increments of `arm_days` rows as columns (row i across them): one (day, org, model) each."""

    day: Sequence[int]
    org_id: Sequence[str]
    model_version: Sequence[int]
    endpoint_days: Sequence[int]
    events: Sequence[int]
    alerts: Sequence[int]
    self_test_failures: Sequence[int]
    model_errors: Sequence[int]
    breaker_trips: Sequence[int]

    def __len__(self) -> int:
        return len(self.day)


def record_arm_day_columns(store: AggregateStore, cols: ArmDayColumns) -> int:
    """Add increments into the gate's rollup `arm_days` (one transaction); returns rows written.

    The simulator's bulk path: no per-endpoint ledger (`endpoint_days`) is written, so the
    caller counts each (day, endpoint, model) once in `endpoint_days`, on the day it first
    reports under that model, and adds the counts of every row. Rows are summed into existing
    ones (a key may repeat, in one call or across calls).

    Raises:
        ValueError: the columns differ in length.
    """
    c = cols
    params = list(
        zip(
            c.day, c.model_version, c.org_id, c.endpoint_days, c.events, c.alerts,
            c.self_test_failures, c.model_errors, c.breaker_trips, strict=True,
        )
    )  # fmt: skip
    store.record_evidence(_evidence_key(), arm_days=params, now=_evidence_time(params, 0))
    return len(params)


def _arms(
    store: AggregateStore, version: int, since_day: int, until_day: int, org_id: str | None
) -> dict[str, ArmCounts]:
    # one `arm_days` row per (day, org) of the version: max is the org's busiest day
    return {
        r[0]: ArmCounts(r[1], float(r[2]), *r[3:])
        for r in store.arm_counts(version, since_day, until_day, org_id)
    }


_ARM_FIELDS = attrgetter(*(f.name for f in fields(ArmCounts)))


def _sum(arms: Iterable[ArmCounts]) -> ArmCounts:
    """The field-wise total of `arms`, added in order (`endpoint_days` is a float).

    The fields are read with one `attrgetter` per arm, not `dataclasses.asdict` (which deep
    copies each arm: a thousand orgs per tick); the additions and their order are unchanged.
    """
    tot: tuple[Any, ...] = _ARM_FIELDS(ArmCounts())
    for a in arms:
        tot = tuple([x + y for x, y in zip(tot, _ARM_FIELDS(a), strict=True)])
    return ArmCounts(*tot)


def gather_evidence(
    store: AggregateStore,
    rollout: Rollout,
    since: dt.datetime,
    now: dt.datetime,
    control_version: int,
) -> Evidence:
    """Canary (`to_version`) vs control (`control_version`) counts, days `since`..`now`.

    `by_org` runs in the store's creation order (`org_ids`), the order the gate lists orgs and
    breaks ties in: the store draws org ids at random, so their sort order is no order for one
    history. Orgs the store does not know (evidence written for other ids) come last, by id.
    """
    lo = int(since.timestamp() * 1000) // MS_PER_DAY
    hi = int(now.timestamp() * 1000) // MS_PER_DAY
    can = _arms(store, rollout.to_version, lo, hi, rollout.org_id)
    ctl = _arms(store, control_version, lo, hi, rollout.org_id)
    if rollout.rings:  # the current ring's orgs that run the version are the strata
        pct = _ring_percents(rollout, now)
        keep = {a.org_id for a in rollout.rings if a.ring is rollout.ring and pct[a.org_id] > 0}
        can = {o: a for o, a in can.items() if o in keep}
        ctl = {o: a for o, a in ctl.items() if o in keep}
    rank = {o: i for i, o in enumerate(store.org_ids())}
    orgs = sorted(set(can) | set(ctl), key=lambda o: (rank.get(o, len(rank)), o))
    by_org = tuple(OrgEvidence(o, can.get(o, ArmCounts()), ctl.get(o, ArmCounts())) for o in orgs)
    return Evidence(_sum(can.values()), _sum(ctl.values()), by_org)


# --- rollouts and their log -------------------------------------------------------------------


def _to_json(r: Rollout) -> str:
    c = r.config
    return json.dumps(
        {
            "rollout_id": r.rollout_id, "to_version": r.to_version,
            "from_version": r.from_version, "org_id": r.org_id, "salt": r.salt,
            "started_at": _iso(r.started_at), "state": r.state.value,
            "stage_index": r.stage_index,
            "stage_started_at": _iso(r.stage_started_at) if r.stage_started_at else None,
            "looks": r.looks, "stage_looks": r.stage_looks, "reason": r.reason,
            "evidence_key": r.evidence_key,
            "rings": [[a.org_id, a.ring.value, a.delay_h] for a in r.rings],
            "ring_index": r.ring_index,
            "broad_done_at": _iso(r.broad_done_at) if r.broad_done_at else None,
            "pause_base_look": r.pause_base_look,
            "config": {
                "stages": list(c.stages), "hold_s": c.hold.total_seconds(),
                "max_fp_increase": c.max_fp_increase, "alpha": c.alpha,
                "min_endpoint_days": c.min_endpoint_days,
                "min_org_endpoint_days": c.min_org_endpoint_days, "rollback": c.rollback,
                "tick_s": c.tick.total_seconds(),
                "inconclusive_looks": c.inconclusive_looks,
                "min_judged_share": c.min_judged_share,
            },
        }
    )  # fmt: skip


def _from_json(raw: str) -> Rollout:
    d = json.loads(raw)
    c = d["config"]
    config = RolloutConfig(
        tuple(c["stages"]), dt.timedelta(seconds=c["hold_s"]), c["max_fp_increase"], c["alpha"],
        c["min_endpoint_days"], c["min_org_endpoint_days"], c["rollback"],
        dt.timedelta(seconds=c["tick_s"]), c.get("inconclusive_looks", 0),
        c.get("min_judged_share", 0.5),
    )  # fmt: skip
    stage_at = d["stage_started_at"]
    broad_at = d.get("broad_done_at")
    return Rollout(
        d["rollout_id"], d["to_version"], d["from_version"], d["org_id"], d["salt"], config,
        dt.datetime.fromisoformat(d["started_at"]), RolloutState(d["state"]), d["stage_index"],
        dt.datetime.fromisoformat(stage_at) if stage_at else None, d["looks"], d["stage_looks"],
        d["reason"], d.get("evidence_key", ""),
        tuple(RingAssignment(o, Ring(n), h) for o, n, h in d.get("rings", ())),
        d.get("ring_index", 0), dt.datetime.fromisoformat(broad_at) if broad_at else None,
        d.get("pause_base_look", 0),
    )  # fmt: skip


def get_rollout(store: AggregateStore, rollout_id: int | None = None) -> Rollout | None:
    """A rollout by id, or (no id) the latest one; None when there is none."""
    found = store.rollout_state(rollout_id)
    return None if found is None else _from_json(found)


def _figures(d: RolloutDecision) -> str:
    return json.dumps(
        {
            "canary": asdict(d.canary),
            "control": asdict(d.control),
            "tests": [t.to_dict() for t in d.tests],
            "halted_orgs": list(d.halted_orgs),
            "ring": d.ring,
            "next_decision_at": _iso(d.next_decision_at) if d.next_decision_at else None,
        }
    )


def _read(store: AggregateStore) -> tuple[Rollout | None, str | None]:
    """The latest rollout and the stored state it was read from (what `_log` compares)."""
    raw = store.rollout_state()
    return (None if raw is None else _from_json(raw)), raw


_PolicyWrite = tuple[PolicyDocumentModel, str, str]  # document, actor, action


def _log(
    store: AggregateStore,
    before: Rollout,
    d: RolloutDecision,
    policy: _PolicyWrite | None,
    *,
    read: str | None,
    publish: Publish | None = None,
) -> Rollout:
    """Store the state after `d`, log `d` and record its policy, if the state is still `read`.

    `read` is the stored state `before` was decided from (for a new rollout, the latest
    rollout's). The state, the log row and the policy version `d` writes are one transaction
    (`log_rollout_decision`): two replicas deciding on one state, the first writes all three,
    the second gets ConflictError (409) and writes nothing, neither state nor policy; a crash
    leaves both or neither, so the signed policy is never a stage ahead of the logged state.
    The policy is published after the COMMIT (PublishError: recorded and logged, publication
    pending; every replica's reconciliation publishes it within seconds, `backend.server.replica`).
    """
    after = apply_decision(before, d)
    version = None if policy is None else policy[0].version
    row = (d.action.value, d.stage_index, d.percent, d.reason, _figures(d), version)
    rid = store.log_rollout_decision(
        before.rollout_id or None,
        d.at,
        lambda rid: _to_json(replace(after, rollout_id=rid)),
        row,
        expected=read,
        policy=policy,
    )
    if policy is not None:
        assert publish is not None, "a decision that writes policy needs a publisher"
        store.publish_pending_policy(publish, d.at)
    return replace(after, rollout_id=rid)


def _check_unchanged(store: AggregateStore, r: Rollout, read: str | None) -> None:
    """Refuse to publish for a decision another replica already overtook (see `_log`)."""
    if store.rollout_state(r.rollout_id) != read:
        raise ConflictError(
            f"rollout {r.rollout_id}: another decision was logged since this one read the "
            "rollout; read it again"
        )


def decision_log(store: AggregateStore, rollout_id: int | None = None) -> list[dict[str, Any]]:
    """Every logged decision of a rollout (default: the latest), oldest first."""
    r = get_rollout(store, rollout_id)
    if r is None:
        return []
    return [
        {"at": a, "action": act, "stage_index": si, "percent": p, "reason": why,
         **json.loads(fig), "policy_version": pv}
        for a, act, si, p, why, fig, pv in store.rollout_decisions(r.rollout_id)
    ]  # fmt: skip


# --- policy -------------------------------------------------------------------------------


def _policy(
    store: AggregateStore, r: Rollout, now: dt.datetime, what: str,
    *, percent: float | None, assign: int | None = None,
) -> _PolicyWrite:  # fmt: skip
    """The next policy version: the rollout block (or none, `percent=None`) in its scope.

    Only built here; `_log` records it in the decision's own transaction.
    """
    current = store.current_policy()
    if current is None:
        raise NotFoundError("no policy yet: assign a model before starting a rollout")
    doc = current.document
    block = (
        None
        if percent is None
        else RolloutModel(
            to_version=r.to_version, from_version=r.from_version, percent=percent, salt=r.salt
        )
    )

    def change(p: OrgPolicyModel) -> OrgPolicyModel:
        update: dict[str, object] = {"rollout": block}
        if assign is not None:
            update["model_version"] = assign
        return p.model_copy(update=update)

    if r.rings:
        nxt = _ringed(doc, r, now, percent=percent, assign=assign)
    elif r.org_id is None:
        nxt = doc.model_copy(update={"default": change(doc.default)})
    else:
        orgs = dict(doc.orgs)
        orgs[r.org_id] = change(orgs.get(r.org_id, OrgPolicyModel()))
        nxt = doc.model_copy(update={"orgs": orgs})
    nxt = nxt.model_copy(update={"version": current.version + 1, "issued_at": now})
    valid = PolicyDocumentModel.model_validate(nxt.model_dump())
    return valid, "rollout-controller", f"rollout {what} ({r.org_id or 'fleet'})"


def _ring_percents(r: Rollout, now: dt.datetime) -> dict[str, float]:
    ring = r.ring
    assert ring is not None
    return dict(org_percents(r.rings, ring, r.percent, broad_done_at=r.broad_done_at, now=now))


def _ringed(
    doc: PolicyDocumentModel, r: Rollout, now: dt.datetime, *, percent: float | None,
    assign: int | None,
) -> PolicyDocumentModel:  # fmt: skip
    """The document with each ring org's own `rollout` block (`percent=None`: none at all).

    Completion (`assign`) moves the default to `to_version` and clears the blocks.
    """
    per_org = {} if percent is None or assign is not None else _ring_percents(r, now)
    orgs = dict(doc.orgs)
    for a in r.rings:
        p = per_org.get(a.org_id, 0.0)
        block = (
            RolloutModel(
                to_version=r.to_version, from_version=r.from_version, percent=p, salt=r.salt
            )
            if p > 0
            else None
        )
        orgs[a.org_id] = orgs.get(a.org_id, OrgPolicyModel()).model_copy(update={"rollout": block})
    update: dict[str, object] = {"orgs": orgs}
    if assign is not None:
        update["default"] = doc.default.model_copy(update={"model_version": assign})
    return doc.model_copy(update=update)


def _published_percents(store: AggregateStore, r: Rollout) -> dict[str, float]:
    cur = store.current_policy()
    if cur is None:
        return {}
    out = {}
    for a in r.rings:
        over = cur.document.orgs.get(a.org_id)
        out[a.org_id] = over.rollout.percent if over and over.rollout else 0.0
    return out


def _control_version(store: AggregateStore, org_id: str | None) -> int | None:
    cur = store.current_policy()
    if cur is None:
        return None
    doc = cur.document
    over = doc.orgs.get(org_id) if org_id else None
    return (over.model_version if over else None) or doc.default.model_version


# --- operator actions and the tick ---------------------------------------------------------------


def start_rollout(
    store: AggregateStore,
    publish: Publish,
    to_version: int,
    *,
    now: dt.datetime,
    config: RolloutConfig | None = None,
    org_id: str | None = None,
    salt: str | None = None,
    rings: bool = False,
) -> Rollout:
    """Start rolling `to_version` out: publish the first stage's cohort in signed policy.

    `salt` picks the cohorts (`agent.policy.in_canary`); by default a fresh random one, so
    successive rollouts draw different canaries. The simulator passes a seeded one. `rings`
    runs the stages ring by ring over the orgs' update rings (fleet-wide only).

    Raises:
        NotFoundError: no such org, or no policy (no current version to roll from).
        ConflictError: another rollout is running or paused, or `to_version` is already current,
            or another replica started one meanwhile.
        PolicyConflictError: the policy changed between this call's read and its write;
            nothing was written (call again).
        PublishError: the start is logged and its first stage recorded in policy, not yet
            published (the replicas' reconciliation publishes it within seconds).
    """
    if org_id is not None and not store.has_org(org_id):
        raise NotFoundError(f"no organization {org_id!r}")
    last, read = _read(store)
    if last is not None and last.state in _ACTIVE:
        raise ConflictError(f"rollout {last.rollout_id} is {last.state.value}; abort it first")
    base = _control_version(store, org_id)
    if base is None:
        raise NotFoundError("no model assigned yet: assign one before rolling out another")
    if base == to_version:
        raise ConflictError(f"model {to_version} is already assigned")
    cfg = config or RolloutConfig()
    salt = salt or secrets.token_hex(8)
    plan: tuple[RingAssignment, ...] = ()
    if rings:
        if org_id is not None:
            raise ConflictError("a ringed rollout is fleet-wide: give no org")
        cur = store.current_policy()
        plan = ring_plan(cur.document if cur else None, store.org_ids())
        if not plan:
            raise NotFoundError("no organizations to roll out to")
    r = Rollout(0, to_version, base, org_id, salt, cfg, now, stage_started_at=now, rings=plan)
    if store.rollout_state() != read:
        raise ConflictError("another rollout was started meanwhile; read it again")
    pv = _policy(store, r, now, f"start v{to_version}", percent=r.percent)
    where = f" in ring {r.ring.value}" if r.ring else ""
    d = RolloutDecision(
        0, now, RolloutAction.START, 0, r.percent,
        f"start v{base} -> v{to_version} at {r.percent:g} %{where}",
        next_decision_at=now + cfg.tick, ring=r.ring.value if r.ring else None,
    )  # fmt: skip
    return _log(store, r, d, pv, read=read, publish=publish)


def _need(
    store: AggregateStore, states: Sequence[RolloutState], what: str
) -> tuple[Rollout, str | None]:
    r, read = _read(store)
    if r is None:
        raise NotFoundError("no rollout")
    if r.state not in states:
        raise ConflictError(f"cannot {what} rollout {r.rollout_id}: it is {r.state.value}")
    return r, read


def pause_rollout(store: AggregateStore, *, now: dt.datetime) -> Rollout:
    """Freeze the rollout at its stage: no decisions, the cohort stays as it is.

    Raises:
        NotFoundError: no rollout. ConflictError: it is not running.
    """
    r, read = _need(store, (RolloutState.RUNNING,), "pause")
    d = RolloutDecision(r.rollout_id, now, RolloutAction.PAUSE, r.stage_index, r.percent, "paused")
    return _log(store, r, d, None, read=read)


def resume_rollout(store: AggregateStore, *, now: dt.datetime) -> Rollout:
    """Resume a paused rollout (the hold of its stage continues).

    Raises:
        NotFoundError: no rollout. ConflictError: it is not paused.
    """
    r, read = _need(store, (RolloutState.PAUSED,), "resume")
    d = RolloutDecision(
        r.rollout_id, now, RolloutAction.RESUME, r.stage_index, r.percent, "resumed",
        next_decision_at=now + r.config.tick,
    )  # fmt: skip
    return _log(store, r, d, None, read=read)


def abort_rollout(store: AggregateStore, publish: Publish, *, now: dt.datetime) -> Rollout:
    """Stop the rollout and put every endpoint back on `from_version` (signed policy).

    Raises:
        NotFoundError: no rollout. ConflictError: it already ended, or another decision
            was logged meanwhile.
        PublishError: the abort is logged and the rollback recorded in policy, not yet
            published (the replicas' reconciliation publishes it within seconds).
    """
    r, read = _need(store, _ACTIVE, "abort")
    _check_unchanged(store, r, read)
    pv = _policy(store, r, now, "abort", percent=None)
    d = RolloutDecision(
        r.rollout_id, now, RolloutAction.ABORT, r.stage_index, r.percent,
        f"aborted by operator; back to v{r.from_version}",
    )  # fmt: skip
    return _log(store, r, d, pv, read=read, publish=publish)


def tick_rollout(
    store: AggregateStore, publish: Publish, *, now: dt.datetime
) -> RolloutDecision | None:
    """One decision point: evaluate the running rollout, log it, publish what it changes.

    Returns None when no rollout is running.

    Raises:
        ConflictError: another replica logged a decision since this tick read the rollout
            (or, as PolicyConflictError, the policy changed since); nothing of this tick is
            written, neither its decision nor its policy.
        PublishError: the decision is logged and its policy recorded in one transaction, not
            yet published (the replicas' reconciliation publishes it within seconds).
    """
    r, read = _read(store)
    if r is None or r.state is not RolloutState.RUNNING:
        return None
    control = r.from_version if r.from_version is not None else _control_version(store, r.org_id)
    if control is None:
        raise NotFoundError("rollout has no control version")
    ev = gather_evidence(store, r, r.stage_started_at or r.started_at, now, control)
    d = decide(r, ev, now)
    pv: _PolicyWrite | None = None
    if d.action is not RolloutAction.WAIT:
        _check_unchanged(store, r, read)  # an early out; the write's compare-and-set decides
    if d.action is RolloutAction.ADVANCE and r.rings:
        after = apply_decision(r, d)
        what = f"advance to ring {after.ring} at {after.percent:g} %"
        pv = _policy(store, after, now, what, percent=after.percent)
    elif d.action is RolloutAction.ADVANCE:
        nxt = r.config.stages[r.stage_index + 1]
        pv = _policy(store, r, now, f"advance to {nxt:g} %", percent=nxt)
    elif d.action is RolloutAction.COMPLETE:
        pv = _policy(store, r, now, "complete", percent=None, assign=r.to_version)
    elif d.action is RolloutAction.HALT:
        if r.config.rollback:
            pv = _policy(store, r, now, "halt and roll back", percent=None)
        else:
            pv = None  # the cohort stays where it is; it does not grow
    elif r.rings and _ring_percents(r, now) != _published_percents(store, r):
        # a delayed org's delay after broad has passed (or a block was lost): publish its share
        pv = _policy(store, r, now, "delayed ring eligible", percent=r.percent)
    _log(store, r, d, pv, read=read, publish=publish)
    return d


def _rings_json(r: Rollout) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for a in r.rings:
        e = out.setdefault(a.ring.value, {"ring": a.ring.value, "orgs": []})
        e["orgs"].append(a.org_id)
    return list(out.values())


def rollout_status(store: AggregateStore, *, now: dt.datetime) -> dict[str, Any]:
    """The latest rollout: state, stage, cohort sizes, last statistics, next decision time."""
    r = get_rollout(store)
    if r is None:
        return {"rollout": None}
    log = decision_log(store, r.rollout_id)
    last = next((x for x in reversed(log) if x["action"] != "start"), log[-1] if log else None)
    looked = ("wait", "advance", "halt", "complete")
    evaluated = next((x for x in reversed(log) if x["action"] in looked), None)
    return {
        "rollout_id": r.rollout_id,
        "state": r.state.value,
        "to_version": r.to_version,
        "from_version": r.from_version,
        "org_id": r.org_id,
        "stage_index": r.stage_index,
        "stages": list(r.config.stages),
        "percent": r.percent,
        "ring": r.ring.value if r.ring else None,
        "rings": _rings_json(r),
        "broad_done_at": _iso(r.broad_done_at) if r.broad_done_at else None,
        "stage_started_at": _iso(r.stage_started_at) if r.stage_started_at else None,
        "hold_s": r.config.hold.total_seconds(),
        "max_fp_increase": r.config.max_fp_increase,
        "looks": r.looks,
        "reason": r.reason,
        "cohort": {
            "canary_endpoints": evaluated["canary"]["endpoints"] if evaluated else 0,
            "control_endpoints": evaluated["control"]["endpoints"] if evaluated else 0,
        },
        "last_decision": last,
        "next_decision_at": (
            last["next_decision_at"] if last and r.state is RolloutState.RUNNING else None
        ),
        "decisions": len(log),
        "as_of": _iso(now),
    }
