"""The transition allowlist that costs no recall: only negative flips with benign evidence.

A negative flip (`backend.analysis.transition`) is a sample the old version allowed, the new one
alerts on, and nobody has labelled malicious. That is not the same as benign: a new true detection
of malware no feed knows yet is a negative flip too, and allowlisting it hands the new version's
catch back to the attacker. So a flip enters the allowlist only with evidence that it is
benign, and every entry expires (`AllowlistConfig.ttl`) so a mistake does not outlive the
transition.

The rules, each with its threshold (`AllowlistConfig`, defaults documented there), checked in
this order; the first that holds is the entry's reason:
- `label`: labelled benign as of `now` (analyst, feed or customer report). A malicious label
  as of `now` refuses the flip outright, whatever else holds.
- `prevalent`: seen in at least `min_orgs` orgs on at least `min_endpoints` distinct endpoints,
  first seen at least `min_age` before `now`. Widely deployed, long-lived software; a campaign
  is young when the new version first catches it.
- `established`: within one org, seen on at least `min_org_endpoints` endpoints on at least
  `min_days` distinct days, first seen at least `min_age` before `now`: the org's in-house
  software, present since before the campaign season of the new version.
Anything else is refused and listed with why (`refused`), so an operator can label it.

Scope (`AllowlistCandidate.org_id`): only fleet-level evidence (`label`, `prevalent`) yields a
fleet-wide entry (`org_id=None`). `established` is one org's own evidence, so it yields one
entry per org whose own aggregates satisfy it, applied to that org's policy only: otherwise an
attacker could enrol a few endpoints in org A, report a malicious sample for a few days, and get
it allowlisted for org B. `backend.admin.add_allowlist_candidates` applies candidates by scope;
every consumer (CLI, console, simulator, demo) goes through it.

The evidence is read from the aggregates as of `now` (first seen, days, distinct endpoints by
merging the rows' sketches, orgs), the labels through `LabelBook` as of `now`: adding rows from
after `now` changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.policy import ListEntry
from backend import sketch
from backend.analysis.labels import LabelBook, LabelValue
from backend.store import AggregateStore

__all__ = [
    "AllowlistCandidate",
    "AllowlistConfig",
    "AllowlistDecision",
    "FlipEvidence",
    "admit_flips",
    "evidence_allowlist",
    "gather_flip_evidence",
]

_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class AllowlistConfig:
    """Thresholds of the benign-evidence rules and the entries' lifetime.

    Defaults: `min_age` 3 days (a campaign caught only by the new version is days old when the
    switch comes; software in use for longer has a history); `min_orgs` 3 and `min_endpoints`
    10 (prevalence across customers); `min_org_endpoints` 5 on `min_days` 3 (established
    in-house software); `ttl` 30 days.
    """

    min_age: dt.timedelta = dt.timedelta(days=3)
    min_orgs: int = 3
    min_endpoints: int = 10
    min_org_endpoints: int = 5
    min_days: int = 3
    ttl: dt.timedelta = dt.timedelta(days=30)

    def __post_init__(self) -> None:
        if self.min_age < dt.timedelta(0) or self.ttl <= dt.timedelta(0):
            raise ValueError("min_age must be >= 0 and ttl > 0")
        if min(self.min_orgs, self.min_endpoints, self.min_org_endpoints, self.min_days) < 1:
            raise ValueError("minimum counts must be >= 1")


@dataclass(frozen=True, slots=True)
class FlipEvidence:
    """What the aggregates say about one flipped sample, fleet-wide and per org."""

    sha256: str
    first_seen: dt.datetime
    orgs: int
    endpoints: int
    org_endpoints: Mapping[str, int] = field(default_factory=dict)
    org_days: Mapping[str, int] = field(default_factory=dict)
    org_first_seen: Mapping[str, dt.datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AllowlistCandidate:
    """One admitted entry and where it may apply: `org_id` None is fleet-wide, else that org."""

    entry: ListEntry
    org_id: str | None

    @property
    def scope(self) -> str:
        """Either "fleet" or "org"."""
        return "fleet" if self.org_id is None else "org"


@dataclass(frozen=True, slots=True)
class AllowlistDecision:
    """The candidates admitted (rule as reason, with their scope) and the flips refused."""

    candidates: tuple[AllowlistCandidate, ...]
    refused: tuple[tuple[str, str], ...]

    @property
    def entries(self) -> tuple[ListEntry, ...]:
        """Every admitted entry, whatever its scope (one per candidate)."""
        return tuple(c.entry for c in self.candidates)

    @property
    def sha256s(self) -> frozenset[str]:
        """The sha256s admitted for any scope (not an allowlist to apply: see `for_org`)."""
        return frozenset(c.entry.sha256 for c in self.candidates)

    @property
    def fleet_sha256s(self) -> frozenset[str]:
        """The sha256s admitted fleet-wide (fleet-level evidence)."""
        return frozenset(c.entry.sha256 for c in self.candidates if c.org_id is None)

    def for_org(self, org_id: str) -> frozenset[str]:
        """The sha256s this decision allowlists for `org_id`: fleet-wide plus its own."""
        return frozenset(
            c.entry.sha256 for c in self.candidates if c.org_id is None or c.org_id == org_id
        )


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def gather_flip_evidence(
    store: AggregateStore, sha256s: Iterable[str], *, now: dt.datetime
) -> dict[str, FlipEvidence]:
    """The evidence of each sample in `sha256s`, from active aggregates before `now`."""
    want = set(sha256s)
    until = int(now.timestamp() * 1000)
    first: dict[str, int] = {}
    sk: dict[str, bytes] = {}
    org_sk: dict[tuple[str, str], bytes] = {}
    org_days: dict[tuple[str, str], set[int]] = {}
    org_first: dict[tuple[str, str], int] = {}
    for batch in store.iter_aggregates(shadow=False, until_ms=until):
        for r in batch:
            if r.sha256 not in want or r.first_seen_ms >= until:
                continue
            k = (r.sha256, r.org_id)
            first[r.sha256] = min(first.get(r.sha256, r.first_seen_ms), r.first_seen_ms)
            org_first[k] = min(org_first.get(k, r.first_seen_ms), r.first_seen_ms)
            sk[r.sha256] = sketch.merge(sk.get(r.sha256), r.endpoints)
            org_sk[k] = sketch.merge(org_sk.get(k), r.endpoints)
            org_days.setdefault(k, set()).add(r.day)
    out = {}
    for sha, ms in first.items():
        orgs = sorted(o for s, o in org_sk if s == sha)
        out[sha] = FlipEvidence(
            sha,
            _at(ms),
            len(orgs),
            sketch.estimate(sk[sha]),
            {o: sketch.estimate(org_sk[(sha, o)]) for o in orgs},
            {o: len(org_days[(sha, o)]) for o in orgs},
            {o: _at(org_first[(sha, o)]) for o in orgs},
        )
    return out


def _rule(
    ev: FlipEvidence | None, label: LabelValue | None, now: dt.datetime, cfg: AllowlistConfig
) -> tuple[str | None, list[tuple[str | None, str]] | str]:
    """(rule that admits and its [(scope org or None for fleet, why)], or (None, why refused))."""
    if label is LabelValue.MALICIOUS:
        return None, "labelled malicious"
    if label is LabelValue.BENIGN:
        return "label", [(None, "labelled benign")]
    if ev is None:
        return None, "no aggregates before now"
    old = now - ev.first_seen >= cfg.min_age
    if old and ev.orgs >= cfg.min_orgs and ev.endpoints >= cfg.min_endpoints:
        return "prevalent", [(None, f"{ev.orgs} orgs, {ev.endpoints} endpoints")]
    local: list[tuple[str | None, str]] = []
    for org, n in sorted(ev.org_endpoints.items()):
        days = ev.org_days.get(org, 0)
        since = ev.org_first_seen.get(org, now)
        if n >= cfg.min_org_endpoints and days >= cfg.min_days and now - since >= cfg.min_age:
            local.append((org, f"{n} endpoints on {days} days in {org}"))
    if local:  # one org's own evidence: an entry for that org only
        return "established", local
    age_h = (now - ev.first_seen).total_seconds() / 3600
    return None, (
        f"no benign evidence: {ev.orgs} org(s), {ev.endpoints} endpoint(s), first seen "
        f"{age_h:.0f} h before"
    )


def admit_flips(
    flips: Iterable[str],
    evidence: Mapping[str, FlipEvidence],
    labels: LabelBook,
    *,
    now: dt.datetime,
    config: AllowlistConfig | None = None,
    author: str = "fleetward-transition",
    corrected_labels: bool = False,
) -> AllowlistDecision:
    """Apply the benign-evidence rules (module docstring) to the negative flips `flips`.

    Labels are those known at `now` (`corrected_labels`: labelled by `now`, backdated ones
    included; see `backend.analysis.labels`). Each admitted flip becomes one fleet-wide candidate
    (`label`, `prevalent`) or one candidate per org whose own evidence holds (`established`).
    """
    cfg = config or AllowlistConfig()
    candidates: list[AllowlistCandidate] = []
    refused: list[tuple[str, str]] = []
    for sha in sorted(set(flips)):
        change = labels.label_as_of(sha, now, corrected=corrected_labels)
        rule, why = _rule(evidence.get(sha), change.label if change else None, now, cfg)
        if rule is None:
            assert isinstance(why, str)
            refused.append((sha, why))
            continue
        assert isinstance(why, list)
        for org, text in why:
            entry = ListEntry(sha, f"transition, {rule}: {text}", author, now, now + cfg.ttl)
            candidates.append(AllowlistCandidate(entry, org))
    return AllowlistDecision(tuple(candidates), tuple(refused))


def evidence_allowlist(
    store: AggregateStore,
    flips: Iterable[str],
    *,
    now: dt.datetime,
    config: AllowlistConfig | None = None,
    corrected_labels: bool = False,
) -> AllowlistDecision:
    """The transition allowlist for the negative flips `flips` (e.g. a report's allowlist).

    Reads the evidence and the labels as of `now` from `store` (known at `now` by default;
    `corrected_labels`: every label from its `labelled_at`), then `admit_flips`.
    """
    flips = sorted(set(flips))
    evidence = gather_flip_evidence(store, flips, now=now)
    labels = LabelBook(store.iter_labels(until=now))
    return admit_flips(
        flips, evidence, labels, now=now, config=config, corrected_labels=corrected_labels
    )
