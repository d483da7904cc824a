"""The rescore report lists orgs in the store's creation order, whatever pseudonyms it drew.

The store draws each org's id at random (`secrets`), so an order by id is a new order for every
store: the per-org figures, the JSON's per-org deltas and the page's bars and table ran by id.
Here the draws are replaced by counters running up (ids in creation order) and down (the
reverse), the two extremes of that randomness, over the shared test history.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import backend.store.sqlite as sqlite_store
from backend.analysis.pages import write_rescore_report
from backend.analysis.rescore import RescoreConfig, Stage, run_rescore
from tests.backend.history import END, History, build_history

NOW = END + dt.timedelta(days=2)
ALL = frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS})


class _Counter:
    """Pseudonyms and tokens from a counter, up (`step` 1) or down (`step` -1)."""

    def __init__(self, step: int) -> None:
        self.n, self.step = (0 if step > 0 else 1 << 40), step

    def token_hex(self, nbytes: int = 16) -> str:
        self.n += self.step
        return f"{self.n:0{2 * nbytes}x}"

    def token_urlsafe(self, nbytes: int = 16) -> str:
        return self.token_hex(nbytes)


@pytest.fixture(scope="module")
def twins(small_corpus, bundles, tmp_path_factory) -> Iterator[dict[int, History]]:
    """The shared history built twice: org pseudonyms drawn up (in creation order) and down."""
    got = {}
    for step in (1, -1):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sqlite_store, "secrets", _Counter(step))
            got[step] = build_history(tmp_path_factory.mktemp(f"ids{step}"), small_corpus, bundles)
    yield got
    for h in got.values():
        h.store.close()


def _named(text: str, h: History) -> str:
    """`text` with each org's pseudonym replaced by its name in the history."""
    for k, org in enumerate(h.orgs):
        text = text.replace(org, f"org{k}")
    return text


def test_rescore_report_lists_orgs_in_creation_order_whatever_their_pseudonyms(
    twins: dict[int, History], tmp_path: Path
) -> None:
    up, down = twins[1], twins[-1]
    assert up.orgs == sorted(up.orgs) and down.orgs == sorted(down.orgs, reverse=True)
    texts = []
    for step, h in twins.items():
        b1, b2 = h.bundles[1], h.bundles[2]
        configs = [
            RescoreConfig("baseline", ALL, ((1, b1), (2, b2))),
            RescoreConfig("v2", ALL, ((1, b2), (2, b2))),
        ]
        base, exp = run_rescore(h.store, configs, now=NOW)
        for s in (base, exp):
            assert [o for o, _ in s.alerts_per_org] == h.orgs  # every org, in creation order
            assert [o for o, _ in s.alerts_per_org_per_day] == h.orgs
        page = write_rescore_report(base, exp, tmp_path / f"out{step}")
        data = json.loads((page.parent / "rescore.json").read_text())
        assert list(data["delta"]["alerts_per_org"]) == h.orgs
        table = page.read_text().split("<table")[2]  # the per-org table, after the headline's
        assert [table.index(o) for o in h.orgs] == sorted(table.index(o) for o in h.orgs)
        texts.append(_named(json.dumps(data), h))
    assert texts[0] == texts[1]  # one history, one report text
