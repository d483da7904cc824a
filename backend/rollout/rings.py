"""Update rings: which orgs may run a rolling-out version, and how much of them, at `now`.

Pure: the ring of each org (read from signed policy, `agent.policy.RingModel`), the rollout's
current ring and stage percentage, and the time the `broad` ring completed go in; per-org
percentages come out. `backend.rollout.core` moves a ringed rollout ring by ring and
`backend.rollout.service` writes these percentages into each org's `rollout` block.

The rules, and why:
- Rings run in the order preview -> staged -> broad -> delayed (Defender's Beta/Preview,
  Staged, Broad, Time Delay). Empty rings are skipped: a fleet with no preview org starts at
  staged.
- An org with no ring in policy is on `broad`: customers who never chose get the default
  channel, neither the first nor the last.
- Orgs of rings already completed run the version on all their endpoints (100 %); orgs of the
  current ring run it on the stage's percentage of their endpoints (the canary within the org,
  the rest of the org is its control: the gate judges per org stratum); orgs of later rings
  run nothing of it (0 %).
- A `delayed` org never runs the version before `broad_done_at + delay_h`: until `broad`
  completed (`broad_done_at` None) it is at 0 % whatever the current ring says. This is the
  customer's guarantee, so it is checked here and not left to the controller's order of rings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.policy import PolicyDocumentModel, Ring
from backend.errors import BatchInvalidError

__all__ = [
    "DEFAULT_RING",
    "RING_ORDER",
    "RingAssignment",
    "check_ring_name",
    "eligible_from",
    "org_percents",
    "ring_plan",
    "ring_sequence",
]

RING_ORDER: tuple[Ring, ...] = (Ring.PREVIEW, Ring.STAGED, Ring.BROAD, Ring.DELAYED)
DEFAULT_RING = Ring.BROAD


def check_ring_name(name: object) -> Ring:
    """The ring called `name`; the one message that lists the rings (all of `RING_ORDER`).

    Raises:
        BatchInvalidError: `name` is not a ring's name.
    """
    for ring in RING_ORDER:
        if name == ring.value:
            return ring
    raise BatchInvalidError(f"ring: must be one of {', '.join(r.value for r in RING_ORDER)}")


@dataclass(frozen=True, slots=True)
class RingAssignment:
    """One org's ring; `delay_h` is the wait after `broad` completed (only on `delayed`)."""

    org_id: str
    ring: Ring
    delay_h: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_h < 0:
            raise ValueError("delay_h must be >= 0")


def ring_plan(
    doc: PolicyDocumentModel | None, org_ids: Iterable[str]
) -> tuple[RingAssignment, ...]:
    """Each org's ring as signed policy states it (no ring: `DEFAULT_RING`), in `org_ids` order.

    The service passes the store's creation order (`org_ids()`): org ids are drawn at random,
    so sorting by them would list one history's orgs in a different order each time.
    """
    out = []
    for org in dict.fromkeys(org_ids):
        over = doc.orgs.get(org) if doc is not None else None
        ring = over.ring if over is not None else None
        if ring is None:
            out.append(RingAssignment(org, DEFAULT_RING))
        else:
            delay = ring.delay_h if ring.name is Ring.DELAYED else 0.0
            out.append(RingAssignment(org, ring.name, delay))
    return tuple(out)


def ring_sequence(plan: Iterable[RingAssignment]) -> tuple[Ring, ...]:
    """The rings a rollout goes through: those with at least one org, in `RING_ORDER`."""
    used = {a.ring for a in plan}
    return tuple(r for r in RING_ORDER if r in used)


def eligible_from(a: RingAssignment, broad_done_at: dt.datetime | None) -> dt.datetime | None:
    """When a `delayed` org may first run the version (None: not yet known, broad not done).

    Other rings have no time bound of their own (their order is the controller's).
    """
    if a.ring is not Ring.DELAYED:
        raise ValueError("only delayed orgs have an eligibility time")
    if broad_done_at is None:
        return None
    return broad_done_at + dt.timedelta(hours=a.delay_h)


def org_percents(
    plan: Iterable[RingAssignment],
    ring: Ring,
    percent: float,
    *,
    broad_done_at: dt.datetime | None,
    now: dt.datetime,
) -> Mapping[str, float]:
    """Per org, the percentage of its endpoints that run the version at `now`.

    `ring` is the rollout's current ring and `percent` its stage. Earlier rings 100, the
    current ring `percent`, later rings 0; a `delayed` org is at 0 until its delay after
    `broad_done_at` has passed (`eligible_from`), whatever `ring` is.
    """
    if not 0.0 <= percent <= 100.0:
        raise ValueError("percent must be in [0, 100]")
    at = RING_ORDER.index(ring)
    out: dict[str, float] = {}
    for a in plan:
        k = RING_ORDER.index(a.ring)
        p = 100.0 if k < at else percent if k == at else 0.0
        if a.ring is Ring.DELAYED:
            start = eligible_from(a, broad_done_at)
            if start is None or now < start:
                p = 0.0
        out[a.org_id] = p
    return out
