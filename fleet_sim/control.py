"""What both simulation modes share: models in play, decision tables, operator actions, records.

- `ModelRegistry`: each declared model version's real scores (from `fleet_sim.scoring`), its
  thresholds, whether it is signed, its field behaviour (score bias, self-test failure share).
- `DecisionTables`: for the cohort mode, the verdict of every catalog sample under one
  (model version, `DecisionContext`), computed by calling `agent.decision.decide` once per
  (sample, context) and then broadcast to every encounter with that pair, so a cohort verdict
  is by construction the verdict `agent.engine.evaluate` gives for the same inputs. Beside it,
  the verdict the baseline model would give under the same policy, for counting *new* alerts.
- `RolloutHook`: where the rollout controller plugs in (`fleet_sim.rollout`): the fleet calls
  `tick` every simulated hour; assignment reaches endpoints only through signed policy and
  `agent.policy.assigned_version` (`Fleet.assigned_models`), never from the hook.
- `Recorder`: per (day, org) counts, adoption samples, kill-switch first-seen times, counters.
- `Fleet`: applies the scenario's operator actions at their times through the backend link.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from agent.bundle import Thresholds
from agent.decision import DecisionContext, Mode, Verdict
from agent.engine import context_for
from agent.policy import (
    EffectivePolicy,
    RolloutAssignment,
    assigned_versions,
    canary_buckets,
    list_span,
    resolution_key,
)
from agent.verdict_codes import ALERT_CODES, VERDICT_CODES, decide_batch
from backend.rollout.service import record_arm_day_columns
from fleet_sim._clock import DAY_S, SimClock
from fleet_sim.link.in_process import InProcessLink
from fleet_sim.rollout.controller import ArmDayTally, HealthKind, RolloutRecord
from fleet_sim.scenario import (
    Action,
    AllowlistAdd,
    BackendOutage,
    KillSwitch,
    LabelCampaign,
    PublishModel,
    Revoke,
    ScenarioError,
    SetRing,
    StartRollout,
)
from fleet_sim.world import World

if TYPE_CHECKING:
    from backend.analysis.transition_allowlist import AllowlistCandidate

__all__ = [
    "DecisionTables",
    "Fleet",
    "FleetModel",
    "ModelRegistry",
    "Recorder",
    "RolloutHook",
    "verdict_code",
]

_CODE = VERDICT_CODES
_Span = tuple[dt.datetime | None, dt.datetime | None, int]  # [since, until), table


def verdict_code(v: Verdict) -> int:
    """The small integer the simulator stores for a verdict."""
    return _CODE[v]


@dataclass(frozen=True, slots=True)
class FleetModel:
    """One model version as the fleet meets it."""

    version: int
    scores: npt.NDArray[np.float32]
    thresholds: Thresholds
    signed: bool
    self_test_fail_share: float
    bundle_dir: str

    def self_test_fails(self, ep: int) -> bool:
        """Deterministic per endpoint: the canary self-test fails on this share of endpoints."""
        return bool(self.self_test_fails_many(np.asarray([ep], np.int64))[0])

    def self_test_fails_many(self, eps: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        """`self_test_fails` for many endpoints (the one place the rule is written)."""
        h = (np.asarray(eps, np.int64) * 2654435761) % 10_000
        return np.asarray(h / 10_000.0 < self.self_test_fail_share)


@dataclass(frozen=True, slots=True)
class ModelRegistry:
    """The model versions a scenario declares."""

    models: dict[int, FleetModel]
    baseline: int

    def __getitem__(self, version: int) -> FleetModel:
        return self.models[version]


@dataclass
class DecisionTables:
    """Verdict codes per (model version, decision context) over the whole catalog."""

    sha256: tuple[str, ...]
    label: npt.NDArray[np.int8]
    registry: ModelRegistry
    verdict: list[npt.NDArray[np.int8]] = field(default_factory=list)
    new_alert: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    tripped_twin: list[int] = field(default_factory=list)
    _index: dict[tuple[int, DecisionContext], int] = field(default_factory=dict)
    _decided: dict[tuple[int, DecisionContext], npt.NDArray[np.int8]] = field(default_factory=dict)

    def _codes(self, model: int, ctx: DecisionContext) -> npt.NDArray[np.int8]:
        """`agent.decision.decide` of every sample on `model` in `ctx`, decided once per pair.

        Through its batch form (`agent.verdict_codes.decide_batch`: `decide` once per distinct
        case of the catalogue, not once per sample). A pair recurs: a newer model's table needs
        the baseline's codes in its context, which the baseline's own table in that context
        already decided (or will).
        """
        hit = self._decided.get((model, ctx))
        if hit is None:
            scores = self.registry[model].scores.astype(np.float64)  # as float(s) per sample
            every = np.arange(len(self.sha256), dtype=np.intp)
            hit = self._decided[model, ctx] = decide_batch(ctx, self.sha256, every, scores)
        return hit

    def index(self, model: int, policy: EffectivePolicy | None, now: dt.datetime) -> int:
        """The table of `model` under `policy` (untripped); its tripped twin is registered too."""
        idx = self._get(model, policy, now, False)
        if self.tripped_twin[idx] < 0:
            self.tripped_twin[idx] = self._get(model, policy, now, True)
        return idx

    def _get(
        self, model: int, policy: EffectivePolicy | None, now: dt.datetime, tripped: bool
    ) -> int:
        m = self.registry[model]
        ctx = context_for(policy, m.thresholds, now, breaker_tripped=tripped)
        key = (model, ctx)
        idx = self._index.get(key)
        if idx is not None:
            return idx
        codes = self._codes(model, ctx)
        base = self.registry[self.registry.baseline]
        bctx = context_for(policy, base.thresholds, now, breaker_tripped=tripped)
        base_codes = codes if model == base.version else self._codes(self.registry.baseline, bctx)
        new = ALERT_CODES[codes] & ~ALERT_CODES[base_codes]
        idx = len(self.verdict)
        self.verdict.append(codes)
        self.new_alert.append(new)
        self.tripped_twin.append(idx if tripped else -1)
        self._index[key] = idx
        return idx

    def stacked(self) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
        """All tables as 2-D arrays (table, sample)."""
        return np.stack(self.verdict), np.stack(self.new_alert)


class RolloutHook(Protocol):
    """What a running rollout controller needs from the simulated fleet (see `fleet_sim.rollout`).

    Assignment is not asked of the hook: it travels in signed policy, and each endpoint picks its
    model with `agent.policy.assigned_version` at check-in (`Fleet.assigned_models`).
    """

    @property
    def is_active(self) -> bool:
        """True while the rollout still wants evidence."""
        ...

    @property
    def record(self) -> RolloutRecord:
        """What the run keeps of this rollout."""
        ...

    def tick(self, t: float, recorder: Recorder) -> None:
        """Called every simulated hour after the evidence is written; may halt or advance."""
        ...


@dataclass
class Recorder:
    """Everything a run measures, in arrays (day, org) plus counters and samples."""

    n_days: int
    n_orgs: int
    n_endpoints: int
    enc: npt.NDArray[np.int64] = field(init=False)
    mal_enc: npt.NDArray[np.int64] = field(init=False)
    alerts: npt.NDArray[np.int64] = field(init=False)
    fp_alerts: npt.NDArray[np.int64] = field(init=False)
    new_fp: npt.NDArray[np.int64] = field(init=False)
    mal_alerts: npt.NDArray[np.int64] = field(init=False)
    counters: dict[str, int] = field(default_factory=dict)
    adoption: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    tracked: dict[int, tuple[float, npt.NDArray[np.float64]]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    kill_switches: list[int] = field(default_factory=list)
    rollouts: list[RolloutRecord] = field(default_factory=list)
    installed: dict[int, npt.NDArray[np.bool_]] = field(default_factory=dict)
    org_rings: dict[int, str] = field(default_factory=dict)  # world org index -> ring (set_ring)
    track_log: list[tuple[int, float]] = field(default_factory=list)  # every `track` call
    # wall-clock figures for benchmarks (milliseconds): they differ run to run, so they are kept
    # apart from `counters` and out of the report, whose results are the same for a seed
    timings: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (self.n_days, self.n_orgs)
        self.enc = np.zeros(shape, np.int64)
        self.mal_enc = np.zeros(shape, np.int64)
        self.alerts = np.zeros(shape, np.int64)
        self.fp_alerts = np.zeros(shape, np.int64)
        self.new_fp = np.zeros(shape, np.int64)
        self.mal_alerts = np.zeros(shape, np.int64)

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        self.counters[name] = self.counters.get(name, 0) + int(n)

    def time(self, name: str, seconds: float) -> None:
        """Add `seconds` (as whole milliseconds) to wall-clock figure `name` (`timings`)."""
        self.timings[name] = self.timings.get(name, 0) + round(seconds * 1000)

    def note_installs(
        self, eps: npt.NDArray[np.integer], versions: npt.NDArray[np.integer]
    ) -> None:
        """Mark that endpoints `eps` installed `versions` (who ever ran a version, by ring)."""
        for v in np.unique(versions).tolist():
            seen = self.installed.get(int(v))
            if seen is None:
                seen = self.installed[int(v)] = np.zeros(self.n_endpoints, bool)
            seen[eps[versions == v]] = True

    def track(self, policy_version: int, t: float) -> None:
        """Start timing how fast policy `policy_version` reaches endpoints."""
        self.tracked[policy_version] = (t, np.full(self.n_endpoints, np.inf))
        self.track_log.append((policy_version, t))


@dataclass
class Fleet:
    """World, backend link, models, tables, rollout hook and records of one arm's run."""

    world: World
    link: InProcessLink
    registry: ModelRegistry
    clock: SimClock
    recorder: Recorder
    tables: DecisionTables
    rollout: RolloutHook | None = None
    predictor: Callable[[int, int, dt.datetime, bool], Sequence[AllowlistCandidate]] | None = None
    revoked: set[int] = field(default_factory=set)
    flush_hook: Callable[[float], None] | None = None
    rollout_starter: Callable[[StartRollout, float], RolloutHook] | None = None
    tally: ArmDayTally | None = None
    keep_evidence: bool = False
    evidence_rows: int = 0
    own_orgs: tuple[int, int] | None = None  # the orgs this view simulates (a shard); None: all
    _ctx_cache: dict[tuple[int, int, int], int] = field(default_factory=dict)
    _luts: dict[int, tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]] = field(
        default_factory=dict
    )
    _cohorts: dict[tuple[int, RolloutAssignment, int | None], npt.NDArray[np.int32]] = field(
        default_factory=dict
    )
    _full: dict[int, npt.NDArray[np.int32]] = field(default_factory=dict)
    _salts: dict[tuple[str, int], npt.NDArray[np.int16]] = field(default_factory=dict)
    _resolved: dict[tuple[int, str | None], EffectivePolicy] = field(default_factory=dict)
    _spans: dict[tuple[int, str | None, int], list[_Span]] = field(default_factory=dict)

    def effective(self, policy_version: int, org: int) -> EffectivePolicy:
        """Policy `policy_version` as org `org` (world index) obeys it (`link.effective`)."""
        return self._resolve(policy_version, org)[1]

    def _resolve(self, policy_version: int, org: int) -> tuple[str | None, EffectivePolicy]:
        """`effective` and its `agent.policy.resolution_key`, resolved once per key.

        Orgs with equal keys resolve to equal policies (the agent's rule): the orgs a document
        names no override for share one resolution, not one per org (a thousand orgs, each
        publication).
        """
        link = self.link
        key = resolution_key(link.docs[policy_version], link.org_ids[org])
        eff = self._resolved.get((policy_version, key))
        if eff is None:
            eff = self._resolved[policy_version, key] = link.effective(policy_version, org)
        return key, eff

    def table(self, policy_version: int, org: int, model: int, t: float) -> int:
        """Decision table index for an endpoint of `org` on `model` under `policy_version`.

        What the context depends on is asked of the agent: orgs with the same
        `agent.policy.resolution_key` obey the same policy, and its context is the same
        throughout an `agent.policy.list_span`; so a table is looked up once per (policy,
        key, model, span), not once per org.
        """
        key = (policy_version, org, model)
        idx = self._ctx_cache.get(key)
        if idx is None:
            if policy_version > 0:
                rk, eff = self._resolve(policy_version, org)
            else:
                rk, eff = None, None
            now = self.clock.at(t)
            spans = self._spans.setdefault((policy_version, rk, model), [])
            for since, until, i in spans:
                if (since is None or since <= now) and (until is None or now < until):
                    idx = i
                    break
            else:
                idx = self.tables.index(model, eff, now)
                spans.append((*list_span(eff, now), idx))
            self._ctx_cache[key] = idx
        return idx

    def policy_model(self, policy_version: int, org: int) -> int | None:
        """The model the policy assigns to `org` (None: keep what runs)."""
        return self.effective(policy_version, org).model_version

    def mode_of(self, policy_version: int, org: int) -> Mode:
        """The policy's mode for `org`."""
        return self.effective(policy_version, org).mode

    def apply(self, action: Action, t: float) -> None:
        """Carry out one operator action at simulated second `t`.

        Raises:
            ScenarioError: the action cannot be carried out (e.g. no transition predictor).
        """
        now = self.clock.at(t)
        rec = self.recorder
        if isinstance(action, PublishModel):
            v = self.link.assign_model(action.version, action.org, now)
            rec.events.append((t, f"publish model v{action.version} ({action.org or 'fleet'})"))
            rec.track(v, t)
        elif isinstance(action, KillSwitch):
            v = self.link.set_mode(Mode(action.mode), action.org, now)
            rec.events.append((t, f"mode {action.mode} ({action.org or 'fleet'})"))
            rec.track(v, t)
            rec.kill_switches.append(v)
        elif isinstance(action, AllowlistAdd):
            if action.source == "transition":
                if self.predictor is None:
                    raise ScenarioError("allowlist_add source=transition needs the predictor")
                if self.flush_hook is not None:
                    self.flush_hook(t)
                cands = self.predictor(action.old, action.new, now, action.evidence)
                # each candidate applied by its own scope (org-local evidence: that org only)
                v = self.link.add_allowlist_candidates(cands, action.org, now)
                # scopes by world name in world order (pseudonyms are drawn at random per run)
                pos = {o: i for i, o in enumerate(self.link.org_ids)}
                at = sorted({pos[c.org_id] for c in cands if c.org_id})
                scopes = ["fleet"] * any(c.org_id is None for c in cands)
                scopes += [self.link.org_names[i] for i in at]
                rec.events.append(
                    (t, f"allowlist +{len(cands)} transition candidates ({', '.join(scopes)})")
                )
                rec.count("allowlist_entries", len(cands))
            else:
                shas = list(action.sha256)
                v = self.link.add_allowlist(shas, action.org, now, "scenario")
                rec.events.append((t, f"allowlist +{len(shas)} ({action.org or 'fleet'})"))
                rec.count("allowlist_entries", len(shas))
            rec.track(v, t)
        elif isinstance(action, StartRollout):
            if self.rollout_starter is None:
                raise ScenarioError("start_rollout needs the rollout controller")
            # the starter folds what was delivered so far (`flush_hook`) only when it runs the
            # transition prediction, the one reader of the aggregates at that point
            self.rollout = self.rollout_starter(action, t)
            rec.rollouts.append(self.rollout.record)
            if self.tally is None:
                self.tally = ArmDayTally(self.clock.epoch_day, self.world.ep_org, self.world.n_orgs)
            rec.events.append((t, f"rollout v{action.version} stages {list(action.stages)}"))
            rec.track(self.link.policy_version, t)
        elif isinstance(action, Revoke):
            self.revoked.add(action.version)
            v = self.link.assign_model(action.fallback, None, now)
            rec.events.append((t, f"revoke v{action.version} -> v{action.fallback}"))
            rec.track(v, t)
        elif isinstance(action, SetRing):
            for name in action.orgs:
                if name not in self.link.org_names:
                    raise ScenarioError(f"set_ring: no org {name!r} in the world")
                v = self.link.set_ring(name, action.ring, action.delay_hours, now)
                rec.org_rings[self.link.org_names.index(name)] = action.ring
            rec.events.append((t, f"ring {action.ring}: {len(action.orgs)} org(s)"))
            rec.track(v, t)
        elif isinstance(action, BackendOutage):
            self.link.outages.append((t, action.until_s))
            rec.events.append((t, f"backend outage until +{action.until_s / 3600:.1f} h"))
        elif isinstance(action, LabelCampaign):
            camp = next(c for c in self.world.campaigns if c.name == action.campaign)
            n = self.link.label_malicious(camp.samples, self.clock.at(camp.start_s), now)
            rec.events.append((t, f"label feed: campaign {camp.name} malicious ({n} samples)"))

    def _lut(self, policy_version: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
        hit = self._luts.get(policy_version)
        if hit is None:
            effs = [self.effective(policy_version, o) for o in range(self.world.n_orgs)]
            models = np.asarray([e.model_version or 0 for e in effs], np.int32)
            staged = np.asarray([e.rollout is not None for e in effs], bool)
            hit = self._luts[policy_version] = (models, staged)
        return hit

    def _cohort(self, policy_version: int, org: int) -> npt.NDArray[np.int32]:
        eff = self.effective(policy_version, org)
        assert eff.rollout is not None
        key = (org, eff.rollout, eff.model_version)
        arr = self._cohorts.get(key)
        if arr is None:
            buckets = self._buckets(eff.rollout.salt, org)
            arr = self._cohorts[key] = assigned_versions(eff, buckets).astype(np.int32)
        return arr

    def _buckets(self, salt: str, org: int) -> npt.NDArray[np.int16]:
        """The `canary_bucket` of each endpoint of `org` for `salt`.

        Hashed once per salt and org: stages share it, and a shard hashes only its own orgs'.
        """
        hit = self._salts.get((salt, org))
        if hit is None:
            w = self.world
            first, size = int(w.org_first[org]), int(w.org_size[org])
            hit = self._salts[salt, org] = canary_buckets(salt, w.endpoint_ids(first, first + size))
        return hit

    def assigned_models(
        self, policy_version: int, eps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int32]:
        """The model each endpoint in `eps` must run under policy `policy_version` (0: none).

        `agent.policy.assigned_versions` (the agent's rule, vectorized over each endpoint's
        `canary_bucket`, hashed once per salt) decides, once per org and rollout block, so a
        simulated endpoint follows a staged rollout, its halt and its rollback exactly as an
        agent does. A revoked version is never
        assigned: those endpoints get the org's `model_version`.
        """
        models, staged = self._lut(policy_version)
        org = self.world.ep_org.take(eps)
        if not staged.take(org).any():
            return models.take(org)
        out = self._assigned_all(policy_version).take(eps)
        if self.revoked:
            bad = np.isin(out, list(self.revoked))
            out[bad] = models[org[bad]]
        return out

    def _assigned_all(self, policy_version: int) -> npt.NDArray[np.int32]:
        """Every endpoint's assigned model under a staged policy (built once per version).

        One gather per check-in batch instead of a pass over the batch per staged org.
        """
        hit = self._full.get(policy_version)
        if hit is None:
            models, staged = self._lut(policy_version)
            w = self.world
            hit = models[w.ep_org]
            lo, hi = (0, w.n_orgs) if self.own_orgs is None else self.own_orgs
            for o in (np.flatnonzero(staged[lo:hi]) + lo).tolist():
                a = int(w.org_first[o])
                hit[a : a + int(w.org_size[o])] = self._cohort(policy_version, o)
            self._full[policy_version] = hit
        return hit

    def target_model(self, policy_version: int, ep: int) -> int | None:
        """`assigned_models` for one endpoint (None: the policy assigns nothing)."""
        v = int(self.assigned_models(policy_version, np.asarray([ep], np.int64))[0])
        return v or None

    def report_health(
        self,
        kind: HealthKind,
        t: npt.NDArray[np.float64],
        eps: npt.NDArray[np.integer],
        models: npt.NDArray[np.integer],
    ) -> None:
        """Count health events the agents report (self-test failure, model error, breaker trip).

        `models` is the version the event concerns: the candidate that failed its self-test,
        the active model for errors and breaker trips.
        """
        if self.tally is not None and eps.size:
            self.tally.add_health(kind, t, eps, models)

    def report_events(
        self,
        t: npt.NDArray[np.float64],
        eps: npt.NDArray[np.integer],
        models: npt.NDArray[np.integer],
        verdicts: npt.NDArray[np.integer],
    ) -> None:
        """Count delivered telemetry events into the endpoint-day evidence (when collected)."""
        if self.tally is not None and eps.size:
            self.tally.add_events(t, eps, models, verdicts)

    def hourly(self, t: float) -> None:
        """Write the endpoint-day evidence, then tick the rollout controller (if any).

        Evidence is collected while a rollout is active, and throughout when the scenario asks
        for it (`endpoint_days = true`): the same counters the backend records from agents
        (`backend.ingest.endpoint_day_rows`); the health totals written are counted as
        `backend_self_test_failures`, `backend_model_errors` and `backend_breaker_trips`.
        """
        if self.tally is not None:
            cols = self.tally.take_columns(self.link.org_ids)
            if len(cols):
                self.evidence_rows += record_arm_day_columns(self.link.store, cols)
                for name in ("self_test_failures", "model_errors", "breaker_trips"):
                    self.recorder.count(f"backend_{name}", sum(getattr(cols, name)))
        if self.rollout is not None:
            self.rollout.tick(t, self.recorder)
            if not self.rollout.is_active and not self.keep_evidence:
                self.tally = None

    def day_of(self, t: float) -> int:
        """The simulated day index of second `t` (clamped to the record)."""
        return min(int(t // DAY_S), self.recorder.n_days - 1)


def n_days(days: float) -> int:
    """Whole days recorded for a run of `days` (partial last day included)."""
    return max(1, math.ceil(days - 1e-9))
