"""Step 6 of the cohort engine: telemetry from the spool to the backend's fold pool.

Kept apart because it is the simulated transport: an event waits in the spool for its
endpoint's first check-in at or after it that finds the endpoint online and the backend up,
which is computed in closed form and re-checked when its step comes (an endpoint gone offline
parks its events until the quarter it may be back; an outage pushes them to the next
check-in). At delivery the spool bound keeps each endpoint's newest events and counts the
others dropped (what the agent's spool would have kept). Delivered events wait for the fold
(`take_delivered`), which puts them into the backend's aggregates once a day, a day after the
day they belong to (`fleet_sim.cohort.FOLD_GRACE_S`), so nearly every aggregate row is written
once; later stragglers merge into their rows at the next fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from agent.telemetry.spool import keep_newest
from fleet_sim._clock import DAY_S
from fleet_sim.cohort._state import F64, I64, Q_PER_DAY, Cols, EngineState, cat_rows, take_rows
from fleet_sim.world import QUARTER_S

__all__ = ["DeliverySteps"]

_EVENT = ("ep", "sample", "model", "verdict", "t", "c")  # c: the check-in that may deliver it
_DELIVERED = ("ep", "sample", "model", "verdict", "t_ms")  # what waits for the fold


def _ms(t: F64, t_max: float) -> npt.NDArray[np.unsignedinteger[Any] | np.signedinteger[Any]]:
    """Milliseconds since second 0, truncated as the store keeps them: uint32 (49 days).

    `t_max` is `t.max()` (>= 0): rounding is monotonic, so the largest product is its product.
    """
    ms = np.multiply(t, 1000)
    return ms.astype(np.uint32) if t_max * 1000 < 2**32 else ms.astype(np.int64)


_BUCKETS = 1 << 16


def _bucket_counts(ep: npt.NDArray[np.integer]) -> I64:
    """Events per bucket of endpoints (their low 16 bits): at least any one endpoint's count.

    Buckets all within the spool bound prove that no endpoint's events exceed it, without a
    count over the whole fleet (a cheap, exact filter); counts of parts add up.
    """
    return np.bincount(ep & (_BUCKETS - 1), minlength=_BUCKETS)


class DeliverySteps(EngineState):
    """Step 6 of the engine: events reach the backend at their endpoint's check-in, or wait."""

    def _deliver_due(self, due: list[Cols], t0: float, t1: float) -> None:
        """Deliver a step's due parts: last step's fresh events, then all the others at once.

        The others are what earlier steps deferred (a check-in after their end, or inside an
        outage) or parked until their endpoint came back. Through an outage every part is
        deferred again each step, one new part a step, so one `_deliver` a part cost a call
        per part and step: 1,800 parts a step by the end of `backend-outage`'s day-long
        outage, over 90 % of its run time. `_deliver` tests each row on its own, so the same
        events arrive, park and wait either way, in another order within the round; the
        round's spool bound and the fold do not depend on that order.
        """
        fresh = self._fresh[0]
        held = [part for part in due if part is not fresh]
        if len(held) > 1:
            due = [part for part in due if part is fresh] + [cat_rows(held, _EVENT)]
        for part in due:
            self._from_fresh = part is fresh
            self._deliver(part, t0, t1)
        self._from_fresh = False

    def _deliver(self, due: Cols, t0: float, t1: float) -> None:
        """Deliver the events whose check-in falls before `t1`; park or postpone the rest.

        A check-in before `t0` (last step's) is judged with last step's online state: the
        current one, inverted for the endpoints that flipped at `t0`. An event whose endpoint
        was offline at its check-in but is back now waits for its next one; one whose endpoint
        is still away parks until the quarter it may be back (`_park`).
        """
        outages = self.fleet.link.outages
        q = int(round(t0 / QUARTER_S))
        while due["ep"].size:
            if due["c"].max() >= t1:  # a check-in interval longer than a step
                later = due["c"] >= t1
                self._due_next.append(take_rows(due, later))
                due = take_rows(due, ~later)
            ep, c = due["ep"], due["c"]
            on_now = on = self.online.take(ep)
            if self._flips.size:
                was = self._flipped.take(ep) & (c < t0)
                if was.any():
                    on = on ^ was
            if not on.all():
                back = ~on & on_now
                if back.any():
                    due["c"] = np.where(back, self._next_checkin(ep, t0), c)
                    on = on | back
                if not on.all():
                    self._park(take_rows(due, ~on), q)
                    if not outages:  # the rest arrives now: its check-ins are not needed
                        self._arrive(take_rows(due, on))
                        return
                    due = take_rows(due, on)
                c = due["c"]
            # outages that can hold any of these check-ins (all in [c.min(), t1))
            hit = [(a, b) for a, b in outages if a < t1 and b > c.min()] if c.size else []
            down = np.zeros(c.size if hit else 0, bool)
            for a, b in hit:
                down |= (c >= a) & (c < b)
            if not down.any():
                self._arrive(due)
                return
            self._arrive(take_rows(due, ~down))
            due = take_rows(due, down)
            due["c"] = due["c"] + self._iv[due["ep"]]

    def _arrive(self, got: Cols) -> None:
        """Events that get through at their check-in: they join this step's round."""
        if got["ep"].size:
            self._round.append((got, self._from_fresh))

    def _end_round(self, fresh: Cols | None, t1: float) -> None:
        """This step's arrivals reach the backend: the spool bound, evidence, the fold pool.

        The bound is the agent's, per endpoint and check-in: what a check-in sends is the
        newest `spool_max_events` of everything spooled since the endpoint's last check-in that
        got through. A check-in's events arrive in this step's round, except the newest ones:
        this step's own events before a check-in in it (`fresh`, delivered in the next round),
        which count first against its bound. Whether any can exceed it is told by bucket
        counts (`_bucket_counts`), those of this step's events kept for the next round, where
        they bound the arrivals taken from them.
        """
        parts, self._round = self._round, []
        prev, self._fresh = self._fresh, (fresh, None)
        if not parts:
            return
        cap = self.fleet.world.spec.spool_max_events
        n_fresh = 0 if fresh is None else fresh["ep"].size
        if sum(p["ep"].size for p, _ in parts) + n_fresh > cap:
            counts = np.zeros(_BUCKETS, np.int64)
            if fresh is not None:
                counts = _bucket_counts(fresh["ep"])
                self._fresh = (fresh, counts.copy())
            if any(f for _, f in parts) and prev[0] is not None:
                counts += prev[1] if prev[1] is not None else _bucket_counts(prev[0]["ep"])
            for p, f in parts:
                if not f:
                    counts += _bucket_counts(p["ep"])
            if counts.max() > cap:
                later = None
                if fresh is not None:
                    soon = fresh["c"] < t1
                    later = {"ep": fresh["ep"][soon], "c": fresh["c"][soon]}
                got = cat_rows([p for p, _ in parts], _EVENT) if len(parts) > 1 else parts[0][0]
                self._reach(self._spool_bound(got, later, cap))
                return
        for p, _ in parts:  # as they came (no copy into one)
            self._reach(p)

    def _reach(self, got: Cols) -> None:
        """Events reach the backend: the evidence, the day's fold pool."""
        rec = self.fleet.recorder
        ep = got["ep"]
        rec.count("events_delivered", ep.size)
        self.fleet.report_events(got["t"], ep, got["model"], got["verdict"])
        t = got["t"]
        t_max = float(t.max())
        # a day and a half of these waits for the fold: 13 bytes an event
        keep = {
            "ep": got["ep"].astype(np.int32),
            "sample": got["sample"],
            "model": got["model"],
            "verdict": got["verdict"],
            "t_ms": _ms(t, t_max),  # ms since second 0
        }
        d0, d1 = int(t.min() // DAY_S), int(t_max // DAY_S)
        if d0 == d1:
            self._delivered.setdefault(d0, []).append(keep)
            return
        day = t // DAY_S
        for d in range(d0, d1 + 1):
            sel = day == d
            if sel.any():
                self._delivered.setdefault(d, []).append(take_rows(keep, sel))

    def _checkin_key(self, ev: Cols) -> I64:
        """(endpoint, check-in index) of each event as one integer: its spool's delivery."""
        ph, iv = self._phase_interval(ev["ep"])
        k = np.rint((ev["c"] - ph) / iv).astype(np.int64)
        return ev["ep"].astype(np.int64) * (1 << 24) + k

    def _spool_bound(self, got: Cols, later: Cols | None, cap: int) -> Cols:
        """Keep each check-in's newest `cap` events; count the rest as dropped.

        The agent's own drop rule (`agent.telemetry.spool.keep_newest`), one spool per
        endpoint, emptied at each check-in that gets through; `later` are newer events of the
        same check-ins, sent in the next round: each group's count of them is one entry of
        that size, newest of all, which the bound takes first.
        """
        key = self._checkin_key(got)
        n = key.size
        sizes, order = np.ones(n, np.int64), got["t"]
        if later is not None:
            lk, n_later = np.unique(self._checkin_key(later), return_counts=True)
            key = np.concatenate([key, lk])
            sizes = np.concatenate([sizes, n_later])
            order = np.concatenate([order, np.full(lk.size, np.inf)])
        keep = keep_newest(sizes, cap, order=order, group=key)[:n]
        self.fleet.recorder.count("events_dropped", int((~keep).sum()))
        return take_rows(got, keep)

    def _return_quarter(self, eps: npt.NDArray[np.integer], q: int) -> I64:
        """The first quarter after `q` at which each endpoint may be online again.

        Spells end and workdays start on the grid, so three rounds of "skip the spell, then
        the off-hours" settle it; `_release_parked` checks the endpoint is really back.
        """
        w = self.fleet.world
        start, end = w.spec.workday_hours
        nxt = np.full(eps.size, q + 1, np.int64)
        lap = ~w.ep_server.take(eps)
        shift = w.ep_shift_q.take(eps).astype(np.int64)
        k = eps - self.e_lo
        q0, q1 = self._spell_q0.take(k), self._spell_q1.take(k)
        for _ in range(3):
            nxt = np.where((q0 <= nxt) & (nxt < q1), q1, nxt)
            local = (nxt + shift) % Q_PER_DAY
            off = lap & ~((local >= start * 4) & (local < end * 4))
            nxt = np.where(off, nxt + (start * 4 - local) % Q_PER_DAY, nxt)
        return nxt

    def _park(self, ev: Cols, q: int) -> None:
        back = self._return_quarter(ev["ep"], q)
        if back.min() == back.max():
            self._parked.setdefault(int(back[0]), []).append(ev)
            return
        order = np.argsort(back, kind="stable")
        bs, ev = back[order], take_rows(ev, order)
        cuts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
        for a, b in zip(cuts.tolist(), [*cuts[1:].tolist(), bs.size], strict=True):
            self._parked.setdefault(int(bs[a]), []).append({c: v[a:b] for c, v in ev.items()})

    def _release_parked(self, q: int, t0: float) -> None:
        """Events parked until quarter `q`: back online ones wait for their next check-in."""
        parts = self._parked.pop(q, None)
        if not parts:
            return
        ev = cat_rows(parts, _EVENT) if len(parts) > 1 else parts[0]
        on = self.online[ev["ep"]]
        if not on.all():
            self._park(take_rows(ev, ~on), q)
            ev = take_rows(ev, on)
        ev["c"] = self._next_checkin(ev["ep"], t0)
        self._due_next.append(ev)

    def take_delivered(self, upto_day: int | None = None) -> list[Cols]:
        """The delivered events of days <= `upto_day` (all: None), for the fold (forgotten here)."""
        days = sorted(d for d in self._delivered if upto_day is None or d <= upto_day)
        return [p for d in days for p in self._delivered.pop(d)]
