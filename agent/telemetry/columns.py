"""The telemetry wire format read as columns: one tuple per field, no object per event.

The backend ingests >= 100k events/s on two cores, and building a `TelemetryEvent` per event
(and validating it field by field in Python) costs more than the rest of ingest together.
`decode_columns` reads the same bytes as `agent.telemetry.decode_batch` (the wire format is
defined there, once) and validates each column with whole-column C-level operations: type
sets, `min`/`max` ranges, set inclusion for enumerations, `count(None)` for optional fields.

Equivalence with the reference decoder is the contract, and
`tests/agent/telemetry/test_columns.py` checks it on random (valid and broken) batches:
- a batch is accepted by `decode_columns` exactly when `decode_batch` accepts it;
- when it is refused, the error is the reference's, naming the first bad field: on any column
  check failing, the rows are re-read by the reference per-event validator for the reason;
- `TelemetryColumns.to_events()` equals `decode_batch(raw).events`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from agent.telemetry.wire import (
    _ACTIONS,
    _MAX_MS,
    _MIN_MS,
    _REASONS,
    _SCHEMA_LENGTHS,
    _VERDICTS,
    Action,
    HealthCount,
    TelemetryEvent,
    _decode_events,
    _header,
    _health,
    _opt_score,
    _unpack,
)

__all__ = ["TelemetryColumns", "decode_columns"]

_VERDICT_NAMES: Final = frozenset(_VERDICTS)
_REASON_NAMES: Final = frozenset(_REASONS)
_SCHEMA_NAMES: Final = frozenset(_SCHEMA_LENGTHS) | {None}
_NONE: Final = type(None)
_INT: Final = frozenset({int})
_SCORE_TYPES: Final = frozenset({float, int, _NONE})
_OPT_INT: Final = frozenset({int, _NONE})
_ACTION_NAMES: Final = frozenset(_ACTIONS)


@dataclass(frozen=True, slots=True)
class TelemetryColumns:
    """A validated batch from one endpoint, as columns (index i of each tuple is event i).

    `sha256` holds 32 raw bytes per event; `verdict`, `reason`, `shadow_verdict` hold the enum
    values (`Verdict.value`, `Reason.value`); scores are as sent (int 0/1 allowed, like the
    reference decoder, which turns them into floats in `to_events`). `action` holds the
    `Action.value` an event carries, or None for an 11-field event (no action).
    """

    key: str
    org_id: str
    endpoint_id: str
    dropped_events: int
    sha256: tuple[bytes, ...]
    model_version: tuple[int, ...]
    score: tuple[float | int | None, ...]
    verdict: tuple[str, ...]
    reason: tuple[str, ...]
    observed_at_ms: tuple[int, ...]
    feature_schema: tuple[str | None, ...]
    features: tuple[bytes | None, ...]
    shadow_model_version: tuple[int | None, ...]
    shadow_score: tuple[float | int | None, ...]
    shadow_verdict: tuple[str | None, ...]
    health: tuple[HealthCount, ...] = ()
    action: tuple[str | None, ...] = ()

    @property
    def size(self) -> int:
        """The number of events."""
        return len(self.sha256)

    @property
    def has_shadow(self) -> bool:
        """True when some event carries a shadow-model verdict."""
        return self.shadow_verdict.count(None) != len(self.shadow_verdict)

    @property
    def actions(self) -> tuple[str | None, ...]:
        """The action column, one per event (None: no action), also for batches without any."""
        return self.action or (None,) * self.size

    def to_events(self) -> tuple[TelemetryEvent, ...]:
        """The events as `TelemetryEvent`s (what `decode_batch` returns), for tests and tools."""
        return tuple(
            TelemetryEvent(
                self.org_id,
                self.endpoint_id,
                sha.hex(),
                version,
                _opt_score(score, "score"),
                _VERDICTS[verdict],
                _REASONS[reason],
                at,
                schema,
                feats,
                s_version,
                _opt_score(s_score, "shadow_score"),
                None if s_verdict is None else _VERDICTS[s_verdict],
                Action.NONE if action is None else _ACTIONS[action],
            )
            for (
                sha,
                version,
                score,
                verdict,
                reason,
                at,
                schema,
                feats,
                s_version,
                s_score,
                s_verdict,
                action,
            ) in zip(
                self.sha256,
                self.model_version,
                self.score,
                self.verdict,
                self.reason,
                self.observed_at_ms,
                self.feature_schema,
                self.features,
                self.shadow_model_version,
                self.shadow_score,
                self.shadow_verdict,
                self.actions,
                strict=True,
            )
        )


def _ints_in(column: tuple[Any, ...], low: int, high: int) -> bool:
    """Every value an int (not bool) with low <= v < high."""
    return set(map(type, column)) == _INT and low <= min(column) and max(column) < high


def _scores_ok(column: tuple[Any, ...]) -> bool:
    """Every value None or a number in [0, 1] (NaN refused: it makes the sum NaN)."""
    types = set(map(type, column))
    if not types <= _SCORE_TYPES:
        return False
    values = [v for v in column if v is not None] if _NONE in types else column
    if not values:
        return True
    total = sum(values)
    return bool(0 <= min(values) and max(values) <= 1 and total == total)


def _optional_versions_ok(column: tuple[Any, ...]) -> bool:
    if not set(map(type, column)) <= _OPT_INT:
        return False
    present = [v for v in column if v is not None]
    return not present or (0 <= min(present) and max(present) < 2**31)


def _columns_ok(cols: list[tuple[Any, ...]]) -> bool:
    """The reference rules, checked a column at a time. False: some event breaks a rule."""
    (sha, version, score, verdict, reason, at, schema, feats, s_version, s_score, s_verdict) = cols
    n = len(sha)
    if set(map(type, sha)) != {bytes} or set(map(len, sha)) != {32}:
        return False
    if not _ints_in(version, 0, 2**31) or not _ints_in(at, _MIN_MS, _MAX_MS):
        return False
    if not set(verdict) <= _VERDICT_NAMES or not set(reason) <= _REASON_NAMES:
        return False
    if not set(schema) <= _SCHEMA_NAMES or not _scores_ok(score):
        return False
    if feats.count(None) != n:
        for s, f in zip(schema, feats, strict=True):
            if f is not None and (
                s is None or type(f) is not bytes or len(f) != 4 * _SCHEMA_LENGTHS[s]
            ):
                return False
    if s_verdict.count(None) != n or s_version.count(None) != n:
        if not set(s_verdict) <= _VERDICT_NAMES | {None}:
            return False
        if not _optional_versions_ok(s_version):
            return False
        if any((a is None) != (b is None) for a, b in zip(s_version, s_verdict, strict=True)):
            return False
    return _scores_ok(s_score)


def decode_columns(raw: bytes) -> TelemetryColumns:
    """Decode and validate one batch as columns; accepts and refuses exactly as `decode_batch`.

    Raises:
        ValueError: the bytes are not a valid batch; the message names the first bad field.
    """
    doc = _unpack(raw)
    key, org, endpoint, dropped, rows = _header(doc)
    lengths = set(map(len, rows)) if set(map(type, rows)) == {tuple} else set()
    ok = bool(lengths) and lengths <= {11, 12}
    actions: tuple[Any, ...] = ()
    if ok and lengths != {11}:  # some events carry an action: the rare, slower path
        actions = tuple(r[11] if len(r) == 12 else None for r in rows)
        rows_11 = tuple(r[:11] for r in rows)
        ok = all(type(r[11]) is str and r[11] in _ACTION_NAMES for r in rows if len(r) == 12)
    else:
        rows_11 = rows
    cols: list[tuple[Any, ...]] = list(zip(*rows_11, strict=True)) if ok else []
    try:
        ok = ok and _columns_ok(cols)
    except TypeError:  # an unhashable value (a map) where an enum value belongs
        ok = False
    if not ok:
        # The reference validator names the first bad event and field. It refuses these rows:
        # every column rule above is implied by a per-event rule there.
        _decode_events(rows, org, endpoint)
        raise ValueError("events: invalid")  # pragma: no cover - the line above raised
    health = _health(doc)  # after the events, so a bad event is named first, as in decode_batch
    out = TelemetryColumns(key, org, endpoint, dropped, *cols)
    if health or actions:
        out = replace(out, health=health, action=actions)
    return out
