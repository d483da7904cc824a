"""The cohort engine's state, declared once, and what every part of the engine reads of it.

`fleet_sim.cohort.CohortEngine` is assembled from one class per role (online state, check-ins,
encounters, delivery: `fleet_sim.cohort._*`); they share the endpoints' array state, which is
declared here with what it means, so each part is type-checked against the same names. The
helpers here are the ones more than one part calls: the check-in schedule in closed form
(`phase + k * interval`), the endpoints' current decision table and the event-column gathers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.verdict_codes import ALERT_CODES
from fleet_sim.cohort._breaker import Breakers
from fleet_sim.control import Fleet

__all__ = ["F64", "I64", "Q_PER_DAY", "Cols", "EngineState", "cat_rows", "take_rows"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Cols = dict[str, npt.NDArray[Any]]
Q_PER_DAY = 96


def cat_rows(parts: list[Cols], names: Sequence[str]) -> Cols:
    return {c: np.concatenate([p[c] for p in parts]) for c in names}


def take_rows(
    cols: Cols, sel: npt.NDArray[np.bool_] | I64, names: Sequence[str] | None = None
) -> Cols:
    """Rows `sel` (a mask or positions) of every column (or of `names`).

    A mask is turned into positions once, then each column is gathered with `take`.
    """
    at = np.flatnonzero(sel) if sel.dtype == np.bool_ else sel
    if names is not None:
        return {c: cols[c].take(at) for c in names}
    return {c: v.take(at) for c, v in cols.items()}


class EngineState:
    """The array state of one engine's endpoints (see `fleet_sim.cohort.CohortEngine`).

    Arrays over the whole fleet are indexed by endpoint; those "of this engine" by endpoint -
    `e_lo` (the engine owns endpoints [`e_lo`, `e_hi`), the orgs [`org_lo`, `org_hi`)).
    """

    fleet: Fleet
    seed: tuple[int, ...]
    org_lo: int
    org_hi: int
    step_s: float
    e_lo: int
    e_hi: int
    # per endpoint: policy version, model version, decision table, breaker tripped, online,
    # refused a model by its self-test, has nothing new to adopt until the next publication
    pol: npt.NDArray[np.int32]
    model: npt.NDArray[np.int32]
    tbl: npt.NDArray[np.int32]
    tripped: npt.NDArray[np.bool_]
    online: npt.NDArray[np.bool_]
    st_failed: npt.NDArray[np.bool_]
    settled: npt.NDArray[np.bool_]
    _breakers: Breakers  # untripped breakers' kept blocks (`fleet_sim.cohort._breaker`)
    _breaker_cfg: dict[int, tuple[npt.NDArray[np.bool_], I64, I64]]  # per policy, by org
    events_total: int
    trip_log: list[tuple[float, int]]  # (first trip time, endpoints) per step
    _any_tripped: bool
    _model_n: I64  # this engine's endpoints per model version
    # decision tables (`_refresh_tables`): verdicts and what the recorder counts, flat
    _V: npt.NDArray[np.int8]
    _NEW: npt.NDArray[np.bool_]
    _twin: npt.NDArray[np.int32]
    _tmodel: npt.NDArray[np.int16]
    _n_samples: int
    _V_flat: npt.NDArray[np.int8]
    _code3_flat: npt.NDArray[np.int8]
    _org_tables: dict[tuple[int, int], npt.NDArray[np.int32]]
    # check-in schedule: interval (fleet), (phase, interval) of this engine's endpoints
    _iv: F64
    _phiv: F64
    # online state (`fleet_sim.cohort._online`)
    _flipped: npt.NDArray[np.bool_]
    _flips: I64
    _went_on: I64
    _on_since: F64
    _on_loc: I64
    _n_on: I64
    _checkins: int
    _checkins_failed: int
    _by_shift: dict[int, I64]
    _spell_edges: dict[int, I64]
    _spell_q0: I64
    _spell_q1: I64
    _group_spells: dict[int, tuple[npt.NDArray[np.int32], ...]]
    # check-ins with news (`fleet_sim.cohort._checkin`)
    _n_published: int
    _pending: I64
    _pub: tuple[I64, F64]
    _unseen: dict[int, tuple[F64, int]]
    _n_noticed: int
    _push: list[tuple[I64, F64, F64]]
    # encounters (`fleet_sim.cohort._encounter`)
    _blocks: list[tuple[int, int, np.random.Generator]]
    _block_lo: I64
    _block_hi: I64
    _narrow_sample: type[np.signedinteger[Any]]
    _ih_all: npt.NDArray[Any]
    _glob_idx: npt.NDArray[Any]
    _org_range: I64
    _mal_idx: npt.NDArray[Any]
    _camp_samples: list[npt.NDArray[Any]]
    _ih_start: I64
    _ih_len: I64
    _p_ih: F64
    _p_mal: F64
    _p_glob: F64
    _org_ih: I64
    _alias_day: int
    _alias_tbl: tuple[F64, npt.NDArray[Any]]
    # telemetry (`fleet_sim.cohort._delivery`): due next step, parked while offline, delivered
    _due_next: list[Cols]
    _round: list[tuple[Cols, bool]]
    _fresh: tuple[Cols | None, I64 | None]
    _from_fresh: bool
    _parked: dict[int, list[Cols]]
    _delivered: dict[int, list[Cols]]
    _codes: I64

    def _refresh_tables(self) -> None:
        t = self.fleet.tables
        self._V, self._NEW = t.stacked()
        self._twin = np.asarray(t.tripped_twin, np.int32)
        self._tmodel = np.asarray(
            [m for (m, _c), _i in sorted(t._index.items(), key=lambda kv: kv[1])], np.int16
        )
        # what the recorder counts of an encounter, per (table, sample): label, alert, new FP
        label = self.fleet.world.catalog.label.astype(np.int8)
        code3 = label[None, :] * 4 + ALERT_CODES[self._V] * 2 + (self._NEW & (label == 0)[None, :])
        # flat forms, read with one index per encounter (table x samples + sample)
        self._n_samples = int(self._V.shape[1])
        self._V_flat = self._V.ravel()
        self._code3_flat = code3.astype(np.int8).ravel()

    def _eff_tbl(self, eps: npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
        # (`take`: a 1-D gather two to four times cheaper than `[]` with an index array here)
        base: npt.NDArray[np.int32] = self.tbl.take(eps)
        if not self._any_tripped:
            return base
        return np.asarray(np.where(self.tripped.take(eps), self._twin.take(base), base), np.int32)

    def _phase_interval(self, eps: npt.NDArray[np.integer]) -> tuple[F64, F64]:
        """The check-in phase and interval of endpoints `eps` (of this engine)."""
        both = self._phiv.take(np.asarray(eps) - self.e_lo, axis=0)
        return both[:, 0], both[:, 1]

    def _n_ci(self, eps: npt.NDArray[np.integer], a: F64 | float, b: F64 | float) -> int:
        """Check-ins of endpoints `eps` in [a, b): k >= 0 with a <= phase + k * interval < b."""
        return self._n_ci_loc(np.asarray(eps) - self.e_lo, a, b)

    def _n_ci_loc(self, k: npt.NDArray[np.integer], a: F64 | float, b: F64 | float) -> int:
        """`_n_ci` of endpoints `k` + `e_lo`."""
        both = self._phiv.take(k, axis=0)
        ph, iv = both[:, 0], both[:, 1]
        return int((np.ceil((b - ph) / iv) - np.ceil((a - ph) / iv)).sum())

    def _next_checkin(self, eps: npt.NDArray[np.integer], t: F64 | float) -> F64:
        """Each endpoint's first scheduled check-in at or after `t`."""
        ph, iv = self._phase_interval(eps)
        # t >= 0 and 0 <= phase < interval, so the ceiling is never below 0;
        # ph + ceil((t - ph) / iv) * iv, in place (the same operations in the same order)
        out = np.subtract(t, ph, dtype=np.float64)
        out /= iv
        np.ceil(out, out=out)
        out *= iv
        out += ph
        return out
