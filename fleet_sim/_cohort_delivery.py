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

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.telemetry.spool import keep_newest
from fleet_sim._clock import DAY_S
from fleet_sim._cohort_state import F64, I64, Q_PER_DAY, Cols, EngineState, cat_rows, take_rows
from fleet_sim.world import QUARTER_S

__all__ = ["DeliverySteps"]

_EVENT = ("ep", "sample", "model", "verdict", "t", "c")  # c: the check-in that may deliver it
_DELIVERED = ("ep", "sample", "model", "verdict", "t_ms")  # what waits for the fold
_DELIVERED_FROM = ("ep", "sample", "model", "verdict", "t")  # what `_arrive` reads of an event


def _ms(t: F64, t_max: float) -> npt.NDArray[np.unsignedinteger[Any] | np.signedinteger[Any]]:
    """Milliseconds since second 0, truncated as the store keeps them: uint32 (49 days).

    `t_max` is `t.max()` (>= 0): rounding is monotonic, so the largest product is its product.
    """
    ms = np.multiply(t, 1000)
    return ms.astype(np.uint32) if t_max * 1000 < 2**32 else ms.astype(np.int64)


def _may_exceed(ep: npt.NDArray[np.integer], cap: int) -> bool:
    """False when no endpoint appears more than `cap` times in `ep` (a cheap, exact filter).

    Endpoints counted in a few buckets (by their low bits): an endpoint's count is at most its
    bucket's, so buckets all within `cap` prove it without a count over the whole fleet. About
    8 x `ep.size` / `cap` buckets (16 to 65,536) put about `cap` / 8 in each.
    """
    bits = min(16, max(4, math.ceil(math.log2(8 * ep.size / cap + 1))))
    return int(np.bincount(ep & ((1 << bits) - 1), minlength=1 << bits).max()) > cap


class DeliverySteps(EngineState):
    """Step 6 of the engine: events reach the backend at their endpoint's check-in, or wait."""

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
                        self._arrive(take_rows(due, on, _DELIVERED_FROM))
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
        """Events reach the backend: the spool bound, the evidence, the day's fold pool."""
        if got["ep"].size == 0:
            return
        w, rec = self.fleet.world, self.fleet.recorder
        cap = w.spec.spool_max_events
        if got["ep"].size > cap and _may_exceed(got["ep"], cap):
            per = np.bincount(got["ep"], minlength=w.n_endpoints)
            if per.max() > cap:
                got = self._spool_bound(got, per[got["ep"]] > cap, cap)
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

    def _spool_bound(self, got: Cols, over: npt.NDArray[np.bool_], cap: int) -> Cols:
        """Keep each over-full endpoint's newest `cap` events; count the rest as dropped.

        The agent's own drop rule (`agent.telemetry.spool.keep_newest`), one spool per endpoint.
        """
        sel = np.flatnonzero(over)
        keep = np.ones(got["ep"].size, bool)
        keep[sel] = keep_newest(
            np.ones(sel.size, np.int64), cap, order=got["t"][sel], group=got["ep"][sel]
        )
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
