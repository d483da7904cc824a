"""The seeded world a scenario describes: orgs, endpoints, their rhythms and the sample catalog.

Everything random is drawn here, once, from one `numpy.random.Generator` seeded by the scenario,
so the exact and cohort modes simulate the same world. The behaviour functions (`online`,
`global_cdf`, `campaign_rate`) are pure functions of the world and a time, piecewise constant on
a 15-minute grid (`QUARTER_S`): both modes read the same values, which is what lets a test hold
their statistics together.

- Orgs have heavy-tailed (Pareto) sizes: a few large ones, many small ones.
- Endpoints are laptops (online on a workday window, shifted per endpoint) or servers (always
  on); each may have one offline spell (a trip, a broken network) and checks in every
  `checkin_s` seconds from its own phase.
- The catalog comes from the corpus: global software with Zipf popularity (era-2 samples rise
  with `drift_per_day`), org-specific in-house software mapped from the corpus's `org_hint`
  (world org `i` runs in-house set `i % N_INHOUSE`; sets with index % 4 == 0 ship through the
  commercial protector, the seed of the v2 FP surge), background era-1 malware, and campaigns
  of one malicious family hitting a share of orgs from a start time with a ramp.
- Label noise: `reported_label` flips a share of the true labels (what an analyst feed says).
- Push: a `push_share` of endpoints holds a notice channel (`ep_push`); the notice latency of
  each publication is drawn per endpoint from a stream of its own (`push_latency`), so both
  modes see the same latencies and the rest of the world does not move when push is toggled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fleet_sim.scenario import CampaignModel, ScenarioError, WorldModel, parse_offset
from model_store.corpus import N_INHOUSE, Corpus

__all__ = ["QUARTER_S", "Campaign", "Catalog", "World", "build_world", "endpoint_ids"]

QUARTER_S = 900.0
_Q_PER_DAY = 96

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Catalog:
    """The samples endpoints can meet (corpus order), with truth, noisy labels and groups."""

    sha256: tuple[str, ...]
    family: tuple[str, ...]
    label: npt.NDArray[np.int8]
    reported_label: npt.NDArray[np.int8]
    era: npt.NDArray[np.int8]
    global_idx: I64
    global_weight: F64
    global_era2: B
    malware_idx: I64
    inhouse: dict[int, I64]

    @property
    def size(self) -> int:
        """Number of samples."""
        return len(self.sha256)

    def family_idx(self, name: str) -> I64:
        """Indices of the samples of family `name`."""
        return np.asarray([i for i, f in enumerate(self.family) if f == name], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Campaign:
    """A malware campaign resolved against the world."""

    name: str
    samples: I64
    targets: B
    start_s: float
    end_s: float
    ramp_s: float
    rate_per_s: float


_endpoint_id = "sim{:08d}".format  # the pseudonym of endpoint ep: one format, both forms


def endpoint_ids(first: int, stop: int) -> list[str]:
    """The pseudonyms of endpoints first..stop-1 (`World.endpoint_ids`; the fold hashes them)."""
    return list(map(_endpoint_id, range(first, stop)))


@dataclass(frozen=True, slots=True)
class World:
    """Array state of the whole world (endpoints sorted by org)."""

    seed: int
    spec: WorldModel
    days: float
    org_names: tuple[str, ...]
    org_size: I64
    org_first: I64
    org_inhouse: I64
    org_protector: B
    ep_org: I32
    ep_server: B
    ep_shift_q: I32
    ep_checkin_s: F64
    ep_phase_s: F64
    ep_spell_start: F64
    ep_spell_end: F64
    ep_hash_bucket: npt.NDArray[np.float32]
    ep_push: B
    catalog: Catalog
    campaigns: tuple[Campaign, ...]
    _cdf_cache: dict[int, F64] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_endpoints(self) -> int:
        """Number of endpoints."""
        return int(self.ep_org.size)

    @property
    def n_orgs(self) -> int:
        """Number of organizations."""
        return len(self.org_names)

    @property
    def base_rate_per_s(self) -> float:
        """Scans per second per online endpoint, before campaigns."""
        return self.spec.scans_per_hour / 3600.0

    def endpoint_id(self, ep: int) -> str:
        """The pseudonym endpoint `ep` uses in telemetry."""
        return _endpoint_id(ep)

    def endpoint_ids(self, first: int, stop: int) -> list[str]:
        """`endpoint_id` of endpoints [`first`, `stop`), in order."""
        return endpoint_ids(first, stop)

    def online(self, t: float, idx: I64 | slice | None = None) -> B:
        """Which endpoints (all, or `idx`) are online at simulated second `t`."""
        if idx is None or isinstance(idx, slice):
            sel = slice(None) if idx is None else idx
            shift, s0, s1 = self.ep_shift_q[sel], self.ep_spell_start[sel], self.ep_spell_end[sel]
            server = self.ep_server[sel]
        else:  # (`take`: cheaper than [] with an index array)
            shift, s0, s1 = (
                self.ep_shift_q.take(idx),
                self.ep_spell_start.take(idx),
                self.ep_spell_end.take(idx),
            )
            server = self.ep_server.take(idx)
        q = int(t // QUARTER_S)
        start, end = self.spec.workday_hours
        local = (q + shift) % _Q_PER_DAY
        at_work = (local >= start * 4) & (local < end * 4)
        in_spell = (s0 <= t) & (t < s1)
        return np.asarray((server | at_work) & ~in_spell)

    def online_one(self, ep: int, t: float) -> bool:
        """`online` for one endpoint (the exact mode's per-process check)."""
        if self.ep_spell_start[ep] <= t < self.ep_spell_end[ep]:
            return False
        if self.ep_server[ep]:
            return True
        start, end = self.spec.workday_hours
        local = (int(t // QUARTER_S) + int(self.ep_shift_q[ep])) % _Q_PER_DAY
        return start * 4 <= local < end * 4

    def push_latency(self, publication: int, idx: I64) -> F64:
        """Notice latency (s) of publication number `publication` to endpoints `idx`."""
        lo, hi = self.spec.push_latency_s
        rng = np.random.default_rng([self.seed, 0x9057, publication])
        # one draw per endpoint in index order; those past the largest asked are not drawn
        # (a draw's first k numbers do not depend on how many follow)
        n = min(self.n_endpoints, int(idx.max()) + 1) if idx.size else 0
        return np.asarray(rng.uniform(lo, hi, n).take(idx), np.float64)

    def global_cdf(self, day: int) -> F64:
        """Cumulative popularity of the global samples on `day` (era-2 rising with drift)."""
        cdf = self._cdf_cache.get(day)
        if cdf is None:
            era2 = min(1.0, self.spec.era2_popularity + self.spec.drift_per_day * day)
            w = self.catalog.global_weight * np.where(self.catalog.global_era2, era2, 1.0)
            cdf = np.cumsum(w)
            cdf /= cdf[-1]
            self._cdf_cache[day] = cdf
        return cdf

    def campaign_rate(self, c: Campaign, t: float) -> float:
        """Scans of campaign samples per second per online target endpoint in `t`'s quarter."""
        mid = (math.floor(t / QUARTER_S) + 0.5) * QUARTER_S
        if mid < c.start_s or mid >= c.end_s:
            return 0.0
        ramp = 1.0 if c.ramp_s <= 0 else min(1.0, (mid - c.start_s) / c.ramp_s)
        return c.rate_per_s * ramp

    def category_shares(self, org: int) -> tuple[float, float, float]:
        """(in-house, background malware, global) shares of an org's base scans."""
        ih = self.spec.inhouse_share if self.org_inhouse[org] >= 0 else 0.0
        mal = self.spec.malware_share if self.catalog.malware_idx.size else 0.0
        return ih, mal, max(0.0, 1.0 - ih - mal)


def _org_sizes(rng: np.random.Generator, n_orgs: int, n_ep: int, alpha: float) -> I64:
    raw = rng.pareto(alpha, n_orgs) + 1.0
    raw = np.sort(raw)[::-1]
    raw = np.minimum(raw, raw.sum() * 0.4)
    share = raw / raw.sum() * (n_ep - n_orgs)
    sizes = np.floor(share).astype(np.int64)
    rest = (n_ep - n_orgs) - int(sizes.sum())
    order = np.argsort(-(share - sizes), kind="stable")
    sizes[order[:rest]] += 1
    return np.asarray(sizes + 1, dtype=np.int64)


def _catalog(corpus: Corpus, rng: np.random.Generator, spec: WorldModel) -> Catalog:
    recs = corpus.records
    label = np.asarray([r.label for r in recs], dtype=np.int8)
    era = np.asarray([r.era for r in recs], dtype=np.int8)
    hint = np.asarray([r.org_hint for r in recs], dtype=np.int64)
    noisy = rng.random(len(recs)) < spec.label_noise
    global_idx = np.flatnonzero((label == 0) & (hint < 0))
    ranks = rng.permutation(global_idx.size) + 1
    weight = 1.0 / ranks.astype(np.float64) ** spec.zipf_s
    malware_idx = np.flatnonzero((label == 1) & (era == 1))
    inhouse = {k: np.flatnonzero(hint == k) for k in range(N_INHOUSE) if np.any(hint == k)}
    return Catalog(
        sha256=tuple(r.sha256 for r in recs),
        family=tuple(r.family for r in recs),
        label=label,
        reported_label=np.where(noisy, 1 - label, label).astype(np.int8),
        era=era,
        global_idx=global_idx.astype(np.int64),
        global_weight=weight,
        global_era2=era[global_idx] == 2,
        malware_idx=malware_idx.astype(np.int64),
        inhouse=inhouse,
    )


def _campaign(c: CampaignModel, cat: Catalog, rng: np.random.Generator, n_orgs: int) -> Campaign:
    samples = cat.family_idx(c.family)
    if samples.size == 0:
        raise ScenarioError(f"campaign {c.name!r}: the corpus has no {c.family!r} samples")
    k = max(1, round(c.target_share * n_orgs))
    targets = np.zeros(n_orgs, dtype=bool)
    targets[rng.choice(n_orgs, size=k, replace=False)] = True
    start = parse_offset(c.start)
    return Campaign(
        name=c.name,
        samples=samples,
        targets=targets,
        start_s=start,
        end_s=start + parse_offset(c.duration),
        ramp_s=parse_offset(c.ramp),
        rate_per_s=c.per_endpoint_per_day / 86_400.0,
    )


def build_world(
    spec: WorldModel,
    corpus: Corpus,
    *,
    seed: int,
    days: float,
    campaigns: tuple[CampaignModel, ...] = (),
) -> World:
    """Draw the world for `spec` from the corpus with `numpy.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    n_ep, n_orgs = spec.endpoints, min(spec.orgs, spec.endpoints)
    sizes = _org_sizes(rng, n_orgs, n_ep, spec.org_size_alpha)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    ep_org = np.repeat(np.arange(n_orgs, dtype=np.int32), sizes)
    cat = _catalog(corpus, rng, spec)
    sets = sorted(cat.inhouse)
    org_inhouse = np.asarray(
        [sets[i % len(sets)] if sets else -1 for i in range(n_orgs)], dtype=np.int64
    )
    server = rng.random(n_ep) >= spec.laptop_share
    shift = rng.integers(-8, 9, size=n_ep).astype(np.int32)  # +-2 h around the workday
    lo, hi = spec.checkin_minutes
    checkin = rng.uniform(lo * 60.0, hi * 60.0, size=n_ep)
    phase = rng.uniform(0.0, 1.0, size=n_ep) * checkin
    horizon = days * 86_400.0
    p_spell = 1.0 - math.exp(-spec.offline_spells_per_week * days / 7.0)
    has_spell = rng.random(n_ep) < p_spell
    s_lo, s_hi = spec.offline_spell_hours
    start_q = np.floor(rng.uniform(0.0, horizon, size=n_ep) / QUARTER_S) * QUARTER_S
    length = np.ceil(rng.uniform(s_lo, s_hi, size=n_ep) * 3600.0 / QUARTER_S) * QUARTER_S
    spell_start = np.where(has_spell, start_q, np.inf)
    spell_end = np.where(has_spell, start_q + length, np.inf)
    bucket = (rng.random(n_ep) * 100.0).astype(np.float32)
    resolved = tuple(_campaign(c, cat, rng, n_orgs) for c in campaigns)
    push_rng = np.random.default_rng([seed, 0x9057])  # its own stream: the world stays put
    push = (push_rng.random(n_ep) < spec.push_share) & spec.push
    return World(
        seed=seed,
        spec=spec,
        days=days,
        org_names=tuple(f"org-{i:04d}" for i in range(n_orgs)),
        org_size=sizes,
        org_first=first,
        org_inhouse=org_inhouse,
        org_protector=np.asarray([k >= 0 and k % 4 == 0 for k in org_inhouse], dtype=bool),
        ep_org=ep_org,
        ep_server=server,
        ep_shift_q=shift,
        ep_checkin_s=checkin,
        ep_phase_s=phase,
        ep_spell_start=spell_start,
        ep_spell_end=spell_end,
        ep_hash_bucket=bucket,
        ep_push=np.asarray(push, dtype=bool),
        catalog=cat,
        campaigns=resolved,
    )
