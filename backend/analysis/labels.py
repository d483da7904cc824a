"""Golden labels: what analysts, feeds and customers said about a sample, and when.

A label is never overwritten. Every change (a benign verdict reversed later, a feed that
flags a sample weeks after it was first seen) is stored as its own `LabelChange` with its
`labelled_at` time (what the label claims) and its `recorded_at` time (when the backend
received it). A label is *known* from `known_at = max(labelled_at, recorded_at)` on, and by
default `label_as_of(sha256, t)` answers what was known at `t` (Feast's "as of created time"):
a label imported today and dated last month changes no past result, so rescoring and
transition analysis never leak the future into the past, backdated or not. The corrected truth
(every label from its `labelled_at`, however late it arrived) is the explicit switch
`corrected=True` (`RescoreConfig.corrected_labels`, `[as_of] corrected_labels = true`).

The pure part lives here: the `LabelChange` value, parsing label files (JSONL or CSV) and the
`LabelBook` as-of index. `Store` keeps the rows (`Store.append_labels`, `Store.label_as_of`,
`Store.iter_labels`); `import_labels` is the thin shell that joins the two.

A label carries an optional `family` (e.g. `loader_v2`), used by the per-family breakdowns.
What is needed to recompute a labelled sample's features is the stored vector per schema
(`Store.feature_vector`) and, when a corpus has them, the sample bytes (looked up by sha256).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from backend.errors import BatchInvalidError
from backend.validation import check_sha256

__all__ = [
    "ImportResult",
    "LabelBook",
    "LabelChange",
    "LabelFileError",
    "LabelSink",
    "LabelSource",
    "LabelValue",
    "import_labels",
    "parse_label_file",
    "parse_label_record",
]


class LabelValue(StrEnum):
    """The golden verdict on a sample."""

    MALICIOUS = "malicious"
    BENIGN = "benign"


class LabelSource(StrEnum):
    """Who said so."""

    ANALYST = "analyst"
    FEED = "feed"
    CUSTOMER_REPORT = "customer_report"


class LabelFileError(BatchInvalidError):
    """A label file or label request body is malformed; the message names the line or field."""


@dataclass(frozen=True, slots=True)
class LabelChange:
    """One label statement: from `labelled_at` on, `sha256` is `label` (until a later change)."""

    sha256: str
    label: LabelValue
    source: LabelSource
    labelled_at: dt.datetime
    family: str = ""
    recorded_at: dt.datetime | None = None  # when the backend received it (None: not stored)

    def __post_init__(self) -> None:
        try:  # the project's one sha256 rule (`backend.validation`), stored lower-case
            if check_sha256(self.sha256) != self.sha256:
                raise ValueError(f"sha256 must be lower-case: {self.sha256!r}")
        except BatchInvalidError as exc:
            raise ValueError(f"{exc}: {self.sha256!r}") from None
        if self.labelled_at.tzinfo is None:
            raise ValueError("labelled_at must be timezone-aware")
        if self.recorded_at is not None and self.recorded_at.tzinfo is None:
            raise ValueError("recorded_at must be timezone-aware")

    @property
    def known_at(self) -> dt.datetime:
        """From when the backend knew this label: the later of its date and its arrival."""
        if self.recorded_at is None or self.recorded_at <= self.labelled_at:
            return self.labelled_at
        return self.recorded_at

    def in_force_from(self, *, corrected: bool = False) -> dt.datetime:
        """`known_at` by default; `labelled_at` for the corrected truth."""
        return self.labelled_at if corrected else self.known_at

    @property
    def is_malicious(self) -> bool:
        """True for a malicious label."""
        return self.label is LabelValue.MALICIOUS

    def to_dict(self) -> dict[str, str]:
        """The JSON form (one JSONL line of a label file)."""
        return {
            "sha256": self.sha256,
            "label": self.label.value,
            "source": self.source.value,
            "labelled_at": self.labelled_at.astimezone(dt.UTC).isoformat(),
            "family": self.family,
        }


def parse_label_record(item: Any, *, default_time: dt.datetime, where: str = "") -> LabelChange:
    """Validate one label given as a mapping (a JSON object or a CSV row).

    `labelled_at` defaults to `default_time` (the time the label reaches the backend); a
    `label` of `1`/`0` is accepted for malicious/benign.

    Raises:
        LabelFileError: a field is missing or invalid.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(item, dict):
        raise LabelFileError(f"{prefix}a label must be an object")
    try:
        # surrounding blanks are a file's formatting (a CSV cell `, abc…`); anything else
        # that is not 64 hex digits is refused here, not stored as a label that never matches
        sha = check_sha256(str(item["sha256"]).strip())
        raw_label = str(item["label"]).strip().lower()
        raw_label = {"1": "malicious", "0": "benign"}.get(raw_label, raw_label)
        label = LabelValue(raw_label)
        source = LabelSource(str(item.get("source") or "analyst").strip().lower())
        raw_at = item.get("labelled_at")
        at = dt.datetime.fromisoformat(str(raw_at)) if raw_at else default_time
        if at.tzinfo is None:
            raise ValueError("labelled_at must carry a UTC offset")
        family = str(item.get("family") or "").strip()
        return LabelChange(sha, label, source, at.astimezone(dt.UTC), family)
    except KeyError as exc:
        raise LabelFileError(f"{prefix}missing field {exc.args[0]!r}") from None
    except (ValueError, BatchInvalidError) as exc:
        raise LabelFileError(f"{prefix}{exc}") from None


def parse_label_file(
    path: str | os.PathLike[str], *, default_time: dt.datetime
) -> list[LabelChange]:
    """Read a label file: JSONL (one object per line) or CSV with a header row.

    The format follows the suffix (`.csv` is CSV, anything else JSONL). Columns/fields:
    `sha256`, `label` (malicious|benign), `source` (analyst|feed|customer_report, default
    analyst), `labelled_at` (ISO 8601 with offset; default `default_time`), `family`.

    Raises:
        LabelFileError: the file cannot be read or a line is invalid (with its line number).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelFileError(f"cannot read {p}: {exc}") from None
    out: list[LabelChange] = []
    if p.suffix.lower() == ".csv":
        for lineno, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            out.append(parse_label_record(row, default_time=default_time, where=f"{p}:{lineno}"))
        return out
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelFileError(f"{p}:{lineno}: not JSON: {exc.msg}") from None
        out.append(parse_label_record(item, default_time=default_time, where=f"{p}:{lineno}"))
    return out


class LabelBook:
    """An in-memory as-of index over label changes (pure; built from any iterable).

    `label_as_of(sha, t)` is the latest change *known* at `t` (`known_at <= t`); with
    `corrected=True` the latest with `labelled_at <= t` (the corrected truth, backdated labels
    reaching into the past). Ties at the same instant resolve to the one given last.
    """

    def __init__(self, changes: Iterable[LabelChange] = ()) -> None:
        given = list(changes)
        self._index: dict[bool, tuple[dict[str, list[dt.datetime]], dict[str, list[LabelChange]]]]
        self._index = {}
        for corrected in (False, True):
            times: dict[str, list[dt.datetime]] = {}
            by_sha: dict[str, list[LabelChange]] = {}
            for c in sorted(given, key=lambda c: (c.sha256, c.in_force_from(corrected=corrected))):
                times.setdefault(c.sha256, []).append(c.in_force_from(corrected=corrected))
                by_sha.setdefault(c.sha256, []).append(c)
            self._index[corrected] = (times, by_sha)

    def __len__(self) -> int:
        return len(self._index[False][1])

    def label_as_of(
        self, sha256: str, when: dt.datetime, *, corrected: bool = False
    ) -> LabelChange | None:
        """The label in force for `sha256` at `when`, or None when none was known yet."""
        times_of, changes_of = self._index[corrected]
        times = times_of.get(sha256)
        if not times:
            return None
        i = bisect.bisect_right(times, when)
        return changes_of[sha256][i - 1] if i else None

    def changes(self, sha256: str, *, corrected: bool = False) -> tuple[LabelChange, ...]:
        """Every change of `sha256` in the order `label_as_of` searches (by in-force time)."""
        return tuple(self._index[corrected][1].get(sha256, ()))

    def times(self, sha256: str, *, corrected: bool = False) -> tuple[dt.datetime, ...]:
        """When each of `changes(sha256)` comes into force, ascending."""
        return tuple(self._index[corrected][0].get(sha256, ()))

    def latest(self, sha256: str) -> LabelChange | None:
        """The most recent label of `sha256` regardless of time."""
        found = self._index[False][1].get(sha256)
        return found[-1] if found else None

    def families(self) -> dict[str, str]:
        """sha256 -> family of its latest label that names one (for breakdowns)."""
        out: dict[str, str] = {}
        for sha, changes in self._index[False][1].items():
            for c in changes:
                if c.family:
                    out[sha] = c.family
        return out


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many label changes were read and recorded, and how many distinct samples."""

    recorded: int
    samples: int
    malicious: int


class LabelSink(Protocol):
    """Where `import_labels` appends: every `backend.store.AggregateStore` is one.

    Stated here rather than imported, so the store (which builds `LabelChange`s and
    `LabelBook`s) and this module do not depend on each other.
    """

    def append_labels(self, changes: Sequence[LabelChange], *, now: dt.datetime) -> int:
        """Append label changes (append-only); the number recorded."""
        ...


def import_labels(
    store: LabelSink, changes: Sequence[LabelChange], *, now: dt.datetime
) -> ImportResult:
    """Append `changes` to the store's label history (the CLI and the API route call this)."""
    recorded = store.append_labels(changes, now=now)
    return ImportResult(
        recorded=recorded,
        samples=len({c.sha256 for c in changes}),
        malicious=sum(1 for c in changes if c.is_malicious),
    )
