"""Step 1 of the cohort engine: which endpoints are online at each 15-minute quarter.

Kept apart because it is the one part that reads the world's workday and offline-spell
schedule: only the endpoints whose state can change at a quarter (laptops whose workday starts
or ends, offline spells that start or end) are re-evaluated with `World.online`, and
check-ins are counted per online interval in closed form (an endpoint checks in at
`phase + k * interval`), so a quiet endpoint costs nothing per step.
"""

from __future__ import annotations

import numpy as np

from fleet_sim.cohort._state import F64, I64, Q_PER_DAY, EngineState
from fleet_sim.world import QUARTER_S

__all__ = ["OnlineSteps"]


class OnlineSteps(EngineState):
    """Step 1 of the engine: the online changes at a quarter, in closed form per group."""

    @staticmethod
    def _edges(start: F64, end: F64) -> dict[int, I64]:
        """Endpoints whose offline spell starts or ends at each quarter index."""
        out: dict[int, list[I64]] = {}
        for arr in (start, end):
            has = np.flatnonzero(np.isfinite(arr))
            if not has.size:  # no endpoint has a spell (offline_spells_per_week = 0)
                continue
            q = np.rint(arr[has] / QUARTER_S).astype(np.int64)
            order = np.argsort(q, kind="stable")
            qs, eps = q[order], has[order]
            cut = np.flatnonzero(np.r_[True, qs[1:] != qs[:-1]])
            for a, b in zip(cut.tolist(), [*cut[1:].tolist(), qs.size], strict=True):
                out.setdefault(int(qs[a]), []).append(eps[a:b])
        return {q: np.unique(np.concatenate(v)) for q, v in out.items()}

    def _advance_online(self, t0: float) -> None:
        """Apply the online changes at quarter `t0`.

        The laptops whose workday starts or ends at this quarter form one shift group per
        edge: at a start all of a group is online but those in an offline spell, at an end none
        is (`World.online` for them, read from the group's own spell quarters, with no gather
        and no merge). Endpoints whose spell starts or ends here, if not in those groups, are
        asked of `World.online`.
        """
        w = self.fleet.world
        q = int(round(t0 / QUARTER_S))
        start, end = w.spec.workday_hours
        shifts: list[int] = []
        for edge in (start * 4, end * 4):
            s = int((edge - q + 8) % Q_PER_DAY - 8)  # the shift whose local quarter hits it
            if s in self._by_shift and s not in shifts:
                shifts.append(s)
        self._flipped[self._flips] = False
        self._flips = self._went_on = np.zeros(0, np.int64)
        ons: list[I64] = []
        offs: list[I64] = []
        for s in shifts:
            grp = self._by_shift[s]
            was = self.online.take(grp)
            if start * 4 <= (q + s) % Q_PER_DAY < end * 4:  # at work, unless in a spell
                q0, q1 = self._group_spells[s]
                now = (q0 > q) | (q1 <= q)
                ons.append(grp[now & ~was])
                offs.append(grp[~now & was])
            else:
                offs.append(grp[was])
        spell = self._spell_edges.get(q)
        if spell is not None and shifts:  # (those in the groups above are decided there)
            lap = ~w.ep_server.take(spell)
            spell = spell[~(lap & np.isin(w.ep_shift_q.take(spell), shifts))]
        if spell is not None and spell.size:
            now_on = w.online(t0, spell)
            was = self.online.take(spell)
            ons.append(spell[now_on & ~was])
            offs.append(spell[~now_on & was])
        went_on = np.concatenate(ons) if len(ons) > 1 else ons[0] if ons else self._went_on
        went_off = np.concatenate(offs) if len(offs) > 1 else offs[0] if offs else self._went_on
        if went_on.size or went_off.size:
            self._flip(went_on, went_off, t0)

    def _flip(self, went_on: I64, went_off: I64, t0: float) -> None:
        w = self.fleet.world
        self._flips = np.concatenate([went_on, went_off])
        self._went_on = went_on
        self._flipped[self._flips] = True
        if went_off.size:
            self._checkins += self._n_ci(went_off, self._on_since[went_off - self.e_lo], t0)
            self._on_since[went_off - self.e_lo] = np.nan
        self._on_since[went_on - self.e_lo] = t0
        self.online[went_on] = True
        self.online[went_off] = False
        self._on_loc = np.flatnonzero(self.online[self.e_lo : self.e_hi])
        k = w.n_orgs
        self._n_on += np.bincount(w.ep_org.take(went_on), minlength=k)
        self._n_on -= np.bincount(w.ep_org.take(went_off), minlength=k)

    def _count_failed_checkins(self, t0: float, t1: float) -> None:
        """Check-ins of online endpoints that found the backend down in [t0, t1)."""
        for a, b in self.fleet.link.outages:
            lo, hi = max(a, t0), min(b, t1)
            if lo < hi:
                self._checkins_failed += self._n_ci_loc(self._on_loc, lo, hi)
