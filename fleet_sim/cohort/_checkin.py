"""Step 2 of the cohort engine: the check-ins that can change an endpoint's policy or model.

Kept apart because it is where the agent's own adoption rule (`agent.update.adoption.adopt`) meets
the fleet: after a policy is published every endpoint has news; each adopts the policy
published at or before its check-in, installs the model it (or the rollout cohort) assigns
unless it is unsigned or fails the endpoint's self-test, and resets its breaker on a new policy
or model. Settled endpoints leave that set until the next publication (an install still
refused stays in it and retries at each check-in).

Push (ADR 0006): at a publication, each endpoint holding a push channel and online then is
woken after its notice latency (`World.push_latency`, the exact mode's draws) and, if still
online with the backend up, adopts by the same rule; a wake-up comes before the step's
periodic check-ins unless one of those came between the publication and it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.update.adoption import adopt
from fleet_sim.cohort._state import F64, I64, EngineState

__all__ = ["CheckinSteps"]


def _add_counts(counts: I64, values: npt.NDArray[np.integer], sign: int) -> I64:
    """`counts` (by value) plus `sign` times the occurrences in `values`, grown if needed."""
    add = np.bincount(values)
    if add.size > counts.size:
        counts = np.concatenate([counts, np.zeros(add.size - counts.size, counts.dtype)])
    counts[: add.size] += sign * add
    return counts


def _rounds(idx: I64, sel: npt.NDArray[np.bool_], distinct: bool = False) -> list[I64]:
    """Positions of `idx[sel]` in rounds where each endpoint appears at most once, in order.

    Two notices to one endpoint in a step wake it twice; `adopt` takes one offer per endpoint.
    `distinct`: no endpoint appears twice in `idx` (one round, no sort).
    """
    rest = np.flatnonzero(sel)
    if distinct:
        return [rest] if rest.size else []
    out: list[I64] = []
    while rest.size:
        _, first = np.unique(idx[rest], return_index=True)
        first.sort()
        out.append(rest[first])
        rest = np.delete(rest, first)
    return out


class CheckinSteps(EngineState):
    """Step 2 of the engine: the check-ins that can change an endpoint's policy or model."""

    def _checkin_news(self, t0: float, t1: float) -> tuple[F64, npt.NDArray[np.int32]] | None:
        """Check-ins in [t0, t1) of endpoints that have news.

        Returns each endpoint's first switch time in the step (-inf: none, so every encounter
        is after it) and the table it used before, by index - `e_lo`, or None when no endpoint
        switched.
        """
        fleet = self.fleet
        link = fleet.link
        if len(link.published) != self._n_published:  # a new policy: everyone has news
            self._n_published = len(link.published)
            self._pub = (
                np.asarray([v for v, _ in link.published], np.int64),
                np.asarray([fleet.clock.seconds(when) for _, when in link.published]),
            )
            self.settled[:] = False
            self._pending = self._on_loc + self.e_lo
        elif self._went_on.size:  # endpoints back online with news join
            back = self._went_on[~self.settled[self._went_on]]
            if back.size:
                self._pending = np.sort(np.concatenate([self._pending, back]))
        pub_v, pub_t = self._pub
        wake = self._push_due(t0, t1)
        if wake is None and not self._pending.size:
            return None
        sw_time: F64 | None = None
        sw_prev = np.zeros(0, np.int32)

        def note(sw: tuple[I64, F64, npt.NDArray[np.int32]] | None) -> None:
            nonlocal sw_time, sw_prev
            if sw is None:
                return
            if sw_time is None:
                sw_time = np.full(self.e_hi - self.e_lo, -np.inf)
                sw_prev = np.zeros(self.e_hi - self.e_lo, np.int32)
            ch, when, prev = sw
            k = ch - self.e_lo
            first = np.isneginf(sw_time[k])  # keep each endpoint's first switch
            sw_time[k[first]] = when[first]
            sw_prev[k[first]] = prev[first]

        if wake is not None:
            p_idx, p_tp, p_td, single = wake
            early = p_td <= self._next_checkin(p_idx, p_tp)
            distinct = single or self._distinct(p_idx)  # (then one round each)
            for r in _rounds(p_idx, early, distinct):
                note(self._adopt(p_idx[r], p_td[r], pub_v, pub_t))
        u = self._pending
        if u.size:  # (went offline at this quarter: out; settled by a wake-up: out)
            u = u[self.online[u] & ~self.settled[u]]
        idx = u
        c = self._next_checkin(idx, t0)
        while idx.size:
            due = c < t1
            idx, c = idx[due], c[due]
            if idx.size == 0:
                break
            nxt = c + self._iv.take(idx)  # a second check-in in the same step, if any
            up = np.ones(idx.size, bool)
            for a, b in link.outages:
                up &= ~((c >= a) & (c < b))
            if up.all():
                go, cg = idx, c
            else:
                go, cg = idx[up], c[up]
            if go.size:
                note(self._adopt(go, cg, pub_v, pub_t))
            more = ~self.settled.take(idx)
            idx, c = idx[more], nxt[more]
        if wake is not None:  # wake-ups that a periodic check-in came before
            for r in _rounds(p_idx, ~early, distinct):
                note(self._adopt(p_idx[r], p_td[r], pub_v, pub_t))
        self._pending = u[~self.settled[u]]
        return None if sw_time is None else (sw_time, sw_prev)

    def _distinct(self, eps: I64) -> bool:
        """True when no endpoint appears twice in `eps` (this engine's): one pass, no sort."""
        mark = np.zeros(self.e_hi - self.e_lo, bool)
        mark[eps - self.e_lo] = True
        return int(np.count_nonzero(mark)) == eps.size

    def _push_due(self, t0: float, t1: float) -> tuple[I64, F64, F64, bool] | None:
        """Push wake-ups in [t0, t1) that find their endpoint online and the backend up.

        New publications (all made at or after `t0`) first queue a wake-up for each endpoint
        holding a channel and online at the publication. Returns (endpoints, publication
        times, wake-up times, whether they are all one publication's), or None. Wake-ups of
        several publications come in time order; one publication's wake up distinct endpoints,
        each adopting on its own (`_adopt` is elementwise), so they are not sorted.
        """
        fleet, w = self.fleet, self.fleet.world
        link = fleet.link
        while self._n_noticed < len(link.published):
            j = self._n_noticed
            self._n_noticed += 1
            tp = fleet.clock.seconds(link.published[j][1])
            eps = np.flatnonzero(w.ep_push[self.e_lo : self.e_hi]) + self.e_lo
            eps = eps[w.online(tp, eps)]
            if eps.size:
                self._push.append((eps, np.full(eps.size, tp), tp + w.push_latency(j, eps)))
        if not self._push:
            return None
        parts, keep = [], []
        for eps, tp_, td in self._push:
            now = td < t1
            if now.all():
                parts.append((eps, tp_, td))
                continue
            parts.append((eps[now], tp_[now], td[now]))
            keep.append((eps[~now], tp_[~now], td[~now]))
        self._push = keep
        parts = [p for p in parts if p[0].size]
        if not parts:
            return None
        idx, tp_all, td_all = (np.concatenate([p[i] for p in parts]) for i in range(3))
        ok = self.online.take(idx)  # every wake-up here falls in this step's quarter
        for a, b in link.outages:
            ok &= ~((td_all >= a) & (td_all < b))
        if not ok.any():
            return None
        single = len(parts) == 1
        if not ok.all():
            at = np.flatnonzero(ok)
            idx, tp_all, td_all = idx.take(at), tp_all.take(at), td_all.take(at)
        if not single:
            order = np.argsort(td_all, kind="stable")
            idx, tp_all, td_all = idx.take(order), tp_all.take(order), td_all.take(order)
        self.fleet.recorder.count("push_wakeups", idx.size)
        return idx, tp_all, td_all, single

    def _adopt(
        self, idx: I64, c: F64, pub_v: I64, pub_t: F64
    ) -> tuple[I64, F64, npt.NDArray[np.int32]] | None:
        """Successful check-ins at times `c`: adopt policy, install models, reset breakers."""
        fleet, rec = self.fleet, self.fleet.recorder
        if c.min() >= pub_t[-1]:  # (the common case: every check-in after the last one)
            v = np.full(idx.size, pub_v[-1], np.int32)
            vs = [int(pub_v[-1])]
        else:
            v = pub_v[np.searchsorted(pub_t, c, side="right") - 1].astype(np.int32)
            vs = np.flatnonzero(np.bincount(v)).tolist()
        if len(vs) == 1:
            target = fleet.assigned_models(vs[0], idx)
        else:
            target = np.zeros(idx.size, np.int32)
            for uv in vs:
                sel = v == uv
                target[sel] = fleet.assigned_models(uv, idx[sel])
        signed = np.ones(idx.size, bool)
        self_test_ok = np.ones(idx.size, bool)
        for tv in np.flatnonzero(np.bincount(target)).tolist():
            m = fleet.registry.models.get(tv) if tv else None
            if m is None:
                continue
            sel = target == tv
            if not m.signed:
                signed[sel] = False
            elif m.self_test_fail_share > 0:
                self_test_ok[sel] = ~m.self_test_fails_many(idx[sel])
        got = adopt(  # the agent's own rule, over this batch of endpoints
            policy=self.pol.take(idx),
            model=self.model.take(idx),
            offered_policy=v,
            offered_model=target,
            signed=signed,
            self_test_ok=self_test_ok,
        )
        install, bad = got.install, got.refused_self_test
        rec.count("unsigned_refused", int(got.refused_unsigned.sum()))
        rec.count("self_test_refusals", int(bad.sum()))
        if bad.any():
            fleet.report_health(
                "self_test_failures", c[bad], idx[bad], target[bad].astype(np.int64)
            )
            self.st_failed[idx[bad]] = True
        rec.count("model_installs", int(install.sum()))
        if install.any():
            rec.note_installs(idx[install], target[install])
            unsigned = [tv for tv in np.unique(target[install]).tolist()
                        if not fleet.registry[tv].signed]  # fmt: skip
            rec.count("unsigned_installs", int(np.isin(target[install], unsigned).sum()))
        changed = got.reset_breaker
        switched = None
        if changed.any():
            ch = idx[changed]
            switched = (ch, c[changed], self._eff_tbl(ch))
            inst, new_m = idx[install], target[install]
            self._model_n = _add_counts(self._model_n, self.model.take(inst), -1)
            self._model_n = _add_counts(self._model_n, new_m, 1)
            self.model[inst] = new_m
            self.pol[ch] = v[changed]
            self.tripped[ch] = False
            if self._breakers.ep.size:
                hit = np.zeros(self.e_hi - self.e_lo, bool)
                hit[ch - self.e_lo] = True
                self._breakers.forget(hit, self.e_lo)
            self._set_tables(ch, c[changed])
        for k, (_t_start, seen) in fleet.recorder.tracked.items():
            left = self._unseen.get(k)
            if left is None or left[0] is not seen:  # this engine's endpoints yet to see k
                left = self._unseen[k] = (seen, int(np.isinf(seen[self.e_lo : self.e_hi]).sum()))
            if not left[1]:
                continue
            ok = (v >= k) & np.isinf(seen.take(idx))
            seen[idx[ok]] = c[ok]
            self._unseen[k] = (seen, left[1] - int(ok.sum()))
        self.settled[idx] = (v == pub_v[-1]) & ~(got.wanted & ~install)
        return switched

    def _set_tables(self, ch: I64, c: F64) -> None:
        """Point endpoints `ch` (switching at times `c`) at their (policy, org, model) table.

        A table first needed now is built as of its org's first switch among `ch`: a time
        of the org's own, whichever shard runs it. Each (policy, model)'s per-org table
        indices are kept here, so only an org's first switch to a pair asks `Fleet.table`.
        """
        fleet, w = self.fleet, self.fleet.world
        o_ch, m_ch, v_ch = w.ep_org.take(ch), self.model.take(ch), self.pol.take(ch)
        n_m = int(m_ch.max()) + 1
        vm = v_ch.astype(np.int64) * n_m + m_ch
        before = len(fleet.tables.verdict)
        for k in np.flatnonzero(np.bincount(vm)).tolist():
            pv, mv = divmod(k, n_m)
            sel = vm == k
            orgs = o_ch[sel]
            per_org = self._org_tables.get((pv, mv))
            if per_org is None:
                per_org = self._org_tables[pv, mv] = np.full(w.n_orgs, -1, np.int32)
            new = np.zeros(w.n_orgs, bool)
            new[orgs] = True
            new &= per_org < 0
            if new.any():
                t_org = np.full(w.n_orgs, np.inf)
                np.minimum.at(t_org, orgs, c[sel])
                for o in np.flatnonzero(new).tolist():
                    per_org[o] = fleet.table(pv, o, mv, float(t_org[o]))
            self.tbl[ch[sel]] = per_org[orgs]
        if len(fleet.tables.verdict) != before:
            self._refresh_tables()
